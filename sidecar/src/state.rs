//! The durable local state directory.
//!
//! ```text
//! state_dir/
//!   current.json          the task in the agent's first slot (TaskRecord), if any
//!   current-<n>.json      the task in slot n (n ≥ 1) of an agent with slots
//!   outbox/<seq>.json     lifecycle reports not yet acknowledged (OutboxEntry)
//!   tasks/<task_id>.json  the assignment as handed to the agent (TASK_JSON_FILE)
//!   git/<task_id>.json    what `git submit` did for the task (pr_url)
//!   archive/              result files of reported tasks, moved out of results_dir
//!   quarantine/           corrupt state files, moved aside (never deleted)
//!   logs/wake-<id>.log    output of the wake command
//! ```
//!
//! Every write is atomic: the bytes go to a temporary file that is fsynced, then
//! renamed over the target, then the directory is fsynced. A reader therefore
//! sees the old or the new file, never half of one.
//!
//! Architecture invariant: this module knows file layout and encodings, not what
//! the relay does with them; it never talks to the hub.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use agentcom_protocol::{ClientFrame, Spend, TaskAssignment};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a task id can be used as a file name (the hub's ids always can; a
/// hostile id like `../x` is refused before anything touches the disk).
pub fn safe_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Where the agent's work on a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Persisted and accepted; not woken yet.
    Accepted,
    /// A wake attempt is running or about to.
    Waking,
    /// Woken; waiting for `results/<id>.started`.
    AwaitingStart,
    /// The agent confirmed; waiting for `results/<id>.json`.
    Working,
    /// The outcome is known (`report`); waiting for the hub's ack.
    Reporting,
    /// The agent asked a question (ext); the hub has it; waiting for the
    /// answer, then the agent is woken again with it.
    AwaitingAnswer,
    /// The hub holds the completion for a person's approval (ext, 6.27):
    /// approved, it is done (or merged first); rejected, the agent is woken
    /// again with the reason.
    AwaitingApproval,
    /// Approved with a merge: `gh pr merge` runs, then `task_merged`.
    Merging,
    /// Over a budget (ext, 6.28): the agent's process group is stopped
    /// (SIGSTOP) and `results/<id>.paused` written, until the hub says resume.
    Paused,
}

/// The outcome of a task, kept until the hub acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FinalReport {
    Complete {
        result: Map<String, Value>,
        #[serde(default)]
        tokens_used: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
        /// Tasks to hand off with the completion (the result's `follow_ups`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        follow_ups: Vec<Value>,
    },
    Failed {
        reason: String,
        error: String,
        /// The agent asked for a retry no sooner than this (result `failed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u64>,
        /// Retrying cannot help (result `failed_terminal`): dead-letter now.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        terminal: bool,
    },
    /// The agent cannot go on without something (result `blocked`).
    Blocked {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needs: Option<String>,
    },
    /// The agent's provider refuses work until `resets_at` (ms; result
    /// `usage_limited`): the task goes back unspent, the group pauses.
    UsageLimited {
        resets_at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent asks a question and waits (result `input_required`, ext):
    /// not an end; the answer wakes it again.
    InputRequired {
        question: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// What the attempt had spent when it asked (ext, 6.28).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spent: Option<Spend>,
    },
    /// The approved pull request was merged, or could not be (ext, 6.27).
    Merged {
        merged: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The completion the approval was for (reported again if the agent
        /// is woken after a failed merge, it is replaced).
        result: Map<String, Value>,
    },
}

impl FinalReport {
    /// A retryable failure.
    pub fn failed(reason: impl Into<String>, error: impl Into<String>) -> FinalReport {
        FinalReport::Failed {
            reason: reason.into(),
            error: error.into(),
            retry_after_s: None,
            terminal: false,
        }
    }

    /// The frame reporting this outcome at `generation`.
    pub fn frame(&self, task_id: &str, generation: u64) -> ClientFrame {
        match self {
            FinalReport::Complete {
                result,
                tokens_used,
                cost_usd,
                follow_ups,
            } => ClientFrame::TaskComplete {
                task_id: task_id.to_string(),
                generation,
                result: Some(result.clone()),
                tokens_used: *tokens_used,
                cost_usd: *cost_usd,
                follow_ups: (!follow_ups.is_empty()).then(|| follow_ups.clone()),
            },
            FinalReport::Failed {
                reason,
                error,
                retry_after_s,
                terminal,
            } => ClientFrame::TaskFailed {
                task_id: task_id.to_string(),
                generation,
                error: Some(error.clone()),
                reason: Some(reason.clone()),
                retry_after_s: *retry_after_s,
                terminal: terminal.then_some(true),
            },
            FinalReport::Blocked { reason, needs } => ClientFrame::TaskBlocked {
                task_id: task_id.to_string(),
                generation,
                reason: reason.clone(),
                needs: needs.clone(),
            },
            FinalReport::UsageLimited { resets_at, reason } => ClientFrame::UsageLimited {
                resets_at: *resets_at,
                task_id: Some(task_id.to_string()),
                generation: Some(generation),
                reason: reason.clone(),
            },
            FinalReport::InputRequired {
                question,
                options,
                default,
                timeout_ms,
                ..
            } => ClientFrame::TaskInputRequired {
                task_id: task_id.to_string(),
                generation,
                question: question.clone(),
                options: (!options.is_empty()).then(|| options.clone()),
                default: default.clone(),
                timeout_ms: *timeout_ms,
            },
            FinalReport::Merged {
                merged,
                method,
                error,
                ..
            } => ClientFrame::TaskMerged {
                task_id: task_id.to_string(),
                generation,
                merged: *merged,
                method: method.clone(),
                error: error.clone(),
            },
        }
    }

    /// What the attempt had spent in all when this was reported.
    pub fn spent(&self) -> Option<Spend> {
        match self {
            FinalReport::Complete {
                tokens_used,
                cost_usd,
                ..
            } if tokens_used.is_some() || cost_usd.is_some() => Some(Spend {
                tokens: tokens_used.unwrap_or(0),
                cost_usd: cost_usd.unwrap_or(0.0),
            }),
            FinalReport::InputRequired { spent, .. } => *spent,
            _ => None,
        }
    }

    /// The result of a completion (or of the one a merge was for).
    pub fn result(&self) -> Option<&Map<String, Value>> {
        match self {
            FinalReport::Complete { result, .. } | FinalReport::Merged { result, .. } => {
                Some(result)
            }
            _ => None,
        }
    }
}

/// A task this agent holds (`current.json`, or `current-<n>.json` in slot n).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The latest assignment; its `generation` is the one reports carry.
    pub assignment: TaskAssignment,
    pub phase: Phase,
    /// Wake attempts started so far.
    #[serde(default)]
    pub wake_attempts: u32,
    /// Process group of the woken command (it may outlive the command itself).
    #[serde(default)]
    pub pgid: Option<i32>,
    /// Wall-clock deadline (ms) for `.started` after a successful wake.
    #[serde(default)]
    pub confirm_deadline_ms: Option<u64>,
    #[serde(default)]
    pub report: Option<FinalReport>,
    /// Set after `task_reassign` (or a refused report): the task is no longer
    /// ours; until this time (ms) the hub may still hand it straight back.
    #[serde(default)]
    pub released_until_ms: Option<u64>,
    /// The hub's onboarding check: completed by the sidecar itself.
    #[serde(default)]
    pub onboarding: bool,
    /// The latest answer to the agent's question (ext): handed to the agent
    /// when it is woken again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Spent by the agent's earlier wakes of this attempt (before an answer
    /// or a rework woke it again): reports add the current wake's to it.
    #[serde(default)]
    pub spend_base: Spend,
    /// While paused for a budget: the hub's question and the phase to go
    /// back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PausedFor>,
    pub accepted_at_ms: u64,
}

/// Why and from where a task is paused (ext, 6.28).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PausedFor {
    pub question_id: u32,
    pub phase: Phase,
}

impl TaskRecord {
    pub fn new(assignment: TaskAssignment) -> TaskRecord {
        let onboarding = assignment.metadata.get("onboarding") == Some(&Value::Bool(true));
        TaskRecord {
            assignment,
            phase: Phase::Accepted,
            wake_attempts: 0,
            pgid: None,
            confirm_deadline_ms: None,
            report: None,
            released_until_ms: None,
            onboarding,
            answer: None,
            spend_base: Spend::default(),
            paused: None,
            accepted_at_ms: now_ms(),
        }
    }

    pub fn task_id(&self) -> &str {
        &self.assignment.task_id
    }

    pub fn generation(&self) -> u64 {
        self.assignment.generation
    }

    pub fn is_released(&self) -> bool {
        self.released_until_ms.is_some()
    }
}

/// An answer from the hub to the agent's question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub question_id: u32,
    pub answer: String,
    pub answered_by: String,
    /// `approval` for a decision on a held completion (ext, 6.27).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The reviewer's reason (a rejection, a failed merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One lifecycle report waiting for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: u64,
    pub task_id: String,
    pub frame: ClientFrame,
    pub created_at_ms: u64,
}

impl OutboxEntry {
    /// Final reports (complete / failed) stay until the hub answers them; progress
    /// and wake results have no answer and go once written to an identified socket.
    pub fn is_final(&self) -> bool {
        matches!(
            self.frame,
            ClientFrame::TaskComplete { .. }
                | ClientFrame::TaskFailed { .. }
                | ClientFrame::TaskBlocked { .. }
                | ClientFrame::TaskInputRequired { .. }
                | ClientFrame::TaskMerged { .. }
                | ClientFrame::UsageLimited {
                    task_id: Some(_),
                    ..
                }
        )
    }

    /// The same report at another generation.
    pub fn set_generation(&mut self, generation: u64) {
        match &mut self.frame {
            ClientFrame::TaskComplete { generation: g, .. }
            | ClientFrame::TaskFailed { generation: g, .. }
            | ClientFrame::TaskBlocked { generation: g, .. }
            | ClientFrame::TaskInputRequired { generation: g, .. }
            | ClientFrame::TaskMerged { generation: g, .. } => *g = generation,
            ClientFrame::TaskProgress { generation: g, .. } => *g = Some(generation),
            _ => {}
        }
    }
}

/// What was found on disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The tasks held, with their slot numbers, by slot.
    pub records: Vec<(usize, TaskRecord)>,
    pub outbox: BTreeMap<u64, OutboxEntry>,
    /// Corrupt files that were moved aside: (original, new place, parse error).
    pub quarantined: Vec<(PathBuf, PathBuf, String)>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    next_seq: u64,
}

const CURRENT: &str = "current.json";

impl StateDir {
    /// Opens (creating the layout) and loads what is there. Corrupt files are
    /// moved into `quarantine/` and listed in [`Loaded::quarantined`].
    pub fn open(root: &Path) -> io::Result<(StateDir, Loaded)> {
        for sub in [
            "",
            "outbox",
            "tasks",
            "git",
            "archive",
            "quarantine",
            "logs",
        ] {
            fs::create_dir_all(root.join(sub))?;
        }
        let mut dir = StateDir {
            root: root.to_path_buf(),
            next_seq: 1,
        };
        let mut loaded = Loaded::default();
        for slot in slot_files(root)? {
            let current = slot_path(root, slot);
            match fs::read(&current) {
                Ok(bytes) => match serde_json::from_slice::<TaskRecord>(&bytes) {
                    Ok(r) if safe_task_id(r.task_id()) => loaded.records.push((slot, r)),
                    Ok(r) => {
                        let why = format!("unsafe task id {:?}", r.task_id());
                        let moved = dir.quarantine(&current)?;
                        loaded.quarantined.push((current.clone(), moved, why));
                    }
                    Err(e) => {
                        let moved = dir.quarantine(&current)?;
                        loaded
                            .quarantined
                            .push((current.clone(), moved, e.to_string()));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut names: Vec<PathBuf> = fs::read_dir(root.join("outbox"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for path in names {
            let is_entry = path.extension().is_some_and(|e| e == "json");
            if !is_entry {
                // A temporary file from an interrupted write: never renamed, so
                // never part of the outbox.
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<OutboxEntry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => {
                    dir.next_seq = dir.next_seq.max(entry.seq + 1);
                    loaded.outbox.insert(entry.seq, entry);
                }
                Err(why) => {
                    let moved = dir.quarantine(&path)?;
                    loaded.quarantined.push((path, moved, why));
                }
            }
        }
        Ok((dir, loaded))
    }

    fn quarantine(&self, path: &Path) -> io::Result<PathBuf> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".into());
        let target = self
            .root
            .join("quarantine")
            .join(format!("{name}.corrupt-{}", now_ms()));
        fs::rename(path, &target)?;
        sync_dir(&self.root.join("quarantine"))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(target)
    }

    /// Durably replaces the record of `slot`.
    pub fn save_record(&self, slot: usize, record: &TaskRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomic(&slot_path(&self.root, slot), &bytes)
    }

    /// Durably removes the record of `slot`.
    pub fn clear_record(&self, slot: usize) -> io::Result<()> {
        remove_durably(&slot_path(&self.root, slot))
    }

    /// Durably adds a report to the outbox.
    pub fn push_outbox(&mut self, task_id: &str, frame: ClientFrame) -> io::Result<OutboxEntry> {
        let entry = OutboxEntry {
            seq: self.next_seq,
            task_id: task_id.to_string(),
            frame,
            created_at_ms: now_ms(),
        };
        self.write_outbox(&entry)?;
        self.next_seq += 1;
        Ok(entry)
    }

    /// Durably rewrites an outbox entry (same seq).
    pub fn write_outbox(&self, entry: &OutboxEntry) -> io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        write_atomic(&self.outbox_path(entry.seq), &bytes)
    }

    pub fn remove_outbox(&self, seq: u64) -> io::Result<()> {
        remove_durably(&self.outbox_path(seq))
    }

    fn outbox_path(&self, seq: u64) -> PathBuf {
        self.root.join("outbox").join(format!("{seq:020}.json"))
    }

    /// Writes the assignment the agent reads (`TASK_JSON_FILE`); returns its path.
    pub fn write_task_json(&self, task_id: &str, json: &Value) -> io::Result<PathBuf> {
        let path = self.root.join("tasks").join(format!("{task_id}.json"));
        let bytes = serde_json::to_vec_pretty(json).map_err(io::Error::other)?;
        write_atomic(&path, &bytes)?;
        Ok(path)
    }

    pub fn task_json_path(&self, task_id: &str) -> PathBuf {
        self.root.join("tasks").join(format!("{task_id}.json"))
    }

    pub fn wake_log_path(&self, task_id: &str) -> PathBuf {
        self.root.join("logs").join(format!("wake-{task_id}.log"))
    }

    pub fn git_record_path(&self, task_id: &str) -> PathBuf {
        git_record_path(&self.root, task_id)
    }

    /// Moves the task's result files out of `results_dir` (so a later assignment
    /// of the same task id never sees them) and drops its task file.
    pub fn archive_results(&self, results_dir: &Path, task_id: &str, generation: u64) {
        for suffix in [
            "json",
            "started",
            "progress",
            "heartbeat",
            "answer.json",
            "paused",
            "claude.json",
        ] {
            let from = results_dir.join(format!("{task_id}.{suffix}"));
            if from.exists() {
                let to = self
                    .root
                    .join("archive")
                    .join(format!("{task_id}-g{generation}-{}.{suffix}", now_ms()));
                if let Err(e) = fs::rename(&from, &to) {
                    tracing::warn!(task_id, error = %e, path = %from.display(), "cannot archive result file");
                }
            }
        }
        let _ = fs::remove_file(self.task_json_path(task_id));
        let _ = fs::remove_file(self.git_record_path(task_id));
    }
}

/// The record file of `slot`: `current.json` for the first, else
/// `current-<slot>.json`.
fn slot_path(root: &Path, slot: usize) -> PathBuf {
    if slot == 0 {
        root.join(CURRENT)
    } else {
        root.join(format!("current-{slot}.json"))
    }
}

/// The slots with a record file (or a corrupt one), in order.
fn slot_files(root: &Path) -> io::Result<Vec<usize>> {
    let mut slots: Vec<usize> = fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == CURRENT {
                return Some(0);
            }
            name.strip_prefix("current-")?
                .strip_suffix(".json")?
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
        })
        .collect();
    slots.sort_unstable();
    Ok(slots)
}

/// The tasks held in a state directory (for `fleet list`: read only, corrupt
/// files skipped), by slot.
pub fn held_records(state_dir: &Path) -> Vec<TaskRecord> {
    slot_files(state_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|slot| fs::read(slot_path(state_dir, slot)).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

/// `<state_dir>/git/<task_id>.json`.
pub fn git_record_path(state_dir: &Path, task_id: &str) -> PathBuf {
    state_dir.join("git").join(format!("{task_id}.json"))
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename,
/// fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = parent.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(parent)
}

/// Like [`write_atomic`], creating the file with mode 0600 (it holds a secret).
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = parent.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(parent)
}

fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assignment(id: &str) -> TaskAssignment {
        TaskAssignment {
            task_id: id.into(),
            description: "d".into(),
            metadata: json!({}),
            generation: 3,
            assigned_at: 1,
            priority: 2,
            attempt: 1,
            lease_ms: 300_000,
            needed_capabilities: vec![],
            stall_ms: None,
            max_runtime_ms: None,
            repo: None,
            write_paths: vec![],
            read_paths: vec![],
            approval: None,
            merge_on_approval: false,
            budget_tokens: None,
            budget_usd: None,
            inputs: None,
            context: None,
        }
    }

    #[test]
    fn record_and_outbox_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut dir, loaded) = StateDir::open(tmp.path()).expect("open");
        assert!(loaded.records.is_empty());
        let rec = TaskRecord::new(assignment("task-1"));
        dir.save_record(0, &rec).expect("save");
        let rec2 = TaskRecord::new(assignment("task-2"));
        dir.save_record(2, &rec2).expect("save");
        let report = FinalReport::failed("r", "e");
        let e1 = dir
            .push_outbox("task-1", report.frame("task-1", 3))
            .expect("push");
        let e2 = dir
            .push_outbox("task-1", report.frame("task-1", 3))
            .expect("push");
        dir.remove_outbox(e1.seq).expect("remove");
        let (mut dir2, loaded) = StateDir::open(tmp.path()).expect("reopen");
        assert_eq!(loaded.records, vec![(0, rec), (2, rec2.clone())]);
        assert_eq!(held_records(tmp.path()).len(), 2);
        dir2.clear_record(2).expect("clear");
        assert_eq!(held_records(tmp.path()).len(), 1);
        assert_eq!(loaded.outbox.len(), 1);
        assert_eq!(loaded.outbox.get(&e2.seq), Some(&e2));
        let e3 = dir2
            .push_outbox("task-1", report.frame("task-1", 3))
            .expect("push");
        assert!(e3.seq > e2.seq, "sequence continues after reopen");
    }

    #[test]
    fn corrupt_files_are_moved_aside_and_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        StateDir::open(tmp.path()).expect("open");
        fs::write(tmp.path().join(CURRENT), b"{\"assignment\": tru").expect("write");
        fs::write(
            tmp.path().join("outbox").join("00000000000000000007.json"),
            b"[]",
        )
        .expect("write");
        let (_, loaded) = StateDir::open(tmp.path()).expect("reopen");
        assert!(loaded.records.is_empty());
        assert_eq!(loaded.quarantined.len(), 2, "{:?}", loaded.quarantined);
        for (_, moved, _) in &loaded.quarantined {
            assert!(moved.exists(), "{moved:?} kept");
        }
        assert!(!tmp.path().join(CURRENT).exists());
    }

    #[test]
    fn hostile_task_ids_are_not_file_names() {
        assert!(safe_task_id("task-0123456789abcdef"));
        for bad in ["", "../x", "a/b", ".hidden", "x\0y"] {
            assert!(!safe_task_id(bad), "{bad:?}");
        }
    }
}
