//! Agent runtimes (ext, #20): what the sidecar wakes besides a plain
//! `wake_command`. Each runs as the sidecar's own binary in the wake's place
//! (`agentcom-sidecar claude-run` / `openclaw-wake`), with the wake's
//! environment, and speaks to the relay only through the agent's files, so
//! answers, reviews, budgets and recovery work for them as for any agent.

pub mod claude;
pub mod openclaw;

use std::path::PathBuf;

use serde_json::Value;

use crate::state::write_atomic;

/// The sidecar's own config, which the woken runtime reads.
pub fn config_path() -> Option<PathBuf> {
    env("AGENTCOM_SIDECAR_CONFIG").map(PathBuf::from)
}

/// A wake environment variable, when set and not empty.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Writes a file atomically; a failure is reported on stderr (the wake log).
fn write_file(path: &std::path::Path, text: &str) {
    if let Err(e) = write_atomic(path, text.as_bytes()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// The agent's files of the woken task, from the wake's environment.
pub struct AgentFiles {
    pub task_id: String,
    pub results_dir: PathBuf,
    result: PathBuf,
    started: PathBuf,
    progress: PathBuf,
    heartbeat: PathBuf,
}

impl AgentFiles {
    pub fn from_env() -> Result<AgentFiles, String> {
        let get =
            |k: &str| env(k).ok_or_else(|| format!("{k} is not set: run by the sidecar's wake"));
        Ok(AgentFiles {
            task_id: get("TASK_ID")?,
            results_dir: PathBuf::from(get("AGENTCOM_RESULTS_DIR")?),
            result: PathBuf::from(get("AGENTCOM_RESULT_FILE")?),
            started: PathBuf::from(get("AGENTCOM_STARTED_FILE")?),
            progress: PathBuf::from(get("AGENTCOM_PROGRESS_FILE")?),
            heartbeat: PathBuf::from(get("AGENTCOM_HEARTBEAT_FILE")?),
        })
    }

    pub fn started(&self) {
        write_file(&self.started, "");
    }

    pub fn heartbeat(&self) {
        write_file(&self.heartbeat, &crate::state::now_ms().to_string());
    }

    pub fn progress(&self, v: &Value) {
        write_file(&self.progress, &v.to_string());
    }

    pub fn result(&self, v: &Value) {
        write_file(&self.result, &v.to_string());
    }

    /// The file paths, for a prompt that tells an agent where to write.
    pub fn describe(&self) -> String {
        format!(
            "started: {}\nheartbeat: {}\nprogress: {}\nresult: {}",
            self.started.display(),
            self.heartbeat.display(),
            self.progress.display(),
            self.result.display()
        )
    }
}
