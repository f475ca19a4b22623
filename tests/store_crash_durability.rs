//! Crash durability: what the hub acknowledged survives `kill -9`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

const TASKS: usize = 1000;

/// Issue 2, test 7.
#[test]
fn thousand_acknowledged_tasks_survive_kill9_in_order_and_each_completes_exactly_once() {
    let mut hub = Hub::start();
    let mut submitted = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        // `submit` asserts each answer is 201.
        submitted.push(submit(
            &hub,
            json!({"description": format!("durable task {i}"), "metadata": {"n": i}}),
        ));
    }

    hub.kill9();
    hub.start_again();

    let listed = list_all_tasks(&hub, "", 300);
    let ids: Vec<String> = listed
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), TASKS, "tasks present after kill -9");
    assert_eq!(
        ids, submitted,
        "tasks listed in creation order after restart"
    );
    for (i, task) in listed.iter().enumerate() {
        assert_eq!(task["status"], "queued", "{task}");
        assert_eq!(task["metadata"], json!({"n": i}), "{task}");
        assert_eq!(task["description"], format!("durable task {i}"), "{task}");
    }

    let workers: Vec<Worker> = (0..4)
        .map(|i| Worker::spawn(&hub, &format!("crash-worker-{i}"), Duration::ZERO))
        .collect();
    // Generous bound: 1000 lifecycles normally take a few seconds.
    let all_done = wait_for(Duration::from_secs(180), || {
        stats_count(&hub, "completed") == TASKS as u64
    });
    let logs: Vec<WorkerLog> = workers.into_iter().map(Worker::stop).collect();
    assert!(
        all_done,
        "only {} of {TASKS} tasks completed",
        stats_count(&hub, "completed")
    );

    let mut completions: HashMap<String, usize> = HashMap::new();
    for log in &logs {
        assert!(log.errors.is_empty(), "{}: {:?}", log.agent_id, log.errors);
        assert!(
            log.cancelled.is_empty(),
            "{}: {:?}",
            log.agent_id,
            log.cancelled
        );
        for task_id in &log.completed {
            *completions.entry(task_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        completions.len(),
        TASKS,
        "distinct tasks completed by workers"
    );
    assert!(
        completions.values().all(|&n| n == 1),
        "some task completed more than once"
    );

    let finished = list_all_tasks(&hub, "", 1000);
    assert_eq!(finished.len(), TASKS);
    for task in &finished {
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(count_events(task, "completed"), 1, "{task}");
    }
}

#[test]
fn completed_task_and_agent_tokens_survive_kill9() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "durable-agent", &["code"]);
    let mut agent = Agent::connect(&hub, "durable-agent", &token);
    let task_id = submit(&hub, json!({"description": "finish before the crash"}));
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.send(json!({"type": "task_accepted", "task_id": task_id, "generation": 1}));
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": 1, "result": {"answer": 42}, "tokens_used": 9}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "accepted"
    );
    // The ack is sent only after the change is durable.
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    drop(agent);

    hub.kill9();
    hub.start_again();

    let task = get_task(&hub, &task_id);
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], json!({"answer": 42}), "{task}");
    assert_eq!(task["tokens_used"], 9, "{task}");
    assert_eq!(count_events(&task, "completed"), 1, "{task}");

    // The agent token (issued before the crash) still works, with its capabilities.
    let (status, list) = hub.get_as("/api/tasks", Some(&token));
    assert_eq!(status, 200, "{list}");
    let mut agent = Agent::connect(&hub, "durable-agent", &token);
    agent.assert_alive();
    let (_, agents) = hub.get("/api/agents");
    let entry = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["agent_id"] == "durable-agent")
        .cloned()
        .expect("agent listed");
    assert_eq!(entry["capabilities"], json!(["code"]), "{entry}");
}

#[test]
fn task_assigned_before_kill9_is_held_for_its_agent_which_continues_it_after_reconnect() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "steady", &[]);
    let mut agent = Agent::connect(&hub, "steady", &token);
    let task_id = submit(&hub, json!({"description": "in flight during the crash"}));
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    let generation = assign["generation"].as_u64().expect("generation");
    agent.accept(&task_id, json!(generation));

    hub.kill9();
    drop(agent);
    hub.start_again();

    // PROTOCOL.md 1.6: the hub still holds the task for its agent.
    let held = get_task(&hub, &task_id);
    assert_eq!(held["status"], "assigned", "{held}");
    assert_eq!(held["assigned_to"], "steady", "{held}");
    assert_eq!(held["generation"], generation, "{held}");

    let mut agent = Agent::connect(&hub, "steady", &token);
    agent.send(json!({"type": "task_recovering", "task_id": task_id, "generation": generation}));
    let cont = agent.recv_type("task_continue", REPLY_TIMEOUT);
    assert_eq!(cont["generation"], generation, "{cont}");
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": generation}));
    assert_eq!(
        agent.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );
    let done = get_task(&hub, &task_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(count_events(&done, "completed"), 1, "{done}");
}

#[test]
fn agent_reconnecting_to_a_held_task_without_recovering_loses_it_after_the_acceptance_timeout() {
    let mut hub = Hub::start_with_config("acceptance_timeout_ms = 1000\nsweep_interval_ms = 100\n");
    let token = register_agent(&hub, "forgetful", &[]);
    let mut agent = Agent::connect(&hub, "forgetful", &token);
    let task_id = submit(&hub, json!({"description": "held across a crash"}));
    agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&task_id, json!(1));
    hub.kill9();
    drop(agent);
    hub.start_again();

    // PROTOCOL.md 1.6: the FSM starts `assigned` and the acceptance timer runs.
    let mut agent = Agent::connect(&hub, "forgetful", &token);
    let state = agent_state(&hub, "forgetful");
    assert_eq!(state["fsm_state"], "assigned", "{state}");
    assert_eq!(state["current_task_id"], task_id.as_str(), "{state}");
    let cancelled = agent.recv_type("task_cancelled", Duration::from_secs(10));
    assert_eq!(cancelled["task_id"], task_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["reason"], "acceptance_timeout", "{cancelled}");
    assert!(count_events(&get_task(&hub, &task_id), "reclaimed") >= 1);
}
