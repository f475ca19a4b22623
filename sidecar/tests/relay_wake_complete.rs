//! Issue test 1: the assignment is persisted before `task_accepted`; the wake
//! command receives the task; the result file completes the task on the hub.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn assignment_is_persisted_before_accept_and_the_result_completes_the_task() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "worker-1", "");
    let wake = fake_agent(sc.dir.path(), false);
    sc.set_wake(&wake);

    // Make persisting the assignment impossible: the temp file `current.json`
    // is written through is a directory.
    let blocker = sc.state_dir().join(".current.json.tmp");
    fs::create_dir_all(&blocker).expect("blocker");
    sc.spawn();
    sc.wait_online(&hub);

    let description = "Summarize the quarterly report\nwith two lines";
    let task_id = hub.submit_for(
        "worker-1",
        json!({"description": description, "metadata": {"k": "v"}}),
    );

    // The sidecar cannot persist, so it must not accept: it rejects (the hub
    // re-queues at once) and the agent is never woken.
    let ok = wait_for(SOON, || count_events(&hub.task(&task_id), "rejected") >= 1);
    assert!(
        ok,
        "no rejection: {}\n{}",
        hub.task(&task_id),
        sc.log_tail()
    );
    let t = hub.task(&task_id);
    assert_eq!(
        count_events(&t, "accepted"),
        0,
        "accepted without a persisted assignment: {t}"
    );
    assert!(
        wakes(sc.dir.path()).is_empty(),
        "woken without a persisted assignment"
    );

    // Once the state dir works again the hub's next offer is persisted, accepted,
    // woken and completed.
    fs::remove_dir(&blocker).expect("remove blocker");
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "accepted"), 1, "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    assert_eq!(done["result"]["status"], "success", "{done}");
    assert_eq!(
        done["result"]["summary"], "done by the fake agent",
        "{done}"
    );

    // The wake command got the task.
    assert_eq!(wakes(sc.dir.path()), vec![task_id.clone()]);
    let got = fs::read_to_string(sc.path(&format!("desc-{task_id}.txt"))).expect("desc file");
    assert_eq!(got, description);
    // The task file handed to the agent held the whole assignment; it is
    // archived with the results once the hub acknowledged the completion.
    sc.wait_idle();
    let archived: Vec<String> = fs::read_dir(sc.state_dir().join("archive"))
        .expect("archive dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        archived
            .iter()
            .any(|n| n.starts_with(&task_id) && n.ends_with(".json")),
        "result archived: {archived:?}"
    );
    assert!(!sc.results_dir().join(format!("{task_id}.json")).exists());

    // Still serving: a second task goes through too.
    let second = hub.submit_for("worker-1", json!({"description": "second"}));
    hub.wait_status(&second, "completed", SOON);
    assert_eq!(wakes(sc.dir.path()).len(), 2);
}

#[test]
fn progress_renews_a_short_lease_while_the_agent_works() {
    // Leases are checked every 100 ms; the task's lease is 1 s and the agent
    // works for several leases. Only the sidecar's task_progress keeps it.
    let hub = Hub::start_with_config("sweep_interval_ms = 100\n");
    let mut sc = Sidecar::prepare(&hub, "renewer", "");
    sc.set_wake(&fake_agent(sc.dir.path(), true));
    sc.spawn();
    sc.wait_online(&hub);
    let task_id = hub.submit_for("renewer", json!({"description": "slow", "lease_ms": 1000}));
    let started = sc.results_dir().join(format!("{task_id}.started"));
    assert!(wait_for(SOON, || started.exists()));
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let t = hub.task(&task_id);
    assert_eq!(t["status"], "assigned", "lease kept: {t}");
    assert_eq!(count_events(&t, "reclaimed"), 0, "{t}");
    assert!(count_events(&t, "progress") >= 1, "progress recorded: {t}");
    fs::write(sc.path("go"), "").expect("go");
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(count_events(&done, "completed"), 1);
}
