//! `Scheduler`: matches ready tasks to idle agents.
//!
//! Both sides are indexed by capability signature (the sorted list of capabilities
//! a task needs):
//! - `ready[sig]`: queued tasks ordered by (priority, sequence);
//! - `idle[sig]`: idle agents able to serve `sig`, ordered by how long they have
//!   been idle (longest first).
//!
//! After every event the index holds no pair of an idle agent and a ready task it
//! could take. A new task costs O(log n) (look at `idle[sig]`); a newly idle agent
//! costs O(signatures × log n) (look at the head of every `ready[sig]` it covers).
//! Nothing scans all tasks or all agents. A periodic pass re-checks the same
//! invariant as a safety net only.
//!
//! Architecture invariant: the scheduler decides *who*; it never changes a task.
//! `TaskQueue` performs the assignment (and may refuse it if the task changed in the
//! meantime); the agent's `AgentFsm` is told the result.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::agents::fsm::{AgentFsm, Assigned, NothingAssigned};
use crate::queue::{Assign, TaskQueue};

/// A capability signature: sorted, without repeats.
type Sig = Arc<[String]>;

/// Ordering key of a ready task.
type TaskKey = (u8, u64, String);
/// Ordering key of an idle agent: idle since (ms), then id.
type IdleKey = (i64, String);

struct IdleAgent {
    since: i64,
    capabilities: HashSet<String>,
    fsm: Addr<AgentFsm>,
}

pub struct Scheduler {
    queue: Addr<TaskQueue>,
    ready: HashMap<Sig, BTreeSet<TaskKey>>,
    /// task id → (signature, key), to remove a ready task by id.
    ready_index: HashMap<String, (Sig, TaskKey)>,
    idle: HashMap<Sig, BTreeSet<IdleKey>>,
    agents: HashMap<String, IdleAgent>,
    /// Agents with an assignment in flight; not offered anything else meanwhile.
    dispatching: HashSet<String>,
    sweep_every: Duration,
}

impl Scheduler {
    pub fn new(queue: Addr<TaskQueue>, sweep_every: Duration) -> Self {
        Scheduler {
            queue,
            ready: HashMap::new(),
            ready_index: HashMap::new(),
            idle: HashMap::new(),
            agents: HashMap::new(),
            dispatching: HashSet::new(),
            sweep_every,
        }
    }

    fn covers(caps: &HashSet<String>, sig: &[String]) -> bool {
        sig.iter().all(|c| caps.contains(c))
    }

    /// The idle set for `sig`, built from the idle agents the first time `sig` is seen.
    fn idle_for(&mut self, sig: &Sig) -> &mut BTreeSet<IdleKey> {
        let agents = &self.agents;
        self.idle.entry(sig.clone()).or_insert_with(|| {
            agents
                .iter()
                .filter(|(_, a)| Self::covers(&a.capabilities, sig))
                .map(|(id, a)| (a.since, id.clone()))
                .collect()
        })
    }

    fn remove_idle(&mut self, agent_id: &str) -> Option<IdleAgent> {
        let agent = self.agents.remove(agent_id)?;
        let key = (agent.since, agent_id.to_string());
        for set in self.idle.values_mut() {
            set.remove(&key);
        }
        Some(agent)
    }

    fn remove_ready(&mut self, task_id: &str) -> Option<Sig> {
        let (sig, key) = self.ready_index.remove(task_id)?;
        if let Some(set) = self.ready.get_mut(&sig) {
            set.remove(&key);
            if set.is_empty() {
                self.ready.remove(&sig);
            }
        }
        Some(sig)
    }

    /// Hands `task_id` to `agent_id` through the queue, then tells the agent.
    fn dispatch(&mut self, task_id: String, agent_id: String, ctx: &mut Context<Self>) {
        let Some(agent) = self.remove_idle(&agent_id) else {
            return;
        };
        self.dispatching.insert(agent_id.clone());
        let fsm = agent.fsm.clone();
        let request = self.queue.send(Assign {
            task_id: task_id.clone(),
            agent_id: agent_id.clone(),
        });
        ctx.spawn(request.into_actor(self).map(move |result, act, _| {
            act.dispatching.remove(&agent_id);
            match result {
                Ok(Ok(assignment)) => fsm.do_send(Assigned(assignment)),
                Ok(Err(e)) => {
                    tracing::debug!(task_id = %task_id, agent_id = %agent_id,
                                    error = e.as_str(), "assignment refused");
                    fsm.do_send(NothingAssigned);
                }
                Err(e) => {
                    tracing::error!(task_id = %task_id, error = %e, "task queue unreachable");
                    fsm.do_send(NothingAssigned);
                }
            }
        }));
    }

    /// The best ready task the agent can take: lowest (priority, sequence) over the
    /// heads of every signature it covers.
    fn best_task_for(&self, caps: &HashSet<String>) -> Option<String> {
        self.ready
            .iter()
            .filter(|(sig, _)| Self::covers(caps, sig))
            .filter_map(|(_, set)| set.first())
            .min()
            .map(|(_, _, id)| id.clone())
    }

    fn match_agent(&mut self, agent_id: &str, ctx: &mut Context<Self>) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        if let Some(task_id) = self.best_task_for(&agent.capabilities) {
            self.remove_ready(&task_id);
            self.dispatch(task_id, agent_id.to_string(), ctx);
        }
    }

    /// Safety net: repair any (idle agent, ready task it covers) pair.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let sigs: Vec<Sig> = self.ready.keys().cloned().collect();
        for sig in sigs {
            while let Some((_, _, task_id)) = self.ready.get(&sig).and_then(|s| s.first()).cloned()
            {
                let Some((_, agent_id)) = self.idle_for(&sig).first().cloned() else {
                    break;
                };
                tracing::warn!(task_id = %task_id, agent_id = %agent_id, "scheduler sweep repaired a missed match");
                self.remove_ready(&task_id);
                self.dispatch(task_id, agent_id, ctx);
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.sweep_every, |act, ctx| act.sweep(ctx));
    }
}

/// A task became queued (new, requeued, retried, or loaded at start).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TaskReady {
    pub task_id: String,
    pub seq: u64,
    pub priority: u8,
    pub capabilities: Vec<String>,
}

impl Handler<TaskReady> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskReady, ctx: &mut Context<Self>) {
        if self.ready_index.contains_key(&msg.task_id) {
            return;
        }
        let sig: Sig = msg.capabilities.into();
        if let Some((_, agent_id)) = self.idle_for(&sig).first().cloned() {
            self.dispatch(msg.task_id, agent_id, ctx);
            return;
        }
        let key = (msg.priority, msg.seq, msg.task_id.clone());
        self.ready
            .entry(sig.clone())
            .or_default()
            .insert(key.clone());
        self.ready_index.insert(msg.task_id, (sig, key));
    }
}

/// A queued task was cancelled: forget it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TaskUnready {
    pub task_id: String,
}

impl Handler<TaskUnready> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskUnready, _: &mut Context<Self>) {
        self.remove_ready(&msg.task_id);
    }
}

/// An agent is idle and may be given a task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentAvailable {
    pub agent_id: String,
    pub capabilities: Vec<String>,
    /// When it became idle; the longest idle agent is served first.
    pub idle_since: i64,
    pub fsm: Addr<AgentFsm>,
}

impl Handler<AgentAvailable> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentAvailable, ctx: &mut Context<Self>) {
        if self.dispatching.contains(&msg.agent_id) {
            // The in-flight assignment answers the agent either way.
            return;
        }
        self.remove_idle(&msg.agent_id);
        let agent = IdleAgent {
            since: msg.idle_since,
            capabilities: msg.capabilities.into_iter().collect(),
            fsm: msg.fsm,
        };
        let key = (agent.since, msg.agent_id.clone());
        for (sig, set) in self.idle.iter_mut() {
            if Self::covers(&agent.capabilities, sig) {
                set.insert(key.clone());
            }
        }
        self.agents.insert(msg.agent_id.clone(), agent);
        self.match_agent(&msg.agent_id, ctx);
    }
}

/// An agent is no longer idle (offline, or busy by its own account).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentUnavailable {
    pub agent_id: String,
}

impl Handler<AgentUnavailable> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentUnavailable, _: &mut Context<Self>) {
        self.remove_idle(&msg.agent_id);
    }
}
