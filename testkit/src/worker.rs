//! `Worker`: an agent thread that accepts and completes everything it is given.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{Agent, Incoming};
use crate::fixtures::register_agent;
use crate::hub::Hub;
use crate::support::{lock_log, LoggedThread};

/// Global order of task_assign receipts across all workers of a test binary.
static RECEIPT_SEQ: AtomicUsize = AtomicUsize::new(0);

/// One assignment a worker received.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub task_id: String,
    pub generation: u64,
    pub priority: u64,
    pub assigned_at: u64,
    pub received: Instant,
    /// Position among all receipts in this test binary (cross-worker order).
    pub seq: usize,
}

/// What a worker did, for assertions.
#[derive(Debug, Clone, Default)]
pub struct WorkerLog {
    pub agent_id: String,
    pub assigned: Vec<Assignment>,
    /// Task ids whose completion the hub acknowledged (`task_ack` status complete).
    pub completed: Vec<String>,
    /// Every `task_ack` as (task_id, status).
    pub acks: Vec<(String, String)>,
    /// `error` frames received (there should be none).
    pub errors: Vec<Value>,
    /// `task_cancelled` frames received.
    pub cancelled: Vec<Value>,
    /// Set when the hub closed the socket.
    pub closed: Option<String>,
}

/// A thread running an identified [`Agent`]: it accepts every `task_assign` at
/// once and completes it after `work` with `result {"done_by": agent}` and
/// `tokens_used 10`.
pub struct Worker {
    pub agent_id: String,
    thread: LoggedThread<WorkerLog>,
}

/// Longest a worker thread lives if nobody stops it.
const WORKER_MAX_LIFETIME: Duration = Duration::from_secs(600);

impl Worker {
    /// Starts working on an already identified connection.
    pub fn start(mut agent: Agent, work: Duration) -> Worker {
        let agent_id = agent.agent_id.clone();
        let log = WorkerLog {
            agent_id: agent_id.clone(),
            ..WorkerLog::default()
        };
        let thread = LoggedThread::spawn(log, move |log2, stop2| {
            let born = Instant::now();
            // (task_id, generation, due)
            let mut in_hand: VecDeque<(String, u64, Instant)> = VecDeque::new();
            while !stop2.load(Ordering::SeqCst) && born.elapsed() < WORKER_MAX_LIFETIME {
                while let Some((task_id, generation, due)) = in_hand.front().cloned() {
                    if Instant::now() < due {
                        break;
                    }
                    in_hand.pop_front();
                    let agent_name = agent.agent_id.clone();
                    if agent
                        .try_send_text(
                            &json!({
                                "type": "task_complete",
                                "task_id": task_id,
                                "generation": generation,
                                "result": {"done_by": agent_name},
                                "tokens_used": 10
                            })
                            .to_string(),
                        )
                        .is_err()
                    {
                        break;
                    }
                }
                let wait = in_hand
                    .front()
                    .map(|(_, _, due)| due.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(100))
                    .clamp(Duration::from_millis(1), Duration::from_millis(100));
                match agent.recv_any(wait) {
                    Incoming::Timeout => {}
                    Incoming::Closed { code, reason } => {
                        lock_log(&log2).closed = Some(format!("{code:?} {reason}"));
                        return;
                    }
                    Incoming::Frame(v) => match v["type"].as_str().unwrap_or_default() {
                        "task_assign" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                            let generation = v["generation"].as_u64().unwrap_or_default();
                            lock_log(&log2).assigned.push(Assignment {
                                task_id: task_id.clone(),
                                generation,
                                priority: v["priority"].as_u64().unwrap_or(99),
                                assigned_at: v["assigned_at"].as_u64().unwrap_or_default(),
                                received: Instant::now(),
                                seq: RECEIPT_SEQ.fetch_add(1, Ordering::SeqCst),
                            });
                            let _ = agent.try_send_text(
                                &json!({
                                    "type": "task_accepted",
                                    "task_id": task_id,
                                    "generation": generation
                                })
                                .to_string(),
                            );
                            in_hand.push_back((task_id, generation, Instant::now() + work));
                        }
                        "task_ack" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                            let status = v["status"].as_str().unwrap_or_default().to_string();
                            let mut log = lock_log(&log2);
                            if status == "complete" {
                                log.completed.push(task_id.clone());
                            }
                            log.acks.push((task_id, status));
                        }
                        "task_cancelled" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default();
                            in_hand.retain(|(t, _, _)| t != task_id);
                            lock_log(&log2).cancelled.push(v);
                        }
                        "error" => lock_log(&log2).errors.push(v),
                        _ => {}
                    },
                }
            }
        });
        Worker { agent_id, thread }
    }

    /// Registers `agent_id`, connects, identifies and starts working.
    pub fn spawn(hub: &Hub, agent_id: &str, work: Duration) -> Worker {
        let token = register_agent(hub, agent_id, &[]);
        Worker::start(Agent::connect(hub, agent_id, &token), work)
    }

    /// A copy of what the worker did so far.
    pub fn log(&self) -> WorkerLog {
        self.thread.log()
    }

    /// Stops the thread (the socket is dropped) and returns the final log.
    pub fn stop(self) -> WorkerLog {
        self.thread.stop()
    }
}
