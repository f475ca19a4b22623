//! Blocked work (`task_blocked`, ext): the policies `wait`, `requeue` and `route`
//! (per task or the hub's default), the `blocked_tasks` alert, and the attempt
//! records of a task (`GET /api/tasks/{id}/attempts`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Timers (requeue delays) are checked by the queue's sweep; a short one keeps
/// the tests quick without making them depend on it.
const SWEEP: &str = "sweep_interval_ms = 50\n";

/// Sends `task_blocked` for the assignment and asserts the `blocked` ack.
fn block(agent: &mut Agent, assign: &Value, reason: &str, needs: Option<&str>) {
    let task_id = assign["task_id"].as_str().expect("task_id");
    let mut frame = json!({"type": "task_blocked", "task_id": task_id,
                           "generation": assign["generation"], "reason": reason});
    if let Some(n) = needs {
        frame["needs"] = json!(n);
    }
    agent.send(frame);
    let ack = agent.recv_ack(task_id, REPLY_TIMEOUT);
    assert_eq!(
        ack,
        json!({"type": "task_ack", "task_id": task_id, "status": "blocked"})
    );
}

/// The first history entry named `event` (panics if there is none).
fn entry(task: &Value, event: &str) -> Value {
    task["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["event"] == event).cloned())
        .unwrap_or_else(|| panic!("no {event:?} in the history of {task}"))
}

/// Sleeps until the hub's clock (the same host clock) is past `ms`; used only to
/// show that something does *not* happen while a shorter timer would have fired.
fn sleep_until(ms: u64) {
    let now = now_ms();
    if ms > now {
        std::thread::sleep(Duration::from_millis(ms - now));
    }
}

#[test]
fn wait_policy_keeps_a_task_blocked_while_other_work_flows_until_an_operator_retries_it() {
    // The hub's default would put it back after 100 ms; the task's own policy wins.
    let hub = Hub::start_with_config(&format!(
        "{SWEEP}blocked_policy = \"requeue\"\nblocked_requeue_ms = 100\n"
    ));
    let token = register_agent(&hub, "w", &[]);
    let mut agent = Agent::connect(&hub, "w", &token);
    let task_id = submit(
        &hub,
        json!({"description": "deploy", "blocked_policy": "wait"}),
    );
    let assign = agent.take(&task_id);
    block(&mut agent, &assign, "needs production credentials", None);
    let t = get_task(&hub, &task_id);
    assert_eq!(t["status"], "blocked", "{t}");
    assert_eq!(t["blocked_policy"], "wait", "{t}");
    assert_eq!(t["last_error"], "needs production credentials", "{t}");
    assert_eq!(t["unblock_at"], Value::Null, "{t}");
    let blocked_at = t["blocked_at"].as_u64().expect("blocked_at");
    assert_eq!(entry(&t, "blocked")["details"]["policy"], "wait", "{t}");
    assert_eq!(agent_state(&hub, "w")["fsm_state"], "idle");

    // Other work flows past it.
    for n in 0..3 {
        let other = submit(&hub, json!({"description": format!("other {n}")}));
        let a = agent.take(&other);
        agent.complete(&a);
    }
    // Well past the hub's default delay (many sweeps): still blocked.
    sleep_until(blocked_at + 600);
    assert_no_assignment(&hub, &mut agent);
    let t = get_task(&hub, &task_id);
    assert_eq!(t["status"], "blocked", "{t}");
    assert_eq!(count_events(&t, "requeued"), 0, "{t}");

    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/retry"), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["previous_status"], "blocked", "{resp}");
    let again = agent.take(&task_id);
    assert!(
        again["generation"].as_u64() > assign["generation"].as_u64(),
        "{assign} -> {again}"
    );
    agent.complete(&again);
    let t = get_task(&hub, &task_id);
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["blocked_at"], Value::Null, "cleared once it ran: {t}");
}

#[test]
fn requeue_policy_puts_the_task_back_after_its_delay_and_the_hub_default_applies_otherwise() {
    // The hub's default here is `wait`.
    let hub = Hub::start_with_config(&format!("{SWEEP}blocked_policy = \"wait\"\n"));
    let token = register_agent(&hub, "r", &[]);
    let mut agent = Agent::connect(&hub, "r", &token);

    // No policy of its own: the hub's `wait`.
    let waits = submit(&hub, json!({"description": "default policy"}));
    let a = agent.take(&waits);
    block(&mut agent, &a, "no idea", None);

    let task_id = submit(
        &hub,
        json!({"description": "flaky upstream", "blocked_policy": "requeue",
               "blocked_requeue_ms": 300}),
    );
    let first = agent.take(&task_id);
    block(&mut agent, &first, "upstream rate limit", None);
    let t = get_task(&hub, &task_id);
    let blocked = entry(&t, "blocked");
    let blocked_ts = blocked["ts"].as_u64().expect("ts");
    assert_eq!(blocked["details"]["policy"], "requeue", "{t}");
    if t["status"] == "blocked" {
        assert_eq!(
            t["unblock_at"].as_u64(),
            Some(blocked_ts + 300),
            "unblock_at is the block time plus the delay: {t}"
        );
    }

    // Back in the queue after the delay, and assigned again.
    let again = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(again["task_id"], task_id.as_str(), "{again}");
    assert!(
        again["generation"].as_u64() > first["generation"].as_u64(),
        "{first} -> {again}"
    );
    assert!(
        again["assigned_at"].as_u64() >= Some(blocked_ts + 300),
        "not before the delay: blocked at {blocked_ts}, {again}"
    );
    agent.accept(&task_id, again["generation"].clone());
    let t = get_task(&hub, &task_id);
    let requeued = entry(&t, "requeued");
    assert!(
        requeued["ts"].as_u64() >= Some(blocked_ts + 300),
        "requeued {requeued} vs blocked {blocked_ts}"
    );
    assert_eq!(requeued["details"]["policy"], "requeue");
    assert_eq!(t["unblock_at"], Value::Null, "{t}");
    agent.complete(&again);

    // The default-policy task is still blocked, long after that delay.
    let w = get_task(&hub, &waits);
    assert_eq!(w["status"], "blocked", "{w}");
    assert_eq!(w["unblock_at"], Value::Null, "{w}");
    assert_eq!(entry(&w, "blocked")["details"]["policy"], "wait", "{w}");
}

#[test]
fn route_with_needs_requeues_at_once_for_agents_that_have_the_capability() {
    let hub = Hub::start_with_config(SWEEP);
    let plain_token = register_agent(&hub, "plain", &[]);
    let mut plain = Agent::connect(&hub, "plain", &plain_token);
    let task_id = submit(&hub, json!({"description": "train the model"}));
    let first = plain.take(&task_id);
    block(&mut plain, &first, "no GPU here", Some("gpu"));

    let t = get_task(&hub, &task_id);
    assert_eq!(t["status"], "queued", "routed back at once: {t}");
    assert_eq!(t["needed_capabilities"], json!(["gpu"]), "{t}");
    let events = history_events(&t);
    let b = events.iter().position(|e| e == "blocked").expect("blocked");
    assert_eq!(events.get(b + 1).map(String::as_str), Some("routed"), "{t}");
    let routed = entry(&t, "routed");
    assert_eq!(routed["details"]["needed_capabilities"], json!(["gpu"]));
    assert_eq!(routed["details"]["previous_capabilities"], json!([]));

    // The agent without the capability is idle and gets nothing.
    assert_no_assignment(&hub, &mut plain);
    assert_eq!(get_task(&hub, &task_id)["status"], "queued");

    let gpu_token = register_agent(&hub, "gpu-box", &["gpu"]);
    let mut gpu = Agent::connect(&hub, "gpu-box", &gpu_token);
    let second = gpu.take(&task_id);
    assert_eq!(second["needed_capabilities"], json!(["gpu"]), "{second}");
    assert!(second["generation"].as_u64() > first["generation"].as_u64());
    gpu.complete(&second);
}

#[test]
fn route_to_agent_id_sends_the_task_to_that_agent_only() {
    let hub = Hub::start_with_config(SWEEP);
    let tokens: Vec<String> = ["worker", "helper", "bystander"]
        .iter()
        .map(|a| register_agent(&hub, a, &[]))
        .collect();
    let mut worker = Agent::connect(&hub, "worker", &tokens[0]);
    let task_id = submit(&hub, json!({"description": "needs a human review"}));
    let first = worker.take(&task_id);
    let mut bystander = Agent::connect(&hub, "bystander", &tokens[2]);
    let mut helper = Agent::connect(&hub, "helper", &tokens[1]);
    block(&mut worker, &first, "needs review", Some("agent:helper"));
    let second = helper.take(&task_id);
    assert_eq!(second["needed_capabilities"], json!(["agent:helper"]));
    assert_no_assignment(&hub, &mut bystander);
    assert_no_assignment(&hub, &mut worker);
    helper.complete(&second);
    assert_eq!(get_task(&hub, &task_id)["assigned_to"], "helper");
}

#[test]
fn route_without_needs_requeues_after_the_hub_default_delay() {
    let hub = Hub::start_with_config(&format!("{SWEEP}blocked_requeue_ms = 300\n"));
    let token = register_agent(&hub, "solo", &[]);
    let mut agent = Agent::connect(&hub, "solo", &token);
    let task_id = submit(&hub, json!({"description": "try later"}));
    let first = agent.take(&task_id);
    block(&mut agent, &first, "busy upstream", None);
    let t = get_task(&hub, &task_id);
    let blocked = entry(&t, "blocked");
    let blocked_ts = blocked["ts"].as_u64().expect("ts");
    assert_eq!(
        blocked["details"]["policy"], "route",
        "the hub default: {t}"
    );
    assert_eq!(count_events(&t, "routed"), 0, "{t}");

    let again = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(again["task_id"], task_id.as_str(), "{again}");
    assert!(
        again["assigned_at"].as_u64() >= Some(blocked_ts + 300),
        "blocked at {blocked_ts}: {again}"
    );
    assert_eq!(again["needed_capabilities"], json!([]), "{again}");
    let t = get_task(&hub, &task_id);
    assert!(entry(&t, "requeued")["ts"].as_u64() >= Some(blocked_ts + 300));
}

#[test]
fn blocked_tasks_alert_fires_for_long_blocked_tasks_and_clears_once_they_are_handled() {
    let hub = Hub::start_with_config(&format!(
        "{SWEEP}metrics_interval_ms = 100\nalert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n"
    ));
    let (status, resp) = http(
        "PUT",
        &hub.url("/api/config/alert-thresholds"),
        Some(&hub.admin_token),
        Body::Json(&json!({"blocked_task_ms": 200})),
    );
    assert_eq!(status, 200, "{resp}");
    let alert = |hub: &Hub| -> Option<Value> {
        let (status, body) = hub.get("/api/alerts");
        assert_eq!(status, 200, "{body}");
        body["active"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["rule_id"] == "blocked_tasks").cloned())
    };
    let token = register_agent(&hub, "a", &[]);
    let mut agent = Agent::connect(&hub, "a", &token);
    let mut blocked = Vec::new();
    for n in 0..2 {
        let id = submit(
            &hub,
            json!({"description": format!("stuck {n}"), "blocked_policy": "wait"}),
        );
        let assign = agent.take(&id);
        block(&mut agent, &assign, &format!("reason {n}"), None);
        blocked.push(id);
    }
    let wait = Duration::from_secs(20);
    assert!(
        wait_for(wait, || alert(&hub)
            .is_some_and(|a| a["details"]["count"] == 2)),
        "blocked_tasks alert with both tasks: {:?}",
        alert(&hub)
    );
    let fired = alert(&hub).expect("active");
    let listed: Vec<&str> = fired["details"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(
        listed,
        [blocked[0].as_str(), blocked[1].as_str()],
        "{fired}"
    );
    assert_eq!(
        fired["details"]["tasks"][0]["reason"], "reason 0",
        "{fired}"
    );

    // Retried (and run): one left.
    let (status, resp) = hub.post(&format!("/api/tasks/{}/retry", blocked[0]), &json!({}));
    assert_eq!(status, 200, "{resp}");
    let assign = agent.take(&blocked[0]);
    agent.complete(&assign);
    assert!(
        wait_for(wait, || alert(&hub)
            .is_some_and(|a| a["details"]["count"] == 1)),
        "{:?}",
        alert(&hub)
    );
    // Cancelled: none left, the alert clears.
    let (status, resp) = hub.post(&format!("/api/tasks/{}/cancel", blocked[1]), &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert!(
        wait_for(wait, || alert(&hub).is_none()),
        "{:?}",
        alert(&hub)
    );
    let (_, body) = hub.get("/api/alerts");
    let cleared = body["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["rule_id"] == "blocked_tasks" && x["kind"] == "cleared")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cleared, 1, "{body}");
}

#[test]
fn attempts_record_every_assignment_and_how_it_ended() {
    let mut hub = Hub::start_with_config(&format!("{SWEEP}reject_backoff_ms = 50\n"));
    let token = register_agent(&hub, "a1", &[]);
    let mut agent = Agent::connect(&hub, "a1", &token);
    let task_id = submit(
        &hub,
        json!({"description": "many tries", "max_retries": 5,
               "blocked_policy": "requeue", "blocked_requeue_ms": 0}),
    );
    let mut generations = Vec::new();

    // 1: rejected without accepting.
    let a = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(a["task_id"], task_id.as_str());
    generations.push(a["generation"].as_u64().expect("generation"));
    agent.send(json!({"type": "task_rejected", "task_id": task_id,
                      "generation": a["generation"], "reason": "not my kind"}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "rejected"
    );
    // 2: failed.
    let a = agent.take(&task_id);
    generations.push(a["generation"].as_u64().expect("generation"));
    agent.send(json!({"type": "task_failed", "task_id": task_id,
                      "generation": a["generation"], "error": "boom"}));
    assert_eq!(agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "retried");
    // 3: blocked (requeued at once by its policy).
    let a = agent.take(&task_id);
    generations.push(a["generation"].as_u64().expect("generation"));
    block(&mut agent, &a, "stuck", None);
    // 4: reclaimed when the agent's connection drops.
    let a = agent.take(&task_id);
    generations.push(a["generation"].as_u64().expect("generation"));
    agent.drop_abruptly();
    assert!(
        wait_for(PUSH_TIMEOUT, || get_task(&hub, &task_id)["status"]
            == "queued"),
        "reclaimed after the disconnect: {}",
        get_task(&hub, &task_id)
    );
    // 5: completed.
    let mut agent = Agent::connect(&hub, "a1", &token);
    let a = agent.take(&task_id);
    generations.push(a["generation"].as_u64().expect("generation"));
    agent.complete(&a);

    let check = |hub: &Hub| {
        let (status, view) = hub.get(&format!("/api/tasks/{task_id}/attempts"));
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["task_id"], task_id.as_str(), "{view}");
        assert_eq!(view["status"], "completed", "{view}");
        assert_eq!(view["attempts_dropped"], 0, "{view}");
        let attempts = view["attempts"].as_array().expect("attempts").clone();
        assert_eq!(attempts.len(), 5, "{view}");
        let expected = [
            ("rejected", Some("not my kind"), None),
            ("failed", None, Some("boom")),
            ("blocked", Some("stuck"), None),
            ("reclaimed", Some("disconnect"), None),
            ("completed", None, None),
        ];
        for (i, (a, (outcome, cause, error))) in attempts.iter().zip(expected).enumerate() {
            assert_eq!(a["attempt"], i as u64 + 1, "{a}");
            assert_eq!(a["agent_id"], "a1", "{a}");
            assert_eq!(a["generation"], generations[i], "{a}");
            assert_eq!(a["outcome"], outcome, "{a}");
            assert_eq!(a["cause"].as_str(), cause, "{a}");
            assert_eq!(a["error"].as_str(), error, "{a}");
            let assigned = a["assigned_at"].as_u64().expect("assigned_at");
            let finished = a["finished_at"].as_u64().expect("finished_at");
            assert!(finished >= assigned, "{a}");
            if i == 0 {
                assert_eq!(a["accepted_at"], Value::Null, "never accepted: {a}");
            } else {
                let accepted = a["accepted_at"].as_u64().expect("accepted_at");
                assert!(assigned <= accepted && accepted <= finished, "{a}");
            }
        }
    };
    check(&hub);
    hub.restart();
    check(&hub);
    let (status, body) = hub.get("/api/tasks/task-00000000deadbeef/attempts");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "task_not_found", "{body}");
}
