//! Write scopes (#19, ext): two tasks whose write globs can overlap in one
//! repository never run at once; the later one waits, naming the holder, and is
//! offered the moment the holder completes or is reclaimed; tasks that do not
//! conflict are not held up; bad globs are refused; a restart keeps it all.

mod common;

use common::*;
use serde_json::{json, Value};

fn scoped(description: &str, writes: &[&str]) -> Value {
    json!({"description": description, "repo": "web", "write_paths": writes})
}

fn events_of(hub: &Hub, task_id: &str, kind: &str) -> Vec<Value> {
    let (status, page) = hub.get(&format!("/api/events?task_id={task_id}&kind={kind}"));
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

/// Two idle agents, `first` idle the longest.
fn two_agents(hub: &Hub) -> (Agent, Agent) {
    let t1 = register_agent(hub, "first", &[]);
    let t2 = register_agent(hub, "second", &[]);
    let first = Agent::connect(hub, "first", &t1);
    let second = Agent::connect(hub, "second", &t2);
    (first, second)
}

#[test]
fn overlapping_writes_run_one_at_a_time_and_disjoint_ones_in_parallel() {
    let hub = Hub::start();
    let (mut first, mut second) = two_agents(&hub);
    let api = submit(&hub, scoped("rework the API", &["src/api/**"]));
    let a = first.take(&api);

    // Overlaps src/api/**: waits, naming the holder; the idle agent gets nothing.
    let handler = submit(&hub, scoped("fix one handler", &["src/api/handlers.rs"]));
    let waiting = get_task(&hub, &handler);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(
        waiting["waiting_on_scope"],
        json!({"task_id": api, "agent_id": "first"}),
        "{waiting}"
    );
    assert_no_assignment(&hub, &mut second);
    let recorded = events_of(&hub, &handler, "scope_waiting");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["details"]["holder_task_id"], api.as_str());

    // Disjoint, submitted after the waiting one: not held up.
    let docs = submit(&hub, scoped("write the docs", &["docs/**"]));
    let d = second.take(&docs);

    // Another repository never conflicts.
    let other = submit(
        &hub,
        json!({"description": "elsewhere", "repo": "cli", "write_paths": ["src/api/**"]}),
    );
    assert_eq!(get_task(&hub, &other)["waiting_on_scope"], Value::Null);

    // The holder completes: the waiting task is offered at once.
    first.complete(&a);
    let h = first.take(&handler);
    assert!(get_task(&hub, &handler)["waiting_on_scope"].is_null());
    second.complete(&d);
    let o = second.take(&other);
    second.complete(&o);
    first.complete(&h);
}

#[test]
fn reads_conflict_only_with_writes_and_a_reclaimed_claim_moves_with_its_task() {
    let hub = Hub::start();
    let (mut first, mut second) = two_agents(&hub);
    let reader = submit(
        &hub,
        json!({"description": "review", "repo": "web", "read_paths": ["src/**"]}),
    );
    let r = first.take(&reader);
    // Another reader shares the paths.
    let reader2 = submit(
        &hub,
        json!({"description": "review too", "repo": "web", "read_paths": ["src/lib.rs"]}),
    );
    let r2 = second.take(&reader2);
    second.complete(&r2);
    // A writer waits for the reader.
    let writer = submit(&hub, scoped("edit", &["src/lib.rs"]));
    assert_eq!(
        get_task(&hub, &writer)["waiting_on_scope"]["task_id"],
        reader.as_str()
    );
    assert_no_assignment(&hub, &mut second);
    // The reader's agent goes away: its task is reclaimed and, older, runs
    // again first; the claim moves with it and the writer waits on.
    let _ = r;
    drop(first);
    let again = second.take(&reader);
    let w = get_task(&hub, &writer);
    assert_eq!(
        w["waiting_on_scope"],
        json!({"task_id": reader, "agent_id": "second"}),
        "{w}"
    );
    second.complete(&again);
    let w = second.take(&writer);
    second.complete(&w);
}

#[test]
fn bad_scopes_are_refused_with_the_field_named() {
    let hub = Hub::start();
    for (body, field, code) in [
        (
            json!({"description": "x", "repo": "web", "write_paths": ["src/[a-"]}),
            "write_paths",
            "invalid_glob",
        ),
        (
            json!({"description": "x", "repo": "web", "read_paths": ["!secret/**"]}),
            "read_paths",
            "invalid_glob",
        ),
        (
            json!({"description": "x", "write_paths": ["src/**"]}),
            "repo",
            "required",
        ),
        (
            json!({"description": "x", "repo": "web", "write_paths": "src/**"}),
            "write_paths",
            "wrong_type",
        ),
    ] {
        let (status, resp) = hub.post("/api/tasks", &body);
        assert_field_error(status, &resp, &body, field, code);
    }
    assert_eq!(stats_count(&hub, "queued"), 0, "nothing was created");
}

#[test]
fn a_restart_keeps_the_holder_and_the_waiting_task() {
    let mut hub = Hub::start();
    let (mut first, _second) = two_agents(&hub);
    let api = submit(&hub, scoped("rework the API", &["src/api/**"]));
    first.take(&api);
    let handler = submit(&hub, scoped("fix one handler", &["src/api/handlers.rs"]));
    hub.restart();
    let waiting = get_task(&hub, &handler);
    assert_eq!(
        waiting["waiting_on_scope"]["task_id"],
        api.as_str(),
        "{waiting}"
    );
    // And after a crash, read in full.
    hub.kill9();
    hub.start_again();
    let waiting = get_task(&hub, &handler);
    assert_eq!(
        waiting["waiting_on_scope"]["task_id"],
        api.as_str(),
        "{waiting}"
    );
}

#[test]
fn a_scoped_task_retried_from_dead_letter_still_waits_for_the_holder() {
    let hub = Hub::start();
    let (mut first, mut second) = two_agents(&hub);
    let api = submit(&hub, scoped("rework the API", &["src/api/**"]));
    let a = first.take(&api);
    let handler = submit(&hub, scoped("fix one handler", &["src/api/handlers.rs"]));
    let (status, body) = hub.post(&format!("/api/tasks/{handler}/dead-letter"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub.post(&format!("/api/tasks/{handler}/retry"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let t = get_task(&hub, &handler);
    assert_eq!(t["status"], "queued", "{t}");
    assert_eq!(t["waiting_on_scope"]["task_id"], api.as_str(), "{t}");
    assert_no_assignment(&hub, &mut second);
    first.complete(&a);
    // `second` has now been idle the longest.
    let h = second.take(&handler);
    second.complete(&h);
}
