//! `AgentSession`: one actor per agent WebSocket (`GET /ws`).
//!
//! It applies PROTOCOL.md 1.1 to every inbound frame in order: parse, validate,
//! require identify, dispatch. It counts violations (1.2), enforces the idle
//! timeout and the frame size limit, and writes whatever the agent's FSM pushes.
//! Frames that need an answer from another actor are handled with `ctx.wait`, so a
//! session's frames are processed strictly in the order they arrived.
//!
//! Architecture invariant: the session knows the wire and one agent's identity. It
//! never changes task or agent state itself: identify goes through `Tokens` and the
//! agent's `AgentFsm`, lifecycle frames go to the FSM.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;

use crate::agents::auth::{IdentifyRefusal, Tokens};
use crate::agents::fsm::{
    AgentFsm, CloseSocket, Connect, Disconnect, Lifecycle, Push, SessionHandle, SetStatus, Throttle,
};
use crate::agents::presence::{CooldownLeft, FsmFor, ListAgents, Presence, ViolationDisconnect};
use crate::agents::ratelimit::{duration_ms, Decision, RateLimits, Tier, Transport};
use crate::messaging::{
    ChannelHistory, ListChannels, Messaging, MsgError, Publish, SendMessage, Subscribe, Unsubscribe,
};
use crate::ops::telemetry::{Counter, Telemetry};
use crate::protocol::{
    parse_client_frame, renew_ttl, reserve_request, ClientFrame, ErrorFrame, FieldError,
    FrameError, ServerFrame, Slots,
};
use crate::queue::{
    QueueError, ReleaseReservation, RenewReservation, Reserve, ReserveOutcome, Reserver, TaskQueue,
};
use crate::topics::{PublishEvent, Topics};
use crate::util::now_ms;

/// At most this many frames go to the socket per `TURN`; a burst beyond it (say,
/// thousands of `agent_joined` when a fleet connects at once) waits in the
/// session's own outbox, which is released once drained. Frames are never dropped
/// and keep their order.
const FRAMES_PER_TURN: u32 = 16;
const TURN: Duration = Duration::from_millis(1);

/// Violations within `VIOLATION_WINDOW` that close the socket.
const MAX_VIOLATIONS: usize = 10;
const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What a session needs from the hub.
#[derive(Clone)]
pub(crate) struct SessionDeps {
    pub tokens: Tokens,
    pub limits: RateLimits,
    pub telemetry: Arc<Telemetry>,
    pub presence: Addr<Presence>,
    pub messaging: Addr<Messaging>,
    /// Direct reservations of repository paths (`scope_*` frames).
    pub queue: Addr<TaskQueue>,
    pub topics: Addr<Topics>,
    pub idle_timeout: Duration,
}

pub(crate) struct AgentSession {
    id: u64,
    deps: SessionDeps,
    agent: Option<(String, Addr<AgentFsm>)>,
    last_seen: Instant,
    violations: VecDeque<Instant>,
    frames: u64,
    /// Rate-limit key before identify (`ip:<addr>`), and identify frames seen.
    peer_key: String,
    identifies: u32,
    /// Paced output: frames waiting for the next turn, and this turn's count.
    outbox: VecDeque<ByteString>,
    turn_started: Instant,
    turn_sent: u32,
    flush_scheduled: bool,
}

enum IdentifyFailure {
    Cooldown(u64),
    Refused(IdentifyRefusal),
    Unavailable,
}

impl AgentSession {
    pub(crate) fn new(deps: SessionDeps, peer: Option<std::net::IpAddr>) -> Self {
        AgentSession {
            peer_key: peer.map_or_else(|| "ip:unknown".to_string(), |ip| format!("ip:{ip}")),
            identifies: 0,
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            deps,
            agent: None,
            last_seen: Instant::now(),
            violations: VecDeque::new(),
            frames: 0,
            outbox: VecDeque::new(),
            turn_started: Instant::now(),
            turn_sent: 0,
            flush_scheduled: false,
        }
    }

    fn send(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: &ServerFrame) {
        if matches!(frame, ServerFrame::Error(_)) {
            self.deps.telemetry.add(Counter::Errors, 1);
        }
        if let Some(Push(text)) = Push::encode(frame) {
            self.emit(ctx, text);
        }
    }

    /// Writes a frame now if this turn has room and nothing waits, else queues it.
    fn emit(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: ByteString) {
        let now = Instant::now();
        if now.duration_since(self.turn_started) >= TURN {
            self.turn_started = now;
            self.turn_sent = 0;
        }
        if self.outbox.is_empty() && self.turn_sent < FRAMES_PER_TURN {
            self.turn_sent += 1;
            ctx.text(text);
            return;
        }
        self.outbox.push_back(text);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(TURN, |act, ctx| act.flush_turn(ctx));
        }
    }

    /// Writes the next turn's worth of queued frames.
    fn flush_turn(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.flush_scheduled = false;
        self.turn_started = Instant::now();
        self.turn_sent = 0;
        while self.turn_sent < FRAMES_PER_TURN {
            let Some(text) = self.outbox.pop_front() else {
                break;
            };
            self.turn_sent += 1;
            ctx.text(text);
        }
        if self.outbox.is_empty() {
            if self.outbox.capacity() > FRAMES_PER_TURN as usize {
                self.outbox = VecDeque::new();
            }
        } else {
            self.flush_scheduled = true;
            ctx.run_later(TURN, |act, ctx| act.flush_turn(ctx));
        }
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: ws::CloseCode, reason: &str) {
        // Whatever was promised to the agent goes out before the close frame.
        for text in self.outbox.drain(..) {
            ctx.text(text);
        }
        ctx.close(Some(ws::CloseReason {
            code,
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn agent_id(&self) -> Option<&str> {
        self.agent.as_ref().map(|(id, _)| id.as_str())
    }

    /// Spends one action of `tier`: sends `rate_limit_warning` (before the reply)
    /// when the bucket is nearly empty; when it is empty, drops the frame with
    /// `rate_limited` and keeps the agent from new tasks until it refills.
    fn admit(&mut self, tier: Tier, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        let key = self
            .agent_id()
            .map_or_else(|| self.peer_key.clone(), str::to_string);
        match self.deps.limits.check(&key, Transport::Ws, tier) {
            Decision::Allowed(None) => true,
            Decision::Allowed(Some(w)) => {
                self.send(
                    ctx,
                    &ServerFrame::RateLimitWarning {
                        tier: w.tier.as_str().into(),
                        remaining: w.remaining,
                        capacity: w.capacity,
                    },
                );
                true
            }
            Decision::Denied { tier, retry_after } => {
                tracing::info!(agent_id = %key, tier = tier.as_str(), "rate limited");
                self.send(
                    ctx,
                    &ServerFrame::RateLimited {
                        retry_after_ms: duration_ms(retry_after),
                        tier: tier.as_str().into(),
                    },
                );
                if let Some((_, fsm)) = &self.agent {
                    fsm.do_send(Throttle { retry_after });
                }
                false
            }
        }
    }

    /// Counts a violation; closes the socket at the limit.
    fn violation(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let now = Instant::now();
        self.violations.push_back(now);
        while self
            .violations
            .front()
            .is_some_and(|t| now.duration_since(*t) > VIOLATION_WINDOW)
        {
            self.violations.pop_front();
        }
        if self.violations.len() >= MAX_VIOLATIONS {
            tracing::warn!(agent_id = ?self.agent_id(), session = self.id, "too many validation errors");
            if let Some(agent_id) = self.agent_id() {
                self.deps.presence.do_send(ViolationDisconnect {
                    agent_id: agent_id.to_string(),
                });
            }
            self.close(ctx, ws::CloseCode::Policy, "too many validation errors");
        }
    }

    fn handle_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.frames += 1;
        let request_id = format!("{}-{}", self.id, self.frames);
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                let is_violation = matches!(e, FrameError::Validation { .. });
                tracing::debug!(request_id = %request_id, agent_id = ?self.agent_id(), error = ?e, "frame refused");
                self.send(ctx, &e.into());
                if is_violation {
                    self.violation(ctx);
                }
                return;
            }
        };
        tracing::debug!(request_id = %request_id, agent_id = ?self.agent_id(),
                        message_type = frame.type_name(), "frame");
        if matches!(frame, ClientFrame::Identify { .. }) {
            self.identifies = self.identifies.saturating_add(1);
        }
        // Step 4 of PROTOCOL.md 1.1 (identify gets no answer but `not_identified`
        // before it, so those frames are not counted). A socket's first identify is
        // free; lifecycle frames are never limited.
        let limited_tier = match (&self.agent, &frame) {
            (None, ClientFrame::Identify { .. }) if self.identifies == 1 => None,
            (None, ClientFrame::Identify { .. }) | (Some(_), _) => {
                frame.rate_tier().and_then(Tier::parse)
            }
            (None, _) => None,
        };
        if let Some(tier) = limited_tier {
            if !self.admit(tier, ctx) {
                return;
            }
        }
        let fsm = match (&self.agent, &frame) {
            (None, ClientFrame::Identify { .. }) => {
                self.identify(frame, ctx);
                return;
            }
            (None, _) => {
                self.send(
                    ctx,
                    &ServerFrame::Error(ErrorFrame::plain("not_identified")),
                );
                return;
            }
            (Some(_), ClientFrame::Identify { .. }) => {
                self.send(
                    ctx,
                    &ServerFrame::Error(ErrorFrame::plain("already_identified")),
                );
                return;
            }
            (Some((_, fsm)), _) => fsm.clone(),
        };
        match frame {
            ClientFrame::Ping => self.send(
                ctx,
                &ServerFrame::Pong {
                    timestamp: now_ms(),
                },
            ),
            ClientFrame::Status { status } => {
                fsm.do_send(SetStatus(status));
                self.send(ctx, &ServerFrame::StatusUpdated);
            }
            ClientFrame::ListAgents => {
                let request = self.deps.presence.send(ListAgents { online_only: true });
                ctx.wait(request.into_actor(self).map(|result, act, ctx| {
                    let agents = result
                        .unwrap_or_default()
                        .iter()
                        .map(|v| v.info(false))
                        .collect();
                    act.send(ctx, &ServerFrame::Agents { agents });
                }));
            }
            ClientFrame::AgentRestarting { reason } => {
                tracing::info!(agent_id = ?self.agent_id(), reason = ?reason, "agent restarting");
            }
            f @ (ClientFrame::ScopeReserve { .. }
            | ClientFrame::ScopeRenew { .. }
            | ClientFrame::ScopeRelease { .. }) => self.scope_frame(f, ctx),
            ClientFrame::EventPublish {
                topic,
                payload,
                dedupe_key,
                request_id,
            } => self.publish_frame(topic, payload, dedupe_key, request_id, ctx),
            f if f.is_lifecycle() => {
                ctx.wait(fsm.send(Lifecycle(f)).into_actor(self).map(
                    |result, act, ctx| match result {
                        Ok(Some(reply)) => act.send(ctx, &reply),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "agent state machine unreachable");
                            act.send(
                                ctx,
                                &ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
                            );
                        }
                    },
                ));
            }
            other => self.messaging_frame(other, ctx),
        }
    }

    /// `event_publish` (ext, PROTOCOL.md 6.30): the event, once durable.
    fn publish_frame(
        &mut self,
        topic: String,
        payload: serde_json::Value,
        dedupe_key: Option<String>,
        request_id: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(me) = self.agent_id().map(str::to_string) else {
            return;
        };
        let mut body = serde_json::Map::new();
        body.insert("payload".into(), payload);
        if let Some(k) = dedupe_key {
            body.insert("dedupe_key".into(), k.into());
        }
        let publish = match crate::protocol::parse_publish(&topic, &body) {
            Ok(p) => p,
            Err(errors) => return self.send(ctx, &validation_error(errors, "event_publish")),
        };
        let topics = self.deps.topics.clone();
        let work = async move {
            match topics.send(PublishEvent { publish, by: me }).await {
                Ok(Ok((event, existing))) => ServerFrame::EventPublished {
                    event,
                    existing,
                    request_id,
                },
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "topic event not stored");
                    ServerFrame::Error(ErrorFrame {
                        message_type: Some("event_publish".into()),
                        ..ErrorFrame::plain("storage_error")
                    })
                }
                Err(_) => ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
            }
        };
        ctx.wait(
            work.into_actor(self)
                .map(|reply, act, ctx| act.send(ctx, &reply)),
        );
    }

    /// `scope_reserve`, `scope_renew`, `scope_release` (ext, PROTOCOL.md 6.21):
    /// ask the queue, answer in order.
    fn scope_frame(&mut self, frame: ClientFrame, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(me) = self.agent_id().map(str::to_string) else {
            return;
        };
        let message_type = frame.type_name();
        let by = Reserver::Agent(me);
        let queue = self.deps.queue.clone();
        let work = async move {
            match frame {
                ClientFrame::ScopeReserve {
                    repo,
                    paths,
                    mode,
                    ttl_ms,
                    task_id,
                    request_id,
                } => {
                    let request =
                        match reserve_request(repo, paths, mode.as_deref(), ttl_ms, task_id) {
                            Ok(r) => r,
                            Err(errors) => return validation_error(errors, message_type),
                        };
                    let repo = request.repo.clone();
                    let paths = request.paths.clone();
                    match queue.send(Reserve { request, by }).await {
                        Ok(Ok(ReserveOutcome::Granted(reservation))) => ServerFrame::ScopeGranted {
                            reservation,
                            request_id,
                        },
                        Ok(Ok(ReserveOutcome::Conflict(holder))) => ServerFrame::ScopeConflict {
                            repo,
                            paths,
                            holder,
                            request_id,
                        },
                        Ok(Err(e)) => scope_error(e, message_type),
                        Err(_) => ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
                    }
                }
                ClientFrame::ScopeRenew {
                    reservation_id,
                    ttl_ms,
                    request_id,
                } => {
                    let ttl_ms = match renew_ttl(ttl_ms) {
                        Ok(t) => t,
                        Err(errors) => return validation_error(errors, message_type),
                    };
                    let renew = RenewReservation {
                        reservation_id,
                        ttl_ms,
                        by,
                    };
                    match queue.send(renew).await {
                        Ok(Ok(reservation)) => ServerFrame::ScopeGranted {
                            reservation,
                            request_id,
                        },
                        Ok(Err(e)) => scope_error(e, message_type),
                        Err(_) => ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
                    }
                }
                ClientFrame::ScopeRelease {
                    reservation_id,
                    request_id,
                } => {
                    let release = ReleaseReservation { reservation_id, by };
                    match queue.send(release).await {
                        Ok(Ok(r)) => ServerFrame::ScopeReleased {
                            reservation_id: r.reservation_id,
                            request_id,
                        },
                        Ok(Err(e)) => scope_error(e, message_type),
                        Err(_) => ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
                    }
                }
                _ => ServerFrame::Error(ErrorFrame::plain("invalid_request")),
            }
        };
        ctx.wait(
            work.into_actor(self)
                .map(|reply, act, ctx| act.send(ctx, &reply)),
        );
    }

    /// `message` and `channel_*` frames: ask `Messaging`, answer in order.
    fn messaging_frame(&mut self, frame: ClientFrame, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(from) = self.agent_id().map(str::to_string) else {
            return;
        };
        let messaging = self.deps.messaging.clone();
        let message_type = frame.type_name();
        let work = async move {
            let reply = match frame {
                ClientFrame::Message {
                    payload,
                    to,
                    message_type,
                    reply_to,
                } => messaging
                    .send(SendMessage {
                        from,
                        to,
                        message_type,
                        payload,
                        reply_to,
                        id: None,
                    })
                    .await
                    .map(|r| r.map(|id| ServerFrame::MessageSent { id })),
                ClientFrame::ChannelSubscribe { channel } => messaging
                    .send(Subscribe {
                        channel: channel.clone(),
                        agent_id: from,
                    })
                    .await
                    .map(|r| {
                        r.map(|already| ServerFrame::ChannelSubscribed {
                            channel,
                            note: already.then(|| "already_subscribed".to_string()),
                        })
                    }),
                ClientFrame::ChannelUnsubscribe { channel } => messaging
                    .send(Unsubscribe {
                        channel: channel.clone(),
                        agent_id: from,
                    })
                    .await
                    .map(|r| r.map(|_| ServerFrame::ChannelUnsubscribed { channel })),
                ClientFrame::ChannelPublish {
                    channel,
                    payload,
                    message_type,
                    reply_to,
                } => messaging
                    .send(Publish {
                        channel: channel.clone(),
                        from,
                        message_type,
                        payload,
                        reply_to,
                        id: None,
                    })
                    .await
                    .map(|r| r.map(|(seq, id)| ServerFrame::ChannelPublished { channel, seq, id })),
                ClientFrame::ChannelHistory {
                    channel,
                    limit,
                    since,
                } => messaging
                    .send(ChannelHistory {
                        channel: channel.clone(),
                        since: since.unwrap_or(0),
                        limit: limit.unwrap_or(50).min(200) as usize,
                    })
                    .await
                    .map(|r| r.map(|messages| ServerFrame::ChannelHistory { channel, messages })),
                ClientFrame::ListChannels => messaging
                    .send(ListChannels)
                    .await
                    .map(|channels| Ok(ServerFrame::Channels { channels })),
                _ => return None,
            };
            Some(match reply {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => messaging_error(e, message_type),
                Err(_) => ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
            })
        };
        ctx.wait(work.into_actor(self).map(|reply, act, ctx| {
            if let Some(reply) = reply {
                act.send(ctx, &reply);
            }
        }));
    }

    fn identify(&mut self, frame: ClientFrame, ctx: &mut ws::WebsocketContext<Self>) {
        let ClientFrame::Identify {
            agent_id,
            token,
            name,
            status,
            capabilities,
            slots,
            reserve_slot_for_standing,
        } = frame
        else {
            return;
        };
        let deps = self.deps.clone();
        let handle = SessionHandle {
            id: self.id,
            push: ctx.address().recipient(),
            close: ctx.address().recipient(),
        };
        let work = async move {
            // Cooldown first, then the token (PROTOCOL.md 1.3).
            match deps
                .presence
                .send(CooldownLeft {
                    agent_id: agent_id.clone(),
                })
                .await
            {
                Ok(Some(secs)) => return Err(IdentifyFailure::Cooldown(secs)),
                Ok(None) => {}
                Err(_) => return Err(IdentifyFailure::Unavailable),
            }
            deps.tokens
                .check_identify(&agent_id, &token)
                .map_err(IdentifyFailure::Refused)?;
            let record = deps.tokens.get(&agent_id).ok().flatten();
            let token_slots = record.as_ref().and_then(|r| r.slots);
            let granted = Slots::granted(slots, reserve_slot_for_standing, token_slots);
            // `identified` says what was granted when slots are in play; the
            // v1.1 frame is unchanged otherwise.
            let told = (slots.is_some() || token_slots.is_some()).then_some(granted);
            let mut caps = match capabilities {
                Some(c) => c,
                None => record.map(|r| r.capabilities).unwrap_or_default(),
            };
            caps.sort();
            caps.dedup();
            let fsm = deps
                .presence
                .send(FsmFor {
                    agent_id: agent_id.clone(),
                })
                .await
                .map_err(|_| IdentifyFailure::Unavailable)?;
            fsm.send(Connect {
                session: handle,
                name,
                status,
                capabilities: caps,
                slots: granted,
            })
            .await
            .map_err(|_| IdentifyFailure::Unavailable)?;
            Ok((agent_id, fsm, told))
        };
        ctx.wait(work.into_actor(self).map(|result, act, ctx| match result {
            Ok((agent_id, fsm, told)) => {
                tracing::info!(agent_id = %agent_id, session = act.id, "agent identified");
                act.agent = Some((agent_id.clone(), fsm));
                act.send(
                    ctx,
                    &ServerFrame::Identified {
                        agent_id,
                        slots: told.map(|g| g.slots),
                        reserve_slot_for_standing: told.map(|g| g.reserve_standing),
                    },
                );
            }
            Err(IdentifyFailure::Cooldown(secs)) => act.close(
                ctx,
                ws::CloseCode::Policy,
                &format!("cooldown active: retry in {secs}s"),
            ),
            Err(IdentifyFailure::Refused(r)) => {
                let error = match r {
                    IdentifyRefusal::InvalidToken => "invalid_token",
                    IdentifyRefusal::TokenAgentMismatch => "token_agent_mismatch",
                };
                act.send(ctx, &ServerFrame::Error(ErrorFrame::plain(error)));
            }
            Err(IdentifyFailure::Unavailable) => act.send(
                ctx,
                &ServerFrame::Error(ErrorFrame::plain("hub_unavailable")),
            ),
        }));
    }
}

/// The wire form of a messaging refusal.
/// A `scope_*` frame refused: `validation_failed` with the field errors.
fn validation_error(errors: Vec<FieldError>, message_type: &str) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        message_type: Some(message_type.to_string()),
        errors: Some(errors),
        ..ErrorFrame::plain("validation_failed")
    })
}

/// A `scope_*` frame the queue refused (`reservation_not_found`, `not_holder`,
/// `task_not_held`, `too_many_reservations`, `validation_failed`, ...).
fn scope_error(e: QueueError, message_type: &str) -> ServerFrame {
    match e {
        QueueError::Invalid(errors) => validation_error(errors, message_type),
        other => ServerFrame::Error(ErrorFrame {
            message_type: Some(message_type.to_string()),
            ..ErrorFrame::plain(other.as_str())
        }),
    }
}

fn messaging_error(e: MsgError, message_type: &str) -> ServerFrame {
    let frame = match e {
        MsgError::ChannelNotFound(channel) => ErrorFrame {
            channel: Some(channel),
            ..ErrorFrame::plain("channel_not_found")
        },
        MsgError::RecipientNotFound(_) => ErrorFrame::plain("recipient_not_found"),
        MsgError::TooLarge(max, head) => ErrorFrame {
            errors: Some(vec![FieldError::new(
                "payload",
                "too_long",
                format!("at most {max} bytes of JSON"),
            )
            .with_value(head)]),
            ..ErrorFrame::plain("validation_failed")
        },
        MsgError::ChannelExists(_) | MsgError::MessageNotFound(_) => {
            ErrorFrame::plain("invalid_request")
        }
        MsgError::Store(e) => {
            tracing::error!(error = %e, "messaging storage failed");
            ErrorFrame::plain("storage_error")
        }
    };
    ServerFrame::Error(ErrorFrame {
        message_type: Some(message_type.to_string()),
        ..frame
    })
}

impl Actor for AgentSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let check = (self.deps.idle_timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(check, |act, ctx| {
            if act.last_seen.elapsed() > act.deps.idle_timeout {
                tracing::info!(agent_id = ?act.agent_id(), session = act.id, "idle timeout");
                act.close(ctx, ws::CloseCode::Normal, "idle timeout");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some((agent_id, fsm)) = self.agent.take() {
            tracing::info!(agent_id = %agent_id, session = self.id, "agent disconnected");
            fsm.do_send(Disconnect {
                session_id: self.id,
            });
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for AgentSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.handle_text(&text, ctx),
            Ok(ws::Message::Binary(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.handle_text(text, ctx),
                Err(_) => self.send(ctx, &ServerFrame::Error(ErrorFrame::plain("invalid_json"))),
            },
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(_)) => {
                ctx.close(None);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) => self.close(
                ctx,
                ws::CloseCode::Unsupported,
                "fragmented frames are not supported",
            ),
            Err(ws::ProtocolError::Overflow) => {
                self.close(ctx, ws::CloseCode::Size, "frame too large")
            }
            Err(e) => {
                tracing::info!(agent_id = ?self.agent_id(), error = %e, "websocket protocol error");
                self.close(ctx, ws::CloseCode::Protocol, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Push> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        self.emit(ctx, msg.0);
    }
}

impl Handler<CloseSocket> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        self.close(ctx, ws::CloseCode::Other(msg.code), &msg.reason);
    }
}
