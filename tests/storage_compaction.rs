//! Compaction: the store is rewritten into a fresh sled directory and swapped in
//! under the running hub (on demand and on a schedule) or by the CLI on a stopped
//! hub. Every record stays, the hub keeps serving throughout, and the result
//! survives a restart.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn hub_cli(args: &[&str], admin_token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"));
    cmd.args(args)
        .env_remove("AGENTCOM_DATA_DIR")
        .env_remove("AGENTCOM_BIND")
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env_remove("AGENTCOM_HUB_URL");
    if let Some(t) = admin_token {
        cmd.env("AGENTCOM_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run agentcom-hub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn get_ok(hub: &Hub, path: &str) -> Value {
    let (status, body) = hub.get(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Completed tasks (done by a worker), queued ones nobody can take, tokens.
/// Returns the worker (still connected) and the queued tasks' ids.
fn populate(hub: &Hub) -> Worker {
    let worker = Worker::spawn(hub, "compactor-worker", Duration::ZERO);
    register_agent(hub, "idle-one", &["review"]);
    for i in 0..40 {
        submit(hub, json!({"description": format!("done {i}")}));
    }
    assert!(
        wait_for(Duration::from_secs(20), || stats_count(hub, "completed")
            == 40),
        "the worker completes the first tasks"
    );
    for i in 0..60 {
        submit(
            hub,
            json!({"description": format!("waiting {i}"), "needed_capabilities": ["gpu"], "metadata": {"i": i}}),
        );
    }
    worker
}

/// The stored data as the API shows it.
fn snapshot(hub: &Hub) -> Value {
    json!({
        "tasks": list_all_tasks(hub, "", 100),
        "tokens": get_ok(hub, "/admin/tokens"),
    })
}

/// Directories next to the data dir left by a compaction (there should be none).
fn leftovers(hub: &Hub) -> Vec<PathBuf> {
    let root = hub.data_dir().parent().expect("parent").to_path_buf();
    std::fs::read_dir(root)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("data.compact-") || n.starts_with("data.before-compact-")
            })
        })
        .collect()
}

/// Submits tasks in a loop until stopped; returns the acknowledged ids.
fn background_submitter(hub: &Hub, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<String>> {
    let (url, token) = (hub.url("/api/tasks"), hub.admin_token.clone());
    thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let body = json!({"description": format!("during compaction {n}"), "needed_capabilities": ["gpu"]});
            let (status, resp) = http("POST", &url, Some(&token), Body::Json(&body));
            assert_eq!(status, 201, "submit during compaction: {resp}");
            acked.push(resp["task_id"].as_str().expect("task_id").to_string());
            n += 1;
        }
        acked
    })
}

#[test]
fn on_demand_compaction_keeps_every_record_while_the_hub_keeps_serving() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let worker = populate(&hub);
    let before = snapshot(&hub);

    let stop = Arc::new(AtomicBool::new(false));
    let submitter = background_submitter(&hub, stop.clone());
    // The worker keeps completing tasks through the compaction.
    let during = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let (status, body) = hub.post("/api/admin/compact", &json!({}));
        assert_eq!(status, 200, "compaction {i}: {body}");
        assert_eq!(body["status"], "complete", "{body}");
        assert!(body["records"].as_u64().is_some_and(|n| n >= 100), "{body}");
        assert!(
            body["bytes_after"].as_u64().is_some_and(|n| n > 0),
            "{body}"
        );
        let id = submit(&hub, json!({"description": format!("for the worker {i}")}));
        during.lock().expect("lock").push(id);
    }
    stop.store(true, Ordering::SeqCst);
    let acked = submitter.join().expect("submitter");
    assert!(!acked.is_empty());
    assert!(
        wait_for(Duration::from_secs(20), || stats_count(&hub, "completed")
            == 43),
        "the worker completed the tasks submitted between compactions"
    );
    let log = worker.stop();
    assert!(log.errors.is_empty(), "{:?}", log.errors);

    let check = |hub: &Hub| {
        let tasks = list_all_tasks(hub, "", 200);
        let by_id: std::collections::HashMap<String, Value> = tasks
            .iter()
            .map(|t| (t["id"].as_str().expect("id").to_string(), t.clone()))
            .collect();
        for t in before["tasks"].as_array().expect("tasks") {
            let id = t["id"].as_str().expect("id");
            assert_eq!(by_id.get(id), Some(t), "task {id} unchanged by compaction");
        }
        for id in &acked {
            assert_eq!(
                by_id[id]["status"], "queued",
                "acknowledged during compaction: {id}"
            );
        }
        for id in during.lock().expect("lock").iter() {
            assert_eq!(by_id[id]["status"], "completed", "{id}");
        }
        assert_eq!(tasks.len(), 100 + acked.len() + 3);
        assert_eq!(get_ok(hub, "/admin/tokens"), before["tokens"]);
    };
    check(&hub);
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(
        health["compaction"]["last"]["trigger"], "on_demand",
        "{health}"
    );
    assert!(
        health["compaction"]["last_compaction_at"]
            .as_u64()
            .is_some(),
        "{health}"
    );
    assert!(leftovers(&hub).is_empty(), "{:?}", leftovers(&hub));

    // The compacted store is the one on disk: a restart serves it, sealed and whole.
    hub.restart();
    check(&hub);
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(
        health["recovery"]["recovered_since_start"], false,
        "{health}"
    );
    let token = register_agent(&hub, "after-restart", &[]);
    Agent::connect(&hub, "after-restart", &token).assert_alive();
}

#[test]
fn scheduled_compaction_runs_on_its_interval_and_agents_stay_connected() {
    let hub = Hub::start_with_config("compact_interval_ms = 300\n");
    let token = register_agent(&hub, "steady", &[]);
    let mut agent = Agent::connect(&hub, "steady", &token);
    let ids: Vec<String> = (0..30)
        .map(|i| {
            submit(
                &hub,
                json!({"description": format!("kept {i}"), "needed_capabilities": ["gpu"]}),
            )
        })
        .collect();
    let mut compactions = std::collections::BTreeSet::new();
    let ran = wait_for(Duration::from_secs(20), || {
        let h = get_ok(&hub, "/api/admin/storage-health");
        if h["compaction"]["last"]["trigger"] == "scheduled" {
            compactions.insert(h["compaction"]["last_compaction_at"].as_u64().unwrap_or(0));
        }
        compactions.len() >= 3
    });
    assert!(ran, "scheduled compactions: {compactions:?}");
    agent.assert_alive();
    let listed: Vec<String> = list_all_tasks(&hub, "", 100)
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed, ids);
    assert!(leftovers(&hub).is_empty(), "{:?}", leftovers(&hub));
}

#[test]
fn cli_compact_works_on_a_stopped_hub_and_asks_for_hub_url_while_it_runs() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let worker = populate(&hub);
    worker.stop();
    let before = snapshot(&hub);
    let data = hub.data_dir().to_str().expect("utf-8").to_string();

    let refused = hub_cli(&["compact", "--data-dir", &data], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("--hub"),
        "{}",
        text(&refused.stderr)
    );

    let online = hub_cli(&["compact", "--hub", &hub.url("")], Some(&hub.admin_token));
    assert!(online.status.success(), "{}", text(&online.stderr));
    assert!(
        text(&online.stdout).starts_with("compacted:"),
        "{}",
        text(&online.stdout)
    );

    hub.stop();
    let offline = hub_cli(&["compact", "--data-dir", &data], None);
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    assert!(
        text(&offline.stdout).contains("100 records") || text(&offline.stdout).contains("records")
    );
    assert!(leftovers(&hub).is_empty(), "{:?}", leftovers(&hub));

    hub.start_again();
    assert_eq!(snapshot(&hub), before);
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(
        health["recovery"]["recovered_since_start"], false,
        "{health}"
    );

    let missing = hub_cli(
        &["compact", "--data-dir", "/nonexistent/agentcom-data"],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no store"),
        "{}",
        text(&missing.stderr)
    );
}
