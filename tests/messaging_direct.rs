//! Direct and broadcast messages over the WebSocket and `POST /api/message`,
//! offline delivery through the mailbox, cursor ack, privacy and the mailbox cap
//! (PROTOCOL.md 1.4, 1.5, 3; issue 5).

mod common;

use std::collections::BTreeSet;
use std::thread;

use common::*;
use serde_json::{json, Value};

/// Asserts `push` is exactly the `message` push of PROTOCOL.md 1.5, plus the
/// `mailbox_seq` (ext) where the message waits for its acknowledgement.
fn assert_message_push(
    push: &Value,
    id: &str,
    from: &str,
    message_type: &str,
    payload: &Value,
    reply_to: Value,
    window: (u64, u64),
) {
    let ts = push["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("timestamp is an integer: {push}"));
    assert!(
        window.0 <= ts && ts <= window.1,
        "timestamp {ts} outside [{}, {}]: {push}",
        window.0,
        window.1
    );
    let mut push = push.clone();
    let seq = push
        .as_object_mut()
        .and_then(|p| p.remove("mailbox_seq"))
        .and_then(|s| s.as_u64());
    assert!(seq.is_some_and(|s| s > 0), "a mailbox_seq: {push}");
    assert_eq!(
        &push,
        &json!({
            "type": "message",
            "id": id,
            "from": from,
            "message_type": message_type,
            "payload": payload,
            "reply_to": reply_to,
            "timestamp": ts,
        }),
        "message push shape"
    );
}

/// Sends a `message` frame and returns the id of its `message_sent` reply
/// (pushes arriving meanwhile are kept for later waits).
fn send_message(agent: &mut Agent, frame: Value) -> String {
    agent.send(frame);
    let sent = agent.recv_type("message_sent", REPLY_TIMEOUT);
    sent["id"]
        .as_str()
        .unwrap_or_else(|| panic!("message_sent carries an id: {sent}"))
        .to_string()
}

fn no_message_frames(frames: &[Value], who: &str) {
    let got: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message" || f["type"] == "channel_message")
        .collect();
    assert!(got.is_empty(), "{who} got pushes it must not get: {got:?}");
}

#[test]
fn direct_message_reaches_only_its_online_recipient_and_stays_in_its_mailbox_until_acked() {
    let hub = Hub::start();
    let (_, mut alice) = online_agent(&hub, "alice");
    let (t_bob, mut bob) = online_agent(&hub, "bob");
    let (t_carol, mut carol) = online_agent(&hub, "carol");

    let before = now_ms();
    let payload = json!({"text": "hello bob", "n": 1, "nested": {"list": [1, 2]}});
    let sent = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": payload}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let id = sent["id"].as_str().expect("message_sent carries an id");
    assert_eq!(sent, json!({"type": "message_sent", "id": id}));

    let push = bob.recv_type("message", PUSH_TIMEOUT);
    assert_message_push(
        &push,
        id,
        "alice",
        "chat",
        &payload,
        Value::Null,
        (before, now_ms()),
    );

    // A second one with a type and reply_to.
    let before = now_ms();
    let sent2 = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"q": "?"},
               "message_type": "question", "reply_to": id}),
    );
    let id2 = sent2["id"].as_str().expect("id").to_string();
    assert_ne!(id2, id, "message ids are unique");
    let push2 = bob.recv_type("message", PUSH_TIMEOUT);
    assert_message_push(
        &push2,
        &id2,
        "alice",
        "question",
        &json!({"q": "?"}),
        json!(id),
        (before, now_ms()),
    );

    assert_eq!(push["mailbox_seq"], 1, "{push}");
    assert_eq!(push2["mailbox_seq"], 2, "{push2}");

    // Exactly once: nobody else got it and bob got no duplicate. The push was a
    // wake-up: both messages wait in bob's mailbox until he acknowledges them.
    no_message_frames(&frames_before_fence(&hub, &mut carol), "carol");
    no_message_frames(&frames_before_fence(&hub, &mut alice), "alice (sender)");
    no_message_frames(&frames_before_fence(&hub, &mut bob), "bob (after 2)");
    // (The fence of `frames_before_fence` is a direct message too: seq 3.)
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![1, 2, 3], "{mailbox}");
    assert_eq!(mailbox["messages"][0]["message"]["id"], id, "{mailbox}");
    assert_eq!(mailbox["messages"][1]["message"]["id"], id2, "{mailbox}");
    let (status, acked) = http(
        "POST",
        &hub.url("/api/mailbox/bob/ack"),
        Some(&t_bob),
        Body::Json(&json!({"seq": 3})),
    );
    assert_eq!(status, 200, "{acked}");
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(mailbox["count"], 0, "{mailbox}");
    let carols = read_mailbox(&hub, "carol", &t_carol, 0);
    let from_alice = carols["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|e| e["message"]["from"] == "alice"));
    assert!(!from_alice, "{carols}");
}

#[test]
fn broadcast_reaches_every_other_online_agent_once_and_every_mailbox() {
    let hub = Hub::start();
    // Registered, never online: its mailbox keeps every broadcast for later.
    let t_dave = register_agent(&hub, "dave", &[]);
    let (_, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    let (_, mut carol) = online_agent(&hub, "carol");

    // No `to` at all.
    let before = now_ms();
    let sent = request(
        &mut alice,
        json!({"type": "message", "payload": {"all": 1}, "message_type": "announce"}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let id1 = sent["id"].as_str().expect("id").to_string();
    for agent in [&mut bob, &mut carol] {
        let push = agent.recv_type("message", PUSH_TIMEOUT);
        assert_message_push(
            &push,
            &id1,
            "alice",
            "announce",
            &json!({"all": 1}),
            Value::Null,
            (before, now_ms()),
        );
    }

    // `to: "broadcast"` and `to: null` mean the same.
    let id2 = send_message(
        &mut bob,
        json!({"type": "message", "to": "broadcast", "payload": {"all": 2}}),
    );
    let id3 = send_message(
        &mut carol,
        json!({"type": "message", "to": null, "payload": {"all": 3}}),
    );

    // Each agent gets exactly the broadcasts of the others, never its own.
    for (agent, expected) in [
        (&mut alice, vec![id2.clone(), id3.clone()]),
        (&mut bob, vec![id3.clone()]),
        (&mut carol, vec![id2.clone()]),
    ] {
        let who = agent.agent_id.clone();
        let got: Vec<String> = frames_before_fence(&hub, agent)
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let got: BTreeSet<String> = got.into_iter().collect();
        let expected: BTreeSet<String> = expected.into_iter().collect();
        assert_eq!(got, expected, "broadcasts received by {who}");
    }

    let mailbox = read_mailbox(&hub, "dave", &t_dave, 0);
    let ids: Vec<&str> = mailbox["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|e| e["message"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        ids,
        vec![id1.as_str(), id2.as_str(), id3.as_str()],
        "{mailbox}"
    );

    // The broadcast is in the history with no recipient.
    let (status, page) = hub.get("/api/messages?from=alice");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 1, "{page}");
    assert_eq!(page["messages"][0]["id"], id1.as_str(), "{page}");
    assert!(page["messages"][0]["to"].is_null(), "{page}");
}

#[test]
fn http_post_message_sends_as_the_caller_with_type_alias() {
    let hub = Hub::start();
    let t_alice = register_agent(&hub, "alice", &[]);
    let (_, mut bob) = online_agent(&hub, "bob");
    let (_, mut carol) = online_agent(&hub, "carol");

    // Agent token: `from` is the agent; `type` is the v1.1 name of message_type.
    let before = now_ms();
    let (status, resp) = hub.post_as(
        "/api/message",
        Some(&t_alice),
        &json!({"to": "bob", "payload": {"via": "http"}, "type": "note"}),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["status"], "sent", "{resp}");
    let id = resp["id"].as_str().expect("id").to_string();
    assert_eq!(resp, json!({"status": "sent", "id": id}));
    let push = bob.recv_type("message", PUSH_TIMEOUT);
    assert_message_push(
        &push,
        &id,
        "alice",
        "note",
        &json!({"via": "http"}),
        Value::Null,
        (before, now_ms()),
    );

    // `message_type` works too, and reply_to is carried.
    let before = now_ms();
    let (status, resp) = hub.post_as(
        "/api/message",
        Some(&t_alice),
        &json!({"to": "bob", "payload": {"k": 2}, "message_type": "answer", "reply_to": id}),
    );
    assert_eq!(status, 200, "{resp}");
    let id2 = resp["id"].as_str().expect("id").to_string();
    let push = bob.recv_type("message", PUSH_TIMEOUT);
    assert_message_push(
        &push,
        &id2,
        "alice",
        "answer",
        &json!({"k": 2}),
        json!(id),
        (before, now_ms()),
    );

    // Admin token: `from` is "admin"; no `to` is a broadcast to everyone online.
    let before = now_ms();
    let (status, resp) = hub.post("/api/message", &json!({"payload": {"ops": "maintenance"}}));
    assert_eq!(status, 200, "{resp}");
    let id3 = resp["id"].as_str().expect("id").to_string();
    for agent in [&mut bob, &mut carol] {
        let push = agent.recv_type("message", PUSH_TIMEOUT);
        assert_message_push(
            &push,
            &id3,
            "admin",
            "chat",
            &json!({"ops": "maintenance"}),
            Value::Null,
            (before, now_ms()),
        );
    }
    no_message_frames(&frames_before_fence(&hub, &mut carol), "carol");
}

#[test]
fn unknown_recipient_is_refused_and_nothing_is_stored() {
    let hub = Hub::start();
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");

    let reply = request(
        &mut alice,
        json!({"type": "message", "to": "nobody", "payload": {"x": 1}}),
    );
    assert_error(&reply, "recipient_not_found");
    assert_eq!(reply["message_type"], "message", "{reply}");

    let (status, body) = hub.post_as(
        "/api/message",
        Some(&t_alice),
        &json!({"to": "nobody", "payload": {"x": 2}}),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "recipient_not_found", "{body}");
    let (status, body) = hub.post("/api/message", &json!({"to": "ghost", "payload": {}}));
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "recipient_not_found", "{body}");

    // Nothing was recorded, delivered or mailboxed.
    let (status, page) = hub.get("/api/messages");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 0, "{page}");
    let (status, mailbox) = hub.get("/api/mailbox/nobody");
    assert_eq!(status, 200, "{mailbox}");
    assert_eq!(mailbox["count"], 0, "{mailbox}");
    assert_eq!(mailbox["last_seq"], 0, "{mailbox}");
    no_message_frames(&frames_before_fence(&hub, &mut bob), "bob");
    alice.assert_alive();
}

#[test]
fn offline_recipient_gets_messages_in_its_mailbox_in_order_and_acks_them() {
    let hub = Hub::start();
    let (_, mut alice) = online_agent(&hub, "alice");
    let t_bob = register_agent(&hub, "bob", &[]);
    let t_carol = register_agent(&hub, "carol", &[]);
    // bob has been online once and left; carol never connected.
    let bob = Agent::connect(&hub, "bob", &t_bob);
    disconnect(&hub, bob);

    let mut ids = Vec::new();
    for n in 1..=3 {
        let sent = request(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"n": n}, "message_type": "work"}),
        );
        assert_eq!(sent["type"], "message_sent", "{sent}");
        ids.push(sent["id"].as_str().expect("id").to_string());
    }
    let (status, resp) = hub.post("/api/message", &json!({"to": "bob", "payload": {"n": 4}}));
    assert_eq!(status, 200, "{resp}");
    ids.push(resp["id"].as_str().expect("id").to_string());
    let sent = request(
        &mut alice,
        json!({"type": "message", "to": "carol", "payload": {"for": "carol"}}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");

    let before_read = now_ms();
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(mailbox["agent_id"], "bob", "{mailbox}");
    assert_eq!(seqs(&mailbox["messages"]), vec![1, 2, 3, 4], "{mailbox}");
    assert_eq!(mailbox["count"], 4, "{mailbox}");
    assert_eq!(mailbox["last_seq"], 4, "{mailbox}");
    assert_eq!(mailbox["evicted"], 0, "{mailbox}");
    let entries = mailbox["messages"].as_array().expect("messages");
    for (i, entry) in entries.iter().enumerate() {
        let m = &entry["message"];
        assert_eq!(m["id"], ids[i].as_str(), "{entry}");
        assert_eq!(m["to"], "bob", "{entry}");
        assert!(
            entry["stored_at"]
                .as_u64()
                .is_some_and(|t| t <= before_read),
            "{entry}"
        );
        if i < 3 {
            assert_eq!(m["from"], "alice", "{entry}");
            assert_eq!(m["message_type"], "work", "{entry}");
            assert_eq!(m["payload"], json!({"n": i + 1}), "{entry}");
        } else {
            assert_eq!(m["from"], "admin", "{entry}");
            assert_eq!(m["message_type"], "chat", "{entry}");
        }
        assert!(m["timestamp"].is_u64(), "{entry}");
    }
    // Mailboxes are per agent.
    let carol_box = read_mailbox(&hub, "carol", &t_carol, 0);
    assert_eq!(seqs(&carol_box["messages"]), vec![1], "{carol_box}");
    assert_eq!(
        carol_box["messages"][0]["message"]["payload"],
        json!({"for": "carol"})
    );

    // since=N gives the entries after N.
    let after2 = read_mailbox(&hub, "bob", &t_bob, 2);
    assert_eq!(seqs(&after2["messages"]), vec![3, 4], "{after2}");
    assert_eq!(after2["count"], 2, "{after2}");
    let after4 = read_mailbox(&hub, "bob", &t_bob, 4);
    assert_eq!(after4["messages"], json!([]), "{after4}");

    // Reading does not consume: the same entries again.
    assert_eq!(
        seqs(&read_mailbox(&hub, "bob", &t_bob, 0)["messages"]),
        vec![1, 2, 3, 4]
    );

    // Ack up to 2: those are gone, 3 and 4 stay.
    let (status, ack) = hub.post_as("/api/mailbox/bob/ack", Some(&t_bob), &json!({"seq": 2}));
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack, json!({"status": "acked", "up_to": 2}));
    let rest = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&rest["messages"]), vec![3, 4], "{rest}");
    assert_eq!(rest["acked"], 2, "{rest}");
    assert_eq!(rest["last_seq"], 4, "{rest}");

    // The admin may read and ack any mailbox.
    let (status, ack) = hub.post("/api/mailbox/bob/ack", &json!({"seq": 3}));
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack, json!({"status": "acked", "up_to": 3}));
    let (status, rest) = hub.get("/api/mailbox/bob");
    assert_eq!(status, 200, "{rest}");
    assert_eq!(seqs(&rest["messages"]), vec![4], "{rest}");

    // New mail keeps counting after the acked ones.
    let sent = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"n": 5}}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let rest = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&rest["messages"]), vec![4, 5], "{rest}");
    assert_eq!(rest["messages"][1]["message"]["payload"], json!({"n": 5}));

    // Acking past the newest entry drops what exists but never swallows mail
    // that arrives later.
    let (status, ack) = hub.post_as("/api/mailbox/bob/ack", Some(&t_bob), &json!({"seq": 99}));
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["status"], "acked", "{ack}");
    assert_eq!(read_mailbox(&hub, "bob", &t_bob, 0)["messages"], json!([]));
    let sent = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"n": 6}}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let rest = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&rest["messages"]), vec![6], "{rest}");
    assert_eq!(rest["messages"][0]["message"]["payload"], json!({"n": 6}));
}

#[test]
fn an_agent_cannot_read_or_ack_another_agents_mailbox() {
    let hub = Hub::start();
    let t_bob = register_agent(&hub, "bob", &[]);
    let t_eve = register_agent(&hub, "eve", &[]);
    for n in 1..=2 {
        let (status, resp) = hub.post(
            "/api/message",
            &json!({"to": "bob", "payload": {"secret": n}}),
        );
        assert_eq!(status, 200, "{resp}");
    }
    let before = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&before["messages"]), vec![1, 2], "{before}");

    for path in ["/api/mailbox/bob", "/api/mailbox/bob?since=0"] {
        let (status, body) = hub.get_as(path, Some(&t_eve));
        assert_eq!(status, 403, "GET {path} as eve: {body}");
        assert_eq!(body, json!({"error": "forbidden"}), "GET {path} as eve");
    }
    let (status, body) = hub.post_as("/api/mailbox/bob/ack", Some(&t_eve), &json!({"seq": 2}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body, json!({"error": "forbidden"}));
    // Without a token, or with a made-up one: 401.
    for token in [None, Some("not-a-token")] {
        let (status, body) = hub.get_as("/api/mailbox/bob", token);
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
        let (status, body) = hub.post_as("/api/mailbox/bob/ack", token, &json!({"seq": 2}));
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    // bob's token does not open eve's mailbox either.
    let (status, body) = hub.get_as("/api/mailbox/eve", Some(&t_bob));
    assert_eq!(status, 403, "{body}");

    // Nothing changed for bob.
    let after = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(after["messages"], before["messages"], "{after}");
    assert_eq!(after["acked"], 0, "{after}");
}

#[test]
fn mailbox_cap_evicts_the_oldest_and_counts_and_logs_it() {
    let hub = Hub::start_with_config("mailbox_cap = 3\n");
    let (_, mut alice) = online_agent(&hub, "alice");
    let t_bob = register_agent(&hub, "bob", &[]);
    let mut ids = Vec::new();
    for n in 1..=5 {
        let sent = request(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"n": n}}),
        );
        assert_eq!(sent["type"], "message_sent", "{sent}");
        ids.push(sent["id"].as_str().expect("id").to_string());
    }
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![3, 4, 5], "{mailbox}");
    let kept: Vec<&str> = mailbox["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| e["message"]["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kept,
        vec![ids[2].as_str(), ids[3].as_str(), ids[4].as_str()]
    );
    assert_eq!(mailbox["evicted"], 2, "{mailbox}");
    assert_eq!(mailbox["last_seq"], 5, "{mailbox}");
    assert_eq!(mailbox["count"], 3, "{mailbox}");

    // Acking frees room: two more fit without evicting.
    let (status, ack) = hub.post_as("/api/mailbox/bob/ack", Some(&t_bob), &json!({"seq": 4}));
    assert_eq!(status, 200, "{ack}");
    for n in 6..=7 {
        let sent = request(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"n": n}}),
        );
        assert_eq!(sent["type"], "message_sent", "{sent}");
    }
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![5, 6, 7], "{mailbox}");
    assert_eq!(mailbox["evicted"], 2, "{mailbox}");
    // One more evicts one more.
    let sent = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"n": 8}}),
    );
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![6, 7, 8], "{mailbox}");
    assert_eq!(mailbox["evicted"], 3, "{mailbox}");

    // The eviction is logged, naming the agent.
    let logged = wait_for(PUSH_TIMEOUT, || {
        hub.log_paths().iter().any(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("evict") && l.contains("bob"))
        })
    });
    assert!(logged, "no log line about evicting from bob's mailbox");

    // An agent that never acknowledges does not flood the log: a burst of
    // evictions is one warning (at most one a minute), and the count still
    // counts every one.
    let started = std::time::Instant::now();
    for n in 9..=30 {
        let sent = request(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"n": n}}),
        );
        assert_eq!(sent["type"], "message_sent", "{sent}");
    }
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(mailbox["evicted"], 25, "{mailbox}");
    let minutes = started.elapsed().as_secs() / 60;
    let warnings: usize = hub
        .log_paths()
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("mailbox full") && l.contains("bob"))
                .count()
        })
        .sum();
    assert!(
        warnings as u64 <= 2 + minutes,
        "{warnings} warnings for 25 evictions in {minutes} minute(s)"
    );
}

#[test]
fn concurrent_senders_to_an_offline_agent_lose_nothing() {
    let hub = Hub::start();
    let t_bob = register_agent(&hub, "bob", &[]);
    let senders: Vec<(String, String)> = (0..3)
        .map(|i| {
            let id = format!("sender{i}");
            let token = register_agent(&hub, &id, &[]);
            (id, token)
        })
        .collect();
    let port = hub.port;
    let handles: Vec<_> = senders
        .into_iter()
        .map(|(id, token)| {
            thread::spawn(move || {
                let url = format!("http://127.0.0.1:{port}/api/message");
                (0..10)
                    .map(|n| {
                        let (status, resp) = http(
                            "POST",
                            &url,
                            Some(&token),
                            Body::Json(&json!({"to": "bob", "payload": {"from": id, "n": n}})),
                        );
                        assert_eq!(status, 200, "{resp}");
                        resp["id"].as_str().expect("id").to_string()
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let sent: BTreeSet<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("sender thread"))
        .collect();
    assert_eq!(sent.len(), 30, "30 distinct ids");

    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(
        seqs(&mailbox["messages"]),
        (1..=30).collect::<Vec<u64>>(),
        "{mailbox}"
    );
    let stored: BTreeSet<String> = mailbox["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| e["message"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        stored, sent,
        "every acknowledged message is in the mailbox once"
    );
    // Each sender's messages keep their order.
    for i in 0..3 {
        let ns: Vec<u64> = mailbox["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|e| e["message"]["from"] == format!("sender{i}"))
            .map(|e| e["message"]["payload"]["n"].as_u64().unwrap_or(99))
            .collect();
        assert_eq!(ns, (0..10).collect::<Vec<u64>>(), "order of sender{i}");
    }
}
