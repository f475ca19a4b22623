//! The event log and task attempts over HTTP, and the operator's controls:
//! `GET /api/events`, `GET /api/tasks/{id}/events`, `GET /api/tasks/{id}/attempts`,
//! cancel, force retry, force dead letter, change priority, pause and resume
//! lanes, drain, undrain,
//! disable and enable an agent. Every control is recorded in the event log with
//! the caller as its actor (by the owner that carries it out).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::tasks::read_task;
use super::{object_body, query_map, query_uint, Caller, Steer};
use crate::agents::presence::{AgentAction, ControlAgent};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{opt, parse_priority, req, Field, FieldError, Kind};
use crate::queue::{ControlTask, GetAttempts, PauseLanes, PausedLanes, TaskControl};
use crate::storage::eventlog::EventQuery;

/// Page size limits of the event queries.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// Body of `POST /api/tasks/{id}/priority`.
pub(super) const PRIORITY_FIELDS: &[Field] = &[req("priority", Kind::Any)];

/// Body of `POST /api/queue/pause` and `/resume` (no `lanes` = every lane).
pub(super) const LANES_FIELDS: &[Field] = &[opt("lanes", Kind::Any)];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/events", web::get().to(list_events))
        .route("/api/tasks/{id}/events", web::get().to(task_events))
        .route("/api/tasks/{id}/attempts", web::get().to(task_attempts))
        .route("/api/tasks/{id}/retry", web::post().to(retry_task))
        .route("/api/tasks/{id}/cancel", web::post().to(cancel_task))
        .route(
            "/api/tasks/{id}/dead-letter",
            web::post().to(dead_letter_task),
        )
        .route("/api/tasks/{id}/priority", web::post().to(set_priority))
        .route("/api/queue/lanes", web::get().to(lanes))
        .route("/api/queue/pause", web::post().to(pause))
        .route("/api/queue/resume", web::post().to(resume))
        .route("/api/agents/{id}/{action}", web::post().to(control_agent));
}

async fn control_agent(
    caller: Caller,
    _steer: Steer,
    path: web::Path<(String, String)>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let (agent_id, action) = path.into_inner();
    let Some(action) = AgentAction::parse(&action) else {
        return Err(ApiError::NotFound);
    };
    if state.tokens.get(&agent_id)?.is_none() {
        return Err(ApiError::AgentNotFound(agent_id));
    }
    let controls = state
        .presence
        .send(ControlAgent {
            agent_id: agent_id.clone(),
            action,
            by: caller.id(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({
        "agent_id": agent_id,
        "draining": controls.draining,
        "disabled": controls.disabled,
    })))
}

/// Parses the event-query parameters; every bad one is reported at once.
fn event_query(q: &HashMap<String, String>) -> Result<EventQuery, ApiError> {
    let mut errors = Vec::new();
    let mut uint = |name: &str| match query_uint(q, name) {
        Ok(v) => v,
        Err(ApiError::Validation(mut e)) => {
            errors.append(&mut e);
            None
        }
        Err(_) => None,
    };
    let limit = uint("limit");
    let cursor = uint("cursor").unwrap_or(0);
    let since = uint("since");
    let until = uint("until");
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "invalid_value",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
            DEFAULT_LIMIT
        }
    };
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            errors.push(FieldError::new(
                "until",
                "invalid_value",
                "must not be before since",
            ));
        }
    }
    let mut text = |name: &str, max: usize| -> Option<String> {
        let v = q.get(name)?;
        if v.is_empty() || v.chars().count() > max {
            errors.push(FieldError::new(
                name,
                "invalid_value",
                format!("1 to {max} characters"),
            ));
            return None;
        }
        Some(v.clone())
    };
    let query = EventQuery {
        task_id: text("task_id", 128),
        agent_id: text("agent_id", 128),
        kind: text("kind", 64),
        since: since.map(|s| s.min(i64::MAX as u64) as i64),
        until: until.map(|u| u.min(i64::MAX as u64) as i64),
        cursor,
        limit: limit as usize,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(query)
}

async fn run_query(state: &HubState, query: EventQuery) -> Result<HttpResponse, ApiError> {
    let log = state.events.clone();
    let page = web::block(move || log.query(&query))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    Ok(HttpResponse::Ok().json(json!({
        "count": page.events.len(),
        "events": page.events,
        "next_cursor": page.next_cursor,
    })))
}

async fn list_events(
    _caller: Caller,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let query = event_query(&query_map(&req)?)?;
    run_query(&state, query).await
}

async fn task_events(
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let mut q = query_map(&req)?;
    q.insert("task_id".into(), task_id.clone());
    let query = event_query(&q)?;
    read_task(&state, &task_id).await?;
    run_query(&state, query).await
}

async fn task_attempts(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    match state
        .queue
        .send(GetAttempts {
            task_id: task_id.clone(),
        })
        .await??
    {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::TaskNotFound(task_id)),
    }
}

/// One operator control of a task, answered in the shape of its route.
async fn control_task(
    caller: &Caller,
    task_id: String,
    control: TaskControl,
    state: &HubState,
) -> Result<HttpResponse, ApiError> {
    let done = state
        .queue
        .send(ControlTask {
            task_id: task_id.clone(),
            control,
            by: caller.id(),
        })
        .await?
        .map_err(|e| super::tasks::queue_error(&task_id, e))?;
    let mut body = json!({
        "status": done.status.as_str(),
        "task_id": task_id,
        "previous_status": done.previous_status.as_str(),
    });
    match control {
        TaskControl::Retry => {
            body["status"] = json!("requeued");
            body["priority"] = json!(done.priority);
        }
        TaskControl::Priority(_) => {
            body["priority"] = json!(done.priority);
            body["previous_priority"] = json!(done.previous_priority);
        }
        TaskControl::Cancel | TaskControl::DeadLetter => {}
    }
    Ok(HttpResponse::Ok().json(body))
}

async fn retry_task(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    control_task(&caller, path.into_inner(), TaskControl::Retry, &state).await
}

async fn cancel_task(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    control_task(&caller, path.into_inner(), TaskControl::Cancel, &state).await
}

async fn dead_letter_task(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    control_task(&caller, path.into_inner(), TaskControl::DeadLetter, &state).await
}

async fn set_priority(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, PRIORITY_FIELDS)?;
    let priority = parse_priority(obj.get("priority").unwrap_or(&Value::Null))
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let control = TaskControl::Priority(priority);
    control_task(&caller, path.into_inner(), control, &state).await
}

/// The lanes a pause or resume body names (none named = all four).
fn lanes_of(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        object_body(body, LANES_FIELDS)?
    };
    match obj.get("lanes") {
        None | Some(Value::Null) => Ok(vec![0, 1, 2, 3]),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 4 => {
            let mut lanes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let lane = parse_priority(item).map_err(|mut e| {
                    e.field = format!("lanes[{i}]");
                    ApiError::Validation(vec![e])
                })?;
                if !lanes.contains(&lane) {
                    lanes.push(lane);
                }
            }
            Ok(lanes)
        }
        Some(_) => Err(ApiError::Validation(vec![FieldError::new(
            "lanes",
            "invalid_value",
            "a list of 1 to 4 priorities (urgent, high, normal, low or 0-3)",
        )])),
    }
}

async fn change_lanes(
    caller: Caller,
    body: web::Bytes,
    state: web::Data<HubState>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let lanes = lanes_of(&body)?;
    let now_paused = state
        .queue
        .send(PauseLanes {
            lanes,
            paused,
            by: caller.id(),
        })
        .await?
        .map_err(|e| super::tasks::queue_error("", e))?;
    Ok(HttpResponse::Ok().json(json!({"paused_lanes": now_paused})))
}

async fn pause(
    caller: Caller,
    _steer: Steer,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    change_lanes(caller, body, state, true).await
}

async fn resume(
    caller: Caller,
    _steer: Steer,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    change_lanes(caller, body, state, false).await
}

async fn lanes(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let paused = state.queue.send(PausedLanes).await?;
    Ok(HttpResponse::Ok().json(json!({"paused_lanes": paused})))
}
