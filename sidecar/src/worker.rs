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
use crate::relay::clip;
use crate::results::{self, DirWatch, ResultFile};
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
                "AGENTCOM_SIDECAR_CONFIG".into(),
                self.cfg.path.display().to_string(),
            ),
            ("AGENTCOM_HUB_API_URL".into(), self.cfg.hub_api_url.clone()),
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

    // 1. Wake, unless the agent already started (or finished) this task.
    if matches!(rec.phase, Phase::Accepted | Phase::Waking) && !results::started(&dir, &task_id) {
        if let Err(report) = wake_with_retries(&ctx, &mut rec).await {
            ctx.tell(WorkerMsg::Final(report));
            return;
        }
        rec.phase = Phase::AwaitingStart;
        rec.confirm_deadline_ms = Some(now_ms() + t.confirmation_timeout.as_millis() as u64);
        ctx.phase(&rec);
    }

    // 2. Wait for the agent's confirmation.
    if matches!(
        rec.phase,
        Phase::Accepted | Phase::Waking | Phase::AwaitingStart
    ) {
        let deadline_ms = rec
            .confirm_deadline_ms
            .unwrap_or_else(|| now_ms() + t.confirmation_timeout.as_millis() as u64);
        while !results::started(&dir, &task_id) {
            if now_ms() >= deadline_ms {
                if let Some(pgid) = rec.pgid {
                    wake::stop_group(pgid, t.kill_grace).await;
                }
                let error = format!(
                    "confirmation_timeout: no {} within {} ms of the wake",
                    results::started_path(&dir, &task_id).display(),
                    t.confirmation_timeout.as_millis()
                );
                ctx.tell(WorkerMsg::Final(FinalReport::Failed {
                    reason: "confirmation_timeout".into(),
                    error: clip(&error),
                }));
                return;
            }
            let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
            let _ = tokio::time::timeout(left, watch.changed()).await;
        }
        rec.phase = Phase::Working;
        ctx.phase(&rec);
    }

    // 3. Wait for the result.
    let mut invalid_since: Option<Instant> = None;
    loop {
        match results::read_result(&dir, &task_id) {
            ResultFile::Ready(map) => {
                let report = report_from_result(map, &ctx.git_record);
                ctx.tell(WorkerMsg::Final(report));
                return;
            }
            ResultFile::Invalid(why) => {
                let since = *invalid_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= t.result_settle {
                    ctx.tell(WorkerMsg::Final(FinalReport::Failed {
                        reason: "invalid_result".into(),
                        error: clip(&format!("invalid_result: {why}")),
                    }));
                    return;
                }
            }
            ResultFile::Missing => invalid_since = None,
        }
        watch.changed().await;
    }
}

/// Runs the wake command until an attempt succeeds; `Err` is the final report.
async fn wake_with_retries(ctx: &WorkerCtx, rec: &mut TaskRecord) -> Result<(), FinalReport> {
    let t = &ctx.cfg.timings;
    let Some(command) = ctx.cfg.wake_command.clone() else {
        return Err(FinalReport::Failed {
            reason: "wake_failed".into(),
            error: "wake_failed: wake_command is not configured".into(),
        });
    };
    let attempts = 1 + t.wake_retry_delays.len() as u32;
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
        let outcome = wake::run_attempt(&command, &env, &ctx.wake_log, t.wake_timeout, |pgid| {
            spawned = Some(pgid);
            ctx.tell(WorkerMsg::Phase {
                phase: Phase::Waking,
                wake_attempts: attempt,
                pgid: Some(pgid),
                confirm_deadline_ms: None,
            });
        })
        .await;
        if let Some(pgid) = spawned {
            rec.pgid = Some(pgid);
        }
        match outcome {
            Attempt::Success => {
                tracing::info!(task_id = %rec.task_id(), attempt, "agent woken");
                ctx.tell(WorkerMsg::Wake {
                    attempt,
                    success: true,
                    error: None,
                });
                return Ok(());
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
    Err(FinalReport::Failed {
        reason: "wake_failed".into(),
        error: clip(&format!(
            "wake_failed: {attempts} attempts failed; last: {last_error}"
        )),
    })
}

/// `status: "success"` → complete with the whole object (plus `pr_url` when the
/// git submit recorded one); anything else → failed with the agent's reason.
pub fn report_from_result(
    mut map: Map<String, Value>,
    git_record: &std::path::Path,
) -> FinalReport {
    let status = map
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_string);
    if status.as_deref() == Some("success") {
        // Hand-offs travel in the frame, not in the result. A bad one would make
        // the hub refuse the whole completion: report a failure that says why
        // instead, so the task is retried rather than silently losing its hand-off.
        let follow_ups = match map.remove("follow_ups") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return FinalReport::Failed {
                    reason: "invalid follow_ups".into(),
                    error: "follow_ups must be a list of task specs".into(),
                }
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
            return FinalReport::Failed {
                reason: "invalid follow_ups".into(),
                error: clip(&problems.join("; ")),
            };
        }
        if !map.contains_key("pr_url") {
            let pr_url = std::fs::read(git_record)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("pr_url").cloned())
                .filter(|v| v.is_string());
            if let Some(url) = pr_url {
                map.insert("pr_url".into(), url);
            }
        }
        let tokens_used = map.get("tokens_used").and_then(Value::as_u64);
        let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(0);
        if size > MAX_RESULT_BYTES {
            let mut small = Map::new();
            small.insert("status".into(), json!("success"));
            small.insert("result_truncated".into(), json!(true));
            small.insert("original_bytes".into(), json!(size));
            for key in ["pr_url", "summary"] {
                if let Some(Value::String(s)) = map.get(key) {
                    small.insert(key.into(), json!(s.chars().take(4000).collect::<String>()));
                }
            }
            map = small;
        }
        return FinalReport::Complete {
            result: map,
            tokens_used,
            follow_ups,
        };
    }
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    let reason = text("reason")
        .or_else(|| text("error"))
        .unwrap_or_else(|| match &status {
            Some(s) => format!("agent reported status {s:?}"),
            None => "agent result has no status".to_string(),
        });
    let error = text("error").unwrap_or_else(|| reason.clone());
    FinalReport::Failed {
        reason: clip(&reason),
        error: clip(&error),
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
                follow_ups: vec![json!({"description":"review it"})],
            }
        );
        let bad = report_from_result(
            obj(json!({"status":"success","follow_ups":[{"priority":"soon"}]})),
            Path::new("/nonexistent"),
        );
        match bad {
            FinalReport::Failed { reason, error } => {
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
        std::fs::write(&rec, r#"{"pr_url":"https://example/pr/1"}"#).expect("write");
        let FinalReport::Complete { result, .. } =
            report_from_result(obj(json!({"status":"success"})), &rec)
        else {
            panic!("expected complete");
        };
        assert_eq!(result["pr_url"], "https://example/pr/1");
    }

    #[test]
    fn anything_else_fails_with_the_reason() {
        let r = report_from_result(
            obj(json!({"status":"failure","reason":"tests red"})),
            Path::new("/x"),
        );
        assert!(matches!(r, FinalReport::Failed { ref reason, .. } if reason == "tests red"));
        let r = report_from_result(obj(json!({"status":"weird"})), Path::new("/x"));
        assert!(matches!(r, FinalReport::Failed { ref reason, .. } if reason.contains("weird")));
        let long = "x".repeat(5000);
        let r = report_from_result(
            obj(json!({"status":"failed","error": long})),
            Path::new("/x"),
        );
        assert!(
            matches!(r, FinalReport::Failed { ref reason, ref error } if reason.len() == 2000 && error.len() == 2000)
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
