//! Shared harness for the hub integration tests.
//!
//! Everything here drives real parts: the real `agentcom-hub` binary as a child
//! process, real TCP sockets on 127.0.0.1 (HTTP via `ureq`, WebSocket via
//! `tungstenite`) and a real sled data directory inside a `TempDir`. Nothing is
//! mocked.
//!
//! Every wait is bounded by a deadline; the only wall-clock assumptions are the
//! generous upper bounds named by the constants below.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// How long the hub may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a reply to a frame we sent (normally milliseconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for a push the hub should send "at once" (the issue says 1 s for
/// assignments; 5 s keeps the tests independent of machine speed).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for HTTP requests.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Presence pushes every identified socket may receive at any time.
pub const PRESENCE_TYPES: [&str; 3] = ["agent_joined", "agent_left", "status_changed"];

/// Milliseconds since the Unix epoch, as the protocol counts time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A random hex string of `n` 16-digit blocks (std only: `RandomState` is seeded randomly).
pub fn random_hex(blocks: usize) -> String {
    (0..blocks)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
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

// ---------------------------------------------------------------------------
// The hub process
// ---------------------------------------------------------------------------

/// A running hub: child process, its data dir and the admin token it was created with.
pub struct Hub {
    child: Option<Child>,
    /// Holds `data/` (the sled dir), `config.toml` and the hub's stderr logs.
    root: TempDir,
    pub port: u16,
    pub admin_token: String,
    starts: usize,
    /// Whether `AGENTCOM_ADMIN_TOKEN` is passed to the next start.
    admin_env: bool,
    /// The port the next start binds (0: any free one).
    bind_port: u16,
}

impl Hub {
    /// Starts a hub with the default configuration.
    pub fn start() -> Hub {
        Hub::start_with_config("")
    }

    /// Starts a hub with `config` (TOML, flat keys) as its config file.
    pub fn start_with_config(config: &str) -> Hub {
        let root = tempfile::Builder::new()
            .prefix("agentcom-hub-test-")
            .tempdir()
            .expect("create temp dir for the hub");
        std::fs::write(root.path().join("config.toml"), config).expect("write config file");
        let mut hub = Hub {
            child: None,
            root,
            port: 0,
            admin_token: format!("adm_{}", random_hex(3)),
            starts: 0,
            admin_env: true,
            bind_port: 0,
        };
        hub.spawn();
        hub
    }

    /// The sled data directory (created by the hub on first start).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("hub-stderr-{}.log", self.starts))
    }

    /// Every stderr log written by this hub so far.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|n| self.root.path().join(format!("hub-stderr-{n}.log")))
            .collect()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        self.starts += 1;
        let log = File::create(self.log_path()).expect("create hub log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.bind_port))
            .arg("--config")
            .arg(self.root.path().join("config.toml"))
            .env_remove("AGENTCOM_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .env_remove("AGENTCOM_BIND")
            .env_remove("AGENTCOM_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if self.admin_env {
            cmd.env("AGENTCOM_ADMIN_TOKEN", &self.admin_token);
        }
        let mut child = cmd.spawn().expect("spawn the agentcom-hub binary");
        let stdout = child.stdout.take().expect("hub stdout is piped");
        let (tx, rx) = mpsc::channel::<u16>();
        // Reads stdout until the child exits (EOF), forwarding everything but the
        // listening line, which reports the port.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_listening_line(&line) {
                    Some(port) => {
                        let _ = tx.send(port);
                    }
                    None => println!("[hub stdout] {line}"),
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
                    "hub did not print its listening line within {STARTUP_TIMEOUT:?} ({e}); stderr:\n{}",
                    tail(&self.log_path(), 60)
                );
            }
        }
    }

    /// Stops the hub gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
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

    /// `kill -9` (SIGKILL on unix): no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the hub");
            child.wait().expect("reap the killed hub");
        }
    }

    /// Stops the hub if it runs, then starts it again on the same data dir.
    /// The port changes.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts without `AGENTCOM_ADMIN_TOKEN` in the environment: the admin token
    /// must then come from the data dir (stored hashed).
    pub fn restart_without_admin_env(&mut self) {
        self.stop();
        self.admin_env = false;
        self.spawn();
    }

    /// Starts the hub again after `kill9` or `stop`, on the same data dir.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the hub again after `kill9` or `stop`, on the same data dir and the
    /// same port (clients that reconnect by themselves, like the dashboard page).
    pub fn start_again_on_same_port(&mut self) {
        self.bind_port = self.port;
        self.spawn();
        self.bind_port = 0;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    // HTTP with the admin token -------------------------------------------

    pub fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &self.url(path), Some(&self.admin_token), Body::None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            "POST",
            &self.url(path),
            Some(&self.admin_token),
            Body::Json(body),
        )
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        http(
            "DELETE",
            &self.url(path),
            Some(&self.admin_token),
            Body::None,
        )
    }

    // HTTP with any (or no) bearer token ----------------------------------

    pub fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        http("GET", &self.url(path), token, Body::None)
    }

    pub fn post_as(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        http("POST", &self.url(path), token, Body::Json(body))
    }

    /// Posts `raw` as the body with `Content-Type: application/json` (for bad JSON).
    pub fn post_raw_as(&self, path: &str, token: Option<&str>, raw: &str) -> (u16, Value) {
        http("POST", &self.url(path), token, Body::Raw(raw))
    }

    pub fn delete_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        http("DELETE", &self.url(path), token, Body::None)
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
                "---- hub stderr (last lines of start #{}) ----\n{}",
                self.starts,
                tail(&self.log_path(), 40)
            );
        }
    }
}

fn parse_listening_line(line: &str) -> Option<u16> {
    let rest = line.split("listening on http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Every regular file under `dir`, recursively (bounded depth).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && depth < 16 => stack.push((path, depth + 1)),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str),
}

/// One HTTP request. 4xx/5xx are returned, not raised: `(status, json body)`. A body
/// that is not JSON comes back as a JSON string.
pub fn http(method: &str, url: &str, token: Option<&str>, body: Body) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Body::None => req.call(),
        Body::Json(v) => req.send_json(v),
        Body::Raw(s) => req.set("Content-Type", "application/json").send_string(s),
    };
    match result {
        Ok(resp) => (resp.status(), body_json(resp)),
        Err(ureq::Error::Status(code, resp)) => (code, body_json(resp)),
        Err(e) => panic!("{method} {url}: transport error: {e}"),
    }
}

fn body_json(resp: ureq::Response) -> Value {
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Issues an agent token over HTTP (`POST /admin/tokens`) and returns it.
pub fn register_agent(hub: &Hub, agent_id: &str, capabilities: &[&str]) -> String {
    let body = if capabilities.is_empty() {
        json!({ "agent_id": agent_id })
    } else {
        json!({ "agent_id": agent_id, "capabilities": capabilities })
    };
    let (status, resp) = hub.post("/admin/tokens", &body);
    assert_eq!(status, 201, "POST /admin/tokens for {agent_id}: {resp}");
    resp["token"]
        .as_str()
        .expect("token in POST /admin/tokens response")
        .to_string()
}

/// Submits one task with the admin token; asserts 201 and returns its id.
pub fn submit(hub: &Hub, task: Value) -> String {
    let (status, resp) = hub.post("/api/tasks", &task);
    assert_eq!(status, 201, "POST /api/tasks {task}: {resp}");
    assert_eq!(resp["status"], "queued", "{resp}");
    resp["task_id"]
        .as_str()
        .expect("task_id in POST /api/tasks response")
        .to_string()
}

/// `GET /api/tasks/:id` (admin); asserts 200.
/// Submits a batch as admin; asserts 201 and returns the task ids in order.
pub fn submit_batch(hub: &Hub, batch: Value) -> Vec<String> {
    let (status, body) = hub.post("/api/tasks", &batch);
    assert_eq!(status, 201, "POST /api/tasks {batch}: {body}");
    body["tasks"]
        .as_array()
        .expect("tasks in a batch reply")
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect()
}

pub fn get_task(hub: &Hub, task_id: &str) -> Value {
    let (status, task) = hub.get(&format!("/api/tasks/{task_id}"));
    assert_eq!(status, 200, "GET /api/tasks/{task_id}: {task}");
    task
}

/// `GET /api/agents/:id/state` (admin); asserts 200.
pub fn agent_state(hub: &Hub, agent_id: &str) -> Value {
    let (status, state) = hub.get(&format!("/api/agents/{agent_id}/state"));
    assert_eq!(status, 200, "GET /api/agents/{agent_id}/state: {state}");
    state
}

/// The `event` names of a task's history, oldest first.
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

/// How many history entries of a task are `event`.
pub fn count_events(task: &Value, event: &str) -> usize {
    history_events(task).iter().filter(|e| *e == event).count()
}

/// Pages through `GET /api/tasks?<query>` with `limit` per page, following
/// `next_cursor` until it is null. At most 1000 pages.
pub fn list_all_tasks(hub: &Hub, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/tasks?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(c);
        }
        let (status, page) = hub.get(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        let tasks = page["tasks"].as_array().expect("tasks array in listing");
        assert!(
            tasks.len() <= limit,
            "page larger than limit: {}",
            tasks.len()
        );
        assert_eq!(page["count"].as_u64(), Some(tasks.len() as u64), "count");
        all.extend(tasks.iter().cloned());
        // The cursor is opaque: a string or a number, passed back as given.
        match &page["next_cursor"] {
            Value::Null => return all,
            Value::String(c) => cursor = Some(c.clone()),
            other => cursor = Some(other.to_string()),
        }
    }
    panic!("GET /api/tasks did not finish paging within 1000 pages");
}

/// `by_status[status]` from `GET /api/tasks/stats` (0 when absent).
pub fn stats_count(hub: &Hub, status: &str) -> u64 {
    let (code, stats) = hub.get("/api/tasks/stats");
    assert_eq!(code, 200, "GET /api/tasks/stats: {stats}");
    stats["by_status"][status].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Agent WebSocket client
// ---------------------------------------------------------------------------

/// What one read from the socket gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Frame(Value),
    /// The hub closed the socket (close code and reason when it sent a close frame).
    Closed {
        code: Option<u16>,
        reason: String,
    },
    Timeout,
}

/// A synchronous agent connection (what a sidecar does, minus the sidecar).
///
/// Non-presence frames skipped while waiting for a specific type are kept in
/// arrival order and handed out by later waits, so no reply is lost.
pub struct Agent {
    pub agent_id: String,
    ws: WebSocket<TcpStream>,
    pending: VecDeque<Value>,
    closed: Option<(Option<u16>, String)>,
}

impl Agent {
    /// Opens the socket without identifying.
    pub fn open(hub: &Hub) -> Agent {
        let stream = TcpStream::connect(("127.0.0.1", hub.port)).expect("TCP connect to the hub");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set handshake read timeout");
        let _ = stream.set_nodelay(true);
        let (ws, _response) = match tungstenite::client(hub.ws_url(), stream) {
            Ok(pair) => pair,
            Err(e) => panic!("WebSocket handshake with {} failed: {e}", hub.ws_url()),
        };
        Agent {
            agent_id: String::new(),
            ws,
            pending: VecDeque::new(),
            closed: None,
        }
    }

    /// Connects and identifies without capabilities (token capabilities apply).
    pub fn connect(hub: &Hub, agent_id: &str, token: &str) -> Agent {
        let mut agent = Agent::open(hub);
        agent.identify_ok(agent_id, token, None);
        agent
    }

    /// Connects and identifies declaring `capabilities`.
    pub fn connect_with_caps(hub: &Hub, agent_id: &str, token: &str, caps: &[&str]) -> Agent {
        let mut agent = Agent::open(hub);
        agent.identify_ok(agent_id, token, Some(caps));
        agent
    }

    /// Sends `identify` and returns the first non-presence reply.
    pub fn identify(&mut self, agent_id: &str, token: &str, caps: Option<&[&str]>) -> Value {
        let mut frame = json!({"type": "identify", "agent_id": agent_id, "token": token});
        if let Some(caps) = caps {
            frame["capabilities"] = json!(caps);
        }
        self.send(frame);
        self.recv_reply(REPLY_TIMEOUT)
    }

    /// Identifies and asserts `identified`.
    pub fn identify_ok(&mut self, agent_id: &str, token: &str, caps: Option<&[&str]>) {
        let reply = self.identify(agent_id, token, caps);
        assert_eq!(
            reply,
            json!({"type": "identified", "agent_id": agent_id}),
            "identify as {agent_id}"
        );
        self.agent_id = agent_id.to_string();
    }

    /// Sends one JSON frame; panics if the socket is gone.
    pub fn send(&mut self, frame: Value) {
        if let Err(e) = self.try_send_text(&frame.to_string()) {
            panic!("agent {} could not send {frame}: {e}", self.agent_id);
        }
    }

    /// Sends a raw text frame (possibly not JSON).
    pub fn try_send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::Text(text.to_string()))
            .map_err(|e| e.to_string())
    }

    /// Closes the socket with a normal close frame (a clean disconnect).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// One read from the socket, presence pushes included, ignoring `pending`.
    fn read_raw(&mut self, timeout: Duration) -> Incoming {
        if let Some((code, reason)) = &self.closed {
            return Incoming::Closed {
                code: *code,
                reason: reason.clone(),
            };
        }
        let deadline = Instant::now() + timeout;
        // Bounded: each pass either returns or consumes a control frame, and the
        // deadline ends the loop.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Incoming::Timeout;
            }
            let _ = self
                .ws
                .get_mut()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Incoming::Frame(
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )
                }
                Ok(Message::Binary(bytes)) => {
                    return Incoming::Frame(json!({"type": "<binary>", "len": bytes.len()}))
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, String::new()),
                    };
                    self.closed = Some((code, reason.clone()));
                    return Incoming::Closed { code, reason };
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Incoming::Timeout
                }
                Err(e) => {
                    let reason = format!("connection ended without close frame: {e}");
                    self.closed = Some((None, reason.clone()));
                    return Incoming::Closed { code: None, reason };
                }
            }
        }
    }

    /// The next frame of any type (presence included), kept frames first.
    pub fn recv_any(&mut self, timeout: Duration) -> Incoming {
        match self.pending.pop_front() {
            Some(v) => Incoming::Frame(v),
            None => self.read_raw(timeout),
        }
    }

    /// The next non-presence frame, or `Closed`/`Timeout`.
    pub fn next_reply(&mut self, timeout: Duration) -> Incoming {
        if let Some(v) = self.pending.pop_front() {
            return Incoming::Frame(v);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_raw(left) {
                Incoming::Frame(v) if is_presence(&v) => continue,
                other => return other,
            }
        }
    }

    /// The next non-presence frame; panics on timeout or close.
    pub fn recv_reply(&mut self, timeout: Duration) -> Value {
        match self.next_reply(timeout) {
            Incoming::Frame(v) => v,
            other => panic!(
                "agent {:?}: expected a reply within {timeout:?}, got {other:?}",
                self.agent_id
            ),
        }
    }

    /// The first frame of type `ty` (kept frames first); other non-presence frames
    /// are kept for later. `None` on timeout or close.
    pub fn try_recv_type(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        if let Some(pos) = self.pending.iter().position(|v| v["type"] == ty) {
            return self.pending.remove(pos);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_raw(left) {
                Incoming::Frame(v) if v["type"] == ty => return Some(v),
                Incoming::Frame(v) if is_presence(&v) => continue,
                Incoming::Frame(v) => self.pending.push_back(v),
                Incoming::Closed { .. } | Incoming::Timeout => return None,
            }
        }
    }

    /// The first frame of type `ty`; panics (showing what did arrive) otherwise.
    pub fn recv_type(&mut self, ty: &str, timeout: Duration) -> Value {
        match self.try_recv_type(ty, timeout) {
            Some(v) => v,
            None => panic!(
                "agent {:?}: no {ty:?} frame within {timeout:?}; kept frames: {:?}; closed: {:?}",
                self.agent_id, self.pending, self.closed
            ),
        }
    }

    /// Sends `task_accepted` for `task_id` at `generation` and asserts the
    /// `accepted` ack.
    pub fn accept(&mut self, task_id: &str, generation: Value) {
        self.send(json!({"type": "task_accepted", "task_id": task_id, "generation": generation}));
        let ack = self.recv_ack(task_id, REPLY_TIMEOUT);
        assert_eq!(ack["status"], "accepted", "{ack}");
    }

    /// Waits for the next `task_assign`, asserts it is `task_id`, accepts it and
    /// returns the assignment frame.
    pub fn take(&mut self, task_id: &str) -> Value {
        let assign = self.recv_type("task_assign", PUSH_TIMEOUT);
        assert_eq!(
            assign["task_id"], task_id,
            "agent {} got the wrong task: {assign}",
            self.agent_id
        );
        self.accept(task_id, assign["generation"].clone());
        assign
    }

    /// Completes the assignment `assign` (an empty result) and asserts the ack.
    pub fn complete(&mut self, assign: &Value) {
        let task_id = assign["task_id"].as_str().expect("task_id");
        self.send(json!({"type": "task_complete", "task_id": task_id,
                         "generation": assign["generation"], "result": {}}));
        assert_eq!(
            self.recv_ack(task_id, REPLY_TIMEOUT)["status"],
            "complete",
            "complete {task_id}"
        );
    }

    /// The first `task_ack` for `task_id`; other frames are kept.
    pub fn recv_ack(&mut self, task_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_recv_type("task_ack", left) {
                Some(ack) if ack["task_id"] == task_id => break Some(ack),
                Some(other) => skipped.push(other),
                None => break None,
            }
        };
        for (i, v) in skipped.into_iter().enumerate() {
            self.pending.insert(i, v);
        }
        match found {
            Some(ack) => ack,
            None => panic!(
                "agent {:?}: no task_ack for {task_id} within {timeout:?}; kept: {:?}",
                self.agent_id, self.pending
            ),
        }
    }

    /// Waits for the hub to close the socket; returns (code, reason). Frames
    /// before the close are discarded. Panics if it stays open.
    pub fn recv_close(&mut self, timeout: Duration) -> (Option<u16>, String) {
        self.pending.clear();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_raw(left) {
                Incoming::Frame(_) => continue,
                Incoming::Closed { code, reason } => return (code, reason),
                Incoming::Timeout => panic!(
                    "agent {:?}: socket still open after {timeout:?}",
                    self.agent_id
                ),
            }
        }
    }

    /// Asserts no frame of type `ty` arrives during `dur` (others are kept).
    /// Only for checks that a push must not happen.
    pub fn expect_no_type(&mut self, ty: &str, dur: Duration) {
        if let Some(v) = self.try_recv_type(ty, dur) {
            panic!("agent {:?}: unexpected {ty} frame: {v}", self.agent_id);
        }
    }

    /// Sends `ping` and waits for `pong`: proves the socket is open and served.
    pub fn assert_alive(&mut self) {
        self.send(json!({"type": "ping"}));
        let pong = self.recv_type("pong", REPLY_TIMEOUT);
        assert!(
            pong["timestamp"].is_u64(),
            "pong carries a timestamp: {pong}"
        );
    }

    /// Frames kept so far (non-presence frames skipped by typed waits).
    pub fn kept(&self) -> Vec<Value> {
        self.pending.iter().cloned().collect()
    }
}

fn is_presence(v: &Value) -> bool {
    PRESENCE_TYPES.iter().any(|t| v["type"] == *t)
}

/// Sends a frame and returns the next non-presence reply.
pub fn request(agent: &mut Agent, frame: Value) -> Value {
    agent.send(frame);
    agent.recv_reply(REPLY_TIMEOUT)
}

/// Asserts `reply` is `{"type":"error","error":<error>}` (extra fields allowed).
/// Asserts a lifecycle refusal: `{"type":"error","error":"<prefix>: <reason>"}`.
pub fn assert_refused(reply: &Value, prefix: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{prefix}: ")), "{reply}");
}

pub fn assert_error(reply: &Value, error: &str) {
    assert_eq!(
        reply["type"], "error",
        "expected error {error:?}, got {reply}"
    );
    assert_eq!(
        reply["error"], error,
        "expected error {error:?}, got {reply}"
    );
}

// ---------------------------------------------------------------------------
// Worker: an agent that accepts and completes everything it is given
// ---------------------------------------------------------------------------

/// Global order of task_assign receipts across all workers of a test binary.
static RECEIPT_SEQ: AtomicUsize = AtomicUsize::new(0);

/// One assignment a worker received.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub task_id: String,
    pub generation: u64,
    pub priority: u64,
    pub assigned_at: u64,
    pub received: Instant,
    /// Position among all receipts in this test binary (cross-worker order).
    pub seq: usize,
}

/// What a worker did, for assertions.
#[derive(Debug, Clone, Default)]
pub struct WorkerLog {
    pub agent_id: String,
    pub assigned: Vec<Assignment>,
    /// Task ids whose completion the hub acknowledged (`task_ack` status complete).
    pub completed: Vec<String>,
    /// Every `task_ack` as (task_id, status).
    pub acks: Vec<(String, String)>,
    /// `error` frames received (there should be none).
    pub errors: Vec<Value>,
    /// `task_cancelled` frames received.
    pub cancelled: Vec<Value>,
    /// Set when the hub closed the socket.
    pub closed: Option<String>,
}

/// A thread running an identified [`Agent`]: it accepts every `task_assign` at
/// once and completes it after `work` with `result {"done_by": agent}` and
/// `tokens_used 10`.
pub struct Worker {
    pub agent_id: String,
    log: Arc<Mutex<WorkerLog>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Longest a worker thread lives if nobody stops it.
const WORKER_MAX_LIFETIME: Duration = Duration::from_secs(600);

impl Worker {
    /// Starts working on an already identified connection.
    pub fn start(mut agent: Agent, work: Duration) -> Worker {
        let agent_id = agent.agent_id.clone();
        let log = Arc::new(Mutex::new(WorkerLog {
            agent_id: agent_id.clone(),
            ..WorkerLog::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            let born = Instant::now();
            // (task_id, generation, due)
            let mut in_hand: VecDeque<(String, u64, Instant)> = VecDeque::new();
            while !stop2.load(Ordering::SeqCst) && born.elapsed() < WORKER_MAX_LIFETIME {
                while let Some((task_id, generation, due)) = in_hand.front().cloned() {
                    if Instant::now() < due {
                        break;
                    }
                    in_hand.pop_front();
                    let agent_name = agent.agent_id.clone();
                    if agent
                        .try_send_text(
                            &json!({
                                "type": "task_complete",
                                "task_id": task_id,
                                "generation": generation,
                                "result": {"done_by": agent_name},
                                "tokens_used": 10
                            })
                            .to_string(),
                        )
                        .is_err()
                    {
                        break;
                    }
                }
                let wait = in_hand
                    .front()
                    .map(|(_, _, due)| due.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(100))
                    .clamp(Duration::from_millis(1), Duration::from_millis(100));
                match agent.recv_any(wait) {
                    Incoming::Timeout => {}
                    Incoming::Closed { code, reason } => {
                        lock(&log2).closed = Some(format!("{code:?} {reason}"));
                        return;
                    }
                    Incoming::Frame(v) => match v["type"].as_str().unwrap_or_default() {
                        "task_assign" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                            let generation = v["generation"].as_u64().unwrap_or_default();
                            lock(&log2).assigned.push(Assignment {
                                task_id: task_id.clone(),
                                generation,
                                priority: v["priority"].as_u64().unwrap_or(99),
                                assigned_at: v["assigned_at"].as_u64().unwrap_or_default(),
                                received: Instant::now(),
                                seq: RECEIPT_SEQ.fetch_add(1, Ordering::SeqCst),
                            });
                            let _ = agent.try_send_text(
                                &json!({
                                    "type": "task_accepted",
                                    "task_id": task_id,
                                    "generation": generation
                                })
                                .to_string(),
                            );
                            in_hand.push_back((task_id, generation, Instant::now() + work));
                        }
                        "task_ack" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                            let status = v["status"].as_str().unwrap_or_default().to_string();
                            let mut log = lock(&log2);
                            if status == "complete" {
                                log.completed.push(task_id.clone());
                            }
                            log.acks.push((task_id, status));
                        }
                        "task_cancelled" => {
                            let task_id = v["task_id"].as_str().unwrap_or_default();
                            in_hand.retain(|(t, _, _)| t != task_id);
                            lock(&log2).cancelled.push(v);
                        }
                        "error" => lock(&log2).errors.push(v),
                        _ => {}
                    },
                }
            }
        });
        Worker {
            agent_id,
            log,
            stop,
            handle: Some(handle),
        }
    }

    /// Registers `agent_id`, connects, identifies and starts working.
    pub fn spawn(hub: &Hub, agent_id: &str, work: Duration) -> Worker {
        let token = register_agent(hub, agent_id, &[]);
        Worker::start(Agent::connect(hub, agent_id, &token), work)
    }

    /// A copy of what the worker did so far.
    pub fn log(&self) -> WorkerLog {
        lock(&self.log).clone()
    }

    /// Stops the thread (the socket is dropped) and returns the final log.
    pub fn stop(mut self) -> WorkerLog {
        self.halt();
        self.log()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
    }
}

fn lock(log: &Mutex<WorkerLog>) -> std::sync::MutexGuard<'_, WorkerLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Messaging helpers (used by the tests/messaging_*.rs files)
// ---------------------------------------------------------------------------

/// Registers `agent_id` and connects it; returns (token, identified socket).
pub fn online_agent(hub: &Hub, agent_id: &str) -> (String, Agent) {
    let token = register_agent(hub, agent_id, &[]);
    let agent = Agent::connect(hub, agent_id, &token);
    (token, agent)
}

/// Closes `agent` cleanly and waits until the hub reports it offline (after
/// which direct messages to it go to its mailbox).
pub fn disconnect(hub: &Hub, agent: Agent) {
    let agent_id = agent.agent_id.clone();
    agent.close();
    assert!(
        wait_for(PUSH_TIMEOUT, || agent_state(hub, &agent_id)["fsm_state"]
            == "offline"),
        "agent {agent_id} still online after closing its socket: {}",
        agent_state(hub, &agent_id)
    );
}

/// Makes the hub push a direct `message` (from the admin, payload
/// `{"fence": nonce}`) to `agent` and reads until it arrives. Returns every
/// non-presence frame that arrived before it (kept frames included), so a test
/// can assert that some push did *not* happen without sleeping: pushes the hub
/// sent before the fence reach the socket before it.
pub fn frames_before_fence(hub: &Hub, agent: &mut Agent) -> Vec<Value> {
    let nonce = random_hex(1);
    let (status, resp) = hub.post(
        "/api/message",
        &json!({"to": agent.agent_id, "payload": {"fence": nonce}}),
    );
    assert_eq!(status, 200, "fence message to {}: {resp}", agent.agent_id);
    let deadline = Instant::now() + PUSH_TIMEOUT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match agent.recv_any(left) {
            Incoming::Frame(v) if v["type"] == "message" && v["payload"]["fence"] == nonce => {
                return before
            }
            Incoming::Frame(v) if is_presence(&v) => {}
            Incoming::Frame(v) => before.push(v),
            other => panic!(
                "agent {:?}: fence message not received within {PUSH_TIMEOUT:?}: {other:?}; before it: {before:?}",
                agent.agent_id
            ),
        }
    }
}

/// `GET /api/mailbox/:agent_id?since=N` with `token`; asserts 200.
pub fn read_mailbox(hub: &Hub, agent_id: &str, token: &str, since: u64) -> Value {
    let path = format!("/api/mailbox/{agent_id}?since={since}");
    let (status, body) = hub.get_as(&path, Some(token));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The `seq` of every entry of a mailbox or history reply, in order.
pub fn seqs(entries: &Value) -> Vec<u64> {
    entries
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of entries, got {entries}"))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}

/// `POST /api/channels` as admin; asserts 201 and returns the body.
pub fn create_channel(hub: &Hub, name: &str, description: &str) -> Value {
    let (status, body) = hub.post(
        "/api/channels",
        &json!({"name": name, "description": description}),
    );
    assert_eq!(status, 201, "POST /api/channels {name}: {body}");
    body
}

/// Every message of `GET /api/messages?<query>`, following `cursor` with
/// `limit` per page (at most 1000 pages).
pub fn all_messages(hub: &Hub, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/messages?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(c);
        }
        let (status, page) = hub.get(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        let messages = page["messages"].as_array().expect("messages array");
        assert!(messages.len() <= limit, "page larger than limit: {page}");
        assert_eq!(
            page["count"].as_u64(),
            Some(messages.len() as u64),
            "{page}"
        );
        all.extend(messages.iter().cloned());
        match &page["cursor"] {
            Value::Null => return all,
            Value::String(c) => cursor = Some(c.clone()),
            other => cursor = Some(other.to_string()),
        }
    }
    panic!("GET /api/messages did not finish paging within 1000 pages");
}

// ---------------------------------------------------------------------------
// Chaos helpers (tests/chaos_*.rs): seeded RNG, fallible HTTP, a worker that
// reconnects across hub restarts and injects connection faults
// ---------------------------------------------------------------------------

/// A small seeded PRNG (SplitMix64), std only, so a chaos run can be replayed
/// from its seed.
#[derive(Debug, Clone)]
pub struct ChaosRng(u64);

impl ChaosRng {
    pub fn new(seed: u64) -> ChaosRng {
        ChaosRng(seed)
    }

    /// An independent stream derived from this seed and `stream`.
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

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }

    /// A WebSocket masking key.
    pub fn mask(&mut self) -> [u8; 4] {
        let b = self.next_u64().to_be_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}

/// The chaos seed: `AGENTCOM_CHAOS_SEED` when set (to replay a run), else a
/// fresh random one. Printed by the caller.
pub fn chaos_seed() -> u64 {
    match std::env::var("AGENTCOM_CHAOS_SEED") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AGENTCOM_CHAOS_SEED must be a u64, got {s:?}")),
        _ => u64::from_str_radix(&random_hex(1), 16).expect("random_hex gives hex"),
    }
}

/// Whether the long chaos mode is asked for (`AGENTCOM_CHAOS_LONG=1`).
pub fn chaos_long() -> bool {
    std::env::var("AGENTCOM_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// One HTTP request that reports transport failures instead of panicking:
/// `Ok((status, json body))`, or `Err` when no answer came (refused, reset,
/// timed out).
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
        Some(v) => req.send_json(v),
        None => req.call(),
    };
    match result {
        Ok(resp) => Ok((resp.status(), body_json(resp))),
        Err(ureq::Error::Status(code, resp)) => Ok((code, body_json(resp))),
        Err(e) => Err(e.to_string()),
    }
}

/// A client WebSocket text frame, masked as RFC 6455 requires of clients.
pub fn masked_text_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x81u8];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Opens a WebSocket to `127.0.0.1:port` and identifies as `agent_id`, without
/// panicking: `Err` says why it did not work (the hub may be down).
pub fn try_connect_agent(port: u16, agent_id: &str, token: &str) -> Result<Agent, String> {
    let stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        REPLY_TIMEOUT,
    )
    .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    let mut agent = Agent {
        agent_id: agent_id.to_string(),
        ws,
        pending: VecDeque::new(),
        closed: None,
    };
    agent.try_send_text(
        &json!({"type": "identify", "agent_id": agent_id, "token": token}).to_string(),
    )?;
    match agent.next_reply(REPLY_TIMEOUT) {
        Incoming::Frame(v) if v["type"] == "identified" => Ok(agent),
        other => Err(format!("identify: {other:?}")),
    }
}

impl Agent {
    /// Writes the first half of `frame`'s WebSocket encoding straight to the
    /// socket, bypassing the WebSocket layer (a frame cut mid-way).
    pub fn write_half_frame(&mut self, frame: &Value, mask: [u8; 4]) {
        use std::io::Write;
        let bytes = masked_text_frame(frame.to_string().as_bytes(), mask);
        let half = (bytes.len() / 2).max(1);
        let stream = self.ws.get_mut();
        let _ = stream.write_all(&bytes[..half]);
        let _ = stream.flush();
    }

    /// Ends the TCP connection at once, with no close frame (a crash, a pulled cable).
    pub fn drop_abruptly(mut self) {
        let _ = self.ws.get_mut().shutdown(std::net::Shutdown::Both);
    }
}

/// Fault rates of a [`ChaosWorker`], in per mille (0 disables).
#[derive(Debug, Clone, Copy)]
pub struct ChaosFaults {
    /// Instead of sending `task_complete`, write half its frame and drop the socket.
    pub cut_complete_mid_frame: u64,
    /// Accept a task, then drop the socket abruptly while holding it.
    pub drop_while_holding: u64,
    /// Write half of `task_complete`, leave that socket stalled open and reconnect
    /// on a new one (the hub replaces the stalled session).
    pub stall_mid_frame: u64,
    /// Before a (re)connect, open a socket, write half an `identify` frame, drop it.
    pub cut_identify: u64,
    /// On reconnect, forget the tasks held before (no `task_recovering`).
    pub forget_on_reconnect: u64,
}

impl ChaosFaults {
    pub const NONE: ChaosFaults = ChaosFaults {
        cut_complete_mid_frame: 0,
        drop_while_holding: 0,
        stall_mid_frame: 0,
        cut_identify: 0,
        forget_on_reconnect: 0,
    };
}

/// What a [`ChaosWorker`] did.
#[derive(Debug, Clone, Default)]
pub struct ChaosWorkerLog {
    pub agent_id: String,
    /// Every `task_assign` as (task_id, generation).
    pub assigned: Vec<(String, u64)>,
    /// Completions the hub acknowledged, as (task_id, generation sent).
    pub completed: Vec<(String, u64)>,
    /// Successful connections (the first included).
    pub connects: usize,
    /// Failed connection attempts (hub down, mostly).
    pub connect_failures: usize,
    /// Faults injected, by kind.
    pub faults: std::collections::BTreeMap<&'static str, usize>,
    /// `error` frames received.
    pub errors: Vec<Value>,
    pub recovered_continue: usize,
    pub recovered_reassign: usize,
}

impl ChaosWorkerLog {
    pub fn fault_count(&self) -> usize {
        self.faults.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// Accepted; complete when `due`.
    Working(Instant),
    /// `task_complete` sent, waiting for the ack.
    CompleteSent,
    /// `task_recovering` sent after a reconnect.
    Recovering,
}

/// An agent thread that survives hub restarts: it reads the hub's current port
/// from `port` (0 while the hub is down), reconnects with a short backoff, sends
/// `task_recovering` for every task it held (completing on `task_continue`,
/// dropping on `task_reassign`), accepts and completes every `task_assign` after
/// `work`, and injects the [`ChaosFaults`] while `faults_on` is set.
pub struct ChaosWorker {
    pub agent_id: String,
    log: Arc<Mutex<ChaosWorkerLog>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ChaosWorker {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        agent_id: &str,
        token: &str,
        port: Arc<std::sync::atomic::AtomicU16>,
        work: Duration,
        faults: ChaosFaults,
        faults_on: Arc<AtomicBool>,
        mut rng: ChaosRng,
        max_lifetime: Duration,
    ) -> ChaosWorker {
        let log = Arc::new(Mutex::new(ChaosWorkerLog {
            agent_id: agent_id.to_string(),
            ..ChaosWorkerLog::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let (agent_id2, token) = (agent_id.to_string(), token.to_string());
        let handle = thread::spawn(move || {
            let born = Instant::now();
            let mut held: Vec<(String, u64, Held)> = Vec::new();
            // Stalled half-frame sockets, dropped a little later.
            let mut stalled: VecDeque<(Agent, Instant)> = VecDeque::new();
            let fault = |log: &Mutex<ChaosWorkerLog>, kind: &'static str| {
                *chaos_lock(log).faults.entry(kind).or_default() += 1;
            };
            let live = || !stop2.load(Ordering::SeqCst) && born.elapsed() < max_lifetime;
            while live() {
                while stalled
                    .front()
                    .is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(2))
                {
                    stalled.pop_front();
                }
                let p = port.load(Ordering::SeqCst);
                if p == 0 {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let faulty = faults_on.load(Ordering::SeqCst);
                if faulty && rng.chance(faults.cut_identify) {
                    if let Ok(stream) = TcpStream::connect(("127.0.0.1", p)) {
                        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
                        if let Ok((ws, _)) =
                            tungstenite::client(format!("ws://127.0.0.1:{p}/ws"), stream)
                        {
                            let mut half = Agent {
                                agent_id: agent_id2.clone(),
                                ws,
                                pending: VecDeque::new(),
                                closed: None,
                            };
                            half.write_half_frame(
                                &json!({"type": "identify", "agent_id": agent_id2, "token": token}),
                                rng.mask(),
                            );
                            half.drop_abruptly();
                            fault(&log2, "cut_identify_mid_frame");
                        }
                    }
                }
                let mut agent = match try_connect_agent(p, &agent_id2, &token) {
                    Ok(a) => a,
                    Err(_) => {
                        chaos_lock(&log2).connect_failures += 1;
                        thread::sleep(rng.millis(10, 60));
                        continue;
                    }
                };
                chaos_lock(&log2).connects += 1;
                if faulty && !held.is_empty() && rng.chance(faults.forget_on_reconnect) {
                    held.clear();
                    fault(&log2, "forget_on_reconnect");
                }
                let mut sent_ok = true;
                for (task_id, generation, state) in held.iter_mut() {
                    *state = Held::Recovering;
                    sent_ok &= agent
                        .try_send_text(
                            &json!({"type": "task_recovering", "task_id": task_id, "generation": *generation})
                                .to_string(),
                        )
                        .is_ok();
                }
                if !sent_ok {
                    continue;
                }
                let mut last_sent = Instant::now();
                // One connection's life; `break` reconnects.
                'session: while live() {
                    let faulty = faults_on.load(Ordering::SeqCst);
                    let now = Instant::now();
                    for entry in held.iter_mut() {
                        let (task_id, generation) = (entry.0.clone(), entry.1);
                        let Held::Working(due) = entry.2 else {
                            continue;
                        };
                        if now < due {
                            continue;
                        }
                        let frame = json!({
                            "type": "task_complete", "task_id": task_id, "generation": generation,
                            "result": {"done_by": agent_id2}, "tokens_used": 1
                        });
                        if faulty && rng.chance(faults.cut_complete_mid_frame) {
                            agent.write_half_frame(&frame, rng.mask());
                            agent.drop_abruptly();
                            fault(&log2, "cut_complete_mid_frame");
                            break 'session;
                        }
                        if faulty && rng.chance(faults.stall_mid_frame) {
                            agent.write_half_frame(&frame, rng.mask());
                            stalled.push_back((agent, Instant::now()));
                            fault(&log2, "stall_mid_frame");
                            break 'session;
                        }
                        if agent.try_send_text(&frame.to_string()).is_err() {
                            break 'session;
                        }
                        last_sent = Instant::now();
                        entry.2 = Held::CompleteSent;
                    }
                    if last_sent.elapsed() > Duration::from_millis(1000) {
                        if agent.try_send_text(r#"{"type":"ping"}"#).is_err() {
                            break 'session;
                        }
                        last_sent = Instant::now();
                    }
                    let wait = held
                        .iter()
                        .filter_map(|(_, _, s)| match s {
                            Held::Working(due) => Some(due.saturating_duration_since(now)),
                            _ => None,
                        })
                        .min()
                        .unwrap_or(Duration::from_millis(100))
                        .clamp(Duration::from_millis(1), Duration::from_millis(100));
                    let v = match agent.recv_any(wait) {
                        Incoming::Timeout => continue,
                        Incoming::Closed { .. } => break 'session,
                        Incoming::Frame(v) => v,
                    };
                    let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                    let pos = held.iter().position(|(t, _, _)| *t == task_id);
                    match v["type"].as_str().unwrap_or_default() {
                        "task_assign" => {
                            let generation = v["generation"].as_u64().unwrap_or_default();
                            chaos_lock(&log2)
                                .assigned
                                .push((task_id.clone(), generation));
                            let entry = (
                                task_id.clone(),
                                generation,
                                Held::Working(Instant::now() + work),
                            );
                            match pos {
                                Some(i) => held[i] = entry,
                                None => held.push(entry),
                            }
                            let accepted = json!({"type": "task_accepted", "task_id": task_id, "generation": generation});
                            if agent.try_send_text(&accepted.to_string()).is_err() {
                                break 'session;
                            }
                            last_sent = Instant::now();
                            if faulty && rng.chance(faults.drop_while_holding) {
                                agent.drop_abruptly();
                                fault(&log2, "drop_while_holding");
                                break 'session;
                            }
                        }
                        "task_ack" if v["status"] == "complete" => {
                            if let Some(i) = pos {
                                let (t, g, _) = held.remove(i);
                                chaos_lock(&log2).completed.push((t, g));
                            }
                        }
                        "task_continue" => {
                            if let Some(i) = pos {
                                held[i].1 = v["generation"].as_u64().unwrap_or(held[i].1);
                                held[i].2 = Held::Working(Instant::now());
                                chaos_lock(&log2).recovered_continue += 1;
                            }
                        }
                        "task_reassign" => {
                            // Only the recovery answer: a fresh assignment of the
                            // same task that overtook it stays.
                            if let Some(i) = pos.filter(|&i| held[i].2 == Held::Recovering) {
                                held.remove(i);
                                chaos_lock(&log2).recovered_reassign += 1;
                            }
                        }
                        "task_cancelled" => {
                            if let Some(i) = pos {
                                held.remove(i);
                            }
                        }
                        "error" => {
                            let refused_complete = v["error"]
                                .as_str()
                                .is_some_and(|e| e.starts_with("task_complete_failed"));
                            if let Some(i) =
                                pos.filter(|&i| refused_complete && held[i].2 == Held::CompleteSent)
                            {
                                held.remove(i);
                            }
                            chaos_lock(&log2).errors.push(v);
                        }
                        _ => {}
                    }
                }
            }
        });
        ChaosWorker {
            agent_id: agent_id.to_string(),
            log,
            stop,
            handle: Some(handle),
        }
    }

    /// A copy of what the worker did so far.
    pub fn log(&self) -> ChaosWorkerLog {
        chaos_lock(&self.log).clone()
    }

    /// Stops the thread (its socket is dropped) and returns the final log.
    pub fn stop(mut self) -> ChaosWorkerLog {
        self.halt();
        self.log()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ChaosWorker {
    fn drop(&mut self) {
        self.halt();
    }
}

fn chaos_lock(log: &Mutex<ChaosWorkerLog>) -> std::sync::MutexGuard<'_, ChaosWorkerLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
