//! Follow-up tasks: a `task_complete` may carry `follow_ups` (task specs, with
//! `ref`/`depends_on` among themselves). They are created with the completion,
//! linked to it (`parent_task_id`, `correlation_id`), exactly once however often
//! the completion is repeated or replayed after a crash, and a bad spec refuses
//! the whole report.

mod common;

use agentcom_hub::follow_up_id;
use common::*;
use serde_json::{json, Value};

/// The `task_complete` frame for `assign` with `follow_ups`.
fn complete_frame(assign: &Value, follow_ups: Value) -> Value {
    json!({"type": "task_complete", "task_id": assign["task_id"],
           "generation": assign["generation"], "result": {"ok": true},
           "follow_ups": follow_ups})
}

/// Sends the complete frame and returns the `task_ack`, asserting `complete`.
fn complete_with(agent: &mut Agent, assign: &Value, follow_ups: Value) -> Value {
    let task_id = assign["task_id"].as_str().expect("task_id").to_string();
    agent.send(complete_frame(assign, follow_ups));
    let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "complete", "{ack}");
    ack
}

/// Every task sharing `correlation_id`, in creation order (paged 2 at a time).
fn correlated(hub: &Hub, correlation_id: &str) -> Vec<Value> {
    list_all_tasks(hub, &format!("correlation_id={correlation_id}"), 2)
}

fn ids(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn follow_ups_are_created_with_the_completion_linked_to_it_and_scheduled_like_any_task() {
    let hub = Hub::start();
    let token = register_agent(&hub, "w", &[]);
    let mut agent = Agent::connect(&hub, "w", &token);
    let root = submit(&hub, json!({"description": "root"}));
    let unrelated = submit(&hub, json!({"description": "unrelated", "priority": "low"}));
    let assign = agent.take(&root);
    complete_with(
        &mut agent,
        &assign,
        json!([
            {"description": "F1", "ref": "f1", "priority": "high"},
            {"description": "F2", "depends_on": ["f1"], "metadata": {"k": 1}},
            {"description": "F3", "depends_on": [root], "priority": "low"},
        ]),
    );
    let r = get_task(&hub, &root);
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(
        r["correlation_id"],
        root.as_str(),
        "a root is its own correlation"
    );
    assert_eq!(r["parent_task_id"], Value::Null, "{r}");

    let family = correlated(&hub, &root);
    let family_ids = ids(&family);
    assert_eq!(family.len(), 4, "root + 3 follow-ups: {family:?}");
    assert_eq!(family_ids[0], root);
    assert!(!family_ids.contains(&unrelated), "{family_ids:?}");
    let generation = assign["generation"].as_u64().expect("generation");
    let (f1, f2, f3) = (&family[1], &family[2], &family[3]);
    for (i, f) in [f1, f2, f3].into_iter().enumerate() {
        assert_eq!(f["parent_task_id"], root.as_str(), "{f}");
        assert_eq!(f["correlation_id"], root.as_str(), "{f}");
        assert_eq!(f["submitted_by"], "w", "{f}");
        // Fixed by (parent, generation, position): a replay names the same task.
        assert_eq!(f["id"], follow_up_id(&root, generation, i), "{f}");
    }
    assert_eq!(f1["description"], "F1");
    assert_eq!(f1["priority"], 1);
    assert_eq!(f2["depends_on"], json!([f1["id"]]), "ref resolved: {f2}");
    assert_eq!(f2["metadata"], json!({"k": 1}));
    assert_eq!(f3["depends_on"], json!([root]), "{f3}");

    // F1 (high) first; F2 waits for it; F3 (its dependency, the root, is done)
    // and the unrelated task are low.
    let f1_id = family_ids[1].clone();
    let assign_f1 = agent.take(&f1_id);
    assert_eq!(get_task(&hub, &family_ids[2])["status"], "queued");
    complete_with(&mut agent, &assign_f1, json!([{"description": "G"}]));
    let g_id = follow_up_id(&f1_id, assign_f1["generation"].as_u64().expect("gen"), 0);
    let g = get_task(&hub, &g_id);
    assert_eq!(g["parent_task_id"], f1_id.as_str(), "{g}");
    assert_eq!(
        g["correlation_id"],
        root.as_str(),
        "grandchildren share it: {g}"
    );
    assert_eq!(ids(&correlated(&hub, &root)).len(), 5);

    // Everything left runs: F2, G (normal), then the low ones in creation order.
    let mut order = Vec::new();
    for _ in 0..4 {
        let a = agent.recv_type("task_assign", PUSH_TIMEOUT);
        let id = a["task_id"].as_str().expect("task_id").to_string();
        agent.accept(&id, a["generation"].clone());
        complete_with(&mut agent, &a, json!([]));
        order.push(id);
    }
    assert_eq!(
        order,
        [
            family_ids[2].clone(),
            g_id.clone(),
            unrelated.clone(),
            family_ids[3].clone()
        ]
    );
    for t in correlated(&hub, &root) {
        assert_eq!(t["status"], "completed", "{t}");
    }
}

#[test]
fn a_repeated_completion_gets_the_same_ack_and_creates_nothing_new() {
    let hub = Hub::start();
    let token = register_agent(&hub, "rep", &[]);
    let mut agent = Agent::connect(&hub, "rep", &token);
    let root = submit(&hub, json!({"description": "root"}));
    let assign = agent.take(&root);
    let follow_ups = json!([{"description": "once", "ref": "o"},
                            {"description": "twice?", "depends_on": ["o"]}]);
    let first = complete_with(&mut agent, &assign, follow_ups.clone());
    let family = ids(&correlated(&hub, &root));
    assert_eq!(family.len(), 3, "{family:?}");
    for _ in 0..2 {
        agent.send(complete_frame(&assign, follow_ups.clone()));
        assert_eq!(agent.recv_ack(&root, REPLY_TIMEOUT), first);
    }
    // Even with other follow-ups in the repeat: the accepted completion stands.
    agent.send(complete_frame(&assign, json!([{"description": "sneaky"}])));
    assert_eq!(agent.recv_ack(&root, REPLY_TIMEOUT), first);
    assert_eq!(ids(&correlated(&hub, &root)), family);
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 3);
}

#[test]
fn follow_ups_acknowledged_before_a_kill_9_exist_exactly_once_and_a_resent_completion_adds_nothing()
{
    let mut hub = Hub::start();
    let token = register_agent(&hub, "crash", &[]);
    let mut agent = Agent::connect(&hub, "crash", &token);
    let root = submit(&hub, json!({"description": "root"}));
    let assign = agent.take(&root);
    // The follow-ups need another stage's agent, so none is assigned to this one
    // before the kill (it would then have to recover it, a different story).
    let follow_ups = json!([
        {"description": "a", "ref": "a", "needed_capabilities": ["stage2"]},
        {"description": "b", "depends_on": ["a"], "needed_capabilities": ["stage2"]},
    ]);
    complete_with(&mut agent, &assign, follow_ups.clone());
    let before = correlated(&hub, &root);
    assert_eq!(before.len(), 3);
    hub.kill9();
    drop(agent);
    hub.start_again();

    let after = correlated(&hub, &root);
    assert_eq!(ids(&after), ids(&before), "the same follow-ups, once each");
    assert_eq!(after[0]["status"], "completed");
    assert_eq!(after[2]["depends_on"], json!([after[1]["id"]]));
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 3);

    // The agent did not see the ack (as far as it knows): it reconnects and sends
    // the same completion again.
    let mut agent = Agent::connect(&hub, "crash", &token);
    agent.send(complete_frame(&assign, follow_ups));
    assert_eq!(agent.recv_ack(&root, REPLY_TIMEOUT)["status"], "complete");
    assert_eq!(ids(&correlated(&hub, &root)), ids(&before));
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 3);
    // And the follow-ups run, in order.
    let stage2_token = register_agent(&hub, "stage2", &["stage2"]);
    let mut stage2 = Agent::connect(&hub, "stage2", &stage2_token);
    for id in &ids(&before)[1..] {
        let a = stage2.take(id);
        complete_with(&mut stage2, &a, json!([]));
    }
}

#[test]
fn a_bad_follow_up_refuses_the_completion_and_changes_nothing() {
    let hub = Hub::start();
    let token = register_agent(&hub, "strict", &[]);
    let mut agent = Agent::connect(&hub, "strict", &token);
    let root = submit(&hub, json!({"description": "root"}));
    let assign = agent.take(&root);
    let before = get_task(&hub, &root);
    let cases = [
        (
            json!([{"description": "ok"}, {"priority": "high"}]),
            "task_complete_failed: invalid_follow_ups",
            "follow_ups[1].description",
            "required",
        ),
        (
            json!([{"description": "bad", "depends_on": "x"}]),
            "task_complete_failed: invalid_follow_ups",
            "follow_ups[0].depends_on",
            "wrong_type",
        ),
        (
            json!([{"description": "x", "depends_on": ["task-00000000deadbeef"]}]),
            "task_complete_failed: validation_failed",
            "follow_ups[0].depends_on",
            "unknown_dependency",
        ),
        (
            json!([{"description": "a", "ref": "a", "depends_on": ["b"]},
                   {"description": "b", "ref": "b", "depends_on": ["a"]}]),
            "task_complete_failed: validation_failed",
            "follow_ups[1].depends_on",
            "dependency_cycle",
        ),
        (
            json!([{"description": "a", "ref": "a"}, {"description": "b", "ref": "a"}]),
            "task_complete_failed: validation_failed",
            "follow_ups[1].ref",
            "invalid_value",
        ),
    ];
    for (follow_ups, error, field, kind) in cases {
        let reply = request(&mut agent, complete_frame(&assign, follow_ups.clone()));
        assert_error(&reply, error);
        assert_eq!(reply["task_id"], root.as_str(), "{reply}");
        let listed = reply["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["field"] == field && x["error"] == kind));
        assert!(listed, "{follow_ups}: expected {kind} on {field}: {reply}");
        assert_eq!(
            get_task(&hub, &root),
            before,
            "task unchanged by {follow_ups}"
        );
        assert_eq!(list_all_tasks(&hub, "", 100).len(), 1, "nothing created");
    }
    // Another agent's completion with follow-ups is refused and creates nothing.
    let other_token = register_agent(&hub, "other", &[]);
    let mut other = Agent::connect(&hub, "other", &other_token);
    let reply = request(
        &mut other,
        complete_frame(&assign, json!([{"description": "x"}])),
    );
    assert_error(&reply, "task_complete_failed: not_owner");
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 1);

    // The holder is still working on it, and a good completion then goes through.
    assert_eq!(agent_state(&hub, "strict")["fsm_state"], "working");
    complete_with(&mut agent, &assign, json!([{"description": "fine"}]));
    assert_eq!(correlated(&hub, &root).len(), 2);
}
