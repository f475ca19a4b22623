//! Task submissions (PROTOCOL.md section 3, `POST /api/tasks`): the schema of one
//! spec, `parse_task_spec`, and `parse_task_specs` for every list of specs (HTTP
//! batches, a completion's follow-ups, standing orders).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::approvals::ApprovalStage;
use crate::budgets::{check_limit, Limit};
use crate::flow::{Notify, MAX_DEPENDS_ON};
use crate::priority::{parse_priority, PRIORITY_NORMAL};
use crate::schema::{check_fields, id, opt, req, str_list, Field, FieldError, Kind};

/// Longest task description accepted (characters).
pub const MAX_DESCRIPTION: usize = 10_000;

/// Schema of one task submission (`POST /api/tasks`).
pub const TASK_SPEC_FIELDS: &[Field] = &[
    req(
        "description",
        Kind::Str {
            max: MAX_DESCRIPTION,
            non_empty: true,
        },
    ),
    opt("priority", Kind::Any),
    opt("metadata", Kind::Object),
    opt("max_retries", Kind::UInt),
    opt("complete_by", Kind::UInt),
    opt("needed_capabilities", Kind::StrList),
    opt("lease_ms", Kind::UInt),
    opt("max_reclaims", Kind::UInt),
    opt(
        "dedupe_key",
        Kind::Str {
            max: MAX_DEDUPE_KEY,
            non_empty: true,
        },
    ),
    opt("depends_on", Kind::StrList),
    opt("ref", id(MAX_REF)),
    opt("run_after", Kind::UInt),
    opt("correlation_id", id(128)),
    opt("blocked_policy", id(16)),
    opt("blocked_requeue_ms", Kind::UInt),
    opt("stall_ms", Kind::UInt),
    opt("max_runtime_ms", Kind::UInt),
    opt("repo", id(MAX_REPO)),
    opt("write_paths", Kind::StrList),
    opt("read_paths", Kind::StrList),
    opt("concurrency_key", id(MAX_CONCURRENCY_KEY)),
    opt("approval", id(16)),
    opt("merge_on_approval", Kind::Bool),
    opt("parent_task_id", id(128)),
    opt("budget_tokens", Kind::UInt),
    opt("budget_usd", Kind::Number),
    opt("inputs_from", Kind::StrList),
    opt("notify", id(16)),
    opt("depends_on_correlation", id(128)),
    opt("context_keys", Kind::StrList),
];

/// Longest `concurrency_key` (ext).
pub const MAX_CONCURRENCY_KEY: usize = 128;

/// Longest `repo` name of a write scope (ext).
pub const MAX_REPO: usize = 256;

/// Longest `dedupe_key` (ext).
pub const MAX_DEDUPE_KEY: usize = 256;
/// Longest batch-local `ref` name (ext).
pub const MAX_REF: usize = 64;
/// Most follow-up tasks one `task_complete` may carry (ext).
pub const MAX_FOLLOW_UPS: usize = 50;
/// Longest delay of the `requeue` blocked-work policy (ms): a week.
pub const MAX_BLOCKED_REQUEUE_MS: u64 = 7 * 24 * 3_600_000;

/// What happens to a task an agent reports blocked (ext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedPolicy {
    /// Back to the queue after `blocked_requeue_ms`.
    Requeue,
    /// Back to the queue at once for agents with the capability the agent said it
    /// `needs` (`agent:<id>` names one agent); without `needs`, like `requeue`.
    Route,
    /// Stays blocked until an operator retries or cancels it.
    Wait,
}

impl BlockedPolicy {
    pub fn parse(s: &str) -> Option<BlockedPolicy> {
        match s {
            "requeue" => Some(BlockedPolicy::Requeue),
            "route" => Some(BlockedPolicy::Route),
            "wait" => Some(BlockedPolicy::Wait),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlockedPolicy::Requeue => "requeue",
            BlockedPolicy::Route => "route",
            BlockedPolicy::Wait => "wait",
        }
    }
}

/// Shortest and longest per-task `stall_ms` / `max_runtime_ms` (ms): a second
/// to a week.
pub const AGENT_LIMIT_RANGE_MS: (u64, u64) = (1_000, 7 * 24 * 3_600_000);

/// Most retries or reclaims a task may allow.
pub const MAX_RETRY_LIMIT: u64 = 100;
/// Shortest and longest per-task lease (ms).
pub const LEASE_RANGE_MS: (u64, u64) = (1_000, 7 * 24 * 3_600_000);

/// A validated task submission (`POST /api/tasks`, one element).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    pub description: String,
    pub priority: u8,
    pub metadata: Map<String, Value>,
    pub max_retries: Option<u32>,
    pub complete_by: Option<i64>,
    /// Sorted and without repeats: the task's capability signature.
    pub needed_capabilities: Vec<String>,
    pub lease_ms: Option<u64>,
    pub max_reclaims: Option<u32>,
    /// While a task with this key is unfinished, a submit with the same key gets
    /// that task instead of a new one (ext).
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// Tasks (ids, or `ref`s of other entries of the same batch) that must complete
    /// before this one is scheduled (ext).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// This entry's name inside its batch, for other entries' `depends_on` (ext).
    #[serde(default, rename = "ref")]
    pub batch_ref: Option<String>,
    /// Not scheduled before this time (ms since the epoch) (ext).
    #[serde(default)]
    pub run_after: Option<i64>,
    /// Groups a task with its follow-ups; defaults to the task's own id (ext).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// What to do when an agent reports the task blocked (default: the hub's).
    #[serde(default)]
    pub blocked_policy: Option<BlockedPolicy>,
    /// Delay of the `requeue` policy (default: the hub's).
    #[serde(default)]
    pub blocked_requeue_ms: Option<u64>,
    /// No agent activity for this long: the sidecar fails the attempt `stalled`.
    #[serde(default)]
    pub stall_ms: Option<u64>,
    /// Longest one attempt may run: the sidecar fails it `timeout`.
    #[serde(default)]
    pub max_runtime_ms: Option<u64>,
    /// The repository `write_paths` and `read_paths` are relative to (ext).
    #[serde(default)]
    pub repo: Option<String>,
    /// Gitignore-style globs of what the task may write: no two tasks whose
    /// writes can overlap (or a write and a read) in one repository run at once
    /// (ext).
    #[serde(default)]
    pub write_paths: Vec<String>,
    /// Globs of what the task reads: only writes conflict with them (ext).
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// Caps how many tasks of the key run at once (an operator's limit) and
    /// groups them for round-robin service within a priority (ext).
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// A person approves the task before it starts or before its completion
    /// counts (ext, PROTOCOL.md 6.27).
    #[serde(default)]
    pub approval: Option<ApprovalStage>,
    /// Once a `before_complete` approval is given, the holder's sidecar merges
    /// the pull request of the result (ext).
    #[serde(default)]
    pub merge_on_approval: bool,
    /// What the task may spend (ext, PROTOCOL.md 6.28): over it, the task is
    /// paused until an operator raises the budget.
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// The task this one was handed off from (ext, #21): it joins the
    /// parent's correlation unless it names its own.
    #[serde(default)]
    pub parent_task_id: Option<String>,
    /// Dependencies (a subset of `depends_on`) whose results the assignment
    /// carries (ext, PROTOCOL.md 6.32).
    #[serde(default)]
    pub inputs_from: Vec<String>,
    /// Tell the submitter when the task ends (ext).
    #[serde(default)]
    pub notify: Option<Notify>,
    /// Fan-in: depend on every task of this correlation id as well (ext).
    #[serde(default)]
    pub depends_on_correlation: Option<String>,
    /// Shared context keys the assignment carries (ext, PROTOCOL.md 6.33).
    #[serde(default)]
    pub context_keys: Vec<String>,
}

/// Validates one task submission. Field names in errors are prefixed with `prefix`
/// (for batch submits, `"[3]."`).
pub fn parse_task_spec(v: &Value, prefix: &str) -> Result<TaskSpec, Vec<FieldError>> {
    let Value::Object(obj) = v else {
        return Err(vec![FieldError::new(
            prefix.trim_end_matches('.'),
            "wrong_type",
            "a task must be a JSON object",
        )]);
    };
    let mut errors = check_fields(obj, TASK_SPEC_FIELDS);
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let priority = match present("priority") {
        None => PRIORITY_NORMAL,
        Some(p) => parse_priority(p).unwrap_or_else(|e| {
            errors.push(e);
            PRIORITY_NORMAL
        }),
    };
    let uint = |k: &str| present(k).and_then(Value::as_u64);
    let mut limited = |k: &str, lo: u64, hi: u64| -> Option<u64> {
        let n = uint(k)?;
        if n < lo || n > hi {
            errors.push(FieldError::new(
                k,
                "invalid_value",
                format!("must be between {lo} and {hi}"),
            ));
            return None;
        }
        Some(n)
    };
    let max_retries = limited("max_retries", 0, MAX_RETRY_LIMIT).map(|n| n as u32);
    let max_reclaims = limited("max_reclaims", 0, MAX_RETRY_LIMIT).map(|n| n as u32);
    let lease_ms = limited("lease_ms", LEASE_RANGE_MS.0, LEASE_RANGE_MS.1);
    let complete_by = limited("complete_by", 0, i64::MAX as u64).map(|n| n as i64);
    let run_after = limited("run_after", 0, i64::MAX as u64).map(|n| n as i64);
    let blocked_requeue_ms = limited("blocked_requeue_ms", 0, MAX_BLOCKED_REQUEUE_MS);
    let (lo, hi) = AGENT_LIMIT_RANGE_MS;
    let stall_ms = limited("stall_ms", lo, hi);
    let max_runtime_ms = limited("max_runtime_ms", lo, hi);
    let blocked_policy = match present("blocked_policy").and_then(Value::as_str) {
        None => None,
        Some(p) => BlockedPolicy::parse(p).or_else(|| {
            errors.push(FieldError::new(
                "blocked_policy",
                "invalid_value",
                "expected requeue, route or wait",
            ));
            None
        }),
    };
    let approval = match present("approval").and_then(Value::as_str) {
        None => None,
        Some(a) => ApprovalStage::parse(a).or_else(|| {
            errors.push(FieldError::new(
                "approval",
                "invalid_value",
                "expected before_start or before_complete",
            ));
            None
        }),
    };
    let merge_on_approval = present("merge_on_approval").and_then(Value::as_bool) == Some(true);
    if merge_on_approval && approval != Some(ApprovalStage::BeforeComplete) {
        errors.push(FieldError::new(
            "merge_on_approval",
            "invalid_value",
            "needs approval before_complete (the reviewer sees the pull request first)",
        ));
    }
    let budget = check_limit(obj, ("budget_tokens", "budget_usd"), "").unwrap_or_else(|e| {
        errors.extend(e);
        Limit::default()
    });
    let list_of = |k: &str| str_list(obj, k);
    let depends_on = list_of("depends_on");
    let mut seen = std::collections::HashSet::new();
    if depends_on.iter().any(|d| !seen.insert(d.as_str())) {
        errors.push(FieldError::new(
            "depends_on",
            "invalid_value",
            "lists a task twice",
        ));
    }
    if depends_on.len() > MAX_DEPENDS_ON {
        errors.push(FieldError::new(
            "depends_on",
            "invalid_value",
            format!("at most {MAX_DEPENDS_ON} tasks"),
        ));
    }
    let context_keys = list_of("context_keys");
    errors.extend(crate::context::check_context_keys(&context_keys));
    let inputs_from = list_of("inputs_from");
    if let Some(stray) = inputs_from.iter().find(|i| !depends_on.contains(i)) {
        errors.push(FieldError::new(
            "inputs_from",
            "invalid_value",
            format!("{stray:?} is not in depends_on (inputs come from dependencies)"),
        ));
    }
    let notify = match present("notify").and_then(Value::as_str) {
        None => None,
        Some(n) => Notify::parse(n).or_else(|| {
            errors.push(FieldError::new(
                "notify",
                "invalid_value",
                "expected message or event",
            ));
            None
        }),
    };
    let str_of = |k: &str| present(k).and_then(Value::as_str).map(str::to_string);
    let (write_paths, read_paths) = (list_of("write_paths"), list_of("read_paths"));
    if (!write_paths.is_empty() || !read_paths.is_empty()) && str_of("repo").is_none() {
        errors.push(FieldError::new(
            "repo",
            "required",
            "write_paths and read_paths are relative to a repo: name it",
        ));
    }
    if !errors.is_empty() {
        for e in &mut errors {
            e.field = format!("{prefix}{}", e.field);
        }
        return Err(errors);
    }
    let mut caps = list_of("needed_capabilities");
    caps.sort();
    caps.dedup();
    Ok(TaskSpec {
        description: present("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        priority,
        metadata: present("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        max_retries,
        complete_by,
        needed_capabilities: caps,
        lease_ms,
        max_reclaims,
        dedupe_key: str_of("dedupe_key"),
        depends_on,
        batch_ref: str_of("ref"),
        run_after,
        correlation_id: str_of("correlation_id"),
        blocked_policy,
        blocked_requeue_ms,
        stall_ms,
        max_runtime_ms,
        repo: str_of("repo"),
        write_paths,
        read_paths,
        concurrency_key: str_of("concurrency_key"),
        approval,
        merge_on_approval,
        budget_tokens: budget.tokens,
        budget_usd: budget.usd,
        parent_task_id: str_of("parent_task_id"),
        inputs_from,
        notify,
        depends_on_correlation: str_of("depends_on_correlation"),
        context_keys,
    })
}

/// Validates a list of task submissions, all or nothing: every entry's errors
/// are reported, each field name prefixed by `prefix(index)` (`"[3]."` for an
/// HTTP batch, `"follow_ups[3]."` for a completion's follow-ups).
pub fn parse_task_specs(
    items: &[Value],
    prefix: impl Fn(usize) -> String,
) -> Result<Vec<TaskSpec>, Vec<FieldError>> {
    let mut specs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_task_spec(item, &prefix(i)) {
            Ok(spec) => specs.push(spec),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_spec_sorts_capabilities() {
        let v = serde_json::json!({"description":"d","needed_capabilities":["b","a","b"]});
        let spec = parse_task_spec(&v, "").unwrap();
        assert_eq!(spec.needed_capabilities, vec!["a", "b"]);
        assert_eq!(spec.priority, PRIORITY_NORMAL);
    }

    #[test]
    fn a_list_of_specs_reports_every_bad_entry_with_its_prefix() {
        let items = vec![
            serde_json::json!({"description": "ok"}),
            serde_json::json!({"description": ""}),
            serde_json::json!("not an object"),
        ];
        let errors = parse_task_specs(&items, |i| format!("[{i}].")).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["[1].description", "[2]"]);
        let specs = parse_task_specs(&items[..1], |i| format!("[{i}].")).unwrap();
        assert_eq!(specs.len(), 1);
    }
}
