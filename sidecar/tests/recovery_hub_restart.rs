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
