//! Task routes: submit (single and batch), list, dead letter, stats, get (the
//! operator's controls of a task are in `operator.rs`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{parse_json, query_map, query_uint, Caller};
use crate::agents::auth::Principal;
use crate::domain::task::{TaskError, TaskStatus};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{parse_priority, parse_task_specs, FieldError, Notify};
use crate::queue::{DeadLetters, GetTask, ListTasks, QueueError, Stats, Submit};
use crate::storage::bus::HubEvent;

/// Largest batch of tasks accepted in one `POST /api/tasks`.
pub(super) const MAX_BATCH: usize = 1000;
/// How long `GET /api/tasks/:id/wait` holds a request: default and most (ms).
const DEFAULT_WAIT_MS: u64 = 30_000;
const MAX_WAIT_MS: u64 = 60_000;
/// Page size limits of `GET /api/tasks`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/tasks", web::post().to(submit_tasks))
        .route("/api/tasks", web::get().to(list_tasks))
        .route("/api/tasks/dead-letter", web::get().to(dead_letter))
        .route("/api/tasks/stats", web::get().to(task_stats))
        .route("/api/tasks/{id}", web::get().to(get_task))
        .route("/api/tasks/{id}/result", web::get().to(get_result))
        .route("/api/tasks/{id}/wait", web::get().to(wait_task));
}

pub(crate) fn queue_error(task_id: &str, e: QueueError) -> ApiError {
    match e {
        QueueError::Task(TaskError::NotFound) => ApiError::TaskNotFound(task_id.to_string()),
        QueueError::Task(TaskError::InvalidState(s)) => ApiError::InvalidState {
            task_id: task_id.to_string(),
            status: s.as_str().to_string(),
        },
        QueueError::Task(other) => ApiError::InvalidState {
            task_id: task_id.to_string(),
            status: other.as_str().to_string(),
        },
        QueueError::Store(e) => e.into(),
        QueueError::Invalid(errors) => ApiError::Validation(errors),
        QueueError::Reservation(code) => ApiError::ReservationRefused(code),
    }
}

async fn submit_tasks(
    caller: Caller,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let value = parse_json(&body)?;
    let batch = value.is_array();
    let items: Vec<Value> = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "invalid_value",
            format!("a batch holds 1 to {MAX_BATCH} tasks"),
        )]));
    }
    let specs = parse_task_specs(&items, |i| {
        if batch {
            format!("[{i}].")
        } else {
            String::new()
        }
    })
    .map_err(ApiError::Validation)?;
    if matches!(caller.0, Principal::Admin) {
        // A notice by message goes to the submitting agent's mailbox.
        if let Some(i) = specs.iter().position(|s| s.notify == Some(Notify::Message)) {
            let field = if batch {
                format!("[{i}].notify")
            } else {
                "notify".into()
            };
            return Err(ApiError::Validation(vec![FieldError::new(
                &field,
                "invalid_value",
                "the admin token has no mailbox: submit with an agent's token, or notify event",
            )]));
        }
    }
    let created = state
        .queue
        .send(Submit {
            specs,
            submitted_by: caller.id(),
            batch,
        })
        .await?
        .map_err(|e| queue_error("", e))?;
    // 201 when something was created; 200 when every task already existed
    // (`dedupe_key`, PROTOCOL.md section 6).
    let mut reply = if created.iter().any(|s| !s.existing) {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    if batch {
        let tasks: Vec<Value> = created
            .iter()
            .map(|s| json!({"task_id": s.task_id, "priority": s.priority, "created_at": s.created_at, "deduplicated": s.existing}))
            .collect();
        return Ok(reply.json(json!({
            "status": "queued",
            "count": tasks.len(),
            "tasks": tasks,
        })));
    }
    let s = created
        .first()
        .ok_or_else(|| ApiError::Unavailable("no task created".into()))?;
    Ok(reply.json(json!({
        "status": if s.existing { "duplicate" } else { "queued" },
        "task_id": s.task_id,
        "priority": s.priority,
        "created_at": s.created_at,
        "deduplicated": s.existing,
    })))
}

async fn list_tasks(
    _caller: Caller,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let q = query_map(&req)?;
    let mut errors = Vec::new();
    let status = match q.get("status") {
        None => None,
        Some(s) => TaskStatus::parse(s).or_else(|| {
            errors.push(FieldError::new(
                "status",
                "invalid_value",
                "expected queued, assigned, blocked, completed, dead_letter or cancelled",
            ));
            None
        }),
    };
    let priority = match q.get("priority") {
        None => None,
        Some(p) => {
            let v = p
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(p.as_str()));
            parse_priority(&v).map_err(|e| errors.push(e)).ok()
        }
    };
    if let Some(a) = q.get("assigned_to") {
        if a.is_empty() || a.chars().count() > 128 {
            errors.push(FieldError::new(
                "assigned_to",
                "invalid_value",
                "1 to 128 characters",
            ));
        }
    }
    let limit = match query_uint(&q, "limit") {
        Ok(Some(n)) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Ok(Some(_)) => {
            errors.push(FieldError::new(
                "limit",
                "invalid_value",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
            DEFAULT_LIMIT
        }
        Ok(None) => DEFAULT_LIMIT,
        Err(ApiError::Validation(mut e)) => {
            errors.append(&mut e);
            DEFAULT_LIMIT
        }
        Err(e) => return Err(e),
    };
    let cursor = match query_uint(&q, "cursor") {
        Ok(c) => c.unwrap_or(0),
        Err(ApiError::Validation(mut e)) => {
            errors.append(&mut e);
            0
        }
        Err(e) => return Err(e),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let page = state
        .queue
        .send(ListTasks {
            status,
            priority,
            assigned_to: q.get("assigned_to").cloned(),
            correlation_id: q.get("correlation_id").cloned(),
            limit,
            cursor,
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({
        "count": page.tasks.len(),
        "tasks": page.tasks,
        "next_cursor": page.next_cursor,
    })))
}

async fn dead_letter(
    _caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let tasks = state
        .queue
        .send(DeadLetters {
            limit: MAX_LIMIT,
            newest_first: false,
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({"count": tasks.len(), "tasks": tasks})))
}

async fn task_stats(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.queue.send(Stats).await?))
}

/// The task as the API shows it, or `task_not_found`.
/// A task no longer in the live store is read from its archive file (off
/// the queue, on the blocking pool), marked `archived: true`.
pub(crate) async fn read_task(state: &HubState, task_id: &str) -> Result<Value, ApiError> {
    let live = state
        .queue
        .send(GetTask {
            task_id: task_id.to_string(),
        })
        .await??;
    if let Some(task) = live {
        return Ok(task);
    }
    let (archive, id) = (state.archive.clone(), task_id.to_string());
    let archived = actix_web::web::block(move || archive.read_task(&id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(format!("archive unreadable: {e}")))?;
    archived.ok_or_else(|| ApiError::TaskNotFound(task_id.to_string()))
}

async fn get_task(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(read_task(&state, &path.into_inner()).await?))
}

/// `GET /api/tasks/:id/result` (ext, PROTOCOL.md 6.32): the task's result
/// whole, with its status (what `inputs` and hub events give by reference).
async fn get_result(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task = read_task(&state, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "task_id": task["id"],
        "status": task["status"],
        "result": task["result"],
        "tokens_used": task["tokens_used"],
        "completed_at": task["completed_at"],
    })))
}

/// `GET /api/tasks/:id/wait?timeout_ms=` (ext): the task as soon as it is
/// completed, dead-lettered or cancelled, or as it stands when `timeout_ms`
/// passes. A long poll, so a waiting client makes one request per timeout
/// instead of polling.
///
/// It listens on the event bus only to learn *when* to look again; the answer
/// is always the task as the queue holds it.
async fn wait_task(
    _caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let timeout_ms = match query_uint(&query_map(&req)?, "timeout_ms")? {
        None => DEFAULT_WAIT_MS,
        Some(ms) if ms <= MAX_WAIT_MS => ms,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "timeout_ms",
                "invalid_value",
                format!("must be at most {MAX_WAIT_MS}"),
            )]))
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    // Subscribe before the first look, so no change falls between the two.
    let mut events = state.bus.subscribe();
    loop {
        let task = read_task(&state, &task_id).await?;
        let terminal = task
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(is_terminal);
        if terminal || tokio::time::Instant::now() >= deadline {
            return Ok(HttpResponse::Ok().json(task));
        }
        // Sleep until this task reaches an end, the listener falls behind (then
        // look again), or the time is up.
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => break,
                Ok(Ok(event)) => {
                    if let HubEvent::TaskEvent {
                        task_id: id,
                        status,
                        ..
                    } = event.as_ref()
                    {
                        if *id == task_id && is_terminal(status) {
                            break;
                        }
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Err(RecvError::Closed)) => {
                    return Err(ApiError::Unavailable("the hub is stopping".into()))
                }
            }
        }
    }
}

fn is_terminal(status: &str) -> bool {
    TaskStatus::ALL
        .iter()
        .any(|s| s.as_str() == status && s.is_terminal())
}
