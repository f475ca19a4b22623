//! Failure path: retries with rising generations, dead letter, admin retry.

mod common;

use common::*;
use serde_json::json;

/// Issue 2, test 3.
#[test]
fn max_retries_two_requeues_after_first_failure_dead_letters_after_second_and_admin_retry_requeues()
{
    let hub = Hub::start();
    let token = register_agent(&hub, "flaky", &[]);
    let mut agent = Agent::connect(&hub, "flaky", &token);
    let task_id = submit(
        &hub,
        json!({"description": "fails twice", "max_retries": 2, "priority": "high"}),
    );

    // Attempt 1 fails: requeued with a higher generation.
    let first = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(first["task_id"], task_id.as_str(), "{first}");
    let gen1 = first["generation"].as_u64().expect("generation");
    assert_eq!(gen1, 1, "{first}");
    agent.accept(&task_id, json!(gen1));
    agent.send(
        json!({"type": "task_failed", "task_id": task_id, "generation": gen1, "error": "boom 1"}),
    );
    let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "retried", "{ack}");

    // The only agent is idle again, so the requeued task comes straight back.
    let second = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(second["task_id"], task_id.as_str(), "{second}");
    let gen2 = second["generation"].as_u64().expect("generation");
    assert!(gen2 > gen1, "generation rises: {gen1} -> {gen2}");
    assert_eq!(gen2, 3, "requeue (+1) and reassignment (+1): {second}");
    assert_eq!(second["attempt"], 2, "{second}");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["retry_count"], 1, "{task}");
    assert_eq!(count_events(&task, "retry"), 1, "{task}");

    // Attempt 2 fails: max_retries reached, dead letter.
    agent.accept(&task_id, json!(gen2));
    agent.send(
        json!({"type": "task_failed", "task_id": task_id, "generation": gen2, "reason": "boom 2"}),
    );
    let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "dead_letter", "{ack}");
    let dead = get_task(&hub, &task_id);
    assert_eq!(dead["status"], "dead_letter", "{dead}");
    assert_eq!(dead["retry_count"], 2, "{dead}");
    assert_eq!(count_events(&dead, "dead_letter"), 1, "{dead}");
    assert_eq!(agent_state(&hub, "flaky")["fsm_state"], "idle");

    let (status, dl) = hub.get("/api/tasks/dead-letter");
    assert_eq!(status, 200, "{dl}");
    assert_eq!(dl["count"], 1, "{dl}");
    assert_eq!(dl["tasks"][0]["id"], task_id.as_str(), "{dl}");
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["dead_letter"], 1, "{stats}");

    // A dead-lettered task is not offered again by itself.
    agent.expect_no_type("task_assign", std::time::Duration::from_millis(500));

    // Admin retry from dead letter requeues it; the idle agent gets it and completes.
    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/retry"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp,
        json!({"status": "requeued", "task_id": task_id, "priority": 1,
               "previous_status": "dead_letter"})
    );
    let third = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(third["task_id"], task_id.as_str(), "{third}");
    let gen3 = third["generation"].as_u64().expect("generation");
    assert!(
        gen3 > gen2,
        "generation rises after retry: {gen2} -> {gen3}"
    );
    let task = get_task(&hub, &task_id);
    assert_eq!(count_events(&task, "retried_from_dead_letter"), 1, "{task}");
    let (_, dl) = hub.get("/api/tasks/dead-letter");
    assert_eq!(dl["count"], 0, "{dl}");

    agent.accept(&task_id, json!(gen3));
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": gen3, "result": {"ok": true}}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    let done = get_task(&hub, &task_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
}

#[test]
fn default_max_retries_dead_letters_on_the_third_failure() {
    let hub = Hub::start();
    let token = register_agent(&hub, "flaky3", &[]);
    let mut agent = Agent::connect(&hub, "flaky3", &token);
    let task_id = submit(&hub, json!({"description": "default retries"}));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
        let generation = assign["generation"].as_u64().expect("generation");
        agent.accept(&task_id, json!(generation));
        agent.send(json!({"type": "task_failed", "task_id": task_id, "generation": generation, "error": "no"}));
        let ack = agent.recv_ack(&task_id, REPLY_TIMEOUT);
        statuses.push(ack["status"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(statuses, ["retried", "retried", "dead_letter"]);
    assert_eq!(get_task(&hub, &task_id)["status"], "dead_letter");
}

#[test]
fn admin_retry_of_a_task_not_in_dead_letter_changes_nothing() {
    let hub = Hub::start();
    let task_id = submit(&hub, json!({"description": "still queued"}));
    let before = get_task(&hub, &task_id);
    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/retry"), &json!({}));
    assert!(
        (400..500).contains(&status),
        "retry of a queued task is refused: {status} {resp}"
    );
    assert_eq!(get_task(&hub, &task_id), before);
    let (status, resp) = hub.post("/api/tasks/task-0123456789abcdef/retry", &json!({}));
    assert_eq!(status, 404, "{resp}");
}
