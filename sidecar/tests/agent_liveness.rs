//! Issue 17, part 1: the sidecar knows whether the agent it woke is still there.
//! An agent that exits without a result fails `agent_exited` (and the lease is
//! not renewed meanwhile), a detached agent that stops its heartbeat fails
//! `stalled`, and `max_runtime_ms` stops the agent's processes (`timeout`).

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn an_agent_that_exits_without_a_result_fails_agent_exited_and_the_task_completes_elsewhere() {
    let hub = Hub::start();
    let mut quitter = Sidecar::prepare(
        &hub,
        "quitter",
        "capabilities = [\"chores\"]\nagent_exit_grace_ms = 2000\nprogress_interval_ms = 100\n",
    );
    // The wake command is the agent: it works a second, then dies.
    quitter.set_wake(
        "touch \"$AGENTCOM_STARTED_FILE\"; sleep 1; echo 'quitter: out of patience'; exit 3",
    );
    quitter.spawn();
    quitter.wait_online(&hub);
    let (status, resp) = hub.post(
        "/api/tasks",
        &json!({"description": "chore", "needed_capabilities": ["chores"], "max_retries": 5}),
    );
    assert_eq!(status, 201, "{resp}");
    let task_id = resp["task_id"].as_str().expect("task_id").to_string();

    let ok = wait_for(SOON, || {
        !history_entries(&hub.task(&task_id), "retry").is_empty()
    });
    assert!(
        ok,
        "no retry: {}\n{}",
        hub.task(&task_id),
        quitter.log_tail()
    );
    quitter.stop();
    let task = hub.task(&task_id);
    let retry = &history_entries(&task, "retry")[0];
    assert_eq!(retry["details"]["reason"], "agent_exited", "{task}");
    let error = retry["details"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit status: 3") && error.contains("quitter: out of patience"),
        "the error has the exit status and the agent's last output: {error}"
    );
    // No lease renewal once the agent was gone: the grace (2 s) passed without
    // one, although renewals were due every 100 ms while it lived.
    let retry_at = retry["ts"].as_i64().expect("ts");
    let last_renewal = history_entries(&task, "progress")
        .iter()
        .filter(|e| e["details"]["agent_id"] == "quitter" && e["ts"].as_i64() < Some(retry_at))
        .filter_map(|e| e["ts"].as_i64())
        .max()
        .expect("renewals while the agent lived");
    assert!(
        retry_at - last_renewal >= 1500,
        "lease renewed {} ms before the failure: {task}",
        retry_at - last_renewal
    );

    // A well-behaved agent with the capability finishes it.
    let good = Sidecar::prepare(&hub, "steady", "capabilities = [\"chores\"]\n");
    let mut good = good;
    good.set_wake(&fake_agent(good.dir.path(), false));
    good.spawn();
    good.wait_online(&hub);
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(done["assigned_to"], "steady", "{done}");
}

#[test]
fn a_detached_agent_that_stops_its_heartbeat_is_stalled_and_the_task_retried() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(
        &hub,
        "remote",
        "wake_mode = \"detached\"\nstall_ms = 1500\n",
    );
    let d = sc.dir.path().display().to_string();
    // The wake returns at once; the first time the "remote" agent beats twice
    // and goes silent, the second time it finishes (in the background).
    let script = format!(
        r#"if [ -e '{d}/once' ]; then
  ( touch "$AGENTCOM_STARTED_FILE"; agentcom_ok='{{"status":"success"}}'; printf '%s' "$agentcom_ok" > "$AGENTCOM_RESULT_FILE.tmp"; mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE" ) &
else
  touch '{d}/once'
  ( touch "$AGENTCOM_STARTED_FILE"; for i in 1 2; do sleep 0.3; date > "$AGENTCOM_HEARTBEAT_FILE"; done ) </dev/null >/dev/null 2>&1 &
fi
exit 0"#
    );
    sc.set_wake(&script);
    sc.spawn();
    sc.wait_online(&hub);
    let task_id = hub.submit_for(
        "remote",
        json!({"description": "webhook job", "max_retries": 3}),
    );
    let done = hub.wait_status(&task_id, "completed", SOON);
    let retries = history_entries(&done, "retry");
    assert_eq!(retries.len(), 1, "{done}");
    assert_eq!(retries[0]["details"]["reason"], "stalled", "{done}");
    // Detached: the background processes ending early was no failure by itself.
    assert!(history_entries(&done, "retry")
        .iter()
        .all(|r| r["details"]["reason"] != "agent_exited"));
}

#[test]
fn max_runtime_stops_the_agents_processes_and_reports_timeout() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "slow", "");
    let d = sc.dir.path().display().to_string();
    // The agent runs in the foreground (the wake command is the agent) and
    // starts a helper; both must be gone after the timeout.
    sc.set_wake(&format!(
        "touch \"$AGENTCOM_STARTED_FILE\"; sleep 300 & echo $! > '{d}/helper.pid'; echo $$ > '{d}/agent.pid'; while true; do echo working; sleep 0.2; done"
    ));
    sc.spawn();
    sc.wait_online(&hub);
    let task_id = hub.submit_for(
        "slow",
        json!({"description": "never ends", "max_retries": 1, "max_runtime_ms": 1500}),
    );
    let dead = hub.wait_status(&task_id, "dead_letter", SOON);
    let error = dead["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("timeout"), "{dead}");
    assert_eq!(dead["max_runtime_ms"], 1500, "{dead}");
    for pid_file in ["helper.pid", "agent.pid"] {
        let pid: i32 = fs::read_to_string(sc.path(pid_file))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let gone = wait_for(Duration::from_secs(10), || {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) != 0 }
        });
        assert!(
            gone,
            "{pid_file}: process {pid} still runs after the timeout"
        );
    }
    sc.wait_idle();
}
