//! `AgentFsm`: one actor per agent, the only owner of that agent's state
//! (offline / idle / assigned / working) and of its socket handle.
//!
//! Lifecycle frames from the agent's session pass through here to the `TaskQueue`;
//! the FSM moves on the queue's verdict, so an agent's state never disagrees with
//! the task it holds. Handlers that wait on the queue use `AtomicResponse`: one
//! agent's events are handled strictly one after another.
//!
//! Architecture invariant: the FSM knows its agent, its current task id and
//! generation, and its timers. It does not know other agents, does not pick tasks
//! (the `Scheduler` does) and does not change tasks (the `TaskQueue` does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::agents::presence::{Presence, PresenceEvent, PresenceUpdate};
use crate::agents::scheduler::{AgentAvailable, AgentUnavailable, Scheduler};
use crate::agents::usage::UsageReported;
use crate::domain::task::RECLAIM_AGENT_DISABLED;
use crate::protocol::{AgentInfo, ServerFrame, TaskAssignment};
use crate::queue::{HeldBy, Reclaim, TaskQueue};
use crate::util::now_ms;

mod lifecycle;
pub(crate) use lifecycle::Lifecycle;

/// Set once the hub shuts down: sockets closing then are not agents leaving, so
/// their tasks are not reclaimed (the agents recover them after the restart).
/// One per hub: made by `hub::start_actors`, handed to every FSM, set by the
/// server when it is told to stop.
#[derive(Debug, Clone, Default)]
pub(crate) struct HubStopping(Arc<AtomicBool>);

impl HubStopping {
    /// From now on the hub is stopping.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The agent's state machine states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsmState {
    Offline,
    Idle,
    Assigned,
    Working,
}

impl FsmState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FsmState::Offline => "offline",
            FsmState::Idle => "idle",
            FsmState::Assigned => "assigned",
            FsmState::Working => "working",
        }
    }
}

/// Sends a frame, encoded once, to the agent's socket. A broadcast clones the
/// encoded text (a reference count), never the frame.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub(crate) struct Push(pub ByteString);

impl Push {
    /// Encodes `frame` for sending; `None` (logged) if it cannot be encoded.
    pub(crate) fn encode(frame: &ServerFrame) -> Option<Push> {
        match serde_json::to_string(frame) {
            Ok(text) => Some(Push(ByteString::from(text))),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode frame");
                None
            }
        }
    }
}

/// The agent went over a rate limit: no new tasks for `retry_after`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Throttle {
    pub retry_after: Duration,
}

impl Handler<Throttle> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Throttle, ctx: &mut Context<Self>) {
        let until = std::time::Instant::now() + msg.retry_after;
        self.throttled_until = Some(self.throttled_until.map_or(until, |u| u.max(until)));
        if self.state == FsmState::Idle {
            self.scheduler.do_send(AgentUnavailable {
                agent_id: self.agent_id.clone(),
            });
        }
        self.publish(None);
        ctx.run_later(msg.retry_after, |act, ctx| {
            if act
                .throttled_until
                .is_some_and(|u| u <= std::time::Instant::now())
            {
                act.throttled_until = None;
                act.publish(None);
                act.announce(ctx);
            }
        });
    }
}

/// Closes the agent's socket with a code and reason.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub(crate) struct CloseSocket {
    pub code: u16,
    pub reason: String,
}

/// The live connection of an agent.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub id: u64,
    pub push: Recipient<Push>,
    pub close: Recipient<CloseSocket>,
}

/// What the rest of the hub may know of an agent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentView {
    pub agent_id: String,
    pub name: String,
    pub status: String,
    pub capabilities: Vec<String>,
    pub connected_at: Option<i64>,
    pub fsm_state: FsmState,
    pub current_task_id: Option<String>,
    pub generation: Option<u64>,
    pub flags: Vec<String>,
    pub last_state_change: i64,
    /// Its credential group is paused for a usage limit until then (ms).
    pub paused_until: Option<i64>,
}

impl AgentView {
    /// Everything the dashboard shows of an agent.
    pub(crate) fn card(&self) -> serde_json::Value {
        serde_json::json!({
            "agent_id": self.agent_id,
            "name": self.name,
            "status": self.status,
            "fsm_state": self.fsm_state.as_str(),
            "current_task_id": self.current_task_id,
            "capabilities": self.capabilities,
            "connected_at": self.connected_at,
            "last_state_change": self.last_state_change,
            "flags": self.flags,
            "online": self.fsm_state != FsmState::Offline,
            "paused_until": self.paused_until,
        })
    }

    pub(crate) fn info(&self, with_state: bool) -> AgentInfo {
        AgentInfo {
            agent_id: self.agent_id.clone(),
            name: self.name.clone(),
            status: self.status.clone(),
            capabilities: self.capabilities.clone(),
            connected_at: self.connected_at,
            fsm_state: with_state.then(|| self.fsm_state.as_str().to_string()),
        }
    }
}

/// Timing settings of every FSM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsmTimings {
    pub acceptance_timeout: Duration,
    pub reject_backoff: Duration,
}

pub(crate) struct AgentFsm {
    agent_id: String,
    state: FsmState,
    current: Option<(String, u64)>,
    session: Option<SessionHandle>,
    name: String,
    status: String,
    capabilities: Vec<String>,
    connected_at: Option<i64>,
    unresponsive: bool,
    /// Over its rate limit until then: offered no new tasks (PROTOCOL.md 5).
    throttled_until: Option<std::time::Instant>,
    /// Operator controls: a draining agent finishes its task and takes no new
    /// one; a disabled agent loses its task and takes none.
    controls: AgentControls,
    /// Its credential group's usage limit: offered no work before then (ms).
    paused_until: Option<i64>,
    idle_since: i64,
    last_state_change: i64,
    accept_timer: Option<SpawnHandle>,
    timings: FsmTimings,
    stopping: HubStopping,
    queue: Addr<TaskQueue>,
    scheduler: Addr<Scheduler>,
    presence: Addr<Presence>,
}

impl AgentFsm {
    pub(crate) fn new(
        agent_id: String,
        timings: FsmTimings,
        stopping: HubStopping,
        queue: Addr<TaskQueue>,
        scheduler: Addr<Scheduler>,
        presence: Addr<Presence>,
    ) -> Self {
        let now = now_ms();
        AgentFsm {
            name: agent_id.clone(),
            agent_id,
            state: FsmState::Offline,
            current: None,
            session: None,
            status: "offline".into(),
            capabilities: Vec::new(),
            connected_at: None,
            unresponsive: false,
            throttled_until: None,
            controls: AgentControls::default(),
            paused_until: None,
            idle_since: now,
            last_state_change: now,
            accept_timer: None,
            timings,
            stopping,
            queue,
            scheduler,
            presence,
        }
    }

    fn view(&self) -> AgentView {
        let mut flags = Vec::new();
        if self.unresponsive {
            flags.push("unresponsive".to_string());
        }
        if self.is_throttled() {
            flags.push("rate_limited".to_string());
        }
        if self.controls.draining {
            flags.push("draining".to_string());
        }
        if self.controls.disabled {
            flags.push("disabled".to_string());
        }
        if self.is_paused() {
            flags.push("usage_limited".to_string());
        }
        AgentView {
            agent_id: self.agent_id.clone(),
            name: self.name.clone(),
            status: self.status.clone(),
            capabilities: self.capabilities.clone(),
            connected_at: self.connected_at,
            fsm_state: self.state,
            current_task_id: self.current.as_ref().map(|(t, _)| t.clone()),
            generation: self.current.as_ref().map(|(_, g)| *g),
            flags,
            last_state_change: self.last_state_change,
            paused_until: self.paused_until.filter(|_| self.is_paused()),
        }
    }

    fn is_paused(&self) -> bool {
        self.paused_until.is_some_and(|until| until > now_ms())
    }

    fn publish(&self, event: Option<PresenceEvent>) {
        self.presence.do_send(PresenceUpdate {
            view: self.view(),
            push: self.session.as_ref().map(|s| s.push.clone()),
            event,
        });
    }

    fn set_state(&mut self, state: FsmState, current: Option<(String, u64)>) {
        if state != self.state || current != self.current {
            self.last_state_change = now_ms();
        }
        if self.state == FsmState::Idle && state != FsmState::Idle {
            // Busy by the agent's own account (accept, recovery): not a candidate.
            self.scheduler.do_send(AgentUnavailable {
                agent_id: self.agent_id.clone(),
            });
        }
        self.state = state;
        self.current = current;
        self.publish(None);
    }

    fn push(&self, frame: ServerFrame) {
        if let (Some(s), Some(push)) = (&self.session, Push::encode(&frame)) {
            s.push.do_send(push);
        }
    }

    fn stop_accept_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.accept_timer.take() {
            ctx.cancel_future(h);
        }
    }

    /// Becomes idle and offers itself to the scheduler (after `delay`, if any).
    fn become_idle(&mut self, ctx: &mut Context<Self>, delay: Option<Duration>) {
        self.stop_accept_timer(ctx);
        self.idle_since = now_ms();
        self.set_state(FsmState::Idle, None);
        match delay {
            Some(d) => {
                ctx.run_later(d, |act, ctx| act.announce(ctx));
            }
            None => self.announce(ctx),
        }
    }

    fn is_throttled(&self) -> bool {
        self.throttled_until
            .is_some_and(|until| until > std::time::Instant::now())
    }

    fn announce(&self, ctx: &mut Context<Self>) {
        if self.state != FsmState::Idle
            || self.session.is_none()
            || self.is_throttled()
            || self.controls.draining
            || self.controls.disabled
            || self.is_paused()
        {
            return;
        }
        // An agent that let a task time out is offered work only when no other
        // capable agent is idle, until it accepts again.
        let idle_since = if self.unresponsive {
            self.idle_since.saturating_add(i64::MAX / 2)
        } else {
            self.idle_since
        };
        // Every agent implicitly serves `agent:<its id>`, so a task can name its agent.
        let mut capabilities = self.capabilities.clone();
        capabilities.push(format!("agent:{}", self.agent_id));
        self.scheduler.do_send(AgentAvailable {
            agent_id: self.agent_id.clone(),
            capabilities,
            idle_since,
            fsm: ctx.address(),
        });
    }

    /// Holds `task_id` at `generation`, waiting for `task_accepted`.
    fn await_acceptance(&mut self, task_id: String, generation: u64, ctx: &mut Context<Self>) {
        self.stop_accept_timer(ctx);
        self.set_state(FsmState::Assigned, Some((task_id.clone(), generation)));
        let handle = ctx.run_later(self.timings.acceptance_timeout, move |act, ctx| {
            act.acceptance_expired(task_id, generation, ctx)
        });
        self.accept_timer = Some(handle);
    }

    fn acceptance_expired(&mut self, task_id: String, generation: u64, ctx: &mut Context<Self>) {
        self.accept_timer = None;
        let holds = self.state == FsmState::Assigned
            && self.current.as_ref() == Some(&(task_id.clone(), generation));
        if !holds {
            return;
        }
        tracing::warn!(agent_id = %self.agent_id, task_id = %task_id, "acceptance timeout");
        self.unresponsive = true;
        self.reclaim(task_id.clone(), generation, "acceptance_timeout");
        // State first, so anyone who reacts to the push already sees it.
        self.become_idle(ctx, None);
        self.push(ServerFrame::TaskCancelled {
            task_id,
            reason: "acceptance_timeout".into(),
            timestamp: now_ms(),
        });
    }

    fn reclaim(&self, task_id: String, generation: u64, reason: &str) {
        self.queue.do_send(Reclaim {
            task_id,
            agent_id: self.agent_id.clone(),
            generation,
            reason: reason.to_string(),
        });
    }

    fn holds(&self, task_id: &str) -> bool {
        self.current.as_ref().is_some_and(|(t, _)| t == task_id)
    }
}

impl Actor for AgentFsm {
    type Context = Context<Self>;
}

/// A socket identified as this agent. The previous socket, if any, is closed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Connect {
    pub session: SessionHandle,
    pub name: Option<String>,
    pub status: Option<String>,
    pub capabilities: Vec<String>,
}

impl Handler<Connect> for AgentFsm {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(old) = self.session.take() {
            old.close.do_send(CloseSocket {
                code: 4000,
                reason: "replaced by a newer connection".into(),
            });
        }
        self.stop_accept_timer(ctx);
        self.scheduler.do_send(AgentUnavailable {
            agent_id: self.agent_id.clone(),
        });
        self.session = Some(msg.session);
        self.name = msg.name.unwrap_or_else(|| self.agent_id.clone());
        self.status = msg.status.unwrap_or_else(|| "connected".into());
        self.capabilities = msg.capabilities;
        self.connected_at = Some(now_ms());
        self.publish(Some(PresenceEvent::Joined));
        let held = self.queue.send(HeldBy {
            agent_id: self.agent_id.clone(),
        });
        AtomicResponse::new(Box::pin(held.into_actor(self).map(|held, act, ctx| {
            let mut held = held.unwrap_or_default().into_iter();
            match held.next() {
                Some(first) => {
                    // The hub holds a task for this agent: wait for it to accept or
                    // recover it.
                    act.await_acceptance(first.task_id, first.generation, ctx);
                    for extra in held {
                        act.reclaim(extra.task_id, extra.generation, "duplicate_assignment");
                    }
                }
                None => act.become_idle(ctx, None),
            }
        })))
    }
}

/// The socket `session_id` closed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Disconnect {
    pub session_id: u64,
}

impl Handler<Disconnect> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) {
        // A replaced socket's teardown must not touch the newer session.
        if self.session.as_ref().map(|s| s.id) != Some(msg.session_id) {
            return;
        }
        self.session = None;
        self.connected_at = None;
        self.status = "offline".into();
        self.stop_accept_timer(ctx);
        self.scheduler.do_send(AgentUnavailable {
            agent_id: self.agent_id.clone(),
        });
        if let Some((task_id, generation)) = self.current.take() {
            if self.stopping.is_set() {
                tracing::info!(agent_id = %self.agent_id, task_id = %task_id,
                               "hub stopping: task kept for recovery");
            } else {
                self.reclaim(task_id, generation, "disconnect");
            }
        }
        self.set_state(FsmState::Offline, None);
        self.publish(Some(PresenceEvent::Left));
    }
}

/// The scheduler gave this agent a task (already durably assigned).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Assigned(pub TaskAssignment);

impl Handler<Assigned> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Assigned, ctx: &mut Context<Self>) {
        let a = msg.0;
        let holds_this = self.current.as_ref() == Some(&(a.task_id.clone(), a.generation));
        if self.session.is_some() && holds_this {
            // The agent reconnected while this assignment was in flight and the queue
            // already counted the task as held. If it has not recovered it yet it
            // has not seen it: push it. Either way it is this agent's task.
            if self.state == FsmState::Assigned {
                self.push(ServerFrame::TaskAssign(a));
            }
            return;
        }
        if self.session.is_none() || self.state != FsmState::Idle {
            // Gone or busy since the scheduler looked: give the task straight back.
            self.reclaim(a.task_id, a.generation, "agent_unavailable");
            self.announce(ctx);
            return;
        }
        tracing::info!(agent_id = %self.agent_id, task_id = %a.task_id, generation = a.generation, "task pushed");
        let (task_id, generation) = (a.task_id.clone(), a.generation);
        self.push(ServerFrame::TaskAssign(a));
        self.await_acceptance(task_id, generation, ctx);
    }
}

/// The scheduler's assignment fell through; the agent may offer itself again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct NothingAssigned;

impl Handler<NothingAssigned> for AgentFsm {
    type Result = ();

    fn handle(&mut self, _: NothingAssigned, ctx: &mut Context<Self>) {
        self.announce(ctx);
    }
}

/// The queue took a task away from this agent (operator cancel, lease expiry,
/// overdue).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub(crate) struct Withdrawn {
    pub agent_id: String,
    pub task_id: String,
    pub generation: u64,
    pub reason: String,
}

impl Handler<Withdrawn> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Withdrawn, ctx: &mut Context<Self>) {
        if self.current.as_ref() == Some(&(msg.task_id.clone(), msg.generation)) {
            self.become_idle(ctx, None);
        }
        self.push(ServerFrame::TaskCancelled {
            task_id: msg.task_id,
            reason: msg.reason,
            timestamp: now_ms(),
        });
    }
}

/// The operator's controls of one agent (persisted by `Presence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AgentControls {
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub disabled: bool,
}

/// New operator controls for this agent.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Control(pub AgentControls);

impl Handler<Control> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        let before = self.controls;
        self.controls = msg.0;
        if self.controls.disabled && !before.disabled {
            if let Some((task_id, generation)) = self.current.clone() {
                // Disabled: the task goes back to the queue for another agent.
                self.reclaim(task_id.clone(), generation, RECLAIM_AGENT_DISABLED);
                self.become_idle(ctx, None);
                self.push(ServerFrame::TaskCancelled {
                    task_id,
                    reason: RECLAIM_AGENT_DISABLED.into(),
                    timestamp: now_ms(),
                });
            }
        }
        if self.state == FsmState::Idle {
            if self.controls.draining || self.controls.disabled {
                self.scheduler.do_send(AgentUnavailable {
                    agent_id: self.agent_id.clone(),
                });
            } else {
                self.announce(ctx);
            }
        }
        self.publish(Some(PresenceEvent::StatusChanged));
    }
}

/// Its credential group was paused for a usage limit until then, or resumed
/// (`None`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct UsagePause(pub Option<i64>);

impl Handler<UsagePause> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: UsagePause, ctx: &mut Context<Self>) {
        self.paused_until = msg.0;
        if self.state == FsmState::Idle {
            if self.is_paused() {
                self.scheduler.do_send(AgentUnavailable {
                    agent_id: self.agent_id.clone(),
                });
            } else {
                self.announce(ctx);
            }
        }
        self.publish(Some(PresenceEvent::StatusChanged));
    }
}

impl AgentFsm {
    /// The agent reported its provider's limit: it stops asking for work at
    /// once, and `Presence` pauses its whole credential group.
    fn usage_report(
        &mut self,
        resets_at: u64,
        task_id: Option<String>,
        reason: Option<String>,
    ) -> UsageReported {
        let resets_at = i64::try_from(resets_at).unwrap_or(i64::MAX);
        if resets_at > now_ms() {
            self.paused_until = Some(self.paused_until.unwrap_or(0).max(resets_at));
            if self.state == FsmState::Idle {
                self.scheduler.do_send(AgentUnavailable {
                    agent_id: self.agent_id.clone(),
                });
            }
        }
        UsageReported {
            agent_id: self.agent_id.clone(),
            resets_at,
            task_id,
            reason,
        }
    }
}

/// The agent's `status` frame.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetStatus(pub String);

impl Handler<SetStatus> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: SetStatus, _: &mut Context<Self>) {
        self.status = msg.0;
        self.publish(Some(PresenceEvent::StatusChanged));
    }
}

/// The agent's token was revoked: close its socket.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Revoked;

impl Handler<Revoked> for AgentFsm {
    type Result = ();

    fn handle(&mut self, _: Revoked, _: &mut Context<Self>) {
        if let Some(s) = &self.session {
            s.close.do_send(CloseSocket {
                code: 1008,
                reason: "token revoked".into(),
            });
        }
    }
}
