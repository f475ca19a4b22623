//! Bad input on the agent WebSocket (PROTOCOL.md 1.1–1.4): structured errors,
//! nothing changed, no crash.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// Every client frame type of PROTOCOL.md 1.4.
const KNOWN_TYPES: [&str; 27] = [
    "identify",
    "ping",
    "status",
    "list_agents",
    "message",
    "channel_subscribe",
    "channel_unsubscribe",
    "channel_publish",
    "channel_history",
    "list_channels",
    "task_accepted",
    "task_progress",
    "task_complete",
    "task_failed",
    "task_rejected",
    "task_blocked",
    "task_recovering",
    "state_report",
    "wake_result",
    "agent_restarting",
    "usage_limited",
    "task_input_required",
    "task_merged",
    "event_publish",
    "scope_reserve",
    "scope_renew",
    "scope_release",
];

fn send_text(agent: &mut Agent, text: &str) -> Value {
    agent.try_send_text(text).expect("send raw text frame");
    agent.recv_reply(REPLY_TIMEOUT)
}

/// Asserts a `validation_failed` reply with one error `(field, error)`.
fn assert_validation(reply: &Value, message_type: Option<&str>, field: &str, error: &str) {
    assert_error(reply, "validation_failed");
    if let Some(t) = message_type {
        assert_eq!(reply["message_type"], t, "{reply}");
    }
    let errors = reply["errors"].as_array().expect("errors array");
    let hit = errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error for field {field:?}: {reply}"));
    assert_eq!(hit["error"], error, "{reply}");
    assert!(hit["detail"].is_string(), "detail is a string: {reply}");
}

fn identified(hub: &Hub, agent_id: &str) -> Agent {
    let token = register_agent(hub, agent_id, &[]);
    Agent::connect(hub, agent_id, &token)
}

#[test]
fn unparseable_json_gets_invalid_json_and_is_not_a_violation() {
    let hub = Hub::start();
    let token = register_agent(&hub, "sloppy", &[]);
    let mut agent = Agent::open(&hub);
    // More than the 10 violations that would close the socket.
    for text in ["{not json", "", "[1,", "\"unterminated", "nul"].repeat(3) {
        let reply = send_text(&mut agent, text);
        assert_eq!(
            reply,
            json!({"type": "error", "error": "invalid_json"}),
            "for {text:?}"
        );
    }
    agent.identify_ok("sloppy", &token, None);
    for _ in 0..12 {
        let reply = send_text(&mut agent, "{\"type\": \"ping\"");
        assert_eq!(reply, json!({"type": "error", "error": "invalid_json"}));
    }
    agent.assert_alive();
}

#[test]
fn schema_failures_get_validation_failed_with_field_error_and_detail() {
    let hub = Hub::start();
    let mut anon = Agent::open(&hub);
    // Schema validation comes before the identify check.
    let reply = request(
        &mut anon,
        json!({"type": "identify", "agent_id": 5, "token": "x"}),
    );
    assert_validation(&reply, Some("identify"), "agent_id", "wrong_type");
    let reply = request(&mut anon, json!({"type": "identify", "token": "x"}));
    assert_validation(&reply, Some("identify"), "agent_id", "required");
    let reply = request(
        &mut anon,
        json!({"type": "identify", "agent_id": null, "token": "x"}),
    );
    assert_validation(&reply, Some("identify"), "agent_id", "required");
    let reply = request(
        &mut anon,
        json!({"type": "identify", "agent_id": "a", "token": "x", "capabilities": "code"}),
    );
    assert_validation(&reply, Some("identify"), "capabilities", "wrong_type");
    let reply = request(&mut anon, json!({"type": "status"}));
    assert_validation(&reply, Some("status"), "status", "required");
    let reply = request(&mut anon, json!({"no_type": 1}));
    assert_validation(&reply, None, "type", "required");

    let mut agent = identified(&hub, "validated");
    let reply = request(
        &mut agent,
        json!({"type": "task_complete", "task_id": "task-0123456789abcdef", "generation": "3"}),
    );
    assert_validation(&reply, Some("task_complete"), "generation", "wrong_type");
    let reply = request(
        &mut agent,
        json!({"type": "task_complete", "task_id": "task-0123456789abcdef", "generation": -1}),
    );
    assert_validation(&reply, Some("task_complete"), "generation", "invalid_value");
    let reply = request(
        &mut agent,
        json!({"type": "task_failed", "task_id": "task-0123456789abcdef", "generation": 1, "error": "e".repeat(2001)}),
    );
    assert_validation(&reply, Some("task_failed"), "error", "too_long");
    let reply = request(
        &mut agent,
        json!({"type": "message", "payload": "not an object"}),
    );
    assert_validation(&reply, Some("message"), "payload", "wrong_type");

    // Nothing changed: still identified, idle, no tasks.
    agent.assert_alive();
    assert_eq!(agent_state(&hub, "validated")["fsm_state"], "idle");
    assert_eq!(hub.get("/api/tasks").1["count"], 0);
}

#[test]
fn too_long_value_is_echoed_as_its_first_fifty_characters_and_status_is_unchanged() {
    let hub = Hub::start();
    let mut agent = identified(&hub, "verbose");
    let long: String = ('a'..='z').cycle().take(300).collect();
    let reply = request(&mut agent, json!({"type": "status", "status": long}));
    assert_validation(&reply, Some("status"), "status", "too_long");
    let error = &reply["errors"][0];
    assert_eq!(error["value"], format!("{}...", &long[..50]), "{reply}");

    let (_, agents) = hub.get("/api/agents");
    let entry = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["agent_id"] == "verbose")
        .cloned()
        .expect("listed");
    assert_eq!(entry["status"], "connected", "status unchanged: {entry}");

    // A valid status update does work afterwards.
    let reply = request(&mut agent, json!({"type": "status", "status": "thinking"}));
    assert_eq!(reply, json!({"type": "status_updated"}));
}

#[test]
fn unknown_message_type_lists_every_known_type() {
    let hub = Hub::start();
    let mut agent = identified(&hub, "curious");
    let reply = request(
        &mut agent,
        json!({"type": "launch_missiles", "target": "moon"}),
    );
    assert_validation(
        &reply,
        Some("launch_missiles"),
        "type",
        "unknown_message_type",
    );
    let known: BTreeSet<&str> = reply["errors"][0]["known_types"]
        .as_array()
        .expect("known_types array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        known,
        KNOWN_TYPES.into_iter().collect::<BTreeSet<_>>(),
        "{reply}"
    );

    // Before identify the same frame is a validation failure too, not not_identified.
    let mut anon = Agent::open(&hub);
    let reply = request(&mut anon, json!({"type": "launch_missiles"}));
    assert_validation(
        &reply,
        Some("launch_missiles"),
        "type",
        "unknown_message_type",
    );
}

#[test]
fn frames_before_identify_get_not_identified_and_unknown_fields_are_ignored() {
    let hub = Hub::start();
    let token = register_agent(&hub, "early-bird", &[]);
    let mut agent = Agent::open(&hub);
    for frame in [
        json!({"type": "ping"}),
        json!({"type": "list_agents"}),
        json!({"type": "status", "status": "hi"}),
        json!({"type": "task_complete", "task_id": "task-0123456789abcdef", "generation": 1}),
        json!({"type": "task_accepted", "task_id": "task-0123456789abcdef"}),
    ] {
        let reply = request(&mut agent, frame.clone());
        assert_eq!(
            reply,
            json!({"type": "error", "error": "not_identified"}),
            "for {frame}"
        );
    }
    // Clients add fields such as protocol_version; they are ignored.
    agent.send(json!({
        "type": "identify", "agent_id": "early-bird", "token": token,
        "protocol_version": "1.1", "client_type": "sidecar"
    }));
    assert_eq!(
        agent.recv_reply(REPLY_TIMEOUT),
        json!({"type": "identified", "agent_id": "early-bird"})
    );
    let reply = request(
        &mut agent,
        json!({"type": "ping", "protocol_version": "1.1", "x": [1]}),
    );
    assert_eq!(reply["type"], "pong", "{reply}");
}

#[test]
fn second_identify_on_a_socket_gets_already_identified_and_changes_nothing() {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "first-name", &["code"]);
    let token_b = register_agent(&hub, "second-name", &[]);
    let mut agent = Agent::connect(&hub, "first-name", &token_a);
    let reply = agent.identify("first-name", &token_a, Some(&["docs"]));
    assert_eq!(
        reply,
        json!({"type": "error", "error": "already_identified"})
    );
    let reply = agent.identify("second-name", &token_b, None);
    assert_eq!(
        reply,
        json!({"type": "error", "error": "already_identified"})
    );

    agent.assert_alive();
    let (_, agents) = hub.get("/api/agents");
    let listed: Vec<&Value> = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "{agents}");
    assert_eq!(listed[0]["agent_id"], "first-name", "{agents}");
    assert_eq!(listed[0]["capabilities"], json!(["code"]), "{agents}");
}

#[test]
fn invalid_token_and_token_of_another_agent_are_refused_and_the_socket_stays_open() {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "alice", &[]);
    let token_b = register_agent(&hub, "bob", &[]);
    let mut agent = Agent::open(&hub);
    assert_eq!(
        agent.identify("alice", "not-a-token", None),
        json!({"type": "error", "error": "invalid_token"})
    );
    assert_eq!(
        agent.identify("alice", &token_b, None),
        json!({"type": "error", "error": "token_agent_mismatch"})
    );
    assert_eq!(
        agent.identify("nobody", "x", None),
        json!({"type": "error", "error": "invalid_token"})
    );
    // Still not identified, still open.
    assert_eq!(
        request(&mut agent, json!({"type": "ping"})),
        json!({"type": "error", "error": "not_identified"})
    );
    let (_, health) = hub.get("/health");
    assert_eq!(health["agents_connected"], 0, "{health}");
    agent.identify_ok("alice", &token_a, None);
    agent.assert_alive();
}

#[test]
fn ten_validation_errors_close_the_socket_with_1008_and_identify_is_refused_during_cooldown() {
    let hub = Hub::start();
    let token = register_agent(&hub, "violator", &[]);
    let mut agent = Agent::connect(&hub, "violator", &token);
    for i in 0..9 {
        let reply = request(&mut agent, json!({"type": format!("bogus_{i}")}));
        assert_validation(&reply, None, "type", "unknown_message_type");
    }
    // Nine violations: still open.
    agent.assert_alive();
    agent.send(json!({"type": "bogus_9"}));
    let (code, reason) = agent.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(1008), "{reason}");
    assert_eq!(reason, "too many validation errors");

    // The next identify of this agent is refused during the 30 s cooldown.
    let mut again = Agent::open(&hub);
    again.send(json!({"type": "identify", "agent_id": "violator", "token": token}));
    let (code, reason) = again.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(1008), "{reason}");
    assert!(
        reason.starts_with("cooldown active: retry in ") && reason.ends_with('s'),
        "{reason}"
    );
    // Another agent is unaffected.
    let other_token = register_agent(&hub, "bystander", &[]);
    let mut other = Agent::connect(&hub, "bystander", &other_token);
    other.assert_alive();
}

#[test]
fn ten_validation_errors_before_identify_also_close_with_1008() {
    let hub = Hub::start();
    let mut anon = Agent::open(&hub);
    for _ in 0..10 {
        anon.send(json!({"type": "identify"}));
    }
    let (code, reason) = anon.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(1008), "{reason}");
    assert_eq!(hub.get("/health").0, 200, "hub still serving");
}

#[test]
fn frame_larger_than_max_frame_bytes_closes_with_1009() {
    let hub = Hub::start_with_config("max_frame_bytes = 4096\n");
    let mut agent = identified(&hub, "oversharer");
    let big = json!({"type": "ping", "pad": "x".repeat(8192)}).to_string();
    // The hub may close before reading all of it; a failed write is fine.
    let _ = agent.try_send_text(&big);
    let (code, reason) = agent.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(1009), "{reason}");
    // A frame under the limit is fine on a new connection.
    let token = register_agent(&hub, "modest", &[]);
    let mut modest = Agent::connect(&hub, "modest", &token);
    let reply = request(
        &mut modest,
        json!({"type": "ping", "pad": "x".repeat(1000)}),
    );
    assert_eq!(reply["type"], "pong", "{reply}");
}

#[test]
fn agent_restarting_gets_no_reply_and_is_not_a_violation() {
    let hub = Hub::start();
    let mut agent = identified(&hub, "restarter");
    for _ in 0..12 {
        agent.send(json!({"type": "agent_restarting", "reason": "upgrade"}));
    }
    // The pong is the first reply: agent_restarting sent none and closed nothing.
    let reply = request(&mut agent, json!({"type": "ping"}));
    assert_eq!(reply["type"], "pong", "{reply}");
}

#[test]
fn a_2_mib_frame_is_refused_with_1009_and_harms_nobody() {
    let hub = Hub::start();
    let worker = Worker::spawn(&hub, "bystander", std::time::Duration::from_millis(1));
    let mut agent = identified(&hub, "hoarder");
    let big = json!({"type": "status", "status": "x".repeat(2 * 1024 * 1024)}).to_string();
    let _ = agent.try_send_text(&big);
    let (code, reason) = agent.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(1009), "{reason}");
    // The hub still serves everyone else.
    let task_id = submit(
        &hub,
        json!({"description": "after the big frame", "needed_capabilities": ["agent:bystander"]}),
    );
    assert!(wait_for(std::time::Duration::from_secs(10), || {
        get_task(&hub, &task_id)["status"] == "completed"
    }));
    assert_eq!(hub.get("/health").0, 200);
    drop(worker.stop());
}
