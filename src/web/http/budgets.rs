//! Budgets (ext, PROTOCOL.md 6.28): `POST /api/tasks/:id/budget` (steering:
//! raise a task's budget; a task paused for it resumes), `GET /api/spend`
//! (spend today by agent, group and capability, and the kept days), and the
//! daily budgets, `GET` / `PUT /api/admin/budgets` (admin).

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::tasks::queue_error;
use super::{object_body, parse_json, Admin, Caller, Steer};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_limit, opt, parse_daily_budgets, Field, FieldError, Kind};
use crate::queue::{RaiseBudget, SetDailyBudgets, SpendView};

/// Body of `POST /api/tasks/{id}/budget`.
pub(crate) const RAISE_FIELDS: &[Field] = &[
    opt("budget_tokens", Kind::UInt),
    opt("budget_usd", Kind::Number),
];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/tasks/{id}/budget", web::post().to(raise))
        .route("/api/spend", web::get().to(spend))
        .route("/api/admin/budgets", web::get().to(spend))
        .route("/api/admin/budgets", web::put().to(set_daily));
}

async fn raise(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let obj = object_body(&body, RAISE_FIELDS)?;
    let limit =
        check_limit(&obj, ("budget_tokens", "budget_usd"), "").map_err(ApiError::Validation)?;
    if limit.is_none() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "budget_tokens",
            "required",
            "give budget_tokens, budget_usd or both",
        )]));
    }
    let task = state
        .queue
        .send(RaiseBudget {
            task_id: task_id.clone(),
            tokens: limit.tokens,
            usd: limit.usd,
            by: caller.id(),
        })
        .await?
        .map_err(|e| queue_error(&task_id, e))?;
    Ok(HttpResponse::Ok().json(json!({"status": "budget_set", "task": task})))
}

async fn spend(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.queue.send(SpendView).await?))
}

async fn set_daily(
    caller: Caller,
    _admin: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let budgets = parse_daily_budgets(&parse_json(&body)?).map_err(ApiError::Validation)?;
    let answer: Value = state
        .queue
        .send(SetDailyBudgets {
            budgets,
            by: caller.id(),
        })
        .await?
        .map_err(|e| queue_error("", e))?;
    Ok(HttpResponse::Ok().json(answer))
}
