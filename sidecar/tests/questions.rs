//! A question through the sidecar (#20, PROTOCOL.md 6.26): the agent writes a
//! result with status `input_required`; the hub shows the question; an
//! operator answers; the sidecar writes `results/<id>.answer.json` and wakes
//! the agent again with `TASK_ANSWER`, whose result completes the task. A kill
//! of the sidecar while it waits loses nothing.

mod common;

use std::fs;

use common::*;
use serde_json::json;

/// An agent that asks on its first wake and answers with what it was told.
fn asking_agent(dir: &std::path::Path) -> String {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
echo "$TASK_ID ${{TASK_ANSWER:-}}" >> '{d}/wakes.log'
touch "$AGENTCOM_STARTED_FILE"
if [ -z "${{TASK_ANSWER:-}}" ]; then
  printf '{{"status":"input_required","question":"Which region?","options":["eu","us"]}}' > "$AGENTCOM_RESULT_FILE.tmp"
else
  printf '{{"status":"success","region":"%s","answer_file":"%s"}}' "$TASK_ANSWER" "$TASK_ANSWER_FILE" > "$AGENTCOM_RESULT_FILE.tmp"
fi
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
exit 0
"#
    );
    let path = dir.join("agent.sh");
    fs::write(&path, script).expect("write agent.sh");
    format!("sh '{}'", path.display())
}

#[test]
fn the_agent_asks_an_operator_answers_and_the_agent_finishes_with_it() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "asker", "");
    let wake = asking_agent(sc.dir.path());
    sc.set_wake(&wake);
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for("asker", json!({"description": "deploy"}));
    let asked = hub.wait_status(&task, "input_required", SOON);
    assert_eq!(asked["question"]["options"], json!(["eu", "us"]), "{asked}");
    assert!(
        wait_for(SOON, || sc
            .held()
            .first()
            .is_some_and(|r| r["phase"] == "awaiting_answer")),
        "the sidecar does not wait: {:?}\n{}",
        sc.held(),
        sc.log_tail()
    );
    // The sidecar dies while it waits; the answer comes while it is down.
    sc.kill9();
    let t = hub.wait_status(&task, "queued", SOON);
    assert_eq!(
        t["reclaim_count"], 1,
        "a dropped socket returns the task: {t}"
    );
    sc.spawn();
    hub.wait_status(&task, "input_required", SOON);
    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/answer"),
        &json!({"answer": "eu"}),
    );
    assert_eq!(status, 200, "{body}");
    let finished = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(
        finished,
        "not completed: {}\n{}",
        hub.task(&task),
        sc.log_tail()
    );
    let done = hub.task(&task);
    assert_eq!(done["result"]["region"], "eu", "{done}");
    assert!(
        done["result"]["answer_file"]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("{task}.answer.json"))),
        "{done}"
    );
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
    sc.wait_idle();
    let woken = wakes(sc.dir.path());
    assert_eq!(
        woken.last().map(String::as_str),
        Some(format!("{task} eu").as_str()),
        "{woken:?}"
    );
}
