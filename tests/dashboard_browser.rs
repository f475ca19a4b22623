//! The dashboard in a real browser: Debian's headless Chromium driven by
//! playwright-core (`tests/browser/dashboard.mjs`), against a real hub process
//! with a real agent on a WebSocket.
//!
//! The scenario runs in node; this side owns the hub and the agent and does what
//! the scenario asks at each `WAIT` (see the script's header), checking the hub's
//! own view as it goes. Needs `chromium` (apt) and `npm ci --prefix tests/browser`;
//! `.ci/run` installs both. Without them the test fails and says how to install.

mod common;

use std::path::{Path, PathBuf};

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const AGENT_ID: &str = "browser-agent";
/// Bounds the whole scenario (a hang, not a speed measurement).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn prerequisites() {
    browser_prerequisites(&browser_dir());
}

/// Waits for the agent's next `task_assign` and returns (task_id, generation).
fn next_assignment(agent: &mut Agent) -> (String, Value) {
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    (
        assign["task_id"].as_str().unwrap_or_default().to_string(),
        assign["generation"].clone(),
    )
}

/// The next assignment must be `expected`: it is accepted (its generation
/// answered).
fn accept_next(agent: &mut Agent, expected: &str) -> Result<Value, String> {
    let (task_id, generation) = next_assignment(agent);
    if task_id != expected {
        return Err(format!("assigned {task_id}, expected {expected}"));
    }
    agent.accept(expected, generation.clone());
    Ok(generation)
}

/// Completes `task_id` at `generation` and waits for the hub's ack.
fn complete_at(agent: &mut Agent, task_id: &str, generation: Value) {
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": generation, "result": {}}));
    agent.recv_ack(task_id, REPLY_TIMEOUT);
}

struct Side {
    hub: Hub,
    agent_token: String,
    agent: Option<Agent>,
    /// An agent with two slots and the tasks it holds (task id, generation).
    wide: Option<(Agent, Vec<(String, Value)>)>,
}

impl Side {
    /// Does one step the scenario asked for; `Ok(answer)` or `Err(why)`.
    fn step(&mut self, step: &str, arg: &str) -> Result<String, String> {
        let hub = &mut self.hub;
        match step {
            "alert_acknowledged" => {
                let (status, alerts) = hub.get("/api/alerts");
                let acked = alerts["active"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["rule_id"] == arg && x["acknowledged"] == true)
                });
                if status == 200 && acked {
                    Ok(String::new())
                } else {
                    Err(format!(
                        "the hub does not show {arg} acknowledged: {alerts}"
                    ))
                }
            }
            "task_submitted_from_page" => {
                let tasks = list_all_tasks(hub, "status=queued", 100);
                let found: Vec<&Value> = tasks
                    .iter()
                    .filter(|t| t["description"] == "Write the release notes for 1.2")
                    .collect();
                match found.as_slice() {
                    [t] if t["priority"] == 1
                        && t["submitted_by"] == "admin"
                        && t["repo"] == "docs"
                        && t["write_paths"] == json!(["CHANGELOG.md", "docs/release/**"])
                        && t["concurrency_key"] == "releases" =>
                    {
                        Ok(t["id"].as_str().unwrap_or_default().to_string())
                    }
                    other => Err(format!("expected one queued task from the page: {other:?}")),
                }
            }
            "agent_connect_and_take" => {
                let mut agent = Agent::connect(hub, AGENT_ID, &self.agent_token);
                let (task_id, _) = next_assignment(&mut agent);
                self.agent = Some(agent);
                if task_id == arg {
                    Ok(String::new())
                } else {
                    Err(format!("assigned {task_id}, expected {arg}"))
                }
            }
            "agent_progress" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let task = get_task(hub, arg);
                let generation = task["generation"].clone();
                agent.accept(arg, generation.clone());
                agent.send(json!({
                    "type": "task_progress", "task_id": arg, "generation": generation,
                    "progress": 60, "message": "running the tests",
                }));
                let ok = wait_for(REPLY_TIMEOUT, || {
                    get_task(hub, arg)["progress"]["percent"] == 60
                });
                ok.then(String::new).ok_or(format!(
                    "the hub did not keep the progress: {}",
                    get_task(hub, arg)
                ))
            }
            "agent_complete" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let task = get_task(hub, arg);
                let generation = task["generation"].clone();
                agent.accept(arg, generation.clone());
                agent.send(json!({
                    "type": "task_complete", "task_id": arg, "generation": generation,
                    "result": {"pr_url": "https://example.invalid/pr/12", "summary": "done"},
                    "tokens_used": 1234,
                }));
                let ack = agent.recv_ack(arg, REPLY_TIMEOUT);
                (ack["status"] == "complete")
                    .then(String::new)
                    .ok_or(format!("complete not acknowledged: {ack}"))
            }
            "dead_letter_task" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let id = submit(
                    hub,
                    json!({"description": "Flaky migration", "max_retries": 0}),
                );
                let (task_id, generation) = next_assignment(agent);
                if task_id != id {
                    return Err(format!("assigned {task_id}, expected {id}"));
                }
                agent.send(json!({"type": "task_failed", "task_id": id, "generation": generation, "error": "migration lock timeout"}));
                agent.recv_ack(&id, REPLY_TIMEOUT);
                let task = get_task(hub, &id);
                (task["status"] == "dead_letter")
                    .then(|| id.clone())
                    .ok_or(format!("expected dead_letter: {task}"))
            }
            "retried_task_runs_again" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let (task_id, generation) = next_assignment(agent);
                if task_id != arg {
                    return Err(format!("assigned {task_id}, expected {arg}"));
                }
                agent.accept(arg, generation.clone());
                agent.send(json!({"type": "task_complete", "task_id": arg, "generation": generation, "result": {}}));
                agent.recv_ack(arg, REPLY_TIMEOUT);
                let task = get_task(hub, arg);
                let events = history_events(&task);
                (task["status"] == "completed"
                    && events.iter().any(|e| e == "retried_from_dead_letter"))
                .then(String::new)
                .ok_or(format!("expected a retried, completed task: {task}"))
            }
            "scoped_pair" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let holder = submit(
                    hub,
                    json!({"description": "Rework the API", "repo": "web", "write_paths": ["src/api/**"]}),
                );
                let (task_id, generation) = next_assignment(agent);
                if task_id != holder {
                    return Err(format!("assigned {task_id}, expected {holder}"));
                }
                agent.accept(&holder, generation);
                let waiter = submit(
                    hub,
                    json!({"description": "Fix one handler", "repo": "web",
                           "write_paths": ["src/api/handlers.rs"]}),
                );
                let w = get_task(hub, &waiter);
                (w["waiting_on_scope"]["task_id"] == holder.as_str())
                    .then(|| format!("{holder} {waiter}"))
                    .ok_or(format!("expected the waiter to wait for {holder}: {w}"))
            }
            "scoped_pair_runs" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let (holder, waiter) = arg.split_once(' ').ok_or("two ids")?;
                let generation = get_task(hub, holder)["generation"].clone();
                complete_at(agent, holder, generation);
                let generation = accept_next(agent, waiter)?;
                complete_at(agent, waiter, generation);
                Ok(String::new())
            }
            "reserved_paths" => {
                let (status, made) = hub.post(
                    "/api/reservations",
                    &json!({"repo": "web", "paths": ["infra/**"], "holder": "release-freeze"}),
                );
                if status != 201 {
                    return Err(format!("reservation refused: {made}"));
                }
                let id = made["reservation"]["reservation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let waiter = submit(
                    hub,
                    json!({"description": "Bump terraform", "repo": "web",
                           "write_paths": ["infra/main.tf"]}),
                );
                let w = get_task(hub, &waiter);
                (w["waiting_on_scope"]["reservation_id"] == id.as_str())
                    .then(|| format!("{id} {waiter}"))
                    .ok_or(format!("expected the task to wait for {id}: {w}"))
            }
            "keyed_task_running" => {
                let (status, set) = hub.put("/api/admin/concurrency/nightly", &json!({"limit": 1}));
                if status != 200 {
                    return Err(format!("limit refused: {set}"));
                }
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let id = submit(
                    hub,
                    json!({"description": "Nightly build", "concurrency_key": "nightly"}),
                );
                accept_next(agent, &id)?;
                Ok(id)
            }
            "usage_limited" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let until = now_ms() + 3_600_000;
                agent.send(json!({"type": "usage_limited", "resets_at": until}));
                let reply = agent.recv_type("usage_paused", REPLY_TIMEOUT);
                (reply["type"] == "usage_paused")
                    .then(|| {
                        reply["credential_group"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .ok_or(format!("not paused: {reply}"))
            }
            "slotted_agent_busy" => {
                let (status, body) =
                    hub.post("/admin/tokens", &json!({"agent_id": "wide", "slots": 2}));
                let token = body["token"].as_str().ok_or(format!("{status} {body}"))?;
                let mut wide = Agent::connect(hub, "wide", token);
                let mut held = Vec::new();
                for i in 0..2 {
                    let id =
                        hub.submit_for("wide", json!({"description": format!("wide job {i}")}));
                    held.push((id, Value::Null));
                }
                for (id, generation) in held.iter_mut() {
                    *generation = accept_next(&mut wide, id)?;
                }
                let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
                self.wide = Some((wide, held));
                Ok(ids.join(","))
            }
            "slotted_agent_done" => {
                let (mut wide, held) = self.wide.take().ok_or("no slotted agent")?;
                for (id, generation) in held {
                    complete_at(&mut wide, &id, generation);
                }
                wide.close();
                Ok(String::new())
            }
            "agent_asks" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let id = hub.submit_for(AGENT_ID, json!({"description": "Needs a decision"}));
                let generation = accept_next(agent, &id)?;
                let mut frame = json!({"type": "task_input_required", "task_id": id,
                                       "generation": generation,
                                       "question": "Which region should it deploy to?"});
                if arg == "options" {
                    frame["options"] = json!(["eu", "us"]);
                }
                agent.send(frame);
                let ack = agent.recv_ack(&id, REPLY_TIMEOUT);
                (ack["status"] == "input_required")
                    .then_some(id)
                    .ok_or(format!("not asked: {ack}"))
            }
            "agent_completes_for_review" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let id = hub.submit_for(
                    AGENT_ID,
                    json!({"description": "Rename the billing module",
                           "approval": "before_complete"}),
                );
                let generation = accept_next(agent, &id)?;
                agent.send(json!({"type": "task_complete", "task_id": id,
                                  "generation": generation,
                                  "result": {"summary": "Renamed billing to invoicing",
                                             "pr_url": "https://example.test/acme/pull/5"}}));
                let ack = agent.recv_ack(&id, REPLY_TIMEOUT);
                (ack["status"] == "input_required")
                    .then_some(id)
                    .ok_or(format!("not held: {ack}"))
            }
            "review_rejected" => {
                let (id, reason) = arg.split_once(':').ok_or("task:reason")?;
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
                if pushed["task_id"] != id
                    || pushed["answer"] != "reject"
                    || pushed["note"] != reason
                {
                    return Err(format!("the agent got {pushed}"));
                }
                // Reworked and completed again: a new approval.
                agent.send(json!({"type": "task_complete", "task_id": id,
                                  "generation": pushed["generation"],
                                  "result": {"summary": "Renamed, with tests",
                                             "pr_url": "https://example.test/acme/pull/5"}}));
                let ack = agent.recv_ack(id, REPLY_TIMEOUT);
                (ack["status"] == "input_required")
                    .then(String::new)
                    .ok_or(format!("not held again: {ack}"))
            }
            "agent_over_budget" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let id = hub.submit_for(
                    AGENT_ID,
                    json!({"description": "Bounded work", "budget_tokens": 1000}),
                );
                let generation = accept_next(agent, &id)?;
                agent.send(json!({"type": "task_progress", "task_id": id,
                                  "generation": generation, "tokens_used": 1500,
                                  "cost_usd": 0.25}));
                let paused = agent.recv_type("task_paused", PUSH_TIMEOUT);
                (paused["task_id"] == id.as_str())
                    .then_some(id)
                    .ok_or(format!("not paused: {paused}"))
            }
            "agent_resumed" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
                if pushed["kind"] != "budget" || pushed["answer"] != "resume" {
                    return Err(format!("the agent got {pushed}"));
                }
                let t = get_task(hub, arg);
                if t["budget_tokens"] != 5000 {
                    return Err(format!("budget not raised: {t}"));
                }
                complete_at(agent, arg, pushed["generation"].clone());
                Ok(String::new())
            }
            "topic_events_published" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let n: u64 = arg.parse().map_err(|_| "a count")?;
                let (_, before) = hub.get("/api/topics/pr_opened/events?newest=true&limit=1");
                let start = before["events"][0]["payload"]["pr"]
                    .as_u64()
                    .map_or(0, |p| p + 1);
                for pr in start..start + n {
                    agent.send(json!({"type": "event_publish", "topic": "pr_opened",
                                      "payload": {"pr": pr}}));
                    let reply = agent.recv_type("event_published", REPLY_TIMEOUT);
                    if reply["event"]["payload"]["pr"] != pr {
                        return Err(format!("not published: {reply}"));
                    }
                }
                Ok(String::new())
            }
            "subscription_made" => {
                let (status, sub) = hub.post(
                    "/api/subscriptions",
                    &json!({"topic": "pr_opened",
                           "task": {"description": "Review PR {{payload.pr}}",
                                    "needed_capabilities": ["nobody"]}}),
                );
                (status == 201)
                    .then(|| sub["id"].as_str().unwrap_or_default().to_string())
                    .ok_or(format!("not subscribed: {sub}"))
            }
            "fan_in_parts" => {
                let mut ids = Vec::new();
                for part in 0..2 {
                    let (status, made) = hub.post(
                        "/api/tasks",
                        &json!({"description": format!("part {part}"), "correlation_id": "batch-fan",
                                "needed_capabilities": ["nobody-has-this"]}),
                    );
                    if status != 201 {
                        return Err(format!("part not made: {made}"));
                    }
                    ids.push(made["task_id"].as_str().unwrap_or_default().to_string());
                }
                Ok(ids.join(","))
            }
            "fan_in_submitted" => {
                let (_, page) = hub.get("/api/tasks?limit=1000");
                let task = page["tasks"].as_array().and_then(|t| {
                    t.iter()
                        .find(|t| t["description"] == "Summarize the parts")
                        .cloned()
                });
                let Some(t) = task else {
                    return Err("no fan-in task".into());
                };
                let deps = t["depends_on"].as_array().map_or(0, Vec::len);
                let (dep, _) = arg.split_once(',').unwrap_or((arg, ""));
                (deps == 3
                    && t["inputs_from"] == json!([dep])
                    && t["notify"] == "event"
                    && t["depends_on_correlation"] == "batch-fan")
                    .then(|| t["id"].as_str().unwrap_or_default().to_string())
                    .ok_or(format!("not as submitted: {t}"))
            }
            "nothing_submitted" => {
                let (_, page) = hub.get("/api/tasks?limit=1000");
                let made = page["tasks"]
                    .as_array()
                    .map_or(0, |t| t.iter().filter(|t| t["description"] == arg).count());
                (made == 0)
                    .then(String::new)
                    .ok_or(format!("a refused form made {made} task(s)"))
            }
            "more_options_submitted" => {
                let (_, page) = hub.get("/api/tasks?limit=1000");
                let task = page["tasks"].as_array().and_then(|t| {
                    t.iter()
                        .find(|t| t["description"] == "Nightly report")
                        .cloned()
                });
                let Some(t) = task else {
                    return Err("no task from More options".into());
                };
                // The page's local time, to the second it was typed with.
                let typed: i64 = arg.parse().map_err(|_| format!("bad time {arg}"))?;
                let run_after = t["run_after"].as_i64().unwrap_or_default();
                (t["stall_ms"] == 60_000
                    && t["max_runtime_ms"] == 600_000
                    && t["correlation_id"] == "nightly"
                    && t["dedupe_key"] == "nightly-1"
                    && t["context_keys"] == json!(["project.style", "project.owners"])
                    && t["metadata"]["ticket"] == "OPS-12"
                    && (typed - run_after).abs() < 1_000
                    && t["lease_ms"] == 120_000
                    && t["max_reclaims"] == 2
                    && t["blocked_policy"] == "wait"
                    && (t["complete_by"].as_i64().unwrap_or_default() - run_after - 3_600_000)
                        .abs()
                        < 1_000)
                    .then(|| t["id"].as_str().unwrap_or_default().to_string())
                    .ok_or(format!("not as submitted: {t}"))
            }
            "context_seeded" => {
                let (status, made) = hub.put(
                    "/api/context/project.conventions",
                    &json!({"text": "rust 2021", "if_version": 0}),
                );
                (status == 201)
                    .then(String::new)
                    .ok_or(format!("not written: {made}"))
            }
            "context_changed_elsewhere" => {
                let (status, made) = hub.put(
                    "/api/context/project.conventions",
                    &json!({"text": "edition 2027", "if_version": 2}),
                );
                (status == 200)
                    .then(String::new)
                    .ok_or(format!("the page's version 2 is not there: {made}"))
            }
            "context_checked" => {
                let (_, now) = hub.get("/api/context/project.conventions");
                (now["version"] == 3 && now["text"] == "edition 2027")
                    .then(String::new)
                    .ok_or(format!("the stale edit changed something: {now}"))
            }
            "subscription_gone" => {
                let (_, subs) = hub.get("/api/subscriptions");
                (subs["count"] == 0)
                    .then(String::new)
                    .ok_or(format!("still there: {subs}"))
            }
            "policies_saved" => {
                let (_, rules) = hub.get("/api/admin/approval-rules");
                let (_, spend) = hub.get("/api/spend");
                (rules["rules"][0]["paths"] == json!(["infra/**"])
                    && spend["budgets"]["agents"][AGENT_ID]["tokens"] == 900000)
                    .then(String::new)
                    .ok_or(format!("not saved: {rules} {spend}"))
            }
            "gated_task_submitted" => {
                let (_, waiting) = hub.get("/api/questions");
                let gated = waiting["questions"].as_array().and_then(|q| {
                    q.iter().find(|q| {
                        q["description"] == "Rotate the database credentials"
                            && q["question"]["approval"]["stage"] == "before_start"
                    })
                });
                gated
                    .and_then(|q| q["task_id"].as_str())
                    .map(str::to_string)
                    .ok_or(format!(
                        "no task waiting for approval before start: {waiting}"
                    ))
            }
            "gated_task_queued" => {
                let (_, events) = hub.get(&format!("/api/events?task_id={arg}&kind=approved"));
                if events["events"][0]["actor"] != "admin" {
                    return Err(format!("not approved: {events}"));
                }
                // Approved: queued, and our agent takes it.
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let generation = accept_next(agent, arg)?;
                complete_at(agent, arg, generation);
                Ok(String::new())
            }
            "review_approved" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
                let t = get_task(hub, arg);
                (pushed["answer"] == "approve"
                    && t["status"] == "completed"
                    && t["result"]["summary"] == "Renamed, with tests")
                    .then(String::new)
                    .ok_or(format!("not completed by the approval: {pushed} {t}"))
            }
            "question_answered" => {
                let (id, expected) = arg.split_once(':').ok_or("task:answer")?;
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
                if pushed["task_id"] != id || pushed["answer"] != expected {
                    return Err(format!("the agent got {pushed}"));
                }
                complete_at(agent, id, pushed["generation"].clone());
                Ok(String::new())
            }
            "queued_for_nobody" => Ok(submit(
                hub,
                json!({"description": "Waits for an agent nobody runs",
                       "needed_capabilities": ["nobody"]}),
            )),
            "usage_resumed" => {
                let (_, usage) = hub.get("/api/usage");
                let (_, events) = hub.get("/api/events?kind=usage_resumed");
                (usage["paused"] == json!([]) && events["events"][0]["actor"] == "admin")
                    .then(String::new)
                    .ok_or(format!("still paused: {usage} {events}"))
            }
            "keyed_task_done" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                complete_at(agent, arg, get_task(hub, arg)["generation"].clone());
                Ok(String::new())
            }
            "released_task_runs" => {
                let agent = self.agent.as_mut().ok_or("no agent")?;
                let generation = accept_next(agent, arg)?;
                complete_at(agent, arg, generation);
                Ok(String::new())
            }
            "backup_taken" => {
                let (status, health) = hub.get("/api/admin/storage-health");
                let on_demand = health["backup"]["last_since_start"]["trigger"] == "on_demand";
                (status == 200 && on_demand)
                    .then(String::new)
                    .ok_or(format!("no on-demand backup in storage health: {health}"))
            }
            "stop_hub" => {
                if let Some(agent) = self.agent.take() {
                    agent.close();
                }
                hub.stop();
                Ok(String::new())
            }
            "start_hub" => {
                hub.start_again_on_same_port();
                Ok(String::new())
            }
            other => Err(format!("unknown step {other}")),
        }
    }
}

#[test]
fn operator_watches_and_steers_the_fleet_from_the_dashboard() {
    prerequisites();
    let hub = Hub::start_with_config(
        "metrics_interval_ms = 500\nalert_check_interval_ms = 200\nalert_startup_grace_ms = 0\n",
    );
    let agent_token = register_agent(&hub, AGENT_ID, &[]);
    let (status, eye) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "night-watch", "role": "observer"}),
    );
    assert_eq!(status, 201, "{eye}");
    let observer_token = eye["token"].as_str().unwrap_or_default().to_string();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-artifacts");
    let mut side = Side {
        hub,
        agent_token: agent_token.clone(),
        agent: None,
        wide: None,
    };
    let env = [
        ("HUB_URL", side.hub.url("")),
        ("ADMIN_TOKEN", side.hub.admin_token.clone()),
        ("AGENT_TOKEN", agent_token),
        ("OBSERVER_TOKEN", observer_token),
        ("AGENT_ID", AGENT_ID.to_string()),
        ("ARTIFACT_DIR", artifacts.display().to_string()),
    ];
    let scenario = run_browser_scenario(
        &browser_dir().join("dashboard.mjs"),
        &env,
        SCENARIO_TIMEOUT,
        |step, arg| side.step(step, arg),
    );
    let shots = &scenario.screenshots;
    for shot in shots {
        println!("dashboard screenshot: {}", shot.display());
        assert!(
            std::fs::metadata(shot).is_ok_and(|m| m.len() > 10_000),
            "screenshot {} missing or empty",
            shot.display()
        );
    }
    scenario.assert_passed();
    assert_eq!(shots.len(), 2, "the desktop and phone screenshots");
}

#[test]
fn the_dashboard_moves_to_the_hub_that_takes_over() {
    if !on_postgres() {
        eprintln!("skipped on sled: failover needs the Postgres backend");
        return;
    }
    prerequisites();
    // Both hubs' URLs are in their config before they start.
    let (port_a, port_b) = (free_port(), free_port());
    let urls =
        format!("hub_urls = [\"http://127.0.0.1:{port_a}\", \"http://127.0.0.1:{port_b}\"]\n");
    let mut active = Hub::start_on_port(&urls, port_a);
    let mut standby = active.standby_on_port(port_b);
    let env = [
        ("HUB_A", active.url("")),
        ("HUB_B", standby.url("")),
        ("ADMIN_TOKEN", active.admin_token.clone()),
    ];
    let scenario = run_browser_scenario(
        &browser_dir().join("failover.mjs"),
        &env,
        SCENARIO_TIMEOUT,
        |step, _| match step {
            "kill_active" => {
                active.kill9();
                standby.wait_serving();
                Ok(String::new())
            }
            other => Err(format!("unknown step {other}")),
        },
    );
    scenario.assert_passed();
}
