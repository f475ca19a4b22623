//! The alerter: each rule fires and clears, thresholds change at runtime (and are
//! kept across a restart), acknowledge, cooldown with critical bypass, the start-up
//! grace, and webhook delivery with retries and counted failures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast metrics and checks, no grace: alerts follow within a fraction of a second.
const FAST: &str =
    "metrics_interval_ms = 100\nalert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n";
const WAIT: Duration = Duration::from_secs(20);

fn alerts(hub: &Hub) -> Value {
    let (status, body) = hub.get("/api/alerts");
    assert_eq!(status, 200, "{body}");
    body
}

fn active(hub: &Hub, rule: &str) -> Option<Value> {
    alerts(hub)["active"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["rule_id"] == rule).cloned())
}

fn events(hub: &Hub, rule: &str, kind: &str) -> usize {
    alerts(hub)["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["rule_id"] == rule && x["kind"] == kind)
                .count()
        })
        .unwrap_or(0)
}

fn set_thresholds(hub: &Hub, body: Value) -> (u16, Value) {
    http(
        "PUT",
        &hub.url("/api/config/alert-thresholds"),
        Some(&hub.admin_token),
        Body::Json(&body),
    )
}

/// A webhook receiver on 127.0.0.1: answers `status` to at most `max` requests and
/// forwards each JSON body.
fn webhook(status: u16, max: usize) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
            }
        }
    });
    (url, rx)
}

#[test]
fn no_agents_online_fires_is_acknowledged_clears_and_reaches_the_webhook() {
    let (url, hooks) = webhook(200, 50);
    let hub = Hub::start_with_config(&format!("{FAST}alert_webhook_url = \"{url}\"\n"));
    assert!(
        alerts(&hub)["active"] == json!([]),
        "nobody registered: nothing to say"
    );
    let token = register_agent(&hub, "lonely", &[]);
    assert!(wait_for(WAIT, || active(&hub, "no_agents_online").is_some()));
    let alert = active(&hub, "no_agents_online").expect("active");
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["acknowledged"], false, "{alert}");
    let fired = hooks.recv_timeout(WAIT).expect("webhook called");
    assert_eq!(fired["event"], "fired", "{fired}");
    assert_eq!(fired["rule_id"], "no_agents_online", "{fired}");

    let (status, resp) = hub.post("/api/alerts/no_agents_online/acknowledge", &json!({}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        active(&hub, "no_agents_online").expect("still active")["acknowledged"],
        true
    );
    let (status, _) = hub.post("/api/alerts/queue_growing/acknowledge", &json!({}));
    assert_eq!(status, 404, "no such active alert");
    let (status, _) = hub.post_as(
        "/api/alerts/no_agents_online/acknowledge",
        Some(&token),
        &json!({}),
    );
    assert_eq!(status, 403);

    let _agent = Agent::connect(&hub, "lonely", &token);
    assert!(wait_for(WAIT, || active(&hub, "no_agents_online").is_none()));
    assert_eq!(events(&hub, "no_agents_online", "cleared"), 1);
    let mut seen = Vec::new();
    while let Ok(v) = hooks.recv_timeout(WAIT) {
        seen.push(v["event"].as_str().unwrap_or("").to_string());
        if seen.last().map(String::as_str) == Some("cleared") {
            break;
        }
    }
    assert_eq!(seen, ["acknowledged", "cleared"], "webhook events in order");
    let w = &alerts(&hub)["webhook"];
    assert_eq!(w["configured"], true, "{w}");
    assert!(w["delivered"].as_u64().unwrap_or(0) >= 3, "{w}");
    assert_eq!(w["failed"], 0, "{w}");
}

#[test]
fn queue_growing_and_stuck_tasks_fire_and_clear() {
    let hub = Hub::start_with_config(FAST);
    let (status, _) = set_thresholds(
        &hub,
        json!({"queue_depth": 3, "queue_growing_checks": 2, "stuck_task_ms": 300}),
    );
    assert_eq!(status, 200);
    let depth = |hub: &Hub| hub.get("/api/metrics").1["queue_depth"]["now"].as_u64();
    for round in 1..=3u64 {
        for n in 0..5 {
            submit(
                &hub,
                json!({"description": format!("round {round} task {n}")}),
            );
        }
        assert!(wait_for(WAIT, || depth(&hub) == Some(5 * round)));
    }
    assert!(wait_for(WAIT, || active(&hub, "queue_growing").is_some()));
    assert_eq!(
        active(&hub, "queue_growing").expect("active")["severity"],
        "warning"
    );

    // An agent takes one task and sits on it: stuck; the rest drain.
    let t = register_agent(&hub, "sitter", &[]);
    let mut sitter = Agent::connect(&hub, "sitter", &t);
    let assign = sitter.recv_type("task_assign", PUSH_TIMEOUT);
    let task_id = assign["task_id"].as_str().expect("task id").to_string();
    sitter.accept(&task_id, assign["generation"].clone());
    assert!(wait_for(WAIT, || active(&hub, "stuck_tasks").is_some()));
    let stuck = active(&hub, "stuck_tasks").expect("active");
    assert_eq!(
        stuck["details"]["tasks"][0]["task_id"],
        task_id.as_str(),
        "{stuck}"
    );
    let worker = Worker::spawn(&hub, "drain", Duration::from_millis(1));
    assert!(wait_for(WAIT, || depth(&hub) == Some(0)));
    assert!(wait_for(WAIT, || active(&hub, "queue_growing").is_none()));
    sitter.send(json!({"type": "task_complete", "task_id": task_id,
                       "generation": assign["generation"], "result": {}}));
    assert_eq!(
        sitter.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    assert!(wait_for(WAIT, || active(&hub, "stuck_tasks").is_none()));
    drop(worker.stop());
}

#[test]
fn failure_rate_and_error_rate_follow_thresholds_changed_at_runtime() {
    let mut hub = Hub::start_with_config(FAST);
    // Very tolerant first: errors do not alert.
    let (status, resp) = set_thresholds(
        &hub,
        json!({"error_rate_per_min": 1e9, "window_ms": 2000, "cooldown_ms": 0,
               "min_finished": 2, "failure_rate": 0.5, "failure_rate_critical": 0.9}),
    );
    assert_eq!(status, 200, "{resp}");
    for _ in 0..10 {
        assert_eq!(hub.get("/api/tasks/no-such-task").0, 404);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(active(&hub, "high_error_rate").is_none());
    // Strict now: the next check uses it.
    let (status, _) = set_thresholds(&hub, json!({"error_rate_per_min": 1.0}));
    assert_eq!(status, 200);
    for _ in 0..10 {
        assert_eq!(hub.get("/api/tasks/no-such-task").0, 404);
    }
    assert!(wait_for(WAIT, || active(&hub, "high_error_rate").is_some()));
    // Quiet for the window: it clears.
    assert!(wait_for(WAIT, || active(&hub, "high_error_rate").is_none()));

    // Every attempt fails: critical failure rate.
    let t = register_agent(&hub, "failer", &[]);
    let mut failer = Agent::connect(&hub, "failer", &t);
    for n in 0..3 {
        let id = submit(
            &hub,
            json!({"description": format!("doomed {n}"), "max_retries": 1}),
        );
        let assign = failer.recv_type("task_assign", PUSH_TIMEOUT);
        assert_eq!(assign["task_id"], id.as_str());
        failer.send(json!({"type": "task_failed", "task_id": id,
                           "generation": assign["generation"], "error": "no"}));
        failer.recv_ack(&id, REPLY_TIMEOUT);
    }
    assert!(wait_for(WAIT, || active(&hub, "high_failure_rate")
        .is_some_and(|a| a["severity"] == "critical")));
    assert!(wait_for(WAIT, || active(&hub, "high_failure_rate").is_none()));

    // Bad thresholds change nothing; good ones survive a restart.
    for bad in [
        json!({"failure_rate": 2}),
        json!({"window_ms": 5}),
        json!({"loudness": 3}),
        json!({"queue_depth": "many"}),
    ] {
        let (status, resp) = set_thresholds(&hub, bad.clone());
        assert_eq!(status, 422, "{bad} → {resp}");
    }
    let (_, resp) = set_thresholds(&hub, json!({"failure_rate": 0.95}));
    assert_eq!(
        resp["errors"],
        json!([{"field": "", "error": "invalid_value",
                "detail": "failure_rate_critical must be at least failure_rate"}]),
        "{resp}"
    );
    let (_, resp) = set_thresholds(&hub, json!({"window_ms": 5}));
    assert_eq!(resp["errors"][0]["field"], "window_ms", "{resp}");
    assert_eq!(
        resp["errors"][0]["detail"], "must be between 100 and 3600000",
        "{resp}"
    );
    let (status, _) = http(
        "PUT",
        &hub.url("/api/config/alert-thresholds"),
        Some(&t),
        Body::Json(&json!({"queue_depth": 1})),
    );
    assert_eq!(status, 403);
    hub.restart();
    let (_, thresholds) = hub.get("/api/config/alert-thresholds");
    assert_eq!(thresholds["error_rate_per_min"], 1.0, "{thresholds}");
    assert_eq!(thresholds["window_ms"], 2000, "{thresholds}");
}

#[test]
fn cooldown_holds_back_a_warning_but_not_a_critical() {
    let hub = Hub::start_with_config(FAST);
    let (status, _) = set_thresholds(
        &hub,
        json!({"error_rate_per_min": 1.0, "window_ms": 1000, "cooldown_ms": 3_600_000}),
    );
    assert_eq!(status, 200);
    for _ in 0..5 {
        hub.get("/api/tasks/nope");
    }
    assert!(wait_for(WAIT, || active(&hub, "high_error_rate").is_some()));
    assert!(wait_for(WAIT, || active(&hub, "high_error_rate").is_none()));
    // Within the cooldown the same warning does not fire again.
    for _ in 0..5 {
        hub.get("/api/tasks/nope");
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(events(&hub, "high_error_rate", "fired"), 1);

    // A critical one does, every time.
    let t = register_agent(&hub, "blinker", &[]);
    for round in 1..=2 {
        assert!(wait_for(WAIT, || active(&hub, "no_agents_online").is_some()));
        let agent = Agent::connect(&hub, "blinker", &t);
        assert!(wait_for(WAIT, || active(&hub, "no_agents_online").is_none()));
        disconnect(&hub, agent);
        // It may already have fired again for this disconnect (checks run
        // every 100 ms): at least once per round so far.
        assert!(events(&hub, "no_agents_online", "fired") >= round);
    }
    assert!(wait_for(WAIT, || events(&hub, "no_agents_online", "fired") == 3));
}

#[test]
fn nothing_fires_during_the_start_up_grace() {
    let hub = Hub::start_with_config(
        "metrics_interval_ms = 100\nalert_check_interval_ms = 100\nalert_startup_grace_ms = 4000\n",
    );
    register_agent(&hub, "absent", &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alerts(&hub)["active"], json!([]), "within the grace");
    assert!(wait_for(WAIT, || active(&hub, "no_agents_online").is_some()));
}

#[test]
fn a_failing_webhook_is_retried_then_counted() {
    let (url, hooks) = webhook(500, 50);
    let hub = Hub::start_with_config(&format!(
        "{FAST}alert_webhook_url = \"{url}\"\nalert_webhook_retries = 2\n"
    ));
    register_agent(&hub, "gone", &[]);
    // One event, three attempts (1 + 2 retries), all refused.
    for _ in 0..3 {
        let body = hooks.recv_timeout(WAIT).expect("an attempt");
        assert_eq!(body["rule_id"], "no_agents_online", "{body}");
    }
    assert!(wait_for(WAIT, || alerts(&hub)["webhook"]["failed"] == 1));
    assert_eq!(alerts(&hub)["webhook"]["attempts_failed"], 3);
}

/// Takes the next assignment and reports it failed with `error`.
fn fail_next(agent: &mut Agent, error: &str) -> String {
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    let id = assign["task_id"].as_str().expect("task id").to_string();
    agent.send(json!({"type": "task_failed", "task_id": id,
                      "generation": assign["generation"], "error": error}));
    agent.recv_ack(&id, REPLY_TIMEOUT);
    id
}

#[test]
fn agent_offline_names_an_agent_that_left_and_clears_when_it_returns() {
    let hub = Hub::start_with_config(FAST);
    let (status, resp) = set_thresholds(&hub, json!({"agent_offline_ms": 200, "cooldown_ms": 0}));
    assert_eq!(status, 200, "{resp}");
    // Registered but never connected since the hub started: not watched.
    register_agent(&hub, "never", &[]);
    let (token, agent) = online_agent(&hub, "leaver");
    disconnect(&hub, agent);
    assert!(wait_for(WAIT, || active(&hub, "agent_offline").is_some()));
    let alert = active(&hub, "agent_offline").expect("active");
    assert_eq!(alert["details"]["count"], 1, "{alert}");
    assert_eq!(
        alert["details"]["agents"][0]["agent_id"], "leaver",
        "{alert}"
    );
    assert!(
        alert["details"]["agents"][0]["offline_since"].is_i64(),
        "{alert}"
    );
    let _back = Agent::connect(&hub, "leaver", &token);
    assert!(wait_for(WAIT, || active(&hub, "agent_offline").is_none()));
    assert_eq!(events(&hub, "agent_offline", "cleared"), 1);
}

#[test]
fn queued_too_long_names_the_waiting_task_and_whether_a_capable_agent_is_online() {
    let hub = Hub::start_with_config(FAST);
    let (status, resp) = set_thresholds(&hub, json!({"queued_age_ms": 200, "cooldown_ms": 0}));
    assert_eq!(status, 200, "{resp}");
    let cpu_token = register_agent(&hub, "cpu", &[]);
    let _cpu = Agent::connect_with_caps(&hub, "cpu", &cpu_token, &["cpu"]);
    // Older, but waiting for its `run_after` by choice: not the one named.
    submit(
        &hub,
        json!({"description": "later", "needed_capabilities": ["gpu"],
               "run_after": now_ms() + 3_600_000}),
    );
    let waiting = submit(
        &hub,
        json!({"description": "needs a gpu", "needed_capabilities": ["gpu"]}),
    );
    assert!(wait_for(WAIT, || active(&hub, "queued_too_long").is_some()));
    let alert = active(&hub, "queued_too_long").expect("active");
    let details = &alert["details"];
    assert_eq!(details["task_id"], waiting.as_str(), "{alert}");
    assert_eq!(details["needed_capabilities"], json!(["gpu"]), "{alert}");
    assert_eq!(details["capable_agent_online"], false, "{alert}");
    // The age shows in the stats and the metrics too.
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(
        stats["oldest_queued_since"], details["waiting_since"],
        "{stats}"
    );
    assert!(wait_for(WAIT, || hub.get("/api/metrics").1["queue_depth"]
        ["oldest_queued_age_ms"]
        .is_i64()));
    let (_, text) = hub.get("/metrics");
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("agentcom_oldest_queued_age_seconds")),
        "{text}"
    );
    // A capable agent takes it: cleared.
    let gpu_token = register_agent(&hub, "gpu", &[]);
    let mut gpu = Agent::connect_with_caps(&hub, "gpu", &gpu_token, &["gpu"]);
    let taken = gpu.take(&waiting);
    assert!(wait_for(WAIT, || active(&hub, "queued_too_long").is_none()));
    gpu.complete(&taken);
}

#[test]
fn dead_letter_growth_fires_when_tasks_dead_letter_and_clears_after_the_window() {
    let hub = Hub::start_with_config(FAST);
    let (status, resp) = set_thresholds(
        &hub,
        json!({"dead_letter_growth": 2, "window_ms": 1000, "cooldown_ms": 0,
               "agent_failing_attempts": 50}),
    );
    assert_eq!(status, 200, "{resp}");
    let t = register_agent(&hub, "doomed", &[]);
    let mut agent = Agent::connect(&hub, "doomed", &t);
    for n in 0..2 {
        submit(
            &hub,
            json!({"description": format!("dies {n}"), "max_retries": 1}),
        );
        fail_next(&mut agent, "no");
    }
    assert!(wait_for(WAIT, || active(&hub, "dead_letter_growth").is_some()));
    let alert = active(&hub, "dead_letter_growth").expect("active");
    assert!(
        alert["details"]["dead_lettered"].as_u64() >= Some(2),
        "{alert}"
    );
    assert_eq!(alert["details"]["dead_letter"], 2, "{alert}");
    // Nothing more dead-letters: once the window has passed, it clears.
    assert!(wait_for(WAIT, || active(&hub, "dead_letter_growth").is_none()));
}

#[test]
fn agent_failing_fires_after_failures_in_a_row_and_clears_on_a_completion() {
    let hub = Hub::start_with_config(FAST);
    let (status, resp) = set_thresholds(
        &hub,
        json!({"agent_failing_attempts": 2, "cooldown_ms": 0, "dead_letter_growth": 1000}),
    );
    assert_eq!(status, 200, "{resp}");
    let t = register_agent(&hub, "flaky", &[]);
    let mut flaky = Agent::connect(&hub, "flaky", &t);
    submit(&hub, json!({"description": "one", "max_retries": 1}));
    fail_next(&mut flaky, "first");
    submit(&hub, json!({"description": "two", "max_retries": 1}));
    fail_next(&mut flaky, "second");
    assert!(wait_for(WAIT, || active(&hub, "agent_failing").is_some()));
    let alert = active(&hub, "agent_failing").expect("active");
    assert_eq!(
        alert["details"]["agents"],
        json!([{"agent_id": "flaky", "last_error": "second"}]),
        "{alert}"
    );
    let id = submit(&hub, json!({"description": "three"}));
    let a = flaky.take(&id);
    flaky.complete(&a);
    assert!(wait_for(WAIT, || active(&hub, "agent_failing").is_none()));
}
