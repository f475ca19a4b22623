//! HTTP routes (PROTOCOL.md section 3) and the WebSocket upgrade.
//!
//! Handlers parse and validate input (bodies are read as bytes and parsed here so
//! every failure is a structured `ApiError`), check the caller, and ask the owning
//! actor. They hold no state of their own.
//!
//! Architecture invariant: no handler changes a task or an agent directly; the
//! status-code mapping lives only in `error::ApiError`.

mod admin;
mod agents;
mod approvals;
mod budgets;
mod concurrency;
mod context;
mod dashboard;
mod limits;
mod messaging;
mod operator;
mod ops;
mod questions;
mod reservations;
mod schemas;
mod standing;
mod tasks;
mod topics;
mod usage;

pub(crate) use limits::limit_requests;

use std::collections::HashMap;
use std::future::{ready, Ready};

use actix_web::dev::ServiceResponse;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::{json, Value};

use crate::agents::auth::Principal;
use crate::agents::presence::OnlineCount;
use crate::agents::session::AgentSession;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_fields, id, opt, req, Field, FieldError, Kind};

/// The authenticated caller of a route that needs a bearer token.
#[derive(Clone)]
pub(crate) struct Caller(pub Principal);

impl Caller {
    fn id(&self) -> String {
        self.0.id().to_string()
    }
}

pub(crate) fn bearer(req: &HttpRequest) -> Result<Caller, ApiError> {
    // The rate-limit middleware authenticated the request already.
    if let Some(caller) = limits::cached_caller(req) {
        return Ok(caller);
    }
    let state = req
        .app_data::<web::Data<HubState>>()
        .ok_or_else(|| ApiError::Unavailable("hub state missing".into()))?;
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        // The dashboard's session cookie stands for the token it began with. A
        // state-changing request must also carry the page's header, which a page
        // of another site cannot add (a CSRF guard besides SameSite=Strict).
        let Some(who) = dashboard::session_of(req, state)? else {
            return Err(ApiError::Unauthorized);
        };
        let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
        if !safe && !req.headers().contains_key(dashboard::DASHBOARD_HEADER) {
            return Err(ApiError::DashboardHeaderMissing);
        }
        if who.read_only() && !safe {
            return Err(ApiError::ReadOnly);
        }
        return Ok(Caller(who));
    };
    let caller = match state.tokens.authenticate(token)? {
        Some(p) => p,
        None => return Err(ApiError::Unauthorized),
    };
    // An observer reads only: every route that changes something refuses it.
    let safe = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    if caller.read_only() && !safe {
        return Err(ApiError::ReadOnly);
    }
    Ok(Caller(caller))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req))
    }
}

/// A caller holding the admin token.
pub(crate) struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req).and_then(|c| match c.0 {
            Principal::Admin => Ok(Admin),
            _ => Err(ApiError::AdminOnly),
        }))
    }
}

/// A caller that may steer others' work: the admin or a coordinator (its
/// name is the event-log actor).
pub(crate) struct Steer;

impl FromRequest for Steer {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req).and_then(|c| match c.0.may_steer() {
            true => Ok(Steer),
            // `admin_only`, as v1.1 answers an agent's token here.
            false => Err(ApiError::AdminOnly),
        }))
    }
}

/// A caller that may read what operators read: the admin, a coordinator or an
/// observer.
pub(crate) struct Watch;

impl FromRequest for Watch {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(bearer(req).and_then(|c| match c.0.may_watch() {
            true => Ok(Watch),
            false => Err(ApiError::AdminOnly),
        }))
    }
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

pub(crate) fn query_map(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
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

pub(crate) fn query_uint(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
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

/// Checks a typed body's `validator` rules; each failure becomes a field error of
/// the PROTOCOL.md shape (`invalid_value`, with the rule's message).
pub(crate) fn validated<T: validator::Validate>(value: &T) -> Result<(), ApiError> {
    let Err(report) = value.validate() else {
        return Ok(());
    };
    let mut errors: Vec<FieldError> = report
        .field_errors()
        .into_iter()
        .flat_map(|(field, errs)| {
            let field = if field == "__all__" {
                ""
            } else {
                field.as_ref()
            }
            .to_string();
            errs.iter().map(move |e| {
                let detail = e.message.as_ref().map_or_else(
                    || {
                        let bound = |k: &str| e.params.get(k).map(|v| v.to_string());
                        match (bound("min").or(bound("exclusive_min")), bound("max")) {
                            (Some(lo), Some(hi)) => format!("must be between {lo} and {hi}"),
                            (Some(lo), None) => format!("must be at least {lo}"),
                            (None, Some(hi)) => format!("must be at most {hi}"),
                            (None, None) => e.code.to_string(),
                        }
                    },
                    |m| m.to_string(),
                );
                FieldError::new(&field, "invalid_value", detail)
            })
        })
        .collect();
    errors.sort_by(|a, b| a.field.cmp(&b.field));
    Err(ApiError::Validation(errors))
}

/// Parses a JSON object body against `fields`.
pub(crate) fn object_body(
    body: &[u8],
    fields: &[Field],
) -> Result<serde_json::Map<String, Value>, ApiError> {
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

pub(crate) use crate::protocol::str_list;

pub(crate) const AGENT_ID_FIELD: Field = req("agent_id", id(128));

pub(crate) const CAPABILITIES_FIELD: Field = opt("capabilities", Kind::StrList);

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ws", web::get().to(agent_socket))
        .configure(tasks::routes)
        .configure(operator::routes)
        .configure(standing::routes)
        .configure(agents::routes)
        .configure(messaging::routes)
        .configure(reservations::routes)
        .configure(concurrency::routes)
        .configure(usage::routes)
        .configure(questions::routes)
        .configure(approvals::routes)
        .configure(budgets::routes)
        .configure(topics::routes)
        .configure(context::routes)
        .configure(limits::routes)
        .configure(ops::routes)
        .configure(schemas::routes)
        .configure(admin::routes)
        .configure(dashboard::routes);
}

/// Gives error responses made by the framework itself (an oversized body, a failed
/// WebSocket handshake) the same JSON shape as ours: `{"error": "<snake_case>"}`.
pub(crate) fn json_errors<B: 'static>(
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
pub(crate) async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn health(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let n = state.presence.send(OnlineCount).await?;
    // With Postgres the active hub says so (a standby's own server answers
    // `standby`, see `web::standby`).
    let role = crate::hub::role_of(state.leader_epoch);
    // Readable from any page: a dashboard served by another hub of the same
    // database looks here for the active one.
    Ok(HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .json(json!({
            "status": "ok",
            "service": "agent_com",
            "agents_connected": n,
            "storage": state.config.storage,
            "role": role,
            "epoch": state.leader_epoch,
        })))
}

async fn agent_socket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<HubState>,
) -> Result<HttpResponse, actix_web::Error> {
    let session = AgentSession::new(state.session_deps(), req.peer_addr().map(|a| a.ip()));
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(state.config.max_frame_bytes)
        .start()
}
