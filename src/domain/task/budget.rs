//! Budgets (ext, PROTOCOL.md 6.28): what a task has spent (the attempts that
//! ended, plus the running total the holder reports for the current one),
//! its budget, and the pause that asks instead of killing: a task over a
//! budget goes to `input_required` with a budget question; raising the
//! budget (or the day's) lets its holder resume.

use serde_json::json;

use super::*;
use crate::protocol::{Limit, Spend};

/// Why a task is paused for its budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct BudgetHold {
    /// `task`, `agent:<id>` (its daily budget) or `group:<group>`.
    pub scope: String,
    pub spent: Spend,
    pub budget: Limit,
}

/// The answer that resumes a paused task.
pub(crate) const RESUME: &str = "resume";

impl Task {
    /// Everything spent: ended attempts and the current one's running total.
    pub(crate) fn total_spent(&self) -> Spend {
        self.spent.plus(self.attempt_spent)
    }

    /// The task's own budget.
    pub(crate) fn budget(&self) -> Limit {
        Limit {
            tokens: self.budget_tokens,
            usd: self.budget_usd,
        }
    }

    /// The holder's running total for its attempt: kept when it grew.
    /// Answers what it added.
    pub(crate) fn report_spend(
        &mut self,
        agent: &str,
        generation: Option<u64>,
        spend: Spend,
    ) -> Result<Spend, TaskError> {
        self.check_holder(agent, generation)?;
        let before = self.attempt_spent;
        self.attempt_spent = before.max(spend);
        Ok(self.attempt_spent.since(before))
    }

    /// Ends the current attempt's running total (its attempt ended).
    pub(super) fn settle_spend(&mut self) {
        self.spent = self.total_spent();
        self.attempt_spent = Spend::default();
    }

    /// The task went over `budget` (its own, or its holder's or group's for
    /// the day, as `scope` says): it waits, held, for a raise or a cancel.
    pub(crate) fn pause_for_budget(
        &mut self,
        scope: &str,
        budget: Limit,
        now: i64,
    ) -> Result<Question, TaskError> {
        if self.status != TaskStatus::Assigned || !self.is_held() {
            return Err(TaskError::InvalidState(self.status));
        }
        let spent = self.total_spent();
        let q = Question {
            id: self.question.as_ref().map_or(1, |q| q.id + 1),
            question: format!(
                "Over budget ({scope}): spent {} tokens and ${:.2}. Raise the budget to resume, or cancel.",
                spent.tokens, spent.cost_usd
            ),
            options: vec![RESUME.into()],
            default: None,
            asked_at: now,
            timeout_at: None,
            generation: self.generation,
            answer: None,
            answered_by: None,
            answered_at: None,
            approval: None,
            budget: Some(Box::new(BudgetHold {
                scope: scope.to_string(),
                spent,
                budget,
            })),
        };
        self.status = TaskStatus::InputRequired;
        self.record(
            "budget_exceeded",
            now,
            json!({"agent_id": self.assigned_to, "generation": self.generation,
                   "question_id": q.id, "scope": scope, "spent": spent, "budget": budget}),
        );
        self.question = Some(q.clone());
        Ok(q)
    }

    /// The budget hold this task waits on, if any.
    pub(crate) fn budget_hold(&self) -> Option<&BudgetHold> {
        self.waiting_question().and_then(|q| q.budget.as_deref())
    }

    /// An operator sets the task's budget (a part not given stays).
    pub(crate) fn raise_budget(
        &mut self,
        by: &str,
        tokens: Option<u64>,
        usd: Option<f64>,
        now: i64,
    ) -> Result<(), TaskError> {
        if self.status.is_terminal() {
            return Err(TaskError::InvalidState(self.status));
        }
        let previous = self.budget();
        self.budget_tokens = tokens.or(self.budget_tokens);
        self.budget_usd = usd.or(self.budget_usd);
        self.record(
            "budget_raised",
            now,
            json!({"by": by, "previous": previous, "budget": self.budget(),
                   "spent": self.total_spent()}),
        );
        Ok(())
    }

    /// The holder goes on: the budget hold is answered `resume` by `by`.
    pub(crate) fn resume_from_budget(&mut self, by: &str, now: i64) -> Result<Question, TaskError> {
        if self.budget_hold().is_none() {
            return Err(TaskError::InvalidState(self.status));
        }
        let Some(q) = self.question.as_mut() else {
            return Err(TaskError::InvalidState(self.status));
        };
        q.answer = Some(RESUME.into());
        q.answered_by = Some(by.to_string());
        q.answered_at = Some(now);
        let q = q.clone();
        self.status = TaskStatus::Assigned;
        self.record(
            "resumed",
            now,
            json!({"by": by, "question_id": q.id, "agent_id": self.assigned_to,
                   "generation": self.generation}),
        );
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(budget: u64) -> Task {
        let mut t = crate::domain::task::tests::task(3);
        t.budget_tokens = Some(budget);
        t.assign("a", 10).expect("assign");
        t.accept("a", Some(t.generation), 11).expect("accept");
        t
    }

    fn spend(tokens: u64) -> Spend {
        Spend {
            tokens,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn running_totals_add_what_they_grew_and_attempts_sum() {
        let mut t = held(1000);
        let g = t.generation;
        assert_eq!(t.report_spend("a", Some(g), spend(300)), Ok(spend(300)));
        assert_eq!(
            t.report_spend("a", Some(g), spend(200)),
            Ok(spend(0)),
            "a stale total"
        );
        assert_eq!(t.report_spend("a", Some(g), spend(450)), Ok(spend(150)));
        assert!(t.report_spend("b", Some(g), spend(999)).is_err());
        t.reclaim("a", g, "disconnect", 20).expect("reclaim");
        assert_eq!(
            t.total_spent().tokens,
            450,
            "an ended attempt's spend stays"
        );
        t.assign("a", 30).expect("again");
        t.report_spend("a", Some(t.generation), spend(100))
            .expect("spend");
        assert_eq!(t.total_spent().tokens, 550);
    }

    #[test]
    fn over_budget_pauses_and_a_raise_resumes() {
        let mut t = held(100);
        let g = t.generation;
        t.report_spend("a", Some(g), spend(150)).expect("spend");
        assert!(t.budget().exceeded_by(t.total_spent()));
        let q = t.pause_for_budget("task", t.budget(), 20).expect("pause");
        assert_eq!(t.status, TaskStatus::InputRequired);
        assert_eq!(t.assigned_to.as_deref(), Some("a"), "held, not killed");
        assert_eq!(q.budget.as_ref().map(|b| b.spent.tokens), Some(150));
        assert!(t.pause_for_budget("task", t.budget(), 21).is_err(), "once");
        t.raise_budget("ops", Some(500), None, 30).expect("raise");
        assert!(!t.budget().exceeded_by(t.total_spent()));
        t.resume_from_budget("ops", 30).expect("resume");
        assert_eq!(t.status, TaskStatus::Assigned);
        assert!(t.resume_from_budget("ops", 31).is_err());
    }
}
