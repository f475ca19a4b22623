//! Channels: create, list, subscribe (with `channel_agent_joined`), unsubscribe,
//! publish reaching exactly the other online subscribers, over the WebSocket and
//! HTTP (PROTOCOL.md 1.4, 1.5, 3; issue 5).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// Sends a frame and waits for the reply of type `reply_type` (pushes arriving
/// meanwhile are kept).
fn ask(agent: &mut Agent, frame: Value, reply_type: &str) -> Value {
    agent.send(frame);
    agent.recv_type(reply_type, REPLY_TIMEOUT)
}

fn subscribe(agent: &mut Agent, channel: &str) -> Value {
    ask(
        agent,
        json!({"type": "channel_subscribe", "channel": channel}),
        "channel_subscribed",
    )
}

fn publish(agent: &mut Agent, channel: &str, payload: Value) -> Value {
    let reply = ask(
        agent,
        json!({"type": "channel_publish", "channel": channel, "payload": payload}),
        "channel_published",
    );
    assert_eq!(reply["channel"], channel, "{reply}");
    reply
}

/// The `channel_message` ids among `frames`.
fn channel_ids(frames: &[Value]) -> BTreeSet<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "channel_message")
        .map(|f| f["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn get_channel(hub: &Hub, name: &str) -> Value {
    let (status, body) = hub.get(&format!("/api/channels/{name}"));
    assert_eq!(status, 200, "GET /api/channels/{name}: {body}");
    body
}

#[test]
fn create_list_and_get_channels() {
    let hub = Hub::start();
    let (t_alice, mut alice) = online_agent(&hub, "alice");

    let before = now_ms();
    let created = create_channel(&hub, "dev", "development talk");
    let created_at = created["channel"]["created_at"]
        .as_u64()
        .expect("created_at is an integer");
    assert!(before <= created_at && created_at <= now_ms(), "{created}");
    assert_eq!(
        created,
        json!({"status": "created", "channel": {
            "name": "dev", "description": "development talk",
            "subscriber_count": 0, "created_at": created_at}})
    );
    // An agent token may create one too; description is optional.
    let (status, body) = hub.post_as("/api/channels", Some(&t_alice), &json!({"name": "ops"}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["channel"]["description"], "", "{body}");

    // A second create with the same name is a 409 and changes nothing.
    let (status, body) = hub.post(
        "/api/channels",
        &json!({"name": "dev", "description": "other"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "already_exists", "{body}");
    let dev = get_channel(&hub, "dev");
    assert_eq!(dev["description"], "development talk", "{dev}");
    assert_eq!(dev["created_at"], created_at, "{dev}");

    let (status, list) = hub.get_as("/api/channels", Some(&t_alice));
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["dev", "ops"], "{list}");

    let reply = request(&mut alice, json!({"type": "list_channels"}));
    assert_eq!(reply["type"], "channels", "{reply}");
    assert_eq!(reply["channels"], list["channels"], "{reply}");

    assert_eq!(
        dev,
        json!({"name": "dev", "description": "development talk", "created_at": created_at,
               "subscriber_count": 0, "subscribers": [], "last_seq": 0})
    );
}

#[test]
fn subscribe_announces_the_new_member_to_other_online_subscribers() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    create_channel(&hub, "other", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    let (_, mut carol) = online_agent(&hub, "carol");
    // carol is on another channel only.
    assert_eq!(subscribe(&mut carol, "other")["channel"], "other");

    let reply = subscribe(&mut alice, "dev");
    assert_eq!(
        reply,
        json!({"type": "channel_subscribed", "channel": "dev"})
    );
    let reply = subscribe(&mut bob, "dev");
    assert_eq!(
        reply,
        json!({"type": "channel_subscribed", "channel": "dev"})
    );
    let joined = alice.recv_type("channel_agent_joined", PUSH_TIMEOUT);
    assert_eq!(
        joined,
        json!({"type": "channel_agent_joined", "channel": "dev", "agent_id": "bob"})
    );

    // Subscribing again: a note, no new announcement, no change.
    let reply = subscribe(&mut bob, "dev");
    assert_eq!(
        reply,
        json!({"type": "channel_subscribed", "channel": "dev", "note": "already_subscribed"})
    );
    for agent in [&mut alice, &mut bob, &mut carol] {
        let who = agent.agent_id.clone();
        let joins: Vec<Value> = frames_before_fence(&hub, agent)
            .into_iter()
            .filter(|f| f["type"] == "channel_agent_joined")
            .collect();
        assert!(joins.is_empty(), "{who} got unexpected joins: {joins:?}");
    }

    let dev = get_channel(&hub, "dev");
    assert_eq!(dev["subscriber_count"], 2, "{dev}");
    let subs: BTreeSet<String> = serde_json::from_value(dev["subscribers"].clone()).expect("list");
    assert_eq!(subs, set(&["alice", "bob"]), "{dev}");
    let reply = request(&mut carol, json!({"type": "list_channels"}));
    let counts: Vec<(String, u64)> = reply["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["subscriber_count"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![("dev".into(), 2), ("other".into(), 1)],
        "{reply}"
    );

    // Unknown channel: an error naming it, and nothing subscribed.
    let reply = request(
        &mut carol,
        json!({"type": "channel_subscribe", "channel": "nope"}),
    );
    assert_error(&reply, "channel_not_found");
    assert_eq!(reply["channel"], "nope", "{reply}");
    let reply = request(
        &mut carol,
        json!({"type": "channel_unsubscribe", "channel": "nope"}),
    );
    assert_error(&reply, "channel_not_found");
    assert_eq!(reply["channel"], "nope", "{reply}");
    let (status, body) = hub.get("/api/channels/nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "channel_not_found", "{body}");
    let (_, list) = hub.get("/api/channels");
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(2), "{list}");
}

#[test]
fn publish_reaches_exactly_the_other_online_subscribers() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    create_channel(&hub, "dev-ops", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    let (_, mut carol) = online_agent(&hub, "carol");
    let (_, mut dave) = online_agent(&hub, "dave"); // online, never subscribed
    let (_, mut erin) = online_agent(&hub, "erin"); // on the other channel
    for agent in [&mut alice, &mut bob, &mut carol] {
        subscribe(agent, "dev");
    }
    subscribe(&mut erin, "dev-ops");

    let before = now_ms();
    let published = ask(
        &mut alice,
        json!({"type": "channel_publish", "channel": "dev",
               "payload": {"build": "green"}, "message_type": "status"}),
        "channel_published",
    );
    let id1 = published["id"].as_str().expect("id").to_string();
    assert_eq!(
        published,
        json!({"type": "channel_published", "channel": "dev", "seq": 1, "id": id1})
    );
    for agent in [&mut bob, &mut carol] {
        let push = agent.recv_type("channel_message", PUSH_TIMEOUT);
        let ts = push["timestamp"].as_u64().expect("timestamp");
        assert!(before <= ts && ts <= now_ms(), "{push}");
        assert_eq!(
            push,
            json!({"type": "channel_message", "channel": "dev", "id": id1, "from": "alice",
                   "message_type": "status", "payload": {"build": "green"},
                   "reply_to": null, "timestamp": ts})
        );
    }

    // bob replies on the channel; then leaves it; alice publishes again.
    let reply = ask(
        &mut bob,
        json!({"type": "channel_publish", "channel": "dev", "payload": {"ack": true},
               "reply_to": id1}),
        "channel_published",
    );
    assert_eq!(reply["seq"], 2, "{reply}");
    let id2 = reply["id"].as_str().expect("id").to_string();
    let push = alice.recv_type("channel_message", PUSH_TIMEOUT);
    assert_eq!(push["id"], id2.as_str(), "{push}");
    assert_eq!(push["reply_to"], id1.as_str(), "{push}");
    assert_eq!(push["message_type"], "chat", "default type: {push}");

    let reply = ask(
        &mut bob,
        json!({"type": "channel_unsubscribe", "channel": "dev"}),
        "channel_unsubscribed",
    );
    assert_eq!(
        reply,
        json!({"type": "channel_unsubscribed", "channel": "dev"})
    );
    let id3 = publish(&mut alice, "dev", json!({"n": 3}))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let id4 = publish(&mut erin, "dev-ops", json!({"n": 4}))["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Exactly: alice (sender) never gets her own; bob got 1 only (he sent 2,
    // left before 3); carol got 1, 2, 3; dave none; erin none from dev.
    let cases: [(&mut Agent, BTreeSet<String>); 5] = [
        (&mut alice, BTreeSet::new()), // id2 consumed above
        (&mut bob, BTreeSet::new()),   // id1 consumed above
        (&mut carol, set(&[&id2, &id3])),
        (&mut dave, BTreeSet::new()),
        (&mut erin, BTreeSet::new()),
    ];
    for (agent, expected) in cases {
        let who = agent.agent_id.clone();
        let got = channel_ids(&frames_before_fence(&hub, agent));
        assert_eq!(got, expected, "channel messages received by {who}");
    }
    let _ = id4;
    assert_eq!(get_channel(&hub, "dev")["last_seq"], 3);
    assert_eq!(get_channel(&hub, "dev-ops")["last_seq"], 1);
}

#[test]
fn offline_subscribers_get_nothing_pushed_but_can_read_the_history() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    let (t_bob, mut bob) = online_agent(&hub, "bob");
    subscribe(&mut alice, "dev");
    subscribe(&mut bob, "dev");
    disconnect(&hub, bob);

    let id = publish(&mut alice, "dev", json!({"while": "away"}))["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Still a subscriber while offline.
    let dev = get_channel(&hub, "dev");
    assert_eq!(dev["subscriber_count"], 2, "{dev}");

    let mut bob = Agent::connect(&hub, "bob", &t_bob);
    let history = ask(
        &mut bob,
        json!({"type": "channel_history", "channel": "dev"}),
        "channel_history",
    );
    assert_eq!(seqs(&history["messages"]), vec![1], "{history}");
    assert_eq!(
        history["messages"][0]["message"]["id"],
        id.as_str(),
        "{history}"
    );
    // The channel message did not go to bob's mailbox, and nothing is pushed late.
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(mailbox["count"], 0, "{mailbox}");
    assert!(channel_ids(&frames_before_fence(&hub, &mut bob)).is_empty());
    // bob is still subscribed after reconnecting.
    publish(&mut alice, "dev", json!({"back": true}));
    let push = bob.recv_type("channel_message", PUSH_TIMEOUT);
    assert_eq!(push["payload"], json!({"back": true}), "{push}");
}

#[test]
fn http_subscribe_unsubscribe_and_publish() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let (t_bob, mut bob) = online_agent(&hub, "bob");
    let (_, mut carol) = online_agent(&hub, "carol");

    // Agent token: subscribes the caller.
    let (status, body) = hub.post_as("/api/channels/dev/subscribe", Some(&t_alice), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "subscribed", "channel": "dev"}));
    let (status, body) = hub.post_as("/api/channels/dev/subscribe", Some(&t_alice), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["note"], "already_subscribed", "{body}");
    // Admin: subscribes the agent named in the body; alice hears of it.
    let (status, body) = hub.post("/api/channels/dev/subscribe", &json!({"agent_id": "bob"}));
    assert_eq!(status, 200, "{body}");
    let joined = alice.recv_type("channel_agent_joined", PUSH_TIMEOUT);
    assert_eq!(joined["agent_id"], "bob", "{joined}");
    let subs: BTreeSet<String> =
        serde_json::from_value(get_channel(&hub, "dev")["subscribers"].clone()).expect("list");
    assert_eq!(subs, set(&["alice", "bob"]));

    // Publish as an agent: the other subscriber gets it, the sender does not.
    let (status, body) = hub.post_as(
        "/api/channels/dev/publish",
        Some(&t_bob),
        &json!({"payload": {"via": "http"}, "type": "note"}),
    );
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(
        body,
        json!({"status": "published", "channel": "dev", "seq": 1, "id": id})
    );
    let push = alice.recv_type("channel_message", PUSH_TIMEOUT);
    assert_eq!(push["id"], id.as_str(), "{push}");
    assert_eq!(push["from"], "bob", "{push}");
    assert_eq!(push["message_type"], "note", "{push}");
    assert_eq!(push["payload"], json!({"via": "http"}), "{push}");
    assert!(channel_ids(&frames_before_fence(&hub, &mut bob)).is_empty());

    // Publish as admin: `from` is "admin"; both subscribers get it.
    let (status, body) = hub.post("/api/channels/dev/publish", &json!({"payload": {"n": 2}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seq"], 2, "{body}");
    for agent in [&mut alice, &mut bob] {
        let push = agent.recv_type("channel_message", PUSH_TIMEOUT);
        assert_eq!(push["from"], "admin", "{push}");
    }

    // Unsubscribe bob over HTTP; the next publish skips him.
    let (status, body) = hub.post_as("/api/channels/dev/unsubscribe", Some(&t_bob), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "unsubscribed", "channel": "dev"}));
    let (status, body) = hub.post_as(
        "/api/channels/dev/publish",
        Some(&t_alice),
        &json!({"payload": {"n": 3}}),
    );
    assert_eq!(status, 200, "{body}");
    for agent in [&mut alice, &mut bob, &mut carol] {
        let who = agent.agent_id.clone();
        assert!(
            channel_ids(&frames_before_fence(&hub, agent)).is_empty(),
            "{who} got a channel message it must not get"
        );
    }
    let dev = get_channel(&hub, "dev");
    assert_eq!(dev["subscribers"], json!(["alice"]), "{dev}");
    assert_eq!(dev["last_seq"], 3, "{dev}");
}

#[test]
fn concurrent_publishers_get_distinct_gapless_seqs() {
    let hub = Hub::start();
    create_channel(&hub, "busy", "");
    let port = hub.port;
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let id = format!("pub{i}");
            let token = register_agent(&hub, &id, &[]);
            std::thread::spawn(move || {
                let url = format!("http://127.0.0.1:{port}/api/channels/busy/publish");
                (0..10)
                    .map(|n| {
                        let (status, body) = http(
                            "POST",
                            &url,
                            Some(&token),
                            Body::Json(&json!({"payload": {"n": n}})),
                        );
                        assert_eq!(status, 200, "{body}");
                        (
                            body["seq"].as_u64().expect("seq"),
                            body["id"].as_str().expect("id").to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("publisher thread"))
        .collect();
    all.sort();
    let seqs_sent: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs_sent, (1..=30).collect::<Vec<u64>>());
    let (status, history) = hub.get("/api/channels/busy/history?limit=200");
    assert_eq!(status, 200, "{history}");
    let stored: Vec<(u64, String)> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or(0),
                e["message"]["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stored, all,
        "history holds each publish once, under its seq"
    );
}
