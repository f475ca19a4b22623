//! Task lifecycle over the real hub: submit → assign → accept → complete, plus
//! the other lifecycle exits (reject, block, operator cancel) and the task listing.

mod common;

use std::time::Instant;

use common::*;
use serde_json::json;

/// Issue 2, test 1.
#[test]
fn submitted_task_is_assigned_within_a_second_accepted_and_completed_with_result_and_tokens_used() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker-1", &[]);
    let mut agent = Agent::connect(&hub, "worker-1", &token);

    let submitted = Instant::now();
    let task_id = submit(
        &hub,
        json!({"description": "write a haiku", "priority": "high", "metadata": {"repo": "poems"}}),
    );
    // The issue says "within 1 s"; PUSH_TIMEOUT (5 s) keeps the test independent
    // of machine speed while still catching a scheduler that waits for its sweep.
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert!(submitted.elapsed() < PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
    assert_eq!(assign["description"], "write a haiku", "{assign}");
    assert_eq!(assign["metadata"], json!({"repo": "poems"}), "{assign}");
    assert_eq!(
        assign["generation"], 1,
        "first assignment is generation 1: {assign}"
    );
    assert_eq!(assign["priority"], 1, "{assign}");
    assert_eq!(assign["attempt"], 1, "{assign}");
    assert_eq!(assign["lease_ms"], 300_000, "default lease: {assign}");
    assert_eq!(assign["needed_capabilities"], json!([]), "{assign}");
    assert!(assign["assigned_at"].is_u64(), "{assign}");
    assert!(
        assign.get("routing_decision").is_none(),
        "no routing_decision field: {assign}"
    );

    let assigned = get_task(&hub, &task_id);
    assert_eq!(assigned["status"], "assigned", "{assigned}");
    assert_eq!(assigned["assigned_to"], "worker-1", "{assigned}");
    assert_eq!(assigned["generation"], 1, "{assigned}");

    agent.send(json!({"type": "task_accepted", "task_id": task_id, "generation": 1}));
    let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "accepted", "{ack}");
    let state = agent_state(&hub, "worker-1");
    assert_eq!(state["fsm_state"], "working", "{state}");
    assert_eq!(state["current_task_id"], task_id.as_str(), "{state}");

    agent.send(json!({
        "type": "task_complete",
        "task_id": task_id,
        "generation": 1,
        "result": {"haiku": "old pond / frog jumps in / splash"},
        "tokens_used": 1234
    }));
    let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "complete", "{ack}");

    let done = get_task(&hub, &task_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"],
        json!({"haiku": "old pond / frog jumps in / splash"}),
        "{done}"
    );
    assert_eq!(done["tokens_used"], 1234, "{done}");
    assert!(done["completed_at"].is_u64(), "{done}");
    assert_eq!(done["priority"], 1, "{done}");
    assert_eq!(
        history_events(&done),
        ["queued", "assigned", "accepted", "completed"],
        "{done}"
    );
    let state = agent_state(&hub, "worker-1");
    assert_eq!(
        state["fsm_state"], "idle",
        "agent idle after complete: {state}"
    );
}

#[test]
fn submit_response_and_task_json_have_the_documented_shape() {
    let hub = Hub::start();
    let (status, resp) = hub.post(
        "/api/tasks",
        &json!({"description": "shape", "priority": "urgent", "max_retries": 2}),
    );
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["status"], "queued", "{resp}");
    assert_eq!(resp["priority"], 0, "{resp}");
    assert!(resp["created_at"].is_u64(), "{resp}");
    let task_id = resp["task_id"].as_str().expect("task_id string");
    assert_eq!(task_id.len(), 5 + 16, "task- + 16 hex: {task_id}");
    assert!(task_id.starts_with("task-"), "{task_id}");
    assert!(
        task_id[5..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "lowercase hex: {task_id}"
    );

    let task = get_task(&hub, task_id);
    for field in [
        "id",
        "status",
        "priority",
        "description",
        "metadata",
        "assigned_to",
        "assigned_at",
        "generation",
        "created_at",
        "updated_at",
        "completed_at",
        "max_retries",
        "retry_count",
        "reclaim_count",
        "max_reclaims",
        "complete_by",
        "lease_ms",
        "needed_capabilities",
        "result",
        "tokens_used",
        "last_error",
        "submitted_by",
        "history",
    ] {
        assert!(task.get(field).is_some(), "task JSON lacks {field}: {task}");
    }
    assert_eq!(task["id"], task_id, "{task}");
    assert_eq!(task["status"], "queued", "{task}");
    assert_eq!(task["generation"], 0, "a new task has generation 0: {task}");
    assert_eq!(task["max_retries"], 2, "{task}");
    assert_eq!(task["max_reclaims"], 5, "default max_reclaims: {task}");
    assert_eq!(task["retry_count"], 0, "{task}");
    assert_eq!(history_events(&task), ["queued"], "{task}");
}

#[test]
fn batch_submit_queues_every_task_and_listing_pages_in_creation_order() {
    let hub = Hub::start();
    let batch: Vec<_> = (0..5)
        .map(|i| json!({"description": format!("batch {i}"), "priority": "low"}))
        .collect();
    let (status, resp) = hub.post("/api/tasks", &json!(batch));
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["status"], "queued", "{resp}");
    assert_eq!(resp["count"], 5, "{resp}");
    let batch_ids: Vec<String> = resp["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect();
    let single = submit(&hub, json!({"description": "single", "priority": "urgent"}));

    let mut expected = batch_ids.clone();
    expected.push(single.clone());
    let listed: Vec<String> = list_all_tasks(&hub, "", 2)
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed, expected, "creation order, across pages of 2");

    let low: Vec<String> = list_all_tasks(&hub, "priority=low", 100)
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(low, batch_ids, "priority filter");
    let (status, page) = hub.get("/api/tasks?status=queued&limit=1000");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 6, "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");

    let (status, stats) = hub.get("/api/tasks/stats");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["by_status"]["queued"], 6, "{stats}");
    assert_eq!(stats["by_priority"]["3"], 5, "{stats}");
    assert_eq!(stats["by_priority"]["0"], 1, "{stats}");
    assert_eq!(stats["dead_letter"], 0, "{stats}");
}

#[test]
fn rejected_task_goes_back_to_the_queue_without_counting_as_a_failure() {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "rejecter", &[]);
    let token_b = register_agent(&hub, "taker", &[]);
    let mut a = Agent::connect(&hub, "rejecter", &token_a);
    let task_id = submit(&hub, json!({"description": "reject me", "max_retries": 1}));
    let assign = a.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str());

    // The second agent connects only now, so the task went to `a`.
    let mut b = Agent::connect(&hub, "taker", &token_b);
    a.send(json!({"type": "task_rejected", "task_id": task_id, "reason": "busy", "generation": 1}));
    let ack = a.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "rejected", "{ack}");
    assert_eq!(agent_state(&hub, "rejecter")["fsm_state"], "idle");

    // `a` is in reject backoff for this task, `b` is idle: `b` gets it.
    let reassign = b.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(reassign["task_id"], task_id.as_str(), "{reassign}");
    assert_eq!(
        reassign["generation"], 3,
        "reject requeue (+1) and new assignment (+1): {reassign}"
    );
    let task = get_task(&hub, &task_id);
    assert_eq!(
        task["retry_count"], 0,
        "a rejection is not a failure: {task}"
    );
    assert_eq!(count_events(&task, "rejected"), 1, "{task}");

    b.send(json!({"type": "task_accepted", "task_id": task_id, "generation": 3}));
    b.send(json!({"type": "task_complete", "task_id": task_id, "generation": 3}));
    assert_eq!(b.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "accepted");
    assert_eq!(b.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "complete");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(count_events(&task, "completed"), 1, "{task}");
}

#[test]
fn blocked_task_leaves_the_agent_idle_and_the_task_blocked() {
    let hub = Hub::start();
    let token = register_agent(&hub, "blocky", &[]);
    let mut agent = Agent::connect(&hub, "blocky", &token);
    // `wait`: the hub's default policy (`route`) would put a task whose agent
    // names what it `needs` straight back in the queue (tests/tasks_blocked.rs).
    let task_id = submit(
        &hub,
        json!({"description": "needs a database", "blocked_policy": "wait"}),
    );
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));

    agent.send(json!({
        "type": "task_blocked", "task_id": task_id, "generation": 1,
        "reason": "no database access", "needs": "db"
    }));
    assert_eq!(agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "blocked");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "blocked", "{task}");
    assert_eq!(count_events(&task, "blocked"), 1, "{task}");
    assert_eq!(agent_state(&hub, "blocky")["fsm_state"], "idle");

    // The agent is free again: a new task reaches it.
    let next = submit(&hub, json!({"description": "next"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], next.as_str(), "{assign}");
}

#[test]
fn operator_cancel_of_an_assigned_task_notifies_the_agent_and_frees_it() {
    let hub = Hub::start();
    let token = register_agent(&hub, "cancelled-agent", &[]);
    let mut agent = Agent::connect(&hub, "cancelled-agent", &token);
    let task_id = submit(&hub, json!({"description": "to be cancelled"}));
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));

    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp,
        json!({"status": "cancelled", "task_id": task_id, "previous_status": "assigned"})
    );
    let cancelled = agent.recv_type("task_cancelled", PUSH_TIMEOUT);
    assert_eq!(cancelled["task_id"], task_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled", "{cancelled}");
    assert!(cancelled["timestamp"].is_u64(), "{cancelled}");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "cancelled", "{task}");
    assert_eq!(count_events(&task, "cancelled"), 1, "{task}");

    // A late complete for the cancelled task is refused and changes nothing.
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": 1}));
    let reply = agent.recv_type("error", REPLY_TIMEOUT);
    assert_refused(&reply, "task_complete_failed");
    assert_eq!(get_task(&hub, &task_id), task);

    let next = submit(&hub, json!({"description": "after cancel"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(
        assign["task_id"],
        next.as_str(),
        "agent freed by cancel: {assign}"
    );
}

#[test]
fn task_progress_gets_no_reply_and_is_recorded_in_history() {
    let hub = Hub::start();
    let token = register_agent(&hub, "progressive", &[]);
    let mut agent = Agent::connect(&hub, "progressive", &token);
    let task_id = submit(&hub, json!({"description": "long job"}));
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));
    agent.send(
        json!({"type": "task_progress", "task_id": task_id, "progress": 50, "generation": 1}),
    );
    // A ping after the progress frame: its pong is the next reply, so progress sent none.
    agent.send(json!({"type": "ping"}));
    let reply = agent.recv_reply(REPLY_TIMEOUT);
    assert_eq!(reply["type"], "pong", "task_progress has no reply: {reply}");
    let task = get_task(&hub, &task_id);
    assert_eq!(count_events(&task, "progress"), 1, "{task}");
    assert_eq!(task["status"], "assigned", "{task}");
}

#[test]
fn operator_cancel_of_a_queued_task_keeps_it_from_ever_being_assigned() {
    let hub = Hub::start();
    let task_id = submit(&hub, json!({"description": "never mind"}));
    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp,
        json!({"status": "cancelled", "task_id": task_id, "previous_status": "queued"})
    );
    let token = register_agent(&hub, "idle-hands", &[]);
    let mut agent = Agent::connect(&hub, "idle-hands", &token);
    // A later task is assigned; the cancelled one never is.
    let later = submit(&hub, json!({"description": "real work"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], later.as_str(), "{assign}");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "cancelled", "{task}");
    assert_eq!(count_events(&task, "assigned"), 0, "{task}");
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["by_status"]["cancelled"], 1, "{stats}");
}
