//! Standing orders: one run per occurrence (also across a restart and clock jumps),
//! outcomes reported in the run's result, `missed` when the window closes without
//! one, and the CRUD API. Time is driven through the hub's injectable clock (a
//! file the test writes), never by sleeping through minutes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MIN: i64 = 60_000;
/// 2026-11-21T10:00:30Z: half a minute past an occurrence of "* * * * *".
const T0: i64 = 1_795_255_230_000;

fn hub_with_clock(clock: &HubClock) -> Hub {
    Hub::start_with_config(&format!(
        "{}alert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n",
        clock.config()
    ))
}

fn runs(hub: &Hub, name: &str) -> Vec<Value> {
    let (status, body) = hub.get(&format!("/api/standing-orders/{name}/runs"));
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}

fn run_at(hub: &Hub, name: &str, at: i64) -> Option<Value> {
    runs(hub, name)
        .into_iter()
        .find(|r| r["scheduled_for"].as_i64() == Some(at))
}

/// Waits until the run at `at` has `status`; returns it.
fn wait_run_status(hub: &Hub, name: &str, at: i64, status: &str) -> Value {
    let mut last = None;
    let ok = wait_for(Duration::from_secs(20), || {
        last = run_at(hub, name, at);
        last.as_ref().is_some_and(|r| r["status"] == status)
    });
    assert!(
        ok,
        "run at {at} never became {status}: {last:?} / {:?}",
        runs(hub, name)
    );
    last.unwrap_or(Value::Null)
}

/// Every task a standing order created, counted by scheduled time.
fn run_tasks_by_time(hub: &Hub) -> HashMap<i64, usize> {
    let mut by_time = HashMap::new();
    for t in list_all_tasks(hub, "", 1000) {
        if let Some(at) = t["metadata"]["standing_order"]["scheduled_for"].as_i64() {
            *by_time.entry(at).or_insert(0) += 1;
        }
    }
    by_time
}

fn minute(n: i64) -> i64 {
    // The occurrence n minutes after 10:00:00.
    T0 - 30_000 + n * MIN
}

#[test]
fn one_run_per_occurrence_across_restart_and_clock_jumps_and_no_work_differs_from_missed() {
    let clock = HubClock::new(T0);
    let mut hub = hub_with_clock(&clock);
    let token = register_agent(&hub, "reporter", &["reports"]);
    let (status, order) = hub.post(
        "/api/standing-orders",
        &json!({"name": "inbox-sweep", "cron": "* * * * *", "timezone": "UTC",
                "capability": "reports", "window_ms": 120_000,
                "task": {"description": "sweep the inbox", "priority": "high"}}),
    );
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["next_runs"][0], minute(1), "{order}");

    // 10:01 comes: one run, handed to the capable agent, which finds nothing to do.
    let mut agent = Agent::connect_with_caps(&hub, "reporter", &token, &["reports"]);
    clock.set(minute(1) + 20_000);
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(
        assign["metadata"]["standing_order"]["scheduled_for"],
        minute(1),
        "{assign}"
    );
    let task_id = assign["task_id"].as_str().expect("task id").to_string();
    agent.accept(&task_id, assign["generation"].clone());
    agent.send(json!({"type": "task_complete", "task_id": task_id,
                      "generation": assign["generation"],
                      "result": {"outcome": "no_work", "evidence": {"messages_checked": 12}}}));
    agent.recv_ack(&task_id, REPLY_TIMEOUT);
    let ran = wait_run_status(&hub, "inbox-sweep", minute(1), "no_work");
    assert_eq!(ran["evidence"], json!({"messages_checked": 12}), "{ran}");
    assert_eq!(ran["task_id"], task_id.as_str());

    // 10:02 comes while the agent is gone: the run waits in the queue...
    agent.close();
    clock.set(minute(2) + 5_000);
    let pending = wait_run_status(&hub, "inbox-sweep", minute(2), "pending");
    let missed_task = pending["task_id"].as_str().expect("task id").to_string();

    // ...and a restart in between creates nothing twice.
    hub.restart();
    clock.set(minute(2) + 40_000);
    assert!(wait_for(Duration::from_secs(5), || {
        get_task(&hub, &missed_task)["status"] == "queued"
    }));

    // The window closes with no outcome: missed, and the late run is called off.
    clock.set(minute(4) + 1_000);
    let missed = wait_run_status(&hub, "inbox-sweep", minute(2), "missed");
    assert_eq!(missed["task_id"], missed_task.as_str(), "{missed}");
    assert!(wait_for(Duration::from_secs(10), || {
        get_task(&hub, &missed_task)["status"] == "cancelled"
    }));
    // "Ran and found nothing" and "did not run" are told apart at a glance.
    let (_, listing) = hub.get("/api/standing-orders/inbox-sweep/runs");
    assert_eq!(listing["summary"]["no_work"], 1, "{listing}");
    assert!(
        listing["summary"]["missed"].as_u64() >= Some(1),
        "{listing}"
    );
    let alerts_fired = wait_for(Duration::from_secs(10), || {
        let (_, alerts) = hub.get("/api/alerts");
        alerts["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["rule_id"] == "standing_order_missed"))
    });
    assert!(alerts_fired, "standing_order_missed alert");
    // And the hub published it (ext, PROTOCOL.md 6.32), once per missed run.
    let (_, published) = hub.get("/api/topics/standing_order.missed/events");
    let events = published["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["payload"]["order"] == "inbox-sweep"
            && e["payload"]["scheduled_for"] == minute(2)
            && e["publisher"] == "hub"),
        "{published}"
    );
    let (_, missed_runs) = hub.get("/api/standing-orders/inbox-sweep/runs");
    assert_eq!(
        Some(events.len() as u64),
        missed_runs["summary"]["missed"].as_u64(),
        "{published}"
    );

    // The clock jumps back: nothing is planned again.
    let before = runs(&hub, "inbox-sweep").len();
    clock.set(minute(1) + 45_000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs(&hub, "inbox-sweep").len(), before);

    // Forward over several windows: the skipped occurrences are missed (never
    // run, no task), the ones still in their window get a run each.
    clock.set(minute(10) + 30_000);
    wait_run_status(&hub, "inbox-sweep", minute(10), "pending");
    let skipped = run_at(&hub, "inbox-sweep", minute(7)).expect("10:07 recorded");
    assert_eq!(skipped["status"], "missed", "{skipped}");
    assert!(skipped["task_id"].is_null(), "{skipped}");
    assert_eq!(
        run_at(&hub, "inbox-sweep", minute(9)).map(|r| r["status"].clone()),
        Some(json!("pending"))
    );

    // Exactly one record and at most one task per occurrence, after all of it.
    let all = runs(&hub, "inbox-sweep");
    let times: Vec<i64> = all
        .iter()
        .filter_map(|r| r["scheduled_for"].as_i64())
        .collect();
    assert_eq!(times, (1..=10).map(minute).collect::<Vec<_>>(), "{all:?}");
    assert!(
        run_tasks_by_time(&hub).values().all(|n| *n == 1),
        "{:?}",
        run_tasks_by_time(&hub)
    );

    // since/until select occurrences by scheduled time.
    let (_, window) = hub.get(&format!(
        "/api/standing-orders/inbox-sweep/runs?since={}&until={}",
        minute(2),
        minute(4)
    ));
    assert_eq!(window["count"], 3, "{window}");
}

#[test]
fn outcomes_reported_by_the_agent_and_by_the_task_are_recorded() {
    let clock = HubClock::new(T0);
    let hub = hub_with_clock(&clock);
    let token = register_agent(&hub, "night-owl", &[]);
    let (status, body) = hub.post(
        "/api/standing-orders",
        &json!({"name": "owl", "cron": "*/1 * * * *", "agent": "night-owl",
                "task": {"description": "look around", "max_retries": 1}}),
    );
    assert_eq!(status, 201, "{body}");
    let mut agent = Agent::connect(&hub, "night-owl", &token);
    let mut report = |n: i64, frame: &dyn Fn(&str, &Value) -> Value| {
        clock.set(minute(n) + 1_000);
        let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
        let id = assign["task_id"].as_str().expect("task id").to_string();
        // The run targets the agent by name.
        assert!(
            assign["needed_capabilities"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("agent:night-owl"))),
            "{assign}"
        );
        agent.accept(&id, assign["generation"].clone());
        agent.send(frame(&id, &assign["generation"]));
        agent.recv_ack(&id, REPLY_TIMEOUT);
    };
    report(1, &|id, g| {
        json!({"type": "task_complete", "task_id": id, "generation": g,
               "result": {"outcome": "completed", "evidence": {"pr": "https://example.test/pr/1"}}})
    });
    report(2, &|id, g| {
        json!({"type": "task_complete", "task_id": id, "generation": g,
               "result": {"outcome": "blocked", "evidence": "needs a password"}})
    });
    report(
        3,
        &|id, g| json!({"type": "task_failed", "task_id": id, "generation": g, "error": "disk full"}),
    );
    report(
        4,
        &|id, g| json!({"type": "task_complete", "task_id": id, "generation": g}),
    );
    wait_run_status(&hub, "owl", minute(1), "completed");
    wait_run_status(&hub, "owl", minute(2), "blocked");
    let failed = wait_run_status(&hub, "owl", minute(3), "failed");
    assert_eq!(failed["evidence"]["error"], "disk full", "{failed}");
    // No outcome in the result: a completed task is a completed run.
    wait_run_status(&hub, "owl", minute(4), "completed");
}

#[test]
fn standing_orders_are_managed_by_the_admin_and_refuse_bad_input() {
    let clock = HubClock::new(T0);
    let hub = hub_with_clock(&clock);
    let agent_token = register_agent(&hub, "someone", &[]);
    let good = json!({"name": "daily", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin",
                      "task": {"description": "standup notes"}});
    let (status, _) = hub.post_as("/api/standing-orders", Some(&agent_token), &good);
    assert_eq!(status, 403);
    let (status, created) = hub.post("/api/standing-orders", &good);
    assert_eq!(status, 201, "{created}");
    let (status, dup) = hub.post("/api/standing-orders", &good);
    assert_eq!(
        (status, dup["error"].as_str()),
        (409, Some("already_exists")),
        "{dup}"
    );

    for (bad, field) in [
        (
            json!({"name": "x", "cron": "* * *", "task": {"description": "d"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "99 * * * *", "task": {"description": "d"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "timezone": "Mars/Base", "task": {"description": "d"}}),
            "timezone",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "task": {}}),
            "task.description",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "task": {"description": "d", "depends_on": ["task-0000000000000000"]}}),
            "task.depends_on",
        ),
        (
            json!({"name": "x y", "cron": "* * * * *", "task": {"description": "d"}}),
            "name",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "task": {"description": "d"}, "window_ms": 5}),
            "window_ms",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "task": {"description": "d"}, "enabled": "yes"}),
            "enabled",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "task": {"description": "d"}, "agent": "a", "capability": "c"}),
            "agent",
        ),
    ] {
        let (status, body) = hub.post("/api/standing-orders", &bad);
        assert_eq!(status, 422, "{bad} -> {body}");
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{bad} -> {body}");
    }
    let (_, listing) = hub.get("/api/standing-orders");
    assert_eq!(listing["count"], 1, "bad input created nothing: {listing}");

    // Disabled: time passes, nothing runs and nothing is missed.
    let url = |p: &str| hub.url(p);
    let put = |body: Value| {
        http(
            "PUT",
            &url("/api/standing-orders/daily"),
            Some(&hub.admin_token),
            Body::Json(&body),
        )
    };
    let (status, changed) = put(json!({"enabled": false, "cron": "* * * * *", "timezone": "UTC"}));
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["enabled"], false);
    clock.set(T0 + 5 * MIN);
    std::thread::sleep(Duration::from_millis(300));
    assert!(runs(&hub, "daily").is_empty());
    // Enabled again: only occurrences from now on.
    let (status, _) = put(json!({"enabled": true}));
    assert_eq!(status, 200);
    clock.set(T0 + 6 * MIN);
    assert!(wait_for(Duration::from_secs(10), || runs(&hub, "daily")
        .len()
        == 1));
    assert_eq!(runs(&hub, "daily")[0]["scheduled_for"], minute(6));
    let (status, body) = put(json!({"cron": "nonsense"}));
    assert_eq!(status, 422, "{body}");

    let (status, _) = hub.delete("/api/standing-orders/daily");
    assert_eq!(status, 200);
    let (status, body) = hub.get("/api/standing-orders/daily");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("standing_order_not_found"))
    );
    // The history of a deleted order stays readable.
    assert_eq!(runs(&hub, "daily").len(), 1);
    let (status, _) = hub.get("/api/standing-orders/never-existed/runs");
    assert_eq!(status, 404);
    let (status, body) = hub.get("/api/standing-orders/daily/runs?limit=0");
    assert_eq!(status, 422, "{body}");
    // Every change is in the event log with its actor.
    let (_, events) = hub.get("/api/events?kind=standing_order_updated");
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.len() == 2 && e.iter().all(|x| x["actor"] == "admin")),
        "{events}"
    );
}
