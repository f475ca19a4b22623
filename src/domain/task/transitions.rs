//! The transitions of a task's life after it is queued: assignment, the
//! holder's reports (accept, progress, complete, fail, reject, give back,
//! block), the hub's (unblock, block on a dependency, reclaim) and the
//! operator's (priority, cancel, force retry, force dead letter). Each applies
//! fully or returns `TaskError` and changes nothing.

use serde_json::json;

use super::*;

impl Task {
    /// Hands the queued task to `agent`.
    pub(crate) fn assign(&mut self, agent: &str, now: i64) -> Result<TaskAssignment, TaskError> {
        if self.status != TaskStatus::Queued {
            return Err(TaskError::InvalidState(self.status));
        }
        self.status = TaskStatus::Assigned;
        self.generation += 1;
        self.attempt += 1;
        self.assigned_to = Some(agent.to_string());
        self.assigned_at = Some(now);
        self.accepted_at = None;
        self.progress = None;
        self.attempts.push(Attempt {
            attempt: self.attempt,
            agent_id: agent.to_string(),
            generation: self.generation,
            assigned_at: now,
            accepted_at: None,
            finished_at: None,
            outcome: None,
            cause: None,
            error: None,
        });
        if self.attempts.len() > ATTEMPTS_KEPT {
            self.attempts.remove(0);
            self.attempts_dropped += 1;
        }
        self.record(
            "assigned",
            now,
            json!({"agent_id": agent, "generation": self.generation, "attempt": self.attempt}),
        );
        Ok(self.assignment())
    }

    /// `task_accepted`. Accepting twice is harmless.
    pub(crate) fn accept(
        &mut self,
        agent: &str,
        generation: Option<u64>,
        now: i64,
    ) -> Result<(), TaskError> {
        self.check_holder(agent, generation)?;
        if self.accepted_at.is_none() {
            self.accepted_at = Some(now);
            let generation = self.generation;
            if let Some(a) = self
                .attempts
                .iter_mut()
                .rev()
                .find(|a| a.generation == generation)
            {
                a.accepted_at = Some(now);
            }
            self.record(
                "accepted",
                now,
                json!({"agent_id": agent, "generation": self.generation}),
            );
        }
        Ok(())
    }

    /// `task_progress`.
    pub(crate) fn progress(
        &mut self,
        agent: &str,
        generation: Option<u64>,
        progress: Option<u64>,
        message: Option<String>,
        now: i64,
    ) -> Result<(), TaskError> {
        self.check_holder(agent, generation)?;
        let percent = progress.map(|p| p.min(100));
        if percent.is_some() || message.is_some() {
            self.progress = Some(Progress {
                percent,
                message: message.clone(),
                at: now,
                generation: self.generation,
            });
        }
        self.record(
            "progress",
            now,
            json!({"agent_id": agent, "progress": percent, "message": message}),
        );
        Ok(())
    }

    /// `task_complete`; returns the ack status.
    pub(crate) fn complete(
        &mut self,
        agent: &str,
        generation: u64,
        result: Option<Map<String, Value>>,
        tokens_used: Option<u64>,
        now: i64,
    ) -> Result<String, TaskError> {
        if let Some(ack) = self.repeated(agent, generation, ReportKind::Complete) {
            return Ok(ack);
        }
        self.check_holder(agent, Some(generation))?;
        self.status = TaskStatus::Completed;
        self.completed_at = Some(now);
        self.result = Some(result.unwrap_or_default());
        self.tokens_used = tokens_used;
        self.close_attempt(generation, "completed", None, None, now);
        self.record(
            "completed",
            now,
            json!({"agent_id": agent, "generation": generation, "tokens_used": tokens_used}),
        );
        self.remember(agent, generation, ReportKind::Complete, "complete");
        Ok("complete".into())
    }

    /// `task_failed`: back to the queue after the backoff (`jitter` in [0, 1)),
    /// or dead-letter at the `max_retries`-th failure or when `terminal`.
    pub(crate) fn fail(
        &mut self,
        agent: &str,
        generation: u64,
        report: FailReport,
        backoff: Backoff,
        jitter: f64,
        now: i64,
    ) -> Result<String, TaskError> {
        if let Some(ack) = self.repeated(agent, generation, ReportKind::Failed) {
            return Ok(ack);
        }
        self.check_holder(agent, Some(generation))?;
        let FailReport {
            error,
            reason,
            retry_after_s,
            terminal,
        } = report;
        self.retry_count += 1;
        self.last_error = Some(error.clone());
        self.close_attempt(generation, "failed", reason.as_deref(), Some(&error), now);
        let mut details = json!({"agent_id": agent, "generation": generation, "error": error,
                                 "retry_count": self.retry_count});
        if let Some(reason) = &reason {
            details["reason"] = json!(reason);
        }
        let ack = if terminal || self.retry_count >= self.max_retries {
            self.status = TaskStatus::DeadLetter;
            if terminal {
                details["terminal"] = json!(true);
            }
            self.record("dead_letter", now, details);
            "dead_letter"
        } else {
            self.requeue();
            let delay = backoff.delay_ms(self.retry_count, retry_after_s, jitter);
            if delay > 0 {
                let at = now.saturating_add(delay as i64);
                self.run_after = Some(at);
                details["run_after"] = json!(at);
            }
            self.record("retry", now, details);
            "retried"
        };
        self.remember(agent, generation, ReportKind::Failed, ack);
        Ok(ack.into())
    }

    /// `task_rejected`: back to the queue at once, not counted as a failure.
    pub(crate) fn reject(
        &mut self,
        agent: &str,
        generation: Option<u64>,
        reason: Option<String>,
        now: i64,
    ) -> Result<String, TaskError> {
        self.give_back(agent, generation, reason, ReportKind::Rejected, now)
    }

    /// The holder hands the task back unspent: `rejected`, or (`kind`
    /// `UsageLimited`, ext) its provider refuses work for now. Neither a retry
    /// nor a reclaim is spent.
    pub(crate) fn give_back(
        &mut self,
        agent: &str,
        generation: Option<u64>,
        reason: Option<String>,
        kind: ReportKind,
        now: i64,
    ) -> Result<String, TaskError> {
        if let Some(ack) = generation.and_then(|g| self.repeated(agent, g, kind)) {
            return Ok(ack);
        }
        self.check_holder(agent, generation)?;
        let event = match kind {
            ReportKind::UsageLimited => "usage_limited",
            _ => "rejected",
        };
        let held = self.generation;
        self.close_attempt(held, event, reason.as_deref(), None, now);
        self.requeue();
        self.record(
            event,
            now,
            json!({"agent_id": agent, "generation": held, "reason": reason}),
        );
        self.remember(agent, held, kind, event);
        Ok(event.into())
    }

    /// `task_blocked`: the task waits for help; the agent is free. Then the
    /// blocked-work `policy` (the task's own, else `default`) applies: `wait` leaves
    /// it blocked, `requeue` sets `unblock_at` (see [`Task::unblock_due`]), `route`
    /// puts it back in the queue at once for agents with the capability it `needs`.
    pub(crate) fn block(
        &mut self,
        report: BlockReport<'_>,
        default: BlockedPolicy,
        default_delay_ms: u64,
        now: i64,
    ) -> Result<String, TaskError> {
        let BlockReport {
            agent,
            generation,
            reason,
            needs,
        } = report;
        if let Some(ack) = self.repeated(agent, generation, ReportKind::Blocked) {
            return Ok(ack);
        }
        self.check_holder(agent, Some(generation))?;
        let policy = self.blocked_policy.unwrap_or(default);
        let delay = self.blocked_requeue_ms.unwrap_or(default_delay_ms);
        self.close_attempt(generation, "blocked", Some(&reason), None, now);
        self.status = TaskStatus::Blocked;
        self.last_error = Some(reason.clone());
        self.blocked_at = Some(now);
        self.needs = needs.clone();
        self.record(
            "blocked",
            now,
            json!({"agent_id": agent, "generation": generation, "reason": reason,
                   "needs": needs, "policy": policy.as_str()}),
        );
        self.remember(agent, generation, ReportKind::Blocked, "blocked");
        match (policy, needs) {
            (BlockedPolicy::Wait, _) => {}
            (BlockedPolicy::Route, Some(needs)) => {
                let previous =
                    std::mem::replace(&mut self.needed_capabilities, vec![needs.clone()]);
                self.requeue();
                self.clear_blocked();
                self.record(
                    "routed",
                    now,
                    json!({"needed_capabilities": [needs], "previous_capabilities": previous,
                           "policy": "route"}),
                );
            }
            (BlockedPolicy::Route | BlockedPolicy::Requeue, _) => {
                self.unblock_at = Some(now.saturating_add(delay as i64));
            }
        }
        Ok("blocked".into())
    }

    /// The `requeue` policy's delay has passed: back to the queue. Refused unless
    /// the task is blocked with `unblock_at` at or before `now`.
    pub(crate) fn unblock_due(&mut self, now: i64) -> Result<(), TaskError> {
        if self.status != TaskStatus::Blocked || self.unblock_at.is_none_or(|at| at > now) {
            return Err(TaskError::InvalidState(self.status));
        }
        self.requeue();
        self.clear_blocked();
        self.record("requeued", now, json!({"policy": "requeue"}));
        Ok(())
    }

    /// A dependency dead-lettered, was cancelled or is itself blocked by one: the
    /// queued task cannot run and waits, blocked, for an operator.
    pub(crate) fn block_on_dependency(
        &mut self,
        dependency: &str,
        dependency_status: TaskStatus,
        now: i64,
    ) -> Result<(), TaskError> {
        if self.status != TaskStatus::Queued {
            return Err(TaskError::InvalidState(self.status));
        }
        let reason = format!("dependency {dependency} is {}", dependency_status.as_str());
        self.status = TaskStatus::Blocked;
        self.last_error = Some(reason.clone());
        self.blocked_at = Some(now);
        self.needs = None;
        self.unblock_at = None;
        self.blocked_on = Some(dependency.to_string());
        self.record(
            "blocked",
            now,
            json!({"reason": reason, "dependency": dependency,
                   "dependency_status": dependency_status.as_str()}),
        );
        Ok(())
    }

    /// Operator: a queued task moves to another priority lane (keeps its place
    /// by creation order within the lane).
    pub(crate) fn set_priority(
        &mut self,
        priority: u8,
        by: &str,
        now: i64,
    ) -> Result<u8, TaskError> {
        if self.status != TaskStatus::Queued {
            return Err(TaskError::InvalidState(self.status));
        }
        let previous = self.priority;
        self.priority = priority;
        self.record(
            "priority_changed",
            now,
            json!({"by": by, "previous_priority": previous, "priority": priority}),
        );
        Ok(previous)
    }

    /// Operator: an unfinished task goes to dead letter now (its holder, if any,
    /// loses it). Returns the previous status.
    pub(crate) fn force_dead_letter(
        &mut self,
        by: &str,
        now: i64,
    ) -> Result<TaskStatus, TaskError> {
        let previous = self.status;
        if previous.is_terminal() {
            return Err(TaskError::InvalidState(previous));
        }
        let holder = self.assigned_to.clone();
        if previous.is_held() {
            self.close_attempt(self.generation, "dead_letter", Some("operator"), None, now);
            self.generation += 1;
        }
        self.status = TaskStatus::DeadLetter;
        self.last_error = Some(format!("dead-lettered by {by}"));
        self.clear_blocked();
        self.record(
            "dead_letter",
            now,
            json!({"by": by, "forced": true, "previous_status": previous.as_str(),
                   "agent_id": holder}),
        );
        Ok(previous)
    }

    /// Takes the task back from `agent` (disconnect, acceptance timeout, lease
    /// expiry, overdue, the agent disabled). Not a failure, but counted toward
    /// `max_reclaims`, except when an operator disabled the agent (nothing the task
    /// did, so repeated disables never dead-letter it).
    pub(crate) fn reclaim(
        &mut self,
        agent: &str,
        generation: u64,
        reason: &str,
        now: i64,
    ) -> Result<ReclaimOutcome, TaskError> {
        self.check_holder(agent, Some(generation))?;
        if reason != RECLAIM_AGENT_DISABLED {
            self.reclaim_count += 1;
        }
        self.close_attempt(generation, "reclaimed", Some(reason), None, now);
        if self.reclaim_count > self.max_reclaims {
            self.status = TaskStatus::DeadLetter;
            self.last_error = Some("too_many_reclaims".into());
            self.record(
                "dead_letter",
                now,
                json!({"agent_id": agent, "generation": generation, "reason": reason,
                       "error": "too_many_reclaims", "reclaim_count": self.reclaim_count}),
            );
            return Ok(ReclaimOutcome::DeadLettered);
        }
        self.requeue();
        self.record(
            "reclaimed",
            now,
            json!({"agent_id": agent, "generation": generation, "reason": reason,
                   "reclaim_count": self.reclaim_count}),
        );
        Ok(ReclaimOutcome::Requeued)
    }

    /// Operator cancel of an unfinished task, or of a dead-lettered one (the
    /// operator's decision that it will not run again). Returns the previous status.
    pub(crate) fn cancel(&mut self, by: &str, now: i64) -> Result<TaskStatus, TaskError> {
        let previous = self.status;
        if previous.is_terminal() && previous != TaskStatus::DeadLetter {
            return Err(TaskError::InvalidState(previous));
        }
        if previous.is_held() {
            self.close_attempt(self.generation, "cancelled", Some(by), None, now);
        }
        self.status = TaskStatus::Cancelled;
        self.clear_blocked();
        self.record(
            "cancelled",
            now,
            json!({"by": by, "previous_status": previous.as_str(),
                   "agent_id": self.assigned_to, "generation": self.generation}),
        );
        Ok(previous)
    }

    /// Operator retry (force retry): a dead-lettered, blocked, cancelled or
    /// assigned task goes back to the queue with fresh retry and reclaim budgets,
    /// in its old place. An assigned task's holder loses it (new generation).
    /// Returns the previous status.
    pub(crate) fn force_retry(&mut self, by: &str, now: i64) -> Result<TaskStatus, TaskError> {
        let previous = self.status;
        if !matches!(
            previous,
            TaskStatus::DeadLetter
                | TaskStatus::Blocked
                | TaskStatus::Cancelled
                | TaskStatus::Assigned
                | TaskStatus::InputRequired
        ) {
            return Err(TaskError::InvalidState(previous));
        }
        let holder = self.assigned_to.clone();
        if previous.is_held() {
            self.close_attempt(
                self.generation,
                "reclaimed",
                Some("operator_retry"),
                None,
                now,
            );
        }
        self.requeue();
        self.retry_count = 0;
        self.reclaim_count = 0;
        self.completed_at = None;
        self.clear_blocked();
        let event = if previous == TaskStatus::DeadLetter {
            "retried_from_dead_letter"
        } else {
            "force_retried"
        };
        self.record(
            event,
            now,
            json!({"by": by, "previous_status": previous.as_str(), "agent_id": holder}),
        );
        Ok(previous)
    }
}
