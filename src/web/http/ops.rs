//! Operator routes: metrics (JSON and Prometheus text), alerts and their
//! thresholds, and the runtime log level.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{bearer, object_body, query_map, validated, Admin, Steer, Watch};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::ops::alerts::{Acknowledge, AlertsView, GetThresholds, SetThresholds, Thresholds};
use crate::ops::logging::{self, LogError};
use crate::ops::metrics::{self, History, Latest};
use crate::protocol::{id, req, Field, FieldError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/log-level", web::get().to(get_level))
        .route("/api/admin/log-level", web::put().to(put_level))
        .route("/api/metrics", web::get().to(metrics_json))
        .route("/metrics", web::get().to(metrics_text))
        .route("/api/alerts", web::get().to(alerts))
        .route(
            "/api/alerts/{rule_id}/acknowledge",
            web::post().to(acknowledge),
        )
        .route(
            "/api/config/alert-thresholds",
            web::get().to(get_thresholds),
        )
        .route(
            "/api/config/alert-thresholds",
            web::put().to(put_thresholds),
        );
}

async fn alerts(_: Watch, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.alerter.send(AlertsView).await?))
}

async fn acknowledge(
    _: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let rule_id = path.into_inner();
    let known = state
        .alerter
        .send(Acknowledge {
            rule_id: rule_id.clone(),
        })
        .await?;
    if !known {
        return Err(ApiError::NotFound);
    }
    tracing::info!(rule_id = %rule_id, "alert acknowledged");
    Ok(HttpResponse::Ok().json(json!({"status": "acknowledged", "rule_id": rule_id})))
}

async fn get_thresholds(_: Watch, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.alerter.send(GetThresholds).await?))
}

/// Any subset of the thresholds; the rest keep their values. In force at the next
/// check, and kept across restarts.
async fn put_thresholds(
    _: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let serde_json::Value::Object(changes) = super::parse_json(&body)? else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "expected a JSON object",
        )]));
    };
    let current = state.alerter.send(GetThresholds).await?;
    let mut merged =
        serde_json::to_value(&current).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    for (k, v) in changes {
        if merged.get(&k).is_none() {
            return Err(ApiError::Validation(vec![FieldError::new(
                &k,
                "invalid_value",
                "unknown threshold",
            )]));
        }
        merged[k] = v;
    }
    let next: Thresholds = serde_json::from_value(merged).map_err(|e| {
        ApiError::Validation(vec![FieldError::new("", "wrong_type", e.to_string())])
    })?;
    validated(&next)?;
    state.alerter.send(SetThresholds(next.clone())).await??;
    tracing::info!("alert thresholds changed");
    Ok(HttpResponse::Ok().json(json!({"status": "updated", "thresholds": next})))
}

/// The newest snapshot; `?history=true` adds the last hour of snapshots.
async fn metrics_json(
    _: Watch,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let q = query_map(&req)?;
    let history = match q.get("history").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "history",
                "invalid_value",
                "true or false",
            )]))
        }
    };
    let latest = state
        .metrics
        .send(Latest)
        .await?
        .ok_or_else(|| ApiError::Unavailable("no metrics snapshot yet".into()))?;
    let mut body = metrics::to_json(&latest);
    if history {
        let all = state.metrics.send(History).await?;
        body["history"] = all.iter().map(metrics::to_json).collect();
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus text; the admin token or `metrics_token` may read it.
async fn metrics_text(
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let scrape_ok = match (&state.config.metrics_token, presented) {
        // Digests, so the comparison's timing says nothing about the token.
        (Some(expected), Some(given)) => Sha256::digest(expected) == Sha256::digest(given),
        _ => false,
    };
    if !scrape_ok && !bearer(&req)?.0.may_watch() {
        return Err(ApiError::AdminOnly);
    }
    let latest = state
        .metrics
        .send(Latest)
        .await?
        .ok_or_else(|| ApiError::Unavailable("no metrics snapshot yet".into()))?;
    let mut text = metrics::prometheus(&latest);
    let role = crate::hub::role_of(state.leader_epoch);
    text.push_str(&metrics::role_metrics(role, state.leader_epoch, None));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

fn unavailable(e: LogError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

async fn get_level(_: Watch) -> Result<HttpResponse, ApiError> {
    let level = logging::level().map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "level": level })))
}

pub(crate) const LEVEL_FIELDS: [Field; 1] = [req("level", id(1024))];

/// `{"level": "debug"}` or a filter directive (`agentcom_hub=debug,actix_web=warn`):
/// in force at once, until the next change or restart.
async fn put_level(_: Admin, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, &LEVEL_FIELDS)?;
    let level = obj
        .get("level")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let previous = logging::level().map_err(unavailable)?;
    match logging::set_level(level) {
        Ok(()) => {
            tracing::warn!(level, previous = %previous, "log level changed");
            Ok(HttpResponse::Ok().json(json!({
                "status": "updated",
                "level": level,
                "previous": previous,
            })))
        }
        Err(LogError::InvalidLevel(_, reason)) => Err(ApiError::Validation(vec![FieldError::new(
            "level",
            "invalid_value",
            reason,
        )])),
        Err(e) => Err(unavailable(e)),
    }
}
