//! The operator's command line against a running hub: task controls, lane pause
//! and resume, agent drain, standing-order runs and the event log. Each command
//! acts through the hub, which records it with the admin as actor.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

fn ops(hub: &Hub, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(args)
        .env("AGENTCOM_HUB_URL", hub.url(""))
        .env("AGENTCOM_ADMIN_TOKEN", &hub.admin_token)
        .env_remove("AGENTCOM_DATA_DIR")
        .output()
        .expect("run agentcom-hub")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn actors_of(hub: &Hub, kind: &str) -> Vec<String> {
    let (_, events) = hub.get(&format!("/api/events?kind={kind}"));
    events["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["actor"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn operator_commands_act_through_the_hub_and_are_logged() {
    let hub = Hub::start();
    register_agent(&hub, "worker", &[]);
    let low = submit(&hub, json!({"description": "tidy up", "priority": "low"}));
    let doomed = submit(&hub, json!({"description": "never mind"}));

    let raised = ok_json(&ops(&hub, &["task", "priority", &low, "urgent"]));
    assert_eq!(
        (
            raised["priority"].as_u64(),
            raised["previous_priority"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert_eq!(get_task(&hub, &low)["priority"], 0);

    let dead = ok_json(&ops(&hub, &["task", "dead-letter", &doomed]));
    assert_eq!(dead["previous_status"], "queued");
    let back = ok_json(&ops(&hub, &["task", "retry", &doomed]));
    assert_eq!(back["status"], "requeued");
    let cancelled = ok_json(&ops(&hub, &["task", "cancel", &doomed]));
    assert_eq!(cancelled["status"], "cancelled");
    let attempts = ok_json(&ops(&hub, &["task", "attempts", &doomed]));
    assert_eq!(attempts["attempts"], json!([]));
    let shown = ok_json(&ops(&hub, &["task", "show", &doomed]));
    assert_eq!(shown["id"], doomed.as_str(), "{shown}");
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert!(shown.get("progress").is_some(), "{shown}");

    let paused = ok_json(&ops(
        &hub,
        &["queue", "pause", "--lane", "low", "--lane", "1"],
    ));
    assert_eq!(paused["paused_lanes"], json!([1, 3]));
    assert_eq!(
        ok_json(&ops(&hub, &["queue", "lanes"]))["paused_lanes"],
        json!([1, 3])
    );
    let resumed = ok_json(&ops(&hub, &["queue", "resume"]));
    assert_eq!(resumed["paused_lanes"], json!([]));

    let drained = ok_json(&ops(&hub, &["agent", "drain", "worker"]));
    assert_eq!(drained["draining"], true);
    let undrained = ok_json(&ops(&hub, &["agent", "undrain", "worker"]));
    assert_eq!(undrained["draining"], false);

    for kind in [
        "priority_changed",
        "dead_letter",
        "retried_from_dead_letter",
        "cancelled",
        "lanes_paused",
        "lanes_resumed",
        "agent_drained",
        "agent_undrained",
    ] {
        assert_eq!(actors_of(&hub, kind), vec!["admin".to_string()], "{kind}");
    }
    let events = ok_json(&ops(&hub, &["events", "--task", &doomed, "--limit", "3"]));
    assert_eq!(events["count"], 3, "{events}");
    assert!(events["next_cursor"].as_u64().is_some(), "{events}");

    // Refusals come back as a failure with the hub's answer.
    let unknown = ops(&hub, &["agent", "disable", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("agent_not_found"));
    let bad = ops(&hub, &["task", "priority", &low, "whenever"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("422"));
    let no_token = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["queue", "lanes", "--hub", &hub.url("")])
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .output()
        .expect("run agentcom-hub");
    assert_eq!(no_token.status.code(), Some(2));
}

#[test]
fn standing_order_runs_are_listed_as_a_table() {
    let hub = Hub::start();
    let (status, body) = hub.post(
        "/api/standing-orders",
        &json!({"name": "weekly", "cron": "0 8 * * 1", "timezone": "Europe/Paris",
                "task": {"description": "weekly review"}}),
    );
    assert_eq!(status, 201, "{body}");
    let out = ops(&hub, &["standing-orders", "runs", "weekly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("scheduled_for"), "{text}");
    let listed = ok_json(&ops(&hub, &["standing-orders", "list"]));
    assert_eq!(listed["orders"][0]["name"], "weekly", "{listed}");
    let missing = ops(&hub, &["standing-orders", "runs", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("standing_order_not_found"));
}

#[test]
fn reservations_are_listed_made_renewed_and_released_from_the_command_line() {
    let hub = Hub::start();
    let worker = register_agent(&hub, "worker", &[]);
    let made = ok_json(&ops(
        &hub,
        &[
            "reservations",
            "reserve",
            "--repo",
            "web",
            "--path",
            "infra/**",
            "--path",
            "/Cargo.toml",
            "--ttl-ms",
            "60000",
        ],
    ));
    assert_eq!(made["status"], "granted", "{made}");
    assert_eq!(made["reservation"]["holder"], "admin");
    assert_eq!(
        made["reservation"]["paths"],
        json!(["infra/**", "/Cargo.toml"])
    );
    let id = made["reservation"]["reservation_id"]
        .as_str()
        .expect("id")
        .to_string();

    // An overlapping reservation: refused, exit 1, the holder named.
    let (status, body) = hub.post_as(
        "/api/reservations",
        Some(&worker),
        &json!({"repo": "web", "paths": ["infra/main.tf"]}),
    );
    assert_eq!(status, 409, "{body}");
    let clash = ops(
        &hub,
        &[
            "reservations",
            "reserve",
            "--repo",
            "web",
            "--path",
            "infra/x",
            "--shared",
        ],
    );
    assert_eq!(clash.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("scope_conflict") && stderr.contains(&id),
        "{stderr}"
    );

    let listed = ok_json(&ops(&hub, &["reservations", "list", "--repo", "web"]));
    assert_eq!(listed["reservations"][0]["reservation_id"], id.as_str());
    let none = ok_json(&ops(&hub, &["reservations", "list", "--repo", "cli"]));
    assert_eq!(none["reservations"], json!([]));
    let renewed = ok_json(&ops(
        &hub,
        &["reservations", "renew", &id, "--ttl-ms", "120000"],
    ));
    assert!(
        renewed["reservation"]["expires_at"].as_i64() > made["reservation"]["expires_at"].as_i64()
    );
    let released = ok_json(&ops(&hub, &["reservations", "release", &id]));
    assert_eq!(released["status"], "released");
    let again = ops(&hub, &["reservations", "release", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("reservation_not_found"));
    assert_eq!(actors_of(&hub, "scope_released"), ["admin"]);
}

#[test]
fn usage_pauses_are_listed_and_resumed_from_the_command_line() {
    let hub = Hub::start();
    let (status, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "w", "credential_group": "team"}),
    );
    assert_eq!(status, 201, "{made}");
    let mut w = Agent::connect(&hub, "w", made["token"].as_str().unwrap_or_default());
    let reply = request(
        &mut w,
        json!({"type": "usage_limited", "resets_at": now_ms() + 3_600_000}),
    );
    assert_eq!(reply["credential_group"], "team", "{reply}");
    let listed = ok_json(&ops(&hub, &["usage", "list"]));
    assert_eq!(listed["paused"][0]["credential_group"], "team", "{listed}");
    let resumed = ok_json(&ops(&hub, &["usage", "resume", "team"]));
    assert_eq!(resumed["status"], "resumed");
    let again = ops(&hub, &["usage", "resume", "team"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not_paused"));
    assert_eq!(actors_of(&hub, "usage_resumed"), ["admin"]);
}

#[test]
fn agent_states_show_slots_and_each_running_task_from_the_command_line() {
    let hub = Hub::start();
    let (status, made) = hub.post("/admin/tokens", &json!({"agent_id": "wide", "slots": 2}));
    assert_eq!(status, 201, "{made}");
    let mut wide = Agent::connect(&hub, "wide", made["token"].as_str().unwrap_or_default());
    let a = hub.submit_for("wide", json!({"description": "a"}));
    let b = hub.submit_for("wide", json!({"description": "b"}));
    for id in [&a, &b] {
        let assign = wide.recv_type("task_assign", PUSH_TIMEOUT);
        assert_eq!(assign["task_id"], id.as_str(), "{assign}");
        wide.accept(id, assign["generation"].clone());
    }
    let one = ok_json(&ops(&hub, &["agent", "states", "wide"]));
    assert_eq!(one["slots"], 2, "{one}");
    let running: Vec<&str> = one["running"]
        .as_array()
        .map(|r| r.iter().filter_map(|t| t["task_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(running, [a.as_str(), b.as_str()], "{one}");
    let all = ok_json(&ops(&hub, &["agent", "states"]));
    assert_eq!(all["agents"][0]["agent_id"], "wide", "{all}");
    let missing = ops(&hub, &["agent", "states", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn concurrency_limits_are_set_listed_and_removed_from_the_command_line() {
    let hub = Hub::start();
    let set = ok_json(&ops(&hub, &["concurrency", "set", "repo:web", "2"]));
    assert_eq!(
        (set["key"].clone(), set["limit"].clone()),
        (json!("repo:web"), json!(2))
    );
    let listed = ok_json(&ops(&hub, &["concurrency", "list"]));
    assert_eq!(
        listed["keys"],
        json!([{"key": "repo:web", "limit": 2, "running": 0}])
    );
    let bad = ops(&hub, &["concurrency", "set", "repo:web", "lots"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad limit is a command-line error"
    );
    let removed = ok_json(&ops(&hub, &["concurrency", "remove", "repo:web"]));
    assert_eq!(removed["previous_limit"], 2);
    assert_eq!(actors_of(&hub, "concurrency_limit_set"), ["admin"]);
    assert_eq!(actors_of(&hub, "concurrency_limit_removed"), ["admin"]);
}

#[test]
fn standing_orders_apply_from_a_file_is_idempotent_and_prunes_only_when_asked() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("orders.toml");
    let write = |text: &str| std::fs::write(&file, text).expect("write orders");
    let path = file.display().to_string();
    let names = |hub: &Hub| -> Vec<String> {
        let (_, list) = hub.get("/api/standing-orders");
        list["orders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some(o["name"].as_str()?.to_string()))
            .collect()
    };
    // An order made by hand, not in the file.
    let (status, _) = hub.post(
        "/api/standing-orders",
        &json!({"name": "by-hand", "cron": "0 0 * * *", "task": {"description": "manual"}}),
    );
    assert_eq!(status, 201);
    write(
        r#"
[[order]]
name = "inbox-sweep"
cron = "*/15 * * * *"
capability = "reports"
[order.task]
description = "Sweep the inbox"
priority = "high"

[[order]]
name = "nightly"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
window_ms = 3600000
[order.task]
description = "Nightly build"
"#,
    );
    let first = ops(&hub, &["standing-orders", "apply", "-f", &path]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("+ create inbox-sweep") && out.contains("+ create nightly"),
        "{out}"
    );
    assert!(out.contains("--prune deletes them"), "{out}");
    assert_eq!(names(&hub), ["by-hand", "inbox-sweep", "nightly"]);
    let (_, before) = hub.get("/api/standing-orders/nightly");
    // The same file again: nothing changes.
    let again = ops(&hub, &["standing-orders", "apply", "-f", &path]);
    assert!(again.status.success());
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(out.starts_with("no changes"), "{out}");
    let (_, after) = hub.get("/api/standing-orders/nightly");
    assert_eq!(
        before["updated_at"], after["updated_at"],
        "not even touched"
    );
    // One order changes, one goes: a dry run shows it and changes nothing.
    write(
        r#"
[[order]]
name = "nightly"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
window_ms = 3600000
[order.task]
description = "Nightly build"
"#,
    );
    let dry = ops(
        &hub,
        &[
            "standing-orders",
            "apply",
            "-f",
            &path,
            "--prune",
            "--dry-run",
        ],
    );
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        out.contains("~ update nightly: cron")
            && out.contains("- delete inbox-sweep")
            && out.contains("- delete by-hand"),
        "{out}"
    );
    assert_eq!(names(&hub).len(), 3, "a dry run changes nothing");
    let pruned = ops(&hub, &["standing-orders", "apply", "-f", &path, "--prune"]);
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert_eq!(names(&hub), ["nightly"]);
    assert_eq!(
        hub.get("/api/standing-orders/nightly").1["cron"],
        "0 3 * * *"
    );
    // A bad file changes nothing and says what is wrong (exit 2).
    for (text, says) in [
        ("[[order]]\nname = \"x\"\n", "cron is required"),
        ("[[order]]\nname = \"x\"\ncron = \"* * * * *\"\ncolor = 1\n[order.task]\n", "unknown key \"color\""),
        ("[[order]\nname", "orders.toml"),
        (
            "[[order]]\nname = \"n\"\ncron = \"* * * * *\"\n[order.task]\n[[order]]\nname = \"n\"\ncron = \"* * * * *\"\n[order.task]\n",
            "used twice",
        ),
    ] {
        write(text);
        let bad = ops(&hub, &["standing-orders", "apply", "-f", &path, "--prune"]);
        assert_eq!(bad.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(says), "{text}: {err}");
    }
    assert_eq!(names(&hub), ["nightly"]);
    // A schedule the hub refuses: exit 1 with the hub's answer.
    write("[[order]]\nname = \"odd\"\ncron = \"61 * * * *\"\n[order.task]\ndescription = \"d\"\n");
    let refused = ops(&hub, &["standing-orders", "apply", "-f", &path]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("odd"));
}

#[test]
fn questions_are_listed_and_answered_from_the_command_line() {
    let hub = Hub::start();
    let token = register_agent(&hub, "asker", &[]);
    let mut agent = Agent::connect(&hub, "asker", &token);
    let task = submit(&hub, json!({"description": "needs a decision"}));
    let assign = agent.take(&task);
    let ack = agent.ask(&assign, "Merge now?", json!({}));
    assert_eq!(ack["status"], "input_required", "{ack}");
    let listed = ok_json(&ops(&hub, &["task", "questions"]));
    assert_eq!(listed["questions"][0]["task_id"], task.as_str(), "{listed}");
    let answered = ok_json(&ops(&hub, &["task", "answer", &task, "yes, merge"]));
    assert_eq!(answered["status"], "answered", "{answered}");
    assert_eq!(
        agent.recv_type("task_answer", PUSH_TIMEOUT)["answer"],
        "yes, merge"
    );
    let again = ops(&hub, &["task", "answer", &task, "no"]);
    assert_eq!(again.status.code(), Some(1), "answered once");
}

#[test]
fn approvals_rules_and_budgets_from_the_command_line() {
    let hub = Hub::start();
    let token = register_agent(&hub, "dev", &[]);
    let mut agent = Agent::connect(&hub, "dev", &token);
    let dir = tempfile::tempdir().expect("temp dir");

    // Approval rules from a TOML file; a bad file changes nothing.
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"infra\"\npaths = [\"infra/**\"]\n",
    )
    .expect("rules");
    let set = ok_json(&ops(
        &hub,
        &["approval-rules", "set", "-f", &rules.display().to_string()],
    ));
    assert_eq!(set["rules"][0]["name"], "infra", "{set}");
    std::fs::write(&rules, "[[rules]]\nname = \"x\"\n").expect("rules");
    let bad = ops(
        &hub,
        &["approval-rules", "set", "-f", &rules.display().to_string()],
    );
    assert_eq!(bad.status.code(), Some(1));
    let shown = ok_json(&ops(&hub, &["approval-rules", "show"]));
    assert_eq!(shown["rules"][0]["name"], "infra", "{shown}");

    // A completion that touched infra/ waits; rejected, then approved.
    let task = submit(&hub, json!({"description": "terraform"}));
    let assign = agent.take(&task);
    let complete = |agent: &mut Agent| {
        agent.send(json!({"type": "task_complete", "task_id": task,
                          "generation": assign["generation"],
                          "result": {"changes": {"paths": ["infra/main.tf"]}}}));
        agent.recv_ack(&task, PUSH_TIMEOUT)
    };
    assert_eq!(complete(&mut agent)["status"], "input_required");
    let rejected = ok_json(&ops(
        &hub,
        &["task", "reject", &task, "--reason", "plan first"],
    ));
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(
        agent.recv_type("task_answer", PUSH_TIMEOUT)["note"],
        "plan first"
    );
    assert_eq!(complete(&mut agent)["status"], "input_required");
    let approved = ok_json(&ops(&hub, &["task", "approve", &task]));
    assert_eq!(approved["task"]["status"], "completed", "{approved}");

    // Budgets: a task's, raised from the command line; the daily table from a file.
    let task = submit(&hub, json!({"description": "bounded", "budget_usd": 0.5}));
    let assign = agent.take(&task);
    agent.send(json!({"type": "task_progress", "task_id": task,
                      "generation": assign["generation"], "cost_usd": 0.75}));
    agent.recv_type("task_paused", PUSH_TIMEOUT);
    let raised = ok_json(&ops(&hub, &["task", "budget", &task, "--usd", "2.5"]));
    assert_eq!(raised["task"]["status"], "assigned", "{raised}");
    let budgets = dir.path().join("budgets.toml");
    std::fs::write(
        &budgets,
        "[agents.dev]\ntokens = 50000\n[groups.team]\nusd = 20.0\n",
    )
    .expect("budgets");
    let set = ok_json(&ops(
        &hub,
        &["budgets", "set", "-f", &budgets.display().to_string()],
    ));
    assert_eq!(set["budgets"]["agents"]["dev"]["tokens"], 50000, "{set}");
    let shown = ok_json(&ops(&hub, &["budgets", "show"]));
    assert_eq!(shown["budgets"]["groups"]["team"]["usd"], 20.0, "{shown}");
    assert!(
        (shown["today"]["agents"]["dev"]["cost_usd"]
            .as_f64()
            .unwrap_or(0.0)
            - 0.75)
            .abs()
            < 1e-9,
        "{shown}"
    );
}

#[test]
fn topic_events_from_the_command_line() {
    let hub = Hub::start();
    let published = ok_json(&ops(
        &hub,
        &[
            "topics",
            "publish",
            "deploy:web",
            "--payload",
            r#"{"version": "1.2"}"#,
        ],
    ));
    assert_eq!(published["event"]["publisher"], "admin", "{published}");
    ok_json(&ops(
        &hub,
        &["topics", "publish", "deploy:web", "--payload", "2"],
    ));
    let listed = ok_json(&ops(&hub, &["topics", "list"]));
    assert_eq!(listed["topics"][0]["count"], 2, "{listed}");
    let page = ok_json(&ops(
        &hub,
        &["topics", "events", "deploy:web", "--limit", "1"],
    ));
    assert_eq!(page["events"][0]["payload"]["version"], "1.2", "{page}");
    let cursor = page["next_cursor"].to_string();
    let rest = ok_json(&ops(
        &hub,
        &["topics", "events", "deploy:web", "--cursor", &cursor],
    ));
    assert_eq!(rest["events"][0]["payload"], 2, "{rest}");
    let bad = ops(&hub, &["topics", "publish", "x", "--payload", "{nope"]);
    assert_eq!(bad.status.code(), Some(2));
    // Subscriptions from a TOML file.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sub.toml");
    std::fs::write(
        &file,
        "topic = \"deploy:web\"\n[task]\ndescription = \"Smoke-test {{payload.version}}\"\n",
    )
    .expect("write");
    let made = ok_json(&ops(
        &hub,
        &["topics", "subscribe", "-f", &file.display().to_string()],
    ));
    let id = made["id"].as_str().expect("id").to_string();
    ok_json(&ops(
        &hub,
        &[
            "topics",
            "publish",
            "deploy:web",
            "--payload",
            r#"{"version": "1.3"}"#,
        ],
    ));
    assert!(wait_for(SOON, || list_all_tasks(&hub, "", 100)
        .iter()
        .any(|t| t["description"] == "Smoke-test 1.3")));
    // The count moves once the subscription heard back from the queue.
    let counted = wait_for(SOON, || {
        ok_json(&ops(&hub, &["topics", "subscriptions"]))["subscriptions"][0]["fired"] == 1
    });
    assert!(
        counted,
        "{}",
        ok_json(&ops(&hub, &["topics", "subscriptions"]))
    );
    ok_json(&ops(&hub, &["topics", "unsubscribe", &id]));
    assert_eq!(
        ops(&hub, &["topics", "unsubscribe", &id]).status.code(),
        Some(1)
    );
}

#[test]
fn tasks_are_submitted_from_a_file_and_their_results_read() {
    let hub = Hub::start();
    let token = register_agent(&hub, "dev", &[]);
    let mut agent = Agent::connect(&hub, "dev", &token);
    let dir = tempfile::tempdir().expect("temp dir");
    // A batch with every kind of field: a ref, inputs_from, a fan-in.
    let file = dir.path().join("batch.json");
    std::fs::write(
        &file,
        r#"[{"description": "part", "ref": "p", "correlation_id": "b1"},
            {"description": "sum", "depends_on": ["p"], "inputs_from": ["p"],
             "depends_on_correlation": "b1", "notify": "event"}]"#,
    )
    .expect("write");
    let made = ok_json(&ops(
        &hub,
        &["task", "submit", "-f", &file.display().to_string()],
    ));
    assert_eq!(made["count"], 2, "{made}");
    let part = made["tasks"][0]["task_id"]
        .as_str()
        .expect("id")
        .to_string();
    let sum = made["tasks"][1]["task_id"]
        .as_str()
        .expect("id")
        .to_string();
    let assign = agent.take(&part);
    agent.send(json!({"type": "task_complete", "task_id": part,
                      "generation": assign["generation"], "result": {"n": 41}}));
    agent.recv_ack(&part, PUSH_TIMEOUT);
    let assign = agent.take(&sum);
    assert_eq!(assign["inputs"][&part]["result"]["n"], 41, "{assign}");
    let result = ok_json(&ops(&hub, &["task", "result", &part]));
    assert_eq!(result["result"]["n"], 41, "{result}");
    // A bad file exits 2; a refused task exits 1; nothing is created.
    std::fs::write(&file, "{not json").expect("write");
    let bad = ops(&hub, &["task", "submit", "-f", &file.display().to_string()]);
    assert_eq!(bad.status.code(), Some(2));
    std::fs::write(&file, r#"{"description": "x", "notify": "fax"}"#).expect("write");
    let refused = ops(&hub, &["task", "submit", "-f", &file.display().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(list_all_tasks(&hub, "", 100).len(), 2);
}

#[test]
fn the_shared_context_from_the_command_line() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let made = ok_json(&ops(
        &hub,
        &[
            "context",
            "put",
            "project.style",
            "--text",
            "tabs",
            "--if-version",
            "0",
        ],
    ));
    assert_eq!(made["version"], 1, "{made}");
    let file = dir.path().join("api.json");
    std::fs::write(&file, r#"{"base": "/v2"}"#).expect("write");
    ok_json(&ops(
        &hub,
        &[
            "context",
            "put",
            "project.api",
            "-f",
            &file.display().to_string(),
        ],
    ));
    let stale = ops(
        &hub,
        &[
            "context",
            "put",
            "project.style",
            "--text",
            "spaces",
            "--if-version",
            "0",
        ],
    );
    assert_eq!(stale.status.code(), Some(1), "a stale version is refused");
    ok_json(&ops(
        &hub,
        &[
            "context",
            "put",
            "project.style",
            "--json",
            r#"{"indent": 4}"#,
            "--if-version",
            "1",
        ],
    ));
    let got = ok_json(&ops(&hub, &["context", "get", "project.api"]));
    assert_eq!(got["value"]["base"], "/v2", "{got}");
    let old = ok_json(&ops(
        &hub,
        &["context", "get", "project.style", "--version", "1"],
    ));
    assert_eq!(old["text"], "tabs", "{old}");
    let history = ok_json(&ops(&hub, &["context", "history", "project.style"]));
    assert_eq!(history["count"], 2, "{history}");
    let listed = ok_json(&ops(&hub, &["context", "list", "--prefix", "project."]));
    assert_eq!(listed["count"], 2, "{listed}");
    ok_json(&ops(
        &hub,
        &["context", "delete", "project.api", "--if-version", "1"],
    ));
    assert_eq!(
        ops(&hub, &["context", "get", "project.api"]).status.code(),
        Some(1)
    );
    let bad = ops(&hub, &["context", "put", "k", "--json", "{nope"]);
    assert_eq!(bad.status.code(), Some(2));
}
