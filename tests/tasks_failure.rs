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

/// Issue 17, part 3: three failures in a row are spaced by the backoff (full
/// jitter under a doubling cap), each retry waits for its `run_after`, and the
/// agent's own `retry_after_s` replaces the backoff.
#[test]
fn failures_back_off_exponentially_and_retry_after_s_wins() {
    let hub = Hub::start_with_config("retry_backoff_base_ms = 400\nretry_backoff_max_ms = 60000\n");
    let token = register_agent(&hub, "flaky", &[]);
    let mut agent = Agent::connect(&hub, "flaky", &token);
    let task_id = submit(&hub, json!({"description": "fails", "max_retries": 5}));
    for n in 0..4u32 {
        let assign = agent.recv_type("task_assign", SOON);
        assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
        let generation = assign["generation"].clone();
        agent.accept(&task_id, generation.clone());
        let mut frame = json!({"type": "task_failed", "task_id": task_id,
                               "generation": generation, "error": format!("boom {n}")});
        if n == 3 {
            frame["retry_after_s"] = json!(1);
            frame["reason"] = json!("rate_limited");
        }
        agent.send(frame);
        assert_eq!(agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "retried");
    }
    agent.take(&task_id);
    let task = get_task(&hub, &task_id);
    let retries = history_entries(&task, "retry");
    assert_eq!(retries.len(), 4, "{task}");
    let assigned: Vec<i64> = history_entries(&task, "assigned")
        .iter()
        .map(|e| e["ts"].as_i64().expect("ts"))
        .collect();
    for (i, r) in retries.iter().enumerate() {
        let at = r["ts"].as_i64().expect("ts");
        let delay = r["details"]["run_after"].as_i64().map_or(0, |ra| ra - at);
        if i < 3 {
            let cap = 400i64 << i;
            assert!(
                (0..=cap).contains(&delay),
                "retry {i}: delay {delay} over cap {cap}: {r}"
            );
        } else {
            assert_eq!(delay, 1000, "retry_after_s replaces the backoff: {r}");
            assert_eq!(r["details"]["reason"], "rate_limited", "{r}");
        }
        // The next assignment waited for run_after.
        assert!(
            assigned[i + 1] >= at + delay,
            "assignment {} before run_after: {task}",
            i + 1
        );
    }
    assert!(
        task["run_after"].as_i64().is_some(),
        "the task shows run_after: {task}"
    );
}

/// Issue 17, part 2: `terminal` dead-letters at once, whatever `max_retries`.
#[test]
fn a_terminal_failure_dead_letters_at_once() {
    let hub = Hub::start();
    let token = register_agent(&hub, "sure", &[]);
    let mut agent = Agent::connect(&hub, "sure", &token);
    let task_id = submit(
        &hub,
        json!({"description": "cannot work", "max_retries": 5}),
    );
    let assign = agent.take(&task_id);
    agent.send(json!({"type": "task_failed", "task_id": task_id, "generation": assign["generation"],
                      "error": "the repository does not exist", "reason": "no_repo", "terminal": true}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "dead_letter"
    );
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "dead_letter", "{task}");
    assert_eq!(task["retry_count"], 1, "{task}");
    let dead = history_entries(&task, "dead_letter")[0].clone();
    assert_eq!(dead["details"]["terminal"], true, "{task}");
    assert_eq!(dead["details"]["reason"], "no_repo", "{task}");
    // A bad `terminal` is refused and changes nothing.
    let token2 = register_agent(&hub, "sloppy", &[]);
    let mut other = Agent::connect(&hub, "sloppy", &token2);
    let reply = request(
        &mut other,
        json!({"type": "task_failed", "task_id": task_id, "generation": 1, "terminal": "yes"}),
    );
    assert_eq!(reply["error"], "validation_failed", "{reply}");
}

/// Issue 17, part 3: the agent whose attempt failed is not offered the task
/// again first while another capable agent is idle, even when it has been idle
/// longer.
#[test]
fn the_failing_agent_is_not_offered_the_task_first() {
    let hub = Hub::start_with_config("retry_backoff_base_ms = 0\n");
    let ta = register_agent(&hub, "first", &["x"]);
    let tb = register_agent(&hub, "second", &["x"]);
    let mut a = Agent::connect_with_caps(&hub, "first", &ta, &["x"]);
    let failing = submit(
        &hub,
        json!({"description": "fails once", "needed_capabilities": ["x"],
                                      "max_retries": 3}),
    );
    let assign = a.take(&failing);
    let mut b = Agent::connect_with_caps(&hub, "second", &tb, &["x"]);
    // Make `second` the more recently idle agent: it takes and finishes a task.
    let other = submit(
        &hub,
        json!({"description": "quick", "needed_capabilities": ["x"]}),
    );
    let quick = b.take(&other);
    // `first` fails, with a wait, so both are idle when it returns.
    a.send(
        json!({"type": "task_failed", "task_id": failing, "generation": assign["generation"],
                  "error": "flaky", "retry_after_s": 2}),
    );
    assert_eq!(a.recv_ack(&failing, REPLY_TIMEOUT)["status"], "retried");
    b.complete(&quick);
    // Longest idle is `first`; the failed task still goes to `second`.
    let again = b.recv_type("task_assign", SOON);
    assert_eq!(again["task_id"], failing.as_str(), "{again}");
    a.expect_no_type("task_assign", std::time::Duration::from_millis(300));
}
