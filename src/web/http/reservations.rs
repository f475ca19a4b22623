//! Direct reservations of repository paths (ext, PROTOCOL.md 6.21):
//! `POST /api/reservations`, `POST /api/reservations/:id/renew`,
//! `DELETE /api/reservations/:id`, `GET /api/reservations`.
//!
//! An agent's token reserves for that agent and may renew or release only its
//! own reservations; the admin token reserves for `holder` (default `admin`)
//! and may renew or release any.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{parse_json, query_map, Caller};
use crate::agents::auth::Principal;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_fields, id, opt, parse_renew, parse_reserve, FieldError};
use crate::queue::{
    ListReservations, QueueError, ReleaseReservation, RenewReservation, Reserve, ReserveOutcome,
    Reserver,
};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/reservations", web::post().to(reserve))
        .route("/api/reservations", web::get().to(list))
        .route("/api/reservations/{id}/renew", web::post().to(renew))
        .route("/api/reservations/{id}", web::delete().to(release));
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match parse_json(body)? {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "expected a JSON object",
        )])),
    }
}

fn reserver(caller: &Caller, holder: Option<String>) -> Result<Reserver, ApiError> {
    match (&caller.0, holder) {
        (Principal::Admin, holder) => Ok(Reserver::Operator { holder }),
        (p, None) => p
            .agent_id()
            .map(|me| Reserver::Agent(me.to_string()))
            .ok_or(ApiError::Forbidden),
        (_, Some(_)) => Err(ApiError::Validation(vec![FieldError::new(
            "holder",
            "invalid_value",
            "only the admin token reserves for another holder",
        )])),
    }
}

/// Maps a refusal of the queue to its HTTP answer.
fn refused(reservation_id: &str, e: QueueError) -> ApiError {
    match e {
        QueueError::Reservation("reservation_not_found") => {
            ApiError::ReservationNotFound(reservation_id.to_string())
        }
        QueueError::Reservation("not_holder") => ApiError::NotHolder(reservation_id.to_string()),
        other => super::tasks::queue_error("", other),
    }
}

async fn reserve(
    caller: Caller,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = body_object(&body)?;
    let mut errors = check_fields(&obj, &[opt("holder", id(128))]);
    let request = match parse_reserve(&obj) {
        Ok(r) if errors.is_empty() => r,
        Ok(_) => return Err(ApiError::Validation(errors)),
        Err(more) => {
            errors.extend(more);
            return Err(ApiError::Validation(errors));
        }
    };
    let holder = obj
        .get("holder")
        .and_then(Value::as_str)
        .map(str::to_string);
    let by = reserver(&caller, holder)?;
    let outcome = state
        .queue
        .send(Reserve { request, by })
        .await?
        .map_err(|e| refused("", e))?;
    match outcome {
        ReserveOutcome::Granted(reservation) => {
            Ok(HttpResponse::Created()
                .json(json!({"status": "granted", "reservation": reservation})))
        }
        ReserveOutcome::Conflict(holder) => Err(ApiError::ScopeConflict(json!({
            "error": "scope_conflict",
            "status": "conflict",
            "holder": holder,
        }))),
    }
}

async fn renew(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let reservation_id = path.into_inner();
    let ttl_ms = parse_renew(&body_object(&body)?).map_err(ApiError::Validation)?;
    let reservation = state
        .queue
        .send(RenewReservation {
            reservation_id: reservation_id.clone(),
            ttl_ms,
            by: reserver(&caller, None)?,
        })
        .await?
        .map_err(|e| refused(&reservation_id, e))?;
    Ok(HttpResponse::Ok().json(json!({"status": "granted", "reservation": reservation})))
}

async fn release(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let reservation_id = path.into_inner();
    let reservation = state
        .queue
        .send(ReleaseReservation {
            reservation_id: reservation_id.clone(),
            by: reserver(&caller, None)?,
        })
        .await?
        .map_err(|e| refused(&reservation_id, e))?;
    Ok(HttpResponse::Ok().json(json!({"status": "released", "reservation": reservation})))
}

async fn list(
    _caller: Caller,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let q = query_map(&req)?;
    let repo = q.get("repo").cloned();
    let reservations = state.queue.send(ListReservations { repo }).await?;
    Ok(HttpResponse::Ok().json(json!({"reservations": reservations})))
}
