//! Approvals (ext, PROTOCOL.md 6.27): `POST /api/tasks/:id/approve`,
//! `POST /api/tasks/:id/reject {reason}` (steering), and the rules that make
//! a completion wait, `GET` / `PUT /api/admin/approval-rules` (admin: a
//! coordinator may not lift the checks on its own work).

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::tasks::queue_error;
use super::{object_body, parse_json, Admin, Caller, Steer};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{parse_rules, req, text, Field, FieldError, MAX_REVIEW_NOTE};
use crate::queue::{ApprovalRulesView, DecideApproval, SetApprovalRules};

/// Body of `POST /api/tasks/{id}/reject`.
pub(crate) const REJECT_FIELDS: &[Field] = &[req("reason", text(MAX_REVIEW_NOTE))];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/tasks/{id}/approve", web::post().to(approve))
        .route("/api/tasks/{id}/reject", web::post().to(reject))
        .route("/api/admin/approval-rules", web::get().to(rules))
        .route("/api/admin/approval-rules", web::put().to(set_rules));
}

async fn decide(
    caller: Caller,
    task_id: String,
    approve: bool,
    note: Option<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task = state
        .queue
        .send(DecideApproval {
            task_id: task_id.clone(),
            approve,
            note,
            by: caller.id(),
        })
        .await?
        .map_err(|e| queue_error(&task_id, e))?;
    let status = if approve { "approved" } else { "rejected" };
    Ok(HttpResponse::Ok().json(json!({"status": status, "task": task})))
}

async fn approve(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    // No body, or an empty object.
    if !body.iter().all(u8::is_ascii_whitespace) {
        object_body(&body, &[])?;
    }
    decide(caller, path.into_inner(), true, None, state).await
}

async fn reject(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, REJECT_FIELDS)?;
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "reason",
                "invalid_value",
                "say why: the agent works on with it",
            )])
        })?
        .to_string();
    decide(caller, path.into_inner(), false, Some(reason), state).await
}

async fn rules(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.queue.send(ApprovalRulesView).await?))
}

async fn set_rules(
    caller: Caller,
    _admin: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let rules = parse_rules(&parse_json(&body)?).map_err(ApiError::Validation)?;
    let answer = state
        .queue
        .send(SetApprovalRules {
            rules,
            by: caller.id(),
        })
        .await?
        .map_err(|e| queue_error("", e))?;
    Ok(HttpResponse::Ok().json(answer))
}
