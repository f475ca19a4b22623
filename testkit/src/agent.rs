//! The agent WebSocket client (tungstenite): what a sidecar does, minus the
//! sidecar, plus the raw-socket faults the chaos suites inject.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

use crate::hub::Hub;
use crate::support::{PRESENCE_TYPES, PUSH_TIMEOUT, REPLY_TIMEOUT};

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
    pub(crate) ws: WebSocket<TcpStream>,
    pub(crate) pending: VecDeque<Value>,
    pub(crate) closed: Option<(Option<u16>, String)>,
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
        let mut reply = self.identify(agent_id, token, caps);
        // An agent with slots is told what it was granted (ext, 6.24).
        if let Some(r) = reply.as_object_mut() {
            r.remove("slots");
            r.remove("reserve_slot_for_standing");
        }
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

    /// Asks `question` about the assignment `assign` (`task_input_required`,
    /// with `extra` fields such as options) and returns the hub's reply.
    pub fn ask(&mut self, assign: &Value, question: &str, extra: Value) -> Value {
        let mut frame = json!({"type": "task_input_required", "task_id": assign["task_id"],
                               "generation": assign["generation"], "question": question});
        if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        self.send(frame);
        self.recv_reply(REPLY_TIMEOUT)
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

pub(crate) fn is_presence(v: &Value) -> bool {
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
