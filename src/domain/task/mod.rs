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

use crate::protocol::{
    ApprovalStage, BlockedPolicy, Notify, Spend, TaskAssignment, TaskSpec, STANDING_SUBMITTER,
};

mod approvals;
mod budget;
mod questions;
mod transitions;
pub(crate) use approvals::{Decision, HeldCompletion};
pub(crate) use budget::BudgetHold;
pub(crate) use questions::{Ask, TimedOut};

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
    /// Its holder asked a question and waits for the answer (ext): it keeps
    /// the task, and its lease stops counting.
    InputRequired,
    Blocked,
    Completed,
    DeadLetter,
    Cancelled,
}

impl TaskStatus {
    pub(crate) const ALL: [TaskStatus; 7] = [
        TaskStatus::Queued,
        TaskStatus::Assigned,
        TaskStatus::InputRequired,
        TaskStatus::Blocked,
        TaskStatus::Completed,
        TaskStatus::DeadLetter,
        TaskStatus::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Assigned => "assigned",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Completed => "completed",
            TaskStatus::DeadLetter => "dead_letter",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// An agent holds it: assigned, or waiting for an answer to its question.
    pub(crate) fn is_held(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::InputRequired)
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
    /// An answer that is not one of the question's options.
    InvalidAnswer,
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
            TaskError::InvalidAnswer => "invalid_answer",
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
    /// See `TaskSpec::inputs_from`, `notify` and `depends_on_correlation`
    /// (ext, PROTOCOL.md 6.32); the fan-in's tasks are in `depends_on`.
    #[serde(default)]
    pub inputs_from: Vec<String>,
    #[serde(default)]
    pub notify: Option<Notify>,
    #[serde(default)]
    pub depends_on_correlation: Option<String>,
    /// See `TaskSpec::context_keys`.
    #[serde(default)]
    pub context_keys: Vec<String>,
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
    /// The holder's latest question (ext): waiting while the task is
    /// `input_required`, answered after.
    #[serde(default)]
    pub question: Option<Question>,
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
    /// See `TaskSpec::approval` and `TaskSpec::merge_on_approval` (ext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStage>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge_on_approval: bool,
    /// The holder's latest merge of the approved pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Merge>,
    /// See `TaskSpec::budget_tokens` (an operator may raise them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Spent by the attempts that ended, and the current attempt's running
    /// total as its holder reports it.
    #[serde(default)]
    pub spent: Spend,
    #[serde(default)]
    pub attempt_spent: Spend,
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

/// A question the holder asked (ext, PROTOCOL.md 6.26), and its answer once
/// someone gave it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Question {
    /// Rises with each question of the task (the agent matches answers by it).
    pub id: u32,
    pub question: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    pub asked_at: i64,
    /// Unanswered by then: the default applies, else the task fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<i64>,
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    /// Set when the hub asks a person to approve (ext, PROTOCOL.md 6.27).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Box<Approval>>,
    /// Set when the task went over a budget (ext, PROTOCOL.md 6.28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Box<BudgetHold>>,
}

/// What an approval question is about (ext, PROTOCOL.md 6.27).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Approval {
    pub stage: ApprovalStage,
    /// Why it is needed: the submitter asked, or the rules that matched.
    pub reasons: Vec<String>,
    /// The held completion (`before_complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<TaskSpec>,
    /// The reason of a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the holder's merge after this approval did (one per approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Merge>,
}

/// What the holder's sidecar reported of a merge (`task_merged`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Merge {
    pub merged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: i64,
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
            inputs_from: spec.inputs_from,
            notify: spec.notify,
            depends_on_correlation: spec.depends_on_correlation,
            context_keys: spec.context_keys,
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
            question: None,
            repo: spec.repo,
            write_paths: spec.write_paths,
            read_paths: spec.read_paths,
            concurrency_key: spec.concurrency_key,
            approval: spec.approval,
            merge_on_approval: spec.merge_on_approval,
            merge: None,
            budget_tokens: spec.budget_tokens,
            budget_usd: spec.budget_usd,
            spent: Spend::default(),
            attempt_spent: Spend::default(),
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
        if let Some(a) = task.approval {
            details["approval"] = json!(a.as_str());
        }
        task.record("queued", now, details);
        if task.approval == Some(ApprovalStage::BeforeStart) {
            task.await_start_approval(now);
        }
        task
    }

    /// An agent holds it (assigned, or waiting for an answer it asked for or a
    /// completion it reported); a task waiting for approval before it starts
    /// has no holder.
    pub(crate) fn is_held(&self) -> bool {
        self.status.is_held() && self.assigned_to.is_some()
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
        self.settle_spend();
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
        if !self.status.is_held() {
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
        // An unanswered question goes with the attempt that asked it.
        if self.question.as_ref().is_some_and(|q| q.answer.is_none()) {
            self.question = None;
        }
        self.generation += 1;
        self.assigned_to = None;
        self.assigned_at = None;
        self.accepted_at = None;
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
            approval: self.approval,
            merge_on_approval: self.merge_on_approval,
            budget_tokens: self.budget_tokens,
            budget_usd: self.budget_usd,
            inputs: None,
            context: None,
        }
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
        v["question"] = serde_json::to_value(&self.question).unwrap_or(Value::Null);
        v["concurrency_key"] = json!(self.concurrency_key);
        v["approval"] = json!(self.approval.map(ApprovalStage::as_str));
        v["merge_on_approval"] = json!(self.merge_on_approval);
        v["merge"] = serde_json::to_value(&self.merge).unwrap_or(Value::Null);
        v["budget_tokens"] = json!(self.budget_tokens);
        v["budget_usd"] = json!(self.budget_usd);
        v["spent"] = json!(self.total_spent());
        v["inputs_from"] = json!(self.inputs_from);
        v["notify"] = json!(self.notify.map(Notify::as_str));
        v["depends_on_correlation"] = json!(self.depends_on_correlation);
        v["context_keys"] = json!(self.context_keys);
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
pub(crate) mod tests;
