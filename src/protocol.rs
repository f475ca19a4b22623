//! Wire types of the AgentCom protocol (`shared/PROTOCOL.md`), shared by the hub and
//! the sidecar.
//!
//! Architecture invariant: this module depends on serde and serde_json only. It knows
//! nothing of actors, storage or HTTP, so the sidecar can use it with the hub crate's
//! `server` feature turned off.
//!
//! Inbound objects are validated field by field against a schema table before they are
//! turned into typed values, so every failure can be reported with the exact
//! `{field, error, detail}` shape the protocol asks for, and types are strict (no
//! coercion of `"3"` to `3`). `null` counts as absent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protocol version this crate speaks (compatible with the AgentCom v1.1 sidecar).
pub const PROTOCOL_VERSION: &str = "1.1";

/// Longest task description accepted (characters).
pub const MAX_DESCRIPTION: usize = 10_000;
/// Longest error / reason text accepted in lifecycle frames (characters).
pub const MAX_REASON: usize = 2_000;
/// Most capabilities an agent may declare or a task may need.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability name.
pub const MAX_CAPABILITY_LEN: usize = 128;

// ---------------------------------------------------------------------------
// Validation errors
// ---------------------------------------------------------------------------

/// One field-level validation failure, as sent in `errors` arrays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    /// One of `required`, `wrong_type`, `too_long`, `invalid_value`, `unknown_message_type`.
    pub error: String,
    pub detail: String,
    /// For `too_long`: the first 50 characters of the value plus `...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `unknown_message_type`: every type the hub understands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_types: Option<Vec<String>>,
}

impl FieldError {
    pub fn new(field: &str, error: &str, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            error: error.to_string(),
            detail: detail.into(),
            value: None,
            known_types: None,
        }
    }
}

/// Why an inbound frame was refused before dispatch (PROTOCOL.md 1.1 steps 1–2).
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    /// Not parseable as JSON: `{"type":"error","error":"invalid_json"}`, no violation.
    InvalidJson,
    /// Schema failure for the frame's `type` (which may be unknown or missing).
    Validation {
        message_type: Option<String>,
        errors: Vec<FieldError>,
    },
}

// ---------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------

/// The type a field must have.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of at most `max` characters; `non_empty` refuses "".
    Str { max: usize, non_empty: bool },
    /// A non-negative integer (JSON number without fraction).
    UInt,
    /// A JSON object.
    Object,
    /// A list of non-empty strings (capabilities, task ids).
    StrList,
    /// A list of at most `max` JSON objects (follow-up task specs).
    ObjectList { max: usize },
    /// Anything; accepted for compatibility, not interpreted.
    Any,
}

impl Kind {
    /// The JSON Schema of a value of this kind.
    pub fn json_schema(&self) -> Value {
        match self {
            Kind::Str { max, non_empty } => {
                let mut s = serde_json::json!({"type": "string", "maxLength": max});
                if *non_empty {
                    s["minLength"] = 1.into();
                }
                s
            }
            Kind::UInt => serde_json::json!({"type": "integer", "minimum": 0}),
            Kind::Object => serde_json::json!({"type": "object"}),
            Kind::StrList => serde_json::json!({
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_CAPABILITY_LEN},
                "maxItems": MAX_CAPABILITIES,
            }),
            Kind::ObjectList { max } => serde_json::json!({
                "type": "array",
                "items": {"type": "object"},
                "maxItems": max,
            }),
            Kind::Any => serde_json::json!({}),
        }
    }
}

/// The JSON Schema of an object with `fields` (unknown fields are ignored by the
/// hub, so `additionalProperties` is left open).
pub fn object_schema(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.to_string(), f.kind.json_schema()))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    serde_json::json!({"type": "object", "properties": properties, "required": required})
}

/// Every client → hub WebSocket frame's JSON Schema, by `type`.
pub fn client_frame_schemas() -> Map<String, Value> {
    CLIENT_FRAME_SCHEMAS
        .iter()
        .map(|(ty, fields)| {
            let mut schema = object_schema(fields);
            schema["properties"]["type"] = serde_json::json!({"const": ty});
            if let Some(req) = schema["required"].as_array_mut() {
                req.insert(0, Value::from("type"));
            }
            (ty.to_string(), schema)
        })
        .collect()
}

/// One field of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn s(max: usize) -> Kind {
    Kind::Str {
        max,
        non_empty: false,
    }
}

const fn id(max: usize) -> Kind {
    Kind::Str {
        max,
        non_empty: true,
    }
}

const TASK_ID: Kind = id(128);
const AGENT_ID: Kind = id(128);
const CHANNEL: Kind = id(64);
const REASON: Kind = s(MAX_REASON);

/// Schema of every client → hub WebSocket frame, by `type` (PROTOCOL.md 1.4).
pub const CLIENT_FRAME_SCHEMAS: &[(&str, &[Field])] = &[
    (
        "identify",
        &[
            req("agent_id", AGENT_ID),
            req("token", id(256)),
            opt("name", s(256)),
            opt("status", s(256)),
            opt("capabilities", Kind::StrList),
        ],
    ),
    ("ping", &[]),
    ("status", &[req("status", s(256))]),
    ("list_agents", &[]),
    (
        "message",
        &[
            req("payload", Kind::Object),
            opt("to", AGENT_ID),
            opt("message_type", s(64)),
            opt("reply_to", s(128)),
        ],
    ),
    ("channel_subscribe", &[req("channel", CHANNEL)]),
    ("channel_unsubscribe", &[req("channel", CHANNEL)]),
    (
        "channel_publish",
        &[
            req("channel", CHANNEL),
            req("payload", Kind::Object),
            opt("message_type", s(64)),
            opt("reply_to", s(128)),
        ],
    ),
    (
        "channel_history",
        &[
            req("channel", CHANNEL),
            opt("limit", Kind::UInt),
            opt("since", Kind::UInt),
        ],
    ),
    ("list_channels", &[]),
    (
        "task_accepted",
        &[req("task_id", TASK_ID), opt("generation", Kind::UInt)],
    ),
    (
        "task_progress",
        &[
            req("task_id", TASK_ID),
            opt("progress", Kind::UInt),
            opt("generation", Kind::UInt),
            opt("message", REASON),
        ],
    ),
    (
        "task_complete",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            opt("result", Kind::Object),
            opt("tokens_used", Kind::UInt),
            opt(
                "follow_ups",
                Kind::ObjectList {
                    max: MAX_FOLLOW_UPS,
                },
            ),
        ],
    ),
    (
        "task_failed",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            opt("error", REASON),
            opt("reason", REASON),
        ],
    ),
    (
        "task_rejected",
        &[
            req("task_id", TASK_ID),
            opt("reason", REASON),
            opt("generation", Kind::UInt),
        ],
    ),
    (
        "task_blocked",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            req("reason", REASON),
            opt("needs", s(256)),
        ],
    ),
    (
        "task_recovering",
        &[
            req("task_id", TASK_ID),
            opt("generation", Kind::UInt),
            opt("description", Kind::Any),
            opt("metadata", Kind::Any),
            opt("last_status", Kind::Any),
        ],
    ),
    (
        "state_report",
        &[
            req("task_id", TASK_ID),
            opt("status", Kind::Any),
            opt("generation", Kind::UInt),
            opt("assigned_at", Kind::UInt),
        ],
    ),
    (
        "wake_result",
        &[
            req("task_id", TASK_ID),
            req("status", s(64)),
            opt("attempt", Kind::UInt),
            opt("error", REASON),
            opt("reason", REASON),
        ],
    ),
    ("agent_restarting", &[opt("reason", REASON)]),
];

/// Every client frame type the hub understands.
pub fn known_types() -> Vec<String> {
    CLIENT_FRAME_SCHEMAS
        .iter()
        .map(|(t, _)| t.to_string())
        .collect()
}

impl FieldError {
    /// Adds the echoed value (`too_long`: first 50 characters plus `...`).
    pub fn with_value(mut self, value: String) -> Self {
        self.value = Some(value);
        self
    }
}

fn too_long(field: &str, text: &str, max: usize) -> FieldError {
    let mut e = FieldError::new(field, "too_long", format!("at most {max} characters"));
    let head: String = text.chars().take(50).collect();
    e.value = Some(format!("{head}..."));
    e
}

/// Checks one value against a kind; `None` when it fits.
fn check_kind(name: &str, kind: Kind, v: &Value) -> Option<FieldError> {
    match kind {
        Kind::Any => None,
        Kind::Str { max, non_empty } => match v.as_str() {
            None => Some(FieldError::new(name, "wrong_type", "expected a string")),
            Some(text) if text.chars().count() > max => Some(too_long(name, text, max)),
            Some("") if non_empty => {
                Some(FieldError::new(name, "invalid_value", "must not be empty"))
            }
            Some(_) => None,
        },
        Kind::UInt => match v {
            Value::Number(n) if n.is_u64() => None,
            Value::Number(n) if n.is_i64() => Some(FieldError::new(
                name,
                "invalid_value",
                "must not be negative",
            )),
            _ => Some(FieldError::new(name, "wrong_type", "expected an integer")),
        },
        Kind::Object => match v {
            Value::Object(_) => None,
            _ => Some(FieldError::new(name, "wrong_type", "expected an object")),
        },
        Kind::StrList => {
            let Some(items) = v.as_array() else {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of strings",
                ));
            };
            if items.len() > MAX_CAPABILITIES {
                return Some(FieldError::new(
                    name,
                    "too_long",
                    format!("at most {MAX_CAPABILITIES} entries"),
                ));
            }
            for item in items {
                match item.as_str() {
                    None => {
                        return Some(FieldError::new(
                            name,
                            "wrong_type",
                            "expected a list of strings",
                        ))
                    }
                    Some("") => {
                        return Some(FieldError::new(
                            name,
                            "invalid_value",
                            "entries must not be empty",
                        ))
                    }
                    Some(t) if t.chars().count() > MAX_CAPABILITY_LEN => {
                        return Some(too_long(name, t, MAX_CAPABILITY_LEN))
                    }
                    Some(_) => {}
                }
            }
            None
        }
        Kind::ObjectList { max } => {
            let Some(items) = v.as_array() else {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of objects",
                ));
            };
            if items.len() > max {
                return Some(FieldError::new(
                    name,
                    "too_long",
                    format!("at most {max} entries"),
                ));
            }
            if items.iter().any(|i| !i.is_object()) {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of objects",
                ));
            }
            None
        }
    }
}

/// Validates an object against a schema; an empty list means it fits.
pub fn check_fields(obj: &Map<String, Value>, fields: &[Field]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for f in fields {
        match obj.get(f.name) {
            None | Some(Value::Null) => {
                if f.required {
                    errors.push(FieldError::new(f.name, "required", "field is required"));
                }
            }
            Some(v) => {
                if let Some(e) = check_kind(f.name, f.kind, v) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

/// Drops `null` members so serde's `Option` and defaults see them as absent.
fn without_nulls(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Parses and validates one inbound agent frame (PROTOCOL.md 1.1 steps 1 and 2).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError::InvalidJson)?;
    let Value::Object(obj) = value else {
        return Err(FrameError::Validation {
            message_type: None,
            errors: vec![FieldError::new(
                "",
                "wrong_type",
                "a frame must be a JSON object",
            )],
        });
    };
    let message_type = match obj.get("type") {
        None | Some(Value::Null) => {
            return Err(FrameError::Validation {
                message_type: None,
                errors: vec![FieldError::new("type", "required", "field is required")],
            })
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(FrameError::Validation {
                message_type: None,
                errors: vec![FieldError::new("type", "wrong_type", "expected a string")],
            })
        }
    };
    let Some((_, fields)) = CLIENT_FRAME_SCHEMAS
        .iter()
        .find(|(t, _)| *t == message_type)
    else {
        let mut e = FieldError::new(
            "type",
            "unknown_message_type",
            format!("unknown message type {:?}", truncate(&message_type, 50)),
        );
        e.known_types = Some(known_types());
        return Err(FrameError::Validation {
            message_type: Some(truncate(&message_type, 50)),
            errors: vec![e],
        });
    };
    let errors = check_fields(&obj, fields);
    if !errors.is_empty() {
        return Err(FrameError::Validation {
            message_type: Some(message_type),
            errors,
        });
    }
    serde_json::from_value(Value::Object(without_nulls(&obj))).map_err(|e| FrameError::Validation {
        message_type: Some(message_type),
        errors: vec![FieldError::new("", "invalid_value", e.to_string())],
    })
}

fn truncate(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

// ---------------------------------------------------------------------------
// Client → hub frames
// ---------------------------------------------------------------------------

/// A validated client → hub frame. Unknown fields are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Identify {
        agent_id: String,
        token: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        capabilities: Option<Vec<String>>,
    },
    Ping,
    Status {
        status: String,
    },
    ListAgents,
    Message {
        payload: Map<String, Value>,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        message_type: Option<String>,
        #[serde(default)]
        reply_to: Option<String>,
    },
    ChannelSubscribe {
        channel: String,
    },
    ChannelUnsubscribe {
        channel: String,
    },
    ChannelPublish {
        channel: String,
        payload: Map<String, Value>,
        #[serde(default)]
        message_type: Option<String>,
        #[serde(default)]
        reply_to: Option<String>,
    },
    ChannelHistory {
        channel: String,
        #[serde(default)]
        limit: Option<u64>,
        #[serde(default)]
        since: Option<u64>,
    },
    ListChannels,
    TaskAccepted {
        task_id: String,
        #[serde(default)]
        generation: Option<u64>,
    },
    TaskProgress {
        task_id: String,
        #[serde(default)]
        progress: Option<u64>,
        #[serde(default)]
        generation: Option<u64>,
        #[serde(default)]
        message: Option<String>,
    },
    TaskComplete {
        task_id: String,
        generation: u64,
        #[serde(default)]
        result: Option<Map<String, Value>>,
        #[serde(default)]
        tokens_used: Option<u64>,
        /// Task specs to create with the completion (ext), checked with
        /// [`parse_task_spec`] before anything changes.
        #[serde(default)]
        follow_ups: Option<Vec<Value>>,
    },
    TaskFailed {
        task_id: String,
        generation: u64,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    TaskRejected {
        task_id: String,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        generation: Option<u64>,
    },
    TaskBlocked {
        task_id: String,
        generation: u64,
        reason: String,
        #[serde(default)]
        needs: Option<String>,
    },
    TaskRecovering {
        task_id: String,
        #[serde(default)]
        generation: Option<u64>,
    },
    StateReport {
        task_id: String,
        #[serde(default)]
        generation: Option<u64>,
    },
    WakeResult {
        task_id: String,
        status: String,
        #[serde(default)]
        attempt: Option<u64>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    AgentRestarting {
        #[serde(default)]
        reason: Option<String>,
    },
}

impl ClientFrame {
    /// The frame's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Identify { .. } => "identify",
            ClientFrame::Ping => "ping",
            ClientFrame::Status { .. } => "status",
            ClientFrame::ListAgents => "list_agents",
            ClientFrame::Message { .. } => "message",
            ClientFrame::ChannelSubscribe { .. } => "channel_subscribe",
            ClientFrame::ChannelUnsubscribe { .. } => "channel_unsubscribe",
            ClientFrame::ChannelPublish { .. } => "channel_publish",
            ClientFrame::ChannelHistory { .. } => "channel_history",
            ClientFrame::ListChannels => "list_channels",
            ClientFrame::TaskAccepted { .. } => "task_accepted",
            ClientFrame::TaskProgress { .. } => "task_progress",
            ClientFrame::TaskComplete { .. } => "task_complete",
            ClientFrame::TaskFailed { .. } => "task_failed",
            ClientFrame::TaskRejected { .. } => "task_rejected",
            ClientFrame::TaskBlocked { .. } => "task_blocked",
            ClientFrame::TaskRecovering { .. } => "task_recovering",
            ClientFrame::StateReport { .. } => "state_report",
            ClientFrame::WakeResult { .. } => "wake_result",
            ClientFrame::AgentRestarting { .. } => "agent_restarting",
        }
    }

    /// Task lifecycle frames are never dropped by rate limiting (PROTOCOL.md 1.1).
    pub fn is_lifecycle(&self) -> bool {
        let t = self.type_name();
        t.starts_with("task_") || t == "state_report" || t == "wake_result"
    }

    /// The rate-limit tier of the frame (PROTOCOL.md section 5), as its name:
    /// `None` for lifecycle frames, which are never limited. `identify` is heavy
    /// (only a socket's first identify is free; the session decides that).
    pub fn rate_tier(&self) -> Option<&'static str> {
        if self.is_lifecycle() {
            return None;
        }
        Some(match self {
            ClientFrame::Ping
            | ClientFrame::ListAgents
            | ClientFrame::ListChannels
            | ClientFrame::Status { .. }
            | ClientFrame::ChannelHistory { .. } => "light",
            ClientFrame::Identify { .. } => "heavy",
            _ => "normal",
        })
    }
}

// ---------------------------------------------------------------------------
// Hub → client frames
// ---------------------------------------------------------------------------

/// Presence of one agent as pushed to agents and listed over HTTP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentInfo {
    pub agent_id: String,
    pub name: String,
    pub status: String,
    pub capabilities: Vec<String>,
    pub connected_at: Option<i64>,
    /// Present in HTTP listings: offline, idle, assigned, working or blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsm_state: Option<String>,
}

/// The `task_assign` push (PROTOCOL.md 1.5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskAssignment {
    pub task_id: String,
    pub description: String,
    pub metadata: Value,
    pub generation: u64,
    pub assigned_at: i64,
    pub priority: u8,
    /// 1 for the first assignment, counting every assignment of the task.
    pub attempt: u32,
    pub lease_ms: u64,
    pub needed_capabilities: Vec<String>,
}

/// `{"type":"error", ...}`: every refusal sent over the agent socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorFrame {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl ErrorFrame {
    pub fn plain(error: impl Into<String>) -> Self {
        ErrorFrame {
            error: error.into(),
            message_type: None,
            errors: None,
            task_id: None,
            channel: None,
        }
    }
}

/// A stored message: direct (`to` set), broadcast (neither set) or on a channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub id: String,
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    pub message_type: String,
    pub payload: Value,
    #[serde(default)]
    pub reply_to: Option<String>,
    pub timestamp: i64,
}

/// One entry of a sequence (channel history, mailbox).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeqEntry {
    pub seq: u64,
    pub message: ChatMessage,
    pub stored_at: i64,
}

/// A channel as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelInfo {
    pub name: String,
    pub description: String,
    pub subscriber_count: usize,
    pub created_at: i64,
}

/// A hub → agent frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Identified {
        agent_id: String,
    },
    Error(ErrorFrame),
    Pong {
        timestamp: i64,
    },
    StatusUpdated,
    /// Sent before the reply when fewer than a fifth of a bucket is left.
    RateLimitWarning {
        tier: String,
        remaining: u32,
        capacity: u32,
    },
    /// The frame was dropped: its tier's bucket is empty for `retry_after_ms`.
    RateLimited {
        retry_after_ms: u64,
        tier: String,
    },
    Agents {
        agents: Vec<AgentInfo>,
    },
    TaskAssign(TaskAssignment),
    TaskAck {
        task_id: String,
        status: String,
    },
    TaskContinue {
        task_id: String,
        generation: u64,
    },
    TaskReassign {
        task_id: String,
    },
    TaskCancelled {
        task_id: String,
        reason: String,
        timestamp: i64,
    },
    StateReportAck {
        task_id: String,
        action: String,
    },
    AgentJoined {
        agent: AgentInfo,
    },
    AgentLeft {
        agent_id: String,
    },
    StatusChanged {
        agent: AgentInfo,
    },
    Message {
        id: String,
        from: String,
        message_type: String,
        payload: Value,
        reply_to: Option<String>,
        timestamp: i64,
    },
    ChannelMessage {
        channel: String,
        id: String,
        from: String,
        message_type: String,
        payload: Value,
        reply_to: Option<String>,
        timestamp: i64,
    },
    MessageSent {
        id: String,
    },
    ChannelSubscribed {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    ChannelUnsubscribed {
        channel: String,
    },
    ChannelPublished {
        channel: String,
        seq: u64,
        id: String,
    },
    ChannelHistory {
        channel: String,
        messages: Vec<SeqEntry>,
    },
    Channels {
        channels: Vec<ChannelInfo>,
    },
    ChannelAgentJoined {
        channel: String,
        agent_id: String,
    },
}

impl ServerFrame {
    /// The push for a stored message: `message` for direct and broadcast ones,
    /// `channel_message` for channel ones.
    pub fn for_message(m: &ChatMessage) -> ServerFrame {
        match &m.channel {
            Some(channel) => ServerFrame::ChannelMessage {
                channel: channel.clone(),
                id: m.id.clone(),
                from: m.from.clone(),
                message_type: m.message_type.clone(),
                payload: m.payload.clone(),
                reply_to: m.reply_to.clone(),
                timestamp: m.timestamp,
            },
            None => ServerFrame::Message {
                id: m.id.clone(),
                from: m.from.clone(),
                message_type: m.message_type.clone(),
                payload: m.payload.clone(),
                reply_to: m.reply_to.clone(),
                timestamp: m.timestamp,
            },
        }
    }
}

impl From<FrameError> for ServerFrame {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::InvalidJson => ServerFrame::Error(ErrorFrame::plain("invalid_json")),
            FrameError::Validation {
                message_type,
                errors,
            } => ServerFrame::Error(ErrorFrame {
                error: "validation_failed".into(),
                message_type,
                errors: Some(errors),
                task_id: None,
                channel: None,
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Tasks over HTTP
// ---------------------------------------------------------------------------

/// Priority lanes: urgent=0, high=1, normal=2, low=3.
pub const PRIORITY_NORMAL: u8 = 2;

/// Parses a priority: `urgent`/`critical`, `high`, `normal`, `low`, or 0–3.
pub fn parse_priority(v: &Value) -> Result<u8, FieldError> {
    let bad = || {
        FieldError::new(
            "priority",
            "invalid_value",
            "expected urgent, critical, high, normal, low or an integer 0-3",
        )
    };
    match v {
        Value::String(name) => match name.as_str() {
            "urgent" | "critical" => Ok(0),
            "high" => Ok(1),
            "normal" => Ok(2),
            "low" => Ok(3),
            _ => Err(bad()),
        },
        Value::Number(n) => match n.as_u64() {
            Some(p) if p <= 3 => Ok(p as u8),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Schema of one task submission (`POST /api/tasks`).
pub const TASK_SPEC_FIELDS: &[Field] = &[
    req(
        "description",
        Kind::Str {
            max: MAX_DESCRIPTION,
            non_empty: true,
        },
    ),
    opt("priority", Kind::Any),
    opt("metadata", Kind::Object),
    opt("max_retries", Kind::UInt),
    opt("complete_by", Kind::UInt),
    opt("needed_capabilities", Kind::StrList),
    opt("lease_ms", Kind::UInt),
    opt("max_reclaims", Kind::UInt),
    opt(
        "dedupe_key",
        Kind::Str {
            max: MAX_DEDUPE_KEY,
            non_empty: true,
        },
    ),
    opt("depends_on", Kind::StrList),
    opt("ref", id(MAX_REF)),
    opt("run_after", Kind::UInt),
    opt("correlation_id", id(128)),
    opt("blocked_policy", id(16)),
    opt("blocked_requeue_ms", Kind::UInt),
];

/// Longest `dedupe_key` (ext).
pub const MAX_DEDUPE_KEY: usize = 256;
/// Longest batch-local `ref` name (ext).
pub const MAX_REF: usize = 64;
/// Most follow-up tasks one `task_complete` may carry (ext).
pub const MAX_FOLLOW_UPS: usize = 50;
/// Longest delay of the `requeue` blocked-work policy (ms): a week.
pub const MAX_BLOCKED_REQUEUE_MS: u64 = 7 * 24 * 3_600_000;

/// What happens to a task an agent reports blocked (ext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedPolicy {
    /// Back to the queue after `blocked_requeue_ms`.
    Requeue,
    /// Back to the queue at once for agents with the capability the agent said it
    /// `needs` (`agent:<id>` names one agent); without `needs`, like `requeue`.
    Route,
    /// Stays blocked until an operator retries or cancels it.
    Wait,
}

impl BlockedPolicy {
    pub fn parse(s: &str) -> Option<BlockedPolicy> {
        match s {
            "requeue" => Some(BlockedPolicy::Requeue),
            "route" => Some(BlockedPolicy::Route),
            "wait" => Some(BlockedPolicy::Wait),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlockedPolicy::Requeue => "requeue",
            BlockedPolicy::Route => "route",
            BlockedPolicy::Wait => "wait",
        }
    }
}

/// Most retries or reclaims a task may allow.
pub const MAX_RETRY_LIMIT: u64 = 100;
/// Shortest and longest per-task lease (ms).
pub const LEASE_RANGE_MS: (u64, u64) = (1_000, 7 * 24 * 3_600_000);

/// A validated task submission (`POST /api/tasks`, one element).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    pub description: String,
    pub priority: u8,
    pub metadata: Map<String, Value>,
    pub max_retries: Option<u32>,
    pub complete_by: Option<i64>,
    /// Sorted and without repeats: the task's capability signature.
    pub needed_capabilities: Vec<String>,
    pub lease_ms: Option<u64>,
    pub max_reclaims: Option<u32>,
    /// While a task with this key is unfinished, a submit with the same key gets
    /// that task instead of a new one (ext).
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// Tasks (ids, or `ref`s of other entries of the same batch) that must complete
    /// before this one is scheduled (ext).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// This entry's name inside its batch, for other entries' `depends_on` (ext).
    #[serde(default, rename = "ref")]
    pub batch_ref: Option<String>,
    /// Not scheduled before this time (ms since the epoch) (ext).
    #[serde(default)]
    pub run_after: Option<i64>,
    /// Groups a task with its follow-ups; defaults to the task's own id (ext).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// What to do when an agent reports the task blocked (default: the hub's).
    #[serde(default)]
    pub blocked_policy: Option<BlockedPolicy>,
    /// Delay of the `requeue` policy (default: the hub's).
    #[serde(default)]
    pub blocked_requeue_ms: Option<u64>,
}

/// Validates one task submission. Field names in errors are prefixed with `prefix`
/// (for batch submits, `"[3]."`).
pub fn parse_task_spec(v: &Value, prefix: &str) -> Result<TaskSpec, Vec<FieldError>> {
    let Value::Object(obj) = v else {
        return Err(vec![FieldError::new(
            prefix.trim_end_matches('.'),
            "wrong_type",
            "a task must be a JSON object",
        )]);
    };
    let mut errors = check_fields(obj, TASK_SPEC_FIELDS);
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let priority = match present("priority") {
        None => PRIORITY_NORMAL,
        Some(p) => parse_priority(p).unwrap_or_else(|e| {
            errors.push(e);
            PRIORITY_NORMAL
        }),
    };
    let uint = |k: &str| present(k).and_then(Value::as_u64);
    let mut limited = |k: &str, lo: u64, hi: u64| -> Option<u64> {
        let n = uint(k)?;
        if n < lo || n > hi {
            errors.push(FieldError::new(
                k,
                "invalid_value",
                format!("must be between {lo} and {hi}"),
            ));
            return None;
        }
        Some(n)
    };
    let max_retries = limited("max_retries", 0, MAX_RETRY_LIMIT).map(|n| n as u32);
    let max_reclaims = limited("max_reclaims", 0, MAX_RETRY_LIMIT).map(|n| n as u32);
    let lease_ms = limited("lease_ms", LEASE_RANGE_MS.0, LEASE_RANGE_MS.1);
    let complete_by = limited("complete_by", 0, i64::MAX as u64).map(|n| n as i64);
    let run_after = limited("run_after", 0, i64::MAX as u64).map(|n| n as i64);
    let blocked_requeue_ms = limited("blocked_requeue_ms", 0, MAX_BLOCKED_REQUEUE_MS);
    let blocked_policy = match present("blocked_policy").and_then(Value::as_str) {
        None => None,
        Some(p) => BlockedPolicy::parse(p).or_else(|| {
            errors.push(FieldError::new(
                "blocked_policy",
                "invalid_value",
                "expected requeue, route or wait",
            ));
            None
        }),
    };
    let depends_on: Vec<String> = present("depends_on")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    if depends_on.iter().any(|d| !seen.insert(d.as_str())) {
        errors.push(FieldError::new(
            "depends_on",
            "invalid_value",
            "lists a task twice",
        ));
    }
    let str_of = |k: &str| present(k).and_then(Value::as_str).map(str::to_string);
    if !errors.is_empty() {
        for e in &mut errors {
            e.field = format!("{prefix}{}", e.field);
        }
        return Err(errors);
    }
    let mut caps: Vec<String> = present("needed_capabilities")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    caps.sort();
    caps.dedup();
    Ok(TaskSpec {
        description: present("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        priority,
        metadata: present("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        max_retries,
        complete_by,
        needed_capabilities: caps,
        lease_ms,
        max_reclaims,
        dedupe_key: str_of("dedupe_key"),
        depends_on,
        batch_ref: str_of("ref"),
        run_after,
        correlation_id: str_of("correlation_id"),
        blocked_policy,
        blocked_requeue_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_types_no_coercion() {
        let e = parse_client_frame(r#"{"type":"task_complete","task_id":"t","generation":"3"}"#)
            .unwrap_err();
        let FrameError::Validation { errors, .. } = e else {
            panic!("expected validation error")
        };
        assert_eq!(errors[0].field, "generation");
        assert_eq!(errors[0].error, "wrong_type");
    }

    #[test]
    fn null_counts_as_missing_for_required() {
        let e =
            parse_client_frame(r#"{"type":"identify","agent_id":null,"token":"x"}"#).unwrap_err();
        let FrameError::Validation { errors, .. } = e else {
            panic!("expected validation error")
        };
        assert_eq!(errors[0].error, "required");
    }

    #[test]
    fn too_long_echoes_fifty_characters() {
        let long = "a".repeat(300);
        let text = format!(r#"{{"type":"status","status":"{long}"}}"#);
        let FrameError::Validation { errors, .. } = parse_client_frame(&text).unwrap_err() else {
            panic!("expected validation error")
        };
        assert_eq!(
            errors[0].value.as_deref(),
            Some(&*format!("{}...", "a".repeat(50)))
        );
    }

    #[test]
    fn unknown_type_lists_known_types() {
        let FrameError::Validation { errors, .. } =
            parse_client_frame(r#"{"type":"launch_missiles"}"#).unwrap_err()
        else {
            panic!("expected validation error")
        };
        assert_eq!(errors[0].error, "unknown_message_type");
        assert!(errors[0]
            .known_types
            .as_ref()
            .is_some_and(|k| k.iter().any(|t| t == "identify")));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = parse_client_frame(r#"{"type":"ping","protocol_version":"1.1","x":[1]}"#);
        assert_eq!(f, Ok(ClientFrame::Ping));
    }

    #[test]
    fn priorities() {
        for (v, p) in [("\"critical\"", 0), ("\"low\"", 3), ("1", 1)] {
            let v: Value = serde_json::from_str(v).unwrap();
            assert_eq!(parse_priority(&v).unwrap(), p);
        }
        for v in ["\"asap\"", "4", "-1", "1.5", "null"] {
            let v: Value = serde_json::from_str(v).unwrap();
            assert!(parse_priority(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn task_spec_sorts_capabilities() {
        let v = serde_json::json!({"description":"d","needed_capabilities":["b","a","b"]});
        let spec = parse_task_spec(&v, "").unwrap();
        assert_eq!(spec.needed_capabilities, vec!["a", "b"]);
        assert_eq!(spec.priority, PRIORITY_NORMAL);
    }

    #[test]
    fn server_frames_serialize_with_type_tag() {
        let f = ServerFrame::TaskAck {
            task_id: "t".into(),
            status: "accepted".into(),
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"type":"task_ack","task_id":"t","status":"accepted"})
        );
        let e = ServerFrame::Error(ErrorFrame::plain("not_identified"));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type":"error","error":"not_identified"})
        );
        let s = serde_json::to_value(ServerFrame::StatusUpdated).unwrap();
        assert_eq!(s, serde_json::json!({"type":"status_updated"}));
    }
}
