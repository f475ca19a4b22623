//! Retention of finished work (#21, ext, PROTOCOL.md 6.34): completed,
//! cancelled and dead-lettered tasks past `task_retention_*` are archived to a
//! compressed, checksummed file in the backup directory and removed from the
//! live store (the counts in storage health); an archived task is still found
//! by id, and still counts as a dependency; finished standing-order runs past
//! `standing_run_retention_*` are archived too.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn storage(hub: &Hub) -> Value {
    let (status, body) = hub.get("/api/admin/storage-health");
    assert_eq!(status, 200, "{body}");
    body
}

fn archive_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "acar"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn finished_tasks_are_archived_freed_and_still_readable_by_id() {
    let mut hub = Hub::start_with_config("task_retention_ms = 1500\nretention_interval_ms = 200\n");
    let token = register_agent(&hub, "w", &[]);
    let mut w = Agent::connect(&hub, "w", &token);
    let mut done = Vec::new();
    for i in 0..20 {
        let id = submit(&hub, json!({"description": format!("job {i}")}));
        let assign = w.take(&id);
        w.send(
            json!({"type": "task_complete", "task_id": id, "generation": assign["generation"],
                      "result": {"n": i}}),
        );
        w.recv_ack(&id, REPLY_TIMEOUT);
        done.push(id);
    }
    let dead = submit(&hub, json!({"description": "fails", "max_retries": 0}));
    let assign = w.take(&dead);
    w.send(
        json!({"type": "task_failed", "task_id": dead, "generation": assign["generation"],
                  "error": "boom"}),
    );
    w.recv_ack(&dead, REPLY_TIMEOUT);
    let cancelled = submit(
        &hub,
        json!({"description": "dropped", "needed_capabilities": ["none"]}),
    );
    hub.post(&format!("/api/tasks/{cancelled}/cancel"), &json!({}));
    // Live work is never archived.
    let waiting = submit(
        &hub,
        json!({"description": "waits", "needed_capabilities": ["none"]}),
    );

    let archived = wait_for(SOON, || storage(&hub)["archive"]["tasks"] == 22);
    assert!(archived, "{}", storage(&hub)["archive"]);
    let health = storage(&hub);
    // The live store keeps only the waiting task (23 were submitted).
    assert_eq!(health["trees"]["tasks"], 1, "{health}");
    assert_eq!(health["trees"]["task_specs"], 1, "{health}");
    assert!(health["archive"]["bytes"].as_u64() > Some(0), "{health}");
    let dir = health["archive"]["dir"].as_str().expect("dir").to_string();
    let files = archive_files(&dir);
    assert!(!files.is_empty(), "an archive file in {dir}");

    // Read by id, from the archive.
    let t = get_task(&hub, &done[7]);
    assert_eq!(t["archived"], true, "{t}");
    assert_eq!(
        (t["status"].as_str(), t["result"]["n"].as_u64()),
        (Some("completed"), Some(7))
    );
    assert_eq!(t["attempts"][0]["agent_id"], "w", "{t}");
    let (_, result) = hub.get(&format!("/api/tasks/{}/result", done[7]));
    assert_eq!(result["result"]["n"], 7, "{result}");
    assert_eq!(get_task(&hub, &dead)["last_error"], "boom");
    assert_eq!(get_task(&hub, &waiting)["status"], "queued");
    assert!(get_task(&hub, &waiting).get("archived").is_none());
    let (status, _) = hub.get("/api/tasks/task-00000000deadbeef");
    assert_eq!(status, 404);
    let listed = list_all_tasks(&hub, "status=completed", 100);
    assert!(listed
        .iter()
        .all(|t| !done.contains(&t["id"].as_str().unwrap_or("").to_string())));
    let (_, events) = hub.get("/api/events?kind=tasks_archived");
    assert!(events["count"].as_u64() >= Some(1), "{events}");

    // An archived dependency still counts: completed frees, cancelled blocks.
    let after_done = submit(
        &hub,
        json!({"description": "next", "depends_on": [done[0]]}),
    );
    let assign = w.take(&after_done);
    assert_eq!(assign["task_id"], after_done.as_str());
    let after_cancel = submit(
        &hub,
        json!({"description": "never", "depends_on": [cancelled]}),
    );
    let blocked = wait_for(SOON, || {
        get_task(&hub, &after_cancel)["status"] == "blocked"
    });
    assert!(blocked, "{}", get_task(&hub, &after_cancel));

    // The file is whole and checksummed; a damaged copy is refused.
    let bin = env!("CARGO_BIN_EXE_agentcom-hub");
    let file = files
        .iter()
        .find(|f| f.to_string_lossy().contains("-tasks-"))
        .expect("a tasks archive");
    let out = Command::new(bin)
        .args([
            "verify-archive",
            &file.display().to_string(),
            "--id",
            &done[3],
        ])
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("\"n\":3"), "{stdout}");
    let damaged = std::env::temp_dir().join(format!("damaged-{}.acar", std::process::id()));
    let mut bytes = std::fs::read(file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&damaged, &bytes).expect("write");
    let out = Command::new(bin)
        .args(["verify-archive", &damaged.display().to_string()])
        .output()
        .expect("verify");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_file(&damaged);

    // A kill changes none of it.
    hub.kill9();
    hub.restart();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(get_task(&hub, &done[7])["result"]["n"], 7);
    let health = storage(&hub);
    assert!(health["archive"]["tasks"].as_u64() >= Some(22), "{health}");
    assert_eq!(get_task(&hub, &waiting)["status"], "queued");
}

#[test]
fn finished_standing_runs_are_archived() {
    // The order clock is weeks behind the system clock: every finished run is
    // past a day's retention at once.
    let clock = HubClock::new(1_795_255_230_000);
    let hub = Hub::start_with_config(&format!(
        "{}standing_run_retention_ms = 86400000\nretention_interval_ms = 200\n",
        clock.config()
    ));
    let (status, order) = hub.post(
        "/api/standing-orders",
        &json!({"name": "sweep", "cron": "* * * * *", "timezone": "UTC",
                "capability": "nobody", "window_ms": 60_000,
                "task": {"description": "sweep"}}),
    );
    assert_eq!(status, 201, "{order}");
    // Two occurrences come and go with nobody to run them: missed, finished.
    for minutes in [1, 2, 3, 4] {
        clock.set(1_795_255_230_000 + minutes * 60_000);
        std::thread::sleep(Duration::from_millis(300));
    }
    let archived = wait_for(SOON, || {
        storage(&hub)["archive"]["standing_runs"].as_u64() >= Some(2)
    });
    assert!(archived, "{}", storage(&hub)["archive"]);
    let (_, runs) = hub.get("/api/standing-orders/sweep/runs");
    let kept = runs["runs"].as_array().cloned().unwrap_or_default();
    assert!(
        kept.iter().all(|r| r["status"] == "pending"),
        "only unfinished runs stay live: {kept:?}"
    );
    let (_, events) = hub.get("/api/events?kind=standing_runs_archived");
    assert!(events["count"].as_u64() >= Some(1), "{events}");
}
