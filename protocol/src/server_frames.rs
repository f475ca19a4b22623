//! Hub → agent frames (PROTOCOL.md 1.5 and the ext sections): `ServerFrame`
//! and what it carries (`AgentInfo`, `TaskAssignment`, `ErrorFrame`,
//! `ChatMessage`, ...).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::frames::FrameError;
use crate::schema::FieldError;

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
    /// No agent activity for this long means the agent stalled (ext; the
    /// sidecar's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<u64>,
    /// Longest the agent may work on one attempt (ext; the sidecar's default
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_ms: Option<u64>,
    /// The task's write scope (ext, PROTOCOL.md 6.2): the repository and the
    /// globs it may write and read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_paths: Vec<String>,
    /// The completion waits for a person's approval (ext, PROTOCOL.md 6.27);
    /// with `merge_on_approval` the holder's sidecar merges the pull request
    /// once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approvals::ApprovalStage>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge_on_approval: bool,
    /// What the task may spend (ext, PROTOCOL.md 6.28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// The results of the dependencies the task names in `inputs_from`, by
    /// task id (ext, PROTOCOL.md 6.32): each `{task_id, status, result}`, or
    /// `result_ref` and `result_bytes` instead of a result too large to carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Map<String, Value>>,
    /// The shared context keys the task names (ext, PROTOCOL.md 6.33), as
    /// they stood at the assignment: `{version, kind, value}`, `{missing:
    /// true}`, or `context_ref` instead of a value past the size carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, Value>>,
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
        /// (ext) The slots granted (PROTOCOL.md 6.24).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reserve_slot_for_standing: Option<bool>,
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
        /// (ext) `unknown_task`: the hub has no such task at all (its store
        /// was restored from an older backup); absent: another holds it, or
        /// it is no longer assigned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    TaskCancelled {
        task_id: String,
        reason: String,
        timestamp: i64,
    },
    /// The task went over a budget (ext, PROTOCOL.md 6.28): the holder stops
    /// its agent at a safe point and keeps the task; `task_answer` (kind
    /// `budget`, answer `resume`) lets it go on.
    TaskPaused {
        task_id: String,
        generation: u64,
        question_id: u32,
        reason: String,
        spent: crate::budgets::Spend,
        budget: crate::budgets::Limit,
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
        /// The message's sequence in the recipient's mailbox, where it stays
        /// until acknowledged (ext).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mailbox_seq: Option<u64>,
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
    /// The answer to the holder's question (ext, PROTOCOL.md 6.26): pushed when
    /// someone answers (or the default applies), and again after each
    /// `task_recovering` of the task at that generation.
    TaskAnswer {
        task_id: String,
        generation: u64,
        question_id: u32,
        answer: String,
        answered_by: String,
        /// `approval` when the answer decides an approval (ext, 6.27).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// The reviewer's reason (a rejection, a failed merge).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Approved: merge the pull request of the result, then report
        /// `task_merged`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        merge: bool,
    },
    /// A `usage_limited` without a task was noted: the group is paused until
    /// then (ext, PROTOCOL.md 6.23).
    UsagePaused {
        credential_group: String,
        until: i64,
    },
    /// A `scope_reserve` or `scope_renew` was granted (ext, PROTOCOL.md 6.21).
    ScopeGranted {
        reservation: crate::scopes::Reservation,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// A `scope_reserve` overlaps what `holder` holds; nothing was reserved.
    ScopeConflict {
        repo: String,
        paths: Vec<String>,
        holder: crate::scopes::ScopeHolderInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    ScopeReleased {
        reservation_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// An `event_publish` is durable (ext, PROTOCOL.md 6.30); `existing`: its
    /// `dedupe_key` named an event published before, which is answered.
    EventPublished {
        event: crate::topics::TopicEvent,
        existing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

impl ServerFrame {
    /// The push of a direct or broadcast message kept in the recipient's
    /// mailbox at `seq`.
    pub fn for_mailbox(m: &ChatMessage, seq: u64) -> ServerFrame {
        let mut frame = ServerFrame::for_message(m);
        if let ServerFrame::Message { mailbox_seq, .. } = &mut frame {
            *mailbox_seq = Some(seq);
        }
        frame
    }

    /// The message a `message` / `channel_message` push carries, with its
    /// mailbox sequence (the inverse of [`ServerFrame::for_mailbox`]); `None`
    /// for other frames. The recipient (`to`) is not in the push.
    pub fn into_message(self) -> Option<(ChatMessage, Option<u64>)> {
        let (channel, id, from, message_type, payload, reply_to, timestamp, seq) = match self {
            ServerFrame::Message {
                id,
                from,
                message_type,
                payload,
                reply_to,
                timestamp,
                mailbox_seq,
            } => (
                None,
                id,
                from,
                message_type,
                payload,
                reply_to,
                timestamp,
                mailbox_seq,
            ),
            ServerFrame::ChannelMessage {
                channel,
                id,
                from,
                message_type,
                payload,
                reply_to,
                timestamp,
            } => (
                Some(channel),
                id,
                from,
                message_type,
                payload,
                reply_to,
                timestamp,
                None,
            ),
            _ => return None,
        };
        let message = ChatMessage {
            id,
            from,
            to: None,
            channel,
            message_type,
            payload,
            reply_to,
            timestamp,
        };
        Some((message, seq))
    }

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
                mailbox_seq: None,
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
