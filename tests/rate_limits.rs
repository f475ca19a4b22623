//! Rate limits (PROTOCOL.md section 5): WS warning and `rate_limited`, HTTP 429 with
//! `retry-after`, overrides and whitelist (persisted across a restart), lifecycle
//! frames never dropped, no new tasks for an agent over its limit, and a flood from
//! one agent that does not stop another agent's work.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `PUT path` with `token` (the admin's when `None`).
fn put(hub: &Hub, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let token = token.unwrap_or(&hub.admin_token);
    http("PUT", &hub.url(path), Some(token), Body::Json(body))
}

fn set_override(hub: &Hub, agent_id: &str, body: Value) {
    let (status, resp) = put(
        hub,
        &format!("/api/admin/rate-limits/{agent_id}"),
        None,
        &body,
    );
    assert_eq!(status, 200, "{resp}");
}

/// The next frame that is not presence; panics on timeout or close.
fn next(agent: &mut Agent) -> Value {
    agent.recv_reply(REPLY_TIMEOUT)
}

#[test]
fn ws_frames_past_the_limit_get_a_warning_then_rate_limited_and_are_dropped() {
    let hub = Hub::start();
    let token = register_agent(&hub, "busy", &[]);
    set_override(&hub, "busy", json!({"light": 5}));
    let mut busy = Agent::connect(&hub, "busy", &token);
    // Five pings fit; the fifth leaves 0 of 5 (under a fifth): warned first.
    for i in 1..=5 {
        busy.send(json!({"type": "ping"}));
        if i == 5 {
            assert_eq!(
                next(&mut busy),
                json!({"type": "rate_limit_warning", "tier": "light", "remaining": 0, "capacity": 5})
            );
        }
        assert_eq!(next(&mut busy)["type"], "pong", "ping {i}");
    }
    busy.send(json!({"type": "ping"}));
    let limited = next(&mut busy);
    assert_eq!(limited["type"], "rate_limited", "{limited}");
    assert_eq!(limited["tier"], "light", "{limited}");
    let retry = limited["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        retry > 1_000 && retry <= 12_000,
        "one fifth of a minute at most: {limited}"
    );
    // The dropped ping got no pong; a normal-tier frame still goes through.
    busy.send(json!({"type": "message", "to": "busy", "payload": {"n": 1}}));
    let reply = next(&mut busy);
    assert_ne!(
        reply["type"], "pong",
        "the dropped ping must not be answered: {reply}"
    );
    assert_ne!(reply["type"], "rate_limited", "{reply}");
    // The agent shows as rate limited.
    let state = agent_state(&hub, "busy");
    assert!(
        state["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("rate_limited"))),
        "{state}"
    );
}

#[test]
fn http_past_the_limit_is_429_with_retry_after_and_changes_nothing() {
    let hub = Hub::start();
    let token = register_agent(&hub, "submitter", &[]);
    let url = hub.url("/api/tasks");
    // (status, retry-after header, body) of one submit.
    let post = |n: usize| -> (u16, Option<String>, Value) {
        let result = ureq::post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(json!({"description": format!("task {n}")}));
        let resp = match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let retry_after = resp.header("retry-after").map(str::to_string);
        (status, retry_after, resp.into_json().unwrap_or(Value::Null))
    };
    // Heavy tier: 10 per minute.
    for n in 0..10 {
        assert_eq!(post(n).0, 201);
    }
    let (status, retry_after, body) = post(10);
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = retry_after
        .and_then(|v| v.parse().ok())
        .expect("retry-after header in seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["tier"], "heavy", "{body}");
    let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(ms.div_ceil(1000) <= retry_after, "{body}");
    assert_eq!(
        stats_count(&hub, "queued"),
        10,
        "the refused submit stored nothing"
    );
    // Another agent's bucket is its own; the admin is never limited.
    let other = register_agent(&hub, "other", &[]);
    let (status, _) = hub.post_as("/api/tasks", Some(&other), &json!({"description": "x"}));
    assert_eq!(status, 201);
    for n in 0..25 {
        submit(&hub, json!({"description": format!("admin {n}")}));
    }
}

#[test]
fn whitelisted_agents_are_never_limited_and_bad_settings_are_refused() {
    let hub = Hub::start();
    let token = register_agent(&hub, "vip", &[]);
    set_override(&hub, "vip", json!({"light": 2}));
    let (status, resp) = put(
        &hub,
        "/api/admin/rate-limits/whitelist",
        None,
        &json!({"agents": ["vip"]}),
    );
    assert_eq!(status, 200, "{resp}");
    let mut vip = Agent::connect(&hub, "vip", &token);
    for _ in 0..20 {
        vip.send(json!({"type": "ping"}));
        assert_eq!(next(&mut vip)["type"], "pong");
    }
    for bad in [
        json!({}),
        json!({"light": 0}),
        json!({"light": -1}),
        json!({"light": "many"}),
        json!({"fast": 3}),
        json!({"heavy": 5_000_000}),
    ] {
        let (status, resp) = put(&hub, "/api/admin/rate-limits/vip", None, &bad);
        assert_eq!(status, 422, "{bad} → {resp}");
        assert_eq!(resp["error"], "validation_failed", "{resp}");
    }
    let (status, resp) = put(
        &hub,
        "/api/admin/rate-limits/whitelist",
        None,
        &json!({"agents": [""]}),
    );
    assert_eq!(status, 422, "{resp}");
    // The agent token cannot change limits.
    let (status, resp) = put(
        &hub,
        "/api/admin/rate-limits/vip",
        Some(&token),
        &json!({"light": 1000}),
    );
    assert_eq!((status, resp), (403, json!({"error": "admin_only"})));
    let (_, limits) = hub.get("/api/admin/rate-limits/vip");
    assert_eq!(limits["override"], json!({"light": 2}), "{limits}");
    assert_eq!(limits["whitelisted"], true, "{limits}");
}

#[test]
fn overrides_and_whitelist_survive_a_restart_and_still_apply() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "capped", &[]);
    register_agent(&hub, "peer", &[]);
    set_override(&hub, "capped", json!({"normal": 3}));
    let (status, _) = put(
        &hub,
        "/api/admin/rate-limits/whitelist",
        None,
        &json!({"agents": ["trusted"]}),
    );
    assert_eq!(status, 200);
    hub.restart();
    let (status, overview) = hub.get("/api/admin/rate-limits");
    assert_eq!(status, 200, "{overview}");
    assert_eq!(
        overview["overrides"]["capped"],
        json!({"normal": 3}),
        "{overview}"
    );
    assert_eq!(overview["whitelist"], json!(["trusted"]), "{overview}");
    assert_eq!(
        overview["defaults"],
        json!({"light": 120, "normal": 60, "heavy": 10})
    );

    let mut capped = Agent::connect(&hub, "capped", &token);
    for n in 0..3 {
        capped.send(json!({"type": "message", "to": "peer", "payload": {"n": n}}));
        let reply = next(&mut capped);
        if reply["type"] == "rate_limit_warning" {
            assert_ne!(next(&mut capped)["type"], "rate_limited");
        } else {
            assert_ne!(reply["type"], "rate_limited", "{reply}");
        }
    }
    capped.send(json!({"type": "message", "to": "peer", "payload": {"n": 3}}));
    assert_eq!(next(&mut capped)["type"], "rate_limited");

    // Removing the override is persisted too.
    let (status, _) = hub.delete("/api/admin/rate-limits/capped");
    assert_eq!(status, 200);
    let (status, _) = hub.delete("/api/admin/rate-limits/capped");
    assert_eq!(status, 404);
    hub.restart();
    let (_, overview) = hub.get("/api/admin/rate-limits");
    assert_eq!(overview["overrides"], json!({}), "{overview}");
}

#[test]
fn lifecycle_frames_are_never_dropped_for_an_agent_over_its_limit() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    set_override(&hub, "worker", json!({"light": 1, "normal": 1}));
    let mut worker = Agent::connect(&hub, "worker", &token);
    let task_id = submit(&hub, json!({"description": "keep going"}));
    let assign = worker.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str());
    let generation = assign["generation"].clone();
    // Exhaust both limited tiers.
    worker.send(json!({"type": "ping"}));
    worker.send(json!({"type": "ping"}));
    let mut limited = 0;
    for _ in 0..3 {
        match next(&mut worker)["type"].as_str() {
            Some("rate_limited") => limited += 1,
            Some("pong") | Some("rate_limit_warning") => {}
            other => panic!("unexpected {other:?}"),
        }
        if limited == 1 {
            break;
        }
    }
    assert_eq!(limited, 1);
    // Every lifecycle frame still counts.
    worker.accept(&task_id, generation.clone());
    for p in 0..20 {
        worker.send(json!({"type": "task_progress", "task_id": task_id,
                           "generation": generation, "progress": p}));
    }
    worker.send(json!({"type": "task_complete", "task_id": task_id,
                       "generation": generation, "result": {"ok": true}}));
    let ack = worker.recv_ack(&task_id, REPLY_TIMEOUT);
    assert_eq!(ack["status"], "complete", "{ack}");
    assert_eq!(get_task(&hub, &task_id)["status"], "completed");
}

#[test]
fn an_agent_over_its_limit_gets_no_new_tasks_until_it_refills() {
    let hub = Hub::start();
    let t_a = register_agent(&hub, "a-limited", &[]);
    let t_b = register_agent(&hub, "b-fine", &[]);
    set_override(&hub, "a-limited", json!({"light": 1}));
    // a is idle longer, so it would get the next task.
    let mut a = Agent::connect(&hub, "a-limited", &t_a);
    std::thread::sleep(Duration::from_millis(20));
    let mut b = Agent::connect(&hub, "b-fine", &t_b);
    a.send(json!({"type": "ping"}));
    a.send(json!({"type": "ping"}));
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("rate_limited") && got.len() < 4 {
        got.push(next(&mut a)["type"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        got.last().map(String::as_str),
        Some("rate_limited"),
        "{got:?}"
    );
    assert!(
        wait_for(REPLY_TIMEOUT, || agent_state(&hub, "a-limited")["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("rate_limited")))),
        "a is flagged rate_limited"
    );
    let task_id = submit(&hub, json!({"description": "for whoever may work"}));
    let assign = b.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str());
    assert_eq!(get_task(&hub, &task_id)["assigned_to"], "b-fine");
    assert!(a
        .try_recv_type("task_assign", Duration::from_millis(300))
        .is_none());
}

#[test]
fn a_flood_from_one_agent_does_not_stop_another_agents_tasks() {
    let hub = Hub::start();
    let t_flood = register_agent(&hub, "flooder", &[]);
    let mut flooder = Agent::connect(&hub, "flooder", &t_flood);
    let worker = Worker::spawn(&hub, "steady", Duration::from_millis(1));
    let ids: Vec<String> = (0..20)
        .map(|n| {
            submit(
                &hub,
                json!({"description": format!("steady {n}"),
                                      "needed_capabilities": ["agent:steady"]}),
            )
        })
        .collect();
    // A bounded flood of valid frames of every tier, written without waiting.
    const FLOOD: usize = 3_000;
    for n in 0..FLOOD {
        let frame = match n % 4 {
            0 => json!({"type": "ping"}),
            1 => json!({"type": "list_agents"}),
            2 => json!({"type": "status", "status": format!("flood {n}")}),
            _ => json!({"type": "message", "to": "steady", "payload": {"n": n}}),
        };
        if flooder.try_send_text(&frame.to_string()).is_err() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && worker.log().completed.len() < ids.len() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = worker.stop();
    for id in &ids {
        assert!(
            log.completed.contains(id),
            "task {id} completed; log {log:?}"
        );
        assert_eq!(get_task(&hub, id)["status"], "completed");
    }
    // The flooder was limited, not disconnected for it, and the hub is up.
    let mut limited = 0;
    let read_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < read_until {
        match flooder.recv_any(Duration::from_millis(500)) {
            Incoming::Frame(v) if v["type"] == "rate_limited" => limited += 1,
            Incoming::Frame(_) => {}
            Incoming::Timeout => break,
            Incoming::Closed { code, reason } => panic!("flooder closed: {code:?} {reason}"),
        }
    }
    assert!(limited > 0, "the flood was rate limited");
    let (status, health) = hub.get_as("/health", None);
    assert_eq!(status, 200, "{health}");
}

#[test]
fn callers_without_a_token_are_limited_by_address() {
    let hub = Hub::start_with_config("rate_limit_light_per_min = 30\n");
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(hub.get_as("/health", None).0);
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[30], 429);
    // The admin is not limited by it.
    let (status, _) = hub.get("/api/tasks/stats");
    assert_eq!(status, 200);
}

#[test]
fn a_fleet_connecting_from_one_address_is_not_refused() {
    let hub = Hub::start_with_config("rate_limit_light_per_min = 10\n");
    // More socket upgrades from 127.0.0.1 than any HTTP tier allows per minute:
    // the upgrade is not an HTTP action, and each socket's first identify is free.
    let agents: Vec<Agent> = (0..40)
        .map(|n| {
            let id = format!("fleet-{n}");
            let token = register_agent(&hub, &id, &[]);
            Agent::connect(&hub, &id, &token)
        })
        .collect();
    let (_, health) = hub.get("/health");
    assert_eq!(health["agents_connected"], 40, "{health}");
    drop(agents);
}
