//! Topic events (#21, ext, PROTOCOL.md 6.30): published over HTTP and WS,
//! durable once acknowledged (a kill -9 right after loses none), ordered per
//! topic, paged by cursor and time, deduplicated by `dedupe_key`; bad input
//! changes nothing.

mod common;

use common::*;
use serde_json::{json, Value};

fn publish(hub: &Hub, topic: &str, body: Value) -> (u16, Value) {
    hub.post(&format!("/api/topics/{topic}/events"), &body)
}

#[test]
fn events_are_durable_ordered_per_topic_and_deduplicated() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "pub1", &[]);
    let mut agent = Agent::connect(&hub, "pub1", &token);
    for n in 0..3 {
        let (status, body) = publish(&hub, "pr_opened", json!({"payload": {"pr": n}}));
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["event"]["publisher"], "admin", "{body}");
        publish(&hub, "deliverable_ready", json!({"payload": {"n": n}}));
    }
    // Over the agent's socket, with a request id and a dedupe key.
    let reply = request(
        &mut agent,
        json!({"type": "event_publish", "topic": "pr_opened", "payload": {"pr": 3},
               "dedupe_key": "pr-3", "request_id": "r1"}),
    );
    assert_eq!(reply["type"], "event_published", "{reply}");
    assert_eq!(
        (reply["request_id"].clone(), reply["existing"].clone()),
        (json!("r1"), json!(false))
    );
    assert_eq!(reply["event"]["publisher"], "pub1", "{reply}");
    let first_seq = reply["event"]["seq"].clone();
    let again = request(
        &mut agent,
        json!({"type": "event_publish", "topic": "pr_opened", "payload": {"pr": 99},
               "dedupe_key": "pr-3"}),
    );
    assert_eq!(again["existing"], true, "{again}");
    assert_eq!(again["event"]["seq"], first_seq, "the first event answers");
    let (status, body) = publish(
        &hub,
        "pr_opened",
        json!({"payload": {"pr": 100}, "dedupe_key": "pr-3"}),
    );
    assert_eq!((status, body["existing"].clone()), (200, json!(true)));

    // Acknowledged means durable: a kill -9 now loses nothing.
    hub.kill9();
    hub.restart();
    let (_, page) = hub.get("/api/topics/pr_opened/events?limit=2");
    let prs: Vec<Value> = page["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["payload"]["pr"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(prs, [json!(0), json!(1)], "{page}");
    let cursor = page["next_cursor"].as_u64().expect("more to read");
    let (_, rest) = hub.get(&format!("/api/topics/pr_opened/events?cursor={cursor}"));
    let prs: Vec<Value> = rest["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["payload"]["pr"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(prs, [json!(2), json!(3)], "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let (_, newest) = hub.get("/api/topics/pr_opened/events?newest=true&limit=2");
    let prs: Vec<Value> = newest["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["payload"]["pr"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(prs, [json!(2), json!(3)], "{newest}");
    let (_, later) = hub.get("/api/topics/pr_opened/events?since=99999999999999");
    assert_eq!(later["count"], 0, "{later}");
    let (_, topics) = hub.get("/api/topics");
    let counts: Vec<(Value, Value)> = topics["topics"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| (t["topic"].clone(), t["count"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        counts,
        [
            (json!("deliverable_ready"), json!(3)),
            (json!("pr_opened"), json!(4))
        ]
    );
    // Publishing goes on after the restart, in order.
    let (_, next) = publish(&hub, "pr_opened", json!({"payload": {"pr": 4}}));
    assert!(next["event"]["seq"].as_u64() > first_seq.as_u64(), "{next}");
}

#[test]
fn bad_publishes_and_queries_are_refused_and_change_nothing() {
    let hub = Hub::start();
    for (topic, body, field) in [
        ("a b", json!({"payload": 1}), "topic"),
        ("ok", json!({}), "payload"),
        ("ok", json!({"payload": "x".repeat(70_000)}), "payload"),
        ("ok", json!({"payload": 1, "dedupe_key": ""}), "dedupe_key"),
    ] {
        let path = format!("/api/topics/{}/events", topic.replace(' ', "%20"));
        let (status, out) = hub.post(&path, &body);
        assert_eq!(status, 422, "{topic} {out}");
        assert!(
            out["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{out}"
        );
    }
    let (status, _) = hub.post_raw_as("/api/topics/ok/events", Some(&hub.admin_token), "{nope");
    assert_eq!(status, 400);
    for q in ["limit=0", "limit=x", "cursor=-1", "other=1", "newest=yes"] {
        let (status, out) = hub.get(&format!("/api/topics/ok/events?{q}"));
        assert_eq!(status, 422, "{q}: {out}");
    }
    let eye = hub
        .post(
            "/admin/tokens",
            &json!({"agent_id": "eye", "role": "observer"}),
        )
        .1;
    let (status, _) = hub.post_as(
        "/api/topics/ok/events",
        eye["token"].as_str(),
        &json!({"payload": 1}),
    );
    assert_eq!(status, 403, "observers read only");
    // Over WS too.
    let token = register_agent(&hub, "bad", &[]);
    let mut agent = Agent::connect(&hub, "bad", &token);
    let reply = request(
        &mut agent,
        json!({"type": "event_publish", "topic": "a/b", "payload": 1}),
    );
    assert_error(&reply, "validation_failed");
    assert_eq!(hub.get("/api/topics").1["count"], 0);
}
