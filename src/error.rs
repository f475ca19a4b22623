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
    /// 404: no such route or resource.
    #[error("not found")]
    NotFound,
    /// 404: no task with this id.
    #[error("task {0} not found")]
    TaskNotFound(String),
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
            ApiError::AdminOnly | ApiError::Forbidden | ApiError::InvalidInvite => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound
            | ApiError::TaskNotFound(_)
            | ApiError::ChannelNotFound(_)
            | ApiError::RecipientNotFound(_)
            | ApiError::MessageNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::AlreadyExists { .. } | ApiError::InvalidState { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::InvalidInvite => json!({
                "error": "invalid_invite",
                "hint": "ask an operator for a fresh invite: agentcom-hub agent invite NAME",
            }),
            ApiError::NotFound => json!({"error": "not_found"}),
            ApiError::TaskNotFound(id) => json!({"error": "task_not_found", "task_id": id}),
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
