//! Browser scenarios: a node script drives Debian's headless Chromium with
//! playwright-core (`tests/browser/*.mjs`) while the test owns the hubs and
//! agents. Where the script needs something done on the test's side it
//! prints `WAIT <step> [arg]` and reads one line back: `OK [value]` or
//! `FAIL <why>`; `ARTIFACT <path>` names a screenshot, `PASS` ends it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's Chromium, or `AGENTCOM_CHROMIUM`.
pub fn chromium() -> PathBuf {
    std::env::var_os("AGENTCOM_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails the test with what to install when Chromium or playwright-core is
/// missing under `browser_dir`.
pub fn browser_prerequisites(browser_dir: &Path) {
    let missing: Vec<String> = [
        (
            chromium().exists(),
            format!(
                "{} (apt-get install chromium, or set AGENTCOM_CHROMIUM)",
                chromium().display()
            ),
        ),
        (
            browser_dir.join("node_modules/playwright-core").exists(),
            "playwright-core (npm ci --prefix tests/browser)".to_string(),
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs: {}; .ci/run installs them",
        missing.join(", ")
    );
}

/// How a scenario ended.
pub struct Scenario {
    pub passed: bool,
    pub failure: Option<String>,
    pub screenshots: Vec<PathBuf>,
    pub status: ExitStatus,
}

impl Scenario {
    /// Panics unless the script printed `PASS`, exited 0 and nothing failed.
    pub fn assert_passed(&self) {
        assert!(
            self.passed && self.status.success() && self.failure.is_none(),
            "browser scenario failed ({}): {}",
            self.status,
            self.failure
                .clone()
                .unwrap_or_else(|| "no PASS line".into())
        );
    }
}

/// Runs `node script` with `env` (and `CHROMIUM`), answering each `WAIT` with
/// `step(step, arg)`; a hung browser is killed after `timeout`.
pub fn run_browser_scenario(
    script: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    mut step: impl FnMut(&str, &str) -> Result<String, String>,
) -> Scenario {
    let mut command = Command::new("node");
    command
        .arg(script)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run node (the machine's Node.js)");
    let mut to_node = child.stdin.take().expect("node stdin");
    let from_node = child.stdout.take().expect("node stdout");
    // A watchdog: a hung browser ends the test instead of the CI job.
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watch = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if watch.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let mut passed = false;
    let mut failure = None;
    let mut screenshots = Vec::new();
    for line in BufReader::new(from_node).lines() {
        let Ok(line) = line else { break };
        println!("[browser] {line}");
        if let Some(rest) = line.strip_prefix("WAIT ") {
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            let answer = match step(name, arg) {
                Ok(v) => format!("OK {v}"),
                Err(why) => {
                    failure.get_or_insert(format!("{name}: {why}"));
                    format!("FAIL {why}")
                }
            };
            if writeln!(to_node, "{answer}").is_err() {
                break;
            }
        } else if let Some(path) = line.strip_prefix("ARTIFACT ") {
            screenshots.push(PathBuf::from(path));
        } else if line == "PASS" {
            passed = true;
            break;
        } else if let Some(why) = line.strip_prefix("FAIL ") {
            failure.get_or_insert(why.to_string());
        }
    }
    drop(to_node);
    let status = child.wait().expect("wait for node");
    done.store(true, Ordering::SeqCst);
    Scenario {
        passed,
        failure,
        screenshots,
        status,
    }
}
