//! The work on one task: wake the agent (with retries), wait for its `.started`
//! confirmation, then for its result file, and turn that into a [`FinalReport`].
//!
//! A worker starts from the phase its record is in, so after a restart it
//! resumes rather than starting over: a task already woken is not woken again,
//! and a result already written is used at once.
//!
//! Architecture invariant: the worker changes no state itself; it tells the relay
//! (which persists) through [`WorkerMsg`]s, and the relay may abort it at any
//! await point.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcom_protocol::{parse_task_specs, MAX_FOLLOW_UPS};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::liveness::{AgentWatch, Limits, Verdict};
use crate::relay::clip;
use crate::results::{self, AgentProgress, DirWatch, ResultFile};
use crate::state::{now_ms, FinalReport, Phase, TaskRecord};
use crate::wake::{self, Attempt, WakeEnv};

/// Results larger than this (serialized) are replaced by a summary, so a report
/// can never exceed the hub's frame limit and be refused forever.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;

/// Largest `TASK_JSON` passed in the environment.
const MAX_ENV_JSON: usize = 100 * 1024;

#[derive(Debug)]
pub enum WorkerMsg {
    /// Persist these fields of the record.
    Phase {
        phase: Phase,
        wake_attempts: u32,
        pgid: Option<i32>,
        confirm_deadline_ms: Option<u64>,
    },
    /// One wake attempt ended.
    Wake {
        attempt: u32,
        success: bool,
        error: Option<String>,
    },
    /// The agent's progress file changed.
    Progress(AgentProgress),
    /// The agent's processes ended; stop renewing the lease.
    AgentGone,
    Final(FinalReport),
}

pub struct WorkerCtx {
    pub cfg: Arc<Config>,
    pub record: TaskRecord,
    pub task_json_file: PathBuf,
    pub wake_log: PathBuf,
    pub git_record: PathBuf,
    pub epoch: u64,
    pub tx: mpsc::UnboundedSender<(u64, WorkerMsg)>,
}

impl WorkerCtx {
    fn tell(&self, msg: WorkerMsg) {
        // The relay dropping its receiver means the sidecar is stopping.
        let _ = self.tx.send((self.epoch, msg));
    }

    fn phase(&self, rec: &TaskRecord) {
        self.tell(WorkerMsg::Phase {
            phase: rec.phase,
            wake_attempts: rec.wake_attempts,
            pgid: rec.pgid,
            confirm_deadline_ms: rec.confirm_deadline_ms,
        });
    }

    /// This attempt's limits: the task's own `stall_ms` / `max_runtime_ms` win
    /// over the sidecar's.
    fn limits(&self, rec: &TaskRecord) -> Limits {
        let t = &self.cfg.timings;
        let a = &rec.assignment;
        let stall = a.stall_ms.map(Duration::from_millis).or(t.stall);
        let max_runtime = a
            .max_runtime_ms
            .map(Duration::from_millis)
            .or(t.max_runtime);
        Limits {
            mode: self.cfg.wake_mode,
            exit_grace: t.agent_exit_grace,
            stall,
            deadline_ms: max_runtime.map(|d| rec.accepted_at_ms + d.as_millis() as u64),
        }
    }

    fn wake_env(&self, rec: &TaskRecord) -> WakeEnv {
        let a = &rec.assignment;
        let task_json = serde_json::to_string(a).unwrap_or_default();
        let dir = &self.cfg.results_dir;
        let mut vars: Vec<(String, String)> = vec![
            ("TASK_ID".into(), a.task_id.clone()),
            ("TASK_DESCRIPTION".into(), a.description.clone()),
            (
                "TASK_JSON_FILE".into(),
                self.task_json_file.display().to_string(),
            ),
            ("TASK_GENERATION".into(), a.generation.to_string()),
            ("TASK_PRIORITY".into(), a.priority.to_string()),
            ("TASK_REPO".into(), a.repo.clone().unwrap_or_default()),
            ("TASK_WRITE_PATHS".into(), a.write_paths.join("\n")),
            ("TASK_READ_PATHS".into(), a.read_paths.join("\n")),
            ("AGENTCOM_AGENT_ID".into(), self.cfg.agent_id.clone()),
            ("AGENTCOM_RESULTS_DIR".into(), dir.display().to_string()),
            (
                "AGENTCOM_RESULT_FILE".into(),
                results::result_path(dir, &a.task_id).display().to_string(),
            ),
            (
                "AGENTCOM_STARTED_FILE".into(),
                results::started_path(dir, &a.task_id).display().to_string(),
            ),
            (
                "AGENTCOM_PROGRESS_FILE".into(),
                results::progress_path(dir, &a.task_id)
                    .display()
                    .to_string(),
            ),
            (
                "AGENTCOM_HEARTBEAT_FILE".into(),
                results::heartbeat_path(dir, &a.task_id)
                    .display()
                    .to_string(),
            ),
            (
                "AGENTCOM_SIDECAR_CONFIG".into(),
                self.cfg.path.display().to_string(),
            ),
            ("AGENTCOM_HUB_API_URL".into(), self.cfg.hub_api_url.clone()),
            (
                "AGENTCOM_HUB_API_URLS".into(),
                self.cfg.hub_api_urls.join(","),
            ),
        ];
        // One environment string may hold at most 128 KiB (Linux); a larger task
        // would make every wake fail, so it is then only in TASK_JSON_FILE.
        if task_json.len() <= MAX_ENV_JSON {
            vars.push(("TASK_JSON".into(), task_json.clone()));
        } else {
            tracing::warn!(task_id = %a.task_id, bytes = task_json.len(), "task too large for TASK_JSON; use TASK_JSON_FILE");
            vars.push(("TASK_JSON_SKIPPED".into(), "too_large".into()));
        }
        if let Some(repo) = &self.cfg.repo_dir {
            vars.push(("AGENTCOM_REPO_DIR".into(), repo.display().to_string()));
        }
        if a.context.is_some() {
            let ctx_dir = results::context_dir(dir, &a.task_id);
            vars.push(("TASK_CONTEXT_DIR".into(), ctx_dir.display().to_string()));
        }
        if let Some(answer) = &rec.answer {
            // Woken again with the answer to its question (ext, 6.26).
            vars.push(("TASK_ANSWER".into(), answer.answer.clone()));
            vars.push(("TASK_QUESTION_ID".into(), answer.question_id.to_string()));
            // A rejected completion or a failed merge: why (ext, 6.27).
            if let Some(note) = &answer.note {
                vars.push(("TASK_REVIEW".into(), note.clone()));
            }
            vars.push((
                "TASK_ANSWER_FILE".into(),
                results::answer_path(dir, &a.task_id).display().to_string(),
            ));
        }
        WakeEnv {
            vars,
            task_id: a.task_id.clone(),
            description: a.description.clone(),
            task_json,
        }
    }
}

/// Runs the task from its recorded phase to a final report.
pub async fn work(ctx: WorkerCtx) {
    let mut rec = ctx.record.clone();
    let dir = ctx.cfg.results_dir.clone();
    let task_id = rec.task_id().to_string();
    let t = ctx.cfg.timings.clone();
    let mut watch = DirWatch::new(&dir, t.results_poll);
    let mut agent = AgentWatch::new(
        ctx.limits(&rec),
        rec.pgid,
        ctx.wake_log.clone(),
        vec![
            ctx.wake_log.clone(),
            results::heartbeat_path(&dir, &task_id),
            results::progress_path(&dir, &task_id),
        ],
    );

    // 1. Wake, unless the agent already started (or finished) this task.
    if matches!(rec.phase, Phase::Accepted | Phase::Waking) && !results::started(&dir, &task_id) {
        match wake_with_retries(&ctx, &mut rec).await {
            Err(report) => {
                ctx.tell(WorkerMsg::Final(report));
                return;
            }
            Ok(child) => {
                agent.set_pgid(rec.pgid);
                if let Some(child) = child {
                    agent.adopt_child(child);
                }
            }
        }
        rec.phase = Phase::AwaitingStart;
        rec.confirm_deadline_ms = Some(now_ms() + t.confirmation_timeout.as_millis() as u64);
        ctx.phase(&rec);
    }

    // 2. Wait for the agent's confirmation, then for its result, watching that
    //    it is still there.
    let mut invalid_since: Option<Instant> = None;
    let mut progress = ProgressWatch::default();
    loop {
        if rec.phase != Phase::Working && results::started(&dir, &task_id) {
            rec.phase = Phase::Working;
            ctx.phase(&rec);
        }
        match results::read_result(&dir, &task_id) {
            ResultFile::Ready(map) => {
                let report = report_from_result(map, &ctx.git_record);
                ctx.tell(WorkerMsg::Final(report));
                return;
            }
            ResultFile::Invalid(why) => {
                let since = *invalid_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= t.result_settle {
                    ctx.tell(WorkerMsg::Final(FinalReport::failed(
                        "invalid_result",
                        clip(&format!("invalid_result: {why}")),
                    )));
                    return;
                }
            }
            ResultFile::Missing => invalid_since = None,
        }
        if let Some(p) = progress.read(&dir, &task_id) {
            ctx.tell(WorkerMsg::Progress(p));
        }
        match agent.check() {
            Verdict::Alive => {}
            Verdict::Gone => {
                tracing::warn!(task_id = %task_id, grace_ms = t.agent_exit_grace.as_millis() as u64,
                    "the agent's processes ended without a result; no more lease renewals");
                ctx.tell(WorkerMsg::AgentGone);
            }
            Verdict::End(report) => {
                if let Some(pgid) = rec.pgid {
                    wake::stop_group(pgid, t.kill_grace).await;
                }
                agent.reap(t.kill_grace).await;
                ctx.tell(WorkerMsg::Final(report));
                return;
            }
        }
        let mut wait = t.results_poll;
        if rec.phase == Phase::AwaitingStart {
            let deadline_ms = rec
                .confirm_deadline_ms
                .unwrap_or_else(|| now_ms() + t.confirmation_timeout.as_millis() as u64);
            if now_ms() >= deadline_ms {
                if let Some(pgid) = rec.pgid {
                    wake::stop_group(pgid, t.kill_grace).await;
                }
                let error = format!(
                    "confirmation_timeout: no {} within {} ms of the wake",
                    results::started_path(&dir, &task_id).display(),
                    t.confirmation_timeout.as_millis()
                );
                ctx.tell(WorkerMsg::Final(FinalReport::failed(
                    "confirmation_timeout",
                    clip(&error),
                )));
                return;
            }
            wait = wait.min(Duration::from_millis(deadline_ms.saturating_sub(now_ms())));
        }
        let _ = tokio::time::timeout(wait, watch.changed()).await;
    }
}

/// The agent's progress file, passed on when its content changes.
#[derive(Default)]
struct ProgressWatch {
    last: Option<Vec<u8>>,
}

impl ProgressWatch {
    fn read(&mut self, dir: &std::path::Path, task_id: &str) -> Option<AgentProgress> {
        let bytes = std::fs::read(results::progress_path(dir, task_id)).ok()?;
        if self.last.as_ref() == Some(&bytes) {
            return None;
        }
        self.last = Some(bytes.clone());
        match results::parse_progress(&bytes) {
            Ok(p) => Some(p),
            Err(why) => {
                tracing::warn!(task_id, error = %why, "progress file ignored");
                None
            }
        }
    }
}

/// Runs the wake command until an attempt succeeds; `Err` is the final report.
/// `Ok(Some(child))`: the wake command is still running as the agent.
async fn wake_with_retries(
    ctx: &WorkerCtx,
    rec: &mut TaskRecord,
) -> Result<Option<tokio::process::Child>, FinalReport> {
    let t = &ctx.cfg.timings;
    let Some(command) = ctx.cfg.wake_command.clone() else {
        return Err(FinalReport::failed(
            "wake_failed",
            "wake_failed: wake_command is not configured",
        ));
    };
    let dir = ctx.cfg.results_dir.clone();
    let task_id = rec.task_id().to_string();
    let attempts = 1 + t.wake_retry_delays.len() as u32;
    if let Some(context) = &rec.assignment.context {
        if let Err(e) = results::write_context(&dir, &task_id, context) {
            tracing::warn!(task_id, error = %e, "shared context files not written");
        }
    }
    let env = ctx.wake_env(rec);
    let mut last_error = String::from("no attempt made");
    while rec.wake_attempts < attempts {
        if rec.wake_attempts > 0 {
            let delay = t
                .wake_retry_delays
                .get(rec.wake_attempts as usize - 1)
                .copied()
                .unwrap_or_default();
            tokio::time::sleep(delay).await;
        }
        rec.wake_attempts += 1;
        rec.phase = Phase::Waking;
        ctx.phase(rec);
        let attempt = rec.wake_attempts;
        let mut spawned = None;
        let outcome = wake::run_attempt(
            &command,
            &env,
            &ctx.wake_log,
            t.wake_timeout,
            |pgid| {
                spawned = Some(pgid);
                ctx.tell(WorkerMsg::Phase {
                    phase: Phase::Waking,
                    wake_attempts: attempt,
                    pgid: Some(pgid),
                    confirm_deadline_ms: None,
                });
            },
            || results::started(&dir, &task_id),
        )
        .await;
        if let Some(pgid) = spawned {
            rec.pgid = Some(pgid);
        }
        match outcome {
            Attempt::Success | Attempt::Running(_) => {
                tracing::info!(task_id = %rec.task_id(), attempt, "agent woken");
                ctx.tell(WorkerMsg::Wake {
                    attempt,
                    success: true,
                    error: None,
                });
                return Ok(match outcome {
                    Attempt::Running(child) => Some(child),
                    _ => None,
                });
            }
            Attempt::Failed(error) => {
                tracing::warn!(task_id = %rec.task_id(), attempt, error = %error, "wake attempt failed");
                if let Some(pgid) = spawned {
                    wake::stop_group(pgid, t.kill_grace).await;
                }
                ctx.tell(WorkerMsg::Wake {
                    attempt,
                    success: false,
                    error: Some(error.clone()),
                });
                last_error = error;
            }
        }
    }
    Err(FinalReport::failed(
        "wake_failed",
        clip(&format!(
            "wake_failed: {attempts} attempts failed; last: {last_error}"
        )),
    ))
}

/// The result statuses an agent may write.
pub const RESULT_STATUSES: &[&str] = &[
    "success",
    "no_work",
    "failed",
    "failed_terminal",
    "blocked",
    "usage_limited",
    "input_required",
];

/// The spend a result file reports (this wake's), if any.
fn spend_of(map: &Map<String, Value>) -> Option<agentcom_protocol::Spend> {
    let tokens = map.get("tokens_used").and_then(Value::as_u64);
    let cost = map
        .get("cost_usd")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0);
    (tokens.is_some() || cost.is_some()).then(|| agentcom_protocol::Spend {
        tokens: tokens.unwrap_or(0),
        cost_usd: cost.unwrap_or(0.0),
    })
}

/// Turns the agent's result file into the report:
/// - `success` → complete with the whole object (plus `pr_url` when the git
///   submit recorded one); `no_work` → complete too, with `outcome: "no_work"`
///   (what a standing order records);
/// - `failed` → retryable failure (optional `retry_after_s`);
///   `failed_terminal` → failure the hub dead-letters at once;
/// - `blocked` → `task_blocked` with `reason` and optional `needs`;
/// - anything else → `invalid_result`, naming the accepted statuses.
pub fn report_from_result(map: Map<String, Value>, git_record: &std::path::Path) -> FinalReport {
    let status = map
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_string);
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    match status.as_deref() {
        Some("success") => completion(map, git_record),
        Some("no_work") => {
            let mut map = map;
            map.entry("outcome").or_insert_with(|| json!("no_work"));
            completion(map, git_record)
        }
        Some(s @ ("failed" | "failed_terminal")) => {
            let reason = text("reason")
                .or_else(|| text("error"))
                .unwrap_or_else(|| "agent reported failure".to_string());
            let error = text("error").unwrap_or_else(|| reason.clone());
            let retry_after_s = match map.get("retry_after_s") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n) => Some(n),
                    None => {
                        return FinalReport::failed(
                            "invalid_result",
                            "invalid_result: retry_after_s must be a whole number of seconds",
                        )
                    }
                },
            };
            FinalReport::Failed {
                reason: clip(&reason),
                error: clip(&error),
                retry_after_s,
                terminal: s == "failed_terminal",
            }
        }
        Some("usage_limited") => match map.get("resets_at").and_then(Value::as_u64) {
            Some(resets_at) => FinalReport::UsageLimited {
                resets_at,
                reason: text("reason").map(|r| clip(&r)),
            },
            None => FinalReport::failed(
                "invalid_result",
                "invalid_result: usage_limited needs resets_at (ms since the epoch)",
            ),
        },
        Some("input_required") => {
            let strings = |k: &str| -> Vec<String> {
                map.get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(clip)).collect())
                    .unwrap_or_default()
            };
            match text("question").filter(|q| !q.trim().is_empty()) {
                Some(question) => FinalReport::InputRequired {
                    question: clip(&question),
                    options: strings("options"),
                    default: text("default").map(|d| clip(&d)),
                    timeout_ms: map.get("timeout_ms").and_then(Value::as_u64),
                    spent: spend_of(&map),
                },
                None => FinalReport::failed(
                    "invalid_result",
                    "invalid_result: input_required needs a question",
                ),
            }
        }
        Some("blocked") => FinalReport::Blocked {
            reason: clip(&text("reason").unwrap_or_else(|| "blocked".to_string())),
            needs: text("needs").map(|n| n.chars().take(256).collect()),
        },
        other => {
            let got = match other {
                Some(s) => format!("status {s:?}"),
                None => "no status".to_string(),
            };
            FinalReport::failed(
                "invalid_result",
                clip(&format!(
                    "invalid_result: the result has {got}; expected one of {}",
                    RESULT_STATUSES.join(", ")
                )),
            )
        }
    }
}

/// `success` / `no_work`: the completion, its follow-ups checked first.
fn completion(mut map: Map<String, Value>, git_record: &std::path::Path) -> FinalReport {
    // Hand-offs travel in the frame, not in the result. A bad one would make
    // the hub refuse the whole completion: report a failure that says why
    // instead, so the task is retried rather than silently losing its hand-off.
    let follow_ups = match map.remove("follow_ups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return FinalReport::failed(
                "invalid follow_ups",
                "follow_ups must be a list of task specs",
            )
        }
    };
    let mut problems = Vec::new();
    if follow_ups.len() > MAX_FOLLOW_UPS {
        problems.push(format!("at most {MAX_FOLLOW_UPS} follow_ups"));
    }
    if let Err(errors) = parse_task_specs(&follow_ups, |i| format!("follow_ups[{i}].")) {
        problems.extend(
            errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.detail)),
        );
    }
    if !problems.is_empty() {
        return FinalReport::failed("invalid follow_ups", clip(&problems.join("; ")));
    }
    // What `git submit` recorded: the pull request, and the files committed
    // outside the task's write scope.
    let record = std::fs::read(git_record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    if let Some(record) = record {
        if let Some(url) = record.get("pr_url").filter(|v| v.is_string()) {
            map.entry("pr_url").or_insert_with(|| url.clone());
        }
        if let Some(changes) = record.get("changes").filter(|v| v.is_object()) {
            map.entry("changes").or_insert_with(|| changes.clone());
        }
        if let Some(files) = record
            .get("out_of_scope_files")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            map.entry("out_of_scope_files")
                .or_insert_with(|| files.clone());
        }
    }
    let tokens_used = map.get("tokens_used").and_then(Value::as_u64);
    let cost_usd = map
        .get("cost_usd")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0);
    let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(0);
    if size > MAX_RESULT_BYTES {
        let mut small = Map::new();
        for key in ["status", "outcome"] {
            if let Some(v) = map.get(key) {
                small.insert(key.into(), v.clone());
            }
        }
        small.insert("result_truncated".into(), json!(true));
        small.insert("original_bytes".into(), json!(size));
        for key in ["pr_url", "summary"] {
            if let Some(Value::String(s)) = map.get(key) {
                small.insert(key.into(), json!(s.chars().take(4000).collect::<String>()));
            }
        }
        // What the approval rules read stays (its paths are capped by submit).
        if let Some(changes) = map.get("changes") {
            small.insert("changes".into(), changes.clone());
        }
        map = small;
    }
    FinalReport::Complete {
        result: map,
        tokens_used,
        cost_usd,
        follow_ups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn success_keeps_the_whole_object() {
        let r = report_from_result(
            obj(json!({"status":"success","summary":"done","tokens_used":12})),
            Path::new("/nonexistent"),
        );
        assert_eq!(
            r,
            FinalReport::Complete {
                result: obj(json!({"status":"success","summary":"done","tokens_used":12})),
                tokens_used: Some(12),
                cost_usd: None,
                follow_ups: Vec::new(),
            }
        );
    }

    #[test]
    fn follow_ups_travel_in_the_frame_and_bad_ones_fail_the_task_with_the_reason() {
        let r = report_from_result(
            obj(json!({"status":"success","follow_ups":[{"description":"review it"}]})),
            Path::new("/nonexistent"),
        );
        assert_eq!(
            r,
            FinalReport::Complete {
                result: obj(json!({"status":"success"})),
                tokens_used: None,
                cost_usd: None,
                follow_ups: vec![json!({"description":"review it"})],
            }
        );
        let bad = report_from_result(
            obj(json!({"status":"success","follow_ups":[{"priority":"soon"}]})),
            Path::new("/nonexistent"),
        );
        match bad {
            FinalReport::Failed { reason, error, .. } => {
                assert_eq!(reason, "invalid follow_ups");
                assert!(error.contains("follow_ups[0].description"), "{error}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn pr_url_is_added_from_the_git_record() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rec = tmp.path().join("t.json");
        std::fs::write(
            &rec,
            r#"{"pr_url":"https://example/pr/1","out_of_scope_files":["README.md"]}"#,
        )
        .expect("write");
        let FinalReport::Complete { result, .. } =
            report_from_result(obj(json!({"status":"success"})), &rec)
        else {
            panic!("expected complete");
        };
        assert_eq!(result["pr_url"], "https://example/pr/1");
        assert_eq!(result["out_of_scope_files"], json!(["README.md"]));
    }

    #[test]
    fn each_result_status_has_its_report() {
        let x = Path::new("/x");
        let r = report_from_result(
            obj(json!({"status":"failed","reason":"tests red","retry_after_s":30})),
            x,
        );
        assert_eq!(
            r,
            FinalReport::Failed {
                reason: "tests red".into(),
                error: "tests red".into(),
                retry_after_s: Some(30),
                terminal: false
            }
        );
        let r = report_from_result(
            obj(json!({"status":"failed_terminal","error":"no such repo"})),
            x,
        );
        assert!(
            matches!(r, FinalReport::Failed { terminal: true, ref reason, .. } if reason == "no such repo")
        );
        let r = report_from_result(
            obj(json!({"status":"blocked","reason":"need creds","needs":"aws"})),
            x,
        );
        assert_eq!(
            r,
            FinalReport::Blocked {
                reason: "need creds".into(),
                needs: Some("aws".into())
            }
        );
        let r = report_from_result(obj(json!({"status":"no_work"})), x);
        let FinalReport::Complete { result, .. } = r else {
            panic!("no_work completes")
        };
        assert_eq!(result["outcome"], "no_work");
        for bad in [
            json!({"status":"weird"}),
            json!({}),
            json!({"status":"failed","retry_after_s":"soon"}),
        ] {
            let r = report_from_result(obj(bad.clone()), x);
            assert!(
                matches!(r, FinalReport::Failed { ref reason, ref error, .. }
                    if reason == "invalid_result" && (error.contains("failed_terminal") || error.contains("retry_after_s"))),
                "{bad} -> {r:?}"
            );
        }
        let long = "x".repeat(5000);
        let r = report_from_result(obj(json!({"status":"failed","error": long})), x);
        assert!(
            matches!(r, FinalReport::Failed { ref reason, ref error, .. } if reason.len() == 2000 && error.len() == 2000)
        );
    }

    #[test]
    fn huge_results_are_summarized() {
        let big = "y".repeat(MAX_RESULT_BYTES + 10);
        let r = report_from_result(
            obj(json!({"status":"success","blob": big, "summary":"s"})),
            Path::new("/x"),
        );
        let FinalReport::Complete { result, .. } = r else {
            panic!("expected complete")
        };
        assert_eq!(result["result_truncated"], true);
        assert_eq!(result["summary"], "s");
        assert!(result.get("blob").is_none());
    }
}
