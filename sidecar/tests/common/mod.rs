//! Shared harness for the sidecar integration tests.
//!
//! Real parts only: the real `agentcom-hub` binary as a child process on a
//! 127.0.0.1 port with a temp data dir, the real `agentcom-sidecar` binary as a
//! child process with a temp config, state and results dir, and shell scripts as
//! the "agent". Every wait is bounded by a generous deadline.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;

/// How long the hub may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for anything that normally takes milliseconds to a second.
pub const SOON: Duration = Duration::from_secs(30);
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn sidecar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentcom-sidecar"))
}

/// The hub binary next to the sidecar's, built once if missing.
pub fn hub_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = sidecar_bin().with_file_name("agentcom-hub");
            if !path.exists() {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "--bin", "agentcom-hub"])
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                    .status()
                    .expect("run cargo build --bin agentcom-hub");
                assert!(status.success(), "building agentcom-hub failed");
            }
            assert!(path.exists(), "no hub binary at {}", path.display());
            path
        })
        .clone()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unique() -> String {
    format!(
        "{:x}{:x}",
        now_ms(),
        std::process::id() as u64 * 7919
            + COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// ---------------------------------------------------------------------------
// The hub
// ---------------------------------------------------------------------------

pub struct Hub {
    child: Option<Child>,
    pub root: TempDir,
    pub port: u16,
    pub admin_token: String,
    starts: usize,
}

impl Hub {
    pub fn start() -> Hub {
        Hub::start_with_config("")
    }

    pub fn start_with_config(config: &str) -> Hub {
        let root = tempfile::Builder::new()
            .prefix("agentcom-sc-hub-")
            .tempdir()
            .expect("temp dir for the hub");
        fs::write(root.path().join("config.toml"), config).expect("write hub config");
        let mut hub = Hub {
            child: None,
            root,
            port: 0,
            admin_token: format!("adm_{}", unique()),
            starts: 0,
        };
        hub.spawn();
        hub
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("hub-stderr-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        self.starts += 1;
        // The first start picks a free port; later starts reuse it so the
        // sidecar's configured URL stays valid.
        let bind = format!("127.0.0.1:{}", self.port);
        let log = File::create(self.log_path()).expect("hub log file");
        let mut child = Command::new(hub_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--bind")
            .arg(&bind)
            .arg("--config")
            .arg(self.root.path().join("config.toml"))
            .env("AGENTCOM_ADMIN_TOKEN", &self.admin_token)
            .env_remove("RUST_LOG")
            .env_remove("AGENTCOM_BIND")
            .env_remove("AGENTCOM_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn agentcom-hub");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<u16>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    if let Ok(port) = digits.parse() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => {
                self.port = port;
                self.child = Some(child);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hub did not start within {STARTUP_TIMEOUT:?} ({e}) on {bind}:\n{}",
                    tail(&self.log_path(), 40)
                );
            }
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts again on the same data dir and port.
    pub fn start_again(&mut self) {
        // The port was just released; retry briefly in case it is not free yet.
        let deadline = Instant::now() + SOON;
        loop {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            match ok {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &self.url(path), Some(&self.admin_token), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http("POST", &self.url(path), Some(&self.admin_token), Some(body))
    }

    /// Issues an agent token (`POST /admin/tokens`).
    pub fn register_agent(&self, agent_id: &str) -> String {
        let (status, resp) = self.post("/admin/tokens", &json!({"agent_id": agent_id}));
        assert_eq!(status, 201, "POST /admin/tokens: {resp}");
        resp["token"].as_str().expect("token").to_string()
    }

    /// Submits a task for `agent_id` only; returns its id.
    pub fn submit_for(&self, agent_id: &str, mut task: Value) -> String {
        task["needed_capabilities"] = json!([format!("agent:{agent_id}")]);
        let (status, resp) = self.post("/api/tasks", &task);
        assert_eq!(status, 201, "POST /api/tasks {task}: {resp}");
        resp["task_id"].as_str().expect("task_id").to_string()
    }

    pub fn task(&self, task_id: &str) -> Value {
        let (status, t) = self.get(&format!("/api/tasks/{task_id}"));
        assert_eq!(status, 200, "GET /api/tasks/{task_id}: {t}");
        t
    }

    /// Waits until the task has `status`; panics with the task otherwise.
    pub fn wait_status(&self, task_id: &str, status: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_for(timeout, || {
            last = self.task(task_id);
            last["status"] == status
        });
        assert!(ok, "task {task_id} not {status} within {timeout:?}: {last}");
        last
    }

    /// The agent's entry in `GET /api/agents`, if listed.
    pub fn agent(&self, agent_id: &str) -> Option<Value> {
        let (_, v) = self.get("/api/agents");
        v["agents"]
            .as_array()?
            .iter()
            .find(|a| a["agent_id"] == agent_id)
            .cloned()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && self.starts > 0 {
            eprintln!(
                "---- hub stderr (start #{}) ----\n{}",
                self.starts,
                tail(&self.log_path(), 30)
            );
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: sends a signal to a child process of this test.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// One HTTP request: `(status, json body)`.
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let json_of = |resp: ureq::Response| {
        let text = resp.into_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    match result {
        Ok(resp) => (resp.status(), json_of(resp)),
        Err(ureq::Error::Status(code, resp)) => (code, json_of(resp)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Event names of a task's history.
pub fn history_events(task: &Value) -> Vec<String> {
    task["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["event"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn count_events(task: &Value, event: &str) -> usize {
    history_events(task).iter().filter(|e| *e == event).count()
}

// ---------------------------------------------------------------------------
// The sidecar
// ---------------------------------------------------------------------------

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

    /// Waits until no task is held and the outbox is empty.
    pub fn wait_idle(&self) {
        let ok = wait_for(SOON, || {
            self.current().is_none() && self.outbox().is_empty()
        });
        assert!(
            ok,
            "sidecar not idle: current={:?} outbox={:?}\n{}",
            self.current(),
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

// ---------------------------------------------------------------------------
// Chaos helpers (chaos_*.rs): seeded RNG, fallible HTTP, hub kill -9, a wake
// command that sleeps a random short time
// ---------------------------------------------------------------------------

/// A small seeded PRNG (SplitMix64), std only, so a chaos run can be replayed
/// from its seed.
#[derive(Debug, Clone)]
pub struct ChaosRng(u64);

impl ChaosRng {
    /// An independent stream derived from `seed` and `stream`.
    pub fn fork(seed: u64, stream: u64) -> ChaosRng {
        let mut r = ChaosRng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }
}

/// The chaos seed: `AGENTCOM_CHAOS_SEED` when set (to replay a run), else a
/// fresh one. Printed by the caller.
pub fn chaos_seed() -> u64 {
    match std::env::var("AGENTCOM_CHAOS_SEED") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AGENTCOM_CHAOS_SEED must be a u64, got {s:?}")),
        _ => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_ms());
            h.write_u32(std::process::id());
            h.finish()
        }
    }
}

/// Whether the long chaos mode is asked for (`AGENTCOM_CHAOS_LONG=1`).
pub fn chaos_long() -> bool {
    std::env::var("AGENTCOM_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// One HTTP request that reports transport failures instead of panicking.
pub fn try_http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let json_of = |resp: ureq::Response| {
        let text = resp.into_string().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    match result {
        Ok(resp) => Ok((resp.status(), json_of(resp))),
        Err(ureq::Error::Status(code, resp)) => Ok((code, json_of(resp))),
        Err(e) => Err(e.to_string()),
    }
}

impl Hub {
    /// `kill -9`: no chance to flush anything. `start_again` brings it back on
    /// the same data dir and port.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL the hub");
            c.wait().expect("reap the hub");
        }
    }

    /// Every stderr log this hub wrote so far.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|n| self.root.path().join(format!("hub-stderr-{n}.log")))
            .collect()
    }

    /// Pages through `GET /api/tasks` (`limit` per page, at most 1000 pages).
    pub fn all_tasks(&self, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/api/tasks?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(c);
            }
            let (status, page) = self.get(&path);
            assert_eq!(status, 200, "GET {path}: {page}");
            all.extend(
                page["tasks"]
                    .as_array()
                    .expect("tasks array")
                    .iter()
                    .cloned(),
            );
            match &page["next_cursor"] {
                Value::Null => return all,
                Value::String(c) => cursor = Some(c.clone()),
                other => cursor = Some(other.to_string()),
            }
        }
        panic!("GET /api/tasks did not finish paging within 1000 pages");
    }
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
