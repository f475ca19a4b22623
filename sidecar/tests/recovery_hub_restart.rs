//! Issue test 4: the hub restarts while a task is in progress; the sidecar
//! reconnects, recovers the task and it completes once, with one wake.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn hub_restart_mid_task_recovers_and_completes_once() {
    let mut hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "steady", "");
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);

    let task_id = hub.submit_for("steady", json!({"description": "survive a hub restart"}));
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(
        wait_for(SOON, || started.exists()),
        "agent never started:\n{}",
        sc.log_tail()
    );

    hub.restart();
    // The sidecar comes back by itself and the hub sees it working on the task.
    let ok = wait_for(SOON, || {
        hub.agent("steady")
            .is_some_and(|a| a["fsm_state"] == "working")
    });
    assert!(
        ok,
        "not working after the restart: {:?}\n{}",
        hub.agent("steady"),
        sc.log_tail()
    );
    let t = hub.task(&task_id);
    assert_eq!(t["status"], "assigned", "{t}");

    fs::write(sc.path("go"), "").expect("go");
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    sc.wait_idle();
    assert_eq!(
        wakes(sc.dir.path()),
        vec![task_id.clone()],
        "woken exactly once"
    );
    let log = fs::read_to_string(sc.path("sidecar.log")).unwrap_or_default();
    assert!(
        log.contains("task_recovering"),
        "recovery was used:\n{}",
        sc.log_tail()
    );
}

#[test]
fn a_task_the_restored_hub_does_not_know_is_released_loudly_and_its_result_kept() {
    if skip_on_postgres("a sled data dir restored from a backup file") {
        return;
    }
    let mut hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "steady", "release_grace_ms = 500\n");
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);
    // A backup that holds no task; then a task the agent starts on.
    let file = hub.backup_now();
    let task_id = hub.submit_for("steady", json!({"description": "lost by a restore"}));
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(
        wait_for(SOON, || started.exists()),
        "agent never started:\n{}",
        sc.log_tail()
    );

    // The hub comes back from the backup: it has never heard of the task.
    hub.restore_backup(&file);
    sc.wait_online(&hub);

    // The sidecar says so as a warning, lets the task go (the agent is free for
    // new work) and keeps what the agent wrote, archived.
    let warned = wait_for(SOON, || {
        fs::read_to_string(sc.path("sidecar.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains("WARN") && l.contains("does not know this task") && l.contains(&task_id)
            })
    });
    assert!(warned, "no warning:\n{}", sc.log_tail());
    let archived = wait_for(SOON, || {
        fs::read_dir(sc.state_dir().join("archive"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(&task_id))
            })
            .unwrap_or(false)
    });
    assert!(archived, "nothing archived:\n{}", sc.log_tail());
    sc.wait_idle();
    let next = hub.submit_for("steady", json!({"description": "new work"}));
    fs::write(sc.path("go"), "").expect("go");
    hub.wait_status(&next, "completed", SOON);
}
