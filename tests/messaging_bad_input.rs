//! Malformed messaging frames and bodies get the documented error and change
//! nothing (PROTOCOL.md 1.1, 1.4, 3; issue 5).

mod common;

use common::*;
use serde_json::{json, Value};

/// Asserts a `validation_failed` reply (WS frame or HTTP body) with an error
/// `(field, error)` carrying a string `detail`.
fn assert_validation(reply: &Value, field: &str, error: &str) {
    assert_eq!(reply["error"], "validation_failed", "{reply}");
    let errors = reply["errors"].as_array().expect("errors array");
    let hit = errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error for field {field:?}: {reply}"));
    assert_eq!(hit["error"], error, "{reply}");
    assert!(hit["detail"].is_string(), "detail is a string: {reply}");
}

/// Sends bad frames, at most 8 per connection (10 violations in 60 s close the
/// socket, PROTOCOL.md 1.2), each from a fresh registered agent `bad<N>`.
struct BadSender<'a> {
    hub: &'a Hub,
    agent: Option<Agent>,
    sent_on_this: usize,
    connections: usize,
}

impl<'a> BadSender<'a> {
    fn new(hub: &'a Hub) -> Self {
        BadSender {
            hub,
            agent: None,
            sent_on_this: 0,
            connections: 0,
        }
    }

    fn agent(&mut self) -> &mut Agent {
        if self.agent.is_none() || self.sent_on_this >= 8 {
            self.connections += 1;
            let (_, agent) = online_agent(self.hub, &format!("bad{}", self.connections));
            self.agent = Some(agent);
            self.sent_on_this = 0;
        }
        self.agent.as_mut().expect("connected")
    }

    /// Sends a frame expected to fail validation and checks the reply.
    fn expect_validation(&mut self, frame: Value, field: &str, error: &str) -> Value {
        let ty = frame["type"].clone();
        let reply = request(self.agent(), frame.clone());
        self.sent_on_this += 1;
        assert_eq!(reply["type"], "error", "for {frame}: {reply}");
        assert_eq!(reply["message_type"], ty, "for {frame}: {reply}");
        assert_validation(&reply, field, error);
        reply
    }
}

/// The state bad input must not change.
fn messaging_state(hub: &Hub) -> Value {
    let (_, messages) = hub.get("/api/messages?limit=200");
    let (_, channels) = hub.get("/api/channels");
    let (_, dev) = hub.get("/api/channels/dev");
    let (_, history) = hub.get("/api/channels/dev/history");
    let (_, mailbox) = hub.get("/api/mailbox/bob");
    json!({"messages": messages, "channels": channels, "dev": dev,
           "history": history, "mailbox": mailbox})
}

fn no_pushes(hub: &Hub, agent: &mut Agent) {
    let frames = frames_before_fence(hub, agent);
    let pushes: Vec<&Value> = frames
        .iter()
        .filter(|f| {
            ["message", "channel_message", "channel_agent_joined"]
                .iter()
                .any(|t| f["type"] == *t)
        })
        .collect();
    assert!(
        pushes.is_empty(),
        "{} got pushes: {pushes:?}",
        agent.agent_id
    );
}

#[test]
fn malformed_messaging_frames_get_validation_failed_and_change_nothing() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    register_agent(&hub, "bob", &[]);
    let (_, mut watcher) = online_agent(&hub, "watcher");
    assert_eq!(
        request(
            &mut watcher,
            json!({"type": "channel_subscribe", "channel": "dev"})
        )["type"],
        "channel_subscribed"
    );
    let before = messaging_state(&hub);
    let long = "x".repeat(129);
    let long_channel = "c".repeat(65);
    let mut bad = BadSender::new(&hub);

    // message
    bad.expect_validation(
        json!({"type": "message", "to": "bob"}),
        "payload",
        "required",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": null}),
        "payload",
        "required",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": "hi"}),
        "payload",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": [1, 2]}),
        "payload",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": 5}),
        "to",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": ""}),
        "to",
        "invalid_value",
    );
    let reply = bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": long}),
        "to",
        "too_long",
    );
    assert_eq!(
        reply["errors"][0]["value"],
        format!("{}...", &long[..50]),
        "{reply}"
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": "bob", "message_type": 7}),
        "message_type",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": "bob", "message_type": "t".repeat(65)}),
        "message_type",
        "too_long",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": "bob", "reply_to": {"id": 1}}),
        "reply_to",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "message", "payload": {}, "to": "bob", "reply_to": long}),
        "reply_to",
        "too_long",
    );

    // channel_subscribe / channel_unsubscribe
    for ty in ["channel_subscribe", "channel_unsubscribe"] {
        bad.expect_validation(json!({"type": ty}), "channel", "required");
        bad.expect_validation(json!({"type": ty, "channel": 7}), "channel", "wrong_type");
        bad.expect_validation(
            json!({"type": ty, "channel": ""}),
            "channel",
            "invalid_value",
        );
        let reply = bad.expect_validation(
            json!({"type": ty, "channel": long_channel}),
            "channel",
            "too_long",
        );
        assert_eq!(
            reply["errors"][0]["value"],
            format!("{}...", &long_channel[..50]),
            "{reply}"
        );
    }

    // channel_publish
    bad.expect_validation(
        json!({"type": "channel_publish", "payload": {}}),
        "channel",
        "required",
    );
    bad.expect_validation(
        json!({"type": "channel_publish", "channel": "dev"}),
        "payload",
        "required",
    );
    bad.expect_validation(
        json!({"type": "channel_publish", "channel": "dev", "payload": "x"}),
        "payload",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "channel_publish", "channel": "dev", "payload": {}, "message_type": []}),
        "message_type",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "channel_publish", "channel": "dev", "payload": {}, "reply_to": 3}),
        "reply_to",
        "wrong_type",
    );

    // channel_history: strict integers.
    bad.expect_validation(json!({"type": "channel_history"}), "channel", "required");
    bad.expect_validation(
        json!({"type": "channel_history", "channel": "dev", "limit": "5"}),
        "limit",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "channel_history", "channel": "dev", "limit": -1}),
        "limit",
        "invalid_value",
    );
    bad.expect_validation(
        json!({"type": "channel_history", "channel": "dev", "since": 1.5}),
        "since",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "channel_history", "channel": "dev", "since": "0"}),
        "since",
        "wrong_type",
    );
    bad.expect_validation(
        json!({"type": "channel_history", "channel": "dev", "since": -3}),
        "since",
        "invalid_value",
    );

    // Every connection used is still open and served.
    bad.agent().assert_alive();
    assert_eq!(
        messaging_state(&hub),
        before,
        "bad frames changed messaging state"
    );
    no_pushes(&hub, &mut watcher);
}

#[test]
fn messaging_frames_before_identify_get_not_identified() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    register_agent(&hub, "bob", &[]);
    let before = messaging_state(&hub);
    let mut anon = Agent::open(&hub);
    for frame in [
        json!({"type": "message", "to": "bob", "payload": {"x": 1}}),
        json!({"type": "message", "payload": {"x": 1}}),
        json!({"type": "channel_subscribe", "channel": "dev"}),
        json!({"type": "channel_unsubscribe", "channel": "dev"}),
        json!({"type": "channel_publish", "channel": "dev", "payload": {}}),
        json!({"type": "channel_history", "channel": "dev"}),
        json!({"type": "list_channels"}),
    ] {
        let reply = request(&mut anon, frame.clone());
        assert_eq!(
            reply,
            json!({"type": "error", "error": "not_identified"}),
            "for {frame}"
        );
    }
    assert_eq!(messaging_state(&hub), before);
}

#[test]
fn refused_targets_get_their_errors_over_the_websocket() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    register_agent(&hub, "bob", &[]);
    let (_, mut alice) = online_agent(&hub, "alice");
    let before = messaging_state(&hub);
    // More than 10 of them: these are not violations, the socket stays open.
    for _ in 0..4 {
        let reply = request(
            &mut alice,
            json!({"type": "message", "to": "nobody", "payload": {}}),
        );
        assert_error(&reply, "recipient_not_found");
        for frame in [
            json!({"type": "channel_subscribe", "channel": "nope"}),
            json!({"type": "channel_unsubscribe", "channel": "nope"}),
            json!({"type": "channel_publish", "channel": "nope", "payload": {"x": 1}}),
            json!({"type": "channel_history", "channel": "nope"}),
        ] {
            let reply = request(&mut alice, frame.clone());
            assert_error(&reply, "channel_not_found");
            assert_eq!(reply["channel"], "nope", "for {frame}: {reply}");
            assert_eq!(reply["message_type"], frame["type"], "for {frame}: {reply}");
        }
    }
    alice.assert_alive();
    assert_eq!(messaging_state(&hub), before);
    let (_, list) = hub.get("/api/channels");
    assert_eq!(list["channels"].as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn oversized_payloads_are_refused_at_the_configured_limit() {
    // {"t":"<n x>"} is n + 8 bytes of JSON.
    let hub = Hub::start_with_config("max_message_bytes = 64\n");
    create_channel(&hub, "dev", "");
    let t_bob = register_agent(&hub, "bob", &[]);
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let fits = json!({"t": "f".repeat(56)});
    let too_big = json!({"t": "b".repeat(57)});
    assert_eq!(serde_json::to_vec(&fits).expect("json").len(), 64);
    let before = messaging_state(&hub);

    for frame in [
        json!({"type": "message", "to": "bob", "payload": too_big}),
        json!({"type": "message", "payload": too_big}),
        json!({"type": "channel_publish", "channel": "dev", "payload": too_big}),
    ] {
        let reply = request(&mut alice, frame.clone());
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["message_type"], frame["type"], "{reply}");
        assert_validation(&reply, "payload", "too_long");
    }
    for (path, body) in [
        ("/api/message", json!({"to": "bob", "payload": too_big})),
        ("/api/channels/dev/publish", json!({"payload": too_big})),
    ] {
        let (status, resp) = hub.post_as(path, Some(&t_alice), &body);
        assert_eq!(status, 422, "{path}: {resp}");
        assert_validation(&resp, "payload", "too_long");
    }
    assert_eq!(
        messaging_state(&hub),
        before,
        "refused payloads changed state"
    );

    // Exactly at the limit is fine.
    let reply = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": fits}),
    );
    assert_eq!(reply["type"], "message_sent", "{reply}");
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(
        mailbox["messages"][0]["message"]["payload"], fits,
        "{mailbox}"
    );
}

#[test]
fn oversized_payload_error_echoes_the_value_like_every_too_long() {
    // PROTOCOL.md 1.1: "A too_long error echoes the first 50 characters of the
    // value plus ... in value".
    let hub = Hub::start_with_config("max_message_bytes = 64\n");
    register_agent(&hub, "bob", &[]);
    let (_, mut alice) = online_agent(&hub, "alice");
    let reply = request(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"t": "b".repeat(100)}}),
    );
    assert_validation(&reply, "payload", "too_long");
    let value = reply["errors"][0]["value"].as_str().unwrap_or_default();
    assert!(
        value.ends_with("...") && value.chars().count() == 53,
        "too_long error without the echoed value: {reply}"
    );
}

#[test]
fn channel_history_limit_zero_returns_at_most_zero() {
    // PROTOCOL.md 1.4: "messages with seq > since, oldest first, at most limit".
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    alice.send(json!({"type": "channel_publish", "channel": "dev", "payload": {}}));
    alice.recv_type("channel_published", REPLY_TIMEOUT);
    let reply = request(
        &mut alice,
        json!({"type": "channel_history", "channel": "dev", "limit": 0}),
    );
    if reply["type"] == "error" {
        assert_validation(&reply, "limit", "invalid_value");
    } else {
        assert_eq!(reply["type"], "channel_history", "{reply}");
        assert_eq!(
            reply["messages"],
            json!([]),
            "limit 0 gave more than 0: {reply}"
        );
    }
}

#[test]
fn malformed_http_bodies_and_queries_get_the_documented_errors_and_change_nothing() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let t_bob = register_agent(&hub, "bob", &[]);
    let t_alice = register_agent(&hub, "alice", &[]);
    let (_, mut watcher) = online_agent(&hub, "watcher");
    assert_eq!(
        request(
            &mut watcher,
            json!({"type": "channel_subscribe", "channel": "dev"})
        )["type"],
        "channel_subscribed"
    );
    let (status, _) = hub.post(
        "/api/message",
        &json!({"to": "bob", "payload": {"keep": 1}}),
    );
    assert_eq!(status, 200);
    let before = messaging_state(&hub);
    let a = Some(t_alice.as_str());
    let b = Some(t_bob.as_str());

    // Not JSON: 400 invalid_json.
    for path in [
        "/api/message",
        "/api/mailbox/bob/ack",
        "/api/channels",
        "/api/channels/dev/publish",
    ] {
        let token = if path.contains("mailbox") { b } else { a };
        let (status, body) = hub.post_raw_as(path, token, "{\"payload\": ");
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_json", "{path}: {body}");
    }

    // Schema failures: 422 validation_failed naming the field.
    let long = "x".repeat(129);
    let cases: Vec<(&str, Option<&str>, Value, &str, &str)> = vec![
        ("/api/message", a, json!([1]), "", "wrong_type"),
        ("/api/message", a, json!({}), "payload", "required"),
        (
            "/api/message",
            a,
            json!({"payload": null}),
            "payload",
            "required",
        ),
        (
            "/api/message",
            a,
            json!({"payload": "hi"}),
            "payload",
            "wrong_type",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "to": 5}),
            "to",
            "wrong_type",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "to": ""}),
            "to",
            "invalid_value",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "to": long}),
            "to",
            "too_long",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "type": 5}),
            "type",
            "wrong_type",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "message_type": []}),
            "message_type",
            "wrong_type",
        ),
        (
            "/api/message",
            a,
            json!({"payload": {}, "reply_to": {}}),
            "reply_to",
            "wrong_type",
        ),
        ("/api/mailbox/bob/ack", b, json!({}), "seq", "required"),
        (
            "/api/mailbox/bob/ack",
            b,
            json!({"seq": "2"}),
            "seq",
            "wrong_type",
        ),
        (
            "/api/mailbox/bob/ack",
            b,
            json!({"seq": 1.5}),
            "seq",
            "wrong_type",
        ),
        (
            "/api/mailbox/bob/ack",
            b,
            json!({"seq": -1}),
            "seq",
            "invalid_value",
        ),
        ("/api/channels", a, json!({}), "name", "required"),
        ("/api/channels", a, json!({"name": 5}), "name", "wrong_type"),
        (
            "/api/channels",
            a,
            json!({"name": ""}),
            "name",
            "invalid_value",
        ),
        (
            "/api/channels",
            a,
            json!({"name": "n".repeat(65)}),
            "name",
            "too_long",
        ),
        (
            "/api/channels",
            a,
            json!({"name": "ok", "description": 5}),
            "description",
            "wrong_type",
        ),
        (
            "/api/channels/dev/publish",
            a,
            json!({}),
            "payload",
            "required",
        ),
        (
            "/api/channels/dev/publish",
            a,
            json!({"payload": [1]}),
            "payload",
            "wrong_type",
        ),
        (
            "/api/channels/dev/publish",
            a,
            json!({"payload": {}, "type": 1}),
            "type",
            "wrong_type",
        ),
        (
            "/api/channels/dev/subscribe",
            None,
            json!({}),
            "agent_id",
            "required",
        ),
        (
            "/api/channels/dev/subscribe",
            None,
            json!({"agent_id": 3}),
            "agent_id",
            "wrong_type",
        ),
        (
            "/api/channels/dev/unsubscribe",
            None,
            json!({}),
            "agent_id",
            "required",
        ),
    ];
    for (path, token, body, field, error) in cases {
        let (status, resp) = match token {
            Some(t) => hub.post_as(path, Some(t), &body),
            None => hub.post(path, &body), // admin
        };
        assert_eq!(status, 422, "POST {path} {body}: {resp}");
        assert_validation(&resp, field, error);
    }

    // Malformed query parameters: 422, never a 500.
    for path in [
        "/api/mailbox/bob?since=abc",
        "/api/mailbox/bob?since=-1",
        "/api/channels/dev/history?since=abc",
        "/api/channels/dev/history?limit=0",
        "/api/channels/dev/history?limit=201",
        "/api/channels/dev/history?limit=ten",
        "/api/messages?limit=0",
        "/api/messages?limit=201",
        "/api/messages?limit=-5",
        "/api/messages?cursor=abc",
        "/api/messages?start_time=yesterday",
        "/api/messages?end_time=-1",
        "/api/analytics/agents/alice/hourly?hours=0",
        "/api/analytics/agents/alice/hourly?hours=abc",
        "/api/analytics/agents/alice/hourly?hours=100000",
    ] {
        let token = if path.contains("mailbox") { b } else { a };
        let (status, body) = hub.get_as(path, token);
        assert_eq!(status, 422, "GET {path}: {body}");
        assert_eq!(body["error"], "validation_failed", "GET {path}: {body}");
        assert!(body["errors"].is_array(), "GET {path}: {body}");
    }

    // Unknown channel: 404 channel_not_found naming it, on every route.
    for (method, path) in [
        ("GET", "/api/channels/nope"),
        ("GET", "/api/channels/nope/history"),
        ("POST", "/api/channels/nope/subscribe"),
        ("POST", "/api/channels/nope/unsubscribe"),
        ("POST", "/api/channels/nope/publish"),
    ] {
        let (status, body) = if method == "GET" {
            hub.get_as(path, a)
        } else {
            hub.post_as(path, a, &json!({"payload": {"x": 1}}))
        };
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(
            body,
            json!({"error": "channel_not_found", "channel": "nope"}),
            "{method} {path}"
        );
    }
    // Unknown recipient.
    let (status, body) = hub.post_as("/api/message", a, &json!({"to": "nobody", "payload": {}}));
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "recipient_not_found", "{body}");
    // Duplicate channel.
    let (status, body) = hub.post_as("/api/channels", a, &json!({"name": "dev"}));
    assert_eq!(status, 409, "{body}");

    // No or unknown token: 401 on every messaging route.
    for token in [None, Some("nope-not-a-token")] {
        for (method, path) in [
            ("POST", "/api/message"),
            ("GET", "/api/mailbox/bob"),
            ("POST", "/api/mailbox/bob/ack"),
            ("GET", "/api/channels"),
            ("POST", "/api/channels"),
            ("GET", "/api/channels/dev"),
            ("POST", "/api/channels/dev/subscribe"),
            ("POST", "/api/channels/dev/publish"),
            ("GET", "/api/channels/dev/history"),
            ("GET", "/api/messages"),
            ("GET", "/api/threads/msg-0000000000000000"),
            ("GET", "/api/analytics/summary"),
        ] {
            let (status, body) = if method == "GET" {
                hub.get_as(path, token)
            } else {
                hub.post_as(path, token, &json!({"payload": {}, "seq": 1, "name": "x"}))
            };
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(
                body,
                json!({"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"}),
                "{method} {path}"
            );
        }
    }

    assert_eq!(
        messaging_state(&hub),
        before,
        "bad HTTP input changed messaging state"
    );
    no_pushes(&hub, &mut watcher);
    let mailbox = read_mailbox(&hub, "bob", &t_bob, 0);
    assert_eq!(seqs(&mailbox["messages"]), vec![1], "{mailbox}");
    assert_eq!(mailbox["acked"], 0, "{mailbox}");
}
