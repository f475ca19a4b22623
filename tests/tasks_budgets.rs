//! Budgets (#20, ext, PROTOCOL.md 6.28): spend reported with `task_progress`
//! and `task_complete` counts toward the task, the day's ledger (agent,
//! credential group, capability), `/api/spend`, `/api/metrics` and
//! Prometheus; a task over its own budget, or whose agent or group is over
//! the day's, is paused (its holder gets `task_paused` and keeps it) and
//! resumes when the budget is raised.

mod common;

use common::*;
use serde_json::{json, Value};

fn progress(agent: &mut Agent, assign: &Value, tokens: u64, usd: f64) {
    agent.send(
        json!({"type": "task_progress", "task_id": assign["task_id"],
                      "generation": assign["generation"], "progress": 10,
                      "tokens_used": tokens, "cost_usd": usd}),
    );
}

#[test]
fn a_task_over_its_budget_is_paused_and_resumes_after_a_raise() {
    let hub = Hub::start();
    let token = register_agent(&hub, "w", &["code"]);
    let mut agent = Agent::connect_with_caps(&hub, "w", &token, &["code"]);
    let (status, body) = hub.post("/api/tasks", &json!({"description": "x", "budget_usd": -1}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "budget_usd", "{body}");
    let task = submit(
        &hub,
        json!({"description": "refactor", "needed_capabilities": ["code"],
               "budget_tokens": 1000}),
    );
    let assign = agent.take(&task);
    assert_eq!(assign["budget_tokens"], 1000, "{assign}");
    progress(&mut agent, &assign, 400, 0.04);
    progress(&mut agent, &assign, 1200, 0.12);
    let paused = agent.recv_type("task_paused", PUSH_TIMEOUT);
    assert_eq!(paused["reason"], "budget_exceeded", "{paused}");
    assert_eq!(
        (
            paused["spent"]["tokens"].clone(),
            paused["budget"]["tokens"].clone()
        ),
        (json!(1200), json!(1000)),
        "{paused}"
    );
    // A late report while paused still counts, and pauses nothing twice.
    progress(&mut agent, &assign, 1250, 0.125);
    agent.expect_no_type("error", std::time::Duration::from_millis(300));
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "input_required", "{t}");
    assert_eq!(t["assigned_to"], "w", "paused, not taken away: {t}");
    assert_eq!(t["spent"]["tokens"], 1250, "{t}");
    assert_eq!(t["question"]["budget"]["scope"], "task", "{t}");
    let (_, listed) = hub.get("/api/questions");
    assert_eq!(listed["questions"][0]["kind"], "budget", "{listed}");
    // Answering is not raising.
    let (status, _) = hub.post(
        &format!("/api/tasks/{task}/answer"),
        &json!({"answer": "resume"}),
    );
    assert_eq!(status, 409);
    // A raise still below the spend keeps it paused.
    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/budget"),
        &json!({"budget_tokens": 1100}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(get_task(&hub, &task)["status"], "input_required");
    let (status, _) = hub.post(&format!("/api/tasks/{task}/budget"), &json!({}));
    assert_eq!(status, 422, "nothing to set");
    let (status, _) = hub.post_as(
        &format!("/api/tasks/{task}/budget"),
        Some(&token),
        &json!({"budget_tokens": 5000}),
    );
    assert_eq!(status, 403, "an agent may not raise budgets");
    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/budget"),
        &json!({"budget_tokens": 5000}),
    );
    assert_eq!(status, 200, "{body}");
    let resumed = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (resumed["kind"].clone(), resumed["answer"].clone()),
        (json!("budget"), json!("resume")),
        "{resumed}"
    );
    assert_eq!(get_task(&hub, &task)["status"], "assigned");
    agent.send(json!({"type": "task_complete", "task_id": task,
                      "generation": assign["generation"], "result": {},
                      "tokens_used": 1500, "cost_usd": 0.15}));
    assert_eq!(agent.recv_ack(&task, PUSH_TIMEOUT)["status"], "complete");
    let t = get_task(&hub, &task);
    assert_eq!(t["spent"]["tokens"], 1500, "{t}");
    let (_, spend) = hub.get("/api/spend");
    assert_eq!(spend["today"]["agents"]["w"]["tokens"], 1500, "{spend}");
    assert_eq!(
        spend["today"]["capabilities"]["code"]["tokens"], 1500,
        "{spend}"
    );
    assert!(
        (spend["today"]["total"]["cost_usd"].as_f64().unwrap_or(0.0) - 0.15).abs() < 1e-9,
        "{spend}"
    );
    let (_, events) = hub.get(&format!("/api/events?task_id={task}&kind=budget_exceeded"));
    assert_eq!(events["count"], 1, "{events}");
    let (_, events) = hub.get(&format!("/api/events?task_id={task}&kind=resumed"));
    assert_eq!(events["events"][0]["actor"], "admin", "{events}");
}

#[test]
fn daily_budgets_of_agents_and_groups_pause_their_tasks() {
    let mut hub = Hub::start_with_config("metrics_interval_ms = 200\n");
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "g1", "credential_group": "team"}),
    );
    let token = made["token"].as_str().unwrap_or_default().to_string();
    let mut agent = Agent::connect(&hub, "g1", &token);
    let (status, body) = hub.put(
        "/api/admin/budgets",
        &json!({"agents": {"g1": {"tokens": 0}}}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = hub.put_as("/api/admin/budgets", Some(&token), &json!({"agents": {}}));
    assert_eq!(status, 403);
    let (status, body) = hub.put(
        "/api/admin/budgets",
        &json!({"agents": {"g1": {"tokens": 100}}, "groups": {"team": {"usd": 1.0}}}),
    );
    assert_eq!(status, 200, "{body}");

    let task = submit(&hub, json!({"description": "daily"}));
    let assign = agent.take(&task);
    progress(&mut agent, &assign, 150, 0.5);
    let paused = agent.recv_type("task_paused", PUSH_TIMEOUT);
    assert_eq!(paused["task_id"], task.as_str());
    let t = get_task(&hub, &task);
    assert_eq!(t["question"]["budget"]["scope"], "agent:g1", "{t}");
    // The day's budget raised: it goes on; then the group's dollars run out.
    hub.put(
        "/api/admin/budgets",
        &json!({"agents": {"g1": {"tokens": 10000}}, "groups": {"team": {"usd": 1.0}}}),
    );
    let resumed = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(resumed["answer"], "resume", "{resumed}");
    progress(&mut agent, &assign, 300, 1.5);
    agent.recv_type("task_paused", PUSH_TIMEOUT);
    assert_eq!(
        get_task(&hub, &task)["question"]["budget"]["scope"],
        "group:team"
    );
    let (_, spend) = hub.get("/api/spend");
    assert_eq!(spend["today"]["groups"]["team"]["tokens"], 300, "{spend}");
    assert_eq!(spend["budgets"]["groups"]["team"]["usd"], 1.0, "{spend}");
    // In the metrics and Prometheus.
    let in_metrics = wait_for(SOON, || {
        hub.get("/api/metrics").1["spend"]["today"]["agents"]["g1"]["tokens"] == 300
    });
    assert!(in_metrics, "{}", hub.get("/api/metrics").1);
    let text = ureq::get(&hub.url("/metrics"))
        .set("Authorization", &format!("Bearer {}", hub.admin_token))
        .call()
        .map(|r| r.into_string().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        text.contains("agentcom_spend_tokens_today{agent=\"g1\"} 300"),
        "{text}"
    );
    assert!(
        text.contains("agentcom_spend_usd_today{group=\"team\"} 1.5"),
        "{text}"
    );
    // The day's spend and the budgets survive a restart (the ledger is
    // written at most every 250 ms and at the stop; the task's own spend with
    // each report).
    drop(agent);
    hub.restart();
    let (_, spend) = hub.get("/api/spend");
    assert_eq!(spend["today"]["agents"]["g1"]["tokens"], 300, "{spend}");
    assert_eq!(spend["today"]["groups"]["team"]["cost_usd"], 1.5, "{spend}");
    assert_eq!(spend["budgets"]["agents"]["g1"]["tokens"], 10000, "{spend}");
    assert_eq!(spend["today"]["total"]["tokens"], 300, "{spend}");
}

#[test]
fn a_new_utc_day_resumes_the_tasks_paused_for_the_days_budget() {
    // The hub's calendar at 23:59 UTC on day D; the sweep looks every 100 ms.
    const DAY: i64 = 86_400_000;
    let d: i64 = 20_500;
    let clock = HubClock::new(d * DAY + DAY - 60_000);
    let hub = Hub::start_with_config(&format!("{}sweep_interval_ms = 100\n", clock.config()));
    let token = register_agent(&hub, "g1", &[]);
    let mut agent = Agent::connect(&hub, "g1", &token);
    let (status, body) = hub.put(
        "/api/admin/budgets",
        &json!({"agents": {"g1": {"tokens": 100}}}),
    );
    assert_eq!(status, 200, "{body}");
    let task = submit(&hub, json!({"description": "overnight"}));
    let assign = agent.take(&task);
    progress(&mut agent, &assign, 150, 0.0);
    agent.recv_type("task_paused", PUSH_TIMEOUT);
    let (_, spend) = hub.get("/api/spend");
    let day_d = spend["date"].clone();
    assert_eq!(spend["today"]["agents"]["g1"]["tokens"], 150, "{spend}");

    // Midnight: the day's holds are looked at again, and this one is over.
    clock.set((d + 1) * DAY + 1_000);
    let resumed = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(resumed["task_id"], task.as_str(), "{resumed}");
    assert_eq!(resumed["answer"], "resume", "{resumed}");
    let (_, spend) = hub.get("/api/spend");
    assert_ne!(spend["date"], day_d, "{spend}");
    assert_eq!(spend["today"]["total"]["tokens"], 0, "{spend}");
    // Day D is kept among the days, with what it spent.
    let kept = spend["days"]
        .as_array()
        .and_then(|days| days.iter().find(|x| x["date"] == day_d).cloned());
    assert_eq!(
        kept.map(|x| x["spent"]["tokens"].clone()),
        Some(json!(150)),
        "{spend}"
    );
    let t = get_task(&hub, &task);
    assert_eq!(t["question"]["answer"], "resume", "{t}");
    assert_eq!(
        events_named(&t, "resumed"),
        1,
        "resumed by the new day: {t}"
    );

    // The new day counts from zero: 50 more is within it, 60 after that is not.
    progress(&mut agent, &assign, 200, 0.0);
    let counted = wait_for(SOON, || {
        hub.get("/api/spend").1["today"]["agents"]["g1"]["tokens"] == 50
    });
    assert!(counted, "{}", hub.get("/api/spend").1);
    let t = get_task(&hub, &task);
    assert_eq!(events_named(&t, "budget_exceeded"), 1, "paused early: {t}");
    progress(&mut agent, &assign, 260, 0.0);
    agent.recv_type("task_paused", PUSH_TIMEOUT);
    let t = get_task(&hub, &task);
    assert_eq!(t["question"]["budget"]["scope"], "agent:g1", "{t}");
    assert_eq!(events_named(&t, "budget_exceeded"), 2, "{t}");
}

/// How many of a task's history events are called `name`.
fn events_named(task: &Value, name: &str) -> usize {
    task["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|e| e["event"] == name).count())
}
