//! The sidecar process harness: the real `agentcom-sidecar` binary as a child
//! process with a temp config, state and results dir, and shell scripts as the
//! "agent". Every wait is bounded by a generous deadline.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::hub::Hub;
use crate::support::{sidecar_bin, signal, tail, wait_for, SOON};

/// A sidecar process with its own directory (config, state, results, logs).
pub struct Sidecar {
    child: Option<Child>,
    pub dir: TempDir,
    pub agent_id: String,
    starts: usize,
}

/// Short timings so tests never wait for production defaults.
pub const FAST_TIMINGS: &str = "ping_interval_ms = 500\npong_timeout_ms = 3000\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\nresults_poll_ms = 200\nwake_retry_delays_ms = [50, 50, 50]\nrelease_grace_ms = 10000\nkill_grace_ms = 1000\noutbox_retry_ms = 500\nlog_level = \"debug\"\n";

impl Sidecar {
    /// A sidecar directory with a config for `agent_id`; `extra` is appended
    /// TOML (wake_command and any timing). The process is not started.
    pub fn prepare(hub: &Hub, agent_id: &str, extra: &str) -> Sidecar {
        let token = hub.register_agent(agent_id);
        Sidecar::prepare_with_token(hub, agent_id, &token, extra)
    }

    /// [`Sidecar::prepare`] for an agent whose token the test issued.
    pub fn prepare_with_token(hub: &Hub, agent_id: &str, token: &str, extra: &str) -> Sidecar {
        // The sidecar's config names the hub's URL: the hub keeps its port now.
        hub.keep_port_on_restart();
        let dir = tempfile::Builder::new()
            .prefix("agentcom-sc-")
            .tempdir()
            .expect("temp dir for the sidecar");
        // Keys in `extra` override the fast defaults.
        let mut table: toml::Table = toml::from_str(FAST_TIMINGS).expect("FAST_TIMINGS is TOML");
        let extra: toml::Table = toml::from_str(extra).expect("extra config is TOML");
        table.extend(extra);
        table.insert("agent_id".into(), agent_id.into());
        table.insert("token".into(), token.into());
        table.insert("hub_url".into(), hub.ws_url().into());
        table.insert("log_file".into(), "sidecar.log".into());
        let config = toml::to_string(&table).expect("encode config");
        fs::write(dir.path().join("config.toml"), config).expect("write sidecar config");
        Sidecar {
            child: None,
            dir,
            agent_id: agent_id.to_string(),
            starts: 0,
        }
    }

    /// Prepares and starts, then waits until the hub lists the agent online.
    pub fn start(hub: &Hub, agent_id: &str, extra: &str) -> Sidecar {
        let mut s = Sidecar::prepare(hub, agent_id, extra);
        s.spawn();
        s.wait_online(hub);
        s
    }

    /// Names several hubs (`hub_urls`, their WebSocket URLs in this order)
    /// instead of the one it was prepared for.
    pub fn use_hubs(&self, ws_urls: &[String]) {
        let text = fs::read_to_string(self.config_path()).expect("config");
        let mut table: toml::Table = toml::from_str(&text).expect("config is TOML");
        table.remove("hub_url");
        table.insert(
            "hub_urls".into(),
            toml::Value::Array(ws_urls.iter().map(|u| u.as_str().into()).collect()),
        );
        let config = toml::to_string(&table).expect("encode config");
        fs::write(self.config_path(), config).expect("config");
    }

    /// Adds `wake_command` (a shell string) to the config.
    pub fn set_wake(&self, cmd: &str) {
        let mut cfg = fs::read_to_string(self.config_path()).expect("config");
        cfg.push_str(&format!("wake_command = {}\n", toml_str(cmd)));
        fs::write(self.config_path(), cfg).expect("config");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.toml")
    }

    pub fn results_dir(&self) -> PathBuf {
        self.path("results")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "sidecar already running");
        self.starts += 1;
        let out = File::create(self.path(&format!("sidecar-stderr-{}.log", self.starts)))
            .expect("sidecar stderr file");
        let child = Command::new(sidecar_bin())
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn agentcom-sidecar");
        self.child = Some(child);
    }

    /// Waits until the hub lists the agent as connected.
    pub fn wait_online(&self, hub: &Hub) {
        let ok = wait_for(SOON, || {
            hub.agent(&self.agent_id)
                .is_some_and(|a| !a["connected_at"].is_null() && a["fsm_state"] != "offline")
        });
        assert!(
            ok,
            "sidecar {} did not come online:\n{}",
            self.agent_id,
            self.log_tail()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL the sidecar");
            c.wait().expect("reap the sidecar");
        }
    }

    /// SIGTERM and wait (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        signal(c.id() as i32, libc::SIGTERM);
        let ok = wait_for(Duration::from_secs(10), || {
            matches!(c.try_wait(), Ok(Some(_)))
        });
        if !ok {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        format!(
            "{}\n-- stderr --\n{}",
            tail(&self.path("sidecar.log"), 40),
            tail(
                &self.path(&format!("sidecar-stderr-{}.log", self.starts)),
                20
            )
        )
    }

    /// Outbox entries on disk.
    pub fn outbox(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Ok(entries) = fs::read_dir(self.state_dir().join("outbox")) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    if let Ok(b) = fs::read(e.path()) {
                        out.push(serde_json::from_slice(&b).unwrap_or(Value::Null));
                    }
                }
            }
        }
        out
    }

    pub fn current(&self) -> Option<Value> {
        let b = fs::read(self.state_dir().join("current.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The record files of every slot (`current.json`, `current-<n>.json`).
    pub fn held(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Ok(entries) = fs::read_dir(self.state_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("current") && name.ends_with(".json") {
                    if let Ok(b) = fs::read(e.path()) {
                        out.push(serde_json::from_slice(&b).unwrap_or(Value::Null));
                    }
                }
            }
        }
        out
    }

    /// Waits until no task is held (in any slot) and the outbox is empty.
    pub fn wait_idle(&self) {
        let ok = wait_for(SOON, || self.held().is_empty() && self.outbox().is_empty());
        assert!(
            ok,
            "sidecar not idle: held={:?} outbox={:?}\n{}",
            self.held(),
            self.outbox(),
            self.log_tail()
        );
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- sidecar {} log ----\n{}",
                self.agent_id,
                self.log_tail()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The fake agent
// ---------------------------------------------------------------------------

/// Writes `agent.sh` into `dir`: records each wake in `wakes.log` and the task
/// description in `desc-<id>.txt`, then in the background writes `.started`,
/// waits (bounded, 120 s) for `dir/go` when `wait_for_go`, and writes a success
/// result atomically. Returns the wake command.
pub fn fake_agent(dir: &Path, wait_for_go: bool) -> String {
    let d = dir.display();
    let wait = if wait_for_go {
        format!("i=0; while [ ! -e '{d}/go' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done")
    } else {
        String::new()
    };
    let script = format!(
        r#"#!/bin/sh
echo "$TASK_ID" >> '{d}/wakes.log'
printf '%s' "$TASK_DESCRIPTION" > '{d}/desc-'"$TASK_ID"'.txt'
(
  touch "$AGENTCOM_STARTED_FILE"
  {wait}
  printf '{{"status":"success","summary":"done by the fake agent","tokens_used":7}}' > "$AGENTCOM_RESULT_FILE.tmp"
  mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
) </dev/null >/dev/null 2>&1 &
exit 0
"#
    );
    let path = dir.join("agent.sh");
    fs::write(&path, script).expect("write agent.sh");
    format!("sh '{}'", path.display())
}

/// Lines of `dir/wakes.log`.
pub fn wakes(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("wakes.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// TOML for a string value.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Sidecar {
    /// Every stderr file and the JSON log of this sidecar.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = (1..=self.starts)
            .map(|n| self.path(&format!("sidecar-stderr-{n}.log")))
            .collect();
        paths.push(self.path("sidecar.log"));
        paths
    }
}

/// Writes `agent.sh` into `dir`: records each wake in `wakes.log`, writes
/// `.started`, then in the background sleeps a pseudo-random 0..`max_ms` ms
/// (from `salt` and the task id) and writes a success result atomically.
/// Returns the wake command.
pub fn sleepy_agent(dir: &Path, salt: u64, max_ms: u64) -> String {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
echo "$TASK_ID" >> '{d}/wakes.log'
n=$(printf '%s%s' '{salt}' "$TASK_ID" | cksum | cut -d' ' -f1)
ms=$((n % {max_ms}))
(
  touch "$AGENTCOM_STARTED_FILE"
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  printf '{{"status":"success","summary":"chaos","tokens_used":1}}' > "$AGENTCOM_RESULT_FILE.tmp"
  mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
) </dev/null >/dev/null 2>&1 &
exit 0
"#,
        max_ms = max_ms.max(1)
    );
    let path = dir.join("agent.sh");
    fs::write(&path, script).expect("write agent.sh");
    format!("sh '{}'", path.display())
}
