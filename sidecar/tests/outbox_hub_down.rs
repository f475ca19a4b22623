//! Issue test 5: the hub is unreachable when the result arrives; the report
//! waits in the durable outbox and is delivered once the hub is back.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn result_arriving_while_the_hub_is_down_is_delivered_when_it_returns() {
    let mut hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "patient", "");
    let wake = fake_agent(sc.dir.path(), true);
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);

    let task_id = hub.submit_for(
        "patient",
        json!({"description": "finish while the hub sleeps"}),
    );
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(
        wait_for(SOON, || started.exists()),
        "agent never started:\n{}",
        sc.log_tail()
    );

    hub.stop();
    fs::write(sc.path("go"), "").expect("go");
    // The completion is queued durably while the hub is away.
    let queued = wait_for(SOON, || {
        sc.outbox()
            .iter()
            .any(|e| e["task_id"] == task_id.as_str() && e["frame"]["type"] == "task_complete")
    });
    assert!(
        queued,
        "no task_complete in the outbox: {:?}\n{}",
        sc.outbox(),
        sc.log_tail()
    );
    assert_eq!(
        sc.current().map(|c| c["phase"].clone()),
        Some(json!("reporting"))
    );

    hub.start_again();
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    assert_eq!(done["result"]["status"], "success", "{done}");
    sc.wait_idle();
    assert_eq!(
        wakes(sc.dir.path()),
        vec![task_id.clone()],
        "woken exactly once"
    );
}
