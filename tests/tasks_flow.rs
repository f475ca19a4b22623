//! Results that flow on (#21, ext, PROTOCOL.md 6.32): an assignment carries
//! the results of the dependencies its task names in `inputs_from` (large
//! ones by reference), `notify` tells the submitter exactly once when its task
//! ends (a message, or a `task.finished` event), a task may wait for every
//! task of a correlation id (fan-in), and the hub publishes its own topics
//! (`task.completed` while subscribed, `task.dead_letter` and `task.cancelled`
//! always).

mod common;

use common::*;
use serde_json::{json, Value};

fn complete_with(agent: &mut Agent, assign: &Value, result: Value) {
    let task_id = assign["task_id"].as_str().expect("task_id");
    agent.send(json!({"type": "task_complete", "task_id": task_id,
                      "generation": assign["generation"], "result": result}));
    assert_eq!(agent.recv_ack(task_id, REPLY_TIMEOUT)["status"], "complete");
}

fn topic_events(hub: &Hub, topic: &str) -> Vec<Value> {
    let (status, page) = hub.get(&format!("/api/topics/{topic}/events?limit=1000"));
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

fn finished_messages(hub: &Hub, agent: &str, token: &str) -> Vec<Value> {
    read_mailbox(hub, agent, token, 0)["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["message"].clone())
        .filter(|m| m["message_type"] == "task_finished")
        .collect()
}

/// `wait_for` at a pace the mailbox's rate limit allows.
fn poll_slowly(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..120 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

#[test]
fn inputs_from_carries_the_results_of_dependencies_large_ones_by_reference() {
    let hub = Hub::start();
    let token = register_agent(&hub, "w", &[]);
    let mut w = Agent::connect(&hub, "w", &token);
    // inputs_from must name dependencies.
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "x", "depends_on": [], "inputs_from": ["t-1"]}),
    );
    assert_field_error(status, &body, &json!({}), "inputs_from", "invalid_value");
    let ids = submit_batch(
        &hub,
        json!([
            {"description": "research", "ref": "a"},
            {"description": "render", "ref": "b"},
            {"description": "write up", "depends_on": ["a", "b"], "inputs_from": ["a", "b"]},
            {"description": "no inputs", "depends_on": ["a"]},
        ]),
    );
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(get_task(&hub, c)["inputs_from"], json!([a, b]));
    let assign_a = w.take(a);
    assert!(
        assign_a.get("inputs").is_none(),
        "a task without inputs_from carries none: {assign_a}"
    );
    complete_with(&mut w, &assign_a, json!({"summary": "3 sources"}));
    let assign_b = w.take(b);
    let blob = "x".repeat(40_000);
    complete_with(&mut w, &assign_b, json!({"summary": "big", "blob": blob}));
    let mut next = w.recv_type("task_assign", PUSH_TIMEOUT);
    if next["task_id"] != c.as_str() {
        // The other dependent came first.
        w.accept(
            next["task_id"].as_str().expect("id"),
            next["generation"].clone(),
        );
        assert!(next.get("inputs").is_none(), "{next}");
        complete_with(&mut w, &next.clone(), json!({}));
        next = w.recv_type("task_assign", PUSH_TIMEOUT);
    }
    assert_eq!(next["task_id"], c.as_str());
    let inputs = &next["inputs"];
    assert_eq!(inputs[a]["result"]["summary"], "3 sources", "{next}");
    assert_eq!(inputs[a]["status"], "completed");
    assert!(inputs[b]["result"].is_null(), "too large to carry: {next}");
    let reference = inputs[b]["result_ref"].as_str().expect("result_ref");
    assert_eq!(reference, format!("/api/tasks/{b}/result"));
    assert!(inputs[b]["result_bytes"].as_u64() > Some(40_000), "{next}");
    let (status, whole) = hub.get_as(reference, Some(&token));
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["result"]["blob"].as_str().map(str::len), Some(40_000));
    assert_eq!(whole["status"], "completed");
    let (status, _) = hub.get("/api/tasks/task-nope/result");
    assert_eq!(status, 404);
}

#[test]
fn notify_tells_the_submitter_exactly_once_even_across_a_kill() {
    let mut hub = Hub::start();
    let boss_token = register_agent(&hub, "boss", &[]);
    let worker_token = register_agent(&hub, "w", &["build"]);
    let mut w = Agent::connect(&hub, "w", &worker_token);
    // The admin token has no mailbox.
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "d", "notify": "message"}),
    );
    assert_field_error(status, &body, &json!({}), "notify", "invalid_value");
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "d", "notify": "pager"}),
    );
    assert_field_error(status, &body, &json!({}), "notify", "invalid_value");

    let submit_as_boss = |hub: &Hub, task: Value| -> String {
        let (status, body) = hub.post_as("/api/tasks", Some(&boss_token), &task);
        assert_eq!(status, 201, "{body}");
        body["task_id"].as_str().expect("id").to_string()
    };
    let t1 = submit_as_boss(
        &hub,
        json!({"description": "build", "notify": "message",
                                   "needed_capabilities": ["build"]}),
    );
    let assign = w.take(&t1);
    complete_with(&mut w, &assign, json!({"artifact": "app.tar"}));
    // The same completion again changes nothing.
    complete_with(&mut w, &assign, json!({"artifact": "app.tar"}));
    // Killed at once: the notice may be staged, not yet sent.
    hub.kill9();
    hub.restart();
    let told = poll_slowly(|| !finished_messages(&hub, "boss", &boss_token).is_empty());
    assert!(told, "the submitter is told");
    std::thread::sleep(std::time::Duration::from_millis(500));
    hub.restart();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let messages = finished_messages(&hub, "boss", &boss_token);
    assert_eq!(messages.len(), 1, "exactly once: {messages:?}");
    let m = &messages[0];
    assert_eq!(m["from"], "hub");
    assert_eq!(m["payload"]["task_id"], t1.as_str());
    assert_eq!(m["payload"]["status"], "completed");
    assert_eq!(m["payload"]["result"]["artifact"], "app.tar", "{m}");
    assert_eq!(m["payload"]["agent_id"], "w", "{m}");

    // A cancel tells too; notify event publishes task.finished instead.
    let t2 = submit_as_boss(
        &hub,
        json!({"description": "never runs", "notify": "message",
                                   "needed_capabilities": ["nobody"]}),
    );
    let (status, _) = hub.post(&format!("/api/tasks/{t2}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let t3 = submit_as_boss(
        &hub,
        json!({"description": "event me", "notify": "event",
                                   "needed_capabilities": ["build"]}),
    );
    let mut w = Agent::connect(&hub, "w", &worker_token);
    let assign = w.take(&t3);
    complete_with(&mut w, &assign, json!({"ok": true}));
    let published = wait_for(SOON, || {
        topic_events(&hub, "task.finished")
            .iter()
            .any(|e| e["payload"]["task_id"] == t3.as_str())
    });
    assert!(published, "task.finished for a notify event task");
    let cancelled_told = poll_slowly(|| {
        finished_messages(&hub, "boss", &boss_token)
            .iter()
            .any(|m| {
                m["payload"]["task_id"] == t2.as_str() && m["payload"]["status"] == "cancelled"
            })
    });
    assert!(cancelled_told, "the cancel is told");
    let finished = topic_events(&hub, "task.finished");
    assert_eq!(finished.len(), 1, "only the task that asked: {finished:?}");
    assert_eq!(finished[0]["payload"]["submitted_by"], "boss");
    assert_eq!(finished_messages(&hub, "boss", &boss_token).len(), 2);
}

#[test]
fn fan_in_by_correlation_id_waits_for_every_task_of_the_batch() {
    let hub = Hub::start();
    let token = register_agent(&hub, "w", &[]);
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"description": format!("part {i}"), "correlation_id": "batch-7"}))
        .collect();
    let parts = submit_batch(&hub, Value::Array(batch));
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "merge", "depends_on_correlation": "batch-9"}),
    );
    assert_field_error(
        status,
        &body,
        &json!({}),
        "depends_on_correlation",
        "unknown_dependency",
    );
    let merge = submit(
        &hub,
        json!({"description": "merge", "depends_on_correlation": "batch-7", "priority": "urgent"}),
    );
    let mut deps: Vec<String> = get_task(&hub, &merge)["depends_on"]
        .as_array()
        .expect("deps")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    deps.sort();
    let mut want = parts.clone();
    want.sort();
    assert_eq!(deps, want, "every task of the correlation");
    assert_eq!(get_task(&hub, &merge)["depends_on_correlation"], "batch-7");
    // In one batch: the entries that join the correlation count too.
    let together = submit_batch(
        &hub,
        json!([
            {"description": "p1", "correlation_id": "batch-8"},
            {"description": "p2", "correlation_id": "batch-8"},
            {"description": "sum", "depends_on_correlation": "batch-8"},
        ]),
    );
    assert_eq!(
        get_task(&hub, &together[2])["depends_on"],
        json!([together[0], together[1]])
    );
    let mut w = Agent::connect(&hub, "w", &token);
    // The merge is urgent: it would be next if it did not wait for the parts.
    let mut done = Vec::new();
    let mut merged = false;
    for _ in 0..9 {
        let assign = w.recv_type("task_assign", PUSH_TIMEOUT);
        let id = assign["task_id"].as_str().expect("id").to_string();
        if id == merge {
            assert!(
                parts.iter().all(|p| done.contains(p)),
                "the merge starts only once every part completed: {done:?}"
            );
            merged = true;
            break;
        }
        assert_eq!(get_task(&hub, &merge)["status"], "queued");
        w.accept(&id, assign["generation"].clone());
        complete_with(&mut w, &assign, json!({}));
        done.push(id);
    }
    assert!(merged, "the merge ran after the parts: {done:?}");

    // At most 1,000 tasks.
    let big: Vec<Value> = (0..1000)
        .map(|i| json!({"description": format!("m{i}"), "correlation_id": "huge", "needed_capabilities": ["none"]}))
        .collect();
    submit_batch(&hub, Value::Array(big));
    submit(
        &hub,
        json!({"description": "one more", "correlation_id": "huge", "needed_capabilities": ["none"]}),
    );
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "all", "depends_on_correlation": "huge"}),
    );
    assert_field_error(
        status,
        &body,
        &json!({}),
        "depends_on_correlation",
        "too_many_dependencies",
    );
}

#[test]
fn the_hub_publishes_task_topics_completed_only_while_subscribed() {
    let hub = Hub::start();
    let token = register_agent(&hub, "w", &[]);
    let mut w = Agent::connect(&hub, "w", &token);
    let first = submit(&hub, json!({"description": "unwatched"}));
    let assign = w.take(&first);
    complete_with(&mut w, &assign, json!({}));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        topic_events(&hub, "task.completed").is_empty(),
        "nobody listens: nothing published"
    );
    // A reviewer reacts to every completion of the build agent.
    let (status, sub) = hub.post(
        "/api/subscriptions",
        &json!({"topic": "task.completed", "filter": {"agent_id": "w"},
                "task": {"description": "Review {{payload.task_id}}", "needed_capabilities": ["review"]}}),
    );
    assert_eq!(status, 201, "{sub}");
    let second = submit(&hub, json!({"description": "watched"}));
    let assign = w.take(&second);
    complete_with(&mut w, &assign, json!({"pr_url": "https://x/pr/1"}));
    let reviewed = wait_for(SOON, || {
        list_all_tasks(&hub, "", 100)
            .iter()
            .any(|t| t["description"] == format!("Review {second}"))
    });
    assert!(reviewed, "the completion made the review task");
    let completed = topic_events(&hub, "task.completed");
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(
        completed[0]["payload"]["result"]["pr_url"],
        "https://x/pr/1"
    );
    assert_eq!(completed[0]["publisher"], "hub");
    // Dead letters and cancels are always published.
    let doomed = submit(&hub, json!({"description": "fails", "max_retries": 0}));
    let assign = w.take(&doomed);
    w.send(
        json!({"type": "task_failed", "task_id": doomed, "generation": assign["generation"],
                  "error": "compiler crashed"}),
    );
    w.recv_ack(&doomed, REPLY_TIMEOUT);
    let dead = wait_for(SOON, || {
        topic_events(&hub, "task.dead_letter").iter().any(|e| {
            e["payload"]["task_id"] == doomed.as_str()
                && e["payload"]["last_error"] == "compiler crashed"
        })
    });
    assert!(dead, "{:?}", topic_events(&hub, "task.dead_letter"));
    let dropped = submit(
        &hub,
        json!({"description": "dropped", "needed_capabilities": ["none"]}),
    );
    hub.post(&format!("/api/tasks/{dropped}/cancel"), &json!({}));
    let cancelled = wait_for(SOON, || {
        topic_events(&hub, "task.cancelled")
            .iter()
            .any(|e| e["payload"]["task_id"] == dropped.as_str())
    });
    assert!(cancelled);
    // The review task the subscription made is a completion too, of another
    // agent: the filter keeps it from making a review of the review.
    let reviewer_token = register_agent(&hub, "rev", &["review"]);
    let mut rev = Agent::connect(&hub, "rev", &reviewer_token);
    let assign = rev.recv_type("task_assign", PUSH_TIMEOUT);
    rev.accept(
        assign["task_id"].as_str().expect("id"),
        assign["generation"].clone(),
    );
    complete_with(&mut rev, &assign, json!({}));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let reviews = list_all_tasks(&hub, "", 100)
        .into_iter()
        .filter(|t| {
            t["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Review "))
        })
        .count();
    assert_eq!(reviews, 1);
    assert_eq!(topic_events(&hub, "task.completed").len(), 2);
}
