//! Questions (#20, ext, PROTOCOL.md 6.26): a holder asks mid-task and keeps
//! the task (`input_required`, no lease clock); an operator answers over HTTP
//! (agents and observers may not); the answer reaches the holder as
//! `task_answer`, again after a recovery; a question that times out takes its
//! default, else the task is dead-lettered; everything is in the event log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn ask(agent: &mut Agent, assign: &Value, extra: Value) -> Value {
    agent.ask(assign, "Deploy to production?", extra)
}

fn answer(hub: &Hub, token: &str, task: &str, text: &str) -> (u16, Value) {
    hub.post_as(
        &format!("/api/tasks/{task}/answer"),
        Some(token),
        &json!({"answer": text}),
    )
}

#[test]
fn a_question_holds_the_task_past_its_lease_until_an_operator_answers() {
    let hub = Hub::start_with_config(
        "default_lease_ms = 1000\nsweep_interval_ms = 50\n\
         alert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n",
    );
    let token = register_agent(&hub, "asker", &[]);
    let mut agent = Agent::connect(&hub, "asker", &token);
    let task = submit(&hub, json!({"description": "ship it"}));
    let assign = agent.take(&task);
    let ack = ask(&mut agent, &assign, json!({"options": ["yes", "no"]}));
    assert_eq!(
        (ack["type"].as_str(), ack["status"].as_str()),
        (Some("task_ack"), Some("input_required")),
        "{ack}"
    );
    let alerting = |hub: &Hub| -> bool {
        let (_, alerts) = hub.get("/api/alerts");
        alerts["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["rule_id"] == "question_waiting"))
    };
    assert!(
        wait_for(SOON, || alerting(&hub)),
        "no question_waiting alert"
    );
    let (_, listed) = hub.get("/api/questions");
    assert_eq!(listed["questions"][0]["task_id"], task.as_str(), "{listed}");
    assert_eq!(
        listed["questions"][0]["question"]["options"],
        json!(["yes", "no"])
    );
    // Well past its lease: still held, still asking.
    std::thread::sleep(Duration::from_millis(1500));
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "input_required", "{t}");
    assert_eq!(t["assigned_to"], "asker", "{t}");
    assert_eq!(t["reclaim_count"], 0, "{t}");

    // Who may answer, and what.
    let eye = hub
        .post(
            "/admin/tokens",
            &json!({"agent_id": "eye", "role": "observer"}),
        )
        .1;
    let (status, body) = answer(
        &hub,
        eye["token"].as_str().unwrap_or_default(),
        &task,
        "yes",
    );
    assert_eq!((status, body["error"].as_str()), (403, Some("read_only")));
    let (status, body) = answer(&hub, &token, &task, "yes");
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_only")));
    let (status, body) = answer(&hub, &hub.admin_token, &task, "maybe");
    assert_eq!(status, 422, "{body}");
    let (status, body) = hub.post_as(
        &format!("/api/tasks/{task}/answer"),
        Some(&hub.admin_token),
        &json!({}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(get_task(&hub, &task)["status"], "input_required");

    let (status, body) = answer(&hub, &hub.admin_token, &task, "yes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["status"], "assigned", "{body}");
    let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (
            pushed["question_id"].clone(),
            pushed["answer"].clone(),
            pushed["answered_by"].clone()
        ),
        (json!(1), json!("yes"), json!("admin")),
        "{pushed}"
    );
    let (status, _) = answer(&hub, &hub.admin_token, &task, "no");
    assert_eq!(status, 409, "a question is answered once");
    // A recovery brings the answer again (the agent may have missed it).
    agent.send(json!({"type": "task_recovering", "task_id": task,
                      "generation": assign["generation"]}));
    agent.recv_type("task_continue", PUSH_TIMEOUT);
    let again = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(again["answer"], "yes", "{again}");
    agent.complete(&assign);
    let (_, events) = hub.get(&format!("/api/events?task_id={task}&kind=answered"));
    assert_eq!(events["events"][0]["actor"], "admin", "{events}");
    assert_eq!(events["events"][0]["details"]["answer"], "yes", "{events}");
    let (_, asked) = hub.get(&format!("/api/events?task_id={task}&kind=input_required"));
    assert_eq!(asked["events"][0]["actor"], "asker", "{asked}");
    assert_eq!(hub.get("/api/questions").1["count"], 0);
    assert!(
        wait_for(SOON, || !alerting(&hub)),
        "the alert stays after the answer"
    );
}

#[test]
fn a_question_that_times_out_takes_its_default_or_fails_the_task() {
    let hub = Hub::start_with_config("sweep_interval_ms = 50\n");
    let token = register_agent(&hub, "asker", &[]);
    let mut agent = Agent::connect(&hub, "asker", &token);
    let task = submit(&hub, json!({"description": "with a default"}));
    let assign = agent.take(&task);
    let ack = ask(
        &mut agent,
        &assign,
        json!({"default": "no", "timeout_ms": 1000}),
    );
    assert_eq!(ack["status"], "input_required", "{ack}");
    let pushed = agent.recv_type("task_answer", Duration::from_secs(30));
    assert_eq!(
        (pushed["answer"].clone(), pushed["answered_by"].clone()),
        (json!("no"), json!("hub")),
        "{pushed}"
    );
    assert_eq!(get_task(&hub, &task)["status"], "assigned");
    agent.complete(&assign);

    let task = submit(&hub, json!({"description": "without"}));
    let assign = agent.take(&task);
    ask(&mut agent, &assign, json!({"timeout_ms": 1000}));
    let cancelled = agent.recv_type("task_cancelled", Duration::from_secs(30));
    assert_eq!(cancelled["reason"], "input_timeout", "{cancelled}");
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "dead_letter", "{t}");
    assert_eq!(t["retry_count"], 0, "{t}");
}

#[test]
fn bad_questions_are_refused_and_change_nothing() {
    let hub = Hub::start();
    let token = register_agent(&hub, "asker", &[]);
    let mut agent = Agent::connect(&hub, "asker", &token);
    let task = submit(&hub, json!({"description": "d"}));
    let assign = agent.take(&task);
    let many: Vec<String> = (0..21).map(|i| format!("o{i}")).collect();
    for (extra, field) in [
        (json!({"options": many}), "options"),
        (json!({"options": ["a"], "default": "b"}), "default"),
        (json!({"timeout_ms": 10}), "timeout_ms"),
        (json!({"question": ""}), "question"),
    ] {
        let reply = ask(&mut agent, &assign, extra.clone());
        assert_eq!(reply["error"], "validation_failed", "{extra}: {reply}");
        assert_eq!(reply["errors"][0]["field"], field, "{extra}: {reply}");
    }
    let mut stale = assign.clone();
    stale["generation"] = json!(99);
    let reply = ask(&mut agent, &stale, json!({}));
    assert_refused(&reply, "task_input_required_failed");
    assert_eq!(get_task(&hub, &task)["status"], "assigned");
}
