//! Messages from the agent side: the scheduler's assignments, the FSMs' reports
//! and reclaims.
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`Assign`] | `Scheduler` | the `task_assign` payload, after the flush |
//! | [`AgentReport`] | `AgentFsm` (a lifecycle frame) | [`ReportReply`], after the flush |
//! | [`Reclaim`] | `AgentFsm` (disconnect, acceptance timeout) | the reclaim's outcome |
//! | [`HeldBy`] | `AgentFsm`, `Presence` | the tasks an agent holds |

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::domain::task::{
    Ask, BlockReport, FailReport, HeldCompletion, Merge, ReclaimOutcome, ReportKind, Task,
    TaskError, TaskStatus,
};
use crate::ops::analytics::{Count, Counter};
use crate::protocol::{Spend, TaskAssignment, TaskSpec};
use crate::queue::{QueueError, TaskQueue};

/// The scheduler's decision: give this queued task to this agent.
#[derive(Message)]
#[rtype(result = "Result<TaskAssignment, QueueError>")]
pub(crate) struct Assign {
    pub task_id: String,
    pub agent_id: String,
}

impl Handler<Assign> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<TaskAssignment, QueueError>>;

    fn handle(&mut self, msg: Assign, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let now = crate::util::now_ms();
            // Matched before the scheduler heard of a hold (two conflicting
            // tasks at once, a key that just reached its limit): the task goes
            // back under its hold.
            if let Some(why) = this.start_refused(&msg.task_id, now) {
                let refused = this.refuse_start(&msg.task_id, why, now);
                return this.after_flush(Err(refused));
            }
            let mut result = this
                .with_task(&msg.task_id, "hub", |t, now| t.assign(&msg.agent_id, now))
                .map(|(a, _)| a);
            if let Ok(assignment) = &mut result {
                if let Err(e) = this.add_inputs(assignment) {
                    // The agent can still read them by id.
                    tracing::error!(task_id = %msg.task_id, error = %e, "inputs unreadable");
                }
            }
            if result.is_ok() {
                let key = this
                    .index
                    .whole(&msg.task_id)
                    .and_then(|t| t.concurrency_key.clone());
                this.start_running_parts(&msg.task_id, &msg.agent_id, key.as_deref());
                tracing::info!(task_id = %msg.task_id, agent_id = %msg.agent_id, "task assigned");
            }
            this.after_flush(result)
        })
    }
}

/// A lifecycle report from an agent, already validated.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    Accept {
        generation: Option<u64>,
    },
    Progress {
        generation: Option<u64>,
        progress: Option<u64>,
        message: Option<String>,
        /// The attempt's running total of spend (ext), when reported.
        spend: Option<Spend>,
    },
    Complete {
        generation: u64,
        result: Option<Map<String, Value>>,
        tokens_used: Option<u64>,
        cost_usd: Option<f64>,
        /// Validated follow-up task specs, created with the completion.
        follow_ups: Vec<TaskSpec>,
    },
    Fail {
        generation: u64,
        report: FailReport,
    },
    Reject {
        generation: Option<u64>,
        reason: Option<String>,
    },
    /// The agent's provider refuses work for now (its group is paused).
    UsageLimited {
        generation: Option<u64>,
        reason: Option<String>,
    },
    Block {
        generation: u64,
        reason: String,
        needs: Option<String>,
    },
    /// `task_recovering` and `state_report`: does the agent still hold the task?
    Recover {
        generation: Option<u64>,
    },
    /// `wake_result`; a success renews the lease.
    Wake {
        success: bool,
    },
    /// `task_input_required`: the holder asks and waits (ext).
    Ask {
        generation: u64,
        ask: Ask,
    },
    /// `task_merged`: the holder merged the approved pull request, or could
    /// not (ext).
    Merged {
        generation: u64,
        outcome: Merge,
    },
}

/// A `task_complete`, validated.
struct Completion {
    generation: u64,
    result: Option<Map<String, Value>>,
    tokens_used: Option<u64>,
    /// The attempt's final running total of spend, when reported.
    spend: Option<Spend>,
    follow_ups: Vec<TaskSpec>,
}

/// What a report achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportReply {
    /// Send `task_ack` with this status.
    Ack(String),
    /// `task_accepted` took: the agent works on the task at this generation.
    Accepted(u64),
    /// The agent holds the task at this generation.
    Holds(u64),
    /// The agent does not hold the task (`unknown`: the hub has no such
    /// task at all).
    NotHeld { unknown: bool },
    /// Recorded; nothing to answer.
    Noted,
}

#[derive(Message)]
#[rtype(result = "Result<ReportReply, QueueError>")]
pub(crate) struct AgentReport {
    pub agent_id: String,
    /// The agent's credential group (its spend counts toward the group's
    /// daily budget).
    pub group: String,
    pub task_id: String,
    pub report: Report,
}

/// Runs a report and tells whether it changed the task (a repeat of an accepted
/// report is acknowledged again but changes neither status nor generation).
fn fresh<R>(
    task: &mut Task,
    report: impl FnOnce(&mut Task) -> Result<R, TaskError>,
) -> Result<(R, bool), TaskError> {
    let before = (task.status, task.generation);
    let out = report(task)?;
    Ok((out, (task.status, task.generation) != before))
}

impl Handler<AgentReport> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<ReportReply, QueueError>>;

    fn handle(&mut self, msg: AgentReport, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let AgentReport {
                agent_id: agent,
                group,
                task_id,
                report,
            } = msg;
            let result = match report {
                // Neither changes the task: answered at once, no flush to wait for.
                Report::Recover { generation } => {
                    let reply = this.recover(&agent, &task_id, generation);
                    if matches!(reply, ReportReply::Holds(_)) {
                        this.answer_again(&agent, &task_id);
                    }
                    return Box::pin(fut::ready(Ok(reply)));
                }
                Report::Wake { success } => {
                    this.woken(&agent, &task_id, success);
                    return Box::pin(fut::ready(Ok(ReportReply::Noted)));
                }
                Report::Progress {
                    generation,
                    progress,
                    message,
                    spend,
                } => {
                    let r = this.with_task(&task_id, &agent, |t, now| {
                        t.progress(&agent, generation, progress, message, now)?;
                        match spend {
                            Some(s) => t.report_spend(&agent, generation, s),
                            None => Ok(Spend::default()),
                        }
                    });
                    let r = r.and_then(|(delta, _)| {
                        this.renew(&task_id, false);
                        match spend {
                            Some(_) => this.spend_reported((&agent, &group), &task_id, delta),
                            None => Ok(()),
                        }
                    });
                    // Not acknowledged to the agent, but its event (the task's
                    // latest progress, for the dashboard) goes out after the
                    // flush like every other.
                    r.map(|_| ReportReply::Noted)
                }
                Report::Accept { generation } => this
                    .with_task(&task_id, &agent, |t, now| t.accept(&agent, generation, now))
                    .map(|(_, task)| {
                        this.renew(&task_id, true);
                        ReportReply::Accepted(task.generation)
                    }),
                Report::Complete {
                    generation,
                    result,
                    tokens_used,
                    cost_usd,
                    follow_ups,
                } => {
                    let spend = (tokens_used.is_some() || cost_usd.is_some()).then(|| Spend {
                        tokens: tokens_used.unwrap_or(0),
                        cost_usd: cost_usd.unwrap_or(0.0),
                    });
                    let completion = Completion {
                        generation,
                        result,
                        tokens_used,
                        spend,
                        follow_ups,
                    };
                    this.complete((&agent, &group), &task_id, completion)
                }
                Report::Fail { generation, report } => {
                    let backoff = this.policy.backoff;
                    let jitter: f64 = rand::random();
                    this.with_task(&task_id, &agent, |t, now| {
                        fresh(t, |t| t.fail(&agent, generation, report, backoff, jitter, now))
                    })
                    .map(|((ack, fresh), task)| {
                        if fresh {
                            this.count(&agent, Counter::TasksFailed, task.updated_at);
                        }
                        ReportReply::Ack(ack)
                    })
                }
                Report::Reject { generation, reason } => this
                    .with_task(&task_id, &agent, |t, now| {
                        t.reject(&agent, generation, reason, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack)),
                Report::Ask { generation, ask } => this
                    .with_task(&task_id, &agent, |t, now| t.ask(&agent, generation, ask, now))
                    .map(|(q, _)| {
                        if let Some(at) = q.timeout_at {
                            this.timers.set(at, &task_id);
                        }
                        ReportReply::Ack("input_required".into())
                    }),
                Report::Merged {
                    generation,
                    outcome,
                } => this.report_merged(&agent, &task_id, generation, outcome),
                Report::UsageLimited { generation, reason } => this
                    .with_task(&task_id, &agent, |t, now| {
                        t.give_back(&agent, generation, reason, ReportKind::UsageLimited, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack)),
                Report::Block {
                    generation,
                    reason,
                    needs,
                } => {
                    let (policy, delay) = (
                        this.policy.blocked_policy,
                        this.policy.blocked_requeue_ms,
                    );
                    this.with_task(&task_id, &agent, |t, now| {
                        let report = BlockReport {
                            agent: &agent,
                            generation,
                            reason,
                            needs,
                        };
                        t.block(report, policy, delay, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack))
                }
            };
            if let Ok(ReportReply::Ack(status)) = &result {
                tracing::info!(task_id = %task_id, agent_id = %agent, status = %status, "task report accepted");
            }
            this.after_flush(result)
        })
    }
}

impl TaskQueue {
    /// `task_recovering` / `state_report`: whether `agent` holds the task (at
    /// `generation`, when given); holding it renews the lease.
    fn recover(&mut self, agent: &str, task_id: &str, generation: Option<u64>) -> ReportReply {
        let holds = self
            .index
            .leases
            .get(task_id)
            .filter(|l| l.agent_id == agent && generation.is_none_or(|g| g == l.generation))
            .map(|l| l.generation);
        match holds {
            Some(g) => {
                self.renew(task_id, true);
                ReportReply::Holds(g)
            }
            None => ReportReply::NotHeld {
                unknown: self.index.whole(task_id).is_none(),
            },
        }
    }

    /// `wake_result`: a success from the holder renews the lease.
    fn woken(&mut self, agent: &str, task_id: &str, success: bool) {
        let held = self
            .index
            .leases
            .get(task_id)
            .is_some_and(|l| l.agent_id == agent);
        if success && held {
            self.renew(task_id, false);
        }
    }

    /// `task_complete`: the follow-ups first, then the completion (with the
    /// attempt's final spend, in the same write). A completion that needs
    /// approval is held instead (the follow-ups wait with it).
    fn complete(
        &mut self,
        who: (&str, &str),
        task_id: &str,
        c: Completion,
    ) -> Result<ReportReply, QueueError> {
        let agent = who.0;
        let generation = c.generation;
        let reasons = self
            .index
            .whole(task_id)
            .filter(|t| t.generation == generation && t.assigned_to.as_deref() == Some(agent))
            .map(|t| match t.status {
                TaskStatus::Assigned => self.approvals.reasons(t, c.result.as_ref()),
                // A repeat of a held completion.
                TaskStatus::InputRequired if t.pending_approval().is_some() => {
                    vec![String::new()]
                }
                _ => Vec::new(),
            })
            .unwrap_or_default();
        // The attempt's last running total; not for a repeat (no longer held).
        let spend = c.spend;
        let caps = spend
            .and_then(|_| self.index.whole(task_id))
            .map(|t| t.needed_capabilities.clone())
            .unwrap_or_default();
        let spent = move |t: &mut Task| match spend.filter(|_| t.is_held()) {
            Some(s) => t
                .report_spend(agent, Some(generation), s)
                .unwrap_or_default(),
            None => Spend::default(),
        };
        let (ack, delta) = if !reasons.is_empty() {
            let held = HeldCompletion {
                result: c.result,
                tokens_used: c.tokens_used,
                follow_ups: c.follow_ups,
            };
            let ((ack, delta), _) = self.with_task(task_id, agent, |t, now| {
                let delta = spent(t);
                Ok((
                    t.hold_completion(agent, generation, held, reasons, now)?,
                    delta,
                ))
            })?;
            (ack, delta)
        } else {
            self.create_follow_ups(task_id, agent, generation, c.follow_ups)?;
            let (result, tokens_used) = (c.result, c.tokens_used);
            let (((ack, fresh), delta), task) = self.with_task(task_id, agent, |t, now| {
                let delta = spent(t);
                Ok((
                    fresh(t, |t| {
                        t.complete(agent, generation, result, tokens_used, now)
                    })?,
                    delta,
                ))
            })?;
            if fresh {
                self.count(agent, Counter::TasksCompleted, task.updated_at);
            }
            (ack, delta)
        };
        if !delta.is_zero() {
            self.ledger(crate::util::now_ms(), who, &caps, delta)?;
        }
        Ok(ReportReply::Ack(ack))
    }

    /// An analytics count, released with the change it counts.
    pub(in crate::queue) fn count(&mut self, agent: &str, counter: Counter, at: i64) {
        self.outbox.counts.push(Count {
            agent_id: agent.to_string(),
            counter,
            at,
        });
    }
}

/// Take a task back from an agent that lost it (disconnect, acceptance timeout).
#[derive(Message)]
#[rtype(result = "Result<ReclaimOutcome, QueueError>")]
pub(crate) struct Reclaim {
    pub task_id: String,
    pub agent_id: String,
    pub generation: u64,
    pub reason: String,
}

impl Handler<Reclaim> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<ReclaimOutcome, QueueError>>;

    fn handle(&mut self, msg: Reclaim, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this
                .with_task(&msg.task_id, "hub", |t, now| {
                    t.reclaim(&msg.agent_id, msg.generation, &msg.reason, now)
                })
                .map(|(outcome, _)| {
                    tracing::warn!(task_id = %msg.task_id, agent_id = %msg.agent_id,
                                   reason = %msg.reason, "task reclaimed");
                    outcome
                });
            this.after_flush(result)
        })
    }
}

/// A task an agent holds, as seen by the queue.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub task_id: String,
    pub generation: u64,
    /// A standing-order run.
    pub standing: bool,
}

/// Which tasks are assigned to this agent (oldest first)?
#[derive(Message)]
#[rtype(result = "Vec<Held>")]
pub(crate) struct HeldBy {
    pub agent_id: String,
}

impl Handler<HeldBy> for TaskQueue {
    type Result = MessageResult<HeldBy>;

    fn handle(&mut self, msg: HeldBy, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut held: Vec<(u64, Held)> = this
                .index
                .leases
                .iter()
                .filter(|(_, l)| l.agent_id == msg.agent_id)
                .map(|(id, l)| {
                    let seq = this.index.ids.get(id.as_str()).copied().unwrap_or(u64::MAX);
                    (
                        seq,
                        Held {
                            task_id: id.clone(),
                            generation: l.generation,
                            standing: this.index.whole(id).is_some_and(|t| t.is_standing_run()),
                        },
                    )
                })
                .collect();
            held.sort_by_key(|(seq, _)| *seq);
            MessageResult(held.into_iter().map(|(_, h)| h).collect())
        })
    }
}
