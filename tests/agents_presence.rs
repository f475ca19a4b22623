//! Presence and liveness: identify defaults, agent_joined / status_changed /
//! agent_left pushes, list_agents, /health, the idle timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn listed(hub: &Hub, agent_id: &str) -> Option<Value> {
    let (status, agents) = hub.get_as("/api/agents", None);
    assert_eq!(status, 200, "{agents}");
    agents["agents"]
        .as_array()
        .expect("agents array")
        .iter()
        .find(|a| a["agent_id"] == agent_id)
        .cloned()
}

#[test]
fn identify_sets_presence_defaults_and_others_get_agent_joined() {
    let hub = Hub::start();
    let t_watch = register_agent(&hub, "watcher", &[]);
    let t_named = register_agent(&hub, "named", &["code"]);
    let mut watcher = Agent::connect(&hub, "watcher", &t_watch);
    let entry = listed(&hub, "watcher").expect("watcher listed");
    assert_eq!(
        entry["name"], "watcher",
        "name defaults to agent_id: {entry}"
    );
    assert_eq!(entry["status"], "connected", "{entry}");
    assert_eq!(entry["fsm_state"], "idle", "{entry}");
    assert!(entry["connected_at"].is_u64(), "{entry}");

    let mut named = Agent::open(&hub);
    named.send(json!({
        "type": "identify", "agent_id": "named", "token": t_named,
        "name": "Named Agent", "status": "booting"
    }));
    assert_eq!(
        named.recv_reply(REPLY_TIMEOUT),
        json!({"type": "identified", "agent_id": "named"})
    );
    let joined = watcher.recv_type("agent_joined", PUSH_TIMEOUT);
    let agent = &joined["agent"];
    assert_eq!(agent["agent_id"], "named", "{joined}");
    assert_eq!(agent["name"], "Named Agent", "{joined}");
    assert_eq!(agent["status"], "booting", "{joined}");
    assert_eq!(agent["capabilities"], json!(["code"]), "{joined}");
    assert!(agent["connected_at"].is_u64(), "{joined}");

    let (_, health) = hub.get_as("/health", None);
    // The v1.1 fields, and (ext, PROTOCOL.md 6.35) the storage and the role.
    let (storage, role, epoch) = match on_postgres() {
        true => ("postgres", "leader", json!(1)),
        false => ("sled", "single", json!(null)),
    };
    assert_eq!(
        health,
        json!({"status": "ok", "service": "agent_com", "agents_connected": 2,
               "storage": storage, "role": role, "epoch": epoch})
    );
}

#[test]
fn status_and_list_agents_reply_and_status_changes_are_broadcast() {
    let hub = Hub::start();
    let t_a = register_agent(&hub, "talker", &[]);
    let t_b = register_agent(&hub, "listener", &[]);
    let mut talker = Agent::connect(&hub, "talker", &t_a);
    let mut listener = Agent::connect(&hub, "listener", &t_b);

    let reply = request(
        &mut talker,
        json!({"type": "status", "status": "reviewing PR 7"}),
    );
    assert_eq!(reply, json!({"type": "status_updated"}));
    let changed = listener.recv_type("status_changed", PUSH_TIMEOUT);
    assert_eq!(changed["agent"]["agent_id"], "talker", "{changed}");
    assert_eq!(changed["agent"]["status"], "reviewing PR 7", "{changed}");
    assert_eq!(
        listed(&hub, "talker").expect("listed")["status"],
        "reviewing PR 7"
    );

    let reply = request(&mut listener, json!({"type": "list_agents"}));
    assert_eq!(reply["type"], "agents", "{reply}");
    let mut ids: Vec<&str> = reply["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["agent_id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["listener", "talker"], "{reply}");

    let reply = request(&mut talker, json!({"type": "ping"}));
    assert_eq!(reply["type"], "pong", "{reply}");
    assert!(reply["timestamp"].is_u64(), "{reply}");
}

#[test]
fn disconnect_sends_agent_left_and_updates_health() {
    let hub = Hub::start();
    let t_a = register_agent(&hub, "leaver", &[]);
    let t_b = register_agent(&hub, "stayer", &[]);
    let leaver = Agent::connect(&hub, "leaver", &t_a);
    let mut stayer = Agent::connect(&hub, "stayer", &t_b);
    assert_eq!(hub.get_as("/health", None).1["agents_connected"], 2);
    leaver.close();
    let left = stayer.recv_type("agent_left", PUSH_TIMEOUT);
    assert_eq!(left, json!({"type": "agent_left", "agent_id": "leaver"}));
    assert!(
        wait_for(PUSH_TIMEOUT, || hub.get_as("/health", None).1
            ["agents_connected"]
            == 1),
        "{}",
        hub.get_as("/health", None).1
    );
    if let Some(entry) = listed(&hub, "leaver") {
        assert_eq!(entry["fsm_state"], "offline", "{entry}");
    }
}

#[test]
fn silent_connection_is_closed_after_the_idle_timeout_and_pings_keep_one_open() {
    let hub = Hub::start_with_config("idle_timeout_ms = 2000\nsweep_interval_ms = 100\n");
    let t_quiet = register_agent(&hub, "quiet", &[]);
    let t_chatty = register_agent(&hub, "chatty", &[]);
    let mut quiet = Agent::connect(&hub, "quiet", &t_quiet);
    let mut chatty = Agent::connect(&hub, "chatty", &t_chatty);

    // The chatty agent pings every 200 ms (10x inside the timeout) for 4 s.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        chatty.assert_alive();
        std::thread::sleep(Duration::from_millis(200));
    }
    chatty.assert_alive();

    // The quiet one sent nothing after identify: closed (2 s timeout, generous bound).
    let (code, reason) = quiet.recv_close(Duration::from_secs(10));
    assert_ne!(code, Some(4000), "not a replacement: {reason}");
    assert!(
        wait_for(PUSH_TIMEOUT, || hub.get_as("/health", None).1
            ["agents_connected"]
            == 1),
        "{}",
        hub.get_as("/health", None).1
    );
}

#[test]
fn agent_state_route_needs_a_token_and_reports_the_fsm() {
    let hub = Hub::start();
    let token = register_agent(&hub, "stateful", &[]);
    let _agent = Agent::connect(&hub, "stateful", &token);
    let (status, body) = hub.get_as("/api/agents/stateful/state", None);
    assert_eq!(status, 401, "{body}");
    let (status, state) = hub.get_as("/api/agents/stateful/state", Some(&token));
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["agent_id"], "stateful", "{state}");
    assert_eq!(state["fsm_state"], "idle", "{state}");
    assert!(state["current_task_id"].is_null(), "{state}");
    assert_eq!(state["flags"], json!([]), "{state}");
    assert!(state["last_state_change"].is_u64(), "{state}");
}

/// A burst of pushes (more than the session writes per turn) reaches the agent
/// whole and in order, and a later push arrives after all of it.
#[test]
fn a_burst_of_pushes_arrives_complete_and_in_order() {
    const BURST: usize = 300;
    // More status frames than the default light tier allows in a minute.
    let hub = Hub::start_with_config("rate_limit_light_per_min = 1000\n");
    let t_a = register_agent(&hub, "chatty", &[]);
    let t_b = register_agent(&hub, "watcher", &[]);
    let mut chatty = Agent::connect(&hub, "chatty", &t_a);
    let mut watcher = Agent::connect(&hub, "watcher", &t_b);
    // Written back to back, so the watcher's session gets the status_changed
    // pushes far faster than one turn's worth per millisecond.
    for i in 0..BURST {
        chatty.send(json!({"type": "status", "status": format!("step {i}")}));
    }
    for _ in 0..BURST {
        assert_eq!(
            chatty.recv_reply(REPLY_TIMEOUT),
            json!({"type": "status_updated"})
        );
    }
    let (status, resp) = hub.post(
        "/api/message",
        &json!({"to": "watcher", "payload": {"after": "burst"}}),
    );
    assert_eq!(status, 200, "{resp}");

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watcher.recv_any(left) {
            Incoming::Frame(v) if v["type"] == "status_changed" => {
                seen.push(v["agent"]["status"].as_str().unwrap_or("").to_string());
            }
            Incoming::Frame(v) if v["type"] == "message" => break,
            Incoming::Frame(_) => continue,
            other => panic!("watcher got {other:?} after {} status frames", seen.len()),
        }
    }
    let expected: Vec<String> = (0..BURST).map(|i| format!("step {i}")).collect();
    assert_eq!(
        seen, expected,
        "every status_changed, in order, before the message"
    );
}
