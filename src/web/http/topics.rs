//! Topic events (ext, PROTOCOL.md 6.30): `POST /api/topics/:topic/events`
//! (any token that may write: the event's publisher is its name), `GET
//! /api/topics/:topic/events?since&cursor&limit` and `GET /api/topics`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{object_body, parse_json, query_map, query_uint, Caller, Steer};
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_topic, parse_publish, FieldError, MAX_EVENT_PAGE, PUBLISH_FIELDS};
use crate::protocol::{parse_subscription, parse_task_spec, MAX_SUBSCRIPTIONS};
use crate::topics::{
    PublishEvent, SubError, Subscribe, Subscriptions, TopicList, TopicPage, Unsubscribe,
};

/// A page's default size.
const DEFAULT_PAGE: usize = 100;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/subscriptions", web::get().to(subscriptions))
        .route("/api/subscriptions", web::post().to(subscribe))
        .route("/api/subscriptions/{id}", web::delete().to(unsubscribe))
        .route("/api/topics", web::get().to(list))
        .route("/api/topics/{topic}/events", web::post().to(publish))
        .route("/api/topics/{topic}/events", web::get().to(page));
}

async fn publish(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, PUBLISH_FIELDS)?;
    let publish = parse_publish(&path.into_inner(), &obj).map_err(ApiError::Validation)?;
    let (event, existing) = state
        .topics
        .send(PublishEvent {
            publish,
            by: caller.id(),
        })
        .await??;
    let status = if existing {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(json!({"event": event, "existing": existing})))
}

async fn page(
    _caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let topic = path.into_inner();
    check_topic(&topic).map_err(|e| ApiError::Validation(vec![e]))?;
    let q = query_map(&req)?;
    if let Some(k) = q
        .keys()
        .find(|k| !["since", "cursor", "limit", "newest"].contains(&k.as_str()))
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            k,
            "unknown_field",
            "expected since, cursor, limit or newest",
        )]));
    }
    let newest = match q.get("newest").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "newest",
                "invalid_value",
                "true or false",
            )]))
        }
    };
    let since = query_uint(&q, "since")?.map(|s| s.min(i64::MAX as u64) as i64);
    let cursor = query_uint(&q, "cursor")?;
    let limit = match query_uint(&q, "limit")? {
        None => DEFAULT_PAGE,
        Some(l) if (1..=MAX_EVENT_PAGE as u64).contains(&l) => l as usize,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "invalid_value",
                format!("must be between 1 and {MAX_EVENT_PAGE}"),
            )]))
        }
    };
    let page: Value = state
        .topics
        .send(TopicPage {
            topic,
            since,
            cursor,
            limit,
            newest,
        })
        .await??;
    Ok(HttpResponse::Ok().json(page))
}

async fn list(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.topics.send(TopicList).await?))
}

fn sub_error(e: SubError) -> ApiError {
    match e {
        SubError::NotFound => ApiError::NotFound,
        SubError::TooMany => ApiError::Validation(vec![FieldError::new(
            "topic",
            "invalid_value",
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions"),
        )]),
        SubError::Store(e) => e.into(),
    }
}

/// `POST /api/subscriptions {topic, filter?, task | deliver}` (admin or
/// coordinator): from now on, every matching event of the topic creates a
/// task from the template, or is delivered to an agent or a channel.
async fn subscribe(
    caller: Caller,
    _steer: Steer,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let Value::Object(obj) = parse_json(&body)? else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            "wrong_type",
            "the body must be a JSON object",
        )]));
    };
    let template_errors = |t: &serde_json::Map<String, Value>| {
        parse_task_spec(&Value::Object(t.clone()), "")
            .err()
            .unwrap_or_default()
    };
    let subscription = parse_subscription(&obj, template_errors).map_err(ApiError::Validation)?;
    let created = state
        .topics
        .send(Subscribe {
            subscription,
            by: caller.id(),
        })
        .await?
        .map_err(sub_error)?;
    Ok(HttpResponse::Created().json(created))
}

async fn subscriptions(
    _caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let subs = state.topics.send(Subscriptions).await?;
    Ok(HttpResponse::Ok().json(json!({"count": subs.len(), "subscriptions": subs})))
}

async fn unsubscribe(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    state
        .topics
        .send(Unsubscribe {
            id: id.clone(),
            by: caller.id(),
        })
        .await?
        .map_err(sub_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "deleted", "id": id})))
}
