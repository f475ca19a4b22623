//! Agent WebSocket frames (PROTOCOL.md section 1): the schema of every client →
//! hub frame, `parse_client_frame`, and the typed `ClientFrame` (the hub's
//! frames are `server_frames`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{
    check_fields, id, object_schema, opt, req, text, without_nulls, Field, FieldError, Kind,
};
use crate::task_spec::MAX_FOLLOW_UPS;

/// Longest error / reason text accepted in lifecycle frames (characters).
pub const MAX_REASON: usize = 2_000;

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

const TASK_ID: Kind = id(128);
const AGENT_ID: Kind = id(128);
const CHANNEL: Kind = id(64);
const REASON: Kind = text(MAX_REASON);
const REQUEST_ID: Kind = id(128);

/// Schema of every client → hub WebSocket frame, by `type` (PROTOCOL.md 1.4).
pub const CLIENT_FRAME_SCHEMAS: &[(&str, &[Field])] = &[
    (
        "identify",
        &[
            req("agent_id", AGENT_ID),
            req("token", id(256)),
            opt("name", text(256)),
            opt("status", text(256)),
            opt("capabilities", Kind::StrList),
            opt("slots", Kind::UInt),
            opt("reserve_slot_for_standing", Kind::Bool),
        ],
    ),
    ("ping", &[]),
    ("status", &[req("status", text(256))]),
    ("list_agents", &[]),
    (
        "message",
        &[
            req("payload", Kind::Object),
            opt("to", AGENT_ID),
            opt("message_type", text(64)),
            opt("reply_to", text(128)),
        ],
    ),
    ("channel_subscribe", &[req("channel", CHANNEL)]),
    ("channel_unsubscribe", &[req("channel", CHANNEL)]),
    (
        "channel_publish",
        &[
            req("channel", CHANNEL),
            req("payload", Kind::Object),
            opt("message_type", text(64)),
            opt("reply_to", text(128)),
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
            opt("tokens_used", Kind::UInt),
            opt("cost_usd", Kind::Number),
        ],
    ),
    (
        "task_complete",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            opt("result", Kind::Object),
            opt("tokens_used", Kind::UInt),
            opt("cost_usd", Kind::Number),
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
            opt("retry_after_s", Kind::UInt),
            opt("terminal", Kind::Bool),
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
            opt("needs", text(256)),
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
            req("status", text(64)),
            opt("attempt", Kind::UInt),
            opt("error", REASON),
            opt("reason", REASON),
        ],
    ),
    ("agent_restarting", &[opt("reason", REASON)]),
    (
        "usage_limited",
        &[
            req("resets_at", Kind::UInt),
            opt("task_id", TASK_ID),
            opt("generation", Kind::UInt),
            opt("reason", REASON),
        ],
    ),
    (
        "task_input_required",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            req("question", text(crate::questions::MAX_QUESTION)),
            opt("options", Kind::StrList),
            opt("default", text(crate::questions::MAX_ANSWER)),
            opt("timeout_ms", Kind::UInt),
        ],
    ),
    (
        "task_merged",
        &[
            req("task_id", TASK_ID),
            req("generation", Kind::UInt),
            req("merged", Kind::Bool),
            opt("method", id(16)),
            opt("error", text(crate::approvals::MAX_REVIEW_NOTE)),
        ],
    ),
    (
        "event_publish",
        &[
            req("topic", id(crate::topics::MAX_TOPIC)),
            req("payload", Kind::Any),
            opt("dedupe_key", text(crate::topics::MAX_EVENT_DEDUPE_KEY)),
            opt("request_id", REQUEST_ID),
        ],
    ),
    (
        "scope_reserve",
        &[
            req("repo", id(crate::task_spec::MAX_REPO)),
            req("paths", Kind::StrList),
            opt("mode", id(16)),
            opt("ttl_ms", Kind::UInt),
            opt("task_id", TASK_ID),
            opt("request_id", REQUEST_ID),
        ],
    ),
    (
        "scope_renew",
        &[
            req("reservation_id", id(64)),
            opt("ttl_ms", Kind::UInt),
            opt("request_id", REQUEST_ID),
        ],
    ),
    (
        "scope_release",
        &[req("reservation_id", id(64)), opt("request_id", REQUEST_ID)],
    ),
];

/// Every client frame type the hub understands.
pub fn known_types() -> Vec<String> {
    CLIENT_FRAME_SCHEMAS
        .iter()
        .map(|(t, _)| t.to_string())
        .collect()
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
    let mut errors = check_fields(&obj, fields);
    if errors.is_empty() && message_type == "identify" {
        errors = crate::slots::check_identify(&obj);
    }
    if errors.is_empty() && message_type == "task_input_required" {
        errors = crate::questions::check_question(&obj);
    }
    if errors.is_empty() && message_type == "task_merged" {
        errors = crate::approvals::check_merged(&obj);
    }
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
        /// (ext) How many tasks it runs at once (PROTOCOL.md 6.24).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
        /// (ext) One slot kept for standing-order runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reserve_slot_for_standing: Option<bool>,
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
        /// What the current attempt has spent so far (ext, PROTOCOL.md 6.28).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens_used: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    TaskComplete {
        task_id: String,
        generation: u64,
        #[serde(default)]
        result: Option<Map<String, Value>>,
        #[serde(default)]
        tokens_used: Option<u64>,
        /// What the attempt spent in all (ext, PROTOCOL.md 6.28).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
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
        /// Retry no sooner than this many seconds from now (ext).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u64>,
        /// Dead-letter now: retrying cannot help (ext).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terminal: Option<bool>,
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
    /// The agent's provider refuses work until `resets_at` (ms) (ext,
    /// PROTOCOL.md 6.23): its credential group is paused; the task it names
    /// goes back to the queue unspent.
    UsageLimited {
        resets_at: u64,
        #[serde(default)]
        task_id: Option<String>,
        #[serde(default)]
        generation: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The holder asks a question and waits for the answer (ext, PROTOCOL.md
    /// 6.26); `check_question` checks the options, default and timeout.
    TaskInputRequired {
        task_id: String,
        generation: u64,
        question: String,
        #[serde(default)]
        options: Option<Vec<String>>,
        #[serde(default)]
        default: Option<String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// The holder's sidecar merged the approved pull request, or could not
    /// (ext, PROTOCOL.md 6.27).
    TaskMerged {
        task_id: String,
        generation: u64,
        merged: bool,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        error: Option<String>,
    },
    /// Publish a topic event (ext, PROTOCOL.md 6.30); checked again by
    /// `parse_publish` (the topic's characters, the payload's size).
    EventPublish {
        topic: String,
        payload: Value,
        #[serde(default)]
        dedupe_key: Option<String>,
        #[serde(default)]
        request_id: Option<String>,
    },
    /// Reserve repository paths (ext, PROTOCOL.md 6.21); the whole frame is
    /// checked again by `parse_reserve` (mode, ttl).
    ScopeReserve {
        repo: String,
        paths: Vec<String>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        ttl_ms: Option<u64>,
        #[serde(default)]
        task_id: Option<String>,
        #[serde(default)]
        request_id: Option<String>,
    },
    ScopeRenew {
        reservation_id: String,
        #[serde(default)]
        ttl_ms: Option<u64>,
        #[serde(default)]
        request_id: Option<String>,
    },
    ScopeRelease {
        reservation_id: String,
        #[serde(default)]
        request_id: Option<String>,
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
            ClientFrame::UsageLimited { .. } => "usage_limited",
            ClientFrame::TaskInputRequired { .. } => "task_input_required",
            ClientFrame::TaskMerged { .. } => "task_merged",
            ClientFrame::EventPublish { .. } => "event_publish",
            ClientFrame::ScopeReserve { .. } => "scope_reserve",
            ClientFrame::ScopeRenew { .. } => "scope_renew",
            ClientFrame::ScopeRelease { .. } => "scope_release",
        }
    }

    /// Task lifecycle frames are never dropped by rate limiting (PROTOCOL.md 1.1).
    pub fn is_lifecycle(&self) -> bool {
        let t = self.type_name();
        t.starts_with("task_") || t == "state_report" || t == "wake_result" || t == "usage_limited"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_frames::{ErrorFrame, ServerFrame};

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
