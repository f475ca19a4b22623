//! `Scheduler`: matches ready tasks to idle agents.
//!
//! A thin actor over `domain::matching::MatchIndex` (both sides indexed by
//! capability signature; after every event no idle agent and ready task it could
//! take are left unmatched). The actor adds what needs actors: the FSM addresses,
//! the assignment through the queue, and agents with an assignment in flight. A
//! periodic pass re-checks the index's invariant as a safety net only.
//!
//! Architecture invariant: the scheduler decides *who*; it never changes a task.
//! `TaskQueue` performs the assignment (and may refuse it if the task changed in the
//! meantime); the agent's `AgentFsm` is told the result.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::agents::fsm::{AgentFsm, Assigned, NothingAssigned};
use crate::domain::matching::{HoldId, Match, MatchIndex, Placement, TaskId};
use crate::queue::{Assign, TaskQueue};

pub(crate) struct Scheduler {
    queue: Addr<TaskQueue>,
    /// Ready tasks and idle agents (with their FSM's address).
    index: MatchIndex<Addr<AgentFsm>>,
    /// Agents with an assignment in flight; not offered anything else meanwhile.
    dispatching: HashSet<String>,
    sweep_every: Duration,
}

impl Scheduler {
    pub(crate) fn new(queue: Addr<TaskQueue>, sweep_every: Duration) -> Self {
        Scheduler {
            queue,
            index: MatchIndex::default(),
            dispatching: HashSet::new(),
            sweep_every,
        }
    }

    /// Hands the task to the agent through the queue, then tells the agent.
    fn dispatch(&mut self, matched: Match<Addr<AgentFsm>>, ctx: &mut Context<Self>) {
        let Match {
            task_id,
            agent_id,
            agent: fsm,
            standing,
        } = matched;
        self.dispatching.insert(agent_id.clone());
        let request = self.queue.send(Assign {
            task_id: task_id.clone(),
            agent_id: agent_id.clone(),
        });
        ctx.spawn(request.into_actor(self).map(move |result, act, _| {
            act.dispatching.remove(&agent_id);
            match result {
                Ok(Ok(assignment)) => fsm.do_send(Assigned {
                    assignment,
                    standing,
                }),
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

    /// Safety net: repair any (idle agent, ready task it covers) pair.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        for matched in self.index.repair() {
            tracing::warn!(task_id = %matched.task_id, agent_id = %matched.agent_id, "scheduler sweep repaired a missed match");
            self.dispatch(matched, ctx);
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
pub(crate) struct TaskReady {
    /// Shared with the queue's index: one copy of the id in memory.
    pub task_id: TaskId,
    pub seq: u64,
    pub priority: u8,
    /// Shared by every queued task that needs the same list.
    pub capabilities: Arc<[String]>,
    /// The agent whose attempt of this task just failed: served last.
    pub avoid: Option<String>,
    /// Its fairness group and holds (write scope group, concurrency key).
    pub placement: Placement,
}

impl Handler<TaskReady> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskReady, ctx: &mut Context<Self>) {
        self.ready(msg, ctx);
    }
}

/// Many ready tasks at once (what a start finds queued), in the order they
/// should be served, with how many this and the batches after it hold (room is
/// made for all of them at once).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct TasksReady {
    pub tasks: Vec<TaskReady>,
    pub coming: usize,
}

impl Handler<TasksReady> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TasksReady, ctx: &mut Context<Self>) {
        self.index.reserve_ready(msg.coming);
        for ready in msg.tasks {
            self.ready(ready, ctx);
        }
    }
}

impl Scheduler {
    fn ready(&mut self, msg: TaskReady, ctx: &mut Context<Self>) {
        let matched = self.index.task_ready_placed(
            msg.task_id,
            (msg.seq, msg.priority),
            &msg.capabilities,
            msg.placement,
            msg.avoid.as_deref(),
        );
        if let Some(matched) = matched {
            self.dispatch(matched, ctx);
        }
    }
}

/// Holds taken (`true`) and released by the queue, in order: a write scope a
/// running task or reservation holds, a concurrency key at its limit. With
/// `replace`, these are all the holds there are (a queue that reloaded).
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub(crate) struct Holds {
    pub changes: Vec<(HoldId, bool)>,
    pub replace: bool,
}

impl Handler<Holds> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Holds, ctx: &mut Context<Self>) {
        if msg.replace {
            let keep: std::collections::HashSet<&HoldId> = msg
                .changes
                .iter()
                .filter(|(_, held)| *held)
                .map(|(h, _)| h)
                .collect();
            for h in self.index.held() {
                if !keep.contains(&h) {
                    for matched in self.index.release(&h) {
                        self.dispatch(matched, ctx);
                    }
                }
            }
        }
        for (h, held) in msg.changes {
            if held {
                self.index.hold(h);
            } else {
                for matched in self.index.release(&h) {
                    self.dispatch(matched, ctx);
                }
            }
        }
    }
}

/// A queued task was cancelled: forget it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskUnready {
    pub task_id: String,
}

impl Handler<TaskUnready> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskUnready, _: &mut Context<Self>) {
        self.index.task_unready(&msg.task_id);
    }
}

/// An agent has a free slot and may be given a task (one at a time: it
/// offers itself again after each assignment while a slot is free).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AgentAvailable {
    pub agent_id: String,
    pub capabilities: Vec<String>,
    /// When a slot last freed; the longest idle agent is served first.
    pub idle_since: i64,
    /// Only its slot kept for standing-order runs is free.
    pub standing_only: bool,
    pub fsm: Addr<AgentFsm>,
}

impl Handler<AgentAvailable> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentAvailable, ctx: &mut Context<Self>) {
        if self.dispatching.contains(&msg.agent_id) {
            // The in-flight assignment answers the agent either way.
            return;
        }
        let matched = self.index.agent_free(
            msg.agent_id,
            msg.idle_since,
            msg.capabilities,
            msg.standing_only,
            msg.fsm,
        );
        if let Some(matched) = matched {
            self.dispatch(matched, ctx);
        }
    }
}

/// An agent has no free slot any more (offline, busy, throttled, paused...).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AgentUnavailable {
    pub agent_id: String,
}

impl Handler<AgentUnavailable> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentUnavailable, _: &mut Context<Self>) {
        self.index.agent_busy(&msg.agent_id);
    }
}
