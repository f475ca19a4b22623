//! Approvals (ext, PROTOCOL.md 6.27): a question the hub asks a person on the
//! task's behalf, with the answers `approve` and `reject`.
//!
//! - `before_start`: the task is created `input_required` with no holder;
//!   approve queues it, reject cancels it.
//! - `before_complete` (or a rule that matched the completion's changes): the
//!   holder's completion is held on the question and the holder keeps the task
//!   (`input_required`, no lease clock). Approve completes it with the held
//!   result, or, with `merge_on_approval` and a pull request in the result,
//!   sends the holder back to merge it (`task_merged` completes it). Reject,
//!   and a merge that failed, send the holder back to work with the reason: a
//!   new attempt at the same generation, on the same branch.

use serde_json::json;

use super::*;
use crate::protocol::{ApprovalStage, APPROVE, REJECT};

/// What an approval decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// `before_start` approved: queued.
    Queued,
    /// `before_start` rejected: cancelled.
    Cancelled,
    /// Approved and completed with the held result (the holder lets go).
    Completed,
    /// Approved: the holder merges the pull request, then reports `task_merged`.
    Merge,
    /// Rejected: the holder works on with the reason.
    Rework,
}

/// What a held completion carries until it is approved.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldCompletion {
    pub result: Option<Map<String, Value>>,
    pub tokens_used: Option<u64>,
    pub follow_ups: Vec<TaskSpec>,
}

/// The result's pull request, when it names one.
fn pr_url(result: Option<&Map<String, Value>>) -> Option<String> {
    result?
        .get("pr_url")
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl Task {
    fn approval_question(&self, stage: ApprovalStage, reasons: Vec<String>, now: i64) -> Question {
        let question = match stage {
            ApprovalStage::BeforeStart => "Approve this task before it starts?",
            ApprovalStage::BeforeComplete => "Approve this result?",
        };
        Question {
            id: self.question.as_ref().map_or(1, |q| q.id + 1),
            question: question.into(),
            options: vec![APPROVE.into(), REJECT.into()],
            default: None,
            asked_at: now,
            timeout_at: None,
            generation: self.generation,
            answer: None,
            answered_by: None,
            answered_at: None,
            budget: None,
            approval: Some(Box::new(Approval {
                stage,
                reasons,
                result: None,
                tokens_used: None,
                follow_ups: Vec::new(),
                note: None,
                merge: None,
            })),
        }
    }

    /// A new task whose submitter asked for approval before it starts: it
    /// waits, unheld, for the decision.
    pub(crate) fn await_start_approval(&mut self, now: i64) {
        let q = self.approval_question(
            ApprovalStage::BeforeStart,
            vec!["the submitter asked for approval before start".into()],
            now,
        );
        self.status = TaskStatus::InputRequired;
        self.record(
            "approval_required",
            now,
            json!({"stage": "before_start", "question_id": q.id}),
        );
        self.question = Some(q);
    }

    /// The holder's completion, held until a person approves it (`reasons`:
    /// why). A repeat of the held completion is harmless. Answers the ack.
    pub(crate) fn hold_completion(
        &mut self,
        agent: &str,
        generation: u64,
        held: HeldCompletion,
        reasons: Vec<String>,
        now: i64,
    ) -> Result<String, TaskError> {
        self.check_holder(agent, Some(generation))?;
        if self.status == TaskStatus::InputRequired {
            return match self.pending_approval() {
                Some(_) => Ok("input_required".into()),
                None => Err(TaskError::InvalidState(self.status)),
            };
        }
        let pr = pr_url(held.result.as_ref());
        let mut q = self.approval_question(ApprovalStage::BeforeComplete, reasons, now);
        if let Some(a) = q.approval.as_mut() {
            a.result = held.result;
            a.tokens_used = held.tokens_used;
            a.follow_ups = held.follow_ups;
        }
        self.status = TaskStatus::InputRequired;
        self.record(
            "approval_required",
            now,
            json!({"stage": "before_complete", "agent_id": agent, "generation": generation,
                   "question_id": q.id, "reasons": q.approval.as_ref().map(|a| &a.reasons),
                   "pr_url": pr}),
        );
        self.question = Some(q);
        Ok("input_required".into())
    }

    /// The approval this task waits for, if any.
    pub(crate) fn pending_approval(&self) -> Option<&Approval> {
        self.waiting_question().and_then(|q| q.approval.as_deref())
    }

    /// A person's decision on the waiting approval. `note` is the reason of a
    /// rejection. (The caller creates the held follow-ups of an approved
    /// completion first: `pending_approval` has them.)
    pub(crate) fn decide(
        &mut self,
        approve: bool,
        note: Option<String>,
        by: &str,
        now: i64,
    ) -> Result<Decision, TaskError> {
        let Some(approval) = self.pending_approval().cloned() else {
            return Err(TaskError::InvalidState(self.status));
        };
        let answer = if approve { APPROVE } else { REJECT };
        if let Some(q) = self.question.as_mut() {
            q.answer = Some(answer.into());
            q.answered_by = Some(by.to_string());
            q.answered_at = Some(now);
            if let Some(a) = q.approval.as_mut() {
                a.note = note.clone();
            }
        }
        let event = if approve { "approved" } else { "rejected" };
        let mut details = json!({"by": by, "stage": approval.stage.as_str(),
                                 "agent_id": self.assigned_to, "generation": self.generation});
        if let Some(n) = &note {
            details["reason"] = json!(n);
        }
        match (approval.stage, approve) {
            (ApprovalStage::BeforeStart, true) => {
                self.status = TaskStatus::Queued;
                self.record(event, now, details);
                Ok(Decision::Queued)
            }
            (ApprovalStage::BeforeStart, false) => {
                self.status = TaskStatus::Cancelled;
                self.last_error = Some(format!("rejected by {by}"));
                self.record(event, now, details);
                Ok(Decision::Cancelled)
            }
            (ApprovalStage::BeforeComplete, false) => {
                self.status = TaskStatus::Assigned;
                self.record(event, now, details);
                self.rework("rejected", note.as_deref(), now);
                Ok(Decision::Rework)
            }
            (ApprovalStage::BeforeComplete, true) => {
                let merge = self.merge_on_approval && pr_url(approval.result.as_ref()).is_some();
                details["merge"] = json!(merge);
                self.status = TaskStatus::Assigned;
                self.record(event, now, details);
                if merge {
                    return Ok(Decision::Merge);
                }
                let agent = self.assigned_to.clone().unwrap_or_default();
                let generation = self.generation;
                self.complete(
                    &agent,
                    generation,
                    approval.result,
                    approval.tokens_used,
                    now,
                )?;
                Ok(Decision::Completed)
            }
        }
    }

    /// `task_merged` from the holder of an approved completion: merged, it
    /// completes with the held result and the merge; not merged, the holder
    /// works on with the reason. Answers the ack (`complete` or `rework`).
    pub(crate) fn merged(
        &mut self,
        agent: &str,
        generation: u64,
        outcome: Merge,
        now: i64,
    ) -> Result<String, TaskError> {
        if let Some(ack) = self.repeated(agent, generation, ReportKind::Complete) {
            return Ok(ack);
        }
        self.check_holder(agent, Some(generation))?;
        let approved = self
            .question
            .as_ref()
            .filter(|q| q.generation == generation && q.answer.as_deref() == Some(APPROVE))
            .and_then(|q| q.approval.as_deref())
            .filter(|a| a.stage == ApprovalStage::BeforeComplete && a.merge.is_none())
            .cloned();
        let (Some(approval), TaskStatus::Assigned) = (approved, self.status) else {
            return Err(TaskError::InvalidState(self.status));
        };
        let merged = outcome.merged;
        let mut details = json!({"agent_id": agent, "generation": generation,
                                 "merged": merged, "method": outcome.method,
                                 "pr_url": pr_url(approval.result.as_ref())});
        if let Some(e) = &outcome.error {
            details["error"] = json!(e);
        }
        self.merge = Some(outcome.clone());
        if let Some(a) = self.question.as_mut().and_then(|q| q.approval.as_mut()) {
            a.merge = Some(outcome.clone());
        }
        if !merged {
            self.record("merge_failed", now, details);
            self.rework("merge_failed", outcome.error.as_deref(), now);
            return Ok("rework".into());
        }
        self.record("merged", now, details);
        let mut result = approval.result.unwrap_or_default();
        result.insert("merge".into(), json!(outcome));
        self.complete(agent, generation, Some(result), approval.tokens_used, now)
    }

    /// The attempt ends `outcome` and a new one starts at the same holder and
    /// generation (the agent keeps its branch).
    fn rework(&mut self, outcome: &str, note: Option<&str>, now: i64) {
        let generation = self.generation;
        self.close_attempt(generation, outcome, note, None, now);
        if let Some(agent) = self.assigned_to.clone() {
            self.attempt += 1;
            self.attempts.push(Attempt {
                attempt: self.attempt,
                agent_id: agent,
                generation,
                assigned_at: now,
                accepted_at: Some(now),
                finished_at: None,
                outcome: None,
                cause: None,
                error: None,
            });
            if self.attempts.len() > ATTEMPTS_KEPT {
                self.attempts.remove(0);
                self.attempts_dropped += 1;
            }
        }
        self.last_error = note.map(|n| format!("{outcome}: {n}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(merge: bool) -> Task {
        let mut t = crate::domain::task::tests::task(3);
        t.merge_on_approval = merge;
        t.assign("a", 10).expect("assign");
        t.accept("a", Some(t.generation), 11).expect("accept");
        t
    }

    fn result(pr: bool) -> HeldCompletion {
        let mut r = Map::new();
        r.insert("summary".into(), json!("done"));
        if pr {
            r.insert("pr_url".into(), json!("https://example/pr/7"));
        }
        HeldCompletion {
            result: Some(r),
            tokens_used: Some(12),
            follow_ups: Vec::new(),
        }
    }

    #[test]
    fn a_held_completion_completes_when_approved() {
        let mut t = held(false);
        let g = t.generation;
        let ack = t
            .hold_completion("a", g, result(false), vec!["rule".into()], 20)
            .expect("held");
        assert_eq!(
            (ack.as_str(), t.status),
            ("input_required", TaskStatus::InputRequired)
        );
        assert_eq!(t.assigned_to.as_deref(), Some("a"), "the holder keeps it");
        assert!(t.result.is_none(), "the result is not the task's yet");
        assert_eq!(
            t.hold_completion("a", g, result(false), vec![], 21)
                .as_deref(),
            Ok("input_required"),
            "a repeat"
        );
        let d = t.decide(true, None, "ops", 30).expect("approve");
        assert_eq!((d, t.status), (Decision::Completed, TaskStatus::Completed));
        assert_eq!(
            t.result.as_ref().map(|r| r["summary"].clone()),
            Some(json!("done"))
        );
        assert_eq!(t.tokens_used, Some(12));
        assert!(t.decide(true, None, "ops", 31).is_err(), "decided once");
    }

    #[test]
    fn a_rejection_sends_the_holder_back_with_the_reason() {
        let mut t = held(false);
        let g = t.generation;
        t.hold_completion("a", g, result(false), vec![], 20)
            .expect("held");
        let d = t
            .decide(false, Some("tests are missing".into()), "ops", 30)
            .expect("reject");
        assert_eq!((d, t.status), (Decision::Rework, TaskStatus::Assigned));
        assert_eq!(
            t.generation, g,
            "same generation: the holder keeps its branch"
        );
        assert_eq!(t.attempts.len(), 2, "a new attempt");
        assert_eq!(t.attempts[0].outcome.as_deref(), Some("rejected"));
        let again = t
            .hold_completion("a", g, result(false), vec![], 40)
            .expect("held again");
        assert_eq!(again, "input_required");
        assert_eq!(t.question.as_ref().map(|q| q.id), Some(2));
    }

    #[test]
    fn an_approved_pull_request_is_merged_by_the_holder() {
        let mut t = held(true);
        let g = t.generation;
        t.hold_completion("a", g, result(true), vec![], 20)
            .expect("held");
        let d = t.decide(true, None, "ops", 30).expect("approve");
        assert_eq!((d, t.status), (Decision::Merge, TaskStatus::Assigned));
        let failed = Merge {
            merged: false,
            method: Some("squash".into()),
            error: Some("conflict".into()),
            at: 31,
        };
        assert_eq!(t.merged("a", g, failed, 31).as_deref(), Ok("rework"));
        assert_eq!(t.status, TaskStatus::Assigned);
        assert!(
            t.merged("a", g, Merge::default(), 32).is_err(),
            "no approval stands after a failed merge"
        );
        t.hold_completion("a", g, result(true), vec![], 40)
            .expect("held again");
        t.decide(true, None, "ops", 41).expect("approve");
        let ok = Merge {
            merged: true,
            method: Some("squash".into()),
            error: None,
            at: 42,
        };
        assert_eq!(t.merged("a", g, ok.clone(), 42).as_deref(), Ok("complete"));
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(
            t.result.as_ref().map(|r| r["merge"]["merged"].clone()),
            Some(json!(true))
        );
        assert_eq!(
            t.merged("a", g, ok, 43).as_deref(),
            Ok("complete"),
            "a repeat"
        );
    }

    #[test]
    fn before_start_approval_queues_or_cancels() {
        let mut t = crate::domain::task::tests::task(3);
        t.await_start_approval(5);
        assert_eq!(t.status, TaskStatus::InputRequired);
        assert!(t.assigned_to.is_none());
        assert!(!t.is_held());
        let d = t.decide(true, None, "ops", 6).expect("approve");
        assert_eq!((d, t.status), (Decision::Queued, TaskStatus::Queued));
        let mut t = crate::domain::task::tests::task(3);
        t.await_start_approval(5);
        let d = t
            .decide(false, Some("not now".into()), "ops", 6)
            .expect("reject");
        assert_eq!((d, t.status), (Decision::Cancelled, TaskStatus::Cancelled));
    }
}
