//! Usage-limit pauses (ext, PROTOCOL.md 6.23): `GET /api/usage` (the paused
//! credential groups, with until when) and `POST /api/usage/:group/resume`
//! (an operator ends a pause early).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Caller, Steer};
use crate::agents::usage::{ResumeUsage, UsageList};
use crate::error::ApiError;
use crate::hub::HubState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/usage", web::get().to(list))
        .route("/api/usage/{group}/resume", web::post().to(resume));
}

async fn list(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let pauses = state.presence.send(UsageList).await?;
    Ok(HttpResponse::Ok().json(json!({"paused": pauses})))
}

async fn resume(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let group = path.into_inner();
    let ended = state
        .presence
        .send(ResumeUsage {
            credential_group: group.clone(),
            by: caller.id(),
        })
        .await??;
    match ended {
        Some(pause) => Ok(HttpResponse::Ok().json(json!({"status": "resumed", "pause": pause}))),
        None => Err(ApiError::NotPaused(group)),
    }
}
