//! Agent slots (#19, ext, PROTOCOL.md 6.24): an agent with `slots` holds that
//! many tasks at once, is offered work while a slot is free, shows each task
//! on its card, loses all of them (each once) when its socket drops, and may
//! keep one slot for standing-order runs so a scheduled run never waits behind
//! reactive work. Slots come from the token, or from `identify` within the
//! token's number.

mod common;

use common::*;
use serde_json::{json, Value};

/// A token with `slots` (if any) for `agent_id`.
fn token_with_slots(hub: &Hub, agent_id: &str, slots: Option<u32>) -> String {
    let (status, body) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": agent_id, "capabilities": ["code"], "slots": slots}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["slots"], json!(slots), "{body}");
    body["token"].as_str().expect("token").to_string()
}

/// Connects with an `identify` carrying `extra` fields; returns the agent and
/// the `identified` reply.
fn connect_with(hub: &Hub, agent_id: &str, token: &str, extra: Value) -> (Agent, Value) {
    let mut agent = Agent::open(hub);
    let mut frame = json!({"type": "identify", "agent_id": agent_id, "token": token});
    if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    agent.send(frame);
    let reply = agent.recv_reply(REPLY_TIMEOUT);
    agent.agent_id = agent_id.to_string();
    (agent, reply)
}

fn running(hub: &Hub, agent_id: &str) -> Vec<String> {
    let state = agent_state(hub, agent_id);
    let tasks = state["running"].as_array().into_iter().flatten();
    tasks
        .filter_map(|t| Some(t["task_id"].as_str()?.to_string()))
        .collect()
}

#[test]
fn three_slots_hold_three_tasks_and_a_fourth_waits_for_a_free_one() {
    let hub = Hub::start();
    let token = token_with_slots(&hub, "wide", Some(3));
    let (mut agent, identified) = connect_with(&hub, "wide", &token, json!({}));
    assert_eq!(
        identified,
        json!({"type": "identified", "agent_id": "wide", "slots": 3,
               "reserve_slot_for_standing": false})
    );
    let tasks: Vec<String> = (0..4)
        .map(|i| submit(&hub, json!({"description": format!("job {i}")})))
        .collect();
    // Three pushes arrive before any acceptance: one per slot.
    let mut assigns = Vec::new();
    for _ in 0..3 {
        assigns.push(agent.recv_type("task_assign", PUSH_TIMEOUT));
    }
    let pushed: Vec<&str> = assigns
        .iter()
        .filter_map(|a| a["task_id"].as_str())
        .collect();
    assert_eq!(
        pushed,
        tasks[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    for a in &assigns {
        agent.accept(a["task_id"].as_str().expect("id"), a["generation"].clone());
    }
    assert_no_assignment(&hub, &mut agent);
    assert_eq!(get_task(&hub, &tasks[3])["status"], "queued");
    let ok = wait_for(SOON, || running(&hub, "wide").len() == 3);
    assert!(ok, "state: {}", agent_state(&hub, "wide"));
    let card = agent_state(&hub, "wide");
    assert_eq!(card["slots"], 3, "{card}");
    assert_eq!(card["fsm_state"], "working", "{card}");
    assert!(
        card["running"]
            .as_array()
            .is_some_and(|r| r.iter().all(|t| t["state"] == "working")),
        "{card}"
    );

    // A slot frees: the fourth task is pushed at once.
    agent.complete(&assigns[1]);
    let fourth = agent.take(&tasks[3]);
    assert_eq!(fourth["task_id"], tasks[3].as_str());
    for a in [&assigns[0], &assigns[2], &fourth] {
        agent.complete(a);
    }
    for t in &tasks {
        assert_eq!(get_task(&hub, t)["status"], "completed");
    }
    let ok = wait_for(SOON, || running(&hub, "wide").is_empty());
    assert!(ok, "state: {}", agent_state(&hub, "wide"));
    // The slots granted are in the event log.
    let (_, events) = hub.get("/api/events?kind=agent_connected&agent_id=wide");
    assert_eq!(events["events"][0]["details"]["slots"], 3, "{events}");
}

#[test]
fn a_dropped_socket_returns_every_held_task_once() {
    let hub = Hub::start();
    let token = token_with_slots(&hub, "wide", Some(3));
    let (mut agent, _) = connect_with(&hub, "wide", &token, json!({}));
    let tasks: Vec<String> = (0..3)
        .map(|i| submit(&hub, json!({"description": format!("job {i}")})))
        .collect();
    for t in &tasks {
        // One accepted, the others only pushed: both kinds go back.
        let a = agent.recv_type("task_assign", PUSH_TIMEOUT);
        if a["task_id"] == tasks[0].as_str() {
            agent.accept(t, a["generation"].clone());
        }
    }
    agent.drop_abruptly();
    for t in &tasks {
        let task = hub.wait_status(t, "queued", SOON);
        assert_eq!(task["reclaim_count"], 1, "{task}");
        assert_eq!(count_events(&task, "reclaimed"), 1, "{task}");
    }
    // Another agent finishes each exactly once.
    let other = register_agent(&hub, "other", &["code"]);
    let mut other = Agent::connect(&hub, "other", &other);
    for _ in 0..3 {
        let a = other.recv_type("task_assign", PUSH_TIMEOUT);
        let id = a["task_id"].as_str().expect("id").to_string();
        other.accept(&id, a["generation"].clone());
        other.complete(&a);
    }
    for t in &tasks {
        let task = get_task(&hub, t);
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(count_events(&task, "completed"), 1, "{task}");
    }
}

#[test]
fn identify_asks_for_slots_within_the_tokens_number_and_bad_values_are_refused() {
    let hub = Hub::start();
    let capped = token_with_slots(&hub, "capped", Some(2));
    let (_, reply) = connect_with(&hub, "capped", &capped, json!({"slots": 8}));
    assert_eq!(reply["slots"], 2, "the token caps: {reply}");
    let free = token_with_slots(&hub, "free", None);
    let (_, reply) = connect_with(
        &hub,
        "free",
        &free,
        json!({"slots": 4, "reserve_slot_for_standing": true}),
    );
    assert_eq!(
        (
            reply["slots"].clone(),
            reply["reserve_slot_for_standing"].clone()
        ),
        (json!(4), json!(true)),
        "{reply}"
    );
    // Bad values: a structured refusal, and the agent stays unidentified.
    for (extra, field) in [
        (json!({"slots": 0}), "slots"),
        (json!({"slots": 33}), "slots"),
        (json!({"slots": "3"}), "slots"),
        (
            json!({"slots": 1, "reserve_slot_for_standing": true}),
            "reserve_slot_for_standing",
        ),
    ] {
        let token = token_with_slots(&hub, &format!("bad{}", random_hex(1)), None);
        let mut agent = Agent::open(&hub);
        let mut frame = json!({"type": "identify", "agent_id": "x", "token": token});
        if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        agent.send(frame);
        let reply = agent.recv_reply(REPLY_TIMEOUT);
        assert_eq!(reply["error"], "validation_failed", "{extra}: {reply}");
        assert_eq!(reply["errors"][0]["field"], field, "{extra}: {reply}");
    }
    // A token's slots out of range are refused too.
    let (status, body) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "too-wide", "slots": 40}),
    );
    assert_field_error(status, &body, &json!({}), "slots", "invalid_value");
    let (_, tokens) = hub.get("/admin/tokens");
    assert!(
        !tokens.to_string().contains("too-wide"),
        "nothing was created: {tokens}"
    );
}

/// 2026-11-21T10:00:30Z.
const T0: i64 = 1_795_255_230_000;

#[test]
fn a_slot_kept_for_standing_orders_runs_a_scheduled_run_while_the_others_are_busy() {
    let clock = HubClock::new(T0);
    let hub = Hub::start_with_config(&clock.config());
    let token = token_with_slots(&hub, "keeper", None);
    let (mut agent, reply) = connect_with(
        &hub,
        "keeper",
        &token,
        json!({"slots": 2, "reserve_slot_for_standing": true}),
    );
    assert_eq!(reply["reserve_slot_for_standing"], true, "{reply}");
    // Reactive work fills the one general slot; the next reactive task waits.
    let busy = submit(&hub, json!({"description": "long reactive job"}));
    let busy_assign = agent.take(&busy);
    let waiting = submit(&hub, json!({"description": "another reactive job"}));
    assert_no_assignment(&hub, &mut agent);
    assert_eq!(get_task(&hub, &waiting)["status"], "queued");
    let (status, order) = hub.post(
        "/api/standing-orders",
        &json!({"name": "sweep", "cron": "* * * * *", "timezone": "UTC",
                "agent": "keeper", "window_ms": 120_000,
                "task": {"description": "sweep the inbox"}}),
    );
    assert_eq!(status, 201, "{order}");
    // The occurrence comes: the run goes to the kept slot at once.
    clock.set(T0 + 60_000);
    let run = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert!(
        run["metadata"]["standing_order"]["name"] == "sweep",
        "the kept slot took a reactive task: {run}"
    );
    let run_id = run["task_id"].as_str().expect("id").to_string();
    agent.accept(&run_id, run["generation"].clone());
    let card = agent_state(&hub, "keeper");
    let standing: Vec<bool> = card["running"]
        .as_array()
        .map(|r| r.iter().map(|t| t["standing"] == true).collect())
        .unwrap_or_default();
    assert_eq!(standing, vec![false, true], "{card}");
    assert_eq!(get_task(&hub, &waiting)["status"], "queued");
    // The run ends: its slot is kept again, so the reactive task still waits;
    // the reactive one ends: the waiting task takes the general slot.
    agent.complete(&run);
    assert_no_assignment(&hub, &mut agent);
    assert_eq!(get_task(&hub, &waiting)["status"], "queued");
    agent.complete(&busy_assign);
    let next = agent.take(&waiting);
    agent.complete(&next);
}
