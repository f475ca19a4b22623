//! Operator controls: pause and resume priority lanes, drain and disable agents,
//! cancel, force retry, force dead letter and reprioritise tasks. Each works, is
//! admin-only, and is recorded in the event log with its actor.

mod common;

use common::*;
use serde_json::{json, Value};

/// Every event matching `query` (one page of up to 1000).
fn events(hub: &Hub, query: &str) -> Vec<Value> {
    let (status, body) = hub.get(&format!("/api/events?limit=1000&{query}"));
    assert_eq!(status, 200, "GET /api/events?{query}: {body}");
    assert_eq!(body["next_cursor"], Value::Null, "{body}");
    body["events"].as_array().expect("events").clone()
}

/// The one event matching `query`.
fn one_event(hub: &Hub, query: &str) -> Value {
    let found = events(hub, query);
    assert_eq!(found.len(), 1, "one event for {query}: {found:?}");
    found[0].clone()
}

fn flags(hub: &Hub, agent_id: &str) -> Vec<String> {
    agent_state(hub, agent_id)["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn control(hub: &Hub, agent_id: &str, action: &str) -> Value {
    let (status, body) = hub.post(&format!("/api/agents/{agent_id}/{action}"), &json!({}));
    assert_eq!(status, 200, "{action} {agent_id}: {body}");
    body
}

#[test]
fn a_paused_lane_holds_its_tasks_while_other_lanes_run_and_stays_paused_across_a_restart() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "p", &[]);
    let mut agent = Agent::connect(&hub, "p", &token);
    let (status, body) = hub.post("/api/queue/pause", &json!({"lanes": ["normal"]}));
    assert_eq!((status, body), (200, json!({"paused_lanes": [2]})));
    assert_eq!(
        hub.get("/api/queue/lanes"),
        (200, json!({"paused_lanes": [2]}))
    );

    // Submitted first to an idle agent, the normal task would be its next one;
    // the urgent one comes instead.
    let normal = submit(&hub, json!({"description": "normal", "priority": "normal"}));
    let urgent = submit(&hub, json!({"description": "urgent", "priority": "urgent"}));
    let a = agent.take(&urgent);
    agent.complete(&a);
    let high = submit(&hub, json!({"description": "high", "priority": "high"}));
    let a = agent.take(&high);
    agent.complete(&a);
    assert_eq!(get_task(&hub, &normal)["status"], "queued");

    hub.restart();
    assert_eq!(
        hub.get("/api/queue/lanes"),
        (200, json!({"paused_lanes": [2]}))
    );
    let mut agent = Agent::connect(&hub, "p", &token);
    let urgent2 = submit(&hub, json!({"description": "urgent 2", "priority": 0}));
    let a = agent.take(&urgent2);
    agent.complete(&a);
    assert_eq!(get_task(&hub, &normal)["status"], "queued");

    let (status, body) = hub.post("/api/queue/resume", &json!({"lanes": ["normal"]}));
    assert_eq!((status, body), (200, json!({"paused_lanes": []})));
    let a = agent.take(&normal);
    agent.complete(&a);

    let paused = one_event(&hub, "kind=lanes_paused");
    assert_eq!(paused["actor"], "admin", "{paused}");
    assert_eq!(paused["details"]["lanes"], json!([2]), "{paused}");
    assert_eq!(paused["details"]["paused_lanes"], json!([2]), "{paused}");
    let resumed = one_event(&hub, "kind=lanes_resumed");
    assert_eq!(resumed["actor"], "admin", "{resumed}");
    assert_eq!(resumed["details"]["paused_lanes"], json!([]), "{resumed}");
    assert!(resumed["seq"].as_u64() > paused["seq"].as_u64());
}

#[test]
fn pause_without_lanes_pauses_every_lane_and_bad_lanes_are_refused() {
    let hub = Hub::start();
    let token = register_agent(&hub, "q", &[]);
    let (status, body) = http(
        "POST",
        &hub.url("/api/queue/pause"),
        Some(&hub.admin_token),
        Body::None,
    );
    assert_eq!((status, body), (200, json!({"paused_lanes": [0, 1, 2, 3]})));
    let mut agent = Agent::connect(&hub, "q", &token);
    let task_id = submit(&hub, json!({"description": "urgent", "priority": "urgent"}));
    assert_no_assignment(&hub, &mut agent);
    assert_eq!(get_task(&hub, &task_id)["status"], "queued");
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["paused_lanes"], json!([0, 1, 2, 3]), "{stats}");

    for (body, field) in [
        (json!({"lanes": ["fast"]}), "lanes[0]"),
        (json!({"lanes": []}), "lanes"),
        (json!({"lanes": "normal"}), "lanes"),
        (json!({"lanes": [0, 1, 2, 3, 0]}), "lanes"),
    ] {
        let (status, resp) = hub.post("/api/queue/resume", &body);
        assert_eq!(status, 422, "{body}: {resp}");
        assert_eq!(resp["errors"][0]["field"], field, "{body}: {resp}");
    }
    let (status, resp) = hub.post_as("/api/queue/resume", Some(&token), &json!({}));
    assert_eq!(
        (status, resp["error"].as_str()),
        (403, Some("admin_only")),
        "{resp}"
    );
    assert_eq!(hub.get_as("/api/queue/lanes", Some(&token)).0, 200);
    assert_eq!(hub.get_as("/api/queue/lanes", None).0, 401);
    assert_eq!(
        hub.get("/api/queue/lanes").1,
        json!({"paused_lanes": [0, 1, 2, 3]}),
        "refused requests changed nothing"
    );

    let (status, body) = hub.post("/api/queue/resume", &json!({}));
    assert_eq!((status, body), (200, json!({"paused_lanes": []})));
    let a = agent.take(&task_id);
    agent.complete(&a);
    assert_eq!(events(&hub, "kind=lanes_paused").len(), 1);
    assert_eq!(events(&hub, "kind=lanes_resumed").len(), 1);
}

#[test]
fn a_draining_agent_finishes_its_task_but_gets_no_new_one_until_undrained() {
    let hub = Hub::start();
    let d_token = register_agent(&hub, "d", &[]);
    let f_token = register_agent(&hub, "f", &[]);
    let mut d = Agent::connect(&hub, "d", &d_token);
    let t1 = submit(&hub, json!({"description": "t1"}));
    let a1 = d.take(&t1);

    let body = control(&hub, "d", "drain");
    assert_eq!(
        body,
        json!({"agent_id": "d", "draining": true, "disabled": false})
    );
    assert!(flags(&hub, "d").contains(&"draining".to_string()));
    assert_eq!(agent_state(&hub, "d")["fsm_state"], "working");
    d.complete(&a1);
    assert_eq!(get_task(&hub, &t1)["status"], "completed");

    // Idle but draining: a new task waits for another agent.
    let t2 = submit(&hub, json!({"description": "t2"}));
    assert_no_assignment(&hub, &mut d);
    let mut f = Agent::connect(&hub, "f", &f_token);
    let a2 = f.take(&t2);

    let body = control(&hub, "d", "undrain");
    assert_eq!(body["draining"], false, "{body}");
    assert!(!flags(&hub, "d").contains(&"draining".to_string()));
    // f is busy with t2: the undrained agent takes the next task.
    let t3 = submit(&hub, json!({"description": "t3"}));
    let a3 = d.take(&t3);
    d.complete(&a3);
    f.complete(&a2);

    let drained = one_event(&hub, "kind=agent_drained");
    assert_eq!(
        (drained["actor"].as_str(), drained["agent_id"].as_str()),
        (Some("admin"), Some("d")),
        "{drained}"
    );
    let undrained = one_event(&hub, "agent_id=d&kind=agent_undrained");
    assert_eq!(undrained["actor"], "admin", "{undrained}");
}

#[test]
fn disabling_an_agent_takes_its_task_back_gives_it_nothing_and_persists_across_a_restart() {
    let mut hub = Hub::start();
    let tokens: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|a| register_agent(&hub, a, &[]))
        .collect();
    let mut x = Agent::connect(&hub, "x", &tokens[0]);
    let t = submit(&hub, json!({"description": "t"}));
    let ax = x.take(&t);
    let mut y = Agent::connect(&hub, "y", &tokens[1]);

    let body = control(&hub, "x", "disable");
    assert_eq!(
        body,
        json!({"agent_id": "x", "draining": false, "disabled": true})
    );
    let cancelled = x.recv_type("task_cancelled", PUSH_TIMEOUT);
    assert_eq!(cancelled["task_id"], t.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "agent_disabled", "{cancelled}");
    // The task goes to the other agent, at a new generation.
    let ay = y.take(&t);
    assert!(ay["generation"].as_u64() > ax["generation"].as_u64());
    // The disabled agent's late report is refused.
    let reply = request(
        &mut x,
        json!({"type": "task_complete", "task_id": t, "generation": ax["generation"]}),
    );
    assert_refused(&reply, "task_complete_failed");
    assert!(flags(&hub, "x").contains(&"disabled".to_string()));
    assert_eq!(agent_state(&hub, "x")["fsm_state"], "idle");

    // Idle but disabled: a new task waits for someone else.
    let t2 = submit(&hub, json!({"description": "t2"}));
    assert_no_assignment(&hub, &mut x);
    let mut z = Agent::connect(&hub, "z", &tokens[2]);
    let az = z.take(&t2);
    y.complete(&ay);
    z.complete(&az);
    drop((y, z));

    // Still disabled after a restart.
    hub.restart();
    let mut x = Agent::connect(&hub, "x", &tokens[0]);
    assert!(
        wait_for(PUSH_TIMEOUT, || flags(&hub, "x")
            .contains(&"disabled".to_string())),
        "{:?}",
        flags(&hub, "x")
    );
    let t3 = submit(&hub, json!({"description": "t3"}));
    assert_no_assignment(&hub, &mut x);
    assert_eq!(get_task(&hub, &t3)["status"], "queued");
    let body = control(&hub, "x", "enable");
    assert_eq!(body["disabled"], false, "{body}");
    let a3 = x.take(&t3);
    x.complete(&a3);
    assert!(!flags(&hub, "x").contains(&"disabled".to_string()));

    let disabled = one_event(&hub, "kind=agent_disabled");
    assert_eq!(
        (disabled["actor"].as_str(), disabled["agent_id"].as_str()),
        (Some("admin"), Some("x")),
        "{disabled}"
    );
    assert_eq!(one_event(&hub, "kind=agent_enabled")["actor"], "admin");
    let reclaimed = one_event(&hub, &format!("task_id={t}&kind=reclaimed"));
    assert_eq!(
        reclaimed["details"]["reason"], "agent_disabled",
        "{reclaimed}"
    );

    // Refusals change nothing.
    let (status, body) = hub.post("/api/agents/nobody/disable", &json!({}));
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "agent_not_found", "agent_id": "nobody"})
        )
    );
    let (status, body) = hub.post_as("/api/agents/x/disable", Some(&tokens[0]), &json!({}));
    assert_eq!((status, body), (403, json!({"error": "admin_only"})));
    let (status, body) = hub.post("/api/agents/x/explode", &json!({}));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(!flags(&hub, "x").contains(&"disabled".to_string()));
    assert_eq!(events(&hub, "kind=agent_disabled").len(), 1);
}

#[test]
fn operator_cancel_of_an_assigned_task_tells_its_holder_and_is_logged() {
    let hub = Hub::start();
    let token = register_agent(&hub, "c", &[]);
    let mut agent = Agent::connect(&hub, "c", &token);
    let t = submit(&hub, json!({"description": "t"}));
    let a = agent.take(&t);
    let (status, body) = hub.post(&format!("/api/tasks/{t}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_status"], "assigned", "{body}");
    let cancelled = agent.recv_type("task_cancelled", PUSH_TIMEOUT);
    assert_eq!(
        (cancelled["task_id"].as_str(), cancelled["reason"].as_str()),
        (Some(t.as_str()), Some("cancelled")),
        "{cancelled}"
    );
    let reply = request(
        &mut agent,
        json!({"type": "task_complete", "task_id": t, "generation": a["generation"]}),
    );
    assert_refused(&reply, "task_complete_failed");
    assert_eq!(get_task(&hub, &t)["status"], "cancelled");
    let event = one_event(&hub, &format!("task_id={t}&kind=cancelled"));
    assert_eq!(event["actor"], "admin", "{event}");
    assert_eq!(event["agent_id"], "c", "the holder: {event}");
    assert_eq!(event["details"]["previous_status"], "assigned", "{event}");
    let (status, body) = hub.post_as(&format!("/api/tasks/{t}/cancel"), Some(&token), &json!({}));
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_only")));
}

#[test]
fn force_retry_of_an_assigned_task_takes_it_from_its_holder_and_queues_it_again() {
    let hub = Hub::start();
    let token = register_agent(&hub, "h", &[]);
    let mut agent = Agent::connect(&hub, "h", &token);
    let t = submit(&hub, json!({"description": "t"}));
    let first = agent.take(&t);
    let (status, body) = hub.post(&format!("/api/tasks/{t}/retry"), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["previous_status"].as_str()),
        (Some("requeued"), Some("assigned")),
        "{body}"
    );
    let cancelled = agent.recv_type("task_cancelled", PUSH_TIMEOUT);
    assert_eq!(cancelled["task_id"], t.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "operator_retry", "{cancelled}");
    // A report of the old generation is stale now (the new assignment may come
    // before the refusal; it is kept).
    agent.send(json!({"type": "task_complete", "task_id": t, "generation": first["generation"]}));
    let reply = agent.recv_type("error", REPLY_TIMEOUT);
    assert_refused(&reply, "task_complete_failed");
    // Back in the queue with a new generation; the idle agent gets it again.
    let second = agent.take(&t);
    assert!(
        second["generation"].as_u64() > first["generation"].as_u64(),
        "{first} -> {second}"
    );
    agent.complete(&second);
    let event = one_event(&hub, &format!("task_id={t}&kind=force_retried"));
    assert_eq!(event["actor"], "admin", "{event}");
    assert_eq!(event["details"]["previous_status"], "assigned", "{event}");
}

#[test]
fn force_dead_letter_works_on_queued_and_assigned_tasks_and_is_logged_as_forced() {
    let hub = Hub::start();
    let token = register_agent(&hub, "k", &[]);
    let queued = submit(
        &hub,
        json!({"description": "needs a capability nobody has", "needed_capabilities": ["none"]}),
    );
    let (status, body) = hub.post(&format!("/api/tasks/{queued}/dead-letter"), &json!({}));
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "dead_letter", "task_id": queued, "previous_status": "queued"})
        )
    );
    let t = get_task(&hub, &queued);
    assert_eq!(t["status"], "dead_letter", "{t}");
    assert_eq!(t["last_error"], "dead-lettered by admin", "{t}");

    let mut agent = Agent::connect(&hub, "k", &token);
    let held = submit(&hub, json!({"description": "held"}));
    let a = agent.take(&held);
    let (status, body) = hub.post(&format!("/api/tasks/{held}/dead-letter"), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_status"], "assigned", "{body}");
    let cancelled = agent.recv_type("task_cancelled", PUSH_TIMEOUT);
    assert_eq!(
        (cancelled["task_id"].as_str(), cancelled["reason"].as_str()),
        (Some(held.as_str()), Some("dead_lettered")),
        "{cancelled}"
    );
    let reply = request(
        &mut agent,
        json!({"type": "task_complete", "task_id": held, "generation": a["generation"]}),
    );
    assert_refused(&reply, "task_complete_failed");
    let (_, dl) = hub.get("/api/tasks/dead-letter");
    assert_eq!(dl["count"], 2, "{dl}");

    let logged = events(&hub, "kind=dead_letter");
    assert_eq!(logged.len(), 2, "{logged:?}");
    for (e, id, previous) in [
        (&logged[0], &queued, "queued"),
        (&logged[1], &held, "assigned"),
    ] {
        assert_eq!(e["task_id"], id.as_str(), "{e}");
        assert_eq!(e["actor"], "admin", "{e}");
        assert_eq!(e["details"]["forced"], true, "{e}");
        assert_eq!(e["details"]["previous_status"], previous, "{e}");
    }
    assert_eq!(logged[1]["agent_id"], "k", "{}", logged[1]);

    // Refusals.
    let (status, body) = hub.post(&format!("/api/tasks/{held}/dead-letter"), &json!({}));
    assert_eq!(status, 409, "already dead: {body}");
    assert_eq!(body["error"], "invalid_state", "{body}");
    let (status, _) = hub.post("/api/tasks/task-00000000deadbeef/dead-letter", &json!({}));
    assert_eq!(status, 404);
    let other = submit(
        &hub,
        json!({"description": "x", "needed_capabilities": ["none"]}),
    );
    let (status, _) = hub.post_as(
        &format!("/api/tasks/{other}/dead-letter"),
        Some(&token),
        &json!({}),
    );
    assert_eq!(status, 403);
    assert_eq!(get_task(&hub, &other)["status"], "queued");
    assert_eq!(events(&hub, "kind=dead_letter").len(), 2);
}

#[test]
fn raising_a_queued_task_to_urgent_gets_it_assigned_first() {
    let hub = Hub::start();
    let x = submit(&hub, json!({"description": "x", "priority": "low"}));
    let y = submit(&hub, json!({"description": "y", "priority": "normal"}));
    let (status, body) = hub.post(
        &format!("/api/tasks/{x}/priority"),
        &json!({"priority": "urgent"}),
    );
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "queued", "task_id": x, "priority": 0, "previous_priority": 3,
                   "previous_status": "queued"})
        )
    );
    assert_eq!(get_task(&hub, &x)["priority"], 0);
    let (_, stats) = hub.get("/api/tasks/stats");
    assert_eq!(stats["by_priority"]["0"], 1, "{stats}");
    assert_eq!(stats["by_priority"]["3"], 0, "{stats}");

    // Refused changes leave it as it is.
    for bad in [
        json!({"priority": "huge"}),
        json!({"priority": 7}),
        json!({}),
    ] {
        let (status, body) = hub.post(&format!("/api/tasks/{x}/priority"), &bad);
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "priority", "{body}");
    }
    let token = register_agent(&hub, "r", &[]);
    let (status, _) = hub.post_as(
        &format!("/api/tasks/{x}/priority"),
        Some(&token),
        &json!({"priority": 3}),
    );
    assert_eq!(status, 403);
    let (status, _) = hub.post(
        "/api/tasks/task-00000000deadbeef/priority",
        &json!({"priority": 0}),
    );
    assert_eq!(status, 404);
    assert_eq!(get_task(&hub, &x)["priority"], 0);

    let mut agent = Agent::connect(&hub, "r", &token);
    let ax = agent.take(&x);
    assert_eq!(ax["priority"], 0, "{ax}");
    // Only queued tasks change lanes.
    let (status, body) = hub.post(
        &format!("/api/tasks/{x}/priority"),
        &json!({"priority": "low"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (body["error"].as_str(), body["status"].as_str()),
        (Some("invalid_state"), Some("assigned")),
        "{body}"
    );
    agent.complete(&ax);
    let ay = agent.take(&y);
    agent.complete(&ay);

    let event = one_event(&hub, &format!("task_id={x}&kind=priority_changed"));
    assert_eq!(event["actor"], "admin", "{event}");
    assert_eq!(event["details"]["previous_priority"], 3, "{event}");
    assert_eq!(event["details"]["priority"], 0, "{event}");
}
