//! Fencing: only the current holder's report with the current generation changes a
//! task; every other report gets the documented error and changes nothing.

mod common;

use common::*;
use serde_json::json;

const UNKNOWN_TASK: &str = "task-0123456789abcdef";

/// Issue 2, test 4.
#[test]
fn stale_generation_wrong_agent_and_unknown_task_get_documented_errors_and_duplicate_complete_is_acked_again(
) {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "holder", &[]);
    let token_b = register_agent(&hub, "intruder", &[]);
    let mut a = Agent::connect(&hub, "holder", &token_a);
    let task_id = submit(&hub, json!({"description": "fenced"}));
    let assign = a.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["generation"], 1, "{assign}");
    // The intruder connects after the task went to the holder.
    let mut b = Agent::connect(&hub, "intruder", &token_b);
    a.accept(&task_id, json!(1));

    let before = get_task(&hub, &task_id);
    let complete = |generation: u64| json!({"type": "task_complete", "task_id": task_id, "generation": generation, "result": {"x": 1}});
    let fail = |generation: u64| json!({"type": "task_failed", "task_id": task_id, "generation": generation, "error": "e"});

    // Stale and future generations from the holder.
    assert_error(
        &request(&mut a, complete(0)),
        "task_complete_failed: stale_generation",
    );
    assert_error(
        &request(&mut a, complete(2)),
        "task_complete_failed: stale_generation",
    );
    assert_error(
        &request(&mut a, fail(0)),
        "task_fail_failed: stale_generation",
    );
    // The right generation from the wrong agent.
    assert_error(
        &request(&mut b, complete(1)),
        "task_complete_failed: not_owner",
    );
    assert_error(&request(&mut b, fail(1)), "task_fail_failed: not_owner");
    assert_error(
        &request(
            &mut b,
            json!({"type": "task_accepted", "task_id": task_id, "generation": 1}),
        ),
        "task_accept_failed: not_owner",
    );
    // Unknown task.
    assert_error(
        &request(
            &mut a,
            json!({"type": "task_complete", "task_id": UNKNOWN_TASK, "generation": 1}),
        ),
        "task_complete_failed: not_found",
    );
    assert_error(
        &request(
            &mut a,
            json!({"type": "task_failed", "task_id": UNKNOWN_TASK, "generation": 1}),
        ),
        "task_fail_failed: not_found",
    );

    assert_eq!(
        get_task(&hub, &task_id),
        before,
        "refused reports changed the task"
    );
    assert_eq!(agent_state(&hub, "holder")["fsm_state"], "working");
    assert_eq!(agent_state(&hub, "intruder")["fsm_state"], "idle");

    // The real completion, then an identical repeat.
    let ack = request(&mut a, complete(1));
    assert_eq!(
        ack,
        json!({"type": "task_ack", "task_id": task_id, "status": "complete"})
    );
    let after = get_task(&hub, &task_id);
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["result"], json!({"x": 1}), "{after}");
    let again = request(&mut a, complete(1));
    assert_eq!(again, ack, "a duplicate complete gets the same ack");
    assert_eq!(
        get_task(&hub, &task_id),
        after,
        "a duplicate complete changed the task"
    );
    assert_eq!(count_events(&after, "completed"), 1, "{after}");

    // After completion, another agent's report is still refused and changes nothing.
    let late = request(&mut b, complete(1));
    assert_eq!(late["type"], "error", "{late}");
    assert_refused(&late, "task_complete_failed");
    assert_eq!(get_task(&hub, &task_id), after);
}

#[test]
fn complete_for_a_queued_task_is_invalid_state_and_changes_nothing() {
    let hub = Hub::start();
    let token = register_agent(&hub, "eager", &[]);
    let mut agent = Agent::connect(&hub, "eager", &token);
    // Nobody has this capability, so the task stays queued.
    let task_id = submit(
        &hub,
        json!({"description": "unassignable", "needed_capabilities": ["quantum"]}),
    );
    let before = get_task(&hub, &task_id);
    assert_eq!(before["status"], "queued", "{before}");
    let reply = request(
        &mut agent,
        json!({"type": "task_complete", "task_id": task_id, "generation": 0}),
    );
    assert_error(&reply, "task_complete_failed: invalid_state");
    let reply = request(
        &mut agent,
        json!({"type": "task_failed", "task_id": task_id, "generation": 0}),
    );
    assert_error(&reply, "task_fail_failed: invalid_state");
    assert_eq!(get_task(&hub, &task_id), before);
    assert_eq!(agent_state(&hub, "eager")["fsm_state"], "idle");
}

#[test]
fn reject_and_accept_from_the_wrong_agent_are_refused() {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "owner", &[]);
    let token_b = register_agent(&hub, "other", &[]);
    let mut a = Agent::connect(&hub, "owner", &token_a);
    let task_id = submit(&hub, json!({"description": "mine"}));
    a.recv_type("task_assign", PUSH_TIMEOUT);
    let mut b = Agent::connect(&hub, "other", &token_b);
    let before = get_task(&hub, &task_id);
    let reply = request(
        &mut b,
        json!({"type": "task_rejected", "task_id": task_id, "generation": 1}),
    );
    assert_error(&reply, "task_reject_failed: not_owner");
    let reply = request(
        &mut a,
        json!({"type": "task_accepted", "task_id": UNKNOWN_TASK}),
    );
    assert_error(&reply, "task_accept_failed: not_found");
    assert_eq!(get_task(&hub, &task_id), before);
}
