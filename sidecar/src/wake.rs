//! Waking the agent: running the configured command safely, and stopping what it
//! started.
//!
//! Task text never becomes shell syntax. A string command runs as `sh -c CMD`
//! where CMD is the operator's text only; the task's values reach it as
//! environment variables (`$TASK_DESCRIPTION` expands to data, it is not parsed
//! again). A list command runs without a shell, and a `${TASK_ID}`,
//! `${TASK_DESCRIPTION}` or `${TASK_JSON}` inside an argument is replaced by the
//! value as part of that one argument.
//!
//! Each attempt runs in a new process group, so whatever the agent leaves running
//! can be stopped as a group on `task_cancelled`.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::WakeCommand;

/// Environment and argument values for one task.
#[derive(Debug, Clone)]
pub struct WakeEnv {
    pub vars: Vec<(String, String)>,
    pub task_id: String,
    pub description: String,
    pub task_json: String,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// Exit status 0 within the timeout.
    Success,
    /// Still running when the agent confirmed it started: the command is the
    /// agent itself (`wake_mode = "process"` with a foreground agent).
    Running(tokio::process::Child),
    Failed(String),
}

/// Environment values cannot hold NUL bytes; the JSON forms (which escape it)
/// keep the exact text.
fn env_safe(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn substitute(arg: &str, env: &WakeEnv) -> String {
    // One pass over the operator's text: a value inserted here is never scanned
    // for further placeholders.
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    let keys: [(&str, &str); 3] = [
        ("${TASK_ID}", &env.task_id),
        ("${TASK_DESCRIPTION}", &env.description),
        ("${TASK_JSON}", &env.task_json),
    ];
    'outer: while !rest.is_empty() {
        for (key, value) in keys {
            if let Some(after) = rest.strip_prefix(key) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    env_safe(&out)
}

/// Runs one wake attempt; `on_spawn` gets the new process group id as soon as the
/// process exists. A command still running when `started()` turns true is the
/// agent itself and is answered as [`Attempt::Running`].
pub async fn run_attempt(
    command: &WakeCommand,
    env: &WakeEnv,
    log_path: &Path,
    timeout: Duration,
    on_spawn: impl FnOnce(i32),
    started: impl Fn() -> bool,
) -> Attempt {
    let mut cmd = match command {
        WakeCommand::Shell(text) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(text);
            c
        }
        WakeCommand::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Attempt::Failed("wake_command is empty".into());
            };
            let mut c = tokio::process::Command::new(substitute(program, env));
            c.args(args.iter().map(|a| substitute(a, env)));
            c
        }
    };
    for (k, v) in &env.vars {
        cmd.env(k, env_safe(v));
    }
    let log = OpenOptions::new().create(true).append(true).open(log_path);
    let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
        Err(_) => (Stdio::null(), Stdio::null()),
    };
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Attempt::Failed(format!("cannot start wake command: {e}")),
    };
    let pgid = child.id().map(|p| p as i32);
    if let Some(pgid) = pgid {
        on_spawn(pgid);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let check = tokio::time::Instant::now() + STARTED_CHECK;
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) if status.success() => Attempt::Success,
                    Ok(status) => Attempt::Failed(format!("wake command exited with {status}")),
                    Err(e) => Attempt::Failed(format!("cannot wait for wake command: {e}")),
                };
            }
            _ = tokio::time::sleep_until(check.min(deadline)) => {
                if started() {
                    return Attempt::Running(child);
                }
                if tokio::time::Instant::now() >= deadline {
                    if let Some(pgid) = pgid {
                        signal_group(pgid, libc::SIGKILL);
                    }
                    let _ = child.wait().await;
                    return Attempt::Failed(format!(
                        "wake command did not finish within {} ms",
                        timeout.as_millis()
                    ));
                }
            }
        }
    }
}

/// How often a running wake command is checked for the agent's `.started`.
const STARTED_CHECK: Duration = Duration::from_millis(100);

/// Whether `pgid` may be signalled: never our own group, init, or "every process".
fn signallable(pgid: i32) -> bool {
    // SAFETY: getpgrp has no preconditions and cannot fail.
    let own = unsafe { libc::getpgrp() };
    pgid > 1 && pgid != own
}

/// Sends `signal` to every process of the group; false if there is none.
pub fn signal_group(pgid: i32, signal: i32) -> bool {
    if !signallable(pgid) {
        return false;
    }
    // SAFETY: killpg only sends a signal; pgid was checked above.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// Whether any process of the group still exists.
pub fn group_alive(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

/// SIGTERM to the group, then SIGKILL if anything is left after `grace`.
pub async fn stop_group(pgid: i32, grace: Duration) {
    if !signal_group(pgid, libc::SIGTERM) {
        return;
    }
    tracing::info!(pgid, "stopping woken process group");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if signal_group(pgid, libc::SIGKILL) {
        tracing::warn!(pgid, "woken process group did not stop on SIGTERM; killed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(desc: &str) -> WakeEnv {
        WakeEnv {
            vars: vec![],
            task_id: "task-1".into(),
            description: desc.into(),
            task_json: "{}".into(),
        }
    }

    #[test]
    fn placeholders_are_replaced_once_and_never_rescanned() {
        let e = env("${TASK_ID} $(touch x)");
        assert_eq!(
            substitute("--msg=${TASK_DESCRIPTION}!", &e),
            "--msg=${TASK_ID} $(touch x)!"
        );
        assert_eq!(substitute("${TASK_ID}${TASK_JSON}", &e), "task-1{}");
        assert_eq!(substitute("plain é", &e), "plain é");
    }

    #[test]
    fn own_group_and_init_are_never_signalled() {
        // SAFETY: no preconditions.
        let own = unsafe { libc::getpgrp() };
        assert!(!signallable(own));
        assert!(!signallable(1));
        assert!(!signallable(0));
        assert!(!signallable(-5));
    }
}
