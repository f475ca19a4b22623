//! The results directory the agent writes to: `<id>.started` when it has begun,
//! `<id>.json` with the outcome.
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
