//! Is the woken agent still there? The worker asks [`AgentWatch::check`] each
//! time it looks at the results directory.
//!
//! - `process` mode: the woken process group is the agent. When it is empty
//!   (and the wake command, if it is still our child, has exited), the agent
//!   is gone; a result may still appear within `agent_exit_grace_ms`.
//! - `detached` mode: there is no process to watch; only activity counts.
//! - Both: activity is output of the woken processes (the wake log grows) or a
//!   write to `<id>.heartbeat` / `<id>.progress`. None for `stall_ms` means the
//!   agent stalled; `max_runtime_ms` after acceptance the attempt timed out.
//!
//! Architecture invariant: this module observes; it stops no process and sends
//! nothing (the worker does, on a [`Verdict`]).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::WakeMode;
use crate::relay::clip;
use crate::state::{now_ms, FinalReport};
use crate::wake;

/// What the agent's state means for the attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Alive,
    /// The agent's processes just ended (reported once): stop renewing the
    /// lease and wait out the grace for a result.
    Gone,
    /// The attempt is over: stop the group and report this.
    End(FinalReport),
}

/// A file whose changes count as agent activity.
struct Mark {
    path: PathBuf,
    seen: Option<(u64, SystemTime)>,
}

impl Mark {
    fn new(path: PathBuf) -> Mark {
        let seen = stamp(&path);
        Mark { path, seen }
    }

    /// Whether the file changed since the last look.
    fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        let changed = now != self.seen;
        self.seen = now;
        changed
    }
}

fn stamp(path: &PathBuf) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The limits of one attempt.
pub struct Limits {
    pub mode: WakeMode,
    pub exit_grace: Duration,
    pub stall: Option<Duration>,
    /// Wall-clock end of the attempt (ms), from `max_runtime_ms`.
    pub deadline_ms: Option<u64>,
}

/// See the module documentation.
pub struct AgentWatch {
    limits: Limits,
    pgid: Option<i32>,
    /// The wake command, when it is still running as the agent.
    child: Option<tokio::process::Child>,
    exit_status: Option<String>,
    gone_since: Option<Instant>,
    last_activity: Instant,
    marks: Vec<Mark>,
    output: PathBuf,
}

impl AgentWatch {
    /// `files` are the wake log (first: its tail goes into `agent_exited`), the
    /// heartbeat file and the progress file.
    pub fn new(limits: Limits, pgid: Option<i32>, output: PathBuf, files: Vec<PathBuf>) -> Self {
        AgentWatch {
            limits,
            pgid,
            child: None,
            exit_status: None,
            gone_since: None,
            last_activity: Instant::now(),
            marks: files.into_iter().map(Mark::new).collect(),
            output,
        }
    }

    /// The wake command kept running as the agent.
    pub fn adopt_child(&mut self, child: tokio::process::Child) {
        self.child = Some(child);
    }

    /// After the group was stopped: waits (bounded) for the wake command, if
    /// it is our child, so no zombie is left.
    pub async fn reap(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(grace, child.wait()).await;
        }
    }

    pub fn set_pgid(&mut self, pgid: Option<i32>) {
        if pgid.is_some() {
            self.pgid = pgid;
        }
    }

    /// Looks at the agent once.
    pub fn check(&mut self) -> Verdict {
        let mut active = false;
        for m in &mut self.marks {
            active |= m.changed();
        }
        if active {
            self.last_activity = Instant::now();
        }
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit_status = Some(status.to_string());
                self.child = None;
            }
        }
        if let Some(deadline) = self.limits.deadline_ms {
            if now_ms() >= deadline {
                return Verdict::End(FinalReport::failed(
                    "timeout",
                    "timeout: the attempt ran longer than max_runtime_ms; its processes were stopped",
                ));
            }
        }
        if let Some(stall) = self.limits.stall {
            if self.last_activity.elapsed() >= stall {
                return Verdict::End(FinalReport::failed(
                    "stalled",
                    clip(&format!(
                        "stalled: no output, heartbeat or progress from the agent for {} ms; its processes were stopped",
                        stall.as_millis()
                    )),
                ));
            }
        }
        if self.limits.mode == WakeMode::Detached || self.alive() {
            return Verdict::Alive;
        }
        match self.gone_since {
            None => {
                self.gone_since = Some(Instant::now());
                Verdict::Gone
            }
            Some(since) if since.elapsed() >= self.limits.exit_grace => {
                Verdict::End(FinalReport::failed("agent_exited", self.exit_report()))
            }
            Some(_) => Verdict::Alive,
        }
    }

    /// Whether anything of the agent is left. Without a known process group
    /// (a record from an older sidecar) the agent counts as alive: the stall
    /// and runtime limits still apply.
    fn alive(&self) -> bool {
        self.child.is_some() || self.pgid.is_none_or(wake::group_alive)
    }

    /// `agent_exited` text: the exit status and the end of the agent's output.
    fn exit_report(&self) -> String {
        let status = self
            .exit_status
            .clone()
            .unwrap_or_else(|| "unknown (the agent ran in the background)".into());
        let head = format!(
            "agent_exited: the agent's processes ended without a result within {} ms (exit status: {status})",
            self.limits.exit_grace.as_millis()
        );
        let tail = last_lines(&self.output, 20);
        if tail.is_empty() {
            return clip(&head);
        }
        // Keep the end of the output, which says most about why it stopped.
        let room = agentcom_protocol::MAX_REASON.saturating_sub(head.chars().count() + 20);
        let chars: Vec<char> = tail.chars().collect();
        let kept: String = chars[chars.len().saturating_sub(room)..].iter().collect();
        clip(&format!("{head}; last output:\n{kept}"))
    }
}

/// The last `n` lines of a file (at most its last 64 KiB are read).
fn last_lines(path: &PathBuf, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(mode: WakeMode) -> Limits {
        Limits {
            mode,
            exit_grace: Duration::ZERO,
            stall: None,
            deadline_ms: None,
        }
    }

    #[test]
    fn an_empty_group_is_gone_then_exited_with_the_output_tail() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("wake.log");
        std::fs::write(&log, "starting\nboom: out of memory\n").expect("write");
        // A pgid no process has: i32::MAX is above pid_max.
        let mut w = AgentWatch::new(
            limits(WakeMode::Process),
            Some(i32::MAX),
            log.clone(),
            vec![log],
        );
        assert_eq!(w.check(), Verdict::Gone);
        match w.check() {
            Verdict::End(FinalReport::Failed { reason, error, .. }) => {
                assert_eq!(reason, "agent_exited");
                assert!(error.contains("boom: out of memory"), "{error}");
            }
            other => panic!("expected agent_exited, got {other:?}"),
        }
    }

    #[test]
    fn detached_agents_live_by_activity_and_stall_without_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hb = tmp.path().join("t.heartbeat");
        let mut l = limits(WakeMode::Detached);
        l.stall = Some(Duration::from_millis(1));
        let mut w = AgentWatch::new(l, Some(i32::MAX), tmp.path().join("log"), vec![hb]);
        std::thread::sleep(Duration::from_millis(5));
        match w.check() {
            Verdict::End(FinalReport::Failed { reason, .. }) => assert_eq!(reason, "stalled"),
            other => panic!("expected stalled, got {other:?}"),
        }
    }

    #[test]
    fn max_runtime_ends_the_attempt() {
        let mut l = limits(WakeMode::Detached);
        l.deadline_ms = Some(now_ms().saturating_sub(1));
        let mut w = AgentWatch::new(l, None, PathBuf::from("/nonexistent"), vec![]);
        assert!(matches!(
            w.check(),
            Verdict::End(FinalReport::Failed { ref reason, .. }) if reason == "timeout"
        ));
    }
}
