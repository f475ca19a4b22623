//! `runtime = "openclaw"` (#20): the wake is OpenClaw's hook, `POST
//! /hooks/agent` with the task (a local HTTP server stands in for the
//! gateway); the agent runs detached and finishes through the result file. A
//! hook that refuses fails that wake attempt and the sidecar tries again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One request as the stand-in gateway saw it.
struct Hooked {
    line: String,
    authorization: String,
    body: Value,
}

/// Serves `answers.len()` requests on 127.0.0.1, answering each with the
/// next status, and sends each request down the channel.
fn gateway(answers: Vec<u16>) -> (String, mpsc::Receiver<Hooked>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let (mut length, mut authorization) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    authorization = h["authorization:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0u8; length.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{{\"ok\":true}}"
            );
            let _ = reader.get_mut().write_all(answer.as_bytes());
            let _ = tx.send(Hooked {
                line: line.trim().to_string(),
                authorization,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
        }
    });
    (url, rx)
}

#[test]
fn the_hook_wakes_openclaw_which_finishes_through_the_files() {
    let hub = Hub::start();
    let (url, hooks) = gateway(vec![503, 200]);
    let extra = format!(
        "runtime = \"openclaw\"\nopenclaw_url = {}\nopenclaw_token = \"hook-secret\"\nstall_ms = 60000\n",
        toml_str(&url)
    );
    let mut sc = Sidecar::prepare(&hub, "claw", &extra);
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for("claw", json!({"description": "Summarise the changelog"}));
    let first = hooks.recv_timeout(SOON).expect("the hook");
    let second = hooks
        .recv_timeout(SOON)
        .expect("the hook again after a refusal");
    for h in [&first, &second] {
        assert_eq!(h.line, "POST /hooks/agent HTTP/1.1", "{}", h.line);
        assert_eq!(h.authorization, "Bearer hook-secret");
    }
    let body = &second.body;
    assert_eq!(body["sessionKey"], format!("agentcom:{task}"), "{body}");
    assert_eq!(body["wakeMode"], "now", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    let result_file = sc.results_dir().join(format!("{task}.json"));
    assert!(
        message.contains("Summarise the changelog")
            && message.contains(&result_file.display().to_string()),
        "{message}"
    );
    // OpenClaw does the work, detached: started, a heartbeat, the result.
    let dir = sc.results_dir();
    std::fs::write(dir.join(format!("{task}.started")), "").expect("started");
    std::fs::write(dir.join(format!("{task}.heartbeat")), "1").expect("heartbeat");
    std::fs::write(
        &result_file,
        r#"{"status":"success","summary":"3 notable changes"}"#,
    )
    .expect("result");
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    let t = hub.task(&task);
    assert_eq!(t["result"]["summary"], "3 notable changes", "{t}");
    assert_eq!(count_events(&t, "completed"), 1, "{t}");
}

#[test]
fn runtime_settings_are_checked() {
    let hub = Hub::start();
    let bad = [
        ("runtime = \"cursor\"\n", "runtime"),
        (
            "runtime = \"claude-code\"\nwake_command = \"x\"\n",
            "wake_command",
        ),
        ("claude_command = \"claude\"\n", "claude_command"),
        (
            "runtime = \"openclaw\"\nopenclaw_url = \"ftp://x\"\n",
            "openclaw_url",
        ),
        (
            "runtime = \"openclaw\"\nclaude_args = [\"-x\"]\n",
            "claude_args",
        ),
    ];
    for (i, (extra, field)) in bad.into_iter().enumerate() {
        let sc = Sidecar::prepare(&hub, &format!("checked{i}"), extra);
        let out = std::process::Command::new(sidecar_bin())
            .args(["run", "--config"])
            .arg(sc.config_path())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{extra}: {err}");
    }
}
