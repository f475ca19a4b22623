//! Issue test 3: `kill -9` of the sidecar while the agent works; the result
//! written meanwhile is reported once after the restart, and the hub records
//! exactly one completion (the agent is not woken again).

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn result_written_while_the_sidecar_was_dead_is_reported_once() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "phoenix", "");
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);

    let task_id = hub.submit_for("phoenix", json!({"description": "long work"}));
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(
        wait_for(SOON, || started.exists()),
        "agent never started:\n{}",
        sc.log_tail()
    );
    assert!(
        wait_for(SOON, || sc
            .current()
            .is_some_and(|c| c["phase"] == "working")),
        "state never reached working: {:?}",
        sc.current()
    );

    sc.kill9();
    // The agent finishes while no sidecar runs.
    fs::write(sc.path("go"), "").expect("go");
    let result = sc.results_dir().join(format!("{task_id}.json"));
    assert!(wait_for(SOON, || result.exists()), "agent wrote no result");

    sc.spawn();
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    assert_eq!(
        done["result"]["summary"], "done by the fake agent",
        "{done}"
    );
    assert_eq!(done["result"]["tokens_used"], 7, "{done}");
    sc.wait_idle();
    assert_eq!(
        wakes(sc.dir.path()),
        vec![task_id.clone()],
        "woken exactly once"
    );

    // Nothing is reported twice later either.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let again = hub.task(&task_id);
    assert_eq!(again["status"], "completed");
    assert_eq!(count_events(&again, "completed"), 1, "{again}");
}
