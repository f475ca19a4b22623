//! Reconnects: replaced connections, task_recovering, state_report.

mod common;

use common::*;
use serde_json::{json, Value};

fn assigned_and_accepted(hub: &Hub, agent: &mut Agent, description: &str) -> (String, u64) {
    let task_id = submit(hub, json!({"description": description}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
    let generation = assign["generation"].as_u64().expect("generation");
    agent.accept(&task_id, json!(generation));
    (task_id, generation)
}

fn listed_agents(hub: &Hub, agent_id: &str) -> Vec<Value> {
    let (status, agents) = hub.get("/api/agents");
    assert_eq!(status, 200, "{agents}");
    agents["agents"]
        .as_array()
        .expect("agents array")
        .iter()
        .filter(|a| a["agent_id"] == agent_id)
        .cloned()
        .collect()
}

/// Issue 2, test 6.
#[test]
fn newer_connection_replaces_the_older_and_recovering_sidecar_gets_task_continue_and_completes() {
    let hub = Hub::start();
    let token = register_agent(&hub, "sidecar-1", &["code"]);
    let mut old = Agent::connect(&hub, "sidecar-1", &token);
    let (task_id, generation) = assigned_and_accepted(&hub, &mut old, "survive a reconnect");

    // The sidecar reconnects while the hub still holds the old socket.
    let mut new = Agent::connect(&hub, "sidecar-1", &token);
    let (code, reason) = old.recv_close(REPLY_TIMEOUT);
    assert_eq!(code, Some(4000), "old socket closed as replaced: {reason}");
    assert_eq!(reason, "replaced by a newer connection");
    drop(old);

    new.send(json!({
        "type": "task_recovering", "task_id": task_id, "generation": generation,
        "description": "survive a reconnect", "metadata": {}, "last_status": "working"
    }));
    let cont = new.recv_type("task_continue", REPLY_TIMEOUT);
    assert_eq!(
        cont,
        json!({"type": "task_continue", "task_id": task_id, "generation": generation})
    );
    let state = agent_state(&hub, "sidecar-1");
    assert_eq!(state["fsm_state"], "working", "{state}");
    assert_eq!(state["current_task_id"], task_id.as_str(), "{state}");
    let held = get_task(&hub, &task_id);
    assert_eq!(held["status"], "assigned", "{held}");
    assert_eq!(held["generation"], generation, "{held}");
    assert_eq!(
        count_events(&held, "reclaimed"),
        0,
        "old teardown reclaimed: {held}"
    );

    new.send(json!({"type": "task_complete", "task_id": task_id, "generation": generation, "result": {"ok": 1}}));
    assert_eq!(new.recv_ack(&task_id, REPLY_TIMEOUT)["status"], "complete");
    let done = get_task(&hub, &task_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");

    // Presence is intact: one online entry, idle, with its capabilities.
    new.assert_alive();
    let entries = listed_agents(&hub, "sidecar-1");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["fsm_state"], "idle", "{entries:?}");
    assert_eq!(entries[0]["capabilities"], json!(["code"]), "{entries:?}");
    let (_, health) = hub.get("/health");
    assert_eq!(health["agents_connected"], 1, "{health}");

    // And the new session still gets work.
    let next = submit(&hub, json!({"description": "after the replace"}));
    let assign = new.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], next.as_str(), "{assign}");
}

#[test]
fn sidecar_reconnecting_after_its_task_was_reclaimed_gets_task_reassign() {
    let hub = Hub::start();
    let token = register_agent(&hub, "sidecar-2", &[]);
    let mut first = Agent::connect(&hub, "sidecar-2", &token);
    let (task_id, generation) = assigned_and_accepted(&hub, &mut first, "lost on disconnect");
    drop(first);
    assert!(
        wait_for(PUSH_TIMEOUT, || count_events(
            &get_task(&hub, &task_id),
            "reclaimed"
        ) == 1),
        "{}",
        get_task(&hub, &task_id)
    );

    let mut second = Agent::connect(&hub, "sidecar-2", &token);
    second.send(json!({"type": "task_recovering", "task_id": task_id, "generation": generation}));
    let reassign = second.recv_type("task_reassign", REPLY_TIMEOUT);
    assert_eq!(
        reassign,
        json!({"type": "task_reassign", "task_id": task_id})
    );

    // The requeued task is offered afresh (this is the only agent) and completes once.
    let assign = second.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
    let fresh = assign["generation"].as_u64().expect("generation");
    assert!(fresh > generation, "{assign}");
    second.send(json!({"type": "task_accepted", "task_id": task_id, "generation": fresh}));
    second.send(json!({"type": "task_complete", "task_id": task_id, "generation": fresh}));
    assert_eq!(
        second.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "accepted"
    );
    assert_eq!(
        second.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    assert_eq!(count_events(&get_task(&hub, &task_id), "completed"), 1);
}

#[test]
fn recovering_an_unknown_task_gets_task_reassign() {
    let hub = Hub::start();
    let token = register_agent(&hub, "sidecar-3", &[]);
    let mut agent = Agent::connect(&hub, "sidecar-3", &token);
    let reply = request(
        &mut agent,
        json!({"type": "task_recovering", "task_id": "task-00000000deadbeef", "generation": 4}),
    );
    assert_eq!(
        reply,
        json!({"type": "task_reassign", "task_id": "task-00000000deadbeef",
               "reason": "unknown_task"})
    );
    assert_eq!(agent_state(&hub, "sidecar-3")["fsm_state"], "idle");
}

#[test]
fn state_report_answers_continue_only_for_the_holder_with_the_current_generation() {
    let hub = Hub::start();
    let token_a = register_agent(&hub, "reporter", &[]);
    let token_b = register_agent(&hub, "bystander", &[]);
    let mut a = Agent::connect(&hub, "reporter", &token_a);
    let (task_id, generation) = assigned_and_accepted(&hub, &mut a, "report on me");
    let mut b = Agent::connect(&hub, "bystander", &token_b);

    let ack =
        |action: &str| json!({"type": "state_report_ack", "task_id": task_id, "action": action});
    let report = |generation: u64| json!({"type": "state_report", "task_id": task_id, "status": "working", "generation": generation});
    assert_eq!(request(&mut a, report(generation)), ack("continue"));
    assert_eq!(request(&mut a, report(generation + 1)), ack("abort"));
    assert_eq!(request(&mut b, report(generation)), ack("abort"));
    assert_eq!(
        request(
            &mut a,
            json!({"type": "state_report", "task_id": "task-00000000deadbeef"})
        ),
        json!({"type": "state_report_ack", "task_id": "task-00000000deadbeef", "action": "abort"})
    );
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "assigned", "{task}");
    assert_eq!(task["assigned_to"], "reporter", "{task}");
}

#[test]
fn replaced_connection_teardown_leaves_the_agent_online_for_others() {
    let hub = Hub::start();
    let token = register_agent(&hub, "flapper", &["flap"]);
    let observer_token = register_agent(&hub, "observer", &[]);
    let mut observer = Agent::connect(&hub, "observer", &observer_token);
    let mut current = Agent::connect(&hub, "flapper", &token);
    // Replace the connection three times in a row.
    for _ in 0..3 {
        let newer = Agent::connect(&hub, "flapper", &token);
        let (code, _) = current.recv_close(REPLY_TIMEOUT);
        assert_eq!(code, Some(4000));
        current = newer;
    }
    current.assert_alive();
    observer.assert_alive();
    let entries = listed_agents(&hub, "flapper");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_ne!(entries[0]["fsm_state"], "offline", "{entries:?}");
    let (_, health) = hub.get("/health");
    assert_eq!(health["agents_connected"], 2, "{health}");
    // The live session is the one that gets work meant for this agent.
    let task_id = submit(
        &hub,
        json!({"description": "only for the flapper", "needed_capabilities": ["flap"]}),
    );
    let assign = current.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
}

/// Regression: a graceful stop (SIGTERM) used to reclaim every task in progress as
/// if its agent had left; a restart must be transparent to working agents.
#[test]
fn graceful_hub_restart_keeps_tasks_with_their_agents() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "steady", &[]);
    let mut agent = Agent::connect(&hub, "steady", &token);
    let task_id = submit(&hub, json!({"description": "long job"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, assign["generation"].clone());
    hub.restart();
    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "assigned", "{task}");
    assert_eq!(task["generation"], assign["generation"], "{task}");
    assert_eq!(count_events(&task, "reclaimed"), 0, "{task}");
    let mut again = Agent::connect(&hub, "steady", &token);
    let reply = request(
        &mut again,
        json!({"type": "task_recovering", "task_id": task_id, "generation": assign["generation"]}),
    );
    assert_eq!(reply["type"], "task_continue", "{reply}");
}

/// Regression: `task_recovering` for an older generation made the agent look idle
/// while the hub held the task for it at a newer one.
#[test]
fn recovering_an_old_generation_does_not_release_the_current_one() {
    let hub = Hub::start();
    let token = register_agent(&hub, "flaky", &[]);
    let mut agent = Agent::connect(&hub, "flaky", &token);
    let task_id = submit(&hub, json!({"description": "bounced"}));
    let first = agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, first["generation"].clone());
    agent.close();
    // The disconnect reclaims; the only agent gets the task back at a newer generation.
    let mut agent = Agent::connect(&hub, "flaky", &token);
    let second = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(second["task_id"], task_id.as_str());
    assert!(
        second["generation"].as_u64() > first["generation"].as_u64(),
        "{second}"
    );
    let reply = request(
        &mut agent,
        json!({"type": "task_recovering", "task_id": task_id, "generation": first["generation"]}),
    );
    assert_eq!(reply["type"], "task_reassign", "{reply}");
    let state = agent_state(&hub, "flaky");
    assert_eq!(state["fsm_state"], "assigned", "{state}");
    assert_eq!(state["current_task_id"], task_id.as_str(), "{state}");
    agent.accept(&task_id, second["generation"].clone());
    assert!(
        wait_for(REPLY_TIMEOUT, || agent_state(&hub, "flaky")["fsm_state"]
            == "working"),
        "{}",
        agent_state(&hub, "flaky")
    );
}
