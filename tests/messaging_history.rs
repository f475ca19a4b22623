//! Channel history (`since`/`limit`, kept size), the message history query,
//! threads and analytics (PROTOCOL.md 1.4, 3; issue 5).

mod common;

use common::*;
use serde_json::{json, Value};

fn ask(agent: &mut Agent, frame: Value, reply_type: &str) -> Value {
    agent.send(frame);
    agent.recv_type(reply_type, REPLY_TIMEOUT)
}

/// Publishes `n` messages `{"n": i}` (i = 1..=n) on `channel` as `agent`; returns their ids.
fn publish_n(agent: &mut Agent, channel: &str, n: u64) -> Vec<String> {
    (1..=n)
        .map(|i| {
            let r = ask(
                agent,
                json!({"type": "channel_publish", "channel": channel, "payload": {"n": i}}),
                "channel_published",
            );
            r["id"].as_str().expect("id").to_string()
        })
        .collect()
}

fn ws_history(agent: &mut Agent, frame: Value) -> Value {
    let reply = ask(agent, frame, "channel_history");
    assert!(reply["messages"].is_array(), "{reply}");
    reply
}

fn http_history(hub: &Hub, channel: &str, query: &str) -> Value {
    let path = format!("/api/channels/{channel}/history{query}");
    let (status, body) = hub.get(&path);
    assert_eq!(status, 200, "GET {path}: {body}");
    assert_eq!(body["channel"], channel, "{body}");
    assert_eq!(
        body["count"].as_u64(),
        body["messages"].as_array().map(|m| m.len() as u64),
        "{body}"
    );
    body
}

fn send_id(agent: &mut Agent, frame: Value) -> String {
    agent.send(frame);
    let sent = agent.recv_type("message_sent", REPLY_TIMEOUT);
    sent["id"].as_str().expect("id").to_string()
}

fn ids_of(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("array expected: {messages}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn channel_history_since_and_limit_semantics() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    create_channel(&hub, "devs", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    let ids = publish_n(&mut alice, "dev", 5);
    publish_n(&mut alice, "devs", 2);

    // Default: everything after seq 0, oldest first, with the full entry shape.
    let all = ws_history(
        &mut alice,
        json!({"type": "channel_history", "channel": "dev"}),
    );
    assert_eq!(all["channel"], "dev", "{all}");
    assert_eq!(seqs(&all["messages"]), vec![1, 2, 3, 4, 5], "{all}");
    for (i, entry) in all["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .enumerate()
    {
        let m = &entry["message"];
        assert_eq!(m["id"], ids[i].as_str(), "{entry}");
        assert_eq!(m["from"], "alice", "{entry}");
        assert_eq!(m["channel"], "dev", "{entry}");
        assert_eq!(m["payload"], json!({"n": i + 1}), "{entry}");
        assert!(entry["stored_at"].is_u64(), "{entry}");
    }
    let cases: [(Value, Vec<u64>); 7] = [
        (json!({"since": 0}), vec![1, 2, 3, 4, 5]),
        (json!({"since": 2}), vec![3, 4, 5]),
        (json!({"since": 4}), vec![5]),
        (json!({"since": 5}), vec![]),
        (json!({"since": 1000}), vec![]),
        (json!({"since": 1, "limit": 2}), vec![2, 3]),
        (json!({"limit": 1}), vec![1]),
    ];
    for (params, expected) in cases {
        let mut frame = json!({"type": "channel_history", "channel": "dev"});
        let mut query = String::from("?");
        for (k, v) in params.as_object().expect("object") {
            frame[k] = v.clone();
            query.push_str(&format!("{k}={v}&"));
        }
        let reply = ws_history(&mut alice, frame);
        assert_eq!(seqs(&reply["messages"]), expected, "WS {params}: {reply}");
        let body = http_history(&hub, "dev", &query);
        assert_eq!(seqs(&body["messages"]), expected, "HTTP {params}: {body}");
        assert_eq!(
            body["messages"], reply["messages"],
            "WS and HTTP agree for {params}"
        );
    }
    // The neighbouring channel has its own sequence.
    let other = http_history(&hub, "devs", "");
    assert_eq!(seqs(&other["messages"]), vec![1, 2], "{other}");
}

#[test]
fn channel_history_limit_defaults_to_50() {
    let hub = Hub::start();
    create_channel(&hub, "big", "");
    // Two publishers, so no single agent needs a burst of 55 actions.
    let (_, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    publish_n(&mut alice, "big", 28);
    publish_n(&mut bob, "big", 27);

    let first = ws_history(
        &mut alice,
        json!({"type": "channel_history", "channel": "big"}),
    );
    assert_eq!(seqs(&first["messages"]), (1..=50).collect::<Vec<u64>>());
    let next = ws_history(
        &mut alice,
        json!({"type": "channel_history", "channel": "big", "since": 50}),
    );
    assert_eq!(seqs(&next["messages"]), vec![51, 52, 53, 54, 55]);
    let body = http_history(&hub, "big", "");
    assert_eq!(seqs(&body["messages"]), (1..=50).collect::<Vec<u64>>());
    let body = http_history(&hub, "big", "?limit=200");
    assert_eq!(seqs(&body["messages"]), (1..=55).collect::<Vec<u64>>());
}

#[test]
fn channel_keeps_only_the_configured_number_of_messages() {
    let hub = Hub::start_with_config("channel_history = 3\n");
    create_channel(&hub, "dev", "");
    let (_, mut alice) = online_agent(&hub, "alice");
    let ids = publish_n(&mut alice, "dev", 5);
    let reply = ws_history(
        &mut alice,
        json!({"type": "channel_history", "channel": "dev"}),
    );
    assert_eq!(seqs(&reply["messages"]), vec![3, 4, 5], "{reply}");
    let kept: Vec<String> = reply["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|e| e["message"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kept, ids[2..].to_vec());
    // Sequence numbers keep counting; the channel says where it is.
    let (_, dev) = hub.get("/api/channels/dev");
    assert_eq!(dev["last_seq"], 5, "{dev}");
    let body = http_history(&hub, "dev", "?since=1");
    assert_eq!(seqs(&body["messages"]), vec![3, 4, 5], "{body}");
}

#[test]
fn message_history_filters_and_pages_with_a_cursor() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    register_agent(&hub, "carol", &[]); // offline: mailbox

    let t0 = now_ms();
    let a1 = send_id(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"i": 1}}),
    );
    let a2 = send_id(
        &mut alice,
        json!({"type": "message", "to": "carol", "payload": {"i": 2}}),
    );
    let b1 = send_id(
        &mut bob,
        json!({"type": "message", "to": "alice", "payload": {"i": 3}}),
    );
    let a3 = send_id(&mut alice, json!({"type": "message", "payload": {"i": 4}}));
    let c1 = ask(
        &mut bob,
        json!({"type": "channel_publish", "channel": "dev", "payload": {"i": 5}}),
        "channel_published",
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, resp) = hub.post("/api/message", &json!({"to": "bob", "payload": {"i": 6}}));
    assert_eq!(status, 200, "{resp}");
    let h1 = resp["id"].as_str().expect("id").to_string();
    let t1 = now_ms();
    let everything = vec![
        a1.clone(),
        a2.clone(),
        b1.clone(),
        a3.clone(),
        c1.clone(),
        h1.clone(),
    ];

    // Everything, in order, with seq and the stored fields; an agent may query.
    let (status, page) = hub.get_as("/api/messages", Some(&t_alice));
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids_of(&page["messages"]), everything, "{page}");
    assert_eq!(page["count"], 6, "{page}");
    assert!(page["cursor"].is_null(), "last page has no cursor: {page}");
    let seq_list: Vec<u64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seq_list.windows(2).all(|w| w[0] < w[1]), "{seq_list:?}");
    let first = &page["messages"][0];
    assert_eq!(first["from"], "alice", "{first}");
    assert_eq!(first["to"], "bob", "{first}");
    assert_eq!(first["message_type"], "chat", "{first}");
    assert_eq!(first["payload"], json!({"i": 1}), "{first}");
    let ts = first["timestamp"].as_u64().expect("timestamp");
    assert!(t0 <= ts && ts <= t1, "{first}");

    let filter = |q: &str| ids_of(&all_messages(&hub, q, 200).into_iter().collect::<Value>());
    assert_eq!(
        filter("from=alice"),
        vec![a1.clone(), a2.clone(), a3.clone()]
    );
    assert_eq!(filter("to=bob"), vec![a1.clone(), h1.clone()]);
    assert_eq!(filter("from=alice&to=carol"), vec![a2.clone()]);
    assert_eq!(filter("channel=dev"), vec![c1.clone()]);
    assert_eq!(filter("from=admin"), vec![h1.clone()]);
    assert!(filter("from=nobody").is_empty());
    assert_eq!(
        filter(&format!("start_time={t0}&end_time={t1}")),
        everything
    );
    assert!(filter(&format!("start_time={}", t1 + 60_000)).is_empty());
    assert!(filter(&format!("end_time={}", t0.saturating_sub(60_000))).is_empty());
    // The time range is inclusive at both ends.
    let (_, page) = hub.get("/api/messages");
    let b1_ts = page["messages"][2]["timestamp"].as_u64().expect("ts");
    let at_b1 = filter(&format!("start_time={b1_ts}&end_time={b1_ts}"));
    assert!(at_b1.contains(&b1), "{at_b1:?}");

    // Paging: every page at most `limit`, a cursor until the last, nothing lost
    // or repeated.
    for limit in [1, 2, 4, 5, 6] {
        assert_eq!(
            ids_of(&all_messages(&hub, "", limit).into_iter().collect::<Value>()),
            everything,
            "paging with limit {limit}"
        );
    }
    let (status, page) = hub.get("/api/messages?limit=2");
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids_of(&page["messages"]), vec![a1.clone(), a2.clone()]);
    assert!(!page["cursor"].is_null(), "{page}");
    // Paging composes with a filter.
    assert_eq!(
        ids_of(
            &all_messages(&hub, "from=alice", 1)
                .into_iter()
                .collect::<Value>()
        ),
        vec![a1, a2, a3]
    );
}

#[test]
fn threads_resolve_through_reply_to_chains() {
    let hub = Hub::start();
    create_channel(&hub, "dev", "");
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let (_, mut bob) = online_agent(&hub, "bob");
    ask(
        &mut bob,
        json!({"type": "channel_subscribe", "channel": "dev"}),
        "channel_subscribed",
    );

    // root ← r1 ← r11 ; root ← r2 (on a channel) ; unrelated other.
    let root = send_id(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"q": "?"}}),
    );
    let other = send_id(
        &mut alice,
        json!({"type": "message", "to": "bob", "payload": {"x": 0}}),
    );
    let r1 = send_id(
        &mut bob,
        json!({"type": "message", "to": "alice", "payload": {"a": 1}, "reply_to": root}),
    );
    let r2 = ask(
        &mut alice,
        json!({"type": "channel_publish", "channel": "dev", "payload": {"a": 2}, "reply_to": root}),
        "channel_published",
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, resp) = hub.post_as(
        "/api/message",
        Some(&t_alice),
        &json!({"to": "bob", "payload": {"a": 11}, "reply_to": r1}),
    );
    assert_eq!(status, 200, "{resp}");
    let r11 = resp["id"].as_str().expect("id").to_string();
    let whole = vec![root.clone(), r1.clone(), r2.clone(), r11.clone()];

    // The whole thread from any member, root first, in order.
    for from in [&root, &r1, &r2, &r11] {
        let (status, body) = hub.get(&format!("/api/threads/{from}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["root_id"], root.as_str(), "thread of {from}: {body}");
        assert_eq!(ids_of(&body["messages"]), whole, "thread of {from}: {body}");
        assert_eq!(body["count"], 4, "{body}");
    }
    let (_, body) = hub.get(&format!("/api/threads/{r11}"));
    assert_eq!(body["messages"][3]["reply_to"], r1.as_str(), "{body}");
    assert_eq!(body["messages"][2]["channel"], "dev", "{body}");

    // Direct replies only.
    let (status, body) = hub.get_as(&format!("/api/threads/{root}/replies"), Some(&t_alice));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message_id"], root.as_str(), "{body}");
    assert_eq!(
        ids_of(&body["replies"]),
        vec![r1.clone(), r2.clone()],
        "{body}"
    );
    assert_eq!(body["count"], 2, "{body}");
    let (_, body) = hub.get(&format!("/api/threads/{r1}/replies"));
    assert_eq!(ids_of(&body["replies"]), vec![r11.clone()], "{body}");
    let (_, body) = hub.get(&format!("/api/threads/{r11}/replies"));
    assert_eq!(body["replies"], json!([]), "{body}");
    assert_eq!(body["count"], 0, "{body}");

    // The root of any member.
    for from in [&root, &r1, &r2, &r11] {
        let (status, body) = hub.get(&format!("/api/threads/{from}/root"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["root"]["id"], root.as_str(), "root of {from}: {body}");
        assert_eq!(body["root"]["payload"], json!({"q": "?"}), "{body}");
    }

    // A message without replies is a thread of one.
    let (_, body) = hub.get(&format!("/api/threads/{other}"));
    assert_eq!(ids_of(&body["messages"]), vec![other.clone()], "{body}");
    assert_eq!(body["root_id"], other.as_str(), "{body}");

    // Unknown ids: 404 message_not_found on every view.
    for path in [
        "/api/threads/msg-0000000000000000",
        "/api/threads/msg-0000000000000000/replies",
        "/api/threads/msg-0000000000000000/root",
    ] {
        let (status, body) = hub.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "message_not_found", "{path}: {body}");
    }
}

#[test]
fn analytics_count_messages_and_tasks_per_agent() {
    let hub = Hub::start();
    let (t_alice, mut alice) = online_agent(&hub, "alice");
    let t_bob = register_agent(&hub, "bob", &[]);
    create_channel(&hub, "dev", "");

    for i in 0..3 {
        send_id(
            &mut alice,
            json!({"type": "message", "to": "bob", "payload": {"i": i}}),
        );
    }
    let (status, resp) = hub.post_as(
        "/api/message",
        Some(&t_bob),
        &json!({"to": "alice", "payload": {"back": 1}}),
    );
    assert_eq!(status, 200, "{resp}");
    ask(
        &mut alice,
        json!({"type": "channel_publish", "channel": "dev", "payload": {}}),
        "channel_published",
    );
    // A task completed by a worker counts for the worker.
    let t_worker = register_agent(&hub, "worker", &["counting"]);
    let worker = Worker::start(
        Agent::connect(&hub, "worker", &t_worker),
        std::time::Duration::ZERO,
    );
    let task_id = submit(
        &hub,
        json!({"description": "count me", "needed_capabilities": ["counting"]}),
    );
    assert!(
        wait_for(PUSH_TIMEOUT, || get_task(&hub, &task_id)["status"]
            == "completed"),
        "{}",
        get_task(&hub, &task_id)
    );
    drop(worker);

    // Counting is asynchronous: wait for the totals.
    let totals = |agent: &str| -> Value {
        let (status, body) = hub.get_as("/api/analytics/agents", Some(&t_alice));
        assert_eq!(status, 200, "{body}");
        body["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["agent_id"] == agent)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let expect = |agent: &str, sent: u64, received: u64, completed: u64| {
        json!({"agent_id": agent, "messages_sent": sent, "messages_received": received,
               "tasks_completed": completed, "tasks_failed": 0})
    };
    let settled = wait_for(PUSH_TIMEOUT, || {
        totals("alice") == expect("alice", 4, 1, 0)
            && totals("bob") == expect("bob", 1, 3, 0)
            && totals("worker") == expect("worker", 0, 0, 1)
    });
    assert!(
        settled,
        "per-agent totals: alice {} bob {} worker {}",
        totals("alice"),
        totals("bob"),
        totals("worker")
    );

    let (status, summary) = hub.get("/api/analytics/summary");
    assert_eq!(status, 200, "{summary}");
    let sum = json!({"messages_sent": 5, "messages_received": 4,
                     "tasks_completed": 1, "tasks_failed": 0});
    assert_eq!(summary["totals"], sum, "{summary}");
    assert_eq!(summary["last_24h"], sum, "{summary}");
    assert_eq!(summary["active_agents_24h"], 3, "{summary}");

    // Hourly buckets: `hours` of them, oldest first, this hour last.
    let (status, hourly) = hub.get("/api/analytics/agents/alice/hourly?hours=3");
    assert_eq!(status, 200, "{hourly}");
    assert_eq!(hourly["agent_id"], "alice", "{hourly}");
    let hours = hourly["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 3, "{hourly}");
    let starts: Vec<u64> = hours
        .iter()
        .map(|h| h["hour_start"].as_u64().expect("hour_start"))
        .collect();
    assert!(starts.iter().all(|s| s % 3_600_000 == 0), "{starts:?}");
    assert!(
        starts.windows(2).all(|w| w[1] == w[0] + 3_600_000),
        "{starts:?}"
    );
    let now = now_ms();
    assert!(
        starts[2] <= now && now < starts[2] + 2 * 3_600_000,
        "{starts:?} vs {now}"
    );
    let summed: u64 = hours
        .iter()
        .map(|h| h["messages_sent"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(summed, 4, "{hourly}");
    let (status, hourly) = hub.get("/api/analytics/agents/alice/hourly");
    assert_eq!(status, 200, "{hourly}");
    assert_eq!(
        hourly["hours"].as_array().map(Vec::len),
        Some(24),
        "default 24: {hourly}"
    );
}
