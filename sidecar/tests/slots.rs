//! Agent slots through the sidecar (#19, PROTOCOL.md 6.24): with `slots = 3`
//! it runs three tasks at once (one worker and one record file each); a
//! `kill -9` of the sidecar returns all three to the queue once, and after the
//! restart each is reported exactly once without waking the agent again.

mod common;

use std::fs;

use common::*;
use serde_json::{json, Value};

fn running(hub: &Hub, agent_id: &str) -> usize {
    let (status, state) = hub.get(&format!("/api/agents/{agent_id}/state"));
    assert_eq!(status, 200, "{state}");
    state["running"].as_array().map_or(0, Vec::len)
}

/// Starts `sc` with an agent that works until `go`, submits `n` tasks for it
/// and waits until every one started: they run at once.
fn all_started(hub: &Hub, sc: &mut Sidecar, n: usize) -> Vec<String> {
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(hub);
    let agent = sc.agent_id.clone();
    let tasks: Vec<String> = (0..n)
        .map(|i| hub.submit_for(&agent, json!({"description": format!("job {i}")})))
        .collect();
    for t in &tasks {
        let started = sc.results_dir().join(format!("{t}.started"));
        assert!(
            wait_for(SOON, || started.exists()),
            "{t} never started:\n{}",
            sc.log_tail()
        );
    }
    tasks
}

#[test]
fn three_slots_run_three_tasks_and_a_kill_returns_each_once() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "wide", "slots = 3\n");
    // Three agents' runs at once, each in its own slot file.
    let tasks = all_started(&hub, &mut sc, 3);
    assert!(
        wait_for(SOON, || running(&hub, "wide") == 3),
        "the hub does not show three running tasks"
    );
    let slot_files = ["current.json", "current-1.json", "current-2.json"];
    let mut held: Vec<String> = slot_files
        .iter()
        .map(|f| {
            let bytes = fs::read(sc.state_dir().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            let v: Value = serde_json::from_slice(&bytes).expect("record");
            v["assignment"]["task_id"]
                .as_str()
                .expect("task id")
                .to_string()
        })
        .collect();
    held.sort();
    let mut expected = tasks.clone();
    expected.sort();
    assert_eq!(held, expected, "one record per slot");

    sc.kill9();
    for t in &tasks {
        let task = hub.wait_status(t, "queued", SOON);
        assert_eq!(task["reclaim_count"], 1, "{task}");
        assert_eq!(count_events(&task, "reclaimed"), 1, "{task}");
    }
    // The agents finish while no sidecar runs; the restart reports each once.
    fs::write(sc.path("go"), "").expect("go");
    for t in &tasks {
        let result = sc.results_dir().join(format!("{t}.json"));
        assert!(wait_for(SOON, || result.exists()), "no result for {t}");
    }
    sc.spawn();
    for t in &tasks {
        let done = hub.wait_status(t, "completed", SOON);
        assert_eq!(count_events(&done, "completed"), 1, "{done}");
        assert_eq!(done["reclaim_count"], 1, "reclaimed once only: {done}");
    }
    sc.wait_idle();
    let mut woken = wakes(sc.dir.path());
    woken.sort();
    assert_eq!(woken, expected, "each agent woken exactly once");
    for f in slot_files {
        assert!(!sc.state_dir().join(f).exists(), "{f} left behind");
    }
}

#[test]
fn without_slots_in_its_config_the_sidecar_runs_what_its_token_grants() {
    let hub = Hub::start();
    let (status, made) = hub.post("/admin/tokens", &json!({"agent_id": "granted", "slots": 2}));
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().expect("token");
    let mut sc = Sidecar::prepare_with_token(&hub, "granted", token, "");
    // Both run at once: neither can finish before `go`.
    let tasks = all_started(&hub, &mut sc, 2);
    fs::write(sc.path("go"), "").expect("go");
    for t in &tasks {
        let done = hub.wait_status(t, "completed", SOON);
        assert_eq!(count_events(&done, "rejected"), 0, "{done}");
    }
    sc.wait_idle();
}

#[test]
fn the_sidecar_asks_for_its_slots_and_a_kept_standing_slot() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(
        &hub,
        "keeper",
        "slots = 2\nreserve_slot_for_standing = true\n",
    );
    let wake = fake_agent(sc.dir.path(), false);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);
    let (_, state) = hub.get("/api/agents/keeper/state");
    assert_eq!(state["slots"], 2, "{state}");
    assert_eq!(state["reserve_slot_for_standing"], true, "{state}");
    // Reactive work uses the general slot only, one task at a time.
    let a = hub.submit_for("keeper", json!({"description": "a"}));
    let b = hub.submit_for("keeper", json!({"description": "b"}));
    for t in [&a, &b] {
        let done = hub.wait_status(t, "completed", SOON);
        assert_eq!(count_events(&done, "completed"), 1, "{done}");
    }
    sc.wait_idle();
}
