//! Durability of messaging: a restart (graceful or `kill -9`) keeps mailboxes,
//! channels, subscriptions, channel history and message history, and sequences
//! continue where they were (issue 5: "restart keeps mailboxes and channels").

mod common;

use common::*;
use serde_json::{json, Value};

fn ask(agent: &mut Agent, frame: Value, reply_type: &str) -> Value {
    agent.send(frame);
    agent.recv_type(reply_type, REPLY_TIMEOUT)
}

fn send_id(agent: &mut Agent, frame: Value) -> String {
    ask(agent, frame, "message_sent")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn get_ok(hub: &Hub, path: &str) -> Value {
    let (status, body) = hub.get(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Everything the messaging layer shows about the state built by `populate`.
fn snapshot(hub: &Hub, t_bob: &str) -> Value {
    json!({
        "channels": get_ok(hub, "/api/channels"),
        "dev": get_ok(hub, "/api/channels/dev"),
        "history": get_ok(hub, "/api/channels/dev/history?limit=200"),
        "mailbox": read_mailbox(hub, "bob", t_bob, 0),
        "messages": get_ok(hub, "/api/messages?limit=200"),
    })
}

/// Channel `dev` with alice and bob subscribed and 3 messages; bob offline with
/// 4 mailbox messages (one evicted at cap 3) of which seq 2 is acked; a reply.
/// Returns (alice's token, bob's token, root message id, reply id).
fn populate(hub: &Hub) -> (String, String, String, String) {
    create_channel(hub, "dev", "kept across restarts");
    let (t_alice, mut alice) = online_agent(hub, "alice");
    let (t_bob, mut bob) = online_agent(hub, "bob");
    for agent in [&mut alice, &mut bob] {
        ask(
            agent,
            json!({"type": "channel_subscribe", "channel": "dev"}),
            "channel_subscribed",
        );
    }
    for n in 1..=3 {
        ask(
            &mut alice,
            json!({"type": "channel_publish", "channel": "dev", "payload": {"n": n}}),
            "channel_published",
        );
    }
    disconnect(hub, bob);
    let root = send_id(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"m": 1}}),
    );
    let mut reply = String::new();
    for m in 2..=4 {
        reply = send_id(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"m": m}, "reply_to": root}),
        );
    }
    let (status, ack) = hub.post_as("/api/mailbox/bob/ack", Some(&t_bob), &json!({"seq": 2}));
    assert_eq!(status, 200, "{ack}");
    let mailbox = read_mailbox(hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![3, 4], "{mailbox}");
    assert_eq!(mailbox["evicted"], 1, "{mailbox}");
    assert_eq!(mailbox["acked"], 2, "{mailbox}");
    disconnect(hub, alice);
    (t_alice, t_bob, root, reply)
}

fn check_after_restart(
    hub: &Hub,
    before: &Value,
    t_alice: &str,
    t_bob: &str,
    root: &str,
    reply: &str,
) {
    let after = snapshot(hub, t_bob);
    assert_eq!(after, *before, "messaging state changed across the restart");
    assert_eq!(seqs(&after["history"]["messages"]), vec![1, 2, 3]);
    assert_eq!(after["dev"]["subscribers"], json!(["alice", "bob"]));

    // Threads still resolve.
    let thread = get_ok(hub, &format!("/api/threads/{reply}"));
    assert_eq!(thread["root_id"], root, "{thread}");
    assert_eq!(thread["count"], 4, "{thread}");
    let root_view = get_ok(hub, &format!("/api/threads/{reply}/root"));
    assert_eq!(root_view["root"]["id"], root, "{root_view}");

    // Subscriptions still deliver, and channel seqs continue.
    let mut alice = Agent::connect(hub, "alice", t_alice);
    let mut bob = Agent::connect(hub, "bob", t_bob);
    let published = ask(
        &mut alice,
        json!({"type": "channel_publish", "channel": "dev", "payload": {"n": 4}}),
        "channel_published",
    );
    assert_eq!(published["seq"], 4, "{published}");
    let push = bob.recv_type("channel_message", PUSH_TIMEOUT);
    assert_eq!(push["id"], published["id"], "{push}");

    // Mailbox seqs continue (bob offline again), acked entries stay gone.
    disconnect(hub, bob);
    let new_id = send_id(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"m": 5}}),
    );
    let mailbox = read_mailbox(hub, "bob", t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![3, 4, 5], "{mailbox}");
    assert_eq!(mailbox["messages"][2]["message"]["id"], new_id.as_str());
    assert_eq!(mailbox["evicted"], 1, "{mailbox}");

    // New messages get fresh ids and come after the old ones in the history.
    let all = all_messages(hub, "", 200);
    let ids: Vec<&str> = all
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default())
        .collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate message ids: {ids:?}");
    assert_eq!(all.len(), 9, "7 before + 2 after: {all:?}");
    assert_eq!(ids[8], new_id.as_str());
    let seq_list: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap_or(0)).collect();
    assert!(seq_list.windows(2).all(|w| w[0] < w[1]), "{seq_list:?}");
}

#[test]
fn graceful_restart_keeps_mailboxes_channels_subscriptions_and_history() {
    let mut hub = Hub::start_with_config("mailbox_cap = 3\n");
    let (t_alice, t_bob, root, reply) = populate(&hub);
    let before = snapshot(&hub, &t_bob);
    hub.restart();
    check_after_restart(&hub, &before, &t_alice, &t_bob, &root, &reply);
}

#[test]
fn kill9_right_after_the_replies_loses_nothing_acknowledged() {
    let mut hub = Hub::start_with_config("mailbox_cap = 3\n");
    let (t_alice, t_bob, root, reply) = populate(&hub);
    let before = snapshot(&hub, &t_bob);
    hub.kill9();
    hub.start_again();
    check_after_restart(&hub, &before, &t_alice, &t_bob, &root, &reply);
}
