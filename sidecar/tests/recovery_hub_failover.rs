//! Hubs on one Postgres (#22): a sidecar given both hubs' URLs moves to the
//! active one, and when that one dies with a task in progress it recovers the
//! task on the hub that takes over, exactly as across a restart: the task
//! completes once, with one wake. Its commands (`submit`) move too. Runs in
//! the Postgres pass of the suite; on sled there is nothing to fail over.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn a_failover_mid_task_is_recovered_on_the_new_active_hub_and_completes_once() {
    let Some((mut active, mut standby, _)) = active_and_standby() else {
        return;
    };
    let mut sc = Sidecar::prepare(&active, "steady", "");
    // The standby first: it refuses the connection and the sidecar moves on.
    sc.use_hubs(&[standby.ws_url(), active.ws_url()]);
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&active);

    // Its commands find the active hub the same way.
    let out = Command::new(sidecar_bin())
        .args(["submit", "survive a failover", "--config"])
        .arg(sc.config_path())
        .output()
        .expect("run submit");
    assert!(
        out.status.success(),
        "submit through hub_urls: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("submit prints the hub's answer");
    let task_id = answer["task_id"].as_str().expect("task_id").to_string();
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(
        wait_for(SOON, || started.exists()),
        "agent never started:\n{}",
        sc.log_tail()
    );

    active.kill9();
    standby.wait_serving();
    // The sidecar reaches the new active hub by itself and says it is still
    // working on the task.
    let ok = wait_for(SOON, || {
        standby
            .agent("steady")
            .is_some_and(|a| a["fsm_state"] == "working")
    });
    assert!(
        ok,
        "not working on the new active hub: {:?}\n{}",
        standby.agent("steady"),
        sc.log_tail()
    );
    assert_eq!(standby.task(&task_id)["status"], "assigned");

    fs::write(sc.path("go"), "").expect("go");
    let done = standby.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    sc.wait_idle();
    assert_eq!(wakes(sc.dir.path()), vec![task_id], "woken exactly once");
    let log = fs::read_to_string(sc.path("sidecar.log")).unwrap_or_default();
    assert!(
        log.contains("task_recovering"),
        "recovery was used:\n{}",
        sc.log_tail()
    );
    // New work reaches it through the new active hub.
    let next = standby.submit_for("steady", json!({"description": "after the failover"}));
    let started = sc.results_dir().join(format!("{next}.started"));
    assert!(wait_for(SOON, || started.exists()), "{}", sc.log_tail());
    fs::write(sc.path("go"), "").expect("go");
    standby.wait_status(&next, "completed", SOON);
}
