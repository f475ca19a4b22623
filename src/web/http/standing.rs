//! Standing orders over HTTP: create, list, read, change and delete orders
//! (admin), and every occurrence of one with its status
//! (`GET /api/standing-orders/{name}/runs?since&until&limit`).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::{object_body, query_map, query_uint, Caller, Steer};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::ops::standing::{
    CreateOrder, DeleteOrder, ListOrders, ListRuns, OrderFields, StandingError, UpdateOrder,
    MAX_RUNS,
};
use crate::protocol::{id, opt, req, Field, FieldError, Kind};

/// Longest standing-order name.
const MAX_NAME: usize = 64;
/// Window limits (ms): a second to a week.
const WINDOW_RANGE_MS: (u64, u64) = (1_000, 7 * 24 * 3_600_000);

/// Body of `POST /api/standing-orders`.
pub(super) const ORDER_FIELDS: &[Field] = &[
    req("name", id(MAX_NAME)),
    req("cron", id(128)),
    opt("timezone", id(64)),
    opt("capability", id(128)),
    opt("agent", id(128)),
    req("task", Kind::Object),
    opt("window_ms", Kind::UInt),
    opt("enabled", Kind::Any),
];

/// Body of `PUT /api/standing-orders/{name}`: any subset.
pub(super) const ORDER_UPDATE_FIELDS: &[Field] = &[
    opt("cron", id(128)),
    opt("timezone", id(64)),
    opt("capability", Kind::Any),
    opt("agent", Kind::Any),
    opt("task", Kind::Object),
    opt("window_ms", Kind::UInt),
    opt("enabled", Kind::Any),
];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/standing-orders", web::post().to(create))
        .route("/api/standing-orders", web::get().to(list))
        .route("/api/standing-orders/{name}", web::get().to(get_one))
        .route("/api/standing-orders/{name}", web::put().to(update))
        .route("/api/standing-orders/{name}", web::delete().to(delete))
        .route("/api/standing-orders/{name}/runs", web::get().to(runs));
}

fn standing_error(e: StandingError) -> ApiError {
    match e {
        StandingError::NotFound(name) => ApiError::StandingOrderNotFound(name),
        StandingError::AlreadyExists(name) => ApiError::AlreadyExists {
            what: "standing_order",
            id: name,
        },
        StandingError::Invalid(errors) => ApiError::Validation(errors),
        StandingError::Store(e) => e.into(),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "invalid_value",
            format!("1 to {MAX_NAME} characters: letters, digits, '-', '_', '.'"),
        )]))
    }
}

/// The settable fields of a checked body.
fn order_fields(obj: &Map<String, Value>) -> Result<OrderFields, ApiError> {
    let mut errors = Vec::new();
    let text_of = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    // A target may be cleared with null (update) or set to a non-empty string.
    let mut target = |k: &str| -> Option<Option<String>> {
        match obj.get(k) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 128 => {
                Some(Some(s.clone()))
            }
            Some(_) => {
                errors.push(FieldError::new(
                    k,
                    "invalid_value",
                    "a string of 1 to 128 characters, or null to clear it",
                ));
                None
            }
        }
    };
    let capability = target("capability");
    let agent = target("agent");
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.push(FieldError::new(
                "enabled",
                "wrong_type",
                "expected true or false",
            ));
            None
        }
    };
    let window_ms = obj.get("window_ms").and_then(Value::as_u64);
    if window_ms.is_some_and(|w| w < WINDOW_RANGE_MS.0 || w > WINDOW_RANGE_MS.1) {
        errors.push(FieldError::new(
            "window_ms",
            "invalid_value",
            format!(
                "must be between {} and {}",
                WINDOW_RANGE_MS.0, WINDOW_RANGE_MS.1
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(OrderFields {
        cron: text_of("cron"),
        timezone: text_of("timezone"),
        capability,
        agent,
        task: obj.get("task").and_then(Value::as_object).cloned(),
        window_ms,
        enabled,
    })
}

async fn create(
    caller: Caller,
    _steer: Steer,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, ORDER_FIELDS)?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    check_name(&name)?;
    let fields = order_fields(&obj)?;
    let order = state
        .standing
        .send(CreateOrder {
            name,
            fields,
            by: caller.id(),
        })
        .await?
        .map_err(standing_error)?;
    Ok(HttpResponse::Created().json(order))
}

async fn update(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, ORDER_UPDATE_FIELDS)?;
    let fields = order_fields(&obj)?;
    let order = state
        .standing
        .send(UpdateOrder {
            name: path.into_inner(),
            fields,
            by: caller.id(),
        })
        .await?
        .map_err(standing_error)?;
    Ok(HttpResponse::Ok().json(order))
}

async fn delete(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    state
        .standing
        .send(DeleteOrder {
            name: name.clone(),
            by: caller.id(),
        })
        .await?
        .map_err(standing_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "deleted", "name": name})))
}

async fn list(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let orders = state
        .standing
        .send(ListOrders { name: None })
        .await?
        .map_err(standing_error)?;
    Ok(HttpResponse::Ok().json(json!({"count": orders.len(), "orders": orders})))
}

async fn get_one(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let mut orders = state
        .standing
        .send(ListOrders {
            name: Some(path.into_inner()),
        })
        .await?
        .map_err(standing_error)?;
    Ok(HttpResponse::Ok().json(orders.pop().unwrap_or(Value::Null)))
}

async fn runs(
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let q = query_map(&req)?;
    let mut errors = Vec::new();
    let mut uint = |k: &str| match query_uint(&q, k) {
        Ok(v) => v,
        Err(ApiError::Validation(mut e)) => {
            errors.append(&mut e);
            None
        }
        Err(_) => None,
    };
    let since = uint("since").unwrap_or(0).min(i64::MAX as u64) as i64;
    let until = uint("until").map_or(i64::MAX, |u| u.min(i64::MAX as u64) as i64);
    let limit = uint("limit").unwrap_or(MAX_RUNS as u64);
    if !(1..=MAX_RUNS as u64).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            "invalid_value",
            format!("must be between 1 and {MAX_RUNS}"),
        ));
    }
    if since > until {
        errors.push(FieldError::new(
            "until",
            "invalid_value",
            "must not be before since",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let runs = state
        .standing
        .send(ListRuns {
            name: name.clone(),
            since,
            until,
            limit: limit as usize,
        })
        .await?
        .map_err(standing_error)?;
    let mut summary: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &runs {
        *summary.entry(r.status.as_str()).or_default() += 1;
    }
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "scheduled_for": r.scheduled_for,
                "due_by": r.due_by,
                "status": r.status.as_str(),
                "task_id": r.task_id,
                "evidence": r.evidence,
                "recorded_at": r.recorded_at,
                "finished_at": r.finished_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": name,
        "count": rows.len(),
        "summary": summary,
        "runs": rows,
    })))
}
