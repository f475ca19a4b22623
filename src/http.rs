//! HTTP routes (PROTOCOL.md section 3) and the WebSocket upgrade.
//!
//! Handlers parse and validate input (bodies are read as bytes and parsed here so
//! every failure is a structured `ApiError`), check the caller, and ask the owning
//! actor. They hold no state of their own.
//!
//! Architecture invariant: no handler changes a task or an agent directly; the
//! status-code mapping lives only in `error::ApiError`.

use std::collections::HashMap;
use std::future::{ready, Ready};

use actix_web::dev::ServiceResponse;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::{json, Value};

use crate::auth::{join_command, IssueError, Principal};
use crate::error::ApiError;
use crate::presence::{AgentState, ListAgents, OnlineCount, RevokeAgent};
use crate::protocol::{check_fields, parse_priority, parse_task_spec, Field, FieldError, Kind};
use crate::queue::QueueError;
use crate::queue::{Cancel, DeadLetters, GetTask, ListTasks, Retry, Stats, Submit};
use crate::server::HubState;
use crate::session::AgentSession;
use crate::task::{TaskError, TaskStatus};

/// Largest batch of tasks accepted in one `POST /api/tasks`.
pub const MAX_BATCH: usize = 1000;
/// Page size limits of `GET /api/tasks`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The authenticated caller of a route that needs a bearer token.
pub struct Caller(pub Principal);

impl Caller {
    fn id(&self) -> String {
        match &self.0 {
            Principal::Admin => "admin".into(),
            Principal::Agent(id) => id.clone(),
        }
    }
}

fn bearer(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<HubState>>()
        .ok_or_else(|| ApiError::Unavailable("hub state missing".into()))?;
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    match state.tokens.authenticate(token)? {
        Some(p) => Ok(Caller(p)),
        None => Err(ApiError::Unauthorized),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req))
    }
}

/// A caller holding the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req).and_then(|c| match c.0 {
            Principal::Admin => Ok(Admin),
            Principal::Agent(_) => Err(ApiError::AdminOnly),
        }))
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn query_map(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::Validation(vec![FieldError::new(
                "query",
                "invalid_value",
                e.to_string(),
            )])
        })
}

fn query_uint(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::Validation(vec![FieldError::new(
                    name,
                    "invalid_value",
                    "expected a non-negative integer",
                )])
            })
        })
        .transpose()
}

fn queue_error(task_id: &str, e: QueueError) -> ApiError {
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
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ws", web::get().to(agent_socket))
        .route("/api/tasks", web::post().to(submit_tasks))
        .route("/api/tasks", web::get().to(list_tasks))
        .route("/api/tasks/dead-letter", web::get().to(dead_letter))
        .route("/api/tasks/stats", web::get().to(task_stats))
        .route("/api/tasks/{id}", web::get().to(get_task))
        .route("/api/tasks/{id}/retry", web::post().to(retry_task))
        .route("/api/tasks/{id}/cancel", web::post().to(cancel_task))
        .route("/api/agents", web::get().to(list_agents))
        .route("/api/agents/states", web::get().to(agent_states))
        .route("/api/agents/{id}/state", web::get().to(agent_state))
        .route("/admin/tokens", web::post().to(issue_token))
        .route("/admin/tokens", web::get().to(list_tokens))
        .route("/admin/tokens/{agent_id}", web::delete().to(revoke_token))
        .route("/admin/invites", web::post().to(create_invite))
        .route("/api/onboard/register", web::post().to(register));
}

/// Gives error responses made by the framework itself (an oversized body, a failed
/// WebSocket handshake) the same JSON shape as ours: `{"error": "<snake_case>"}`.
pub fn json_errors<B: 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_");
    let (req, _) = res.into_parts();
    let body = HttpResponse::build(status).json(json!({ "error": error }));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, body).map_into_right_body(),
    ))
}

/// Every unknown route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn health(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let n = state.presence.send(OnlineCount).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ok",
        "service": "agent_com",
        "agents_connected": n,
    })))
}

async fn agent_socket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<HubState>,
) -> Result<HttpResponse, actix_web::Error> {
    let session = AgentSession::new(state.session_deps());
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(state.config.max_frame_bytes)
        .start()
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
    let mut specs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = if batch {
            format!("[{i}].")
        } else {
            String::new()
        };
        match parse_task_spec(item, &prefix) {
            Ok(spec) => specs.push(spec),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let created = state
        .queue
        .send(Submit {
            specs,
            submitted_by: caller.id(),
        })
        .await?
        .map_err(|e| queue_error("", e))?;
    if batch {
        let tasks: Vec<Value> = created
            .iter()
            .map(|s| json!({"task_id": s.task_id, "priority": s.priority, "created_at": s.created_at}))
            .collect();
        return Ok(HttpResponse::Created().json(json!({
            "status": "queued",
            "count": tasks.len(),
            "tasks": tasks,
        })));
    }
    let s = created
        .first()
        .ok_or_else(|| ApiError::Unavailable("no task created".into()))?;
    Ok(HttpResponse::Created().json(json!({
        "status": "queued",
        "task_id": s.task_id,
        "priority": s.priority,
        "created_at": s.created_at,
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
    let tasks = state.queue.send(DeadLetters { limit: MAX_LIMIT }).await??;
    Ok(HttpResponse::Ok().json(json!({"count": tasks.len(), "tasks": tasks})))
}

async fn task_stats(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.queue.send(Stats).await?))
}

async fn get_task(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    match state
        .queue
        .send(GetTask {
            task_id: task_id.clone(),
        })
        .await??
    {
        Some(task) => Ok(HttpResponse::Ok().json(task)),
        None => Err(ApiError::TaskNotFound(task_id)),
    }
}

async fn retry_task(
    _admin: Admin,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let priority = state
        .queue
        .send(Retry {
            task_id: task_id.clone(),
            by: "admin".into(),
        })
        .await?
        .map_err(|e| queue_error(&task_id, e))?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "requeued",
        "task_id": task_id,
        "priority": priority,
    })))
}

async fn cancel_task(
    _admin: Admin,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let previous = state
        .queue
        .send(Cancel {
            task_id: task_id.clone(),
            by: "admin".into(),
        })
        .await?
        .map_err(|e| queue_error(&task_id, e))?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "cancelled",
        "task_id": task_id,
        "previous_status": previous.as_str(),
    })))
}

async fn list_agents(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let views = state
        .presence
        .send(ListAgents { online_only: false })
        .await?;
    let agents: Vec<_> = views.iter().map(|v| v.info(true)).collect();
    Ok(HttpResponse::Ok().json(json!({ "agents": agents })))
}

fn state_json(v: &crate::fsm::AgentView) -> Value {
    json!({
        "agent_id": v.agent_id,
        "fsm_state": v.fsm_state.as_str(),
        "current_task_id": v.current_task_id,
        "generation": v.generation,
        "flags": v.flags,
        "last_state_change": v.last_state_change,
        "connected_at": v.connected_at,
        "capabilities": v.capabilities,
    })
}

async fn agent_states(
    _caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let views = state
        .presence
        .send(ListAgents { online_only: false })
        .await?;
    let agents: Vec<Value> = views.iter().map(state_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "agents": agents })))
}

async fn agent_state(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    match state.presence.send(AgentState { agent_id }).await? {
        Some(v) => Ok(HttpResponse::Ok().json(state_json(&v))),
        None => Err(ApiError::NotFound),
    }
}

async fn issue_token(
    _admin: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, &[agent_id_field(), CAPABILITIES_FIELD])?;
    let agent_id = obj
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let caps = str_list(&obj, "capabilities");
    let (token, record) = state
        .tokens
        .issue(&agent_id, caps)
        .await
        .map_err(|e| issue_error(&agent_id, e))?;
    tracing::info!(agent_id = %agent_id, "agent token issued");
    Ok(HttpResponse::Created().json(json!({
        "agent_id": record.agent_id,
        "token": token,
        "token_prefix": record.token_prefix,
        "created_at": record.created_at,
        "capabilities": record.capabilities,
    })))
}

fn issue_error(agent_id: &str, e: IssueError) -> ApiError {
    match e {
        IssueError::AlreadyExists => ApiError::AlreadyExists {
            what: "agent",
            id: agent_id.to_string(),
        },
        IssueError::InvalidInvite => ApiError::InvalidInvite,
        IssueError::Store(e) => e.into(),
    }
}

/// Parses a JSON object body against `fields`.
fn object_body(body: &[u8], fields: &[Field]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let Value::Object(obj) = parse_json(body)? else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "expected a JSON object",
        )]));
    };
    let errors = check_fields(&obj, fields);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(obj)
}

fn str_list(obj: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn agent_id_field() -> Field {
    Field {
        name: "agent_id",
        kind: Kind::Str {
            max: 128,
            non_empty: true,
        },
        required: true,
    }
}

const CAPABILITIES_FIELD: Field = Field {
    name: "capabilities",
    kind: Kind::StrList,
    required: false,
};

/// `POST /admin/invites`: a one-time invite and the join command that uses it.
async fn create_invite(
    _admin: Admin,
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let ttl = Field {
        name: "ttl_hours",
        kind: Kind::UInt,
        required: false,
    };
    let obj = object_body(&body, &[agent_id_field(), CAPABILITIES_FIELD, ttl])?;
    let agent_id = obj
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let hours = match obj.get("ttl_hours").and_then(Value::as_u64) {
        None => state.config.invite_ttl_hours,
        Some(h) if (1..=24 * 365).contains(&h) => h,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "ttl_hours",
                "invalid_value",
                "must be between 1 and 8760",
            )]))
        }
    };
    let caps = str_list(&obj, "capabilities");
    let tokens = state.tokens.clone();
    let (code, record) = web::block(move || {
        tokens.invite_now(&agent_id, caps, (hours as i64).saturating_mul(3_600_000))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    let hub_url = public_url(&state, &req);
    tracing::info!(agent_id = %record.agent_id, "invite created");
    Ok(HttpResponse::Created().json(json!({
        "invite": code,
        "agent_id": record.agent_id,
        "capabilities": record.capabilities,
        "expires_at": record.expires_at,
        "command": join_command(&hub_url, &record.agent_id, &code, &record.capabilities),
    })))
}

/// The hub's URL as agents should use it: the configured public URL, else the
/// address this request reached.
fn public_url(state: &HubState, req: &HttpRequest) -> String {
    match &state.config.public_url {
        Some(_) => state.config.hub_url(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// `POST /api/onboard/register`: an invite (or the admin token, or open
/// registration) buys the agent its token.
async fn register(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let invite = Field {
        name: "invite",
        kind: Kind::Str {
            max: 256,
            non_empty: true,
        },
        required: false,
    };
    let obj = object_body(&body, &[agent_id_field(), invite, CAPABILITIES_FIELD])?;
    let agent_id = obj
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let issued = match obj.get("invite").and_then(Value::as_str) {
        Some(code) => state.tokens.redeem(&agent_id, code).await,
        None => {
            let admin = matches!(bearer(&req), Ok(Caller(Principal::Admin)));
            if !admin && !state.config.open_registration {
                return Err(ApiError::InvalidInvite);
            }
            let caps = str_list(&obj, "capabilities");
            state.tokens.issue(&agent_id, caps).await
        }
    };
    let (token, record) = issued.map_err(|e| issue_error(&agent_id, e))?;
    tracing::info!(agent_id = %agent_id, "agent registered");
    let api = public_url(&state, &req);
    let ws = format!(
        "{}/ws",
        api.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    Ok(HttpResponse::Created().json(json!({
        "agent_id": record.agent_id,
        "token": token,
        "capabilities": record.capabilities,
        "hub_ws_url": ws,
        "hub_api_url": api,
        "default_repo": state.config.default_repo,
    })))
}

async fn list_tokens(_admin: Admin, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let tokens: Vec<Value> = state
        .tokens
        .list()?
        .into_iter()
        .map(|r| {
            json!({
                "agent_id": r.agent_id,
                "token_prefix": r.token_prefix,
                "created_at": r.created_at,
                "capabilities": r.capabilities,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

async fn revoke_token(
    _admin: Admin,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    if !state.tokens.revoke(&agent_id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(agent_id = %agent_id, "agent token revoked");
    state.presence.do_send(RevokeAgent {
        agent_id: agent_id.clone(),
    });
    Ok(HttpResponse::Ok().json(json!({"status": "revoked", "agent_id": agent_id})))
}
