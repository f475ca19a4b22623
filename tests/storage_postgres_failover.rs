//! Failover on Postgres (#22): several hubs on one database, one active (it
//! holds the leader lease); a standby takes over when the active one dies,
//! with every acknowledged task, and a paused leader that lost its lease
//! writes nothing when it resumes. These run in the Postgres pass of the
//! suite (`tests/on-postgres`); on sled there is nothing to fail over.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// `GET url` as Prometheus text (200 expected).
fn prometheus(url: &str, token: Option<&str>) -> String {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(resp) => resp.into_string().unwrap_or_default(),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn a_standby_takes_over_with_every_acknowledged_task_when_the_active_hub_dies() {
    if !on_postgres() {
        eprintln!("skipped on sled: failover needs the Postgres backend");
        return;
    }
    let active = Hub::start();
    let token = register_agent(&active, "w", &[]);
    let mut w = Agent::connect(&active, "w", &token);
    let ids: Vec<String> = (0..10)
        .map(|i| submit(&active, json!({"description": format!("job {i}")})))
        .collect();
    for id in &ids[..3] {
        let assign = w.take(id);
        w.complete(&assign);
    }
    w.close();
    assert_eq!(
        active.postgres_number("SELECT epoch FROM agentcom_leader"),
        1
    );
    // A standby answers with its role and the leader, and takes no write.
    let mut standby = active.standby_of();
    let (status, health) = try_http(
        "GET",
        &standby.url("/health"),
        None,
        None,
        Duration::from_secs(5),
    )
    .expect("standby health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["role"], "standby", "{health}");
    assert!(
        health["leader"]
            .as_str()
            .is_some_and(|l| l.contains(&active.port.to_string())),
        "the leader's address: {health}"
    );
    let (status, refused) = try_http(
        "POST",
        &standby.url("/api/tasks"),
        Some(&active.admin_token),
        Some(&json!({"description": "to the standby"})),
        Duration::from_secs(5),
    )
    .expect("standby answers");
    assert_eq!(
        (status, refused["error"].as_str()),
        (503, Some("standby")),
        "{refused}"
    );
    let (_, health) = active.get("/health");
    assert_eq!(
        (health["role"].as_str(), health["epoch"].as_i64()),
        (Some("leader"), Some(1))
    );
    // A browser at the standby's dashboard learns who leads.
    match ureq::get(&standby.url("/dashboard")).call() {
        Err(ureq::Error::Status(503, resp)) => {
            let page = resp.into_string().unwrap_or_default();
            assert!(page.contains("This hub is a standby"), "{page}");
            assert!(page.contains(&active.port.to_string()), "{page}");
        }
        other => panic!("the standby's dashboard: {other:?}"),
    }
    // Each role's metrics: the standby's without a token.
    let text = prometheus(&standby.url("/metrics"), None);
    for line in [
        "agentcom_hub_role{role=\"standby\"} 1",
        "agentcom_hub_role{role=\"leader\"} 0",
        "agentcom_hub_leader_epoch 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(text.contains("agentcom_hub_standby_seconds "), "{text}");
    let text = prometheus(&active.url("/metrics"), Some(&active.admin_token));
    for line in [
        "agentcom_hub_role{role=\"leader\"} 1",
        "agentcom_hub_leader_epoch 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // The active hub dies: the standby takes over, on the same address.
    let port = standby.port;
    let pid = active.pid().expect("running");
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    standby.wait_serving();
    assert_eq!(standby.port, port);
    assert_eq!(
        standby.postgres_number("SELECT epoch FROM agentcom_leader"),
        2
    );
    let (_, health) = standby.get("/health");
    assert_eq!(
        (health["role"].as_str(), health["epoch"].as_i64()),
        (Some("leader"), Some(2))
    );
    let text = prometheus(&standby.url("/metrics"), Some(&standby.admin_token));
    assert!(
        text.lines().any(|l| l == "agentcom_hub_leader_epoch 2"),
        "{text}"
    );
    for (i, id) in ids.iter().enumerate() {
        let t = get_task(&standby, id);
        let want = if i < 3 { "completed" } else { "queued" };
        assert_eq!(t["status"], want, "{t}");
    }
    // The agent moves to the new active hub and finishes the rest once each.
    let mut w = Agent::connect(&standby, "w", &token);
    for id in &ids[3..] {
        let assign = w.take(id);
        w.complete(&assign);
    }
    for id in &ids {
        let t = get_task(&standby, id);
        assert_eq!(count_events(&t, "completed"), 1, "{t}");
    }
    // What the new leader wrote carries its epoch.
    assert_eq!(
        standby.postgres_number("SELECT max(epoch) FROM agentcom_kv"),
        2
    );
}

#[test]
fn a_paused_leader_that_lost_its_lease_writes_nothing_when_it_resumes() {
    if !on_postgres() {
        eprintln!("skipped on sled: fencing needs the Postgres backend");
        return;
    }
    let mut old = Hub::start();
    let before = submit(&old, json!({"description": "before the pause"}));
    let pid = old.pid().expect("running").to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stopped.is_ok_and(|s| s.success()));
    // The standby takes the lease once it expires.
    let mut new = old.standby_of();
    new.wait_serving();
    assert_eq!(new.postgres_number("SELECT epoch FROM agentcom_leader"), 2);
    let during = submit(&new, json!({"description": "on the new leader"}));
    let rows_before = new.postgres_number("SELECT count(*) FROM agentcom_kv");
    // The old leader resumes: a submit to it is not acknowledged, it stops,
    // and nothing of epoch 1 reaches the database any more.
    let resumed = Command::new("kill").args(["-CONT", &pid]).status();
    assert!(resumed.is_ok_and(|s| s.success()));
    let (status, _) = try_http(
        "POST",
        &old.url("/api/tasks"),
        Some(&old.admin_token),
        Some(&json!({"description": "from the deposed leader"})),
        Duration::from_secs(10),
    )
    .unwrap_or((0, json!(null)));
    assert_ne!(status, 201, "a deposed leader acknowledged a write");
    assert_eq!(old.wait_exit(Duration::from_secs(30)), Some(3), "it stops");
    assert_eq!(
        new.postgres_number(
            "SELECT count(*) FROM agentcom_kv WHERE position('deposed'::bytea in v) > 0"
        ),
        0
    );
    assert_eq!(get_task(&new, &before)["status"], "queued");
    assert_eq!(get_task(&new, &during)["status"], "queued");
    let listed = list_all_tasks(&new, "", 100);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(new.postgres_number("SELECT count(*) FROM agentcom_kv") >= rows_before);
}

/// `agentcom-hub` with `AGENTCOM_HUB_URL` naming several hubs.
fn cli(hubs: &str, admin: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(args)
        .env("AGENTCOM_HUB_URL", hubs)
        .env("AGENTCOM_ADMIN_TOKEN", admin)
        .env_remove("AGENTCOM_DATA_DIR")
        .output()
        .expect("run agentcom-hub")
}

#[test]
fn the_cli_with_several_hub_urls_reaches_the_active_hub_across_a_failover() {
    let Some((mut active, mut standby, hubs)) = active_and_standby() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("task.json");
    std::fs::write(&file, r#"{"description": "through the list"}"#).expect("task file");
    let out = cli(
        &hubs,
        &active.admin_token,
        &["task", "submit", "-f", &file.display().to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    let id = created["task_id"].as_str().expect("task_id").to_string();
    // With one URL, a standby's refusal is shown as it is.
    let out = cli(
        &standby.url(""),
        &active.admin_token,
        &["task", "submit", "-f", &file.display().to_string()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("standby"),
        "{out:?}"
    );
    active.kill9();
    standby.wait_serving();
    let out = cli(&hubs, &active.admin_token, &["task", "cancel", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_task(&standby, &id)["status"], "cancelled");
}

#[test]
fn a_leader_paused_past_its_lease_with_no_standby_goes_on_at_its_epoch() {
    if !on_postgres() {
        eprintln!("skipped on sled: the lease needs the Postgres backend");
        return;
    }
    let mut hub = Hub::start();
    let pid = hub.pid().expect("running") as i32;
    signal(pid, libc::SIGSTOP);
    // Well past the lease (failover_ms = 1000 in the tests): it expires, and
    // nobody takes it.
    std::thread::sleep(Duration::from_millis(2500));
    signal(pid, libc::SIGCONT);
    // The epoch is the fence, and nobody raised it: the hub writes on.
    let id = submit(&hub, json!({"description": "after a long pause"}));
    assert_eq!(get_task(&hub, &id)["status"], "queued");
    assert_eq!(
        hub.wait_exit(Duration::from_millis(500)),
        None,
        "still running"
    );
    assert_eq!(hub.postgres_number("SELECT epoch FROM agentcom_leader"), 1);
}
