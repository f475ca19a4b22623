//! Questions of holders (ext, PROTOCOL.md 6.26), as the queue keeps them:
//!
//! | message | from | does |
//! |---|---|---|
//! | `AnswerTask` | operators (HTTP, CLI, MCP, dashboard) | answers the waiting question; the holder works on |
//! | `DecideApproval` | operators | approves or rejects the approval a task waits for (`approvals.rs`) |
//! | `Questions` | readers | the tasks waiting for an answer or an approval |
//!
//! The answer reaches the holder as `task_answer` once durable, and again
//! after each `task_recovering` of the task at that generation (the agent
//! matches answers by question id). A question whose `timeout_at` passes takes
//! its default, else its task is dead-lettered (`input_timeout`).

use actix::prelude::*;
use serde_json::Value;

use crate::agents::fsm::Withdrawn;
use crate::agents::presence::Deliver;
use crate::domain::task::{Question, TaskError, TaskStatus, TimedOut};
use crate::protocol::{ServerFrame, APPROVE, REJECT};
use crate::queue::entry::Entry;
use crate::queue::{QueueError, TaskQueue};

/// Answer the question a task waits on, as `by`.
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct AnswerTask {
    pub task_id: String,
    pub answer: String,
    pub by: String,
}

impl Handler<AnswerTask> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: AnswerTask, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            // An approval takes `approve` or `reject` as its answer too.
            let approval = this
                .index
                .whole(&msg.task_id)
                .is_some_and(|t| t.pending_approval().is_some());
            if let Some(refused) = this.not_an_answer(&msg.task_id) {
                return this.after_flush(Err(refused));
            }
            if approval {
                let approve = match msg.answer.as_str() {
                    APPROVE => true,
                    REJECT => false,
                    _ => return this.after_flush(Err(TaskError::InvalidAnswer.into())),
                };
                let result = this.decide(&msg.task_id, approve, None, &msg.by);
                return this.after_flush(result);
            }
            let result = this
                .with_task(&msg.task_id, &msg.by, |t, now| {
                    let q = t.answer(msg.answer, &msg.by, now)?;
                    Ok((q, t.assigned_to.clone(), t.view()))
                })
                .map(|((q, holder, view), _)| {
                    this.answered(&msg.task_id, holder.as_deref(), &q);
                    view
                });
            this.after_flush(result)
        })
    }
}

/// Approve or reject the approval a task waits for, as `by` (`note`: the
/// reason of a rejection).
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct DecideApproval {
    pub task_id: String,
    pub approve: bool,
    pub note: Option<String>,
    pub by: String,
}

impl Handler<DecideApproval> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: DecideApproval, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.decide(&msg.task_id, msg.approve, msg.note, &msg.by);
            this.after_flush(result)
        })
    }
}

/// Every task waiting for an answer, oldest question first.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub(crate) struct Questions;

impl Handler<Questions> for TaskQueue {
    type Result = MessageResult<Questions>;

    fn handle(&mut self, _: Questions, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, |this| {
            // Waiting tasks are kept whole: unheld ones (approval before
            // start) too, so the walk skips the compact queued entries.
            let mut waiting: Vec<(i64, Value)> = this
                .index
                .live
                .values()
                .filter_map(|e| match e {
                    Entry::Whole(t) if t.status == TaskStatus::InputRequired => Some(t),
                    _ => None,
                })
                .filter_map(|t| {
                    let q = t.question.as_ref()?;
                    Some((
                        q.asked_at,
                        serde_json::json!({
                            "task_id": t.id,
                            "description": t.description,
                            "assigned_to": t.assigned_to,
                            "priority": t.priority,
                            "kind": if q.approval.is_some() {
                                "approval"
                            } else if q.budget.is_some() {
                                "budget"
                            } else {
                                "question"
                            },
                            "question": q,
                        }),
                    ))
                })
                .collect();
            waiting.sort_by_key(|(at, _)| *at);
            MessageResult(waiting.into_iter().map(|(_, v)| v).collect())
        })
    }
}

impl TaskQueue {
    /// A question was answered: its holder's lease counts again from now, and
    /// the answer goes to it after the flush.
    pub(super) fn answered(&mut self, task_id: &str, holder: Option<&str>, q: &Question) {
        self.renew(task_id, true);
        if let Some(agent) = holder {
            self.outbox.pushes.push(answer_to(agent, task_id, q, false));
        }
    }

    /// After a `task_recovering` the holder answered: the answer to its
    /// question at this generation, again (it may have missed it).
    pub(super) fn answer_again(&self, agent: &str, task_id: &str) {
        let Some(task) = self.index.whole(task_id) else {
            return;
        };
        // Not after a merge: the holder reported it, so it had the answer.
        let due = task.question.as_ref().filter(|q| {
            q.answer.is_some()
                && q.generation == task.generation
                && task.status.is_held()
                && q.approval.as_ref().is_none_or(|a| a.merge.is_none())
        });
        if let Some(q) = due {
            let merge = self.merge_asked(task, q);
            self.peers
                .presence
                .do_send(answer_to(agent, task_id, q, merge));
        }
    }

    /// A due timer of a task waiting for an answer: its question times out.
    pub(in crate::queue) fn question_due(&mut self, task_id: &str) {
        let holder = self.index.leases.get(task_id).cloned();
        match self.with_task(task_id, "hub", |t, now| t.question_timed_out(now)) {
            Ok((TimedOut::Defaulted(q), _)) => {
                tracing::info!(task_id, "question timed out: its default answers it");
                let agent = holder.map(|l| l.agent_id);
                self.answered(task_id, agent.as_deref(), &q);
            }
            Ok((TimedOut::Failed, _)) => {
                tracing::warn!(task_id, "question timed out without a default: dead letter");
                if let Some(lease) = holder {
                    self.outbox.withdrawn.push(Withdrawn {
                        agent_id: lease.agent_id,
                        task_id: task_id.to_string(),
                        generation: lease.generation,
                        reason: "input_timeout".into(),
                        notice: None,
                    });
                }
            }
            // Answered, reclaimed or moved since the timer was set.
            Err(_) => {}
        }
    }
}

pub(in crate::queue) fn answer_to(
    agent: &str,
    task_id: &str,
    q: &Question,
    merge: bool,
) -> Deliver {
    Deliver {
        agent_id: agent.to_string(),
        frame: answer_frame(task_id, q, merge),
    }
}

/// The `task_answer` of an answered question or decided approval.
pub(in crate::queue) fn answer_frame(task_id: &str, q: &Question, merge: bool) -> ServerFrame {
    ServerFrame::TaskAnswer {
        task_id: task_id.to_string(),
        generation: q.generation,
        question_id: q.id,
        answer: q.answer.clone().unwrap_or_default(),
        answered_by: q.answered_by.clone().unwrap_or_default(),
        kind: match (&q.approval, &q.budget) {
            (Some(_), _) => Some("approval".to_string()),
            (_, Some(_)) => Some("budget".to_string()),
            _ => None,
        },
        note: q.approval.as_ref().and_then(|a| a.note.clone()),
        merge,
    }
}
