//! Messaging routes: direct and broadcast messages, mailboxes, channels, message
//! history, threads and analytics (PROTOCOL.md section 3).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::{object_body, query_map, query_uint, Caller};
use crate::agents::auth::Principal;
use crate::agents::presence::OnlineCount;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::messaging::{
    AckMailbox, ChannelHistory, CreateChannel, GetChannel, ListChannels, MsgError, Publish,
    QueryMessages, ReadMailbox, SendMessage, Subscribe, Thread, ThreadView, Unsubscribe,
};
use crate::ops::analytics::{AgentTotals, Counts, Hourly, Summary};
use crate::protocol::{id, opt, req, text, ChatMessage, Field, FieldError, Kind};
use crate::queue::Stats;
use crate::util::now_ms;

const MAX_QUERY_LIMIT: u64 = 200;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/message", web::post().to(send_message))
        .route("/api/mailbox/{agent_id}", web::get().to(read_mailbox))
        .route("/api/mailbox/{agent_id}/ack", web::post().to(ack_mailbox))
        .route("/api/channels", web::get().to(list_channels))
        .route("/api/channels", web::post().to(create_channel))
        .route("/api/channels/{channel}", web::get().to(get_channel))
        .route(
            "/api/channels/{channel}/subscribe",
            web::post().to(subscribe),
        )
        .route(
            "/api/channels/{channel}/unsubscribe",
            web::post().to(unsubscribe),
        )
        .route("/api/channels/{channel}/publish", web::post().to(publish))
        .route("/api/channels/{channel}/history", web::get().to(history))
        .route("/api/messages", web::get().to(query_messages))
        .route("/api/threads/{id}", web::get().to(thread))
        .route("/api/threads/{id}/replies", web::get().to(replies))
        .route("/api/threads/{id}/root", web::get().to(root))
        .route("/api/analytics/summary", web::get().to(summary))
        .route("/api/analytics/agents", web::get().to(agent_totals))
        .route(
            "/api/analytics/agents/{agent_id}/hourly",
            web::get().to(hourly),
        );
}

fn msg_error(e: MsgError) -> ApiError {
    match e {
        MsgError::RecipientNotFound(a) => ApiError::RecipientNotFound(a),
        MsgError::ChannelNotFound(c) => ApiError::ChannelNotFound(c),
        MsgError::MessageNotFound(id) => ApiError::MessageNotFound(id),
        MsgError::ChannelExists(c) => ApiError::AlreadyExists {
            what: "channel",
            id: c,
        },
        MsgError::TooLarge(max, head) => ApiError::Validation(vec![FieldError::new(
            "payload",
            "too_long",
            format!("at most {max} bytes of JSON"),
        )
        .with_value(head)]),
        MsgError::Store(e) => e.into(),
    }
}

/// Body of `POST /api/message` and channel publish (`type` is the v1.1 name of
/// `message_type`).
pub(crate) const MESSAGE_FIELDS: &[Field] = &[
    req("payload", Kind::Object),
    opt("to", id(128)),
    opt("type", id(64)),
    opt("message_type", id(64)),
    opt("reply_to", id(128)),
];

/// Body of `POST /api/mailbox/:agent_id/ack`.
pub(crate) const ACK_FIELDS: &[Field] = &[req("seq", Kind::UInt)];
/// Body of `POST /api/channels`.
pub(crate) const CHANNEL_FIELDS: &[Field] = &[req("name", id(64)), opt("description", text(1000))];
/// Body of subscribe / unsubscribe when the admin acts for an agent.
pub(crate) const SUBSCRIBER_FIELDS: &[Field] = &[req("agent_id", id(128))];

fn get_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

fn payload(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.get("payload")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn message_type(obj: &Map<String, Value>) -> Option<String> {
    get_str(obj, "message_type").or_else(|| get_str(obj, "type"))
}

fn message_json(seq: Option<u64>, m: &ChatMessage) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let (Some(seq), Value::Object(o)) = (seq, &mut v) {
        o.insert("seq".into(), json!(seq));
    }
    v
}

/// An agent may act only on its own mailbox or subscriptions; the admin on any.
fn check_self(caller: &Caller, agent_id: &str) -> Result<(), ApiError> {
    match &caller.0 {
        Principal::Admin => Ok(()),
        p if p.agent_id() == Some(agent_id) => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

fn limit_param(q: &HashMap<String, String>, default: u64) -> Result<usize, ApiError> {
    match query_uint(q, "limit")? {
        None => Ok(default as usize),
        Some(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "invalid_value",
            format!("must be between 1 and {MAX_QUERY_LIMIT}"),
        )])),
    }
}

async fn send_message(
    caller: Caller,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, MESSAGE_FIELDS)?;
    let id = state
        .messaging
        .send(SendMessage {
            from: caller.id(),
            to: get_str(&obj, "to"),
            message_type: message_type(&obj),
            payload: payload(&obj),
            reply_to: get_str(&obj, "reply_to"),
            id: None,
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "sent", "id": id})))
}

async fn read_mailbox(
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    check_self(&caller, &agent_id)?;
    let since = query_uint(&query_map(&req)?, "since")?.unwrap_or(0);
    let (messages, meta) = state
        .messaging
        .send(ReadMailbox {
            agent_id: agent_id.clone(),
            since,
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "agent_id": agent_id,
        "count": messages.len(),
        "messages": messages,
        "last_seq": meta.last_seq,
        "acked": meta.acked,
        "evicted": meta.evicted,
        "expired": meta.expired,
    })))
}

async fn ack_mailbox(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    check_self(&caller, &agent_id)?;
    let obj = object_body(&body, ACK_FIELDS)?;
    let seq = obj.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let up_to = state
        .messaging
        .send(AckMailbox { agent_id, seq })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "acked", "up_to": up_to})))
}

async fn list_channels(
    _caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channels = state.messaging.send(ListChannels).await?;
    Ok(HttpResponse::Ok().json(json!({"channels": channels})))
}

async fn create_channel(
    caller: Caller,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, CHANNEL_FIELDS)?;
    let info = state
        .messaging
        .send(CreateChannel {
            name: get_str(&obj, "name").unwrap_or_default(),
            description: get_str(&obj, "description").unwrap_or_default(),
            by: caller.id(),
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Created().json(json!({"status": "created", "channel": info})))
}

async fn get_channel(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let (info, subscribers, last_seq) = state
        .messaging
        .send(GetChannel { channel })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "name": info.name,
        "description": info.description,
        "created_at": info.created_at,
        "subscriber_count": info.subscriber_count,
        "subscribers": subscribers,
        "last_seq": last_seq,
    })))
}

/// Who a subscription change is for: the calling agent, or the `agent_id` the
/// admin names in the body.
fn subscriber(caller: &Caller, body: &[u8]) -> Result<String, ApiError> {
    match &caller.0 {
        Principal::Admin => {
            let obj = object_body(body, SUBSCRIBER_FIELDS)?;
            Ok(get_str(&obj, "agent_id").unwrap_or_default())
        }
        p => p.agent_id().map(str::to_string).ok_or(ApiError::Forbidden),
    }
}

async fn subscribe(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let agent_id = subscriber(&caller, &body)?;
    let already = state
        .messaging
        .send(Subscribe {
            channel: channel.clone(),
            agent_id,
        })
        .await?
        .map_err(msg_error)?;
    let mut answer = json!({"status": "subscribed", "channel": channel});
    if already {
        answer["note"] = json!("already_subscribed");
    }
    Ok(HttpResponse::Ok().json(answer))
}

async fn unsubscribe(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let agent_id = subscriber(&caller, &body)?;
    state
        .messaging
        .send(Unsubscribe {
            channel: channel.clone(),
            agent_id,
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({"status": "unsubscribed", "channel": channel})))
}

async fn publish(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let obj = object_body(&body, MESSAGE_FIELDS)?;
    let (seq, id) = state
        .messaging
        .send(Publish {
            channel: channel.clone(),
            from: caller.id(),
            message_type: message_type(&obj),
            payload: payload(&obj),
            reply_to: get_str(&obj, "reply_to"),
            id: None,
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "published",
        "channel": channel,
        "seq": seq,
        "id": id,
    })))
}

async fn history(
    _caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let channel = path.into_inner();
    let q = query_map(&req)?;
    let since = query_uint(&q, "since")?.unwrap_or(0);
    let limit = limit_param(&q, 50)?;
    let messages = state
        .messaging
        .send(ChannelHistory {
            channel: channel.clone(),
            since,
            limit,
        })
        .await?
        .map_err(msg_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "channel": channel,
        "count": messages.len(),
        "messages": messages,
    })))
}

async fn query_messages(
    _caller: Caller,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let q = query_map(&req)?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        Ok(query_uint(&q, name)?.map(|t| t.min(i64::MAX as u64) as i64))
    };
    let query = QueryMessages {
        from: q.get("from").cloned(),
        to: q.get("to").cloned(),
        channel: q.get("channel").cloned(),
        start_time: time("start_time")?,
        end_time: time("end_time")?,
        cursor: query_uint(&q, "cursor")?.unwrap_or(0),
        limit: limit_param(&q, 50)?,
    };
    let (messages, cursor) = state.messaging.send(query).await?.map_err(msg_error)?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|(seq, m)| message_json(Some(*seq), m))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "count": messages.len(),
        "messages": messages,
        "cursor": cursor,
    })))
}

async fn thread_view(
    state: &HubState,
    id: String,
    view: ThreadView,
) -> Result<Vec<ChatMessage>, ApiError> {
    state
        .messaging
        .send(Thread { id, view })
        .await?
        .map_err(msg_error)
}

async fn thread(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let messages = thread_view(&state, path.into_inner(), ThreadView::Thread).await?;
    let root = messages.first().map(|m| m.id.clone());
    Ok(HttpResponse::Ok().json(json!({
        "root_id": root,
        "count": messages.len(),
        "messages": messages,
    })))
}

async fn replies(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let replies = thread_view(&state, id.clone(), ThreadView::Replies).await?;
    Ok(HttpResponse::Ok().json(json!({
        "message_id": id,
        "count": replies.len(),
        "replies": replies,
    })))
}

async fn root(
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let found = thread_view(&state, path.into_inner(), ThreadView::Root).await?;
    Ok(HttpResponse::Ok().json(json!({"root": found.first()})))
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "messages_sent": c.messages_sent,
        "messages_received": c.messages_received,
        "tasks_completed": c.tasks_completed,
        "tasks_failed": c.tasks_failed,
    })
}

async fn summary(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let (total, day, active) = state.analytics.send(Summary { now: now_ms() }).await??;
    let online = state.presence.send(OnlineCount).await?;
    let tasks = state.queue.send(Stats).await?;
    Ok(HttpResponse::Ok().json(json!({
        "window_days": state.config.analytics_retention_days,
        "totals": counts_json(&total),
        "last_24h": counts_json(&day),
        "active_agents_24h": active,
        "agents_online": online,
        "tasks": tasks,
    })))
}

async fn agent_totals(
    _caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let totals = state.analytics.send(AgentTotals).await??;
    let agents: Vec<Value> = totals
        .iter()
        .map(|(agent_id, c)| {
            let mut v = counts_json(c);
            v["agent_id"] = json!(agent_id);
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"agents": agents})))
}

async fn hourly(
    _caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = path.into_inner();
    let window = state.config.analytics_retention_days.saturating_mul(24);
    let hours = match query_uint(&query_map(&req)?, "hours")? {
        None => 24.min(window),
        Some(h) if (1..=window).contains(&h) => h,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "hours",
                "invalid_value",
                format!("must be between 1 and {window}"),
            )]))
        }
    };
    let buckets = state
        .analytics
        .send(Hourly {
            agent_id: agent_id.clone(),
            hours,
            now: now_ms(),
        })
        .await??;
    let hours: Vec<Value> = buckets
        .iter()
        .map(|(start, c)| {
            let mut v = counts_json(c);
            v["hour_start"] = json!(start);
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"agent_id": agent_id, "hours": hours})))
}
