//! Agent routes: presence and FSM state, tokens, invites and onboarding
//! registration.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{bearer, object_body, str_list, Admin, Caller, AGENT_ID_FIELD, CAPABILITIES_FIELD};
use crate::agents::auth::{join_command, IssueError, Principal, Role, TokenTerms};
use crate::agents::presence::{AgentState, ListAgents, RevokeAgent, SetAgentStatus};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_slot_count, id, opt, req, text, Field, FieldError, Kind};

/// Body of `POST /admin/tokens`.
pub(crate) const TOKEN_FIELDS: &[Field] = &[
    AGENT_ID_FIELD,
    CAPABILITIES_FIELD,
    GROUP_FIELD,
    SLOTS_FIELD,
    ROLE_FIELD,
];
/// Body of `POST /admin/invites`.
pub(crate) const INVITE_FIELDS: &[Field] = &[
    AGENT_ID_FIELD,
    CAPABILITIES_FIELD,
    opt("ttl_hours", Kind::UInt),
    GROUP_FIELD,
    SLOTS_FIELD,
    ROLE_FIELD,
];
/// What the token may do (ext, PROTOCOL.md 6.25): agent, coordinator, observer.
const ROLE_FIELD: Field = opt("role", id(16));
/// Agents sharing a provider account (ext, PROTOCOL.md 6.23).
const GROUP_FIELD: Field = opt("credential_group", id(128));
/// How many tasks the agent may run at once (ext, PROTOCOL.md 6.24).
const SLOTS_FIELD: Field = opt("slots", Kind::UInt);

/// The credential group and slots of a token or invite body (its types
/// checked already): a slot count out of range is refused.
fn terms_in(obj: &serde_json::Map<String, Value>) -> Result<TokenTerms, ApiError> {
    let slots = obj.get("slots").and_then(Value::as_u64);
    if let Some(e) = slots.and_then(|n| check_slot_count("slots", n)) {
        return Err(ApiError::Validation(vec![e]));
    }
    let role = match obj.get("role").and_then(Value::as_str) {
        None => Role::Agent,
        Some(r) => Role::parse_issuable(r).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "role",
                "invalid_value",
                "one of agent, coordinator, observer",
            )])
        })?,
    };
    Ok(TokenTerms {
        credential_group: obj
            .get("credential_group")
            .and_then(Value::as_str)
            .map(str::to_string),
        slots: slots.and_then(|n| u32::try_from(n).ok()),
        role,
    })
}
/// Body of `POST /api/onboard/register`.
pub(crate) const REGISTER_FIELDS: &[Field] =
    &[AGENT_ID_FIELD, opt("invite", id(256)), CAPABILITIES_FIELD];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/agents", web::get().to(list_agents))
        .route("/api/agents/states", web::get().to(agent_states))
        .route("/api/agents/{id}/state", web::get().to(agent_state))
        .route("/api/agents/{id}/status", web::put().to(set_status))
        .route("/api/whoami", web::get().to(whoami))
        .route("/admin/tokens", web::post().to(issue_token))
        .route("/admin/tokens", web::get().to(list_tokens))
        .route("/admin/tokens/{agent_id}", web::delete().to(revoke_token))
        .route(
            "/api/agents/{agent_id}/token",
            web::delete().to(revoke_own_token),
        )
        .route("/admin/invites", web::post().to(create_invite))
        .route("/api/onboard/register", web::post().to(register));
}

async fn list_agents(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let views = state
        .presence
        .send(ListAgents { online_only: false })
        .await?;
    let agents: Vec<_> = views.iter().map(|v| v.info(true)).collect();
    Ok(HttpResponse::Ok().json(json!({ "agents": agents })))
}

/// `GET /api/whoami` (ext): whose rights the bearer token carries.
async fn whoami(caller: Caller) -> HttpResponse {
    let role = caller.0.role().as_str();
    match caller.0 {
        Principal::Admin => HttpResponse::Ok().json(json!({"principal": "admin", "role": role})),
        other => HttpResponse::Ok().json(json!({"principal": role, "role": role,
                                                "agent_id": other.id()})),
    }
}

fn state_json(v: &crate::agents::fsm::AgentView) -> Value {
    json!({
        "agent_id": v.agent_id,
        "fsm_state": v.fsm_state.as_str(),
        "current_task_id": v.current().map(|t| &t.task_id),
        "generation": v.current().map(|t| t.generation),
        "running": v.running_json(),
        "slots": v.slots.slots,
        "reserve_slot_for_standing": v.slots.reserve_standing,
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

/// Body of `PUT /api/agents/{id}/status`.
pub(crate) const STATUS_FIELDS: &[Field] = &[req("status", text(256))];

/// `PUT /api/agents/:id/status {status}`: the agent's status line, by the
/// agent itself (its sidecar's `status` command) or a steering token.
async fn set_status(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    let own = caller.0.agent_id() == Some(agent_id.as_str());
    if !own && !caller.0.may_steer() {
        return Err(ApiError::Forbidden);
    }
    let obj = object_body(&body, STATUS_FIELDS)?;
    let status = obj
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if state.tokens.get(&agent_id)?.is_none() {
        return Err(ApiError::NotFound);
    }
    state.presence.do_send(SetAgentStatus {
        agent_id: agent_id.clone(),
        status: status.clone(),
    });
    Ok(HttpResponse::Ok().json(json!({"agent_id": agent_id, "status": status})))
}

async fn issue_token(
    _admin: Admin,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, TOKEN_FIELDS)?;
    let agent_id = obj
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let caps = str_list(&obj, "capabilities");
    let terms = terms_in(&obj)?;
    let (token, record) = state
        .tokens
        .issue(&agent_id, caps, terms)
        .await
        .map_err(|e| issue_error(&agent_id, e))?;
    tracing::info!(agent_id = %agent_id, "agent token issued");
    Ok(HttpResponse::Created().json(json!({
        "agent_id": record.agent_id,
        "token": token,
        "token_prefix": record.token_prefix,
        "created_at": record.created_at,
        "capabilities": record.capabilities,
        "credential_group": record.credential_group,
        "slots": record.slots,
        "role": record.role.as_str(),
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

/// `POST /admin/invites`: a one-time invite and the join command that uses it.
async fn create_invite(
    _admin: Admin,
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, INVITE_FIELDS)?;
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
    let terms = terms_in(&obj)?;
    let tokens = state.tokens.clone();
    let (code, record) = web::block(move || {
        let ttl = (hours as i64).saturating_mul(3_600_000);
        tokens.invite_with_now(&agent_id, caps, terms, ttl)
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))??;
    let hub_url = public_url(&state, &req);
    tracing::info!(agent_id = %record.agent_id, "invite created");
    Ok(HttpResponse::Created().json(json!({
        "invite": code,
        "agent_id": record.agent_id,
        "capabilities": record.capabilities,
        "credential_group": record.credential_group,
        "slots": record.slots,
        "role": record.role.as_str(),
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
    let obj = object_body(&body, REGISTER_FIELDS)?;
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
            state
                .tokens
                .issue(&agent_id, caps, TokenTerms::default())
                .await
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
        // Hubs on one database (ext, #22): the sidecar follows the active one.
        "hub_urls": state.config.hub_urls,
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
                "credential_group": r.credential_group,
                "slots": r.slots,
                "role": r.role.as_str(),
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
    revoke(path.into_inner(), &state).await
}

/// An agent gives up its own token (`agentcom-sidecar remove --revoke`); the
/// admin may use it for any agent.
async fn revoke_own_token(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    let own = caller.0.agent_id() == Some(agent_id.as_str());
    if caller.0 != Principal::Admin && !own {
        return Err(ApiError::Forbidden);
    }
    revoke(agent_id, &state).await
}

async fn revoke(agent_id: String, state: &HubState) -> Result<HttpResponse, ApiError> {
    if !state.tokens.revoke(&agent_id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(agent_id = %agent_id, "agent token revoked");
    state.presence.do_send(RevokeAgent {
        agent_id: agent_id.clone(),
    });
    Ok(HttpResponse::Ok().json(json!({"status": "revoked", "agent_id": agent_id})))
}
