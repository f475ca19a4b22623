//! Issue 17, part 2: every result status an agent may write reaches the hub as
//! its report (`failed` with `retry_after_s`, `failed_terminal`, `blocked` with
//! `needs`, `no_work` on a standing order, an unknown status), and the
//! progress file becomes the task's progress.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// An agent that writes its task description as its result file.
fn echo_agent(dir: &Path) -> String {
    let script = r#"touch "$AGENTCOM_STARTED_FILE"
printf '%s' "$TASK_DESCRIPTION" > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;
    let path = dir.join("echo.sh");
    fs::write(&path, script).expect("write echo.sh");
    format!("sh '{}'", path.display())
}

fn submit_result(hub: &Hub, result: Value, extra: Value) -> String {
    let mut task = json!({"description": result.to_string()});
    if let (Some(t), Some(e)) = (task.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    hub.submit_for("echo", task)
}

#[test]
fn each_result_status_reaches_the_hub_as_its_report() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "echo", "");
    sc.set_wake(&echo_agent(sc.dir.path()));
    sc.spawn();
    sc.wait_online(&hub);

    // failed + retry_after_s: retried no sooner than asked, then dead-lettered.
    let later = submit_result(
        &hub,
        json!({"status": "failed", "reason": "rate limited", "retry_after_s": 2}),
        json!({"max_retries": 2}),
    );
    let t = hub.wait_status(&later, "dead_letter", SOON);
    let retry = &history_entries(&t, "retry")[0];
    assert_eq!(retry["details"]["reason"], "rate limited", "{t}");
    let at = retry["ts"].as_i64().expect("ts");
    let run_after = retry["details"]["run_after"].as_i64().expect("run_after");
    assert_eq!(run_after - at, 2000, "{t}");
    let second = history_entries(&t, "assigned")[1]["ts"]
        .as_i64()
        .expect("ts");
    assert!(second >= run_after, "assigned before run_after: {t}");

    // failed_terminal: dead letter at once.
    let hopeless = submit_result(
        &hub,
        json!({"status": "failed_terminal", "error": "the repository is gone"}),
        json!({"max_retries": 5}),
    );
    let t = hub.wait_status(&hopeless, "dead_letter", SOON);
    assert_eq!(t["retry_count"], 1, "{t}");
    assert_eq!(t["last_error"], "the repository is gone", "{t}");

    // blocked + needs, routed to agents with that capability.
    let stuck = submit_result(
        &hub,
        json!({"status": "blocked", "reason": "no cloud credentials", "needs": "aws-creds"}),
        json!({"blocked_policy": "route"}),
    );
    let ok = wait_for(SOON, || {
        let t = hub.task(&stuck);
        t["status"] == "queued" && t["needed_capabilities"] == json!(["aws-creds"])
    });
    let t = hub.task(&stuck);
    assert!(ok, "not routed: {t}");
    assert_eq!(
        history_entries(&t, "blocked")[0]["details"]["reason"],
        "no cloud credentials",
        "{t}"
    );
    assert_eq!(
        history_entries(&t, "blocked")[0]["details"]["needs"],
        "aws-creds",
        "{t}"
    );

    // An unknown status: invalid_result, naming the accepted ones.
    let odd = submit_result(
        &hub,
        json!({"status": "done-ish"}),
        json!({"max_retries": 1}),
    );
    let t = hub.wait_status(&odd, "dead_letter", SOON);
    let error = t["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("invalid_result") && error.contains("failed_terminal"),
        "{t}"
    );

    // success still completes, with the whole object.
    let fine = submit_result(
        &hub,
        json!({"status": "success", "summary": "all good"}),
        json!({}),
    );
    let t = hub.wait_status(&fine, "completed", SOON);
    assert_eq!(t["result"]["summary"], "all good", "{t}");
    sc.wait_idle();
}

#[test]
fn no_work_is_recorded_on_the_standing_order_run() {
    // Half a minute past a whole minute (1_800_000_000_000 is one).
    let t0: i64 = 1_800_000_000_000 + 30_000;
    let clock = HubClock::new(t0);
    let set_clock = |at: i64| clock.set(at);
    let hub = Hub::start_with_config(&clock.config());
    let mut sc = Sidecar::prepare(&hub, "echo", "");
    sc.set_wake(&echo_agent(sc.dir.path()));
    sc.spawn();
    sc.wait_online(&hub);
    let (status, order) = hub.post(
        "/api/standing-orders",
        &json!({"name": "sweep", "cron": "* * * * *", "timezone": "UTC", "agent": "echo",
                "window_ms": 120_000,
                "task": {"description": json!({"status": "no_work", "summary": "inbox empty"}).to_string()}}),
    );
    assert_eq!(status, 201, "{order}");
    let due = t0 + 30_000;
    set_clock(due + 5_000);
    let mut runs = Value::Null;
    let ok = wait_for(SOON, || {
        runs = hub.get("/api/standing-orders/sweep/runs").1;
        runs["runs"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["scheduled_for"] == due && r["status"] == "no_work")
        })
    });
    assert!(ok, "no no_work run: {runs}\n{}", sc.log_tail());
}

#[test]
fn the_progress_file_becomes_the_tasks_progress() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "reporter", "");
    let d = sc.dir.path().display().to_string();
    let bin = sidecar_bin().display().to_string();
    // Progress through the CLI helper, then a bad progress file (ignored), then
    // wait for `go` and finish.
    let script = format!(
        r#"touch "$AGENTCOM_STARTED_FILE"
'{bin}' progress 42 --message 'halfway there'
(
  i=0; while [ ! -e '{d}/go' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
  printf '{{"percent":"lots"}}' > "$AGENTCOM_PROGRESS_FILE"
  sleep 0.5
  printf '{{"status":"success"}}' > "$AGENTCOM_RESULT_FILE.tmp"
  mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
) </dev/null >/dev/null 2>&1 &
"#
    );
    fs::write(sc.path("agent.sh"), script).expect("agent.sh");
    sc.set_wake(&format!("sh '{d}/agent.sh'"));
    sc.spawn();
    sc.wait_online(&hub);
    let task_id = hub.submit_for("reporter", json!({"description": "long job"}));
    let mut last = Value::Null;
    let ok = wait_for(SOON, || {
        last = hub.task(&task_id);
        last["progress"]["percent"] == 42
    });
    assert!(ok, "no progress on the task: {last}\n{}", sc.log_tail());
    assert_eq!(last["progress"]["message"], "halfway there", "{last}");
    let (_, listing) = hub.get("/api/tasks?status=assigned");
    let row = listing["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == task_id.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(
        row["progress"]["percent"], 42,
        "the listing shows it too: {listing}"
    );
    fs::write(sc.path("go"), "").expect("go");
    let done = hub.wait_status(&task_id, "completed", SOON);
    // The bad file changed nothing; the last good progress stays on the task.
    assert_eq!(done["progress"]["percent"], 42, "{done}");
}

#[test]
fn a_usage_limited_result_hands_the_task_back_unspent_and_pauses_the_agent() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "echo", "");
    sc.set_wake(&echo_agent(sc.dir.path()));
    sc.spawn();
    sc.wait_online(&hub);
    let resets_at = now_ms() + 3_600_000;
    let limited = submit_result(
        &hub,
        json!({"status": "usage_limited", "resets_at": resets_at, "reason": "weekly cap"}),
        json!({}),
    );
    // Queued at first too: wait until it was handed back.
    let handed_back = wait_for(SOON, || {
        !history_entries(&hub.task(&limited), "usage_limited").is_empty()
    });
    assert!(handed_back, "{}", hub.task(&limited));
    let t = hub.wait_status(&limited, "queued", SOON);
    let given_back = history_entries(&t, "usage_limited");
    assert_eq!(given_back.len(), 1, "{t}");
    assert_eq!(given_back[0]["details"]["reason"], "weekly cap", "{t}");
    assert_eq!(t["retry_count"], 0, "{t}");
    let (_, usage) = hub.get("/api/usage");
    assert_eq!(
        usage["paused"][0]["credential_group"], "agent:echo",
        "{usage}"
    );
    assert_eq!(usage["paused"][0]["until"], resets_at, "{usage}");
    // Paused: the task stays queued (the sidecar is not offered it again).
    let (status, _) = hub.post(&format!("/api/tasks/{limited}/cancel"), &json!({}));
    assert_eq!(status, 200);
    // A result without resets_at is refused as invalid.
    let (status, _) = hub.post("/api/usage/agent:echo/resume", &json!({}));
    assert_eq!(status, 200);
    let bad = submit_result(
        &hub,
        json!({"status": "usage_limited"}),
        json!({"max_retries": 0}),
    );
    let t = hub.wait_status(&bad, "dead_letter", SOON);
    assert!(
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("resets_at")),
        "{t}"
    );
}
