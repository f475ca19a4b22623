//! The task record and the rules of its life (PROTOCOL.md section 2).
//!
//! Every state change of a task is a method here that either applies the whole
//! change or returns an error and changes nothing. The methods are pure: no I/O,
//! no clock (the caller passes `now`), so the rules are unit-tested directly.
//!
//! Architecture invariant: this module knows nothing of actors, storage or agents'
//! connections. `TaskQueue` is its only caller that mutates tasks.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::protocol::{BlockedPolicy, TaskAssignment, TaskSpec, STANDING_SUBMITTER};

/// How many history entries a task record keeps (the API returns these; the event
/// log keeps them all).
pub(crate) const HISTORY_KEPT: usize = 50;
/// The reclaim reason when an operator disables the holder (not counted).
pub(crate) const RECLAIM_AGENT_DISABLED: &str = "agent_disabled";
/// How many attempt records a task keeps (the oldest go first, counted).
pub(crate) const ATTEMPTS_KEPT: usize = 100;
/// How many accepted terminal reports are remembered for idempotent repeats.
const REPORTS_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskStatus {
    Queued,
    Assigned,
    Blocked,
    Completed,
    DeadLetter,
    Cancelled,
}

impl TaskStatus {
    pub(crate) const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Assigned,
        TaskStatus::Blocked,
        TaskStatus::Completed,
        TaskStatus::DeadLetter,
        TaskStatus::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Completed => "completed",
            TaskStatus::DeadLetter => "dead_letter",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Completed, dead-lettered and cancelled tasks never change again on their own.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::DeadLetter | TaskStatus::Cancelled
        )
    }
}

/// One entry of a task's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HistoryEntry {
    pub event: String,
    pub ts: i64,
    pub details: Value,
}

/// An accepted terminal report, remembered so a repeat is acknowledged again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ReportRecord {
    pub agent_id: String,
    pub generation: u64,
    pub kind: ReportKind,
    pub ack: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReportKind {
    Complete,
    Failed,
    Rejected,
    Blocked,
    UsageLimited,
}

/// Why a report or operation was refused. The string forms are the wire forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskError {
    NotFound,
    InvalidState(TaskStatus),
    NotOwner,
    StaleGeneration,
    /// Its write scope conflicts with a running task's (it waits for it).
    ScopeBusy,
    /// Its concurrency key is at its limit (it waits for a slot of the key).
    ConcurrencyLimit,
}

impl TaskError {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            TaskError::NotFound => "not_found",
            TaskError::InvalidState(_) => "invalid_state",
            TaskError::NotOwner => "not_owner",
            TaskError::StaleGeneration => "stale_generation",
            TaskError::ScopeBusy => "scope_busy",
            TaskError::ConcurrencyLimit => "concurrency_limit",
        }
    }
}

/// One assignment of a task and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Attempt {
    pub attempt: u32,
    pub agent_id: String,
    pub generation: u64,
    pub assigned_at: i64,
    pub accepted_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// `completed`, `failed`, `rejected`, `blocked`, `reclaimed`, `cancelled`,
    /// `dead_letter` (operator); none while the attempt runs.
    pub outcome: Option<String>,
    /// Why it ended that way (reclaim reason, block or reject reason, operator).
    pub cause: Option<String>,
    pub error: Option<String>,
}

/// What a reclaim did to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReclaimOutcome {
    Requeued,
    DeadLettered,
}

/// The durable task record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Task {
    pub id: String,
    /// Creation order; the queue position of the task for its whole life.
    pub seq: u64,
    pub status: TaskStatus,
    pub priority: u8,
    pub description: String,
    pub metadata: Map<String, Value>,
    pub needed_capabilities: Vec<String>,
    pub assigned_to: Option<String>,
    pub assigned_at: Option<i64>,
    pub accepted_at: Option<i64>,
    pub generation: u64,
    /// Number of assignments so far.
    pub attempt: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub max_retries: u32,
    pub retry_count: u32,
    pub reclaim_count: u32,
    pub max_reclaims: u32,
    pub complete_by: Option<i64>,
    pub lease_ms: u64,
    pub result: Option<Map<String, Value>>,
    pub tokens_used: Option<u64>,
    pub last_error: Option<String>,
    pub submitted_by: String,
    pub history: Vec<HistoryEntry>,
    pub reports: Vec<ReportRecord>,
    /// See `TaskSpec::dedupe_key`.
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// Tasks that must complete before this one is scheduled.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Not scheduled before this time (ms).
    #[serde(default)]
    pub run_after: Option<i64>,
    /// The task whose completion created this one (a follow-up).
    #[serde(default)]
    pub parent_task_id: Option<String>,
    /// Shared by a task and all its follow-ups; `None` in records older than the
    /// field means the task's own id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub blocked_policy: Option<BlockedPolicy>,
    #[serde(default)]
    pub blocked_requeue_ms: Option<u64>,
    /// While blocked: since when, what the agent said it needs, and when the
    /// `requeue` policy puts it back.
    #[serde(default)]
    pub blocked_at: Option<i64>,
    #[serde(default)]
    pub needs: Option<String>,
    #[serde(default)]
    pub unblock_at: Option<i64>,
    /// While blocked because a dependency cannot complete: that dependency.
    #[serde(default)]
    pub blocked_on: Option<String>,
    /// The newest `ATTEMPTS_KEPT` assignments; `attempts_dropped` older ones went.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default)]
    pub attempts_dropped: u32,
    /// See `TaskSpec::stall_ms` and `TaskSpec::max_runtime_ms`: passed to the
    /// agent's sidecar with the assignment.
    #[serde(default)]
    pub stall_ms: Option<u64>,
    #[serde(default)]
    pub max_runtime_ms: Option<u64>,
    /// The holder's latest progress report with a percentage or a message
    /// (cleared by a new assignment).
    #[serde(default)]
    pub progress: Option<Progress>,
    /// The write scope (see `TaskSpec::write_paths`): the repository, and what
    /// the task writes and reads in it.
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub write_paths: Vec<String>,
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// See `TaskSpec::concurrency_key`.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// How many history entries this copy recorded (not stored): the queue
    /// compares it before and after a change to find the entries the change added
    /// (see [`Task::recorded_since`]).
    #[serde(skip)]
    pub recorded: u64,
}

/// The latest `task_progress` of the current (or last) attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub at: i64,
    pub generation: u64,
}

/// A `task_failed` report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FailReport {
    pub error: String,
    /// The agent's short reason (`agent_exited`, `stalled`, ...), when it gave one.
    pub reason: Option<String>,
    /// Retry no sooner than this (seconds); replaces the backoff.
    pub retry_after_s: Option<u64>,
    /// Dead-letter now.
    pub terminal: bool,
}

/// When a retryable failure goes back to the queue: full-jitter exponential
/// backoff, `min(max_ms, base_ms × 2^(failures−1))` scaled by a random unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

/// Longest `retry_after_s` honoured: a week.
pub(crate) const MAX_RETRY_AFTER_S: u64 = 7 * 24 * 3600;

impl Backoff {
    /// The cap of the delay after the `failures`-th failure.
    pub(crate) fn cap_ms(&self, failures: u32) -> u64 {
        let doubling = 1u64
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(doubling).min(self.max_ms)
    }

    /// The delay after the `failures`-th failure; `unit` in [0, 1) is the
    /// jitter. The agent's `retry_after_s` wins when given.
    pub(crate) fn delay_ms(&self, failures: u32, retry_after_s: Option<u64>, unit: f64) -> u64 {
        if let Some(s) = retry_after_s {
            return s.min(MAX_RETRY_AFTER_S) * 1000;
        }
        (self.cap_ms(failures) as f64 * unit.clamp(0.0, 1.0)) as u64
    }
}

/// Defaults a submission falls back on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskDefaults {
    pub max_retries: u32,
    pub max_reclaims: u32,
    pub lease_ms: u64,
}

impl Task {
    /// A new queued task from a validated submission.
    pub(crate) fn new(
        id: String,
        seq: u64,
        spec: TaskSpec,
        submitted_by: &str,
        defaults: TaskDefaults,
        now: i64,
    ) -> Task {
        let mut task = Task {
            id,
            seq,
            status: TaskStatus::Queued,
            priority: spec.priority,
            description: spec.description,
            metadata: spec.metadata,
            needed_capabilities: spec.needed_capabilities,
            assigned_to: None,
            assigned_at: None,
            accepted_at: None,
            generation: 0,
            attempt: 0,
            created_at: now,
            updated_at: now,
            completed_at: None,
            max_retries: spec.max_retries.unwrap_or(defaults.max_retries),
            retry_count: 0,
            reclaim_count: 0,
            max_reclaims: spec.max_reclaims.unwrap_or(defaults.max_reclaims),
            complete_by: spec.complete_by,
            lease_ms: spec.lease_ms.unwrap_or(defaults.lease_ms),
            result: None,
            tokens_used: None,
            last_error: None,
            submitted_by: submitted_by.to_string(),
            history: Vec::new(),
            reports: Vec::new(),
            dedupe_key: spec.dedupe_key,
            depends_on: spec.depends_on,
            run_after: spec.run_after,
            parent_task_id: None,
            correlation_id: spec.correlation_id,
            blocked_policy: spec.blocked_policy,
            blocked_requeue_ms: spec.blocked_requeue_ms,
            blocked_at: None,
            needs: None,
            unblock_at: None,
            blocked_on: None,
            attempts: Vec::new(),
            attempts_dropped: 0,
            stall_ms: spec.stall_ms,
            max_runtime_ms: spec.max_runtime_ms,
            progress: None,
            repo: spec.repo,
            write_paths: spec.write_paths,
            read_paths: spec.read_paths,
            concurrency_key: spec.concurrency_key,
            recorded: 0,
        };
        if task.correlation_id.is_none() {
            task.correlation_id = Some(task.id.clone());
        }
        let mut details = json!({"priority": task.priority, "submitted_by": submitted_by});
        if !task.depends_on.is_empty() {
            details["depends_on"] = json!(task.depends_on);
        }
        if let Some(at) = task.run_after {
            details["run_after"] = json!(at);
        }
        if let Some(repo) = &task.repo {
            details["repo"] = json!(repo);
            details["write_paths"] = json!(task.write_paths);
            details["read_paths"] = json!(task.read_paths);
        }
        task.record("queued", now, details);
        task
    }

    /// The correlation id (the task's own id for records older than the field).
    pub(crate) fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.id)
    }

    /// Ends the running attempt of `generation`, if any.
    fn close_attempt(
        &mut self,
        generation: u64,
        outcome: &str,
        cause: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) {
        if let Some(a) = self
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.generation == generation && a.outcome.is_none())
        {
            a.outcome = Some(outcome.to_string());
            a.cause = cause.map(str::to_string);
            a.error = error.map(str::to_string);
            a.finished_at = Some(now);
        }
    }

    fn clear_blocked(&mut self) {
        self.blocked_at = None;
        self.needs = None;
        self.unblock_at = None;
        self.blocked_on = None;
    }

    fn record(&mut self, event: &str, now: i64, details: Value) {
        self.recorded += 1;
        self.updated_at = now;
        self.history.push(HistoryEntry {
            event: event.to_string(),
            ts: now,
            details,
        });
        if self.history.len() > HISTORY_KEPT {
            let extra = self.history.len() - HISTORY_KEPT;
            self.history.drain(..extra);
        }
    }

    /// The history entries recorded since `recorded` was `before`: counted, not
    /// searched for, so an entry equal to an earlier one (the same progress frame
    /// twice in a millisecond) is found too. All of them while a change records at
    /// most `HISTORY_KEPT`.
    pub(crate) fn recorded_since(&self, before: u64) -> &[HistoryEntry] {
        let added = usize::try_from(self.recorded.saturating_sub(before)).unwrap_or(usize::MAX);
        &self.history[self.history.len().saturating_sub(added)..]
    }

    /// The ack of an earlier accepted report this one repeats, if any.
    fn repeated(&self, agent: &str, generation: u64, kind: ReportKind) -> Option<String> {
        self.reports
            .iter()
            .find(|r| r.agent_id == agent && r.generation == generation && r.kind == kind)
            .map(|r| r.ack.clone())
    }

    fn remember(&mut self, agent: &str, generation: u64, kind: ReportKind, ack: &str) {
        self.reports.push(ReportRecord {
            agent_id: agent.to_string(),
            generation,
            kind,
            ack: ack.to_string(),
        });
        if self.reports.len() > REPORTS_KEPT {
            self.reports.remove(0);
        }
    }

    /// Fencing: only the current holder with the current generation may report.
    pub(crate) fn check_holder(
        &self,
        agent: &str,
        generation: Option<u64>,
    ) -> Result<(), TaskError> {
        if generation.is_some_and(|g| g != self.generation) {
            return Err(TaskError::StaleGeneration);
        }
        if self.status != TaskStatus::Assigned {
            return Err(TaskError::InvalidState(self.status));
        }
        if self.assigned_to.as_deref() != Some(agent) {
            return Err(TaskError::NotOwner);
        }
        Ok(())
    }

    /// Back to the queue: a new generation fences every report of the old one.
    fn requeue(&mut self) {
        self.status = TaskStatus::Queued;
        self.generation += 1;
        self.assigned_to = None;
        self.assigned_at = None;
        self.accepted_at = None;
    }

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

    /// A run of a standing order: it may use an agent's slot kept for those.
    pub(crate) fn is_standing_run(&self) -> bool {
        self.submitted_by == STANDING_SUBMITTER
    }

    /// Its round-robin group within a priority: its concurrency key, else the
    /// correlation id it was given (or inherited), if any.
    pub(crate) fn fairness_group(&self) -> Option<&str> {
        self.concurrency_key
            .as_deref()
            .or(self.correlation_id.as_deref().filter(|c| *c != self.id))
    }

    /// The `task_assign` push for the current assignment.
    pub(crate) fn assignment(&self) -> TaskAssignment {
        TaskAssignment {
            task_id: self.id.clone(),
            description: self.description.clone(),
            metadata: Value::Object(self.metadata.clone()),
            generation: self.generation,
            assigned_at: self.assigned_at.unwrap_or(self.updated_at),
            priority: self.priority,
            attempt: self.attempt,
            lease_ms: self.lease_ms,
            needed_capabilities: self.needed_capabilities.clone(),
            stall_ms: self.stall_ms,
            max_runtime_ms: self.max_runtime_ms,
            repo: self.repo.clone(),
            write_paths: self.write_paths.clone(),
            read_paths: self.read_paths.clone(),
        }
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
        if previous == TaskStatus::Assigned {
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
        if previous == TaskStatus::Assigned {
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
        ) {
            return Err(TaskError::InvalidState(previous));
        }
        let holder = self.assigned_to.clone();
        if previous == TaskStatus::Assigned {
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

    /// The task as the HTTP API shows it.
    pub(crate) fn view(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "status": self.status.as_str(),
            "priority": self.priority,
            "description": self.description,
            "metadata": self.metadata,
            "needed_capabilities": self.needed_capabilities,
            "assigned_to": self.assigned_to,
            "assigned_at": self.assigned_at,
            "accepted_at": self.accepted_at,
            "generation": self.generation,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "max_retries": self.max_retries,
            "retry_count": self.retry_count,
            "reclaim_count": self.reclaim_count,
            "max_reclaims": self.max_reclaims,
            "complete_by": self.complete_by,
            "lease_ms": self.lease_ms,
            "result": self.result,
            "tokens_used": self.tokens_used,
            "last_error": self.last_error,
            "submitted_by": self.submitted_by,
            "dedupe_key": self.dedupe_key,
            "depends_on": self.depends_on,
            "run_after": self.run_after,
            "parent_task_id": self.parent_task_id,
            "correlation_id": self.correlation(),
            "blocked_policy": self.blocked_policy.map(BlockedPolicy::as_str),
            "blocked_at": self.blocked_at,
            "needs": self.needs,
            "unblock_at": self.unblock_at,
            "blocked_on": self.blocked_on,
            "stall_ms": self.stall_ms,
            "max_runtime_ms": self.max_runtime_ms,
            "progress": self.progress,
            "repo": self.repo,
            "write_paths": self.write_paths,
            "read_paths": self.read_paths,
            "history": self.history,
        });
        v["concurrency_key"] = json!(self.concurrency_key);
        v
    }

    /// The attempt records as the API shows them.
    pub(crate) fn attempts_view(&self) -> Value {
        json!({
            "task_id": self.id,
            "status": self.status.as_str(),
            "attempts": self.attempts,
            "attempts_dropped": self.attempts_dropped,
        })
    }
}

/// A `task_blocked` report.
pub(crate) struct BlockReport<'a> {
    pub agent: &'a str,
    pub generation: u64,
    pub reason: String,
    pub needs: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_BACKOFF: Backoff = Backoff {
        base_ms: 0,
        max_ms: 0,
    };

    fn plain(error: &str) -> FailReport {
        FailReport {
            error: error.into(),
            reason: None,
            retry_after_s: None,
            terminal: false,
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter_and_retry_after_wins() {
        let b = Backoff {
            base_ms: 5_000,
            max_ms: 600_000,
        };
        assert_eq!(b.cap_ms(1), 5_000);
        assert_eq!(b.cap_ms(2), 10_000);
        assert_eq!(b.cap_ms(3), 20_000);
        assert_eq!(b.cap_ms(8), 600_000);
        assert_eq!(b.cap_ms(200), 600_000);
        assert_eq!(b.delay_ms(3, None, 0.5), 10_000);
        assert_eq!(b.delay_ms(3, None, 0.0), 0);
        assert_eq!(b.delay_ms(3, Some(7), 0.5), 7_000);
        assert_eq!(b.delay_ms(1, Some(u64::MAX), 0.5), MAX_RETRY_AFTER_S * 1000);
    }

    #[test]
    fn a_failure_waits_out_its_backoff_and_a_terminal_one_dead_letters() {
        let b = Backoff {
            base_ms: 1_000,
            max_ms: 60_000,
        };
        let mut t = task(5);
        t.assign("a", 10).unwrap();
        assert_eq!(t.fail("a", 1, plain("x"), b, 0.5, 100).unwrap(), "retried");
        assert_eq!(t.run_after, Some(600));
        t.assign("a", 700).unwrap();
        let mut report = plain("gone");
        report.retry_after_s = Some(30);
        report.reason = Some("agent_exited".into());
        assert_eq!(t.fail("a", 3, report, b, 0.5, 800).unwrap(), "retried");
        assert_eq!(t.run_after, Some(30_800));
        assert_eq!(t.attempts[1].cause.as_deref(), Some("agent_exited"));
        t.assign("a", 40_000).unwrap();
        let mut report = plain("no such repo");
        report.terminal = true;
        assert_eq!(
            t.fail("a", 5, report, b, 0.5, 40_001).unwrap(),
            "dead_letter"
        );
        assert_eq!(t.status, TaskStatus::DeadLetter);
        assert_eq!(t.retry_count, 3);
    }

    fn task(max_retries: u32) -> Task {
        let spec = TaskSpec {
            description: "d".into(),
            priority: 2,
            metadata: Map::new(),
            max_retries: Some(max_retries),
            complete_by: None,
            needed_capabilities: vec![],
            lease_ms: None,
            max_reclaims: Some(1),
            dedupe_key: None,
            depends_on: vec![],
            batch_ref: None,
            run_after: None,
            correlation_id: None,
            blocked_policy: None,
            blocked_requeue_ms: None,
            stall_ms: None,
            max_runtime_ms: None,
            repo: None,
            write_paths: vec![],
            read_paths: vec![],
            concurrency_key: None,
        };
        let defaults = TaskDefaults {
            max_retries: 3,
            max_reclaims: 5,
            lease_ms: 1000,
        };
        Task::new("task-1".into(), 1, spec, "admin", defaults, 0)
    }

    #[test]
    fn generations_fence_reports() {
        let mut t = task(2);
        assert_eq!(t.assign("a", 1).unwrap().generation, 1);
        assert_eq!(
            t.complete("a", 0, None, None, 2),
            Err(TaskError::StaleGeneration)
        );
        assert_eq!(t.complete("b", 1, None, None, 2), Err(TaskError::NotOwner));
        assert_eq!(
            t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 3).unwrap(),
            "retried"
        );
        assert_eq!(t.generation, 2);
        // A repeat of the accepted failure is acknowledged again and changes nothing.
        let before = t.clone();
        assert_eq!(
            t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 4).unwrap(),
            "retried"
        );
        assert_eq!(t, before);
        assert_eq!(t.assign("a", 5).unwrap().generation, 3);
        assert_eq!(
            t.fail("a", 3, plain("y"), NO_BACKOFF, 0.5, 6).unwrap(),
            "dead_letter"
        );
        assert_eq!(t.status, TaskStatus::DeadLetter);
        t.force_retry("admin", 7).unwrap();
        assert_eq!(
            (t.status, t.generation, t.retry_count),
            (TaskStatus::Queued, 4, 0)
        );
    }

    #[test]
    fn cancel_takes_unfinished_and_dead_lettered_tasks_only() {
        let mut t = task(0);
        t.assign("a", 1).unwrap();
        assert_eq!(
            t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 2).unwrap(),
            "dead_letter"
        );
        assert_eq!(t.cancel("admin", 3), Ok(TaskStatus::DeadLetter));
        assert_eq!(t.status, TaskStatus::Cancelled);
        assert_eq!(
            t.cancel("admin", 4),
            Err(TaskError::InvalidState(TaskStatus::Cancelled))
        );
        let mut done = task(0);
        done.assign("a", 1).unwrap();
        done.complete("a", 1, None, None, 2).unwrap();
        assert_eq!(
            done.cancel("admin", 3),
            Err(TaskError::InvalidState(TaskStatus::Completed))
        );
    }

    #[test]
    fn complete_is_idempotent() {
        let mut t = task(3);
        t.assign("a", 1).unwrap();
        assert_eq!(t.complete("a", 1, None, Some(5), 2).unwrap(), "complete");
        let before = t.clone();
        assert_eq!(t.complete("a", 1, None, Some(9), 3).unwrap(), "complete");
        assert_eq!(t, before);
        assert_eq!(
            t.complete("b", 1, None, None, 3),
            Err(TaskError::InvalidState(TaskStatus::Completed))
        );
    }

    #[test]
    fn reclaims_past_the_limit_dead_letter() {
        let mut t = task(3);
        t.assign("a", 1).unwrap();
        assert_eq!(
            t.reclaim("a", 1, "disconnect", 2),
            Ok(ReclaimOutcome::Requeued)
        );
        assert_eq!(
            t.reclaim("a", 1, "disconnect", 2),
            Err(TaskError::StaleGeneration)
        );
        t.assign("a", 3).unwrap();
        assert_eq!(
            t.reclaim("a", 3, "lease_expired", 4),
            Ok(ReclaimOutcome::DeadLettered)
        );
        assert_eq!(t.last_error.as_deref(), Some("too_many_reclaims"));
    }

    #[test]
    fn recorded_since_finds_repeated_entries_and_survives_the_cap() {
        let mut t = task(3);
        t.assign("a", 1).unwrap();
        for _ in 0..60 {
            let before = t.recorded;
            t.progress("a", None, None, None, 2).unwrap();
            assert_eq!(t.recorded_since(before).len(), 1);
        }
        let before = t.recorded;
        t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 3).unwrap();
        let added: Vec<&str> = t
            .recorded_since(before)
            .iter()
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(added, ["retry"]);
    }

    #[test]
    fn disabling_the_holder_does_not_use_up_the_reclaim_budget() {
        let mut t = task(3);
        for i in 0..5 {
            let g = t.assign("a", i).unwrap().generation;
            assert_eq!(
                t.reclaim("a", g, RECLAIM_AGENT_DISABLED, i),
                Ok(ReclaimOutcome::Requeued)
            );
        }
        assert_eq!(t.reclaim_count, 0);
        let last = t.attempts.last().expect("attempt");
        assert_eq!(
            (last.outcome.as_deref(), last.cause.as_deref()),
            (Some("reclaimed"), Some("agent_disabled"))
        );
    }

    #[test]
    fn history_is_capped() {
        let mut t = task(3);
        t.assign("a", 1).unwrap();
        for i in 0..100 {
            t.progress("a", None, Some(i), None, i as i64).unwrap();
        }
        assert_eq!(t.history.len(), HISTORY_KEPT);
    }
}
