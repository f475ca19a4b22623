//! `dedupe_key` (PROTOCOL.md section 6): while a task with the key is unfinished,
//! a submit with the same key gets that task (200) instead of a new one, also when
//! the submits race, come in one batch, or straddle a restart.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::*;
use serde_json::{json, Value};

#[test]
fn concurrent_duplicate_submits_create_one_task() {
    let hub = Arc::new(Hub::start());
    let submitters = 16;
    let barrier = Arc::new(Barrier::new(submitters));
    let handles: Vec<_> = (0..submitters)
        .map(|i| {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                hub.post(
                    "/api/tasks",
                    &json!({"description": format!("nightly report {i}"), "dedupe_key": "report-2026-11-21"}),
                )
            })
        })
        .collect();
    let replies: Vec<(u16, Value)> = handles
        .into_iter()
        .map(|h| h.join().expect("submitter thread"))
        .collect();
    let created: Vec<&Value> = replies
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "exactly one submit creates: {replies:?}");
    let id = created[0]["task_id"].as_str().expect("task_id").to_string();
    for (status, body) in &replies {
        assert_eq!(body["task_id"], id.as_str(), "{body}");
        if *status == 200 {
            assert_eq!(
                (body["status"].as_str(), body["deduplicated"].as_bool()),
                (Some("duplicate"), Some(true))
            );
        } else {
            assert_eq!(*status, 201, "{body}");
        }
    }
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 1);
    assert_eq!(get_task(&hub, &id)["dedupe_key"], "report-2026-11-21");
}

#[test]
fn a_key_is_free_again_once_its_task_is_finished_and_survives_a_restart_until_then() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "worker-1", &[]);
    let first = submit(
        &hub,
        json!({"description": "sync", "dedupe_key": "sync-repo"}),
    );
    // A batch: a key already held, the same new key twice, and no key.
    let (status, body) = hub.post(
        "/api/tasks",
        &json!([
            {"description": "sync again", "dedupe_key": "sync-repo"},
            {"description": "lint", "dedupe_key": "lint"},
            {"description": "lint again", "dedupe_key": "lint"},
            {"description": "free"},
        ]),
    );
    assert_eq!(status, 201, "{body}");
    let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 4, "{body}");
    assert_eq!(tasks[0]["task_id"], first.as_str());
    assert_eq!(tasks[0]["deduplicated"], true);
    assert_eq!(tasks[1]["deduplicated"], false);
    assert_eq!(tasks[2]["task_id"], tasks[1]["task_id"]);
    assert_eq!(tasks[2]["deduplicated"], true);
    assert_eq!(tasks[3]["deduplicated"], false);
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 3);

    // Across a restart the key still belongs to the unfinished task.
    hub.restart();
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "x", "dedupe_key": "sync-repo"}),
    );
    assert_eq!(
        (status, body["task_id"].as_str()),
        (200, Some(first.as_str())),
        "{body}"
    );

    // Finished, the key is free: the next submit creates a new task.
    let mut agent = Agent::connect(&hub, "worker-1", &token);
    let mut done = false;
    for _ in 0..3 {
        let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
        let id = assign["task_id"].as_str().unwrap_or_default().to_string();
        agent.accept(&id, assign["generation"].clone());
        agent.send(
            json!({"type": "task_complete", "task_id": id, "generation": assign["generation"]}),
        );
        agent.recv_ack(&id, REPLY_TIMEOUT);
        done |= id == first;
    }
    assert!(done, "the keyed task ran");
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "sync", "dedupe_key": "sync-repo"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["task_id"], first.as_str());
}

#[test]
fn a_bad_dedupe_key_is_refused_and_creates_nothing() {
    let hub = Hub::start();
    for bad in [json!(""), json!(7), json!("k".repeat(257))] {
        let (status, body) = hub.post(
            "/api/tasks",
            &json!({"description": "d", "dedupe_key": bad}),
        );
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["errors"][0]["field"], "dedupe_key", "{body}");
    }
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 0);
}
