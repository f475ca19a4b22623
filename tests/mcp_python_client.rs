//! Interoperability: the official MCP Python SDK (installed by `tests/setup` into
//! `tests/mcp_client/.venv`) drives `agentcom-hub mcp` through
//! `tests/mcp_client/client.py`, while this side plays the agent that does the
//! work over a real WebSocket.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

#[test]
fn the_official_python_client_submits_and_waits_for_a_result() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/setup first (see README)",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client/client.py");

    let hub = Hub::start();
    let coord_token = register_agent(&hub, "coord", &[]);
    let worker_token = register_agent(&hub, "worker", &["code"]);
    let mut worker = Agent::connect_with_caps(&hub, "worker", &worker_token, &["code"]);

    let mut client = Command::new(&python)
        .arg(&script)
        .env("AGENTCOM_HUB_BIN", env!("CARGO_BIN_EXE_agentcom-hub"))
        .env("AGENTCOM_HUB_URL", hub.url(""))
        .env("AGENTCOM_TOKEN", &coord_token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the Python MCP client");
    let stdout = client.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut next_line = |what: &str| -> String {
        match lines.next() {
            Some(Ok(line)) => line,
            other => panic!("the Python client ended before {what}: {other:?}"),
        }
    };

    let submitted = next_line("SUBMITTED");
    let task_id = submitted
        .strip_prefix("SUBMITTED ")
        .unwrap_or_else(|| panic!("expected SUBMITTED, got {submitted}"))
        .to_string();
    let assign = worker.take(&task_id);
    worker.send(json!({"type": "task_complete", "task_id": task_id,
                       "generation": assign["generation"], "result": {"files": 12}}));
    assert_eq!(
        worker.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );

    let line = next_line("RESULT");
    let waited: Value = serde_json::from_str(
        line.strip_prefix("RESULT ")
            .unwrap_or_else(|| panic!("expected RESULT, got {line}")),
    )
    .expect("RESULT is JSON");
    assert_eq!(waited["status"], "completed", "{waited}");
    assert_eq!(waited["result"], json!({"files": 12}), "{waited}");
    let status = client.wait().expect("wait for the Python client");
    assert!(status.success(), "the Python client failed: {status}");
}
