//! `GET /api/tasks/:id/wait` (ext): a long poll that answers when the task ends
//! or its timeout passes, so clients (the MCP server) wait without polling.
//!
//! The waits below ask for 60 s, longer than the client's own HTTP timeout
//! (`HTTP_TIMEOUT`, 30 s): a wait that was not woken by the task's end fails the
//! test instead of passing late. The short pause before ending the task only
//! makes it likely that the wait is already in place (and so that the wake-up is
//! what is tested); the assertions hold either way.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn a_wait_answers_when_the_task_completes() {
    let hub = Hub::start();
    let token = register_agent(&hub, "waiter-agent", &[]);
    let mut agent = Agent::connect(&hub, "waiter-agent", &token);
    let task_id = submit(&hub, json!({"description": "wait for me"}));
    let assign = agent.take(&task_id);

    // The agent's own token may wait, as may any token.
    let url = hub.url(&format!("/api/tasks/{task_id}/wait?timeout_ms=60000"));
    let waiter = {
        let token = token.clone();
        thread::spawn(move || http("GET", &url, Some(&token), Body::None))
    };
    thread::sleep(Duration::from_millis(200));
    agent.send(json!({"type": "task_complete", "task_id": task_id,
                      "generation": assign["generation"], "result": {"ok": true}}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    let (status, task) = waiter.join().expect("waiter thread");
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["id"], task_id.as_str());
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], json!({"ok": true}));

    // A finished task is answered at once, whatever the timeout.
    let (status, task) = hub.get(&format!("/api/tasks/{task_id}/wait?timeout_ms=60000"));
    assert_eq!(status, 200);
    assert_eq!(task["status"], "completed");
}

#[test]
fn a_wait_answers_on_cancel_and_at_its_timeout() {
    let hub = Hub::start();
    let task_id = submit(
        &hub,
        json!({"description": "no agent", "needed_capabilities": ["none-here"]}),
    );

    let (status, task) = hub.get(&format!("/api/tasks/{task_id}/wait?timeout_ms=100"));
    assert_eq!(status, 200, "{task}");
    assert_eq!(
        task["status"], "queued",
        "the task as it stands at the timeout"
    );

    let url = hub.url(&format!("/api/tasks/{task_id}/wait?timeout_ms=60000"));
    let admin = hub.admin_token.clone();
    let waiter = thread::spawn(move || http("GET", &url, Some(&admin), Body::None));
    thread::sleep(Duration::from_millis(200));
    let (status, body) = hub.post(&format!("/api/tasks/{task_id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, task) = waiter.join().expect("waiter thread");
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "cancelled", "{task}");
}

#[test]
fn a_wait_with_bad_input_is_refused() {
    let hub = Hub::start();
    let task_id = submit(&hub, json!({"description": "x"}));
    for query in ["timeout_ms=60001", "timeout_ms=abc", "timeout_ms=-1"] {
        let (status, body) = hub.get(&format!("/api/tasks/{task_id}/wait?{query}"));
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"], "validation_failed", "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], "timeout_ms", "{query}: {body}");
    }
    let (status, body) = hub.get("/api/tasks/task-00000000000000ff/wait?timeout_ms=10");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "task_not_found", "{body}");
    let (status, body) = hub.get_as(&format!("/api/tasks/{task_id}/wait"), None);
    assert_eq!(status, 401, "{body}");
}
