//! Subscriptions (#21, ext, PROTOCOL.md 6.31): every matching event of a
//! topic creates exactly one task from the template (none twice across a
//! kill -9 of the hub), a filter leaves events out, a subscription can
//! deliver the event as a message instead, and each creation is in the
//! event log with the event that caused it.

mod common;

use common::*;
use serde_json::{json, Value};

fn subscribe(hub: &Hub, body: Value) -> String {
    let (status, sub) = hub.post("/api/subscriptions", &body);
    assert_eq!(status, 201, "{sub}");
    sub["id"].as_str().expect("id").to_string()
}

fn tasks_of(hub: &Hub, sub: &str) -> Vec<Value> {
    list_all_tasks(hub, "", 500)
        .into_iter()
        .filter(|t| t["submitted_by"] == format!("subscription:{sub}"))
        .collect()
}

#[test]
fn each_matching_event_makes_one_task_and_none_twice_across_a_kill() {
    let mut hub = Hub::start();
    let sub = subscribe(
        &hub,
        json!({"topic": "pr_opened", "filter": {"repo": "web"},
               "task": {"description": "Review PR {{payload.pr}} ({{event.id}})",
                        "needed_capabilities": ["review"],
                        "metadata": {"url": "{{payload.url}}"}}}),
    );
    // Bad subscriptions change nothing.
    for bad in [
        json!({"topic": "pr_opened"}),
        json!({"topic": "x", "task": {"description": "d", "priority": "whenever"}}),
        json!({"topic": "x", "deliver": {"agent": "a", "channel": "b"}}),
    ] {
        let (status, out) = hub.post("/api/subscriptions", &bad);
        assert_eq!(status, 422, "{bad}: {out}");
    }
    let token = register_agent(&hub, "dev", &[]);
    let (status, _) = hub.post_as(
        "/api/subscriptions",
        Some(&token),
        &json!({"topic": "t", "deliver": {"agent": "dev"}}),
    );
    assert_eq!(status, 403, "an agent may not subscribe others to work");

    for pr in 0..10 {
        let repo = if pr % 5 == 4 { "docs" } else { "web" };
        let (status, body) = hub.post(
            "/api/topics/pr_opened/events",
            &json!({"payload": {"pr": pr, "repo": repo, "url": format!("https://x/{pr}")}}),
        );
        assert_eq!(status, 201, "{body}");
    }
    // Killed while the subscription may still be creating its tasks.
    hub.kill9();
    hub.restart();
    let made = wait_for(SOON, || tasks_of(&hub, &sub).len() == 8);
    assert!(made, "{:?}", tasks_of(&hub, &sub));
    let tasks = tasks_of(&hub, &sub);
    let mut prs: Vec<String> = tasks
        .iter()
        .map(|t| t["description"].as_str().unwrap_or_default().to_string())
        .collect();
    prs.sort();
    prs.dedup();
    assert_eq!(prs.len(), 8, "one task per matching event: {prs:?}");
    assert!(prs.iter().all(|d| d.starts_with("Review PR ")), "{prs:?}");
    assert!(
        !prs.iter()
            .any(|d| d.starts_with("Review PR 4 ") || d.starts_with("Review PR 9 ")),
        "the filter leaves docs out: {prs:?}"
    );
    let t = &tasks[0];
    assert_eq!(t["needed_capabilities"], json!(["review"]), "{t}");
    assert!(
        t["metadata"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://x/")),
        "{t}"
    );
    assert!(
        t["metadata"]["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("evt-")),
        "{t}"
    );
    // Still eight after another restart (the cursor and the fixed ids hold).
    hub.restart();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(tasks_of(&hub, &sub).len(), 8);
    let (_, events) = hub.get("/api/events?kind=subscription_fired&limit=100");
    assert_eq!(events["count"], 8, "{events}");
    let (_, listed) = hub.get("/api/subscriptions");
    assert_eq!(listed["subscriptions"][0]["fired"], 8, "{listed}");
    // Deleted: no more tasks.
    let (status, _) = hub.delete(&format!("/api/subscriptions/{sub}"));
    assert_eq!(status, 200);
    hub.post(
        "/api/topics/pr_opened/events",
        &json!({"payload": {"pr": 11, "repo": "web"}}),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(tasks_of(&hub, &sub).len(), 8);
    let (status, _) = hub.delete(&format!("/api/subscriptions/{sub}"));
    assert_eq!(status, 404);
}

#[test]
fn a_subscription_delivers_events_as_messages() {
    let hub = Hub::start();
    let token = register_agent(&hub, "publisher-agent", &[]);
    let mut agent = Agent::connect(&hub, "publisher-agent", &token);
    subscribe(
        &hub,
        json!({"topic": "deliverable_ready", "deliver": {"agent": "publisher-agent"}}),
    );
    hub.post(
        "/api/topics/deliverable_ready/events",
        &json!({"payload": {"path": "dist/report.pdf"}}),
    );
    let message = agent.recv_type("message", PUSH_TIMEOUT);
    assert_eq!(message["message_type"], "topic_event", "{message}");
    assert_eq!(
        message["payload"]["payload"]["path"], "dist/report.pdf",
        "{message}"
    );
    assert_eq!(
        message["payload"]["topic"], "deliverable_ready",
        "{message}"
    );
    // A delivery that keeps failing (no such channel) holds up nobody else.
    subscribe(
        &hub,
        json!({"topic": "build_done", "deliver": {"channel": "nowhere"}}),
    );
    let tasks = subscribe(
        &hub,
        json!({"topic": "build_done", "task": {"description": "Ship {{payload.build}}",
                                               "needed_capabilities": ["nobody"]}}),
    );
    hub.post(
        "/api/topics/build_done/events",
        &json!({"payload": {"build": 7}}),
    );
    let made = wait_for(SOON, || {
        tasks_of(&hub, &tasks)
            .iter()
            .any(|t| t["description"] == "Ship 7")
    });
    assert!(made, "{}", hub.get("/api/subscriptions").1);
}
