//! The API described by itself: `GET /api/schemas` (every WebSocket frame and HTTP
//! route with its body and query schema, machine-readable) and `GET /api/openapi.json`
//! (OpenAPI 3.0 for the HTTP API). Bodies are described by the very field lists the
//! handlers validate with, so the description cannot drift from the validation.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::protocol::{client_frame_schemas, object_schema, Field, PROTOCOL_VERSION};

mod catalog;
mod people;
use catalog::catalog;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/schemas", web::get().to(schemas))
        .route("/api/openapi.json", web::get().to(openapi_route));
}

/// Who may call a route.
#[derive(Clone, Copy)]
enum Auth {
    Public,
    /// An agent token or the admin token.
    Token,
    Admin,
    /// The admin or a coordinator (PROTOCOL.md 6.25).
    Steer,
    /// The admin, a coordinator or an observer.
    Watch,
    /// The admin, a coordinator, an observer, or `metrics_token`.
    AdminOrScrape,
}

impl Auth {
    fn as_str(self) -> &'static str {
        match self {
            Auth::Public => "none",
            Auth::Token => "agent_or_admin",
            Auth::Admin => "admin",
            Auth::Steer => "admin_or_coordinator",
            Auth::Watch => "admin_coordinator_or_observer",
            Auth::AdminOrScrape => "watcher_or_metrics_token",
        }
    }
}

enum BodyDoc {
    None,
    Fields(&'static [Field]),
    Schema(fn() -> Value),
}

struct Route {
    method: &'static str,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
    body: BodyDoc,
    /// (name, JSON type, description)
    query: &'static [(&'static str, &'static str, &'static str)],
}

/// The event log's kinds the schema documents (ext), with what each records.
const EVENT_KINDS: &[(&str, &str)] = &[
    ("scope_waiting", "a queued task waits for a claim on overlapping paths (details.holder_task_id, holder_agent_id)"),
    ("scope_granted", "a reservation was granted (details.reservation_id, repo, paths, mode, expires_at)"),
    ("scope_conflict", "a reservation was refused: details.holder names who holds the overlap"),
    ("scope_renewed", "a reservation's expiry moved (details.expires_at)"),
    ("scope_released", "a reservation ended (details.reason: released, expired or task_ended)"),
    ("usage_paused", "an agent reported its provider's usage limit: its credential group is paused (details.credential_group, until, task_id, reason)"),
    ("usage_resumed", "a usage-limit pause ended (actor hub at its time, or the operator; details.early)"),
    ("usage_limited", "task history: the holder handed the task back for a usage limit (no retry spent)"),
    ("concurrency_limit_set", "an operator capped a concurrency key (details.key, limit, previous_limit)"),
    ("concurrency_limit_removed", "an operator removed a key's cap (details.key, previous_limit)"),
    ("agent_connected", "an agent identified (details.name, capabilities, slots granted, reserve_slot_for_standing)"),
    ("input_required", "the holder asked a question and waits (details.question_id, question, options, default, timeout_at)"),
    ("answered", "the question was answered (actor: who; hub when its default applied at the timeout; details.question_id, answer)"),
];

fn body_schema(body: &BodyDoc) -> Option<Value> {
    match body {
        BodyDoc::None => None,
        BodyDoc::Fields(fields) => Some(object_schema(fields)),
        BodyDoc::Schema(make) => Some(make()),
    }
}

fn query_schema(query: &[(&str, &str, &str)]) -> Value {
    let props: Map<String, Value> = query
        .iter()
        .map(|(n, t, d)| (n.to_string(), json!({"type": t, "description": d})))
        .collect();
    json!({"type": "object", "properties": props})
}

/// The dashboard socket's client frames (PROTOCOL.md section 4).
fn dashboard_frames() -> Value {
    let id = |name: &str| {
        json!({"type": "object", "required": ["type", name], "properties": {
            "type": {"type": "string"},
            name: {"type": "string", "minLength": 1, "maxLength": 256}}})
    };
    json!({
        "path": "/ws/dashboard",
        "client_frames": {
            "request_snapshot": {"type": "object", "required": ["type"]},
            "retry_task": id("task_id"),
            "cancel_task": id("task_id"),
            "acknowledge_alert": id("rule_id"),
        },
        "server_frames": ["snapshot", "events", "retry_result", "cancel_result", "alert_ack_result", "error"],
        "max_frame_bytes": 65536,
    })
}

/// Every schema, machine-readable.
pub(super) fn describe() -> Value {
    let http: Vec<Value> = catalog()
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "auth": r.auth.as_str(),
                "summary": r.summary,
                "body": body_schema(&r.body),
                "query": (!r.query.is_empty()).then(|| query_schema(r.query)),
            })
        })
        .collect();
    json!({
        "protocol_version": PROTOCOL_VERSION,
        "websocket": {
            "path": "/ws",
            "client_frames": client_frame_schemas(),
            "max_frame_bytes_default": 1_048_576,
        },
        "dashboard_websocket": dashboard_frames(),
        "http": http,
        "event_kinds": event_kinds(),
        "errors": {
            "validation_failed": {"status": 422, "body": {"error": "validation_failed",
                "errors": [{"field": "string", "error": "required|wrong_type|too_long|invalid_value|unknown_message_type", "detail": "string"}]}},
            "unauthorized": {"status": 401}, "admin_only": {"status": 403},
            "read_only": {"status": 403, "detail": "an observer's token on a route that changes something"},
            "not_found": {"status": 404},
            "rate_limited": {"status": 429, "body": {"error": "rate_limited", "retry_after_ms": "integer", "tier": "light|normal|heavy"}},
            "scope_conflict": {"status": 409, "body": {"error": "scope_conflict", "status": "conflict",
                "holder": {"agent_id": "string", "task_id": "string?", "reservation_id": "string?", "repo": "string", "paths": ["string"]}}},
            "reservation_not_found": {"status": 404}, "not_holder": {"status": 403},
            "task_not_held": {"status": 409}, "too_many_reservations": {"status": 409},
        },
    })
}

/// The event-log kinds the schema documents (ext).
fn event_kinds() -> Value {
    EVENT_KINDS
        .iter()
        .map(|(k, d)| (k.to_string(), Value::from(*d)))
        .collect::<Map<String, Value>>()
        .into()
}

/// The HTTP API as OpenAPI 3.0.
pub(super) fn openapi() -> Value {
    let mut paths = Map::new();
    for r in catalog() {
        let mut op = json!({
            "summary": r.summary,
            "x-auth": r.auth.as_str(),
            "responses": {
                "200": {"description": "OK"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "422": {"$ref": "#/components/responses/ValidationFailed"},
                "429": {"$ref": "#/components/responses/RateLimited"},
            },
        });
        if !matches!(r.auth, Auth::Public) {
            op["security"] = json!([{"bearer": []}]);
        }
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|(n, t, d)| {
            json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": t}})
        }));
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(schema) = body_schema(&r.body) {
            op["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": schema}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "AgentCom hub", "version": env!("CARGO_PKG_VERSION"),
                 "description": format!("Wire protocol {PROTOCOL_VERSION}; WebSocket frames: GET /api/schemas")},
        "paths": paths,
        "x-event-kinds": event_kinds(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Unauthorized": {"description": "no or unknown token",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}, "hint": {"type": "string"}}}}}},
                "ValidationFailed": {"description": "the body or a query parameter breaks its schema",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "error": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object",
                        "properties": {"field": {"type": "string"}, "error": {"type": "string"}, "detail": {"type": "string"}}}}}}}}},
                "RateLimited": {"description": "over the caller's limit; see retry-after",
                    "headers": {"retry-after": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "error": {"type": "string"}, "retry_after_ms": {"type": "integer"}, "tier": {"type": "string"}}}}}},
            },
        },
    })
}

async fn schemas() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(describe()))
}

async fn openapi_route() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(openapi()))
}
