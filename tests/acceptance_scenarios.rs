//! The original AgentCom acceptance scenarios, against the real hub.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Issue 2, test 8 (first scenario).
#[test]
fn two_agents_complete_ten_tasks_each_assigned_within_five_seconds_and_both_used() {
    let hub = Hub::start();
    let workers = [
        Worker::spawn(&hub, "alpha", Duration::from_millis(20)),
        Worker::spawn(&hub, "beta", Duration::from_millis(20)),
    ];
    let mut submitted_at = HashMap::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let before = Instant::now();
        let id = submit(&hub, json!({"description": format!("scenario task {i}")}));
        submitted_at.insert(id.clone(), before);
        ids.push(id);
    }
    let all_done = wait_for(Duration::from_secs(30), || {
        stats_count(&hub, "completed") == 10
    });
    let [w1, w2] = workers;
    let logs = [w1.stop(), w2.stop()];
    assert!(all_done, "completed: {}", stats_count(&hub, "completed"));

    let mut completed = HashSet::new();
    for log in &logs {
        assert!(log.errors.is_empty(), "{log:?}");
        assert!(!log.completed.is_empty(), "agent {} unused", log.agent_id);
        for a in &log.assigned {
            let submitted = submitted_at[&a.task_id];
            let delay = a.received.saturating_duration_since(submitted);
            assert!(
                delay < Duration::from_secs(5),
                "{} assigned {delay:?} after submit",
                a.task_id
            );
        }
        for id in &log.completed {
            assert!(completed.insert(id.clone()), "{id} completed twice");
        }
    }
    assert_eq!(completed, ids.iter().cloned().collect::<HashSet<_>>());
    for id in &ids {
        let task = get_task(&hub, id);
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(count_events(&task, "completed"), 1, "{task}");
    }
}

/// Issue 2, test 8 (second scenario).
#[test]
fn agent_killed_mid_task_leaves_the_task_to_the_other_agent_with_one_completed_entry() {
    let hub = Hub::start();
    let token = register_agent(&hub, "doomed", &[]);
    let mut doomed = Agent::connect(&hub, "doomed", &token);
    let task_id = submit(&hub, json!({"description": "interrupted work"}));
    let assign = doomed.recv_type("task_assign", PUSH_TIMEOUT);
    doomed.accept(&task_id, json!(assign["generation"]));
    doomed.send(json!({"type": "task_progress", "task_id": task_id, "progress": 40}));

    let survivor = Worker::spawn(&hub, "survivor", Duration::from_millis(20));
    // The doomed agent's process dies mid-task: its socket just goes away.
    drop(doomed);

    assert!(
        wait_for(Duration::from_secs(10), || get_task(&hub, &task_id)
            ["status"]
            == "completed"),
        "{}",
        get_task(&hub, &task_id)
    );
    let log = survivor.stop();
    assert!(log.errors.is_empty(), "{log:?}");
    assert_eq!(log.completed, vec![task_id.clone()], "{log:?}");
    let task = get_task(&hub, &task_id);
    assert_eq!(task["assigned_to"], "survivor", "{task}");
    assert_eq!(count_events(&task, "completed"), 1, "{task}");
    assert_eq!(count_events(&task, "reclaimed"), 1, "{task}");
    assert_eq!(task["retry_count"], 0, "{task}");
}

/// Issue 2, test 8 (third scenario).
#[test]
fn four_agents_share_twenty_mixed_priority_tasks_evenly_urgent_first_and_nothing_starves() {
    let hub = Hub::start();
    // Submitted lowest priority first, so plain FIFO would get the order wrong.
    let lanes = ["low", "normal", "high", "urgent"];
    let mut priority_of = HashMap::new();
    for round in 0..5 {
        for (lane_index, lane) in lanes.iter().enumerate() {
            let id = submit(
                &hub,
                json!({"description": format!("{lane} {round}"), "priority": lane}),
            );
            priority_of.insert(id, 3 - lane_index as u64);
        }
    }
    // The agents connect after the queue is full; every task takes them 100 ms.
    let workers: Vec<Worker> = (0..4)
        .map(|i| Worker::spawn(&hub, &format!("agent-{i}"), Duration::from_millis(100)))
        .collect();
    let all_done = wait_for(Duration::from_secs(60), || {
        stats_count(&hub, "completed") == 20
    });
    let logs: Vec<WorkerLog> = workers.into_iter().map(Worker::stop).collect();
    assert!(
        all_done,
        "nothing may starve; completed {}",
        stats_count(&hub, "completed")
    );

    let mut assignments = Vec::new();
    for log in &logs {
        assert!(log.errors.is_empty(), "{log:?}");
        let n = log.completed.len();
        assert!(
            (3..=7).contains(&n),
            "{} completed {n} tasks; per agent: {:?}",
            log.agent_id,
            logs.iter().map(|l| l.completed.len()).collect::<Vec<_>>()
        );
        assignments.extend(log.assigned.iter().cloned());
    }
    assert_eq!(assignments.len(), 20, "each task assigned once");
    for a in &assignments {
        assert_eq!(a.priority, priority_of[&a.task_id], "{a:?}");
    }
    // Order of assignment by receipt across all agents.
    assignments.sort_by_key(|a| a.seq);
    let mean_position = |priority: u64| {
        let positions: Vec<usize> = assignments
            .iter()
            .enumerate()
            .filter(|(_, a)| a.priority == priority)
            .map(|(i, _)| i)
            .collect();
        positions.iter().sum::<usize>() as f64 / positions.len() as f64
    };
    let (urgent, high, normal, low) = (
        mean_position(0),
        mean_position(1),
        mean_position(2),
        mean_position(3),
    );
    assert!(
        urgent < low,
        "urgent tasks assigned before low ones on average: urgent {urgent}, high {high}, normal {normal}, low {low}"
    );
    assert!(
        urgent < normal && high < low,
        "{urgent} {high} {normal} {low}"
    );
    for id in priority_of.keys() {
        assert_eq!(count_events(&get_task(&hub, id), "completed"), 1);
    }
}
