//! Shared context (ext, PROTOCOL.md 6.33): `GET /api/context?prefix`, `GET
//! /api/context/:key?version`, `GET /api/context/:key/history?limit`, `PUT
//! /api/context/:key {value | text, if_version?}`, `DELETE
//! /api/context/:key?if_version`. Any token reads; writes follow the
//! configured rights (`ContextRights`).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{parse_json, query_map, query_uint, Caller};
use crate::context::{Change, ContextError, ReadContext, WriteContext};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_context_key, parse_context_put, FieldError};

/// Most versions one history page shows.
const MAX_HISTORY: usize = 1000;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/context", web::get().to(list))
        .route("/api/context/{key}", web::get().to(get))
        .route("/api/context/{key}", web::put().to(put))
        .route("/api/context/{key}", web::delete().to(delete))
        .route("/api/context/{key}/history", web::get().to(history));
}

fn refused(key: &str, e: ContextError) -> ApiError {
    match e {
        ContextError::NotFound => ApiError::ContextNotFound(key.to_string()),
        ContextError::Conflict(current) => ApiError::VersionConflict {
            key: key.to_string(),
            current,
        },
        ContextError::Full => ApiError::Validation(vec![FieldError::new(
            "key",
            "too_many_keys",
            format!(
                "the store holds {} keys: delete some first",
                crate::context::MAX_CONTEXT_KEYS
            ),
        )]),
        ContextError::Store(e) => e.into(),
    }
}

/// The query, refused when it names a parameter not in `allowed`.
fn query(req: &HttpRequest, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let q = query_map(req)?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::Validation(vec![FieldError::new(
            k,
            "unknown_field",
            format!("expected {}", allowed.join(", ")),
        )]));
    }
    Ok(q)
}

fn checked_key(path: web::Path<String>) -> Result<String, ApiError> {
    let key = path.into_inner();
    check_context_key(&key, "key").map_err(|e| ApiError::Validation(vec![e]))?;
    Ok(key)
}

async fn list(
    _caller: Caller,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(&req, &["prefix", "deleted"])?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    if !prefix.is_empty() {
        check_context_key(&prefix, "prefix").map_err(|e| ApiError::Validation(vec![e]))?;
    }
    let deleted = match q.get("deleted").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "deleted",
                "invalid_value",
                "true or false",
            )]))
        }
    };
    let out = state
        .context
        .send(ReadContext::List { prefix, deleted })
        .await?
        .map_err(|e| refused("", e))?;
    Ok(HttpResponse::Ok().json(out))
}

/// Asks the store `read` about `key`.
async fn read(state: &HubState, key: &str, read: ReadContext) -> Result<HttpResponse, ApiError> {
    let out = state
        .context
        .send(read)
        .await?
        .map_err(|e| refused(key, e))?;
    Ok(HttpResponse::Ok().json(out))
}

/// Carries out `change` of `key` as the caller, when its role may.
async fn write(
    state: &HubState,
    caller: &Caller,
    key: String,
    change: Change,
) -> Result<(u16, Value), ApiError> {
    if !state.context_rights.may_write(&key, &caller.0) {
        return Err(ApiError::Forbidden);
    }
    let head = state
        .context
        .send(WriteContext {
            key: key.clone(),
            change,
            by: caller.id(),
        })
        .await?
        .map_err(|e| refused(&key, e))?;
    let status = if head.version == 1 { 201 } else { 200 };
    Ok((status, json!(head)))
}

async fn get(
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path)?;
    let version = query_uint(&query(&req, &["version"])?, "version")?;
    let ask = ReadContext::Get {
        key: key.clone(),
        version,
    };
    read(&state, &key, ask).await
}

async fn history(
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path)?;
    let limit = query_uint(&query(&req, &["limit"])?, "limit")?
        .map_or(100, |l| (l as usize).clamp(1, MAX_HISTORY));
    let ask = ReadContext::History {
        key: key.clone(),
        limit,
    };
    read(&state, &key, ask).await
}

async fn put(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path)?;
    let Value::Object(obj) = parse_json(&body)? else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "expected a JSON object",
        )]));
    };
    let put = parse_context_put(&key, &obj, state.config.context_max_bytes)
        .map_err(ApiError::Validation)?;
    let (status, head) = write(&state, &caller, key, Change::Put(put)).await?;
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    Ok(HttpResponse::build(status).json(head))
}

async fn delete(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let key = checked_key(path)?;
    let if_version = query_uint(&query(&req, &["if_version"])?, "if_version")?;
    let (_, head) = write(&state, &caller, key, Change::Delete { if_version }).await?;
    Ok(HttpResponse::Ok().json(head))
}
