//! Start-up recovery: a hub whose store files were truncated or bit-flipped while
//! it was stopped starts anyway, serving the newest backup that verifies; the
//! damaged data dir is kept aside and storage health reports what happened. With no
//! good backup it starts empty and says so.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn root(hub: &Hub) -> PathBuf {
    hub.data_dir()
        .parent()
        .expect("data dir parent")
        .to_path_buf()
}

/// Directories next to the data dir whose name starts with `data.<tag>-`.
fn siblings(hub: &Hub, tag: &str) -> Vec<PathBuf> {
    let prefix = format!("data.{tag}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root(hub))
        .expect("list root")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    found.sort();
    found
}

fn post_backup(hub: &Hub) -> PathBuf {
    let (status, body) = hub.post("/api/admin/backup", &json!({}));
    assert_eq!(status, 201, "POST /api/admin/backup: {body}");
    PathBuf::from(body["path"].as_str().expect("path"))
}

fn health(hub: &Hub) -> Value {
    let (status, body) = hub.get("/api/admin/storage-health");
    assert_eq!(status, 200, "{body}");
    body
}

fn task_ids(hub: &Hub) -> Vec<String> {
    list_all_tasks(hub, "", 200)
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect()
}

/// Flips one byte every `every` bytes of `path`, starting at `from`.
fn flip_bytes(path: &Path, from: u64, every: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open store file");
    let len = f.metadata().expect("metadata").len();
    let mut at = from;
    while at < len {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.read_exact(&mut b).expect("read");
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&[b[0] ^ 0xA5]).expect("write");
        at += every;
    }
    f.sync_all().expect("sync");
}

/// The sled files of the data dir (`db` and the `snap.*` page-table snapshots).
fn store_files(hub: &Hub) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = files_under(&hub.data_dir())
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n == "db" || n.starts_with("snap.")
            })
        })
        .collect();
    files.sort();
    files
}

/// Tasks and agents (tokens); backups after `first` and after `second` tasks.
/// Returns (agent token, ids in the older backup, ids in the newer backup, the
/// two backup files).
fn populate(hub: &Hub) -> (String, Vec<String>, Vec<String>, PathBuf, PathBuf) {
    let token = register_agent(hub, "survivor", &["code"]);
    for i in 0..30 {
        submit(
            hub,
            json!({"description": format!("early {i}"), "needed_capabilities": ["gpu"]}),
        );
    }
    let older = post_backup(hub);
    let early = task_ids(hub);
    for i in 0..20 {
        submit(
            hub,
            json!({"description": format!("late {i}"), "needed_capabilities": ["gpu"]}),
        );
    }
    let newer = post_backup(hub);
    let late = task_ids(hub);
    // Written after the newest backup: lost with the damaged store.
    submit(hub, json!({"description": "after the last backup"}));
    (token, early, late, older, newer)
}

fn logs(hub: &Hub) -> String {
    hub.log_paths()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The hub came back on the newest backup: its tasks and the agent's token.
fn assert_serves(hub: &Hub, token: &str, ids: &[String]) {
    assert_eq!(task_ids(hub), ids, "tasks of the restored backup");
    let mut agent = Agent::connect(hub, "survivor", token);
    agent.assert_alive();
    // The restored hub keeps working.
    submit(hub, json!({"description": "after recovery"}));
}

fn assert_recovery_reported(hub: &Hub, restored_from: &Path, quarantined: &Path) -> Value {
    let h = health(hub);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["conditions"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("recovered_at_startup"))),
        "{h}"
    );
    assert_eq!(h["recovery"]["recovered_since_start"], true, "{h}");
    let event = &h["recovery"]["events"][0];
    assert_eq!(event["outcome"], "restored_from_backup", "{h}");
    assert_eq!(event["restored_from"], json!(restored_from), "{h}");
    assert_eq!(event["quarantined_to"], json!(quarantined), "{h}");
    assert!(event["at"].as_u64().is_some_and(|t| t > 0), "{h}");
    assert!(
        !event["reason"].as_str().unwrap_or_default().is_empty(),
        "{h}"
    );
    // The same alias answers the same report.
    let (status, alias) = hub.get("/api/admin/dets-health");
    assert_eq!(status, 200);
    assert_eq!(alias["recovery"], h["recovery"]);
    // One error-level JSON log line says what happened.
    let logs = logs(hub);
    assert!(
        logs.lines().any(|l| l.contains("\"level\":\"ERROR\"")
            && l.contains("store recovered from backup")
            && l.contains("restored_from_backup")),
        "no recovery log line in:\n{logs}"
    );
    event.clone()
}

#[test]
fn truncated_store_files_are_kept_aside_and_the_newest_backup_is_served() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start_with_config(
        "metrics_interval_ms = 100\nalert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n",
    );
    let (token, _, late, _, newer) = populate(&hub);
    hub.stop();
    let db = hub.data_dir().join("db");
    let original = std::fs::read(&db).expect("read db");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open db");
    f.set_len(original.len() as u64 / 2).expect("truncate");
    drop(f);

    hub.start_again();
    let quarantined = siblings(&hub, "corrupt");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    // Kept, not deleted (as sled left it after trying to open it: its recovery may
    // already have rewritten the damaged tail).
    let kept = std::fs::read(quarantined[0].join("db")).expect("quarantined db");
    let same = original.len() / 2;
    assert_eq!(kept[..same.min(4096)], original[..same.min(4096)]);
    assert_serves(&hub, &token, &late);
    assert_recovery_reported(&hub, &newer, &quarantined[0]);
    // And it is alerted: the `storage` rule, critical.
    let storage_alert = || {
        let (_, alerts) = hub.get("/api/alerts");
        alerts["active"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["rule_id"] == "storage").cloned())
    };
    assert!(wait_for(std::time::Duration::from_secs(20), || {
        storage_alert().is_some_and(|a| a["severity"] == "critical")
    }));

    // A clean restart is not a recovery.
    hub.restart();
    assert_eq!(health(&hub)["recovery"]["recovered_since_start"], false);
    assert_eq!(siblings(&hub, "corrupt").len(), 1);
    assert_eq!(task_ids(&hub).len(), late.len() + 1);
}

#[test]
fn bit_flipped_store_files_fall_back_past_a_damaged_newest_backup_to_an_older_good_one() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let (token, early, _, older, newer) = populate(&hub);
    hub.stop();
    let files = store_files(&hub);
    assert!(!files.is_empty());
    for f in &files {
        flip_bytes(f, 0, 512);
    }
    // The newest backup is damaged too: one flipped bit.
    let mut bytes = std::fs::read(&newer).expect("read backup");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&newer, &bytes).expect("write backup");

    hub.start_again();
    let quarantined = siblings(&hub, "corrupt");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_serves(&hub, &token, &early);
    let event = assert_recovery_reported(&hub, &older, &quarantined[0]);
    let skipped = event["skipped_backups"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1, "{event}");
    assert_eq!(skipped[0][0], json!(newer), "{event}");
    assert!(
        skipped[0][1]
            .as_str()
            .unwrap_or_default()
            .contains("checksum mismatch"),
        "{event}"
    );
    // Nothing was deleted: both backups are still there.
    assert!(older.is_file() && newer.is_file());
}

#[test]
fn after_a_crash_an_undecodable_task_record_sends_the_store_aside_too() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let (token, _, late, _, newer) = populate(&hub);
    // No clean shutdown, so no seal: only sled and record decoding can tell.
    hub.kill9();
    let store = agentcom_hub::Store::open(&hub.data_dir()).expect("open stopped store");
    assert!(store.opened_seal().is_none(), "kill -9 leaves no seal");
    store
        .tasks
        .insert(u64::MAX.to_be_bytes(), b"\x01{not json".to_vec())
        .expect("write a damaged record");
    store.close().expect("close");

    hub.start_again();
    let quarantined = siblings(&hub, "corrupt");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_serves(&hub, &token, &late);
    let event = assert_recovery_reported(&hub, &newer, &quarantined[0]);
    assert!(
        event["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt record in tree tasks"),
        "{event}"
    );
}

#[test]
fn without_a_good_backup_the_hub_starts_empty_and_says_so_loudly() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start_with_config("backup_interval_hours = 0\n");
    let token = register_agent(&hub, "survivor", &[]);
    submit(&hub, json!({"description": "lost"}));
    // Only the start-up backup exists; damage it.
    let backups = root(&hub).join("agentcom-backups");
    assert!(wait_for(Duration::from_secs(10), || {
        health(&hub)["backup"]["count"] == 1
    }));
    hub.stop();
    for entry in std::fs::read_dir(&backups).expect("list").flatten() {
        std::fs::write(entry.path(), b"AGCMBKUP garbage").expect("damage backup");
    }
    let db = hub.data_dir().join("db");
    let len = std::fs::metadata(&db).expect("db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate");

    hub.start_again();
    assert!(task_ids(&hub).is_empty(), "an empty store");
    let h = health(&hub);
    assert_eq!(h["status"], "degraded", "{h}");
    let event = &h["recovery"]["events"][0];
    assert_eq!(event["outcome"], "started_empty", "{h}");
    assert_eq!(event["restored_from"], Value::Null, "{h}");
    let quarantined = siblings(&hub, "corrupt");
    assert_eq!(event["quarantined_to"], json!(quarantined[0]), "{h}");
    assert!(
        quarantined[0].join("db").is_file(),
        "the damaged store is kept"
    );
    // The old token is gone with the store; the admin token from the environment works.
    let mut probe = Agent::open(&hub);
    let reply = probe.identify("survivor", &token, None);
    assert_eq!(reply["error"], "invalid_token", "{reply}");
    let logs = logs(&hub);
    assert!(
        logs.lines()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("NO GOOD BACKUP")),
        "{logs}"
    );
}
