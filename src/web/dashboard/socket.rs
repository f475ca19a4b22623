//! `DashboardSocket`: one actor per dashboard WebSocket (`GET /ws/dashboard`).
//!
//! On connect it sends a snapshot, then every [`BATCH_EVERY`] the events the bus
//! carried meanwhile, as one `events` frame (nothing when there were none). A
//! socket that falls behind the bus, or gets more than [`MAX_BATCH`] events in one
//! batch, gets a fresh snapshot instead: the page is never left with a silent gap.
//! Snapshots are built at most once per [`SNAPSHOT_GAP`], however often asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;

use super::SharedDeps;
use crate::agents::auth::Principal;
use crate::ops::alerts::Acknowledge;
use crate::queue::{ControlTask, QueueError, TaskControl};
use crate::storage::bus::HubEvent;

pub(super) const BATCH_EVERY: Duration = Duration::from_millis(100);
pub(super) const MAX_BATCH: usize = 2000;
const SNAPSHOT_GAP: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(35);
/// Longest id accepted in a client frame.
const MAX_ID: usize = 256;

pub(crate) struct DashboardSocket {
    deps: SharedDeps,
    /// Who logged in: its role decides which actions the page may take.
    who: Principal,
    events: Option<Receiver<Arc<HubEvent>>>,
    last_heard: Instant,
    building: bool,
    /// A snapshot was asked for while one was being built or too recently.
    snapshot_wanted: bool,
    /// The next snapshot re-reads storage health (a storage event happened).
    storage_changed: bool,
    last_snapshot: Option<Instant>,
}

impl DashboardSocket {
    pub(crate) fn new(deps: SharedDeps, who: Principal) -> DashboardSocket {
        DashboardSocket {
            deps,
            who,
            events: None,
            last_heard: Instant::now(),
            building: false,
            snapshot_wanted: false,
            storage_changed: false,
            last_snapshot: None,
        }
    }

    /// `retry_task` / `cancel_task` from the page: the queue acts, the page gets
    /// a `*_result` frame.
    fn control(&self, ctx: &mut ws::WebsocketContext<Self>, task_id: String, control: TaskControl) {
        let kind = match control {
            TaskControl::Retry => "retry_result",
            _ => "cancel_result",
        };
        let ask = self.deps.queue.send(ControlTask {
            task_id: task_id.clone(),
            control,
            by: self.who.id().to_string(),
        });
        ctx.spawn(ask.into_actor(self).map(move |r, _, ctx| {
            let reply = match r {
                Ok(Ok(done)) if control == TaskControl::Retry => {
                    json!({"type": kind, "task_id": task_id, "status": "requeued", "priority": done.priority})
                }
                Ok(Ok(done)) => json!({"type": kind, "task_id": task_id, "status": "cancelled",
                                       "previous_status": done.previous_status.as_str()}),
                Ok(Err(e)) => failed(kind, &task_id, &e),
                Err(e) => unavailable(kind, &task_id, &e),
            };
            Self::send_json(ctx, &reply);
        }));
    }

    fn send_json(ctx: &mut ws::WebsocketContext<Self>, v: &Value) {
        ctx.text(v.to_string());
    }

    /// Builds and sends a snapshot now, or as soon as the last one is
    /// [`SNAPSHOT_GAP`] old.
    fn snapshot(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.building {
            self.snapshot_wanted = true;
            return;
        }
        if let Some(at) = self.last_snapshot {
            let since = at.elapsed();
            if since < SNAPSHOT_GAP {
                if !self.snapshot_wanted {
                    self.snapshot_wanted = true;
                    ctx.run_later(SNAPSHOT_GAP - since, |act, ctx| {
                        act.snapshot_wanted = false;
                        act.snapshot(ctx);
                    });
                }
                return;
            }
        }
        self.building = true;
        let fresh = std::mem::take(&mut self.storage_changed);
        let deps = self.deps.clone();
        let build = async move { deps.snapshot(fresh).await };
        ctx.spawn(build.into_actor(self).map(|built, act, ctx| {
            act.building = false;
            act.last_snapshot = Some(Instant::now());
            match built {
                Ok((data, alerts)) => Self::send_json(
                    ctx,
                    &json!({"type": "snapshot", "data": data, "alerts": alerts}),
                ),
                Err(e) => Self::send_json(
                    ctx,
                    &json!({"type": "error", "error": "unavailable", "detail": e.to_string()}),
                ),
            }
            if std::mem::take(&mut act.snapshot_wanted) {
                act.snapshot(ctx);
            }
        }));
    }

    /// Sends what the bus carried since the last batch. More than [`MAX_BATCH`]
    /// waiting (or lost to lag) is not read at all: the socket skips to the bus's
    /// tail and sends a snapshot, which shows the result of everything skipped.
    fn flush(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(rx) = self.events.as_mut() else {
            return;
        };
        if rx.len() > MAX_BATCH {
            *rx = rx.resubscribe();
            self.snapshot(ctx);
            return;
        }
        let mut batch: Vec<Arc<HubEvent>> = Vec::new();
        let mut behind = false;
        // Bounded: what was waiting when the batch began, plus a little.
        for _ in 0..MAX_BATCH * 2 {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(TryRecvError::Lagged(_)) => behind = true,
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
            }
        }
        if batch.iter().any(|e| matches!(**e, HubEvent::Storage(_))) {
            self.storage_changed = true;
        }
        if behind {
            self.snapshot(ctx);
            return;
        }
        if batch.is_empty() {
            return;
        }
        let mut text = String::with_capacity(64 * batch.len());
        text.push_str(r#"{"type":"events","data":["#);
        for (i, event) in batch.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            match serde_json::to_string(&**event) {
                Ok(one) => text.push_str(&one),
                Err(e) => {
                    tracing::error!(error = %e, "dashboard event not encodable");
                    text.push_str("null");
                }
            }
        }
        text.push_str("]}");
        ctx.text(text);
    }

    fn handle_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = match parse_frame(text) {
            Ok(f) => f,
            Err((error, detail)) => {
                Self::send_json(
                    ctx,
                    &json!({"type": "error", "error": error, "detail": detail}),
                );
                return;
            }
        };
        if !matches!(frame, Frame::RequestSnapshot) && !self.who.may_steer() {
            // An observer watches: its page shows no controls, and the socket
            // refuses the actions too.
            Self::send_json(
                ctx,
                &json!({"type": "error", "error": "read_only",
                        "detail": "an observer's session takes no actions"}),
            );
            return;
        }
        match frame {
            Frame::RequestSnapshot => self.snapshot(ctx),
            Frame::RetryTask(task_id) => self.control(ctx, task_id, TaskControl::Retry),
            Frame::CancelTask(task_id) => self.control(ctx, task_id, TaskControl::Cancel),
            Frame::AcknowledgeAlert(rule_id) => {
                let ask = self.deps.alerter.send(Acknowledge {
                    rule_id: rule_id.clone(),
                });
                ctx.spawn(ask.into_actor(self).map(move |r, _, ctx| {
                    let status = match r {
                        Ok(true) => "acknowledged",
                        Ok(false) => "not_found",
                        Err(_) => "unavailable",
                    };
                    Self::send_json(
                        ctx,
                        &json!({"type": "alert_ack_result", "rule_id": rule_id, "status": status}),
                    );
                }));
            }
        }
    }
}

/// A refused action's result frame: `status` is the queue's wire code.
fn failed(kind: &str, task_id: &str, e: &QueueError) -> Value {
    json!({"type": kind, "task_id": task_id, "status": e.as_str(), "detail": e.as_str()})
}

fn unavailable(kind: &str, task_id: &str, e: &MailboxError) -> Value {
    json!({"type": kind, "task_id": task_id, "status": "unavailable", "detail": e.to_string()})
}

/// A frame from the page.
#[derive(Debug, PartialEq)]
enum Frame {
    RequestSnapshot,
    RetryTask(String),
    CancelTask(String),
    AcknowledgeAlert(String),
}

/// Parses a client frame; a bad one gives `(error, detail)`.
fn parse_frame(text: &str) -> Result<Frame, (&'static str, String)> {
    let value: Value = serde_json::from_str(text).map_err(|e| ("invalid_json", e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(("validation_failed", "expected a JSON object".into()));
    };
    let id = |name: &str| -> Result<String, (&'static str, String)> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID => Ok(s.clone()),
            Some(Value::String(_)) => Err((
                "validation_failed",
                format!("{name} must be 1 to {MAX_ID} characters"),
            )),
            Some(_) => Err(("validation_failed", format!("{name} must be a string"))),
            None => Err(("validation_failed", format!("{name} is required"))),
        }
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("request_snapshot") => Ok(Frame::RequestSnapshot),
        Some("retry_task") => Ok(Frame::RetryTask(id("task_id")?)),
        Some("cancel_task") => Ok(Frame::CancelTask(id("task_id")?)),
        Some("acknowledge_alert") => Ok(Frame::AcknowledgeAlert(id("rule_id")?)),
        Some(other) => Err((
            "unknown_message_type",
            format!(
                "{} is not one of request_snapshot, retry_task, cancel_task, acknowledge_alert",
                other.chars().take(64).collect::<String>()
            ),
        )),
        None => Err(("validation_failed", "type is required".into())),
    }
}

impl Actor for DashboardSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Subscribe first: nothing that happens while the snapshot is built is lost.
        self.events = Some(self.deps.bus.subscribe());
        self.snapshot(ctx);
        ctx.run_interval(BATCH_EVERY, |act, ctx| act.flush(ctx));
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > SILENCE_LIMIT {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("no answer to pings".into()),
                }));
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for DashboardSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.handle_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => Self::send_json(
                ctx,
                &json!({"type": "error", "error": "invalid_json", "detail": "send JSON text frames"}),
            ),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(_)) | Ok(ws::Message::Continuation(_)) => {
                ctx.close(None);
                ctx.stop();
            }
            Err(e) => {
                tracing::info!(error = %e, "dashboard websocket protocol error");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some("protocol error".into()),
                }));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_or_get_a_structured_error() {
        assert_eq!(
            parse_frame(r#"{"type":"request_snapshot"}"#),
            Ok(Frame::RequestSnapshot)
        );
        assert_eq!(
            parse_frame(r#"{"type":"retry_task","task_id":"t1"}"#),
            Ok(Frame::RetryTask("t1".into()))
        );
        assert_eq!(
            parse_frame(r#"{"type":"acknowledge_alert","rule_id":"stuck_tasks"}"#),
            Ok(Frame::AcknowledgeAlert("stuck_tasks".into()))
        );
        let error = |text: &str| parse_frame(text).err().map(|(e, _)| e);
        assert_eq!(error("{"), Some("invalid_json"));
        assert_eq!(error("[]"), Some("validation_failed"));
        assert_eq!(error(r#"{"type":"retry_task"}"#), Some("validation_failed"));
        assert_eq!(
            error(r#"{"type":"cancel_task","task_id":7}"#),
            Some("validation_failed")
        );
        assert_eq!(
            error(&format!(
                r#"{{"type":"cancel_task","task_id":"{}"}}"#,
                "x".repeat(300)
            )),
            Some("validation_failed")
        );
        assert_eq!(
            error(r#"{"type":"drop_tables"}"#),
            Some("unknown_message_type")
        );
        assert_eq!(error(r#"{"task_id":"t"}"#), Some("validation_failed"));
    }
}
