//! Rate limits over HTTP: the middleware that spends a caller's HTTP bucket on every
//! request (PROTOCOL.md section 5), and the admin routes for overrides and the
//! whitelist.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde_json::{json, Value};

use super::{bearer, object_body, parse_json, validated, Admin, Caller, Watch};
use crate::agents::auth::Principal;
use crate::agents::ratelimit::{duration_ms, Decision, Override, Tier, Transport, MAX_PER_MINUTE};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::ops::telemetry::Counter;
use crate::protocol::{opt, Field, FieldError, Kind};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/rate-limits", web::get().to(overview))
        .route(
            "/api/admin/rate-limits/whitelist",
            web::get().to(get_whitelist),
        )
        .route(
            "/api/admin/rate-limits/whitelist",
            web::put().to(put_whitelist),
        )
        .route(
            "/api/admin/rate-limits/{agent_id}",
            web::get().to(get_agent),
        )
        .route(
            "/api/admin/rate-limits/{agent_id}",
            web::put().to(put_agent),
        )
        .route(
            "/api/admin/rate-limits/{agent_id}",
            web::delete().to(delete_agent),
        );
}

/// The tier of an HTTP request: heavy for the routes that create things others
/// must store, light for reads, normal for the rest.
fn tier_of(method: &Method, path: &str) -> Tier {
    let heavy = method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/api/tasks" | "/api/channels" | "/api/onboard/register"
        );
    if heavy {
        Tier::Heavy
    } else if method == Method::GET {
        Tier::Light
    } else {
        Tier::Normal
    }
}

/// Spends one action of the caller's HTTP bucket; a caller over its limit gets 429
/// with `retry-after`. The admin is not limited (the operator must always be able
/// to act); agents are keyed by agent id, callers without a valid token by address.
/// The authenticated caller is kept in the request for the handler.
pub(crate) async fn limit_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<HubState>>().cloned();
    // The agent socket's upgrade is not an HTTP action: a fleet (re)connecting
    // from one address must not be refused; its frames have their own buckets.
    let Some(state) = state.filter(|_| req.path() != "/ws") else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let caller = bearer(req.request()).ok();
    let key = match caller.as_ref().map(|c| &c.0) {
        Some(Principal::Admin) => None,
        Some(other) => Some(other.id().to_string()),
        None => Some(format!(
            "ip:{}",
            req.peer_addr()
                .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string())
        )),
    };
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    if let Some(key) = key {
        let tier = tier_of(req.method(), req.path());
        if let Decision::Denied { tier, retry_after } =
            state.limits.check(&key, Transport::Http, tier)
        {
            tracing::info!(caller = %key, tier = tier.as_str(), path = req.path(), "rate limited");
            let response = ApiError::RateLimited {
                retry_after_ms: duration_ms(retry_after),
                tier: tier.as_str(),
            }
            .error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    let telemetry = state.telemetry.clone();
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    if status >= 400 && status != 429 {
        telemetry.add(Counter::Errors, 1);
    }
    Ok(res.map_into_left_body())
}

fn override_json(o: &Override) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

async fn overview(_: Watch, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.limits.view()))
}

async fn get_agent(
    _: Watch,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    let settings = state.limits.settings();
    let o = settings.overrides.get(&agent_id);
    let defaults = state.limits.defaults();
    let effective = json!({
        "light": o.and_then(|o| o.light).unwrap_or(defaults.light),
        "normal": o.and_then(|o| o.normal).unwrap_or(defaults.normal),
        "heavy": o.and_then(|o| o.heavy).unwrap_or(defaults.heavy),
    });
    Ok(HttpResponse::Ok().json(json!({
        "agent_id": agent_id,
        "limits": effective,
        "override": o.map(override_json),
        "whitelisted": settings.whitelist.contains(&agent_id),
        "limited_for_ms": state.limits.limited_now().get(&agent_id),
    })))
}

pub(crate) const OVERRIDE_FIELDS: [Field; 3] = [
    opt("light", Kind::UInt),
    opt("normal", Kind::UInt),
    opt("heavy", Kind::UInt),
];

fn agent_key(agent_id: &str) -> Result<(), ApiError> {
    if agent_id.is_empty() || agent_id.chars().count() > 200 {
        return Err(ApiError::Validation(vec![FieldError::new(
            "agent_id",
            "invalid_value",
            "must be 1 to 200 characters",
        )]));
    }
    Ok(())
}

async fn put_agent(
    _: Admin,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    agent_key(&agent_id)?;
    let obj = object_body(&body, &OVERRIDE_FIELDS)?;
    if let Some(unknown) = obj.keys().find(|k| Tier::parse(k).is_none()) {
        return Err(ApiError::Validation(vec![FieldError::new(
            unknown,
            "invalid_value",
            "unknown tier (light, normal, heavy)",
        )]));
    }
    let o: Override = serde_json::from_value(Value::Object(obj)).map_err(|_| {
        ApiError::Validation(vec![FieldError::new(
            "",
            "invalid_value",
            format!("actions per minute, 1 to {MAX_PER_MINUTE}"),
        )])
    })?;
    validated(&o)?;
    if o == Override::default() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "required",
            "set at least one of light, normal, heavy",
        )]));
    }
    state.limits.set_override(&agent_id, o).await?;
    tracing::info!(agent_id = %agent_id, "rate-limit override set");
    Ok(HttpResponse::Ok().json(json!({
        "status": "updated",
        "agent_id": agent_id,
        "override": override_json(&o),
    })))
}

async fn delete_agent(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    if !state.limits.remove_override(&agent_id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(agent_id = %agent_id, "rate-limit override removed");
    Ok(HttpResponse::Ok().json(json!({"status": "removed", "agent_id": agent_id})))
}

async fn get_whitelist(_: Watch, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"whitelist": state.limits.settings().whitelist})))
}

async fn put_whitelist(
    _: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let Value::Object(obj) = parse_json(&body)? else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "expected a JSON object",
        )]));
    };
    let Some(Value::Array(items)) = obj.get("agents") else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "agents",
            if obj.contains_key("agents") {
                "wrong_type"
            } else {
                "required"
            },
            "a list of agent ids",
        )]));
    };
    let mut keys = std::collections::BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 200 => {
                keys.insert(s.to_string());
            }
            _ => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    &format!("agents[{i}]"),
                    "invalid_value",
                    "an agent id of 1 to 200 characters",
                )]))
            }
        }
    }
    if keys.len() > 10_000 {
        return Err(ApiError::Validation(vec![FieldError::new(
            "agents",
            "too_long",
            "at most 10000 entries",
        )]));
    }
    state.limits.set_whitelist(keys.clone()).await?;
    tracing::info!(entries = keys.len(), "rate-limit whitelist replaced");
    Ok(HttpResponse::Ok().json(json!({"status": "updated", "whitelist": keys})))
}

/// The caller the middleware already authenticated, if any.
pub(crate) fn cached_caller(req: &actix_web::HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}
