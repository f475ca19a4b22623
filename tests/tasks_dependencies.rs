//! `depends_on` and `run_after` (PROTOCOL.md section 6): a task waits for its
//! dependencies to complete (batch-local `ref`s or real task ids), a dependency
//! that dead-letters or is cancelled blocks its dependents down the chain, bad
//! graphs are refused whole, waiting survives a restart, and `run_after` holds a
//! task back until its time.

mod common;

use common::*;
use serde_json::{json, Value};

/// Whether a 422 body lists an error `error` for `field`.
fn has_error(body: &Value, field: &str, error: &str) -> bool {
    body["errors"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x["field"] == field && x["error"] == error))
}

/// Submits A → B → C as one batch (B depends on A, C on B by batch refs);
/// answers their ids in that order.
fn submit_chain(hub: &Hub) -> Vec<String> {
    submit_batch(
        hub,
        json!([
            {"description": "A", "ref": "a"},
            {"description": "B", "ref": "b", "depends_on": ["a"]},
            {"description": "C", "depends_on": ["b"]},
        ]),
    )
}

#[test]
fn a_chain_submitted_in_one_batch_runs_one_task_after_the_other() {
    let hub = Hub::start();
    let token = register_agent(&hub, "solo", &[]);
    let mut solo = Agent::connect(&hub, "solo", &token);
    let ids = submit_chain(&hub);
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    // Refs resolve to the real ids.
    assert_eq!(get_task(&hub, a)["depends_on"], json!([]));
    assert_eq!(get_task(&hub, b)["depends_on"], json!([a]));
    assert_eq!(get_task(&hub, c)["depends_on"], json!([b]));
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["waiting_on_dependencies"], 2, "{stats}");

    let assign_a = solo.take(a);
    // A second, idle agent is offered nothing: B and C wait for A.
    let idle_token = register_agent(&hub, "idle", &[]);
    let mut idle = Agent::connect(&hub, "idle", &idle_token);
    assert_no_assignment(&hub, &mut idle);
    for id in [b, c] {
        let t = get_task(&hub, id);
        assert_eq!(
            (t["status"].as_str(), &t["assigned_to"]),
            (Some("queued"), &Value::Null),
            "{t}"
        );
    }
    disconnect(&hub, idle);

    solo.complete(&assign_a);
    let assign_b = solo.take(b);
    assert_eq!(get_task(&hub, c)["status"], "queued");
    solo.complete(&assign_b);
    let assign_c = solo.take(c);
    solo.complete(&assign_c);
    for id in &ids {
        assert_eq!(get_task(&hub, id)["status"], "completed");
    }
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["waiting_on_dependencies"], 0, "{stats}");
}

#[test]
fn a_dead_lettered_dependency_blocks_its_dependents_down_the_chain() {
    let hub = Hub::start();
    let token = register_agent(&hub, "failer", &[]);
    let mut agent = Agent::connect(&hub, "failer", &token);
    let ids = submit_batch(
        &hub,
        json!([
            {"description": "A", "ref": "a", "max_retries": 1},
            {"description": "B", "ref": "b", "depends_on": ["a"]},
            {"description": "C", "depends_on": ["b"]},
        ]),
    );
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let assign = agent.take(a);
    agent.send(json!({"type": "task_failed", "task_id": a,
                      "generation": assign["generation"], "error": "broken"}));
    assert_eq!(agent.recv_ack(a, REPLY_TIMEOUT)["status"], "dead_letter");
    assert_eq!(get_task(&hub, a)["status"], "dead_letter");

    let tb = get_task(&hub, b);
    assert_eq!(tb["status"], "blocked", "{tb}");
    assert_eq!(tb["blocked_on"], a.as_str(), "{tb}");
    assert_eq!(
        tb["last_error"],
        format!("dependency {a} is dead_letter"),
        "{tb}"
    );
    assert!(tb["blocked_at"].is_u64(), "{tb}");
    assert_eq!(count_events(&tb, "blocked"), 1, "{tb}");
    let tc = get_task(&hub, c);
    assert_eq!(tc["status"], "blocked", "{tc}");
    assert_eq!(tc["blocked_on"], b.as_str(), "{tc}");
    assert_eq!(
        tc["last_error"],
        format!("dependency {b} is blocked"),
        "{tc}"
    );
    // Nothing is handed out: the agent is idle and gets nothing.
    assert_no_assignment(&hub, &mut agent);
    assert_eq!(stats_count(&hub, "blocked"), 2);
}

#[test]
fn a_cancelled_dependency_blocks_its_dependents_down_the_chain() {
    let hub = Hub::start();
    let ids = submit_chain(&hub);
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let (status, resp) = hub.post(&format!("/api/tasks/{a}/cancel"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    let tb = get_task(&hub, b);
    assert_eq!(
        (tb["status"].as_str(), tb["blocked_on"].as_str()),
        (Some("blocked"), Some(a.as_str())),
        "{tb}"
    );
    assert_eq!(tb["last_error"], format!("dependency {a} is cancelled"));
    let tc = get_task(&hub, c);
    assert_eq!(
        (tc["status"].as_str(), tc["blocked_on"].as_str()),
        (Some("blocked"), Some(b.as_str())),
        "{tc}"
    );
    assert_eq!(tc["last_error"], format!("dependency {b} is blocked"));
    // A connecting agent gets none of them.
    let token = register_agent(&hub, "late", &[]);
    let mut late = Agent::connect(&hub, "late", &token);
    assert_no_assignment(&hub, &mut late);
}

#[test]
fn depends_on_a_real_task_id_waits_runs_at_once_or_is_blocked_by_the_dependency_state() {
    let hub = Hub::start();
    let a = submit(&hub, json!({"description": "A"}));
    let b = submit(&hub, json!({"description": "B", "depends_on": [a]}));
    assert_eq!(get_task(&hub, &b)["depends_on"], json!([a]));
    let token = register_agent(&hub, "w", &[]);
    let mut agent = Agent::connect(&hub, "w", &token);
    let assign_a = agent.take(&a);
    assert_eq!(get_task(&hub, &b)["status"], "queued");
    agent.complete(&assign_a);
    let assign_b = agent.take(&b);
    agent.complete(&assign_b);

    // The dependency already completed: scheduled at once.
    let d = submit(&hub, json!({"description": "D", "depends_on": [a, b]}));
    let assign_d = agent.take(&d);
    agent.complete(&assign_d);

    // The dependency already dead-lettered: created blocked.
    let e = submit(&hub, json!({"description": "E", "max_retries": 1}));
    let assign_e = agent.take(&e);
    agent.send(json!({"type": "task_failed", "task_id": e,
                      "generation": assign_e["generation"], "error": "no"}));
    assert_eq!(agent.recv_ack(&e, REPLY_TIMEOUT)["status"], "dead_letter");
    let (status, resp) = hub.post(
        "/api/tasks",
        &json!({"description": "F", "depends_on": [a, e]}),
    );
    assert_eq!(status, 201, "{resp}");
    let f = resp["task_id"].as_str().expect("task_id").to_string();
    let tf = get_task(&hub, &f);
    assert_eq!(tf["status"], "blocked", "{tf}");
    assert_eq!(tf["blocked_on"], e.as_str(), "{tf}");
    assert_eq!(tf["last_error"], format!("dependency {e} is dead_letter"));
    assert_no_assignment(&hub, &mut agent);
}

#[test]
fn bad_dependency_graphs_are_refused_whole_and_create_nothing() {
    let hub = Hub::start();
    let existing = submit(&hub, json!({"description": "exists"}));
    let count = |hub: &Hub| list_all_tasks(hub, "", 100).len();
    assert_eq!(count(&hub), 1);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"description": "x", "depends_on": ["task-00000000deadbeef"]}),
            "depends_on",
            "unknown_dependency",
        ),
        (
            json!([{"description": "ok"}, {"description": "y", "depends_on": ["nope"]}]),
            "[1].depends_on",
            "unknown_dependency",
        ),
        (
            json!([
                {"description": "a", "ref": "a", "depends_on": ["b"]},
                {"description": "b", "ref": "b", "depends_on": ["a"]},
            ]),
            "[0].depends_on",
            "dependency_cycle",
        ),
        (
            json!([
                {"description": "a", "ref": "a", "depends_on": ["b"]},
                {"description": "b", "ref": "b", "depends_on": ["a"]},
            ]),
            "[1].depends_on",
            "dependency_cycle",
        ),
        (
            json!([{"description": "ok"}, {"description": "s", "ref": "s", "depends_on": ["s"]}]),
            "[1].depends_on",
            "dependency_cycle",
        ),
        (
            json!({"description": "s", "ref": "s", "depends_on": ["s"]}),
            "depends_on",
            "dependency_cycle",
        ),
        (
            json!([{"description": "1", "ref": "x"}, {"description": "2", "ref": "x"}]),
            "[1].ref",
            "invalid_value",
        ),
        (
            json!({"description": "d", "depends_on": [existing, existing]}),
            "depends_on",
            "invalid_value",
        ),
        (
            json!({"description": "d", "depends_on": existing}),
            "depends_on",
            "wrong_type",
        ),
        (
            json!({"description": "d", "depends_on": [7]}),
            "depends_on",
            "wrong_type",
        ),
        (json!({"description": "d", "ref": 5}), "ref", "wrong_type"),
        (
            json!({"description": "d", "run_after": "soon"}),
            "run_after",
            "wrong_type",
        ),
        (
            json!({"description": "d", "run_after": -1}),
            "run_after",
            "invalid_value",
        ),
        (
            json!([{"description": "ok"}, {"description": "d", "run_after": 1.5}]),
            "[1].run_after",
            "wrong_type",
        ),
    ];
    for (body, field, error) in cases {
        let (status, resp) = hub.post("/api/tasks", &body);
        assert_eq!(status, 422, "{body}: {resp}");
        assert_eq!(resp["error"], "validation_failed", "{resp}");
        assert!(
            has_error(&resp, field, error),
            "{body}: expected {error} on {field}: {resp}"
        );
        assert_eq!(count(&hub), 1, "nothing created by {body}");
    }
    // A valid dependency on the existing task still works afterwards.
    submit(
        &hub,
        json!({"description": "fine", "depends_on": [existing]}),
    );
    assert_eq!(count(&hub), 2);
}

#[test]
fn dependents_keep_waiting_across_a_restart_and_run_once_the_dependency_completes() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "r1", &[]);
    let token2 = register_agent(&hub, "r2", &[]);
    let ids = submit_batch(
        &hub,
        json!([
            {"description": "A", "ref": "a"},
            {"description": "B", "depends_on": ["a"]},
        ]),
    );
    let (a, b) = (&ids[0], &ids[1]);
    hub.restart();
    assert_eq!(get_task(&hub, b)["status"], "queued");
    assert_eq!(get_task(&hub, b)["depends_on"], json!([a]));
    let mut r1 = Agent::connect(&hub, "r1", &token);
    let assign_a = r1.take(a);
    // Another idle agent gets nothing: B still waits after the restart.
    let mut r2 = Agent::connect(&hub, "r2", &token2);
    assert_no_assignment(&hub, &mut r2);
    assert_eq!(get_task(&hub, b)["status"], "queued");
    r1.complete(&assign_a);
    // r2 has been idle longest, so it gets B.
    let assign_b = r2.take(b);
    r2.complete(&assign_b);
    assert_eq!(get_task(&hub, b)["status"], "completed");
}

#[test]
fn run_after_holds_a_task_back_until_its_time_also_across_a_restart() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "timed", &[]);
    let run_after = now_ms() + 1500;
    let late = submit(
        &hub,
        json!({"description": "not before", "run_after": run_after}),
    );
    assert_eq!(get_task(&hub, &late)["run_after"], run_after);
    let mut agent = Agent::connect(&hub, "timed", &token);
    let (assign, assigned_at) = assigned_not_before(&mut agent, &late, run_after);
    let task = get_task(&hub, &late);
    assert_eq!(task["assigned_at"].as_u64(), Some(assigned_at), "{task}");
    agent.accept(&late, assign["generation"].clone());
    agent.complete(&assign);
    agent.close();

    // The hold is durable: a task still held back when the hub restarts keeps it.
    let run_after = now_ms() + 1500;
    let held = submit(
        &hub,
        json!({"description": "held over", "run_after": run_after}),
    );
    hub.restart();
    let mut agent = Agent::connect(&hub, "timed", &token);
    assigned_not_before(&mut agent, &held, run_after);
}

/// The agent's next assignment is `task_id`, stamped by the hub no earlier than
/// `run_after`; answers the frame and its `assigned_at`.
fn assigned_not_before(agent: &mut Agent, task_id: &str, run_after: u64) -> (Value, u64) {
    // Generous: the hold is 1.5 s, the push then takes what it takes.
    let assign = agent.recv_type(
        "task_assign",
        PUSH_TIMEOUT + std::time::Duration::from_secs(2),
    );
    assert_eq!(assign["task_id"], task_id, "{assign}");
    let assigned_at = assign["assigned_at"].as_u64().expect("assigned_at");
    assert!(
        assigned_at >= run_after,
        "assigned at {assigned_at}, before run_after {run_after}"
    );
    (assign, assigned_at)
}

#[test]
fn force_retry_of_a_dependency_blocked_task_blocks_it_again_until_the_dependency_is_fixed() {
    let hub = Hub::start();
    let token = register_agent(&hub, "op", &[]);
    let mut agent = Agent::connect(&hub, "op", &token);
    let ids = submit_batch(
        &hub,
        json!([
            {"description": "A", "ref": "a", "max_retries": 1},
            {"description": "B", "depends_on": ["a"]},
        ]),
    );
    let (a, b) = (&ids[0], &ids[1]);
    let assign = agent.take(a);
    agent.send(json!({"type": "task_failed", "task_id": a,
                      "generation": assign["generation"], "error": "broken"}));
    assert_eq!(agent.recv_ack(a, REPLY_TIMEOUT)["status"], "dead_letter");
    assert_eq!(get_task(&hub, b)["status"], "blocked");

    // Retrying B while A is dead: B cannot run, so it is blocked again.
    let (status, resp) = hub.post(&format!("/api/tasks/{b}/retry"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["previous_status"], "blocked", "{resp}");
    let tb = get_task(&hub, b);
    assert_eq!(tb["status"], "blocked", "{tb}");
    assert_eq!(tb["blocked_on"], a.as_str(), "{tb}");
    assert_eq!(tb["last_error"], format!("dependency {a} is dead_letter"));
    assert_eq!(count_events(&tb, "force_retried"), 1, "{tb}");
    assert_eq!(count_events(&tb, "blocked"), 2, "{tb}");
    assert_no_assignment(&hub, &mut agent);

    // Fix A: retried and completed. B stays blocked until it is retried itself.
    let (status, resp) = hub.post(&format!("/api/tasks/{a}/retry"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    let assign = agent.take(a);
    agent.complete(&assign);
    assert_eq!(get_task(&hub, b)["status"], "blocked");
    assert_no_assignment(&hub, &mut agent);
    let (status, resp) = hub.post(&format!("/api/tasks/{b}/retry"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    let assign = agent.take(b);
    agent.complete(&assign);
    assert_eq!(get_task(&hub, b)["status"], "completed");
}
