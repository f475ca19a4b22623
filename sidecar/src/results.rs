//! The results directory the agent writes to: `<id>.started` when it has begun,
//! `<id>.json` with the outcome, and while it works `<id>.progress`
//! (`{"percent":0-100,"message":"..."}`) and `<id>.heartbeat` (any write).
//!
//! File events (notify) are the fast path; a periodic poll is the safety net
//! (events can be lost: inotify queue overflow, network file systems, a watcher
//! that could not be created).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub fn result_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.json"))
}

pub fn started_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.started"))
}

pub fn progress_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.progress"))
}

pub fn heartbeat_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.heartbeat"))
}

/// `results/<id>.answer.json`: the answer to the agent's question (ext).
pub fn answer_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.answer.json"))
}

/// Present while the task is paused for its budget (ext, 6.28): an agent
/// that runs detached stops at its next safe point while it exists.
pub fn paused_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.paused"))
}

/// `results/<id>.context/`: the shared context keys the task names (ext,
/// 6.33), one file each: `<key>.txt` for text, `<key>.json` for JSON, and
/// `<key>.ref.json` (where to read it) for one too large to carry. A key
/// nobody wrote has no file.
pub fn context_dir(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.context"))
}

/// Writes the assignment's context (again: each wake writes it whole).
pub fn write_context(
    dir: &Path,
    task_id: &str,
    context: &Map<String, Value>,
) -> std::io::Result<PathBuf> {
    let out = context_dir(dir, task_id);
    std::fs::create_dir_all(&out)?;
    for (key, entry) in context {
        // Keys are letters, digits and `. _ - :` (the hub checks them); a
        // file name never leaves the directory.
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            continue;
        }
        let (name, bytes) = if let Some(text) = entry.get("text").and_then(Value::as_str) {
            (format!("{key}.txt"), text.as_bytes().to_vec())
        } else if let Some(value) = entry.get("value") {
            let pretty = serde_json::to_vec_pretty(value).unwrap_or_default();
            (format!("{key}.json"), pretty)
        } else if entry.get("context_ref").is_some() {
            let pretty = serde_json::to_vec_pretty(entry).unwrap_or_default();
            (format!("{key}.ref.json"), pretty)
        } else {
            continue;
        };
        std::fs::write(out.join(name), bytes)?;
    }
    Ok(out)
}

/// Longest progress message passed on (characters).
pub const MAX_PROGRESS_MESSAGE: usize = 500;

/// What the agent said in its progress file.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentProgress {
    pub percent: Option<u64>,
    pub message: Option<String>,
    /// What this wake of the agent has spent so far (ext, 6.28).
    pub tokens_used: Option<u64>,
    pub cost_usd: Option<f64>,
}

pub fn parse_progress(bytes: &[u8]) -> Result<AgentProgress, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("not a JSON object".into());
    };
    let percent = match map.get("percent") {
        None | Some(Value::Null) => None,
        Some(p) => match p.as_u64() {
            Some(n) if n <= 100 => Some(n),
            _ => return Err("percent must be an integer from 0 to 100".into()),
        },
    };
    let message = match map.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.chars().take(MAX_PROGRESS_MESSAGE).collect()),
        Some(_) => return Err("message must be a string".into()),
    };
    let tokens_used = match map.get("tokens_used") {
        None | Some(Value::Null) => None,
        Some(t) => match t.as_u64() {
            Some(n) => Some(n),
            None => return Err("tokens_used must be a whole number".into()),
        },
    };
    let cost_usd = match map.get("cost_usd") {
        None | Some(Value::Null) => None,
        Some(c) => match c.as_f64().filter(|c| c.is_finite() && *c >= 0.0) {
            Some(n) => Some(n),
            None => return Err("cost_usd must be a number, 0 or more".into()),
        },
    };
    if percent.is_none() && message.is_none() && tokens_used.is_none() && cost_usd.is_none() {
        return Err("give percent, message, tokens_used or cost_usd".into());
    }
    Ok(AgentProgress {
        percent,
        message,
        tokens_used,
        cost_usd,
    })
}

/// What the result file holds right now.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultFile {
    Missing,
    /// Present but not a JSON object (maybe still being written).
    Invalid(String),
    Ready(Map<String, Value>),
}

pub fn read_result(dir: &Path, task_id: &str) -> ResultFile {
    let path = result_path(dir, task_id);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ResultFile::Missing,
        Err(e) => ResultFile::Invalid(format!("cannot read {}: {e}", path.display())),
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => ResultFile::Ready(map),
            Ok(_) => ResultFile::Invalid("the result is not a JSON object".into()),
            Err(e) => ResultFile::Invalid(format!("the result is not valid JSON: {e}")),
        },
    }
}

pub fn started(dir: &Path, task_id: &str) -> bool {
    started_path(dir, task_id).exists() || result_path(dir, task_id).exists()
}

/// Wakes its owner when something in the results directory changes, or when
/// the poll interval passes.
pub struct DirWatch {
    rx: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    poll: Duration,
}

impl DirWatch {
    pub fn new(dir: &Path, poll: Duration) -> DirWatch {
        let (tx, rx) = mpsc::channel(16);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // Full means a wake-up is already pending; that is enough.
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the results directory; polling only");
                None
            }
        };
        DirWatch {
            rx,
            _watcher: watcher,
            poll,
        }
    }

    /// Returns after a change event or after the poll interval, whichever is first.
    pub async fn changed(&mut self) {
        if let Ok(None) = tokio::time::timeout(self.poll, self.rx.recv()).await {
            // No watcher (the sender is gone): plain polling.
            tokio::time::sleep(self.poll).await;
        }
        // Coalesce a burst of events into one check.
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_files_are_checked() {
        assert_eq!(
            parse_progress(br#"{"percent":40,"message":"tests"}"#),
            Ok(AgentProgress {
                percent: Some(40),
                message: Some("tests".into()),
                tokens_used: None,
                cost_usd: None,
            })
        );
        assert!(parse_progress(br#"{"percent":101}"#).is_err());
        assert!(parse_progress(br#"{"percent":-1}"#).is_err());
        assert!(parse_progress(br#"{"message":3}"#).is_err());
        assert!(parse_progress(br#"{}"#).is_err());
        let spend = parse_progress(br#"{"tokens_used":1200,"cost_usd":0.3}"#).expect("spend");
        assert_eq!((spend.tokens_used, spend.cost_usd), (Some(1200), Some(0.3)));
        assert!(parse_progress(br#"{"cost_usd":-1}"#).is_err());
        assert!(parse_progress(b"[1]").is_err());
        assert!(parse_progress(b"{\"perc").is_err());
        let long = format!(r#"{{"message":"{}"}}"#, "m".repeat(900));
        let p = parse_progress(long.as_bytes()).expect("valid");
        assert_eq!(p.message.map(|m| m.len()), Some(MAX_PROGRESS_MESSAGE));
    }
}
