//! Approvals (#20, ext, PROTOCOL.md 6.27): `before_start` holds a task out
//! of the queue until approved (reject cancels it); `before_complete` and the
//! approval rules hold a completion until approved (reject sends it back to
//! its holder with the reason, same generation); with `merge_on_approval` the
//! holder is asked to merge and `task_merged` completes it, or sends it back.

mod common;

use common::*;
use serde_json::{json, Value};

fn complete_with(agent: &mut Agent, assign: &Value, result: Value) -> Value {
    let task = assign["task_id"].as_str().unwrap_or_default().to_string();
    agent.send(json!({"type": "task_complete", "task_id": task,
                      "generation": assign["generation"], "result": result}));
    agent.recv_ack(&task, PUSH_TIMEOUT)
}

fn decide(hub: &Hub, task: &str, verb: &str, body: Value) -> (u16, Value) {
    hub.post(&format!("/api/tasks/{task}/{verb}"), &body)
}

#[test]
fn before_start_waits_unscheduled_until_approved_and_reject_cancels() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let task = submit(
        &hub,
        json!({"description": "drop the old table", "approval": "before_start"}),
    );
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "input_required", "{t}");
    assert_eq!(t["question"]["approval"]["stage"], "before_start", "{t}");
    agent.expect_no_type("task_assign", std::time::Duration::from_millis(300));
    let (_, listed) = hub.get("/api/questions");
    assert_eq!(listed["questions"][0]["kind"], "approval", "{listed}");
    // A free-text answer is not a decision.
    let (status, _) = hub.post(
        &format!("/api/tasks/{task}/answer"),
        &json!({"answer": "sure"}),
    );
    assert_eq!(status, 422);
    let (status, body) = decide(&hub, &task, "approve", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");
    let assign = agent.take(&task);
    agent.complete(&assign);
    assert_eq!(get_task(&hub, &task)["status"], "completed");
    let (status, _) = decide(&hub, &task, "approve", json!({}));
    assert_eq!(status, 409, "decided once");

    let other = submit(
        &hub,
        json!({"description": "another", "approval": "before_start"}),
    );
    let (status, body) = decide(&hub, &other, "reject", json!({}));
    assert_eq!(status, 422, "a rejection says why: {body}");
    let (status, body) = decide(&hub, &other, "reject", json!({"reason": "not this week"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(get_task(&hub, &other)["status"], "cancelled");
    let (_, events) = hub.get(&format!("/api/events?task_id={other}&kind=rejected"));
    assert_eq!(events["events"][0]["actor"], "admin", "{events}");
    assert_eq!(events["events"][0]["details"]["reason"], "not this week");
}

#[test]
fn before_complete_holds_the_result_until_approved_and_reject_sends_it_back() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let task = submit(
        &hub,
        json!({"description": "refactor", "approval": "before_complete"}),
    );
    let assign = agent.take(&task);
    assert_eq!(assign["approval"], "before_complete", "{assign}");
    let ack = complete_with(&mut agent, &assign, json!({"summary": "v1"}));
    assert_eq!(ack["status"], "input_required", "{ack}");
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "input_required", "{t}");
    assert_eq!(t["assigned_to"], "worker", "the holder keeps it");
    assert!(t["result"].is_null(), "not the task's result yet: {t}");
    assert_eq!(t["question"]["approval"]["result"]["summary"], "v1", "{t}");
    // The agent and observers may not decide.
    let (status, _) = hub.post_as(
        &format!("/api/tasks/{task}/approve"),
        Some(&token),
        &json!({}),
    );
    assert_eq!(status, 403);

    let (status, body) = decide(&hub, &task, "reject", json!({"reason": "add tests"}));
    assert_eq!(status, 200, "{body}");
    let back = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (
            back["kind"].clone(),
            back["answer"].clone(),
            back["note"].clone()
        ),
        (json!("approval"), json!("reject"), json!("add tests")),
        "{back}"
    );
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "assigned", "{t}");
    assert_eq!(t["generation"], assign["generation"], "same generation");
    let (_, attempts) = hub.get(&format!("/api/tasks/{task}/attempts"));
    assert_eq!(attempts["attempts"][0]["outcome"], "rejected", "{attempts}");
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(2));

    let ack = complete_with(&mut agent, &assign, json!({"summary": "v2"}));
    assert_eq!(ack["status"], "input_required", "{ack}");
    // A repeat of the held report is answered the same.
    let ack = complete_with(&mut agent, &assign, json!({"summary": "v2"}));
    assert_eq!(ack["status"], "input_required", "{ack}");
    let (status, body) = decide(&hub, &task, "approve", json!({}));
    assert_eq!(status, 200, "{body}");
    let done = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(done["answer"], "approve", "{done}");
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["result"]["summary"], "v2", "{t}");
    // The agent is free again.
    let next = submit(&hub, json!({"description": "next"}));
    agent.take(&next);
}

#[test]
fn a_rule_on_infra_holds_a_completion_that_touched_it() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let (status, body) = hub.put(
        "/api/admin/approval-rules",
        &json!({"rules": [{"name": "infra", "paths": ["infra/**"]},
                          {"name": "deletions", "max_deleted_lines": 500}]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "api");
    // Bad rules change nothing.
    let (status, body) = hub.put(
        "/api/admin/approval-rules",
        &json!({"rules": [{"name": "x", "paths": ["a/["]}]}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = hub.put_as(
        "/api/admin/approval-rules",
        Some(&token),
        &json!({"rules": []}),
    );
    assert_eq!(status, 403, "agents may not lift the rules");
    assert_eq!(
        hub.get("/api/admin/approval-rules").1["rules"][0]["name"],
        "infra"
    );

    let safe = submit(&hub, json!({"description": "docs"}));
    let assign = agent.take(&safe);
    let ack = complete_with(
        &mut agent,
        &assign,
        json!({"changes": {"paths": ["docs/a.md"], "lines_added": 3, "lines_deleted": 1}}),
    );
    assert_eq!(ack["status"], "complete", "{ack}");

    let risky = submit(&hub, json!({"description": "terraform"}));
    let assign = agent.take(&risky);
    let ack = complete_with(
        &mut agent,
        &assign,
        json!({"changes": {"paths": ["src/x.rs", "infra/main.tf"], "lines_added": 3,
                           "lines_deleted": 1}}),
    );
    assert_eq!(ack["status"], "input_required", "{ack}");
    let t = get_task(&hub, &risky);
    assert_eq!(
        t["question"]["approval"]["reasons"],
        json!(["rule infra: changes infra/main.tf"]),
        "{t}"
    );
    let (_, events) = hub.get(&format!(
        "/api/events?task_id={risky}&kind=approval_required"
    ));
    assert_eq!(events["events"][0]["actor"], "worker", "{events}");
    decide(&hub, &risky, "approve", json!({}));
    assert!(wait_for(SOON, || get_task(&hub, &risky)["status"] == "completed"));
    let (_, events) = hub.get("/api/events?kind=approval_rules_set");
    assert_eq!(events["events"][0]["actor"], "admin", "{events}");
}

#[test]
fn an_approved_pull_request_is_merged_by_the_holder_or_sent_back() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "x", "merge_on_approval": true}),
    );
    assert_eq!(status, 422, "merging needs before_complete: {body}");
    let task = submit(
        &hub,
        json!({"description": "feature", "approval": "before_complete",
               "merge_on_approval": true}),
    );
    let assign = agent.take(&task);
    assert_eq!(assign["merge_on_approval"], true, "{assign}");
    let result = json!({"pr_url": "https://example.test/pr/9"});
    complete_with(&mut agent, &assign, result.clone());
    decide(&hub, &task, "approve", json!({}));
    let go = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (go["answer"].clone(), go["merge"].clone()),
        (json!("approve"), json!(true))
    );
    assert_eq!(get_task(&hub, &task)["status"], "assigned");
    // A failed merge without a reason is refused.
    let reply = request(
        &mut agent,
        json!({"type": "task_merged", "task_id": task, "generation": assign["generation"],
               "merged": false}),
    );
    assert_error(&reply, "validation_failed");
    agent.send(json!({"type": "task_merged", "task_id": task,
                      "generation": assign["generation"], "merged": false,
                      "error": "merge conflict in src/lib.rs"}));
    let ack = agent.recv_ack(&task, PUSH_TIMEOUT);
    assert_eq!(ack["status"], "rework", "{ack}");
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "assigned", "{t}");
    assert_eq!(t["merge"]["error"], "merge conflict in src/lib.rs", "{t}");
    // Rebased, completed again, approved again, merged.
    complete_with(&mut agent, &assign, result);
    decide(&hub, &task, "approve", json!({}));
    agent.recv_type("task_answer", PUSH_TIMEOUT);
    agent.send(json!({"type": "task_merged", "task_id": task,
                      "generation": assign["generation"], "merged": true,
                      "method": "squash"}));
    let ack = agent.recv_ack(&task, PUSH_TIMEOUT);
    assert_eq!(ack["status"], "complete", "{ack}");
    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["result"]["merge"]["merged"], true, "{t}");
    let (_, events) = hub.get(&format!("/api/events?task_id={task}&kind=merge_failed"));
    assert_eq!(events["count"], 1, "{events}");
    let (_, events) = hub.get(&format!("/api/events?task_id={task}&kind=merged"));
    assert_eq!(
        events["events"][0]["details"]["method"], "squash",
        "{events}"
    );
}
