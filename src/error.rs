//! Error types. One enum per failure domain; every variant is one documented failure
//! with structured fields. `ApiError` is the only type HTTP handlers return, so the
//! mapping to status codes and JSON bodies lives in exactly one place.

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::protocol::FieldError;

/// A configuration file or value the hub cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A value is of the right type but not allowed.
    #[error("invalid config value for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A failure of the embedded store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or internal error.
    #[error("storage error: {0}")]
    Sled(String),
    /// A stored record could not be decoded (unknown format byte or bad JSON).
    #[error("corrupt record in tree {tree} at key {key}: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    /// The data directory is used by another running hub.
    #[error("data directory {0} is in use by another process (is the hub running?)")]
    Locked(PathBuf),
    /// The store was closed: shut down, or a compaction swap could not reopen it.
    #[error("the store is closed")]
    Closed,
    /// The data directory cannot be used for a reason outside the store itself
    /// (permissions, a full or read-only disk, no file descriptors left).
    #[error("cannot use data directory {path}: {reason}")]
    Environment { path: PathBuf, reason: String },
}

/// A failure of a backup, restore, compaction or start-up recovery. Each names the
/// file or directory involved; none leaves a half-written file in place of a good one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackupError {
    /// Reading, writing, moving or listing a file or directory failed.
    #[error("cannot {action} {path}: {reason}")]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The file does not start with the backup magic bytes.
    #[error("{path} is not an AgentCom backup file")]
    NotABackup { path: PathBuf },
    /// The file was written by a backup format this hub does not read.
    #[error("{path} is backup format version {version}; this hub reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        version: u16,
        supported: u16,
    },
    /// The file ends early (an interrupted copy or write).
    #[error("{path} is truncated: {len} bytes, expected at least {expected}")]
    Truncated {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    /// The SHA-256 at the end of the file does not match its contents (a changed
    /// byte, or a file cut short: its last bytes are then not the checksum).
    #[error(
        "{path} is damaged or truncated: checksum mismatch (stored {stored}, computed {computed})"
    )]
    ChecksumMismatch {
        path: PathBuf,
        stored: String,
        computed: String,
    },
    /// The checksum matched but the framing inside does not decode.
    #[error("{path} is malformed at byte {offset}: {reason}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The data directory is held by a running hub (sled's lock).
    #[error("data directory {0} is in use by a running hub: stop the hub first")]
    HubRunning(PathBuf),
    /// The store failed while being read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's records do not pass the start-up check.
    #[error("store check failed: {0}")]
    CheckFailed(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// Every failure an HTTP handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no bearer token, or one the hub does not know.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: an agent token on an admin route.
    #[error("admin only")]
    AdminOnly,
    /// 403: an agent acting on another agent's resource.
    #[error("forbidden")]
    Forbidden,
    /// 403: an observer's token on a route that changes something.
    #[error("read only")]
    ReadOnly,
    /// 404: no such route or resource.
    #[error("not found")]
    NotFound,
    /// 404: no task with this id.
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// 404: no agent registered with this id.
    #[error("agent {0} not found")]
    AgentNotFound(String),
    /// 404: no standing order with this name.
    #[error("standing order {0} not found")]
    StandingOrderNotFound(String),
    /// 400: the body is not JSON.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// 422: the body or a query parameter breaks its schema.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 404: no channel with this name.
    #[error("channel {0} not found")]
    ChannelNotFound(String),
    /// 404: a direct message to an agent that is not registered.
    #[error("recipient {0} not found")]
    RecipientNotFound(String),
    /// 404: no message with this id (or it outlived retention).
    #[error("message {0} not found")]
    MessageNotFound(String),
    /// 409: the resource exists already.
    #[error("{what} already exists")]
    AlreadyExists { what: &'static str, id: String },
    /// 403: the invite is unknown, expired, used or for another agent, or none was
    /// given where registration needs one.
    #[error("invalid invite")]
    InvalidInvite,
    /// 409: the task is not in a state that allows the operation.
    #[error("task {task_id} is {status}")]
    InvalidState { task_id: String, status: String },
    /// 429: the caller's bucket for this tier is empty for `retry_after_ms`.
    #[error("rate limited ({tier}) for {retry_after_ms} ms")]
    RateLimited {
        retry_after_ms: u64,
        tier: &'static str,
    },
    /// 503: the store or an actor could not serve the request; nothing was changed
    /// unless the store says otherwise.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 409: the operation needs a stopped hub (a restore replaces the store).
    #[error("the hub is running")]
    HubRunning { hint: &'static str },
    /// 500: a backup or compaction failed; the store itself is unchanged.
    #[error("storage operation failed: {0}")]
    Storage(BackupError),
    /// 403: a state-changing request authenticated only by the dashboard's cookie
    /// lacks the dashboard's header (a cross-site request cannot add it).
    #[error("dashboard header missing")]
    DashboardHeaderMissing,
    /// 403: a dashboard socket opened from a page of another origin.
    #[error("origin not allowed")]
    OriginRefused,
    /// 404: no live reservation by that id (never made, released or expired).
    #[error("reservation {0} not found")]
    ReservationNotFound(String),
    /// 403: the reservation is another agent's.
    #[error("reservation {0} is held by another agent")]
    NotHolder(String),
    /// 409: a reservation overlaps a live claim; the body names the holder.
    #[error("scope conflict")]
    ScopeConflict(serde_json::Value),
    /// 404: the credential group is not paused.
    #[error("credential group {0} is not paused")]
    NotPaused(String),
    /// 404: no such shared context key (or version).
    #[error("context {0} not found")]
    ContextNotFound(String),
    /// 409: a compare-and-set write of a shared context key read an older
    /// version.
    #[error("context {key} is at version {current}")]
    VersionConflict { key: String, current: u64 },
    /// 409: a reservation refused by the queue's rules (`task_not_held`,
    /// `too_many_reservations`).
    #[error("reservation refused: {0}")]
    ReservationRefused(&'static str),
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        ApiError::Storage(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Unavailable(format!("hub actor unavailable: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminOnly
            | ApiError::Forbidden
            | ApiError::ReadOnly
            | ApiError::InvalidInvite
            | ApiError::DashboardHeaderMissing
            | ApiError::OriginRefused
            | ApiError::NotHolder(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound
            | ApiError::TaskNotFound(_)
            | ApiError::AgentNotFound(_)
            | ApiError::StandingOrderNotFound(_)
            | ApiError::ChannelNotFound(_)
            | ApiError::RecipientNotFound(_)
            | ApiError::MessageNotFound(_)
            | ApiError::ReservationNotFound(_)
            | ApiError::NotPaused(_)
            | ApiError::ContextNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::AlreadyExists { .. }
            | ApiError::InvalidState { .. }
            | ApiError::HubRunning { .. }
            | ApiError::ScopeConflict(_)
            | ApiError::VersionConflict { .. }
            | ApiError::ReservationRefused(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ApiError::Unauthorized => json!({
                "error": "unauthorized",
                "hint": "provide Authorization: Bearer <token>",
            }),
            ApiError::AdminOnly => json!({"error": "admin_only"}),
            ApiError::Forbidden => json!({"error": "forbidden"}),
            ApiError::ReadOnly => json!({"error": "read_only"}),
            ApiError::InvalidInvite => json!({
                "error": "invalid_invite",
                "hint": "ask an operator for a fresh invite: agentcom-hub agent invite NAME",
            }),
            ApiError::NotFound => json!({"error": "not_found"}),
            ApiError::TaskNotFound(id) => json!({"error": "task_not_found", "task_id": id}),
            ApiError::AgentNotFound(id) => json!({"error": "agent_not_found", "agent_id": id}),
            ApiError::StandingOrderNotFound(name) => {
                json!({"error": "standing_order_not_found", "name": name})
            }
            ApiError::InvalidJson(detail) => json!({"error": "invalid_json", "detail": detail}),
            ApiError::Validation(errors) => {
                json!({"error": "validation_failed", "errors": errors})
            }
            ApiError::ChannelNotFound(c) => json!({"error": "channel_not_found", "channel": c}),
            ApiError::RecipientNotFound(a) => {
                json!({"error": "recipient_not_found", "agent_id": a})
            }
            ApiError::MessageNotFound(id) => {
                json!({"error": "message_not_found", "message_id": id})
            }
            ApiError::AlreadyExists { what, id } => {
                let mut body = json!({"error": "already_exists", "what": what, "id": id});
                body[format!("{what}_id")] = json!(id);
                body
            }
            ApiError::InvalidState { task_id, status } => {
                json!({"error": "invalid_state", "task_id": task_id, "status": status})
            }
            ApiError::Unavailable(detail) => json!({"error": "unavailable", "detail": detail}),
            ApiError::HubRunning { hint } => json!({"error": "hub_running", "hint": hint}),
            ApiError::Storage(e) => json!({"error": "storage_failed", "detail": e.to_string()}),
            ApiError::DashboardHeaderMissing => json!({
                "error": "dashboard_header_missing",
                "hint": "requests authenticated by the dashboard session must send X-AgentCom-Dashboard: 1",
            }),
            ApiError::OriginRefused => json!({"error": "origin_refused"}),
            ApiError::ReservationNotFound(id) => {
                json!({"error": "reservation_not_found", "reservation_id": id})
            }
            ApiError::NotHolder(id) => json!({"error": "not_holder", "reservation_id": id}),
            ApiError::NotPaused(g) => json!({"error": "not_paused", "credential_group": g}),
            ApiError::ScopeConflict(body) => body.clone(),
            ApiError::ContextNotFound(key) => json!({"error": "context_not_found", "key": key}),
            ApiError::VersionConflict { key, current } => {
                json!({"error": "version_conflict", "key": key, "current_version": current})
            }
            ApiError::ReservationRefused(code) => json!({"error": code}),
            ApiError::RateLimited {
                retry_after_ms,
                tier,
            } => {
                // `retry-after` is in whole seconds: round up, never early.
                let secs = retry_after_ms.div_ceil(1000).max(1);
                return HttpResponse::build(self.status_code())
                    .insert_header(("retry-after", secs.to_string()))
                    .json(json!({
                        "error": "rate_limited",
                        "retry_after_ms": retry_after_ms,
                        "tier": tier,
                    }));
            }
        };
        HttpResponse::build(self.status_code()).json(body)
    }
}
