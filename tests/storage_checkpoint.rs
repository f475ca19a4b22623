//! The queue's stop checkpoint: a clean restart loads the queue from what the
//! stop wrote (instead of reading every task record) and serves exactly the
//! state a full read would give; a store touched after the stop is read in full.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn logs_of_start(hub: &Hub, start: usize) -> String {
    std::fs::read_to_string(&hub.log_paths()[start - 1]).unwrap_or_default()
}

/// The "task queue loaded" line of a start says whether the checkpoint served.
fn loaded_from_checkpoint(hub: &Hub, start: usize) -> bool {
    let log = logs_of_start(hub, start);
    let line = log
        .lines()
        .find(|l| l.contains("task queue loaded"))
        .unwrap_or_else(|| panic!("no load line in start {start}:\n{log}"));
    let v: Value = serde_json::from_str(line).expect("json log line");
    v["fields"]["from_checkpoint"]
        .as_bool()
        .unwrap_or_else(|| panic!("no from_checkpoint field: {line}"))
}

/// Every task the hub serves, as `GET /api/tasks/:id` shows it.
fn tasks(hub: &Hub, ids: &[&str]) -> Vec<Value> {
    ids.iter().map(|id| get_task(hub, id)).collect()
}

fn stats(hub: &Hub) -> Value {
    let (status, mut s) = hub.get("/api/tasks/stats");
    assert_eq!(status, 200, "{s}");
    // A time, not a state: the oldest waiting task is the same task either way.
    s.as_object_mut().map(|o| o.remove("oldest_queued_since"));
    s
}

/// A queue with a bit of everything: completed, assigned, queued with a
/// `dedupe_key`, waiting on a dependency, waiting for `run_after`, routed.
struct Mixed {
    done: String,
    held: String,
    first: String,
    second: String,
    later: String,
}

fn mixed_queue(hub: &Hub) -> (Mixed, Agent) {
    let token = register_agent(hub, "plain", &[]);
    let mut plain = Agent::connect(hub, "plain", &token);
    let done = submit(hub, json!({"description": "done before the stop"}));
    let a = plain.take(&done);
    plain.complete(&a);
    let held = submit(hub, json!({"description": "held across the stop"}));
    plain.take(&held);
    let first = submit(
        hub,
        json!({"description": "first", "needed_capabilities": ["gpu"], "priority": "high",
               "dedupe_key": "first-key"}),
    );
    let second = submit(
        hub,
        json!({"description": "second", "needed_capabilities": ["gpu"], "depends_on": [first]}),
    );
    let later = submit(
        hub,
        json!({"description": "later", "needed_capabilities": ["gpu"],
               "run_after": 4_102_444_800_000i64}),
    );
    (
        Mixed {
            done,
            held,
            first,
            second,
            later,
        },
        plain,
    )
}

#[test]
fn a_clean_restart_loads_the_queue_from_its_checkpoint_exactly() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    // The agent stays connected: a stop is not a disconnect, its task stays
    // assigned.
    let (m, _plain) = mixed_queue(&hub);
    let ids = [m.done.as_str(), &m.held, &m.first, &m.second, &m.later];
    let (before_tasks, before_stats) = (tasks(&hub, &ids), stats(&hub));
    assert!(!loaded_from_checkpoint(&hub, 1), "a new store has none");
    hub.restart();
    assert!(
        loaded_from_checkpoint(&hub, 2),
        "{}",
        logs_of_start(&hub, 2)
    );
    assert_eq!(tasks(&hub, &ids), before_tasks);
    assert_eq!(stats(&hub), before_stats);
    assert_eq!(stats(&hub)["waiting_on_dependencies"], 1);

    // The dedupe key still names its task.
    let (status, again) = hub.post(
        "/api/tasks",
        &json!({"description": "first again", "dedupe_key": "first-key"}),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["task_id"], m.first.as_str(), "{again}");

    // Scheduling: the urgent task first, its dependent only after it, and
    // nothing before its run_after.
    let gpu_token = register_agent(&hub, "gpu-box", &["gpu"]);
    let mut gpu = Agent::connect(&hub, "gpu-box", &gpu_token);
    let a = gpu.take(&m.first);
    gpu.complete(&a);
    let b = gpu.take(&m.second);
    gpu.complete(&b);
    gpu.expect_no_type("task_assign", Duration::from_millis(300));
    assert_eq!(get_task(&hub, &m.later)["status"], "queued");
    assert_eq!(get_task(&hub, &m.held)["status"], "assigned");

    // Used once: the next start after a crash reads every record.
    hub.kill9();
    hub.start_again();
    assert!(
        !loaded_from_checkpoint(&hub, 3),
        "{}",
        logs_of_start(&hub, 3)
    );
    assert_eq!(get_task(&hub, &m.second)["status"], "completed");
    assert_eq!(get_task(&hub, &m.later)["status"], "queued");
}

#[test]
fn a_store_opened_after_the_stop_is_read_in_full() {
    let mut hub = Hub::start();
    // The agent stays connected: a stop is not a disconnect, its task stays
    // assigned.
    let (m, _plain) = mixed_queue(&hub);
    let ids = [m.done.as_str(), &m.held, &m.first, &m.second, &m.later];
    let (before_tasks, before_stats) = (tasks(&hub, &ids), stats(&hub));
    hub.stop();
    // Another program opens the stopped store (the seal is taken out).
    let store = agentcom_hub::Store::open(&hub.data_dir())
        .unwrap_or_else(|e| panic!("open the stopped store: {e}\n{}", logs_of_start(&hub, 1)));
    drop(store);
    hub.start_again();
    assert!(
        !loaded_from_checkpoint(&hub, 2),
        "{}",
        logs_of_start(&hub, 2)
    );
    assert!(
        logs_of_start(&hub, 2).contains("queue checkpoint ignored"),
        "{}",
        logs_of_start(&hub, 2)
    );
    assert_eq!(tasks(&hub, &ids), before_tasks);
    assert_eq!(stats(&hub), before_stats);
}
