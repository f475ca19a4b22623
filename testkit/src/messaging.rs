//! Messaging helpers (the `messaging_*` tests): online agents, mailboxes,
//! channels, history paging and the fence that proves a push did not happen.

use std::time::Instant;

use serde_json::{json, Value};

use crate::agent::{is_presence, Agent, Incoming};
use crate::fixtures::{agent_state, page_through, register_agent};
use crate::hub::Hub;
use crate::support::{random_hex, wait_for, PUSH_TIMEOUT};

/// Registers `agent_id` and connects it; returns (token, identified socket).
pub fn online_agent(hub: &Hub, agent_id: &str) -> (String, Agent) {
    let token = register_agent(hub, agent_id, &[]);
    let agent = Agent::connect(hub, agent_id, &token);
    (token, agent)
}

/// Closes `agent` cleanly and waits until the hub reports it offline (after
/// which direct messages to it go to its mailbox).
pub fn disconnect(hub: &Hub, agent: Agent) {
    let agent_id = agent.agent_id.clone();
    agent.close();
    assert!(
        wait_for(PUSH_TIMEOUT, || agent_state(hub, &agent_id)["fsm_state"]
            == "offline"),
        "agent {agent_id} still online after closing its socket: {}",
        agent_state(hub, &agent_id)
    );
}

/// Makes the hub push a direct `message` (from the admin, payload
/// `{"fence": nonce}`) to `agent` and reads until it arrives. Returns every
/// non-presence frame that arrived before it (kept frames included), so a test
/// can assert that some push did *not* happen without sleeping: pushes the hub
/// sent before the fence reach the socket before it.
pub fn frames_before_fence(hub: &Hub, agent: &mut Agent) -> Vec<Value> {
    let nonce = random_hex(1);
    let (status, resp) = hub.post(
        "/api/message",
        &json!({"to": agent.agent_id, "payload": {"fence": nonce}}),
    );
    assert_eq!(status, 200, "fence message to {}: {resp}", agent.agent_id);
    let deadline = Instant::now() + PUSH_TIMEOUT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match agent.recv_any(left) {
            Incoming::Frame(v) if v["type"] == "message" && v["payload"]["fence"] == nonce => {
                return before
            }
            Incoming::Frame(v) if is_presence(&v) => {}
            Incoming::Frame(v) => before.push(v),
            other => panic!(
                "agent {:?}: fence message not received within {PUSH_TIMEOUT:?}: {other:?}; before it: {before:?}",
                agent.agent_id
            ),
        }
    }
}

/// `GET /api/mailbox/:agent_id?since=N` with `token`; asserts 200.
pub fn read_mailbox(hub: &Hub, agent_id: &str, token: &str, since: u64) -> Value {
    let path = format!("/api/mailbox/{agent_id}?since={since}");
    let (status, body) = hub.get_as(&path, Some(token));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The `seq` of every entry of a mailbox or history reply, in order.
pub fn seqs(entries: &Value) -> Vec<u64> {
    entries
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of entries, got {entries}"))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}

/// `POST /api/channels` as admin; asserts 201 and returns the body.
pub fn create_channel(hub: &Hub, name: &str, description: &str) -> Value {
    let (status, body) = hub.post(
        "/api/channels",
        &json!({"name": name, "description": description}),
    );
    assert_eq!(status, 201, "POST /api/channels {name}: {body}");
    body
}

/// Every message of `GET /api/messages?<query>`, following `cursor` with
/// `limit` per page (at most 1000 pages).
pub fn all_messages(hub: &Hub, query: &str, limit: usize) -> Vec<Value> {
    page_through(hub, "/api/messages", query, limit, "messages", "cursor")
}

/// Asserts that no `task_assign` reached `agent` before a fence message did.
pub fn assert_no_assignment(hub: &Hub, agent: &mut Agent) {
    let before = frames_before_fence(hub, agent);
    assert!(
        before.iter().all(|f| f["type"] != "task_assign"),
        "agent {} was given a task: {before:?}",
        agent.agent_id
    );
}
