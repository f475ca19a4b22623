//! Logs: the level changes at runtime (`PUT /api/admin/log-level`), bad levels are
//! refused, an optional rotating log file receives the same JSON lines.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

fn put_level(hub: &Hub, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    http(
        "PUT",
        &hub.url("/api/admin/log-level"),
        Some(token),
        Body::Json(body),
    )
}

/// Debug lines the hub logged for `ping` frames so far (all its stderr logs).
fn ping_debug_lines(hub: &Hub) -> usize {
    hub.log_paths()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .map(|text| {
            text.lines()
                .filter(|l| l.contains("\"DEBUG\"") && l.contains("\"message_type\":\"ping\""))
                .count()
        })
        .sum()
}

#[test]
fn the_log_level_changes_at_runtime_and_bad_levels_change_nothing() {
    let hub = Hub::start();
    let token = register_agent(&hub, "talker", &[]);
    let mut talker = Agent::connect(&hub, "talker", &token);
    let (status, level) = hub.get("/api/admin/log-level");
    assert_eq!((status, level), (200, json!({"level": "info"})));

    talker.send(json!({"type": "ping"}));
    assert_eq!(talker.recv_reply(REPLY_TIMEOUT)["type"], "pong");
    assert_eq!(ping_debug_lines(&hub), 0, "no debug lines at info");

    let (status, resp) = put_level(&hub, &hub.admin_token, &json!({"level": "debug"}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["previous"], "info", "{resp}");
    talker.send(json!({"type": "ping"}));
    assert_eq!(talker.recv_reply(REPLY_TIMEOUT)["type"], "pong");
    assert!(
        wait_for(REPLY_TIMEOUT, || ping_debug_lines(&hub) == 1),
        "debug line after the change"
    );

    for bad in [
        json!({"level": "shout"}),
        json!({"level": ""}),
        json!({"level": 3}),
        json!({}),
    ] {
        let (status, resp) = put_level(&hub, &hub.admin_token, &bad);
        assert_eq!(status, 422, "{bad} → {resp}");
    }
    let (status, resp) = put_level(&hub, &token, &json!({"level": "trace"}));
    assert_eq!((status, resp), (403, json!({"error": "admin_only"})));
    let (_, level) = hub.get("/api/admin/log-level");
    assert_eq!(
        level,
        json!({"level": "debug"}),
        "refused changes changed nothing"
    );

    // A directive works too; back to quiet for this crate.
    let (status, _) = put_level(
        &hub,
        &hub.admin_token,
        &json!({"level": "agentcom_hub=warn,actix_web=warn"}),
    );
    assert_eq!(status, 200);
    talker.send(json!({"type": "ping"}));
    assert_eq!(talker.recv_reply(REPLY_TIMEOUT)["type"], "pong");
    // The pong came after the frame was logged (or not): nothing new.
    assert_eq!(ping_debug_lines(&hub), 1);
}

fn files_starting_with(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_log_file_gets_the_json_lines_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let config = format!(
        "log_file = {:?}\nlog_rotation = \"daily\"\nlog_keep = 3\n",
        logs.join("hub.log")
    );
    let mut hub = Hub::start_with_config(&config);
    submit(&hub, json!({"description": "logged"}));
    hub.stop();
    let files = files_starting_with(&logs, "hub.log");
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("read log file");
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("JSON line");
    assert!(first["level"].is_string(), "{first}");
    assert!(text.contains("starting hub"), "{text}");
}

#[test]
fn bad_log_settings_stop_the_start_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (config, field) in [
        ("log_rotation = \"weekly\"\n", "log_rotation"),
        ("log_keep = 0\n", "log_keep"),
        ("rate_limit_heavy_per_min = 0\n", "rate_limit_heavy_per_min"),
        (
            "group_commit_window_us = 200000\n",
            "group_commit_window_us",
        ),
    ] {
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, config).expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .expect("run agentcom-hub");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(field), "{config}: {stderr}");
    }
}

#[test]
fn a_busy_port_fails_the_start_cleanly_before_anything_runs() {
    let hub = Hub::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["serve", "--bind", &format!("127.0.0.1:{}", hub.port)])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("AGENTCOM_ADMIN_TOKEN", "adm_busy_port")
        .env_remove("RUST_LOG")
        .output()
        .expect("run agentcom-hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot serve"), "{stderr}");
    assert!(!stderr.contains("panic"), "no actor ran: {stderr}");
    // The hub that holds the port is untouched.
    let (status, _) = hub.get("/health");
    assert_eq!(status, 200);
}

/// A clean stop (SIGTERM) after ordinary work logs no error: the last writes,
/// the checkpoint, the seal and (on Postgres) the lease's release all end well.
#[test]
fn a_clean_stop_logs_no_error() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "w", &[]);
    let mut w = Agent::connect(&hub, "w", &token);
    let task = submit(&hub, json!({"description": "one"}));
    let assign = w.take(&task);
    w.complete(&assign);
    hub.put("/api/context/project.style", &json!({"text": "tabs"}));
    hub.post(
        "/api/message",
        &json!({"to": "w", "payload": {"text": "hi"}}),
    );
    w.close();
    hub.stop();
    let log = hub
        .log_paths()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("store sealed and closed"), "{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(errors.is_empty(), "a clean stop logged errors: {errors:#?}");
    if on_postgres() {
        assert!(log.contains("leader lease released"), "{log}");
    }
}
