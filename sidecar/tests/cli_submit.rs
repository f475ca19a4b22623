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
