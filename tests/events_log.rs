//! The event log (`GET /api/events`, `GET /api/tasks/{id}/events`): complete and
//! ordered pages for every filter, inclusive time windows, agent connections,
//! the full story of a task beyond its 50 history entries, durability across a
//! restart and a kill -9, and structured refusals of bad queries.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Follows `next_cursor` through `path` (which has a query string) with `limit`
/// events per page until it is null; asserts page sizes and counts.
fn paged(hub: &Hub, path: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<u64> = None;
    for _ in 0..1000 {
        let mut url = format!("{path}&limit={limit}");
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = hub.get(&url);
        assert_eq!(status, 200, "GET {url}: {page}");
        let events = page["events"].as_array().expect("events").clone();
        assert!(events.len() <= limit, "page over the limit: {page}");
        assert_eq!(page["count"].as_u64(), Some(events.len() as u64), "{page}");
        all.extend(events);
        match &page["next_cursor"] {
            Value::Null => return all,
            c => cursor = Some(c.as_u64().expect("numeric next_cursor")),
        }
    }
    panic!("{path} did not finish paging within 1000 pages");
}

/// One big page (asserts it is the whole answer).
fn everything(hub: &Hub, path: &str) -> Vec<Value> {
    let url = format!("{path}&limit=1000");
    let (status, page) = hub.get(&url);
    assert_eq!(status, 200, "GET {url}: {page}");
    assert_eq!(page["next_cursor"], Value::Null, "fits one page: {page}");
    page["events"].as_array().expect("events").clone()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect()
}

fn assert_strictly_increasing(events: &[Value], what: &str) {
    let s = seqs(events);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "{what}: seq not strictly increasing: {s:?}"
    );
}

/// A hub where `n` tasks went through their whole life on one worker ("pager").
fn busy_hub(n: usize) -> (Hub, Worker, Vec<String>) {
    let hub = Hub::start();
    let worker = Worker::spawn(&hub, "pager", Duration::from_millis(1));
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"description": format!("job {i}")}))
        .collect();
    let (status, body) = hub.post("/api/tasks", &json!(batch));
    assert_eq!(status, 201, "{body}");
    let ids: Vec<String> = body["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect();
    assert!(
        wait_for(Duration::from_secs(30), || worker.log().completed.len()
            == n),
        "all {n} tasks completed: {:?}",
        worker.log()
    );
    (hub, worker, ids)
}

#[test]
fn every_filter_pages_through_all_events_without_gaps_or_repeats() {
    let (hub, _worker, ids) = busy_hub(32);
    let all = everything(&hub, "/api/events?");
    assert!(all.len() >= 120, "{} events", all.len());
    assert_strictly_increasing(&all, "all");
    for kind in ["queued", "assigned", "accepted", "completed"] {
        let n = all.iter().filter(|e| e["kind"] == kind).count();
        assert_eq!(n, 32, "{kind} events");
    }
    // Every event has the documented shape.
    for e in &all {
        assert!(e["ts"].is_u64() && e["actor"].is_string(), "{e}");
        assert!(e["details"].is_object(), "{e}");
    }

    let task = &ids[5];
    let queries = [
        "/api/events?".to_string(),
        format!("/api/events?task_id={task}"),
        "/api/events?agent_id=pager".to_string(),
        "/api/events?kind=completed".to_string(),
        "/api/events?agent_id=pager&kind=accepted".to_string(),
        format!("/api/tasks/{task}/events?"),
    ];
    for q in &queries {
        let whole = everything(&hub, q);
        assert!(!whole.is_empty(), "{q}");
        assert_strictly_increasing(&whole, q);
        let unique: BTreeSet<u64> = seqs(&whole).into_iter().collect();
        assert_eq!(unique.len(), whole.len(), "{q}: repeats");
        for limit in [1, 7] {
            assert_eq!(paged(&hub, q, limit), whole, "{q} paged by {limit}");
        }
    }
    // The filters select what they say, and nothing else.
    let of_task = everything(&hub, &format!("/api/events?task_id={task}"));
    let expected: Vec<&Value> = all
        .iter()
        .filter(|e| e["task_id"] == task.as_str())
        .collect();
    assert_eq!(of_task.iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        kinds(&of_task),
        ["queued", "assigned", "accepted", "completed"]
    );
    let of_agent = everything(&hub, "/api/events?agent_id=pager");
    let expected: Vec<&Value> = all.iter().filter(|e| e["agent_id"] == "pager").collect();
    assert_eq!(of_agent.iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        of_agent.len(),
        1 + 3 * 32,
        "connect + assigned/accepted/completed"
    );
    let completed = everything(&hub, "/api/events?kind=completed");
    assert_eq!(completed.len(), 32);
    assert!(
        completed.iter().all(|e| e["actor"] == "pager"),
        "{completed:?}"
    );
    let none = everything(&hub, "/api/events?kind=no_such_kind");
    assert_eq!(none, Vec::<Value>::new());
    assert_eq!(paged(&hub, "/api/events?kind=no_such_kind", 7), none);
}

#[test]
fn since_and_until_select_an_inclusive_time_window() {
    let (hub, _worker, _ids) = busy_hub(20);
    let all = everything(&hub, "/api/events?");
    // Times of events appended by different owners need not follow `seq`.
    let mut ts: Vec<u64> = all.iter().map(|e| e["ts"].as_u64().expect("ts")).collect();
    ts.sort_unstable();
    let (since, until) = (ts[10], ts[ts.len() - 10]);
    let window = |lo: Option<u64>, hi: Option<u64>| -> Vec<Value> {
        all.iter()
            .filter(|e| {
                let t = e["ts"].as_u64().expect("ts");
                lo.is_none_or(|l| t >= l) && hi.is_none_or(|h| t <= h)
            })
            .cloned()
            .collect()
    };
    let cases = [
        (
            format!("/api/events?since={since}&until={until}"),
            window(Some(since), Some(until)),
        ),
        (
            format!("/api/events?since={since}"),
            window(Some(since), None),
        ),
        (
            format!("/api/events?until={until}"),
            window(None, Some(until)),
        ),
        (
            format!("/api/events?since={since}&until={since}"),
            window(Some(since), Some(since)),
        ),
        (
            format!("/api/events?kind=completed&since={since}&until={until}"),
            window(Some(since), Some(until))
                .into_iter()
                .filter(|e| e["kind"] == "completed")
                .collect(),
        ),
    ];
    for (q, expected) in cases {
        assert!(!expected.is_empty(), "{q}");
        assert_eq!(everything(&hub, &q), expected, "{q}");
        assert_eq!(paged(&hub, &q, 3), expected, "{q} paged");
    }
    // Inclusive: the boundary events themselves are in.
    let both = everything(&hub, &format!("/api/events?since={since}&until={until}"));
    assert!(both.iter().any(|e| e["ts"] == since), "since is inclusive");
    assert!(both.iter().any(|e| e["ts"] == until), "until is inclusive");
    let after = ts[ts.len() - 1] + 1;
    assert_eq!(
        everything(&hub, &format!("/api/events?since={after}")),
        Vec::<Value>::new()
    );
}

#[test]
fn agent_connects_and_disconnects_are_logged_with_the_agent_as_actor() {
    let hub = Hub::start();
    let token = register_agent(&hub, "visitor", &["docs"]);
    let agent = Agent::connect(&hub, "visitor", &token);
    disconnect(&hub, agent);
    let query = "/api/events?agent_id=visitor";
    assert!(
        wait_for(PUSH_TIMEOUT, || everything(&hub, query).len() == 2),
        "{:?}",
        everything(&hub, query)
    );
    let events = everything(&hub, query);
    assert_eq!(kinds(&events), ["agent_connected", "agent_disconnected"]);
    for e in &events {
        assert_eq!(e["actor"], "visitor", "{e}");
        assert_eq!(e["agent_id"], "visitor", "{e}");
        assert!(e.get("task_id").is_none_or(Value::is_null), "{e}");
    }
    assert_eq!(
        events[0]["details"]["capabilities"],
        json!(["docs"]),
        "{}",
        events[0]
    );
    let connected = everything(&hub, "/api/events?kind=agent_connected");
    assert_eq!(connected.len(), 1, "{connected:?}");
}

#[test]
fn a_tasks_events_tell_its_whole_story_beyond_the_history_it_keeps() {
    let hub = Hub::start();
    let token = register_agent(&hub, "chatty", &[]);
    let mut agent = Agent::connect(&hub, "chatty", &token);
    let task_id = submit(&hub, json!({"description": "long job"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    let generation = assign["generation"].clone();
    agent.accept(&task_id, generation.clone());
    // Progress as agents send it: often the very same frame, many per millisecond.
    for _ in 0..70 {
        agent.send(json!({"type": "task_progress", "task_id": task_id, "generation": generation}));
    }
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": generation}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );

    let task = get_task(&hub, &task_id);
    let history = task["history"].as_array().expect("history").clone();
    assert_eq!(history.len(), 50, "the task keeps the newest 50");
    let events = everything(&hub, &format!("/api/tasks/{task_id}/events?"));
    let mut expected = vec!["queued", "assigned", "accepted"];
    expected.extend(std::iter::repeat_n("progress", 70));
    expected.push("completed");
    assert_eq!(kinds(&events), expected, "the full story");
    // The newest 50 are exactly the task's history.
    let tail: Vec<Value> = events[events.len() - 50..]
        .iter()
        .map(|e| json!({"event": e["kind"], "ts": e["ts"], "details": e["details"]}))
        .collect();
    assert_eq!(tail, history);
    let actors: Vec<&str> = events
        .iter()
        .map(|e| e["actor"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(&actors[..3], ["admin", "hub", "chatty"]);
    assert!(actors[3..].iter().all(|a| *a == "chatty"), "{actors:?}");
    assert_eq!(
        paged(&hub, &format!("/api/tasks/{task_id}/events?"), 9),
        events
    );
}

#[test]
fn acknowledged_events_survive_a_restart_and_a_kill_9() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "durable", &[]);
    let mut agent = Agent::connect(&hub, "durable", &token);
    let first = submit(&hub, json!({"description": "first"}));
    let a = agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&first, a["generation"].clone());
    agent.send(json!({"type": "task_complete", "task_id": first, "generation": a["generation"]}));
    assert_eq!(agent.recv_ack(&first, REPLY_TIMEOUT)["status"], "complete");
    let before = everything(&hub, "/api/events?");

    hub.restart();
    let after = everything(&hub, "/api/events?");
    assert!(after.len() >= before.len(), "{after:?}");
    assert_eq!(
        after[..before.len()],
        before[..],
        "a restart keeps every event"
    );

    // Acknowledged changes right before a kill -9.
    let mut agent = Agent::connect(&hub, "durable", &token);
    let second = submit(&hub, json!({"description": "second"}));
    let a = agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&second, a["generation"].clone());
    agent.send(json!({"type": "task_complete", "task_id": second, "generation": a["generation"]}));
    assert_eq!(agent.recv_ack(&second, REPLY_TIMEOUT)["status"], "complete");
    let third = submit(
        &hub,
        json!({"description": "third", "needed_capabilities": ["none"]}),
    );
    let (status, _) = hub.post("/api/queue/pause", &json!({"lanes": ["low"]}));
    assert_eq!(status, 200);
    let acknowledged = everything(&hub, "/api/events?");
    hub.kill9();
    drop(agent);
    hub.start_again();

    let survived = everything(&hub, "/api/events?");
    let lost: Vec<&Value> = acknowledged
        .iter()
        .filter(|e| {
            // Connection events are not acknowledged to anyone; the rest were.
            let kind = e["kind"].as_str().unwrap_or("");
            !kind.starts_with("agent_") && !survived.contains(e)
        })
        .collect();
    assert!(lost.is_empty(), "lost in the kill -9: {lost:?}");
    assert_eq!(
        kinds(&everything(&hub, &format!("/api/tasks/{second}/events?"))),
        ["queued", "assigned", "accepted", "completed"]
    );
    assert_eq!(
        kinds(&everything(&hub, &format!("/api/tasks/{third}/events?"))),
        ["queued"]
    );
    assert_eq!(everything(&hub, "/api/events?kind=lanes_paused").len(), 1);
    // New events continue after the survivors: no sequence is given twice.
    let newest = seqs(&survived).into_iter().max().unwrap_or(0);
    let fourth = submit(&hub, json!({"description": "fourth"}));
    let e = everything(&hub, &format!("/api/tasks/{fourth}/events?"));
    assert!(e[0]["seq"].as_u64() > Some(newest), "{e:?} after {newest}");
    assert_strictly_increasing(&everything(&hub, "/api/events?"), "after restart");
}

#[test]
fn bad_event_queries_are_refused_with_field_errors() {
    let hub = Hub::start();
    let task_id = submit(&hub, json!({"description": "t"}));
    let field_of = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
        ("cursor=-1", "cursor"),
        ("since=abc", "since"),
        ("until=1.5", "until"),
        ("since=100&until=99", "until"),
        ("kind=", "kind"),
        ("agent_id=", "agent_id"),
    ] {
        for path in ["/api/events", &format!("/api/tasks/{task_id}/events")] {
            let (status, body) = hub.get(&format!("{path}?{query}"));
            assert_eq!(status, 422, "{path}?{query}: {body}");
            assert_eq!(body["error"], "validation_failed", "{body}");
            assert!(
                field_of(&body).contains(&field.to_string()),
                "{path}?{query}: {body}"
            );
        }
    }
    // Every bad parameter at once is reported at once.
    let (status, body) = hub.get("/api/events?limit=0&cursor=x&since=y");
    assert_eq!(status, 422, "{body}");
    let fields = field_of(&body);
    for f in ["limit", "cursor", "since"] {
        assert!(fields.contains(&f.to_string()), "{body}");
    }

    let (status, body) = hub.get("/api/tasks/task-00000000deadbeef/events");
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "task_not_found", "task_id": "task-00000000deadbeef"})
        )
    );
    for path in ["/api/events", &format!("/api/tasks/{task_id}/events")] {
        let (status, body) = hub.get_as(path, None);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let (status, body) = hub.get_as(path, Some("not-a-token"));
        assert_eq!(status, 401, "{path}: {body}");
    }
    // Agents may read the log.
    let token = register_agent(&hub, "reader", &[]);
    let (status, body) = hub.get_as("/api/events?kind=queued", Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
}
