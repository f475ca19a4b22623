//! The dashboard's routes: the page's files, login and logout (a session cookie,
//! HttpOnly and SameSite=Strict), and the dashboard socket (PROTOCOL.md section 4).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::json;

use super::{object_body, query_map};
use crate::agents::auth::Principal;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{id, req, Field};
use crate::util::now_ms;
use crate::web::dashboard::{DashboardSocket, ASSETS, SESSION_TTL_MS};

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "agentcom_session";
/// The header every state-changing request of the page carries (see `bearer`).
pub(super) const DASHBOARD_HEADER: &str = "x-agentcom-dashboard";
/// Largest client frame on the dashboard socket.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The page's content security policy: it may connect to this hub, and read
/// `/health` of the other hubs on the same database (`hub_urls`, checked to
/// hold only URL characters when the config loaded).
fn csp(hub_urls: &[String]) -> String {
    let mut connect = String::from("'self'");
    for url in hub_urls {
        connect.push(' ');
        connect.push_str(url);
    }
    format!("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(index))
        .route("/dashboard/", web::get().to(index))
        .route("/dashboard/session", web::get().to(session))
        .route("/dashboard/login", web::post().to(login))
        .route("/dashboard/logout", web::post().to(logout))
        .route("/dashboard/{file}", web::get().to(asset))
        .route("/ws/dashboard", web::get().to(socket));
}

fn file(name: &str, hub_urls: &[String]) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, *content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp(hub_urls)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(*body))
}

async fn index(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    file("index.html", &state.config.hub_urls)
}

async fn asset(
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    file(&path.into_inner(), &state.config.hub_urls)
}

/// Whose live login the request's session cookie is, if any.
pub(crate) fn session_of(
    req: &HttpRequest,
    state: &HubState,
) -> Result<Option<Principal>, ApiError> {
    match req.cookie(SESSION_COOKIE) {
        Some(c) => Ok(state.sessions.principal_of(c.value(), now_ms())?),
        None => Ok(None),
    }
}

/// `GET /dashboard/session`: whether the page is logged in, and as whom (the
/// page shows only the controls the role may use).
async fn session(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let who = session_of(&req, &state)?;
    Ok(HttpResponse::Ok().json(json!({
        "authenticated": who.is_some(),
        "role": who.as_ref().map(|p| p.role().as_str()),
        "name": who.as_ref().map(|p| p.id().to_string()),
    })))
}

pub(crate) const TOKEN_FIELD: Field = req("token", id(256));

fn session_cookie(req: &HttpRequest, value: String, max_age_ms: i64) -> Cookie<'static> {
    let mut cookie = Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::milliseconds(max_age_ms))
        .finish();
    if req.connection_info().scheme() == "https" {
        cookie.set_secure(true);
    }
    cookie
}

/// `POST /dashboard/login {"token"}`: the admin token, or a coordinator's or
/// observer's, starts a session with its rights; an agent's token is refused
/// (403), an unknown one too (401).
async fn login(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, &[TOKEN_FIELD])?;
    let token = obj
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    let who = match state.tokens.authenticate(token)? {
        Some(p) if p.may_watch() => p,
        Some(_) => return Err(ApiError::AdminOnly),
        None => return Err(ApiError::Unauthorized),
    };
    let session = state.sessions.open(now_ms(), &who, token).await?;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&req, session, SESSION_TTL_MS))
        .json(json!({"status": "ok", "expires_in_ms": SESSION_TTL_MS,
                     "role": who.role().as_str(), "name": who.id()})))
}

async fn logout(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        state.sessions.close(c.value()).await?;
    }
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&req, String::new(), 0))
        .json(json!({"status": "logged_out"})))
}

/// A socket opened by a page of another site must not ride on the cookie.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Not a browser: only the cookie's holder could send it.
        return true;
    };
    let host = req.connection_info().host().to_string();
    let origin = origin.to_str().unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host))
}

/// `GET /ws/dashboard`: the admin token as `?token=`, or the session cookie.
async fn socket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<HubState>,
) -> Result<HttpResponse, actix_web::Error> {
    let query = query_map(&req)?;
    let who = match query.get("token") {
        Some(token) => match state.tokens.authenticate(token).map_err(ApiError::from)? {
            Some(p) if p.may_watch() => p,
            Some(_) => return Err(ApiError::AdminOnly.into()),
            None => return Err(ApiError::Unauthorized.into()),
        },
        None => {
            let Some(who) = session_of(&req, &state)? else {
                return Err(ApiError::Unauthorized.into());
            };
            if !same_origin(&req) {
                return Err(ApiError::OriginRefused.into());
            }
            who
        }
    };
    let socket = DashboardSocket::new(state.dashboard.clone(), who);
    ws::WsResponseBuilder::new(socket, &req, stream)
        .frame_size(MAX_FRAME_BYTES)
        .start()
}
