//! Reclaims: acceptance timeout, disconnect, lease expiry and overdue tasks.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Timers are shortened so the tests run in seconds; the sweep runs every 100 ms.
const FAST_TIMERS: &str = "acceptance_timeout_ms = 1000\nsweep_interval_ms = 100\n";

/// Upper bound for a 1 s timer plus a 100 ms sweep to fire (generous on purpose).
const TIMER_BOUND: Duration = Duration::from_secs(10);

/// Whether `GET /api/agents/:id/state` lists the `unresponsive` flag.
fn flagged_unresponsive(hub: &Hub, agent_id: &str) -> bool {
    agent_state(hub, agent_id)["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "unresponsive"))
}

/// Issue 2, test 5 (acceptance timeout part, and "completed by another agent
/// exactly once").
#[test]
fn acceptance_timeout_reclaims_the_task_flags_the_agent_and_another_agent_completes_it_once() {
    let hub = Hub::start_with_config(FAST_TIMERS);
    let token_a = register_agent(&hub, "sleepy", &[]);
    let mut sleepy = Agent::connect(&hub, "sleepy", &token_a);
    let task_id = submit(&hub, json!({"description": "never accepted"}));
    let assign = sleepy.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");

    // The agent stays silent: after acceptance_timeout_ms the hub takes the task back.
    let cancelled = sleepy.recv_type("task_cancelled", TIMER_BOUND);
    assert_eq!(cancelled["task_id"], task_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "acceptance_timeout", "{cancelled}");
    // The push may overtake the FSM update seen over HTTP: allow the reply bound.
    assert!(
        wait_for(REPLY_TIMEOUT, || flagged_unresponsive(&hub, "sleepy")),
        "agent flagged unresponsive: {}",
        agent_state(&hub, "sleepy")
    );
    let task = get_task(&hub, &task_id);
    assert!(count_events(&task, "reclaimed") >= 1, "{task}");
    assert_eq!(task["retry_count"], 0, "a reclaim is not a failure: {task}");

    // A responsive agent arrives and finishes it. (The sleepy agent may be offered
    // the task again meanwhile; it keeps ignoring it, so it times out again.)
    let worker = Worker::spawn(&hub, "diligent", Duration::ZERO);
    assert!(
        wait_for(TIMER_BOUND, || get_task(&hub, &task_id)["status"]
            == "completed"),
        "task not completed by the second agent: {}",
        get_task(&hub, &task_id)
    );
    let log = worker.stop();
    let done = get_task(&hub, &task_id);
    assert_eq!(done["assigned_to"], "diligent", "{done}");
    assert_eq!(done["result"], json!({"done_by": "diligent"}), "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    assert_eq!(log.completed, vec![task_id.clone()], "{log:?}");
    assert!(log.errors.is_empty(), "{log:?}");

    // The sleepy agent's late reports are refused and change nothing.
    let first_generation = assign["generation"].as_u64().expect("generation");
    // Other pushes (a second offer and its cancellation) may be queued: wait for the error.
    sleepy
        .send(json!({"type": "task_accepted", "task_id": task_id, "generation": first_generation}));
    let late = sleepy.recv_type("error", REPLY_TIMEOUT);
    assert_eq!(late["type"], "error", "{late}");
    assert_refused(&late, "task_accept_failed");
    sleepy
        .send(json!({"type": "task_complete", "task_id": task_id, "generation": first_generation}));
    let late = sleepy.recv_type("error", REPLY_TIMEOUT);
    assert_eq!(late["type"], "error", "{late}");
    assert_refused(&late, "task_complete_failed");
    assert_eq!(get_task(&hub, &task_id), done);
}

#[test]
fn unresponsive_flag_is_cleared_by_the_next_accept() {
    let hub = Hub::start_with_config(FAST_TIMERS);
    let token = register_agent(&hub, "late-riser", &[]);
    let mut agent = Agent::connect(&hub, "late-riser", &token);
    let task_id = submit(&hub, json!({"description": "wake up"}));
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    let cancelled = agent.recv_type("task_cancelled", TIMER_BOUND);
    assert_eq!(cancelled["reason"], "acceptance_timeout", "{cancelled}");
    assert!(
        wait_for(REPLY_TIMEOUT, || flagged_unresponsive(&hub, "late-riser")),
        "agent flagged unresponsive: {}",
        agent_state(&hub, "late-riser")
    );
    // The reclaimed task is offered again (the only agent); this time it is accepted.
    let again = agent.recv_type("task_assign", TIMER_BOUND);
    assert_eq!(again["task_id"], task_id.as_str(), "{again}");
    let generation = again["generation"].as_u64().expect("generation");
    assert!(generation >= 3, "{again}");
    agent.accept(&task_id, json!(generation));
    // The flag may be cleared just after the ack; allow the reply bound for it.
    let cleared = wait_for(REPLY_TIMEOUT, || !flagged_unresponsive(&hub, "late-riser"));
    assert!(
        cleared,
        "flag cleared by accept: {}",
        agent_state(&hub, "late-riser")
    );
}

/// Issue 2, test 5 (disconnect part).
#[test]
fn disconnect_reclaims_the_task_at_once_and_another_agent_completes_it_exactly_once() {
    // Default timers: only the disconnect can reclaim the task within the bound.
    let hub = Hub::start();
    let token = register_agent(&hub, "vanishing", &[]);
    let mut vanishing = Agent::connect(&hub, "vanishing", &token);
    let task_id = submit(&hub, json!({"description": "orphaned"}));
    let assign = vanishing.recv_type("task_assign", PUSH_TIMEOUT);
    vanishing.accept(&task_id, json!(assign["generation"]));

    // The agent's socket goes away without a close frame (process died).
    drop(vanishing);
    // "At once": 5 s allows for a slow machine; the lease (300 s) and the acceptance
    // timeout (60 s) cannot fire within it.
    assert!(
        wait_for(PUSH_TIMEOUT, || {
            let t = get_task(&hub, &task_id);
            t["status"] == "queued" && count_events(&t, "reclaimed") == 1
        }),
        "task not reclaimed at once after disconnect: {}",
        get_task(&hub, &task_id)
    );
    let requeued = get_task(&hub, &task_id);
    assert_eq!(requeued["retry_count"], 0, "{requeued}");
    assert!(requeued["assigned_to"].is_null(), "{requeued}");
    assert_eq!(
        requeued["generation"], 2,
        "assignment + return to queue: {requeued}"
    );
    assert_eq!(agent_state(&hub, "vanishing")["fsm_state"], "offline");

    let worker = Worker::spawn(&hub, "heir", Duration::ZERO);
    assert!(
        wait_for(PUSH_TIMEOUT, || get_task(&hub, &task_id)["status"]
            == "completed"),
        "{}",
        get_task(&hub, &task_id)
    );
    let log = worker.stop();
    assert_eq!(log.assigned.len(), 1, "{log:?}");
    assert_eq!(log.assigned[0].generation, 3, "{log:?}");
    assert_eq!(log.completed, vec![task_id.clone()], "{log:?}");
    let done = get_task(&hub, &task_id);
    assert_eq!(done["assigned_to"], "heir", "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
}

#[test]
fn silent_task_past_its_lease_is_reclaimed_with_lease_expired() {
    let hub = Hub::start_with_config("sweep_interval_ms = 100\n");
    let token = register_agent(&hub, "stuck", &[]);
    let mut agent = Agent::connect(&hub, "stuck", &token);
    // 1000 ms is the shortest lease a task may ask for.
    let task_id = submit(&hub, json!({"description": "stuck job", "lease_ms": 1000}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["lease_ms"], 1000, "{assign}");
    agent.accept(&task_id, json!(1));
    let cancelled = agent.recv_type("task_cancelled", TIMER_BOUND);
    assert_eq!(cancelled["task_id"], task_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "lease_expired", "{cancelled}");
    let task = get_task(&hub, &task_id);
    assert!(count_events(&task, "reclaimed") >= 1, "{task}");
    assert_eq!(task["retry_count"], 0, "{task}");
    assert!(task["reclaim_count"].as_u64().unwrap_or(0) >= 1, "{task}");
}

#[test]
fn assigned_task_past_complete_by_is_reclaimed_as_overdue() {
    let hub = Hub::start_with_config("sweep_interval_ms = 100\n");
    let token = register_agent(&hub, "slowpoke", &[]);
    let mut agent = Agent::connect(&hub, "slowpoke", &token);
    let task_id = submit(
        &hub,
        json!({"description": "deadline", "complete_by": now_ms() + 1500}),
    );
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));
    let cancelled = agent.recv_type("task_cancelled", TIMER_BOUND);
    assert_eq!(cancelled["task_id"], task_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "overdue", "{cancelled}");
    let task = get_task(&hub, &task_id);
    assert!(count_events(&task, "reclaimed") >= 1, "{task}");
}

#[test]
fn task_reclaimed_more_than_max_reclaims_times_dead_letters_with_too_many_reclaims() {
    let hub = Hub::start_with_config(FAST_TIMERS);
    let token = register_agent(&hub, "ignorer", &[]);
    let _ignorer = Agent::connect(&hub, "ignorer", &token);
    let task_id = submit(
        &hub,
        json!({"description": "hot potato", "max_reclaims": 1}),
    );
    // The only agent never accepts: each offer times out and is reclaimed.
    assert!(
        wait_for(Duration::from_secs(20), || get_task(&hub, &task_id)
            ["status"]
            == "dead_letter"),
        "{}",
        get_task(&hub, &task_id)
    );
    let task = get_task(&hub, &task_id);
    assert_eq!(task["last_error"], "too_many_reclaims", "{task}");
    assert_eq!(task["retry_count"], 0, "{task}");
}

#[test]
fn task_progress_and_wake_result_success_renew_the_lease() {
    let hub = Hub::start_with_config("sweep_interval_ms = 100\n");
    let token = register_agent(&hub, "busy-bee", &[]);
    let mut agent = Agent::connect(&hub, "busy-bee", &token);
    let task_id = submit(
        &hub,
        json!({"description": "long but alive", "lease_ms": 2000}),
    );
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));

    // Renew every 200 ms (10x inside the 2 s lease) for 5 s: more than two leases.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        if n.is_multiple_of(2) {
            agent.send(json!({"type": "task_progress", "task_id": task_id, "progress": n, "generation": 1}));
        } else {
            agent.send(json!({"type": "wake_result", "task_id": task_id, "status": "success", "attempt": 1}));
        }
        n += 1;
        agent.expect_no_type("task_cancelled", Duration::from_millis(200));
    }
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "assigned", "{task}");
    assert_eq!(count_events(&task, "reclaimed"), 0, "{task}");

    // Silence now: the lease runs out.
    let cancelled = agent.recv_type("task_cancelled", TIMER_BOUND);
    assert_eq!(cancelled["reason"], "lease_expired", "{cancelled}");
}
