//! `agentcom-sidecar submit`: a task for people and scripts, with the sidecar's
//! own token.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn submit_posts_a_task_with_priority_capabilities_and_metadata() {
    let hub = Hub::start();
    let sc = Sidecar::prepare(&hub, "submitter", "");
    let out = Command::new(sidecar_bin())
        .args([
            "submit",
            "Refactor the parser\nsecond line",
            "--priority",
            "high",
        ])
        .args(["--capability", "code", "--capability", "rust"])
        .args(["--metadata", r#"{"ticket": 42}"#])
        .args(["--max-runtime-ms", "600000", "--stall-ms", "120000"])
        .args(["--repo", "parser", "--write-path", "src/parse/**"])
        .args(["--write-path", "Cargo.toml", "--read-path", "docs/**"])
        .args(["--concurrency-key", "repo:parser"])
        .arg("--config")
        .arg(sc.config_path())
        .output()
        .expect("run submit");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_str(stdout.trim()).expect("JSON reply");
    let task_id = resp["task_id"].as_str().expect("task_id");
    let t = hub.task(task_id);
    assert_eq!(t["description"], "Refactor the parser\nsecond line");
    assert_eq!(t["priority"], 1);
    assert_eq!(
        t["needed_capabilities"],
        serde_json::json!(["code", "rust"])
    );
    assert_eq!(t["metadata"]["ticket"], 42);
    assert_eq!(t["max_runtime_ms"], 600000, "{t}");
    assert_eq!(t["stall_ms"], 120000, "{t}");
    assert_eq!(t["submitted_by"], "submitter", "{t}");
    assert_eq!(t["repo"], "parser", "{t}");
    assert_eq!(t["concurrency_key"], "repo:parser", "{t}");
    assert_eq!(
        (&t["write_paths"], &t["read_paths"]),
        (
            &serde_json::json!(["src/parse/**", "Cargo.toml"]),
            &serde_json::json!(["docs/**"])
        ),
        "{t}"
    );

    // The hub's validation error is shown, with exit code 2.
    let out = Command::new(sidecar_bin())
        .args(["submit", "x", "--priority", "whenever", "--config"])
        .arg(sc.config_path())
        .output()
        .expect("run submit");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("priority"));
}

/// `agentcom-sidecar scope ...` with `sc`'s config; (exit code, the JSON answer).
fn scope_cmd(sc: &Sidecar, args: &[&str], task_id: Option<&str>) -> (i32, Value) {
    let mut cmd = Command::new(sidecar_bin());
    cmd.arg("scope")
        .args(args)
        .arg("--config")
        .arg(sc.config_path());
    match task_id {
        Some(t) => cmd.env("TASK_ID", t),
        None => cmd.env_remove("TASK_ID"),
    };
    let out = cmd.output().expect("run scope");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("JSON: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn scope_commands_reserve_renew_list_and_release_with_the_agents_token() {
    let hub = Hub::start();
    let a = Sidecar::prepare(&hub, "alpha", "");
    let b = Sidecar::prepare(&hub, "beta", "");
    let (code, granted) = scope_cmd(
        &a,
        &[
            "reserve", "--repo", "web", "--path", "src/**", "--ttl-ms", "60000",
        ],
        None,
    );
    assert_eq!(code, 0, "{granted}");
    assert_eq!(granted["reservation"]["holder"], "alpha");
    let id = granted["reservation"]["reservation_id"]
        .as_str()
        .expect("id")
        .to_string();
    // Overlap: exit 3 with the holder in the answer.
    let (code, conflict) = scope_cmd(
        &b,
        &["reserve", "--repo", "web", "--path", "src/x.rs", "--shared"],
        None,
    );
    assert_eq!(code, 3, "{conflict}");
    assert_eq!(conflict["holder"]["reservation_id"], id.as_str());
    // Inside a woken task the reservation is tied to it: not held → refused.
    let (code, refused) = scope_cmd(
        &b,
        &["reserve", "--repo", "web", "--path", "docs/**"],
        Some("task-0000000000000001"),
    );
    assert_eq!(
        (code, refused["error"].clone()),
        (1, Value::from("task_not_held"))
    );
    let (code, bad) = scope_cmd(&b, &["reserve", "--repo", "web", "--path", "!x"], None);
    assert_eq!(code, 2, "{bad}");

    let (code, listed) = scope_cmd(&b, &["list", "--repo", "web"], None);
    assert_eq!(code, 0);
    assert_eq!(listed["reservations"][0]["reservation_id"], id.as_str());
    let (code, renewed) = scope_cmd(&a, &["renew", &id, "--ttl-ms", "120000"], None);
    assert_eq!(code, 0, "{renewed}");
    let (code, _) = scope_cmd(&b, &["release", &id], None);
    assert_eq!(code, 1, "not beta's");
    let (code, released) = scope_cmd(&a, &["release", &id], None);
    assert_eq!(
        (code, released["status"].clone()),
        (0, Value::from("released"))
    );
    let (code, _) = scope_cmd(
        &b,
        &["reserve", "--repo", "web", "--path", "src/x.rs"],
        None,
    );
    assert_eq!(code, 0, "freed");
}

#[test]
fn emit_publishes_a_topic_event_with_the_agents_token() {
    let hub = Hub::start();
    let sc = Sidecar::prepare(&hub, "emitter", "");
    let emit = |args: &[&str]| {
        Command::new(sidecar_bin())
            .arg("emit")
            .args(args)
            .arg("--config")
            .arg(sc.config_path())
            .output()
            .expect("run emit")
    };
    let out = emit(&[
        "deliverable_ready",
        "--payload",
        r#"{"path": "dist/report.pdf"}"#,
        "--dedupe-key",
        "report-1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("JSON");
    assert_eq!(resp["event"]["publisher"], "emitter", "{resp}");
    assert_eq!(resp["existing"], false);
    // The same key again: the first event, nothing new.
    let again = emit(&[
        "deliverable_ready",
        "--payload",
        "{}",
        "--dedupe-key",
        "report-1",
    ]);
    assert!(again.status.success());
    let (_, page) = hub.get("/api/topics/deliverable_ready/events");
    assert_eq!(page["count"], 1, "{page}");
    assert_eq!(page["events"][0]["payload"]["path"], "dist/report.pdf");
    // Bad input: exit 2, nothing published.
    for bad in [vec!["a/b"], vec!["ok", "--payload", "{not json"]] {
        let out = emit(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(hub.get("/api/topics").1["count"], 1);
}

#[test]
fn submit_round_trips_every_field_and_defaults_the_parent_inside_a_woken_task() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "handoff", "");
    let parent = hub.submit_for("handoff", serde_json::json!({"description": "the parent"}));
    let dep = hub.submit_for(
        "handoff",
        serde_json::json!({"description": "a dependency"}),
    );
    let submit = |args: &[&str], task_env: Option<&str>| {
        let mut cmd = Command::new(sidecar_bin());
        cmd.arg("submit")
            .args(args)
            .arg("--config")
            .arg(sc.config_path());
        cmd.env_remove("TASK_ID");
        if let Some(t) = task_env {
            cmd.env("TASK_ID", t);
        }
        let out = cmd.output().expect("run submit");
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    let (code, v) = submit(
        &[
            "Review the hand-off",
            "--dedupe-key",
            "review-1",
            "--depends-on",
            &dep,
            "--run-after",
            "1000",
            "--max-retries",
            "2",
            "--max-reclaims",
            "4",
            "--lease-ms",
            "60000",
            "--complete-by",
            "99999999999999",
            "--blocked-policy",
            "wait",
            "--blocked-requeue-ms",
            "5000",
            "--approval",
            "before_complete",
            "--merge-on-approval",
            "--budget-tokens",
            "5000",
            "--budget-usd",
            "1.5",
            "--input-from",
            &dep,
            "--notify",
            "message",
            "--depends-on-correlation",
            &dep,
        ],
        Some(&parent),
    );
    assert_eq!(code, Some(0), "{v}");
    let t = hub.task(v["task_id"].as_str().unwrap_or_default());
    let want = serde_json::json!({
        "dedupe_key": "review-1", "depends_on": [dep], "run_after": 1000,
        "max_retries": 2, "max_reclaims": 4, "lease_ms": 60000,
        "complete_by": 99999999999999u64, "blocked_policy": "wait",
        "approval": "before_complete", "merge_on_approval": true,
        "budget_tokens": 5000, "budget_usd": 1.5,
        "parent_task_id": parent, "correlation_id": parent,
        "inputs_from": [dep], "notify": "message", "depends_on_correlation": dep,
    });
    for (k, v) in want.as_object().expect("object") {
        assert_eq!(&t[k], v, "{k}: {t}");
    }
    // Outside a woken task: no parent, its own correlation; an explicit
    // correlation id wins over the parent's.
    let (_, v) = submit(&["Loose task"], None);
    let t = hub.task(v["task_id"].as_str().unwrap_or_default());
    assert!(t["parent_task_id"].is_null(), "{t}");
    let (_, v) = submit(&["Grouped", "--correlation-id", "batch-7"], Some(&parent));
    let t = hub.task(v["task_id"].as_str().unwrap_or_default());
    assert_eq!(
        (t["parent_task_id"].clone(), t["correlation_id"].clone()),
        (serde_json::json!(parent), serde_json::json!("batch-7"))
    );
    let (_, v) = submit(&["No parent", "--no-parent"], Some(&parent));
    assert!(hub.task(v["task_id"].as_str().unwrap_or_default())["parent_task_id"].is_null());
    // An unknown parent is refused, exit 2.
    let (code, v) = submit(&["x", "--parent", "task-nope"], None);
    assert_eq!(code, Some(2), "{v}");

    // The status line, of the running agent.
    sc.spawn();
    sc.wait_online(&hub);
    let out = Command::new(sidecar_bin())
        .args(["status", "reviewing PR 12", "--config"])
        .arg(sc.config_path())
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = wait_for(SOON, || {
        hub.get("/api/agents").1["agents"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x["agent_id"] == "handoff" && x["status"] == "reviewing PR 12")
            })
    });
    assert!(shown, "{}", hub.get("/api/agents").1);
}

#[test]
fn the_context_a_task_names_reaches_the_agent_as_files_and_agents_write_their_prefix() {
    let hub =
        Hub::start_with_config("[[context_writers]]\nprefix = \"notes.\"\nroles = [\"agent\"]\n");
    hub.put(
        "/api/context/conventions",
        &serde_json::json!({"text": "rust 2021"}),
    );
    hub.put(
        "/api/context/notes.api",
        &serde_json::json!({"value": {"base": "/v2"}}),
    );
    let mut sc = Sidecar::prepare(&hub, "reader", "");
    // The agent reads the files and reports what it found.
    let script = r#"touch "$AGENTCOM_STARTED_FILE"
printf '{"status":"success","conventions":"%s","api":%s}' "$(cat "$TASK_CONTEXT_DIR/conventions.txt")" "$(cat "$TASK_CONTEXT_DIR/notes.api.json")" > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;
    let path = sc.dir.path().join("reader.sh");
    std::fs::write(&path, script).expect("write reader.sh");
    sc.set_wake(&format!("sh '{}'", path.display()));
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for(
        "reader",
        serde_json::json!({"description": "read", "context_keys": ["conventions", "notes.api", "nobody"]}),
    );
    let done = hub.wait_status(&task, "completed", SOON);
    assert_eq!(done["result"]["conventions"], "rust 2021", "{done}");
    assert_eq!(done["result"]["api"]["base"], "/v2", "{done}");

    // `agentcom-sidecar context`: read anything, write the agent's prefix.
    let context = |args: &[&str]| {
        let out = Command::new(sidecar_bin())
            .arg("context")
            .args(args)
            .arg("--config")
            .arg(sc.config_path())
            .output()
            .expect("run context");
        let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    let (code, v) = context(&["get", "conventions"]);
    assert_eq!(
        (code, v["text"].as_str()),
        (Some(0), Some("rust 2021")),
        "{v}"
    );
    let (code, v) = context(&[
        "put",
        "notes.reader",
        "--json",
        r#"{"seen": true}"#,
        "--if-version",
        "0",
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["version"], 1, "{v}");
    let (code, v) = context(&[
        "put",
        "notes.reader",
        "--text",
        "again",
        "--if-version",
        "0",
    ]);
    assert_eq!(code, Some(2), "a stale version is refused: {v}");
    assert_eq!(v["error"], "version_conflict");
    let (code, _) = context(&["put", "conventions", "--text", "mine now"]);
    assert_eq!(code, Some(2), "not the agent's prefix");
    let (code, v) = context(&["list", "--prefix", "notes."]);
    assert_eq!((code, v["count"].as_u64()), (Some(0), Some(2)), "{v}");
    let (code, _) = context(&["get", "bad key"]);
    assert_eq!(code, Some(2));
    assert_eq!(hub.get("/api/context/conventions").1["version"], 1);
}
