//! Approvals (ext, PROTOCOL.md 6.27), as the queue runs them:
//!
//! | message | from | does |
//! |---|---|---|
//! | `DecideApproval` (`questions.rs`) | operators (HTTP, CLI, MCP, dashboard) | approve or reject |
//! | [`SetApprovalRules`] | `PUT /api/admin/approval-rules` | replaces the rules, after the flush |
//! | [`ApprovalRulesView`] | readers | the rules in force and where they come from |
//!
//! A decision reaches the holder as `task_answer` (`kind: approval`) once
//! durable: an approved completion without a merge completes at once and the
//! holder lets go; with a merge the holder merges and reports `task_merged`;
//! a rejection sends it back to work with the reason.

use actix::prelude::*;
use serde_json::{json, Value};

use super::questions::answer_frame;
use crate::agents::fsm::Withdrawn;
use crate::domain::task::{Decision, Merge, Question, Task, TaskError};
use crate::ops::analytics::Counter;
use crate::protocol::{ApprovalRule, APPROVE};
use crate::queue::approvals::ApprovalRules;
use crate::queue::{QueueError, ReportReply, TaskQueue};
use crate::storage::eventlog::NewEvent;

/// Replace the approval rules.
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct SetApprovalRules {
    pub rules: Vec<ApprovalRule>,
    pub by: String,
}

impl Handler<SetApprovalRules> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: SetApprovalRules, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.set_approval_rules(msg);
            this.after_flush(result)
        })
    }
}

/// The rules in force: `{rules, source: "api"|"config"}`.
#[derive(Message)]
#[rtype(result = "Value")]
pub(crate) struct ApprovalRulesView;

impl Handler<ApprovalRulesView> for TaskQueue {
    type Result = MessageResult<ApprovalRulesView>;

    fn handle(&mut self, _: ApprovalRulesView, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, |this| MessageResult(this.approval_rules_view()))
    }
}

impl TaskQueue {
    fn approval_rules_view(&self) -> Value {
        json!({
            "rules": self.approvals.list(),
            "source": if self.approvals.stored { "api" } else { "config" },
        })
    }

    fn set_approval_rules(&mut self, msg: SetApprovalRules) -> Result<Value, QueueError> {
        self.writable()?;
        let mut rules = ApprovalRules::compile(msg.rules).map_err(QueueError::Invalid)?;
        rules.stored = true;
        let previous = std::mem::replace(&mut self.approvals, rules);
        let details = json!({"rules": self.approvals.list(), "previous": previous.list()});
        let event = NewEvent::untasked("approval_rules_set", None, &msg.by, details);
        if let Err(e) = self
            .log
            .append(vec![event])
            .and_then(|()| self.approvals.save(&self.store))
        {
            self.approvals = previous;
            return Err(QueueError::Store(e));
        }
        tracing::info!(by = %msg.by, rules = self.approvals.list().len(), "approval rules set");
        Ok(self.approval_rules_view())
    }

    /// Whether the holder was asked to merge with the approval `q`.
    pub(in crate::queue) fn merge_asked(&self, task: &Task, q: &Question) -> bool {
        task.merge_on_approval
            && q.answer.as_deref() == Some(APPROVE)
            && q.approval
                .as_ref()
                .and_then(|a| a.result.as_ref())
                .is_some_and(|r| r.get("pr_url").is_some_and(Value::is_string))
    }

    /// A person decides the approval `task_id` waits for.
    pub(in crate::queue) fn decide(
        &mut self,
        task_id: &str,
        approve: bool,
        note: Option<String>,
        by: &str,
    ) -> Result<Value, QueueError> {
        let (holder, follow_ups) = match self.index.whole(task_id) {
            Some(t) => match t.pending_approval() {
                Some(a) => (
                    t.assigned_to.clone().map(|agent| (agent, t.generation)),
                    a.follow_ups.clone(),
                ),
                None => return Err(TaskError::InvalidState(t.status).into()),
            },
            None => {
                let status = self.status_of(task_id);
                return Err(status
                    .map_or(TaskError::NotFound, TaskError::InvalidState)
                    .into());
            }
        };
        // The follow-ups of an approved completion first, as with any
        // completion (never a completion without its follow-ups).
        if let (true, Some((agent, generation))) = (approve, &holder) {
            self.create_follow_ups(task_id, agent, *generation, follow_ups)?;
        }
        let (decision, _) =
            self.with_task(task_id, by, |t, now| t.decide(approve, note, by, now))?;
        let Some((agent, generation)) = holder else {
            return self.task_view(task_id);
        };
        let q = self
            .index
            .whole(task_id)
            .and_then(|t| t.question.clone())
            .or_else(|| self.read(task_id).ok().flatten().and_then(|t| t.question));
        match decision {
            Decision::Completed => {
                self.count(&agent, Counter::TasksCompleted, crate::util::now_ms());
                self.outbox.withdrawn.push(Withdrawn {
                    agent_id: agent,
                    task_id: task_id.to_string(),
                    generation,
                    reason: "approved".into(),
                    notice: q.map(|q| answer_frame(task_id, &q, false)),
                });
            }
            Decision::Merge | Decision::Rework => {
                self.renew(task_id, true);
                if let Some(q) = q {
                    let merge = decision == Decision::Merge;
                    self.outbox
                        .pushes
                        .push(super::questions::answer_to(&agent, task_id, &q, merge));
                }
            }
            Decision::Queued | Decision::Cancelled => {}
        }
        tracing::info!(task_id, by, approve, "approval decided");
        self.task_view(task_id)
    }

    fn task_view(&self, task_id: &str) -> Result<Value, QueueError> {
        match self.read(task_id)? {
            Some(t) => Ok(t.view()),
            None => Err(TaskError::NotFound.into()),
        }
    }

    /// `task_merged` from the holder of an approved completion.
    pub(in crate::queue) fn report_merged(
        &mut self,
        agent: &str,
        task_id: &str,
        generation: u64,
        outcome: Merge,
    ) -> Result<ReportReply, QueueError> {
        let ((ack, fresh), task) = self.with_task(task_id, agent, |t, now| {
            let before = t.status;
            let ack = t.merged(agent, generation, Merge { at: now, ..outcome }, now)?;
            Ok((ack, t.status != before))
        })?;
        if fresh {
            self.count(agent, Counter::TasksCompleted, task.updated_at);
        }
        if ack == "rework" {
            self.renew(task_id, true);
        }
        Ok(ReportReply::Ack(ack))
    }
}
