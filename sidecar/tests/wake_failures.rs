//! Issue test 6: a failing wake command is retried and then reported as
//! `task_failed` (`wake_failed`); a missing `.started` is reported as
//! `confirmation_timeout`; `task_cancelled` kills the woken process group.

mod common;

use std::fs;

use common::*;
use serde_json::json;

fn with_wake(
    hub: &Hub,
    agent: &str,
    wake: impl Fn(&std::path::Path) -> String,
    extra: &str,
) -> Sidecar {
    let mut sc = Sidecar::prepare(hub, agent, extra);
    sc.set_wake(&wake(sc.dir.path()));
    sc.spawn();
    sc.wait_online(hub);
    sc
}

#[test]
fn failing_wake_is_retried_four_times_then_reported_wake_failed() {
    let hub = Hub::start();
    let sc = with_wake(
        &hub,
        "sleepy",
        |d| format!("echo attempt >> '{}/attempts.log'; exit 3", d.display()),
        "",
    );
    // max_retries 1: the first failure dead-letters, so the hub does not offer
    // the task again and the attempt count is exact.
    let task_id = hub.submit_for(
        "sleepy",
        json!({"description": "never wakes", "max_retries": 1}),
    );
    let t = hub.wait_status(&task_id, "dead_letter", SOON);
    let last_error = t["last_error"].as_str().unwrap_or_default();
    assert!(last_error.starts_with("wake_failed"), "{t}");
    let attempts = fs::read_to_string(sc.path("attempts.log")).unwrap_or_default();
    assert_eq!(attempts.lines().count(), 4, "1 attempt + 3 retries");
    sc.wait_idle();
}

#[test]
fn wake_that_times_out_counts_as_a_failed_attempt() {
    let hub = Hub::start();
    let sc = with_wake(
        &hub,
        "stuck",
        |d| {
            format!(
                "echo attempt >> '{}/attempts.log'; exec sleep 30",
                d.display()
            )
        },
        "wake_timeout_ms = 200\nwake_retry_delays_ms = [10]\n",
    );
    let task_id = hub.submit_for("stuck", json!({"description": "hangs", "max_retries": 1}));
    let t = hub.wait_status(&task_id, "dead_letter", SOON);
    let last_error = t["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with("wake_failed") && last_error.contains("200 ms"),
        "{t}"
    );
    let attempts = fs::read_to_string(sc.path("attempts.log")).unwrap_or_default();
    assert_eq!(attempts.lines().count(), 2);
}

#[test]
fn missing_started_file_is_reported_as_confirmation_timeout() {
    let hub = Hub::start();
    let sc = with_wake(
        &hub,
        "mute",
        |d| format!("echo woken >> '{}/wakes.log'", d.display()),
        "confirmation_timeout_ms = 300\n",
    );
    let task_id = hub.submit_for(
        "mute",
        json!({"description": "never confirms", "max_retries": 1}),
    );
    let t = hub.wait_status(&task_id, "dead_letter", SOON);
    let last_error = t["last_error"].as_str().unwrap_or_default();
    assert!(last_error.starts_with("confirmation_timeout"), "{t}");
    assert_eq!(
        wakes(sc.dir.path()).len(),
        1,
        "one successful wake, no retry"
    );
    sc.wait_idle();
}

/// State letter of a process from /proc (`None` once it is gone).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

#[test]
fn task_cancelled_kills_the_woken_process_group() {
    let hub = Hub::start();
    let sc = with_wake(
        &hub,
        "busy-bee",
        |d| {
            let d = d.display();
            format!(
                "sleep 600 & echo $! > '{d}/worker.pid'; touch \"$AGENTCOM_STARTED_FILE\"; echo woken >> '{d}/wakes.log'"
            )
        },
        "kill_grace_ms = 2000\n",
    );
    let task_id = hub.submit_for("busy-bee", json!({"description": "works forever"}));
    let pid_file = sc.path("worker.pid");
    assert!(wait_for(SOON, || fs::read_to_string(&pid_file)
        .is_ok_and(|s| s.trim().parse::<i32>().is_ok())));
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        wait_for(SOON, || sc
            .current()
            .is_some_and(|c| c["phase"] == "working")),
        "never working: {:?}\n{}",
        sc.current(),
        sc.log_tail()
    );
    assert!(
        matches!(proc_state(pid), Some(s) if s != 'Z'),
        "the agent process runs"
    );

    let (status, resp) = hub.post(&format!("/api/tasks/{task_id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{resp}");

    // Gone, or a zombie waiting for a reaper that is not ours to be.
    let killed = wait_for(SOON, || matches!(proc_state(pid), None | Some('Z')));
    assert!(
        killed,
        "woken process {pid} still running:\n{}",
        sc.log_tail()
    );
    sc.wait_idle();
    assert_eq!(hub.task(&task_id)["status"], "cancelled");

    // The sidecar is free again: the next task is taken.
    let next = hub.submit_for("busy-bee", json!({"description": "next"}));
    let ok = wait_for(SOON, || count_events(&hub.task(&next), "accepted") == 1);
    assert!(ok, "next task not accepted: {}", hub.task(&next));
}
