//! Budgets through the sidecar (#20, PROTOCOL.md 6.28): the agent's progress
//! file carries its spend (`tokens_used`, `cost_usd`); over the task's budget
//! the hub pauses the task, the sidecar stops the agent's process group
//! (SIGSTOP) and writes `results/<id>.paused`; a raise resumes it where it
//! stopped (SIGCONT) and the task completes with everything it spent.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use serde_json::json;

/// An agent that reports spend over its budget, then waits for `go` before
/// finishing (bounded: about a minute).
fn spending_agent(dir: &std::path::Path) -> String {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
touch "$AGENTCOM_STARTED_FILE"
printf '{{"percent":50,"tokens_used":1500,"cost_usd":0.15}}' > "$AGENTCOM_PROGRESS_FILE.tmp"
mv "$AGENTCOM_PROGRESS_FILE.tmp" "$AGENTCOM_PROGRESS_FILE"
i=0
while [ ! -e '{d}/go' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "finished" >> '{d}/finished.log'
printf '{{"status":"success","summary":"done","tokens_used":2000,"cost_usd":0.2}}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#
    );
    let path = dir.join("agent.sh");
    fs::write(&path, script).expect("write agent.sh");
    format!("sh '{}'", path.display())
}

/// The states (`/proc/<pid>/stat`, third field) of the processes of group
/// `pgid`.
fn group_states(pgid: i64) -> Vec<char> {
    let mut states = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return states;
    };
    for e in entries.flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<i64>().ok()) == Some(pgid) {
            if let Some(c) = fields.first().and_then(|s| s.chars().next()) {
                states.push(c);
            }
        }
    }
    states
}

#[test]
fn an_agent_over_budget_is_stopped_and_resumes_after_a_raise() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "spender", "");
    let wake = spending_agent(sc.dir.path());
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for(
        "spender",
        json!({"description": "costly", "budget_tokens": 1000}),
    );
    let paused = hub.wait_status(&task, "input_required", SOON);
    assert_eq!(paused["question"]["budget"]["scope"], "task", "{paused}");
    assert_eq!(paused["spent"]["tokens"], 1500, "{paused}");
    let stopped = wait_for(SOON, || {
        sc.held().first().is_some_and(|r| r["phase"] == "paused")
    });
    assert!(stopped, "{:?}\n{}", sc.held(), sc.log_tail());
    let pgid = sc.held()[0]["pgid"].as_i64().expect("the agent's group");
    assert!(
        wait_for(SOON, || {
            let s = group_states(pgid);
            !s.is_empty() && s.iter().all(|c| *c == 'T')
        }),
        "the agent's processes are not stopped: {:?}",
        group_states(pgid)
    );
    let marker = sc.results_dir().join(format!("{task}.paused"));
    let why: serde_json::Value =
        serde_json::from_slice(&fs::read(&marker).expect("paused file")).expect("json");
    assert_eq!(why["reason"], "budget_exceeded", "{why}");

    // Told to go while stopped: it cannot act on it until resumed.
    fs::write(sc.path("go"), "").expect("go");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!sc.path("finished.log").exists(), "a stopped agent ran on");
    assert_eq!(hub.task(&task)["status"], "input_required");

    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/budget"),
        &json!({"budget_tokens": 5000}),
    );
    assert_eq!(status, 200, "{body}");
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    let t = hub.task(&task);
    assert_eq!(t["spent"]["tokens"], 2000, "{t}");
    assert!(!marker.exists(), "the paused file is removed on resume");
    assert_eq!(count_events(&t, "budget_exceeded"), 1, "{t}");
    assert_eq!(count_events(&t, "resumed"), 1, "{t}");
    let (_, spend) = hub.get("/api/spend");
    assert_eq!(
        spend["today"]["agents"]["spender"]["tokens"], 2000,
        "{spend}"
    );
}
