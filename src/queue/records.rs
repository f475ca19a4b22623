//! How a `Task` is stored: its spec (what never changes after creation) is
//! written once, its state (what a change changes) on every change, so a
//! transition costs what it changes, not the description and metadata again.
//! Both are encoded with the store's record encoding. A record written before
//! the split is a whole task and still reads.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::task::{
    Attempt, HistoryEntry, Merge, Progress, Question, ReportRecord, Task, TaskStatus,
};
use crate::error::StoreError;
use crate::protocol::{ApprovalStage, BlockedPolicy, Notify, Spend, STANDING_SUBMITTER};
use crate::storage::store::{decode, encode, seq_key};
use crate::storage::tasks::StoredTask;

/// What never changes after creation, as written.
#[derive(Serialize)]
struct SpecOut<'a> {
    id: &'a str,
    description: &'a str,
    metadata: &'a Map<String, Value>,
    needed_capabilities: &'a [String],
    created_at: i64,
    submitted_by: &'a str,
    dedupe_key: &'a Option<String>,
    depends_on: &'a [String],
    parent_task_id: &'a Option<String>,
    correlation_id: &'a Option<String>,
    blocked_policy: &'a Option<BlockedPolicy>,
    blocked_requeue_ms: Option<u64>,
    max_retries: u32,
    max_reclaims: u32,
    complete_by: Option<i64>,
    lease_ms: u64,
    stall_ms: Option<u64>,
    max_runtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo: &'a Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    write_paths: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    read_paths: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalStage>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    merge_on_approval: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    inputs_from: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<Notify>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on_correlation: &'a Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    context_keys: &'a [String],
}

/// What never changes after creation, as read.
#[derive(Deserialize)]
struct SpecIn {
    id: String,
    description: String,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    needed_capabilities: Vec<String>,
    created_at: i64,
    submitted_by: String,
    #[serde(default)]
    dedupe_key: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    parent_task_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    blocked_policy: Option<BlockedPolicy>,
    #[serde(default)]
    blocked_requeue_ms: Option<u64>,
    max_retries: u32,
    max_reclaims: u32,
    #[serde(default)]
    complete_by: Option<i64>,
    lease_ms: u64,
    #[serde(default)]
    stall_ms: Option<u64>,
    #[serde(default)]
    max_runtime_ms: Option<u64>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    write_paths: Vec<String>,
    #[serde(default)]
    read_paths: Vec<String>,
    #[serde(default)]
    concurrency_key: Option<String>,
    #[serde(default)]
    approval: Option<ApprovalStage>,
    #[serde(default)]
    merge_on_approval: bool,
    #[serde(default)]
    inputs_from: Vec<String>,
    #[serde(default)]
    notify: Option<Notify>,
    #[serde(default)]
    depends_on_correlation: Option<String>,
    #[serde(default)]
    context_keys: Vec<String>,
}

/// What a change changes, as written.
#[derive(Serialize)]
struct StateOut<'a> {
    status: TaskStatus,
    priority: u8,
    /// Routing (`blocked` with `needs`) changes them: the spec keeps the
    /// submitted ones, the state the current ones.
    #[serde(rename = "caps")]
    needed_capabilities: &'a [String],
    assigned_to: &'a Option<String>,
    assigned_at: Option<i64>,
    accepted_at: Option<i64>,
    generation: u64,
    attempt: u32,
    updated_at: i64,
    completed_at: Option<i64>,
    retry_count: u32,
    reclaim_count: u32,
    result: &'a Option<Map<String, Value>>,
    tokens_used: Option<u64>,
    last_error: &'a Option<String>,
    history: &'a [HistoryEntry],
    reports: &'a [ReportRecord],
    run_after: Option<i64>,
    blocked_at: Option<i64>,
    needs: &'a Option<String>,
    unblock_at: Option<i64>,
    blocked_on: &'a Option<String>,
    attempts: &'a [Attempt],
    attempts_dropped: u32,
    progress: &'a Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: &'a Option<Question>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merge: &'a Option<Merge>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Spend::is_zero")]
    spent: Spend,
    #[serde(skip_serializing_if = "Spend::is_zero")]
    attempt_spent: Spend,
}

/// What a change changes, as read.
#[derive(Deserialize)]
struct StateIn {
    status: TaskStatus,
    priority: u8,
    /// Absent in states written before routing was kept here: the spec's.
    #[serde(default, rename = "caps")]
    needed_capabilities: Option<Vec<String>>,
    #[serde(default)]
    assigned_to: Option<String>,
    #[serde(default)]
    assigned_at: Option<i64>,
    #[serde(default)]
    accepted_at: Option<i64>,
    generation: u64,
    attempt: u32,
    updated_at: i64,
    #[serde(default)]
    completed_at: Option<i64>,
    retry_count: u32,
    reclaim_count: u32,
    #[serde(default)]
    result: Option<Map<String, Value>>,
    #[serde(default)]
    tokens_used: Option<u64>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default)]
    reports: Vec<ReportRecord>,
    #[serde(default)]
    run_after: Option<i64>,
    #[serde(default)]
    blocked_at: Option<i64>,
    #[serde(default)]
    needs: Option<String>,
    #[serde(default)]
    unblock_at: Option<i64>,
    #[serde(default)]
    blocked_on: Option<String>,
    #[serde(default)]
    attempts: Vec<Attempt>,
    #[serde(default)]
    attempts_dropped: u32,
    #[serde(default)]
    progress: Option<Progress>,
    #[serde(default)]
    question: Option<Question>,
    #[serde(default)]
    merge: Option<Merge>,
    #[serde(default)]
    budget_tokens: Option<u64>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    spent: Spend,
    #[serde(default)]
    attempt_spent: Spend,
}

/// A task's spec record.
pub(super) fn encode_spec(t: &Task) -> Vec<u8> {
    encode(&SpecOut {
        id: &t.id,
        description: &t.description,
        metadata: &t.metadata,
        needed_capabilities: &t.needed_capabilities,
        created_at: t.created_at,
        submitted_by: &t.submitted_by,
        dedupe_key: &t.dedupe_key,
        depends_on: &t.depends_on,
        parent_task_id: &t.parent_task_id,
        correlation_id: &t.correlation_id,
        blocked_policy: &t.blocked_policy,
        blocked_requeue_ms: t.blocked_requeue_ms,
        max_retries: t.max_retries,
        max_reclaims: t.max_reclaims,
        complete_by: t.complete_by,
        lease_ms: t.lease_ms,
        stall_ms: t.stall_ms,
        max_runtime_ms: t.max_runtime_ms,
        repo: &t.repo,
        write_paths: &t.write_paths,
        read_paths: &t.read_paths,
        concurrency_key: &t.concurrency_key,
        approval: t.approval,
        merge_on_approval: t.merge_on_approval,
        inputs_from: &t.inputs_from,
        notify: t.notify,
        depends_on_correlation: &t.depends_on_correlation,
        context_keys: &t.context_keys,
    })
}

/// A task's state record.
pub(super) fn encode_state(t: &Task) -> Vec<u8> {
    encode(&StateOut {
        status: t.status,
        priority: t.priority,
        needed_capabilities: &t.needed_capabilities,
        assigned_to: &t.assigned_to,
        assigned_at: t.assigned_at,
        accepted_at: t.accepted_at,
        generation: t.generation,
        attempt: t.attempt,
        updated_at: t.updated_at,
        completed_at: t.completed_at,
        retry_count: t.retry_count,
        reclaim_count: t.reclaim_count,
        result: &t.result,
        tokens_used: t.tokens_used,
        last_error: &t.last_error,
        history: &t.history,
        reports: &t.reports,
        run_after: t.run_after,
        blocked_at: t.blocked_at,
        needs: &t.needs,
        unblock_at: t.unblock_at,
        blocked_on: &t.blocked_on,
        attempts: &t.attempts,
        attempts_dropped: t.attempts_dropped,
        progress: &t.progress,
        question: &t.question,
        merge: &t.merge,
        budget_tokens: t.budget_tokens,
        budget_usd: t.budget_usd,
        spent: t.spent,
        attempt_spent: t.attempt_spent,
    })
}

/// The task of `stored` (a spec and a state, or one whole older record).
pub(super) fn decode_task(stored: &StoredTask) -> Result<Task, StoreError> {
    let key = seq_key(stored.seq);
    let Some(spec) = &stored.spec else {
        let mut task: Task = decode("tasks", &key, &stored.state)?;
        task.seq = stored.seq;
        return Ok(task);
    };
    let spec: SpecIn = decode("task_specs", &key, spec)?;
    let state: StateIn = decode("tasks", &key, &stored.state)?;
    Ok(Task {
        id: spec.id,
        seq: stored.seq,
        status: state.status,
        priority: state.priority,
        description: spec.description,
        metadata: spec.metadata,
        needed_capabilities: state
            .needed_capabilities
            .unwrap_or(spec.needed_capabilities),
        assigned_to: state.assigned_to,
        assigned_at: state.assigned_at,
        accepted_at: state.accepted_at,
        generation: state.generation,
        attempt: state.attempt,
        created_at: spec.created_at,
        updated_at: state.updated_at,
        completed_at: state.completed_at,
        max_retries: spec.max_retries,
        retry_count: state.retry_count,
        reclaim_count: state.reclaim_count,
        max_reclaims: spec.max_reclaims,
        complete_by: spec.complete_by,
        lease_ms: spec.lease_ms,
        result: state.result,
        tokens_used: state.tokens_used,
        last_error: state.last_error,
        submitted_by: spec.submitted_by,
        history: state.history,
        reports: state.reports,
        dedupe_key: spec.dedupe_key,
        depends_on: spec.depends_on,
        run_after: state.run_after,
        parent_task_id: spec.parent_task_id,
        inputs_from: spec.inputs_from,
        notify: spec.notify,
        depends_on_correlation: spec.depends_on_correlation,
        context_keys: spec.context_keys,
        correlation_id: spec.correlation_id,
        blocked_policy: spec.blocked_policy,
        blocked_requeue_ms: spec.blocked_requeue_ms,
        blocked_at: state.blocked_at,
        needs: state.needs,
        unblock_at: state.unblock_at,
        blocked_on: state.blocked_on,
        attempts: state.attempts,
        attempts_dropped: state.attempts_dropped,
        stall_ms: spec.stall_ms,
        max_runtime_ms: spec.max_runtime_ms,
        progress: state.progress,
        question: state.question,
        repo: spec.repo,
        write_paths: spec.write_paths,
        read_paths: spec.read_paths,
        concurrency_key: spec.concurrency_key,
        approval: spec.approval,
        merge_on_approval: spec.merge_on_approval,
        merge: state.merge,
        budget_tokens: state.budget_tokens,
        budget_usd: state.budget_usd,
        spent: state.spent,
        attempt_spent: state.attempt_spent,
        recorded: 0,
    })
}

/// The few fields of a stored task that memory keeps of a queued one.
pub(super) struct QueuedFields {
    pub id: String,
    pub priority: u8,
    pub updated_at: i64,
    pub run_after: Option<i64>,
    pub needed_capabilities: Vec<String>,
    pub dedupe_key: Option<String>,
    pub depends_on: Vec<String>,
    /// The agent of the last attempt, if that attempt failed.
    pub avoid: Option<String>,
    pub repo: Option<String>,
    pub write_paths: Vec<String>,
    pub read_paths: Vec<String>,
    /// Its round-robin group (see `Task::fairness_group`).
    pub fair: Option<String>,
    pub concurrency_key: Option<String>,
    /// A standing-order run (see `Task::is_standing_run`).
    pub standing: bool,
}

#[derive(Deserialize)]
struct QueuedSpecIn {
    id: String,
    #[serde(default)]
    submitted_by: String,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    concurrency_key: Option<String>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    write_paths: Vec<String>,
    #[serde(default)]
    read_paths: Vec<String>,
    #[serde(default)]
    needed_capabilities: Vec<String>,
    #[serde(default)]
    dedupe_key: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Deserialize)]
struct AttemptIn {
    agent_id: String,
    #[serde(default)]
    outcome: Option<String>,
}

#[derive(Deserialize)]
struct QueuedStateIn {
    status: TaskStatus,
    priority: u8,
    #[serde(default, rename = "caps")]
    needed_capabilities: Option<Vec<String>>,
    updated_at: i64,
    #[serde(default)]
    run_after: Option<i64>,
    #[serde(default)]
    attempts: Vec<AttemptIn>,
}

/// Reads what memory keeps of a queued task without decoding the rest (a
/// restart loads a million of them). `None` when the task is not queued or its
/// record predates the spec/state split: then it is decoded whole.
pub(super) fn decode_queued(stored: &StoredTask) -> Result<Option<QueuedFields>, StoreError> {
    let Some(spec) = &stored.spec else {
        return Ok(None);
    };
    let key = seq_key(stored.seq);
    let state: QueuedStateIn = decode("tasks", &key, &stored.state)?;
    if state.status != TaskStatus::Queued {
        return Ok(None);
    }
    let spec: QueuedSpecIn = decode("task_specs", &key, spec)?;
    let avoid = state
        .attempts
        .into_iter()
        .last()
        .filter(|a| a.outcome.as_deref() == Some("failed"))
        .map(|a| a.agent_id);
    let fair = spec
        .concurrency_key
        .clone()
        .or(spec.correlation_id.filter(|c| *c != spec.id));
    Ok(Some(QueuedFields {
        fair,
        standing: spec.submitted_by == STANDING_SUBMITTER,
        concurrency_key: spec.concurrency_key,
        id: spec.id,
        priority: state.priority,
        updated_at: state.updated_at,
        run_after: state.run_after,
        needed_capabilities: state
            .needed_capabilities
            .unwrap_or(spec.needed_capabilities),
        dedupe_key: spec.dedupe_key,
        depends_on: spec.depends_on,
        avoid,
        repo: spec.repo,
        write_paths: spec.write_paths,
        read_paths: spec.read_paths,
    }))
}

/// A task of `spec` (JSON, as submitted) with fixed defaults, for the tests of
/// the modules that keep tasks.
#[cfg(test)]
pub(super) fn sample_task(spec: Value, id: &str, seq: u64) -> Task {
    use crate::domain::task::TaskDefaults;
    let spec = crate::protocol::parse_task_spec(&spec, "").expect("valid spec");
    let defaults = TaskDefaults {
        max_retries: 3,
        max_reclaims: 5,
        lease_ms: 1000,
    };
    let mut t = Task::new(id.into(), seq, spec, "admin", defaults, 100);
    t.recorded = 0;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> Task {
        sample_task(
            json!({
                "description": "d", "metadata": {"k": [1, "two"]}, "priority": "high",
                "needed_capabilities": ["gpu"], "dedupe_key": "x", "run_after": 5,
                "stall_ms": 60000, "repo": "web", "write_paths": ["src/**"]
            }),
            "task-1",
            7,
        )
    }

    #[test]
    fn spec_and_state_put_the_task_back_together() {
        let t = task();
        let stored = StoredTask {
            seq: 7,
            spec: Some(encode_spec(&t).into()),
            state: encode_state(&t).into(),
        };
        assert_eq!(decode_task(&stored).expect("decodes"), t);
        // A whole record of the older layout (JSON) reads too.
        let mut old = vec![crate::storage::store::FORMAT_JSON];
        old.extend(serde_json::to_vec(&t).expect("json"));
        let older = StoredTask {
            seq: 7,
            spec: None,
            state: old.into(),
        };
        assert_eq!(decode_task(&older).expect("decodes"), t);
        assert!(encode_state(&t).len() < encode(&t).len());
    }

    #[test]
    fn a_queued_task_reads_light_and_others_do_not() {
        let mut t = task();
        let stored = |t: &Task| StoredTask {
            seq: 7,
            spec: Some(encode_spec(t).into()),
            state: encode_state(t).into(),
        };
        let q = decode_queued(&stored(&t))
            .expect("decodes")
            .expect("queued");
        assert_eq!(
            (
                q.id.as_str(),
                q.priority,
                q.run_after,
                q.dedupe_key.as_deref()
            ),
            ("task-1", t.priority, Some(5), Some("x"))
        );
        assert_eq!(q.needed_capabilities, vec!["gpu".to_string()]);
        assert_eq!(q.avoid, None);
        assert_eq!((q.repo.as_deref(), q.write_paths.len()), (Some("web"), 1));
        // Routing changes the capabilities after the spec was written.
        let spec = encode_spec(&t);
        t.needed_capabilities = vec!["aws-creds".into()];
        let routed = StoredTask {
            seq: 7,
            spec: Some(spec.into()),
            state: encode_state(&t).into(),
        };
        assert_eq!(
            decode_queued(&routed)
                .expect("decodes")
                .expect("queued")
                .needed_capabilities,
            vec!["aws-creds".to_string()]
        );
        assert_eq!(
            decode_task(&routed).expect("decodes").needed_capabilities,
            vec!["aws-creds".to_string()]
        );
        t.status = TaskStatus::Assigned;
        assert!(decode_queued(&stored(&t)).expect("decodes").is_none());
    }
}
