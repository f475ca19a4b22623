//! Bad configuration: a clear message naming the field, exit code 2.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn run_with(config: &str, name: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    fs::write(&path, config).expect("write");
    let out = Command::new(sidecar_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_and_invalid_fields_are_named_with_exit_code_2() {
    let base = "agent_id = \"a\"\ntoken = \"t\"\nhub_url = \"ws://127.0.0.1:9/ws\"\n";
    let cases = [
        (
            "token = \"t\"\nhub_url = \"ws://127.0.0.1:9/ws\"\n",
            "`agent_id`",
        ),
        (
            "agent_id = \"a\"\nhub_url = \"ws://127.0.0.1:9/ws\"\n",
            "`token`",
        ),
        (
            "agent_id = \"a\"\ntoken = \"t\"\nhub_url = \"localhost\"\n",
            "`hub_url`",
        ),
        (
            &format!("{base}confirmation_timeout_ms = -1\n") as &str,
            "`confirmation_timeout_ms`",
        ),
        (&format!("{base}wake_command = []\n"), "`wake_command`"),
        (&format!("{base}wake_comand = \"x\"\n"), "`wake_comand`"),
        ("agent_id = ", "not valid TOML"),
    ];
    for (config, field) in cases {
        let (code, stderr) = run_with(config, "config.toml");
        assert_eq!(code, Some(2), "{config:?}: {stderr}");
        assert!(
            stderr.contains(field),
            "{config:?}: expected {field} in {stderr:?}"
        );
    }
    // The v1.1 JSON config is checked the same way.
    let (code, stderr) = run_with(
        r#"{"agent_id":"a","token":"t","hub_url":42}"#,
        "config.json",
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("`hub_url`"), "{stderr}");
    // A missing file too.
    let out = Command::new(sidecar_bin())
        .args(["run", "--config", "/nonexistent/agentcom/config.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
