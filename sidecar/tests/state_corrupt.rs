//! A corrupt state file is moved aside and reported, never silently dropped;
//! the sidecar keeps serving.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn corrupt_current_and_outbox_files_are_quarantined_and_reported() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "scarred", "");
    sc.set_wake(&fake_agent(sc.dir.path(), false));
    let state = sc.state_dir();
    fs::create_dir_all(state.join("outbox")).expect("outbox dir");
    fs::write(
        state.join("current.json"),
        "{\"assignment\": {\"task_id\": \"task-1\", trunc",
    )
    .expect("write");
    fs::write(
        state.join("outbox").join("00000000000000000003.json"),
        "not json",
    )
    .expect("write");
    sc.spawn();
    sc.wait_online(&hub);

    let quarantined: Vec<String> = fs::read_dir(state.join("quarantine"))
        .expect("quarantine dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined
        .iter()
        .any(|n| n.starts_with("current.json.corrupt-")));
    let kept = fs::read_dir(state.join("quarantine"))
        .expect("dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("current.json"))
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    assert!(kept.contains("task-1"), "the bytes are kept for inspection");
    let stderr = fs::read_to_string(sc.path("sidecar-stderr-1.log")).unwrap_or_default();
    assert!(
        stderr.contains("corrupt state file"),
        "reported on stderr: {stderr}"
    );
    let log = fs::read_to_string(sc.path("sidecar.log")).unwrap_or_default();
    assert!(
        log.contains("corrupt state file moved aside") && log.contains("ERROR"),
        "logged as an error"
    );

    let task_id = hub.submit_for("scarred", json!({"description": "after the scare"}));
    hub.wait_status(&task_id, "completed", SOON);
}
