//! Scheduler routing: capabilities, head-of-line blocking, priority order.

mod common;

use common::*;
use serde_json::{json, Value};

fn accept_and_complete(agent: &mut Agent, assign: &Value) {
    let task_id = assign["task_id"].as_str().expect("task_id");
    let generation = assign["generation"].as_u64().expect("generation");
    agent.send(json!({"type": "task_accepted", "task_id": task_id, "generation": generation}));
    assert_eq!(agent.recv_ack(task_id, REPLY_TIMEOUT)["status"], "accepted");
    agent.send(json!({"type": "task_complete", "task_id": task_id, "generation": generation}));
    assert_eq!(agent.recv_ack(task_id, REPLY_TIMEOUT)["status"], "complete");
}

/// Issue 2, test 2.
#[test]
fn task_needing_code_goes_only_to_the_capable_agent_and_untakeable_task_does_not_block_the_queue() {
    let hub = Hub::start();
    let t_general = register_agent(&hub, "generalist", &[]);
    let t_coder = register_agent(&hub, "coder", &[]);
    let t_gpu = register_agent(&hub, "gpu-box", &["gpu"]);
    // The generalist connects first, so it is the longest-idle agent.
    let mut general = Agent::connect(&hub, "generalist", &t_general);
    let mut coder = Agent::connect_with_caps(&hub, "coder", &t_coder, &["code"]);

    // 1. A code task goes to the coder although the generalist idles longer.
    let code1 = submit(
        &hub,
        json!({"description": "code 1", "needed_capabilities": ["code"]}),
    );
    let assign = coder.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], code1.as_str(), "{assign}");
    assert_eq!(assign["needed_capabilities"], json!(["code"]), "{assign}");
    assert_eq!(get_task(&hub, &code1)["assigned_to"], "coder");

    // 2. While the coder is busy, a second code task waits for it; the plain task
    //    submitted behind it goes to the generalist.
    let code2 = submit(
        &hub,
        json!({"description": "code 2", "needed_capabilities": ["code"]}),
    );
    let plain1 = submit(&hub, json!({"description": "plain 1"}));
    let assign = general.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(
        assign["task_id"],
        plain1.as_str(),
        "the generalist must get the plain task, never the code task: {assign}"
    );
    let waiting = get_task(&hub, &code2);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert!(waiting["assigned_to"].is_null(), "{waiting}");

    // The coder finishes and picks up the waiting code task.
    accept_and_complete(&mut coder, &json!({"task_id": code1, "generation": 1}));
    let assign = coder.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], code2.as_str(), "{assign}");
    accept_and_complete(&mut general, &json!({"task_id": plain1, "generation": 1}));

    // 3. A task nobody connected can take does not block the task behind it.
    let gpu_task = submit(
        &hub,
        json!({"description": "render", "needed_capabilities": ["gpu"]}),
    );
    let plain2 = submit(&hub, json!({"description": "plain 2"}));
    let assign = general.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], plain2.as_str(), "{assign}");
    let stuck = get_task(&hub, &gpu_task);
    assert_eq!(stuck["status"], "queued", "{stuck}");

    // 4. An agent with the capability (from its token) takes it once it connects.
    let mut gpu = Agent::connect(&hub, "gpu-box", &t_gpu);
    let assign = gpu.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], gpu_task.as_str(), "{assign}");
    assert_eq!(get_task(&hub, &gpu_task)["assigned_to"], "gpu-box");

    let (status, agents) = hub.get("/api/agents");
    assert_eq!(status, 200, "{agents}");
    let gpu_entry = agents["agents"]
        .as_array()
        .expect("agents array")
        .iter()
        .find(|a| a["agent_id"] == "gpu-box")
        .cloned()
        .expect("gpu-box listed");
    assert_eq!(gpu_entry["capabilities"], json!(["gpu"]), "{gpu_entry}");

    let coder_tasks: Vec<String> = list_all_tasks(&hub, "assigned_to=coder", 100)
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        coder_tasks,
        [code1.clone(), code2.clone()],
        "assigned_to filter"
    );

    // Neither the generalist nor the coder saw any task meant for others.
    for agent in [&general, &coder] {
        assert!(
            agent.kept().iter().all(|f| f["type"] != "task_assign"),
            "{}: unexpected assignments {:?}",
            agent.agent_id,
            agent.kept()
        );
    }
}

#[test]
fn task_needing_two_capabilities_skips_an_agent_with_only_one() {
    let hub = Hub::start();
    let t_one = register_agent(&hub, "one-cap", &["code"]);
    let t_both = register_agent(&hub, "two-caps", &["code", "gpu"]);
    let mut one = Agent::connect(&hub, "one-cap", &t_one);
    let task = submit(
        &hub,
        json!({"description": "cuda kernel", "needed_capabilities": ["gpu", "code"]}),
    );
    let plain = submit(&hub, json!({"description": "plain"}));
    let assign = one.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], plain.as_str(), "{assign}");
    let mut both = Agent::connect(&hub, "two-caps", &t_both);
    let assign = both.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task.as_str(), "{assign}");
    assert_eq!(
        assign["needed_capabilities"],
        json!(["code", "gpu"]),
        "{assign}"
    );
}

#[test]
fn urgent_task_is_assigned_before_earlier_lower_priority_tasks() {
    let hub = Hub::start();
    let low1 = submit(&hub, json!({"description": "low 1", "priority": "low"}));
    let low2 = submit(&hub, json!({"description": "low 2", "priority": 3}));
    let normal = submit(&hub, json!({"description": "normal", "priority": "normal"}));
    let urgent = submit(
        &hub,
        json!({"description": "urgent", "priority": "critical"}),
    );
    let token = register_agent(&hub, "solo", &[]);
    let mut agent = Agent::connect(&hub, "solo", &token);
    let mut order = Vec::new();
    for _ in 0..4 {
        let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
        order.push(assign["task_id"].as_str().expect("task_id").to_string());
        accept_and_complete(&mut agent, &assign);
    }
    assert_eq!(
        order,
        [urgent, normal, low1, low2],
        "priority first, then FIFO"
    );
}
