//! Concurrency keys and fairness (#19, ext, PROTOCOL.md 6.22): an operator caps
//! how many tasks of a key run at once, and the cap holds under load; within a
//! priority, keys (or correlation ids) are served round-robin, so one
//! submitter's long backlog does not starve another's few tasks.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn running_of(hub: &Hub, key: &str) -> u64 {
    let (status, body) = hub.get("/api/admin/concurrency");
    assert_eq!(status, 200, "{body}");
    body["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|e| e["key"] == key))
        .and_then(|e| e["running"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_keys_limit_holds_under_200_tasks_and_10_agents() {
    let hub = Hub::start();
    let (status, set) = hub.put("/api/admin/concurrency/repo:web", &json!({"limit": 3}));
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        set,
        json!({"key": "repo:web", "limit": 3, "previous_limit": null, "running": 0})
    );
    let mut agents: Vec<Agent> = (0..10)
        .map(|i| {
            let id = format!("w{i}");
            let token = register_agent(&hub, &id, &[]);
            Agent::connect(&hub, &id, &token)
        })
        .collect();
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"description": format!("web {i}"), "concurrency_key": "repo:web"}))
        .collect();
    let keyed: HashSet<String> = submit_batch(&hub, json!(batch)).into_iter().collect();
    // Tasks without the key are not held back by it.
    let free: HashSet<String> = (0..5)
        .map(|i| submit(&hub, json!({"description": format!("free {i}")})))
        .collect();

    let mut holding: Vec<(usize, Value)> = Vec::new();
    let (mut done, mut done_free, mut most) = (0, 0, 0);
    for _round in 0..2_000 {
        if done == keyed.len() && done_free == free.len() {
            break;
        }
        for (i, agent) in agents.iter_mut().enumerate() {
            if let Some(assign) = agent.try_recv_type("task_assign", Duration::from_millis(2)) {
                holding.push((i, assign));
            }
        }
        let running = holding
            .iter()
            .filter(|(_, a)| keyed.contains(a["task_id"].as_str().unwrap_or("")))
            .count();
        most = most.max(running);
        assert!(running <= 3, "{running} tasks of the key run at once");
        // Finish the oldest held task, then look again.
        if !holding.is_empty() {
            let (i, assign) = holding.remove(0);
            let id = assign["task_id"].as_str().unwrap_or("").to_string();
            agents[i].complete(&assign);
            if keyed.contains(&id) {
                done += 1;
            } else if free.contains(&id) {
                done_free += 1;
            }
        }
    }
    assert_eq!((done, done_free), (200, 5), "every task ran");
    assert_eq!(most, 3, "the limit was reached, never passed");
    assert_eq!(running_of(&hub, "repo:web"), 0);
    let (_, page) = hub.get("/api/events?kind=concurrency_limit_set");
    assert_eq!(page["events"][0]["details"]["key"], "repo:web", "{page}");
}

#[test]
fn a_limit_of_zero_pauses_a_key_and_raising_it_releases_its_tasks() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut worker = Agent::connect(&hub, "worker", &token);
    let (status, _) = hub.put("/api/admin/concurrency/nightly", &json!({"limit": 0}));
    assert_eq!(status, 200);
    let held = submit(
        &hub,
        json!({"description": "held", "concurrency_key": "nightly"}),
    );
    assert_no_assignment(&hub, &mut worker);
    let (status, body) = hub.put("/api/admin/concurrency/nightly", &json!({"limit": 1}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_limit"], 0);
    let a = worker.take(&held);
    assert_eq!(running_of(&hub, "nightly"), 1);
    worker.complete(&a);
    // Removed: no cap at all; the limit survives a restart until then.
    let (status, body) = hub.delete("/api/admin/concurrency/nightly");
    assert_eq!((status, body["limit"].clone()), (200, Value::Null));
    // Bad input changes nothing.
    for (path, body) in [
        ("/api/admin/concurrency/k", json!({"limit": -1})),
        ("/api/admin/concurrency/k", json!({"limit": 10_001})),
        ("/api/admin/concurrency/k", json!({"limit": "3"})),
        ("/api/admin/concurrency/k", json!({})),
    ] {
        let (status, resp) = hub.put(path, &body);
        assert_eq!(status, 422, "{body} → {resp}");
        assert_eq!(resp["errors"][0]["field"], "limit", "{resp}");
    }
    let long = "k".repeat(129);
    let (status, _) = hub.put(
        &format!("/api/admin/concurrency/{long}"),
        &json!({"limit": 1}),
    );
    assert_eq!(status, 422);
    let agent_token = register_agent(&hub, "nosy", &[]);
    let (status, _) = http(
        "PUT",
        &hub.url("/api/admin/concurrency/k"),
        Some(&agent_token),
        Body::Json(&json!({"limit": 1})),
    );
    assert_eq!(status, 403, "agents cannot set limits");
    let (status, body) = hub.get("/api/admin/concurrency");
    assert_eq!((status, body["keys"].clone()), (200, json!([])), "{body}");
    let (status, resp) = hub.post(
        "/api/tasks",
        &json!({"description": "x", "concurrency_key": ""}),
    );
    assert_eq!(status, 422, "{resp}");
}

#[test]
fn a_limit_survives_a_restart_and_running_tasks_are_counted_again() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut worker = Agent::connect(&hub, "worker", &token);
    hub.put("/api/admin/concurrency/k", &json!({"limit": 1}));
    let first = submit(&hub, json!({"description": "one", "concurrency_key": "k"}));
    worker.take(&first);
    submit(&hub, json!({"description": "two", "concurrency_key": "k"}));
    drop(worker);
    hub.kill9();
    hub.start_again();
    assert_eq!(running_of(&hub, "k"), 1, "the assigned task counts again");
    let (_, keys) = hub.get("/api/admin/concurrency");
    assert_eq!(keys["keys"][0]["limit"], 1, "{keys}");
}

#[test]
fn keys_are_served_round_robin_so_a_backlog_does_not_starve_a_small_submitter() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"description": format!("a{i}"), "concurrency_key": "A"}))
        .collect();
    let a_ids = submit_batch(&hub, json!(batch));
    let b: Vec<Value> = (0..10)
        .map(|i| json!({"description": format!("b{i}"), "concurrency_key": "B"}))
        .collect();
    let b_ids: HashSet<String> = submit_batch(&hub, json!(b)).into_iter().collect();
    let mut worker = Agent::connect(&hub, "worker", &token);
    let mut order = Vec::new();
    for _ in 0..20 {
        let assign = worker.recv_type("task_assign", Duration::from_secs(10));
        order.push(assign["task_id"].as_str().unwrap_or("").to_string());
        worker.complete(&assign);
    }
    let b_done = order.iter().filter(|t| b_ids.contains(*t)).count();
    assert_eq!(b_done, 10, "all of B within the first 20: {order:?}");
    assert_eq!(order[0], a_ids[0], "A was first in line");
}
