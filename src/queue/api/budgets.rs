//! Budgets (ext, PROTOCOL.md 6.28), as the queue runs them:
//!
//! | message | from | does |
//! |---|---|---|
//! | [`RaiseBudget`] | operators (HTTP, CLI, MCP, dashboard) | sets a task's budget; a task paused for it resumes when no longer over |
//! | [`SetDailyBudgets`] | `PUT /api/admin/budgets` | replaces the daily budgets; tasks paused for a day's budget resume when no longer over |
//! | [`SpendView`] | readers | today's spend by agent, group and capability, the budgets, the kept days |
//!
//! Spend comes with the holders' reports (`spend_reported`): it is added to the
//! task and to the day's ledger in the report's flush, and a task over its
//! budget, or whose agent or group is over the day's, is paused: its holder
//! gets `task_paused` and keeps it. A new UTC day resumes the tasks paused for
//! a day's budget.

use actix::prelude::*;
use serde_json::Value;

use super::questions::answer_to;
use crate::agents::presence::Deliver;
use crate::domain::task::{TaskError, TaskStatus};
use crate::protocol::{DailyBudgets, ServerFrame, Spend};
use crate::queue::entry::Entry;
use crate::queue::{QueueError, TaskQueue};
use crate::storage::eventlog::NewEvent;
use crate::util::now_ms;

/// Set a task's budget (a part not given stays).
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct RaiseBudget {
    pub task_id: String,
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    pub by: String,
}

impl Handler<RaiseBudget> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: RaiseBudget, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this
                .with_task(&msg.task_id, &msg.by, |t, now| {
                    t.raise_budget(&msg.by, msg.tokens, msg.usd, now)
                })
                .map(|_| {
                    this.resume_if_within(&msg.task_id, &msg.by);
                    this.index
                        .whole(&msg.task_id)
                        .map(|t| t.view())
                        .unwrap_or(Value::Null)
                });
            this.after_flush(result)
        })
    }
}

/// Replace the daily budgets of agents and credential groups.
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct SetDailyBudgets {
    pub budgets: DailyBudgets,
    pub by: String,
}

impl Handler<SetDailyBudgets> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: SetDailyBudgets, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.set_daily_budgets(msg);
            this.after_flush(result)
        })
    }
}

/// Spend today and on the kept days, and the daily budgets.
#[derive(Message)]
#[rtype(result = "Value")]
pub(crate) struct SpendView;

impl Handler<SpendView> for TaskQueue {
    type Result = MessageResult<SpendView>;

    fn handle(&mut self, _: SpendView, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, |this| MessageResult(this.budgets.view(now_ms())))
    }
}

impl TaskQueue {
    fn set_daily_budgets(&mut self, msg: SetDailyBudgets) -> Result<Value, QueueError> {
        self.writable()?;
        let previous = std::mem::replace(&mut self.budgets.daily, msg.budgets);
        let details = serde_json::json!({"budgets": self.budgets.daily, "previous": previous});
        let event = NewEvent::untasked("daily_budgets_set", None, &msg.by, details);
        if let Err(e) = self
            .log
            .append(vec![event])
            .and_then(|()| self.budgets.save_budgets(&self.store))
        {
            self.budgets.daily = previous;
            return Err(QueueError::Store(e));
        }
        self.resume_daily_holds(&msg.by);
        Ok(self.budgets.view(now_ms()))
    }

    /// A holder's running total for its attempt with a progress report: what
    /// it added goes to the day's ledger; over a budget, the task is paused.
    pub(in crate::queue) fn spend_reported(
        &mut self,
        who: (&str, &str),
        task_id: &str,
        delta: Spend,
    ) -> Result<(), QueueError> {
        let (agent, group) = who;
        let now = now_ms();
        let Some(task) = self.index.whole(task_id) else {
            return self.ledger(now, who, &[], delta);
        };
        let caps = task.needed_capabilities.clone();
        let own = task.budget();
        let over_own = own.exceeded_by(task.total_spent());
        // Paused already, or waiting for an answer: nothing more to pause.
        let working = task.status == TaskStatus::Assigned;
        self.ledger(now, who, &caps, delta)?;
        if !working {
            return Ok(());
        }
        let over = match over_own {
            true => Some(("task".to_string(), own)),
            false => self.budgets.over(now, agent, group),
        };
        let Some((scope, limit)) = over else {
            return Ok(());
        };
        let (q, _) = self.with_task(task_id, "hub", |t, now| {
            t.pause_for_budget(&scope, limit, now)
        })?;
        tracing::warn!(task_id, agent_id = agent, scope = %scope, "over budget: task paused");
        if let Some(hold) = q.budget.clone() {
            self.outbox.pushes.push(Deliver {
                agent_id: agent.to_string(),
                frame: ServerFrame::TaskPaused {
                    task_id: task_id.to_string(),
                    generation: q.generation,
                    question_id: q.id,
                    reason: "budget_exceeded".into(),
                    spent: hold.spent,
                    budget: hold.budget,
                },
            });
        }
        Ok(())
    }

    /// Adds spend to the day's ledger (written in this flush).
    pub(in crate::queue) fn ledger(
        &mut self,
        now: i64,
        who: (&str, &str),
        caps: &[String],
        delta: Spend,
    ) -> Result<(), QueueError> {
        self.writable()?;
        self.budgets
            .record(&self.store, now, who, caps, delta)
            .map_err(QueueError::Store)
    }

    /// A task paused for a budget goes on when nothing holds it back now.
    fn resume_if_within(&mut self, task_id: &str, by: &str) {
        let now = now_ms();
        let Some(task) = self.index.whole(task_id) else {
            return;
        };
        let Some(hold) = task.budget_hold() else {
            return;
        };
        let within = match hold.scope.as_str() {
            "task" => !task.budget().exceeded_by(task.total_spent()),
            scope => !self.budgets.still_over(now, scope),
        };
        if !within {
            return;
        }
        match self.with_task(task_id, by, |t, now| t.resume_from_budget(by, now)) {
            Ok((q, _)) => {
                self.renew(task_id, true);
                if let Some(agent) = self
                    .index
                    .whole(task_id)
                    .and_then(|t| t.assigned_to.clone())
                {
                    self.outbox
                        .pushes
                        .push(answer_to(&agent, task_id, &q, false));
                }
                tracing::info!(task_id, by, "budget raised: task resumed");
            }
            Err(e) => tracing::error!(task_id, error = e.as_str(), "task not resumed"),
        }
    }

    /// Tasks paused for a day's budget that is no longer over (raised, or a
    /// new day) go on.
    pub(in crate::queue) fn resume_daily_holds(&mut self, by: &str) {
        let paused: Vec<String> = self
            .index
            .live
            .values()
            .filter_map(|e| match e {
                Entry::Whole(t) => t
                    .budget_hold()
                    .filter(|h| h.scope != "task")
                    .map(|_| t.id.clone()),
                _ => None,
            })
            .collect();
        for id in paused {
            self.resume_if_within(&id, by);
        }
    }

    /// Called by the sweep and at a clean stop: the ledger's changes not yet
    /// written.
    pub(in crate::queue) fn write_ledger(&mut self, now: i64) {
        if !self.budgets.is_dirty() || self.writable().is_err() {
            return;
        }
        if let Err(e) = self.budgets.write(&self.store, now) {
            tracing::error!(error = %e, "the day's spend could not be written");
        }
    }

    /// Called by the sweep: on a new UTC day the day's holds are looked at.
    pub(in crate::queue) fn new_day(&mut self, now: i64) {
        let today = self.budgets.today(now);
        if self.spend_day != today {
            self.spend_day = today;
            self.resume_daily_holds("hub");
        }
    }

    /// Answering a budget hold is raising the budget.
    pub(in crate::queue) fn not_an_answer(&self, task_id: &str) -> Option<QueueError> {
        self.index
            .whole(task_id)
            .and_then(|t| t.budget_hold().map(|_| t.status))
            .map(|s| TaskError::InvalidState(s).into())
    }
}
