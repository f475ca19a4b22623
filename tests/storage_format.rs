//! Old data directories open: a store written by the release before the compact
//! record format (`tests/fixtures/store-v1.tar.gz`, every record JSON with format
//! byte 1) is migrated on open, and everything in it is there afterwards: tasks
//! in each state with their history and results, the event log and its indexes,
//! mailboxes, standing orders and tokens.
//!
//! The fixture was written by `write_store_v1_fixture` below, run on the release
//! that still wrote format 1 (commit 19f5f4b):
//! `AGENTCOM_FIXTURE_OUT=/tmp/fx cargo test --test storage_format -- --ignored`,
//! then `tar -C /tmp/fx -czf tests/fixtures/store-v1.tar.gz data ids.json`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// What the fixture holds, by name: task ids and the agents' tokens.
fn fixture_ids(root: &Path) -> Value {
    let text = std::fs::read_to_string(root.join("ids.json")).expect("ids.json in the fixture");
    serde_json::from_str(&text).expect("ids.json is JSON")
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.tar.gz")
}

/// A hub on a copy of the fixture's data directory.
fn hub_on_fixture() -> (Hub, Value) {
    let mut hub = Hub::start();
    hub.stop();
    let data = hub.data_dir();
    std::fs::remove_dir_all(&data).expect("remove the fresh data dir");
    let root = data.parent().expect("data dir parent").to_path_buf();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-xzf")
        .arg(fixture_path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xzf the fixture");
    let ids = fixture_ids(&root);
    // The data dir keeps the admin token it was created with.
    hub.admin_token = id(&ids, "admin_token").to_string();
    hub.start_again();
    (hub, ids)
}

fn id<'a>(ids: &'a Value, name: &str) -> &'a str {
    ids[name].as_str().expect("named id in the fixture")
}

#[test]
fn a_data_dir_of_the_json_format_opens_with_everything_in_it() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let (mut hub, ids) = hub_on_fixture();
    for _ in 0..2 {
        let done = get_task(&hub, id(&ids, "done"));
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["answer"], 42, "{done}");
        assert_eq!(
            history_events(&done),
            ["queued", "assigned", "accepted", "completed"]
        );
        let dead = get_task(&hub, id(&ids, "dead"));
        assert_eq!(dead["status"], "dead_letter", "{dead}");
        assert_eq!(dead["last_error"], "boom", "{dead}");
        let queued = get_task(&hub, id(&ids, "queued"));
        assert_eq!(queued["status"], "queued", "{queued}");
        assert_eq!(queued["metadata"]["ticket"], "FX-1", "{queued}");
        assert_eq!(queued["dedupe_key"], "fx-dedupe", "{queued}");
        assert_eq!(queued["priority"], 1, "{queued}");
        let dependent = get_task(&hub, id(&ids, "dependent"));
        assert_eq!(dependent["depends_on"], json!([id(&ids, "queued")]));

        // The dedupe key still finds its task.
        let (status, again) = hub.post(
            "/api/tasks",
            &json!({"description": "again", "dedupe_key": "fx-dedupe"}),
        );
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["task_id"], id(&ids, "queued"), "{again}");

        // The event log and both of its indexes.
        let (status, page) = hub.get(&format!("/api/events?task_id={}", id(&ids, "done")));
        assert_eq!(status, 200, "{page}");
        let kinds: Vec<&str> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["queued", "assigned", "accepted", "completed"]);
        let (status, page) = hub.get("/api/events?agent_id=fx-worker&kind=completed");
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");

        // The peer's mailbox, its agent token, the standing order.
        let peer_token = id(&ids, "peer_token");
        let mailbox = read_mailbox(&hub, "fx-peer", peer_token, 0);
        let entries = mailbox["messages"].as_array().expect("mailbox entries");
        assert_eq!(entries.len(), 1, "{mailbox}");
        assert_eq!(
            entries[0]["message"]["payload"]["hello"], "peer",
            "{mailbox}"
        );
        let (status, order) = hub.get("/api/standing-orders/fx-daily");
        assert_eq!(status, 200, "{order}");

        // And it keeps working: the queued task goes to a capable agent.
        let (status, stats) = hub.get("/api/tasks/stats");
        assert_eq!(status, 200);
        assert_eq!(stats["by_status"]["completed"], 1, "{stats}");
        assert_eq!(stats["by_status"]["dead_letter"], 1, "{stats}");
        hub.restart();
    }
    let token = register_agent(&hub, "fx-gpu", &["gpu"]);
    let mut gpu = Agent::connect_with_caps(&hub, "fx-gpu", &token, &["gpu"]);
    let assign = gpu.take(id(&ids, "queued"));
    gpu.complete(&assign);
    let dependent = gpu.take(id(&ids, "dependent"));
    gpu.complete(&dependent);
}

/// Writes the fixture (see the module documentation). Ignored: it describes how
/// the fixture was made, on the release that wrote the old format.
#[test]
#[ignore]
fn write_store_v1_fixture() {
    let Ok(out) = std::env::var("AGENTCOM_FIXTURE_OUT") else {
        return;
    };
    let mut hub = Hub::start();
    let worker_token = register_agent(&hub, "fx-worker", &[]);
    let peer_token = register_agent(&hub, "fx-peer", &[]);
    let mut worker = Agent::connect(&hub, "fx-worker", &worker_token);

    let done = submit(&hub, json!({"description": "finished work"}));
    let assign = worker.take(&done);
    worker.send(json!({"type": "task_complete", "task_id": done,
                       "generation": assign["generation"], "result": {"answer": 42}}));
    worker.recv_ack(&done, REPLY_TIMEOUT);

    let dead = submit(&hub, json!({"description": "doomed", "max_retries": 0}));
    let assign = worker.take(&dead);
    worker.send(json!({"type": "task_failed", "task_id": dead,
                       "generation": assign["generation"], "error": "boom"}));
    worker.recv_ack(&dead, REPLY_TIMEOUT);

    let queued = submit(
        &hub,
        json!({"description": "waits for a gpu", "priority": "high",
               "needed_capabilities": ["gpu"], "dedupe_key": "fx-dedupe",
               "metadata": {"ticket": "FX-1"}}),
    );
    let dependent = submit(
        &hub,
        json!({"description": "after the gpu work", "needed_capabilities": ["gpu"],
               "depends_on": [queued]}),
    );
    let sent = request(
        &mut worker,
        json!({"type": "message", "to": "fx-peer", "payload": {"hello": "peer"}}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let (status, order) = hub.post(
        "/api/standing-orders",
        &json!({"name": "fx-daily", "cron": "0 9 * * 1-5", "timezone": "UTC",
                "task": {"description": "standup notes"}}),
    );
    assert_eq!(status, 201, "{order}");
    worker.close();
    hub.stop();

    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("create the output dir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(hub.data_dir())
        .arg(out.join("data"))
        .status()
        .expect("run cp");
    assert!(status.success());
    let ids = json!({"done": done, "dead": dead, "queued": queued, "dependent": dependent,
                     "worker_token": worker_token, "peer_token": peer_token,
                     "admin_token": hub.admin_token});
    std::fs::write(out.join("ids.json"), ids.to_string()).expect("write ids.json");
}
