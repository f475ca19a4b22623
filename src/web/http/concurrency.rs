//! Concurrency limits (ext, PROTOCOL.md 6.22): `PUT /api/admin/concurrency/:key
//! {"limit":N}`, `DELETE /api/admin/concurrency/:key`, `GET
//! /api/admin/concurrency`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::{object_body, Caller, Steer};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{req, Field, FieldError, Kind, MAX_CONCURRENCY_KEY};
use crate::queue::{ConcurrencyLimits, SetConcurrencyLimit};

/// Highest limit accepted.
const MAX_LIMIT: u64 = 10_000;

/// Body of `PUT /api/admin/concurrency/:key`.
pub(super) const LIMIT_FIELDS: &[Field] = &[req("limit", Kind::UInt)];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/concurrency", web::get().to(list))
        .route("/api/admin/concurrency/{key}", web::put().to(set))
        .route("/api/admin/concurrency/{key}", web::delete().to(remove));
}

fn checked_key(key: String) -> Result<String, ApiError> {
    if key.is_empty() || key.chars().count() > MAX_CONCURRENCY_KEY {
        return Err(ApiError::Validation(vec![FieldError::new(
            "key",
            "invalid_value",
            format!("1 to {MAX_CONCURRENCY_KEY} characters"),
        )]));
    }
    Ok(key)
}

async fn change(
    caller: Caller,
    key: String,
    limit: Option<u32>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let answer = state
        .queue
        .send(SetConcurrencyLimit {
            key,
            limit,
            by: caller.id(),
        })
        .await?
        .map_err(|e| super::tasks::queue_error("", e))?;
    Ok(HttpResponse::Ok().json(answer))
}

async fn set(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path.into_inner())?;
    let obj = object_body(&body, LIMIT_FIELDS)?;
    let limit = obj
        .get("limit")
        .and_then(Value::as_u64)
        .filter(|l| *l <= MAX_LIMIT)
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "limit",
                "invalid_value",
                format!("must be between 0 and {MAX_LIMIT}"),
            )])
        })?;
    change(caller, key, Some(limit), state).await
}

async fn remove(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path.into_inner())?;
    change(caller, key, None, state).await
}

async fn list(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let keys = state.queue.send(ConcurrencyLimits).await?;
    Ok(HttpResponse::Ok().json(json!({"keys": keys})))
}
