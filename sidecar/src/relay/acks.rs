//! The hub's answers to the relay's reports: which report a `task_ack` or a
//! refusal answers (`Kind`, paired through the in-flight list), and what
//! each answer does to the task.

use agentcom_protocol::{ClientFrame, ErrorFrame};
use tokio::time::Instant;

use super::Relay;

/// Which report a `task_ack` or a refusal answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Accept,
    Complete,
    Failed,
    Block,
    Reject,
    /// `usage_limited` for the task (final, like a failure that spends nothing).
    Usage,
    /// `task_input_required`: the question (the task stays ours).
    Ask,
    /// `task_merged`: the approved pull request merged, or not (ext).
    Merge,
}

impl Kind {
    pub(super) fn of(frame: &ClientFrame) -> Option<(Kind, String, u64)> {
        match frame {
            ClientFrame::TaskAccepted {
                task_id,
                generation,
            } => Some((Kind::Accept, task_id.clone(), generation.unwrap_or(0))),
            ClientFrame::TaskComplete {
                task_id,
                generation,
                ..
            } => Some((Kind::Complete, task_id.clone(), *generation)),
            ClientFrame::TaskFailed {
                task_id,
                generation,
                ..
            } => Some((Kind::Failed, task_id.clone(), *generation)),
            ClientFrame::TaskRejected {
                task_id,
                generation,
                ..
            } => Some((Kind::Reject, task_id.clone(), generation.unwrap_or(0))),
            ClientFrame::TaskBlocked {
                task_id,
                generation,
                ..
            } => Some((Kind::Block, task_id.clone(), *generation)),
            ClientFrame::UsageLimited {
                task_id: Some(task_id),
                generation,
                ..
            } => Some((Kind::Usage, task_id.clone(), generation.unwrap_or(0))),
            ClientFrame::TaskInputRequired {
                task_id,
                generation,
                ..
            } => Some((Kind::Ask, task_id.clone(), *generation)),
            ClientFrame::TaskMerged {
                task_id,
                generation,
                ..
            } => Some((Kind::Merge, task_id.clone(), *generation)),
            _ => None,
        }
    }
}

impl Relay {
    fn pop_inflight(&mut self, task_id: &str, kind: Kind) -> Option<u64> {
        let pos = self
            .inflight
            .iter()
            .position(|(t, k, _)| t == task_id && *k == kind)?;
        self.inflight.remove(pos).map(|(_, _, g)| g)
    }

    pub(super) fn on_ack(&mut self, task_id: &str, status: &str) {
        let kind = match status {
            "accepted" => Kind::Accept,
            "complete" => Kind::Complete,
            "retried" | "dead_letter" => Kind::Failed,
            "blocked" => Kind::Block,
            "rejected" => Kind::Reject,
            "usage_limited" => Kind::Usage,
            "input_required" => Kind::Ask,
            "rework" => Kind::Merge,
            _ => return,
        };
        // `input_required` also answers a completion the hub holds for
        // approval, and `complete` a merge.
        let kind = match kind {
            Kind::Ask if self.pop_inflight(task_id, Kind::Ask).is_none() => {
                self.pop_inflight(task_id, Kind::Complete);
                tracing::info!(task_id, "the hub holds the completion for approval");
                self.drop_entries_for(task_id, true);
                self.await_approval(task_id);
                return;
            }
            Kind::Ask => Kind::Ask,
            Kind::Complete if self.pop_inflight(task_id, Kind::Complete).is_none() => {
                self.pop_inflight(task_id, Kind::Merge);
                Kind::Complete
            }
            Kind::Complete => Kind::Complete,
            other => {
                self.pop_inflight(task_id, other);
                other
            }
        };
        if kind == Kind::Ask {
            tracing::info!(task_id, "the hub has the question; waiting for the answer");
            self.drop_entries_for(task_id, true);
            self.await_answer(task_id);
            return;
        }
        if kind == Kind::Merge {
            tracing::warn!(task_id, "the merge failed; the agent works on");
            self.drop_entries_for(task_id, true);
            self.merge_failed(task_id);
            return;
        }
        if matches!(
            kind,
            Kind::Complete | Kind::Failed | Kind::Block | Kind::Usage
        ) {
            tracing::info!(task_id, status, "report acknowledged by the hub");
            self.drop_entries_for(task_id, true);
            if self.held.contains_key(task_id) {
                self.drop_entries_for(task_id, false);
                self.clear_record(task_id);
            }
        }
    }

    pub(super) fn on_error(&mut self, e: ErrorFrame) {
        let Some(task_id) = e.task_id.clone() else {
            if e.error == "hub_unavailable" {
                tracing::warn!("hub could not take a report; re-sending later");
                self.outbox_retry_at = Some(Instant::now() + self.cfg.timings.outbox_retry);
            } else {
                tracing::warn!(error = %e.error, "error frame from the hub");
            }
            return;
        };
        let (prefix, reason) = e.error.split_once(": ").unwrap_or((e.error.as_str(), ""));
        if prefix == "task_report_failed" {
            // The answer to a `task_recovering`.
            self.recovery_answered(&task_id);
        }
        let kind = match prefix {
            "task_accept_failed" => Kind::Accept,
            "task_complete_failed" => Kind::Complete,
            "task_fail_failed" => Kind::Failed,
            "task_block_failed" => Kind::Block,
            "task_reject_failed" => Kind::Reject,
            "usage_limited_failed" => Kind::Usage,
            "task_input_required_failed" => Kind::Ask,
            "task_merged_failed" => Kind::Merge,
            _ => {
                tracing::warn!(task_id = %task_id, error = %e.error, "error frame from the hub");
                return;
            }
        };
        if reason == "hub_unavailable" {
            self.pop_inflight(&task_id, kind);
            self.outbox_retry_at = Some(Instant::now() + self.cfg.timings.outbox_retry);
            return;
        }
        let sent_generation = self.pop_inflight(&task_id, kind);
        let ours = self.held.get(&task_id).map(|h| &h.record);
        let current = ours.is_some_and(|r| Some(r.generation()) == sent_generation);
        let released = ours.is_some_and(|r| r.is_released());
        match kind {
            Kind::Accept => {
                tracing::warn!(task_id = %task_id, error = %e.error, "the hub refused our acceptance");
                if current && !released {
                    self.release(&task_id, &e.error);
                }
            }
            Kind::Complete | Kind::Failed | Kind::Block | Kind::Usage | Kind::Ask | Kind::Merge => {
                if ours.is_some() && !current {
                    tracing::debug!(task_id = %task_id, error = %e.error, "refusal of an older generation ignored");
                    return;
                }
                tracing::error!(task_id = %task_id, error = %e.error,
                    "the hub refused the report; it is final, so the report is dropped from the outbox");
                self.drop_entries_for(&task_id, true);
                if current && !released {
                    self.release(&task_id, &e.error);
                }
            }
            Kind::Reject => {
                tracing::warn!(task_id = %task_id, error = %e.error, "the hub refused a rejection");
            }
        }
    }
}
