//! Backups: on demand (HTTP and CLI), at start-up, periodic with pruning to
//! `backup_keep`, `verify-backup`, and `restore` into a wiped data dir giving the
//! same data back (compared through the HTTP API after a restart). Admin only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn hub_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(args)
        .env_remove("AGENTCOM_DATA_DIR")
        .env_remove("AGENTCOM_BIND")
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .env_remove("AGENTCOM_HUB_URL")
        .output()
        .expect("run agentcom-hub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The default backup dir: `agentcom-backups` next to the data dir.
fn backup_dir(hub: &Hub) -> PathBuf {
    hub.data_dir()
        .parent()
        .expect("data dir has a parent")
        .join("agentcom-backups")
}

/// Backup files (our naming pattern only), oldest first.
fn backup_files(hub: &Hub) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(backup_dir(hub))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        // agentcom-backup-YYYYMMDDTHHMMSSmmmZ.acbk
        name.is_some_and(|n| {
            n.len() == "agentcom-backup-".len() + 19 + ".acbk".len()
                && n.starts_with("agentcom-backup-2")
                && n.ends_with("Z.acbk")
        })
    });
    files.sort();
    files
}

fn post_backup(hub: &Hub) -> Value {
    let (status, body) = hub.post("/api/admin/backup", &json!({}));
    assert_eq!(status, 201, "POST /api/admin/backup: {body}");
    body
}

/// Tokens of the agents created by `populate`.
struct Fixture {
    worker_token: String,
    sleeper_token: String,
    /// Holds the assigned task; stays connected so the task stays assigned.
    worker: Agent,
}

fn next_assign(agent: &mut Agent, task_id: &str) -> u64 {
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id, "{assign}");
    assign["generation"].as_u64().expect("generation")
}

/// Tasks in every status (completed, dead_letter, blocked, assigned, queued,
/// cancelled), three agents' tokens, a channel with history and an offline
/// agent's mailbox.
fn populate(hub: &Hub) -> Fixture {
    let worker_token = register_agent(hub, "worker", &[]);
    let sleeper_token = register_agent(hub, "sleeper", &[]);
    let mut worker = Agent::connect(hub, "worker", &worker_token);

    let done = submit(
        hub,
        json!({"description": "to complete", "metadata": {"k": 1}}),
    );
    let g = next_assign(&mut worker, &done);
    worker.accept(&done, json!(g));
    worker.send(json!({"type": "task_complete", "task_id": done, "generation": g, "result": {"ok": true}, "tokens_used": 7}));
    assert_eq!(worker.recv_ack(&done, REPLY_TIMEOUT)["status"], "complete");

    let dead = submit(hub, json!({"description": "to fail", "max_retries": 1}));
    let g = next_assign(&mut worker, &dead);
    worker.accept(&dead, json!(g));
    worker.send(json!({"type": "task_failed", "task_id": dead, "generation": g, "error": "boom"}));
    assert_eq!(
        worker.recv_ack(&dead, REPLY_TIMEOUT)["status"],
        "dead_letter"
    );

    let blocked = submit(hub, json!({"description": "to block", "priority": "high"}));
    let g = next_assign(&mut worker, &blocked);
    worker.accept(&blocked, json!(g));
    worker.send(
        json!({"type": "task_blocked", "task_id": blocked, "generation": g, "reason": "needs db"}),
    );
    assert_eq!(
        worker.recv_ack(&blocked, REPLY_TIMEOUT)["status"],
        "blocked"
    );

    let held = submit(hub, json!({"description": "to hold", "priority": "urgent"}));
    let g = next_assign(&mut worker, &held);
    worker.accept(&held, json!(g));

    // The only agent is busy: these stay queued.
    submit(hub, json!({"description": "waiting", "priority": "low"}));
    let cancelled = submit(hub, json!({"description": "to cancel"}));
    let (status, body) = hub.post(&format!("/api/tasks/{cancelled}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");

    create_channel(hub, "ops", "kept by backups");
    let (_, mut poster) = online_agent(hub, "poster");
    for n in 1..=2 {
        poster.send(json!({"type": "channel_publish", "channel": "ops", "payload": {"n": n}}));
        poster.recv_type("channel_published", REPLY_TIMEOUT);
    }
    for m in 1..=3 {
        poster.send(json!({"type": "message", "to": "sleeper", "payload": {"m": m}}));
        poster.recv_type("message_sent", REPLY_TIMEOUT);
    }
    disconnect(hub, poster);
    Fixture {
        worker_token,
        sleeper_token,
        worker,
    }
}

fn get_ok(hub: &Hub, path: &str) -> Value {
    let (status, body) = hub.get(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// What the HTTP API shows of the stored data.
fn snapshot(hub: &Hub, fixture: &Fixture) -> Value {
    json!({
        "tasks": list_all_tasks(hub, "", 100),
        "stats": get_ok(hub, "/api/tasks/stats"),
        "dead_letter": get_ok(hub, "/api/tasks/dead-letter"),
        "tokens": get_ok(hub, "/admin/tokens"),
        "channels": get_ok(hub, "/api/channels"),
        "history": get_ok(hub, "/api/channels/ops/history?limit=200"),
        "messages": get_ok(hub, "/api/messages?limit=200"),
        "mailbox": read_mailbox(hub, "sleeper", &fixture.sleeper_token, 0),
    })
}

#[test]
fn backup_then_wiped_data_dir_then_restore_gives_the_same_data_and_tokens_back() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let mut fixture = populate(&hub);
    // Still connected, so its task stays assigned (a stop is not a disconnect).
    fixture.worker.assert_alive();
    let before = snapshot(&hub, &fixture);
    let statuses: std::collections::BTreeSet<String> = before["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["status"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [
            "assigned",
            "blocked",
            "cancelled",
            "completed",
            "dead_letter",
            "queued"
        ],
        "the fixture covers every status"
    );

    let backup = post_backup(&hub);
    let file = PathBuf::from(backup["path"].as_str().expect("path"));
    assert!(file.starts_with(backup_dir(&hub)), "{backup}");
    let len = std::fs::metadata(&file).expect("backup file").len();
    assert_eq!(backup["size_bytes"], len, "{backup}");
    assert!(
        backup["created_at"].as_u64().is_some_and(|t| t > 0),
        "{backup}"
    );
    let sha = backup["sha256"].as_str().expect("sha256");
    assert_eq!(sha.len(), 64, "{backup}");

    hub.stop();
    std::fs::remove_dir_all(hub.data_dir()).expect("wipe the data dir");

    let restored = hub_cli(&[
        "restore",
        path_arg(&file),
        "--data-dir",
        path_arg(&hub.data_dir()),
    ]);
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    let out = text(&restored.stdout);
    assert!(
        out.contains("restored") && out.contains("no previous data directory"),
        "{out}"
    );

    hub.start_again();
    let after = snapshot(&hub, &fixture);
    assert_eq!(after, before, "data after restore differs from the backup");

    // Tokens still work: the agents identify with their old tokens.
    let mut worker = Agent::connect(&hub, "worker", &fixture.worker_token);
    worker.assert_alive();
    Agent::connect(&hub, "sleeper", &fixture.sleeper_token).assert_alive();
    // And the restored hub keeps working: the held task is recovered by its holder.
    let held = before["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["status"] == "assigned"))
        .expect("assigned task")
        .clone();
    worker.send(
        json!({"type": "task_recovering", "task_id": held["id"], "generation": held["generation"]}),
    );
    let cont = worker.recv_type("task_continue", REPLY_TIMEOUT);
    assert_eq!(cont["task_id"], held["id"], "{cont}");
}

#[test]
fn verify_backup_accepts_a_good_file_and_refuses_truncated_and_bit_flipped_ones() {
    let mut hub = Hub::start();
    register_agent(&hub, "a1", &[]);
    for i in 0..20 {
        submit(&hub, json!({"description": format!("task {i}")}));
    }
    let backup = post_backup(&hub);
    let file = PathBuf::from(backup["path"].as_str().expect("path"));

    let ok = hub_cli(&["verify-backup", path_arg(&file)]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.starts_with("OK "), "{out}");
    assert!(out.contains("tasks: 20"), "{out}");
    assert!(
        out.contains(backup["sha256"].as_str().expect("sha")),
        "{out}"
    );
    assert!(
        out.contains(&format!("created_at: {}", backup["created_at"])),
        "{out}"
    );

    let good = std::fs::read(&file).expect("read backup");
    let scratch = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.acbk",
            good[..good.len() - 100].to_vec(),
            "truncated",
        ),
        ("half.acbk", good[..good.len() / 2].to_vec(), "truncated"),
        ("header-only.acbk", good[..12].to_vec(), "truncated"),
        (
            "flipped.acbk",
            {
                let mut b = good.clone();
                let mid = b.len() / 2;
                b[mid] ^= 0x04;
                b
            },
            "checksum mismatch",
        ),
        (
            "other.acbk",
            b"just some text, not a backup at all".to_vec(),
            "not an AgentCom backup",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = scratch.path().join(name);
        std::fs::write(&path, &bytes).expect("write damaged copy");
        let refused = hub_cli(&["verify-backup", path_arg(&path)]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{name}: {}",
            text(&refused.stdout)
        );
        let err = text(&refused.stderr);
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
        assert!(
            text(&refused.stdout).is_empty(),
            "{name}: no summary for a bad file"
        );

        // A restore from it changes nothing: the data dir and its neighbours stay.
        hub.stop();
        let parent = hub.data_dir().parent().expect("parent").to_path_buf();
        let listing = |dir: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .expect("list")
                .flatten()
                .map(|e| e.path())
                .collect();
            v.sort();
            v
        };
        let (before_parent, before_data) = (listing(&parent), files_under(&hub.data_dir()));
        let restore = hub_cli(&[
            "restore",
            path_arg(&path),
            "--data-dir",
            path_arg(&hub.data_dir()),
        ]);
        assert_eq!(restore.status.code(), Some(1), "{name}");
        assert!(
            text(&restore.stderr).contains(expect),
            "{name}: {}",
            text(&restore.stderr)
        );
        assert_eq!(
            listing(&parent),
            before_parent,
            "{name}: nothing created or moved"
        );
        assert_eq!(
            files_under(&hub.data_dir()).len(),
            before_data.len(),
            "{name}"
        );
        hub.start_again();
    }
    assert_eq!(stats_count(&hub, "queued"), 20);

    let missing = hub_cli(&["verify-backup", "/nonexistent/agentcom-backup.acbk"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("cannot read backup"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn restore_and_offline_backup_are_refused_while_the_hub_runs_and_backup_works_with_hub_url() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    submit(&hub, json!({"description": "kept"}));
    let file = PathBuf::from(
        post_backup(&hub)["path"]
            .as_str()
            .expect("path")
            .to_string(),
    );
    let data = path_arg(&hub.data_dir()).to_string();

    let refused = hub_cli(&["restore", path_arg(&file), "--data-dir", &data]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("running hub"),
        "{}",
        text(&refused.stderr)
    );
    let (status, body) = hub.post("/api/admin/restore", &json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        json!({"error": "hub_running", "hint": "stop the hub and run agentcom-hub restore FILE"})
    );

    let offline = hub_cli(&["backup", "--data-dir", &data]);
    assert_eq!(offline.status.code(), Some(1));
    assert!(
        text(&offline.stderr).contains("--hub"),
        "{}",
        text(&offline.stderr)
    );

    let before = backup_files(&hub).len();
    let online = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["backup", "--hub", &hub.url("")])
        .env("AGENTCOM_ADMIN_TOKEN", &hub.admin_token)
        .output()
        .expect("run agentcom-hub backup --hub");
    assert!(online.status.success(), "{}", text(&online.stderr));
    assert!(
        text(&online.stdout).contains("backup written by the hub"),
        "{}",
        text(&online.stdout)
    );
    assert_eq!(backup_files(&hub).len(), before + 1);

    // Stopped: the CLI writes a backup itself, into the configured backup dir.
    hub.stop();
    let written = hub_cli(&["backup", "--data-dir", &data]);
    assert!(written.status.success(), "{}", text(&written.stderr));
    assert!(
        text(&written.stdout).contains("backup written:"),
        "{}",
        text(&written.stdout)
    );
    assert_eq!(backup_files(&hub).len(), before + 2);
    let newest = backup_files(&hub).pop().expect("newest");
    let verified = hub_cli(&["verify-backup", path_arg(&newest)]);
    assert!(
        text(&verified.stdout).contains("tasks: 1"),
        "{}",
        text(&verified.stdout)
    );

    // A restore of a stopped hub keeps the replaced data dir aside.
    let restored = hub_cli(&["restore", path_arg(&file), "--data-dir", &data]);
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    let aside: Vec<PathBuf> = std::fs::read_dir(hub.data_dir().parent().expect("parent"))
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("data.before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        aside[0].join("db").is_file(),
        "the previous store is kept whole"
    );
    hub.start_again();
    assert_eq!(stats_count(&hub, "queued"), 1);
}

#[test]
fn every_storage_admin_route_refuses_agent_tokens_and_anonymous_callers() {
    let hub = Hub::start();
    let token = register_agent(&hub, "nosy", &[]);
    let routes = [
        ("POST", "/api/admin/backup"),
        ("GET", "/api/admin/storage-health"),
        ("GET", "/api/admin/dets-health"),
        ("POST", "/api/admin/compact"),
        ("POST", "/api/admin/restore"),
    ];
    for (method, path) in routes {
        let url = hub.url(path);
        let body = if method == "POST" {
            Body::Json(&json!({}))
        } else {
            Body::None
        };
        let (status, resp) = http(method, &url, Some(&token), body);
        assert_eq!(
            (status, &resp),
            (403, &json!({"error": "admin_only"})),
            "{method} {path}"
        );
        let body = if method == "POST" {
            Body::Json(&json!({}))
        } else {
            Body::None
        };
        let (status, resp) = http(method, &url, None, body);
        assert_eq!(status, 401, "{method} {path}: {resp}");
        assert_eq!(resp["error"], "unauthorized", "{method} {path}");
    }
    // No backup was made by the refused calls beyond the start-up one.
    assert!(wait_for(Duration::from_secs(10), || backup_files(&hub)
        .len()
        == 1));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(backup_files(&hub).len(), 1);
}

#[test]
fn a_backup_is_taken_at_start_up_only_when_none_exists() {
    let mut hub = Hub::start_with_config("backup_interval_hours = 0\n");
    assert!(
        wait_for(Duration::from_secs(15), || backup_files(&hub).len() == 1),
        "start-up backup: {:?}",
        backup_files(&hub)
    );
    let first = backup_files(&hub);
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(health["backup"]["count"], 1, "{health}");
    assert_eq!(
        health["backup"]["last_since_start"]["trigger"], "startup",
        "{health}"
    );
    assert_eq!(health["backup"]["interval_ms"], Value::Null, "{health}");

    hub.restart();
    // Give a (wrong) second start-up backup every chance to appear.
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(health["backup"]["since_start"], 0, "{health}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(backup_files(&hub), first, "one exists: no start-up backup");
}

#[test]
fn periodic_backups_run_on_their_interval_and_only_the_newest_n_files_are_kept() {
    let mut hub = Hub::start_with_config("backup_interval_ms = 200\nbackup_keep = 3\n");
    let dir = backup_dir(&hub);
    // Files that are not ours stay, even when they look a bit like backups.
    assert!(wait_for(Duration::from_secs(15), || dir.is_dir()));
    std::fs::write(dir.join("notes.txt"), b"operator notes").expect("write");
    std::fs::write(dir.join("agentcom-backup-manual.acbk"), b"not ours").expect("write");
    submit(&hub, json!({"description": "in every backup"}));

    let mut seen = std::collections::BTreeSet::new();
    let enough = wait_for(Duration::from_secs(20), || {
        seen.extend(backup_files(&hub));
        let health = get_ok(&hub, "/api/admin/storage-health");
        health["backup"]["since_start"].as_u64().unwrap_or(0) >= 6
    });
    assert!(enough, "periodic backups did not run");
    let health = get_ok(&hub, "/api/admin/storage-health");
    assert_eq!(health["backup"]["interval_ms"], 200, "{health}");
    assert_eq!(health["backup"]["keep"], 3, "{health}");
    assert!(
        seen.len() > 3,
        "several distinct backups were written: {seen:?}"
    );

    // Stopped, the directory holds still: pruning (after each backup) kept the
    // newest `keep` (one more if the stop came between a backup and its pruning),
    // and every backup newer than the oldest kept one is still there.
    hub.stop();
    let now_there = backup_files(&hub);
    assert!(
        now_there.len() == 3 || now_there.len() == 4,
        "{now_there:?}"
    );
    for p in seen.iter().filter(|p| **p > now_there[0]) {
        assert!(
            now_there.contains(p),
            "{p:?} pruned while older files stayed: {now_there:?}"
        );
    }
    assert!(dir.join("notes.txt").is_file());
    assert!(dir.join("agentcom-backup-manual.acbk").is_file());
    let newest = now_there.last().expect("newest").clone();
    let verified = hub_cli(&["verify-backup", path_arg(&newest)]);
    assert!(
        text(&verified.stdout).contains("tasks: 1"),
        "{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
}
