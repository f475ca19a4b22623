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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::agents::presence::{Presence, PresenceEvent, PresenceUpdate};
use crate::agents::scheduler::{AgentAvailable, AgentUnavailable, Scheduler};
use crate::agents::usage::UsageReported;
use crate::domain::task::RECLAIM_AGENT_DISABLED;
use crate::protocol::{AgentInfo, ServerFrame, Slots, TaskAssignment};
use crate::queue::{HeldBy, Reclaim, TaskQueue};
use crate::util::now_ms;

mod lifecycle;
mod slots;
pub(crate) use lifecycle::Lifecycle;
use slots::{HeldTask, HeldTasks};

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

/// The agent's state machine states (with slots: `working` while any task is
/// accepted, `assigned` while its tasks all await acceptance).
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
        self.offer(ctx);
        self.publish(None);
        ctx.run_later(msg.retry_after, |act, ctx| {
            if act
                .throttled_until
                .is_some_and(|u| u <= std::time::Instant::now())
            {
                act.throttled_until = None;
                act.publish(None);
                act.offer(ctx);
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
    /// Every task it holds, oldest first.
    pub running: Vec<HeldTask>,
    pub slots: Slots,
    pub flags: Vec<String>,
    pub last_state_change: i64,
    /// Its credential group is paused for a usage limit until then (ms).
    pub paused_until: Option<i64>,
}

impl AgentView {
    /// Its oldest task (the one task of a one-slot agent).
    pub(crate) fn current(&self) -> Option<&HeldTask> {
        self.running.first()
    }

    /// Everything the dashboard shows of an agent.
    pub(crate) fn card(&self) -> serde_json::Value {
        serde_json::json!({
            "agent_id": self.agent_id,
            "name": self.name,
            "status": self.status,
            "fsm_state": self.fsm_state.as_str(),
            "current_task_id": self.current().map(|t| &t.task_id),
            "running": self.running_json(),
            "slots": self.slots.slots,
            "reserve_slot_for_standing": self.slots.reserve_standing,
            "capabilities": self.capabilities,
            "connected_at": self.connected_at,
            "last_state_change": self.last_state_change,
            "flags": self.flags,
            "online": self.fsm_state != FsmState::Offline,
            "paused_until": self.paused_until,
        })
    }

    /// Each task it holds: id, generation, `assigned` (awaiting acceptance)
    /// or `working`, and whether it is a standing-order run.
    pub(crate) fn running_json(&self) -> serde_json::Value {
        self.running
            .iter()
            .map(|t| {
                serde_json::json!({
                    "task_id": t.task_id,
                    "generation": t.generation,
                    "state": if t.working { "working" } else { "assigned" },
                    "standing": t.standing,
                })
            })
            .collect()
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
    /// Identified and told what it holds (a socket alone is not enough).
    online: bool,
    /// Its tasks and slots.
    held: HeldTasks,
    /// The acceptance timer of each pushed task not yet accepted.
    accept_timers: HashMap<String, SpawnHandle>,
    /// The scheduler may hold an offer of this agent (told `AgentAvailable`,
    /// and neither withdrawn nor used by a match since).
    offered: bool,
    session: Option<SessionHandle>,
    name: String,
    status: String,
    capabilities: Vec<String>,
    connected_at: Option<i64>,
    unresponsive: bool,
    /// Over its rate limit until then: offered no new tasks (PROTOCOL.md 5).
    throttled_until: Option<std::time::Instant>,
    /// Operator controls: a draining agent finishes its tasks and takes no new
    /// one; a disabled agent loses its tasks and takes none.
    controls: AgentControls,
    /// Its credential group's usage limit: offered no work before then (ms).
    paused_until: Option<i64>,
    /// Its credential group (its token's, else the agent alone): its spend
    /// counts toward the group's daily budget.
    credential_group: String,
    idle_since: i64,
    last_state_change: i64,
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
        credential_group: String,
    ) -> Self {
        let now = now_ms();
        AgentFsm {
            credential_group,
            name: agent_id.clone(),
            agent_id,
            online: false,
            held: HeldTasks::default(),
            accept_timers: HashMap::new(),
            offered: false,
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
            timings,
            stopping,
            queue,
            scheduler,
            presence,
        }
    }

    fn state(&self) -> FsmState {
        if !self.online {
            FsmState::Offline
        } else if self.held.any_working() {
            FsmState::Working
        } else if !self.held.is_empty() {
            FsmState::Assigned
        } else {
            FsmState::Idle
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
            fsm_state: self.state(),
            running: self.held.iter().cloned().collect(),
            slots: self.held.slots(),
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

    /// What it holds changed: note when, and tell `Presence`.
    fn changed(&mut self) {
        self.last_state_change = now_ms();
        self.publish(None);
    }

    fn push(&self, frame: ServerFrame) {
        if let (Some(s), Some(push)) = (&self.session, Push::encode(&frame)) {
            s.push.do_send(push);
        }
    }

    fn stop_accept_timer(&mut self, task_id: &str, ctx: &mut Context<Self>) {
        if let Some(h) = self.accept_timers.remove(task_id) {
            ctx.cancel_future(h);
        }
    }

    fn stop_accept_timers(&mut self, ctx: &mut Context<Self>) {
        for (_, h) in self.accept_timers.drain() {
            ctx.cancel_future(h);
        }
    }

    /// Lets go of a task (it ended, or the hub took it back): a slot is free,
    /// and the agent offers itself (after `delay`, if any).
    fn release_task(&mut self, task_id: &str, ctx: &mut Context<Self>, delay: Option<Duration>) {
        self.stop_accept_timer(task_id, ctx);
        if self.held.release(task_id).is_none() {
            return;
        }
        self.idle_since = now_ms();
        self.changed();
        match delay {
            Some(d) => {
                // A rejection: no offer (not even of another free slot) until
                // the backoff is over, so the task does not come straight back.
                if self.offered {
                    self.offered = false;
                    self.scheduler.do_send(AgentUnavailable {
                        agent_id: self.agent_id.clone(),
                    });
                }
                ctx.run_later(d, |act, ctx| act.offer(ctx));
            }
            None => self.offer(ctx),
        }
    }

    fn is_throttled(&self) -> bool {
        self.throttled_until
            .is_some_and(|until| until > std::time::Instant::now())
    }

    /// What the scheduler may give this agent now: `None` for nothing,
    /// `Some(true)` for standing-order runs only (its kept slot), `Some(false)`
    /// for anything it covers.
    fn room(&self) -> Option<bool> {
        if !self.online
            || self.session.is_none()
            || self.is_throttled()
            || self.controls.draining
            || self.controls.disabled
            || self.is_paused()
        {
            return None;
        }
        self.held.room()
    }

    /// Tells the scheduler what this agent may take now: an offer while a slot
    /// is free, a withdrawal of an earlier offer when none is.
    fn offer(&mut self, ctx: &mut Context<Self>) {
        let Some(standing_only) = self.room() else {
            if self.offered {
                self.offered = false;
                self.scheduler.do_send(AgentUnavailable {
                    agent_id: self.agent_id.clone(),
                });
            }
            return;
        };
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
        self.offered = true;
        self.scheduler.do_send(AgentAvailable {
            agent_id: self.agent_id.clone(),
            capabilities,
            idle_since,
            standing_only,
            fsm: ctx.address(),
        });
    }

    /// Holds `task_id` at `generation`, waiting for `task_accepted`.
    fn await_acceptance(
        &mut self,
        task_id: String,
        generation: u64,
        standing: bool,
        ctx: &mut Context<Self>,
    ) {
        self.stop_accept_timer(&task_id, ctx);
        self.held.hold(task_id.clone(), generation, standing);
        let timer_id = task_id.clone();
        let handle = ctx.run_later(self.timings.acceptance_timeout, move |act, ctx| {
            act.acceptance_expired(task_id, generation, ctx)
        });
        self.accept_timers.insert(timer_id, handle);
        self.changed();
    }

    fn acceptance_expired(&mut self, task_id: String, generation: u64, ctx: &mut Context<Self>) {
        self.accept_timers.remove(&task_id);
        let waiting = self
            .held
            .get(&task_id)
            .is_some_and(|t| t.generation == generation && !t.working);
        if !waiting {
            return;
        }
        tracing::warn!(agent_id = %self.agent_id, task_id = %task_id, "acceptance timeout");
        self.unresponsive = true;
        self.reclaim(task_id.clone(), generation, "acceptance_timeout");
        // State first, so anyone who reacts to the push already sees it.
        self.release_task(&task_id, ctx, None);
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
    pub slots: Slots,
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
        self.stop_accept_timers(ctx);
        self.offered = false;
        self.scheduler.do_send(AgentUnavailable {
            agent_id: self.agent_id.clone(),
        });
        self.online = false;
        self.session = Some(msg.session);
        self.name = msg.name.unwrap_or_else(|| self.agent_id.clone());
        self.status = msg.status.unwrap_or_else(|| "connected".into());
        self.capabilities = msg.capabilities;
        self.connected_at = Some(now_ms());
        self.held.set_slots(msg.slots);
        self.publish(Some(PresenceEvent::Joined));
        let held = self.queue.send(HeldBy {
            agent_id: self.agent_id.clone(),
        });
        AtomicResponse::new(Box::pin(held.into_actor(self).map(|held, act, ctx| {
            // The queue is the truth: the agent holds what the queue says, as
            // far as its slots go; it must accept or recover each.
            act.held.take_all();
            act.online = true;
            let slots = act.held.slots().slots as usize;
            for (i, h) in held.unwrap_or_default().into_iter().enumerate() {
                if i < slots {
                    act.await_acceptance(h.task_id, h.generation, h.standing, ctx);
                } else {
                    act.reclaim(h.task_id, h.generation, "duplicate_assignment");
                }
            }
            act.idle_since = now_ms();
            act.changed();
            act.offer(ctx);
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
        self.online = false;
        self.stop_accept_timers(ctx);
        self.offered = false;
        self.scheduler.do_send(AgentUnavailable {
            agent_id: self.agent_id.clone(),
        });
        for t in self.held.take_all() {
            if self.stopping.is_set() {
                tracing::info!(agent_id = %self.agent_id, task_id = %t.task_id,
                               "hub stopping: task kept for recovery");
            } else {
                self.reclaim(t.task_id, t.generation, "disconnect");
            }
        }
        self.changed();
        self.publish(Some(PresenceEvent::Left));
    }
}

/// The scheduler gave this agent a task (already durably assigned); `standing`:
/// a standing-order run.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Assigned {
    pub assignment: TaskAssignment,
    pub standing: bool,
}

impl Handler<Assigned> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Assigned, ctx: &mut Context<Self>) {
        // A match uses the scheduler's offer of this agent.
        self.offered = false;
        let a = msg.assignment;
        if self.session.is_some() && self.held.holds_at(&a.task_id, a.generation) {
            // The agent reconnected while this assignment was in flight and the queue
            // already counted the task as held. If it has not recovered it yet it
            // has not seen it: push it. Either way it is this agent's task.
            if self.held.get(&a.task_id).is_some_and(|t| !t.working) {
                self.push(ServerFrame::TaskAssign(a));
            }
            self.offer(ctx);
            return;
        }
        if self.session.is_none() || !self.online || !self.held.fits(msg.standing) {
            // Gone or busy since the scheduler looked: give the task straight back.
            self.reclaim(a.task_id, a.generation, "agent_unavailable");
            self.offer(ctx);
            return;
        }
        tracing::info!(agent_id = %self.agent_id, task_id = %a.task_id, generation = a.generation, "task pushed");
        let (task_id, generation) = (a.task_id.clone(), a.generation);
        self.push(ServerFrame::TaskAssign(a));
        self.await_acceptance(task_id, generation, msg.standing, ctx);
        self.offer(ctx);
    }
}

/// The scheduler's assignment fell through; the agent may offer itself again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct NothingAssigned;

impl Handler<NothingAssigned> for AgentFsm {
    type Result = ();

    fn handle(&mut self, _: NothingAssigned, ctx: &mut Context<Self>) {
        // The match that fell through used the scheduler's offer.
        self.offered = false;
        self.offer(ctx);
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
    /// Sent instead of `task_cancelled` (an approval that completed the task
    /// tells the holder so).
    pub notice: Option<ServerFrame>,
}

impl Handler<Withdrawn> for AgentFsm {
    type Result = ();

    fn handle(&mut self, msg: Withdrawn, ctx: &mut Context<Self>) {
        if self.held.holds_at(&msg.task_id, msg.generation) {
            self.release_task(&msg.task_id, ctx, None);
        }
        self.push(msg.notice.unwrap_or_else(|| ServerFrame::TaskCancelled {
            task_id: msg.task_id,
            reason: msg.reason,
            timestamp: now_ms(),
        }));
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
            let held: Vec<(String, u64)> = self
                .held
                .iter()
                .map(|t| (t.task_id.clone(), t.generation))
                .collect();
            for (task_id, generation) in held {
                // Disabled: its tasks go back to the queue for other agents.
                self.reclaim(task_id.clone(), generation, RECLAIM_AGENT_DISABLED);
                self.release_task(&task_id, ctx, None);
                self.push(ServerFrame::TaskCancelled {
                    task_id,
                    reason: RECLAIM_AGENT_DISABLED.into(),
                    timestamp: now_ms(),
                });
            }
        }
        self.offer(ctx);
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
        self.offer(ctx);
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
        ctx: &mut Context<Self>,
    ) -> UsageReported {
        let resets_at = i64::try_from(resets_at).unwrap_or(i64::MAX);
        if resets_at > now_ms() {
            self.paused_until = Some(self.paused_until.unwrap_or(0).max(resets_at));
            self.offer(ctx);
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
