//! `Presence`: the registry of agents.
//!
//! It creates each agent's `AgentFsm` on first use and routes messages to it, keeps
//! the latest view every FSM published (so listings never have to ask every agent),
//! pushes `agent_joined` / `agent_left` / `status_changed` to the other online
//! agents, and remembers violation cooldowns (PROTOCOL.md 1.2).
//!
//! Architecture invariant: presence holds copies, never the truth: an agent's state
//! belongs to its FSM, which publishes every change here. Presence never changes a
//! task or an agent's state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;

use crate::agents::auth::Tokens;
use crate::agents::fsm::{
    AgentControls, AgentFsm, AgentView, Control, FsmState, FsmTimings, HubStopping, Push, Revoked,
    UsagePause, Withdrawn,
};
use crate::agents::scheduler::Scheduler;
use crate::domain::usage::UsagePauses;
use crate::error::StoreError;
use crate::ops::telemetry::{Counter, Telemetry};
use crate::protocol::ServerFrame;
use crate::queue::TaskQueue;
use crate::storage::bus::{EventBus, HubEvent};
use crate::storage::eventlog::{EventLog, NewEvent};
use crate::storage::store::{decode, encode, Store};
use crate::util::now_ms;

/// Cooldowns after the 1st, 2nd and later violation disconnects (seconds).
const COOLDOWN_SECS: [i64; 3] = [30, 60, 300];
/// A violation-disconnect count resets after this long without one (ms).
const COOLDOWN_DECAY_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy)]
struct Cooldown {
    disconnects: usize,
    last_at: i64,
    until: i64,
}

pub(crate) struct Presence {
    pub(super) fsms: HashMap<String, Addr<AgentFsm>>,
    views: HashMap<String, AgentView>,
    online: HashMap<String, Recipient<Push>>,
    cooldowns: HashMap<String, Cooldown>,
    timings: FsmTimings,
    pub(super) deps: PresenceDeps,
    /// Usage-limit pauses of credential groups, persisted in `meta` (`usage`).
    pub(super) usage: UsagePauses,
    /// Operator controls by agent, persisted in `meta`.
    controls: HashMap<String, AgentControls>,
    /// Agents that connected since the hub started (`agent_offline` watches them).
    seen_online: HashSet<String>,
}

/// What `Presence` works with: the actors the FSMs it creates talk to, the store
/// that keeps operator controls, the event log of connects and disconnects, the
/// bus, telemetry, and the hub's stop flag (handed to every FSM).
pub(crate) struct PresenceDeps {
    pub queue: Addr<TaskQueue>,
    pub scheduler: Addr<Scheduler>,
    pub store: Store,
    pub log: EventLog,
    pub bus: EventBus,
    pub telemetry: Arc<Telemetry>,
    pub stopping: HubStopping,
    /// Agents' credential groups (usage-limit pauses).
    pub tokens: Tokens,
}

/// Where agent controls are kept in `meta`.
const CONTROLS_KEY: &str = "agent_controls";

impl Presence {
    /// Builds the registry; operator controls (drain, disable) load from the store.
    pub(crate) fn load(timings: FsmTimings, deps: PresenceDeps) -> Result<Presence, StoreError> {
        let controls = match deps.store.meta.get(CONTROLS_KEY)? {
            Some(v) => decode("meta", CONTROLS_KEY.as_bytes(), &v)?,
            None => HashMap::new(),
        };
        let usage = super::usage::load_pauses(&deps.store)?;
        Ok(Presence {
            usage,
            fsms: HashMap::new(),
            views: HashMap::new(),
            online: HashMap::new(),
            cooldowns: HashMap::new(),
            timings,
            deps,
            controls,
            seen_online: HashSet::new(),
        })
    }

    fn broadcast(&self, except: &str, frame: ServerFrame) {
        let Some(encoded) = Push::encode(&frame) else {
            return;
        };
        for (agent_id, push) in &self.online {
            if agent_id != except {
                push.do_send(encoded.clone());
            }
        }
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Pauses kept across the restart end at their time (or now, if past).
        let now = crate::util::now_ms();
        for (group, p) in self.usage.list(i64::MIN) {
            self.resume_at(group.to_string(), p.until.max(now), ctx);
        }
    }
}

/// The FSM of an agent, created on first use.
#[derive(Message)]
#[rtype(result = "Addr<AgentFsm>")]
pub(crate) struct FsmFor {
    pub agent_id: String,
}

impl Handler<FsmFor> for Presence {
    type Result = MessageResult<FsmFor>;

    fn handle(&mut self, msg: FsmFor, ctx: &mut Context<Self>) -> Self::Result {
        let (timings, queue, scheduler, stopping, me) = (
            self.timings,
            self.deps.queue.clone(),
            self.deps.scheduler.clone(),
            self.deps.stopping.clone(),
            ctx.address(),
        );
        let controls = self.controls.get(&msg.agent_id).copied();
        let paused = self.paused_until(&msg.agent_id);
        let group = self.group_of(&msg.agent_id);
        let addr = self
            .fsms
            .entry(msg.agent_id.clone())
            .or_insert_with(|| {
                let fsm =
                    AgentFsm::new(msg.agent_id, timings, stopping, queue, scheduler, me, group)
                        .start();
                if let Some(c) = controls {
                    fsm.do_send(Control(c));
                }
                if paused.is_some() {
                    fsm.do_send(UsagePause(paused));
                }
                fsm
            })
            .clone();
        MessageResult(addr)
    }
}

/// Routes a withdrawal notice to the agent's FSM (if it ever connected).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ToAgent(pub Withdrawn);

impl Handler<ToAgent> for Presence {
    type Result = ();

    fn handle(&mut self, msg: ToAgent, _: &mut Context<Self>) {
        if let Some(fsm) = self.fsms.get(&msg.0.agent_id) {
            fsm.do_send(msg.0);
        }
    }
}

/// Closes the socket of an agent whose token was revoked.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RevokeAgent {
    pub agent_id: String,
}

impl Handler<RevokeAgent> for Presence {
    type Result = ();

    fn handle(&mut self, msg: RevokeAgent, _: &mut Context<Self>) {
        if let Some(fsm) = self.fsms.get(&msg.agent_id) {
            fsm.do_send(Revoked);
        }
    }
}

/// An operator control of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentAction {
    Drain,
    Undrain,
    Disable,
    Enable,
}

impl AgentAction {
    pub(crate) fn parse(s: &str) -> Option<AgentAction> {
        match s {
            "drain" => Some(AgentAction::Drain),
            "undrain" => Some(AgentAction::Undrain),
            "disable" => Some(AgentAction::Disable),
            "enable" => Some(AgentAction::Enable),
            _ => None,
        }
    }

    /// The event-log kind.
    fn kind(self) -> &'static str {
        match self {
            AgentAction::Drain => "agent_drained",
            AgentAction::Undrain => "agent_undrained",
            AgentAction::Disable => "agent_disabled",
            AgentAction::Enable => "agent_enabled",
        }
    }
}

/// Applies an operator control to an agent (known to exist): persisted, logged
/// with its actor, then handed to the agent's FSM. Answers the agent's controls.
#[derive(Message)]
#[rtype(result = "Result<AgentControls, StoreError>")]
pub(crate) struct ControlAgent {
    pub agent_id: String,
    pub action: AgentAction,
    pub by: String,
}

impl Handler<ControlAgent> for Presence {
    type Result = ResponseActFuture<Self, Result<AgentControls, StoreError>>;

    fn handle(&mut self, msg: ControlAgent, ctx: &mut Context<Self>) -> Self::Result {
        let mut controls = self
            .controls
            .get(&msg.agent_id)
            .copied()
            .unwrap_or_default();
        match msg.action {
            AgentAction::Drain => controls.draining = true,
            AgentAction::Undrain => controls.draining = false,
            AgentAction::Disable => controls.disabled = true,
            AgentAction::Enable => controls.disabled = false,
        }
        let mut all = self.controls.clone();
        if controls == AgentControls::default() {
            all.remove(&msg.agent_id);
        } else {
            all.insert(msg.agent_id.clone(), controls);
        }
        let written = self
            .deps
            .store
            .meta
            .insert(CONTROLS_KEY, encode(&all))
            .map_err(StoreError::from)
            .and_then(|_| {
                self.deps.log.append([NewEvent::untasked(
                    msg.action.kind(),
                    Some(msg.agent_id.clone()),
                    &msg.by,
                    serde_json::json!({"draining": controls.draining, "disabled": controls.disabled}),
                )])
            });
        if let Err(e) = written {
            return Box::pin(fut::ready(Err(e)));
        }
        self.controls = all;
        let fsm = <Self as Handler<FsmFor>>::handle(
            self,
            FsmFor {
                agent_id: msg.agent_id.clone(),
            },
            ctx,
        )
        .0;
        tracing::info!(agent_id = %msg.agent_id, by = %msg.by, action = msg.action.kind(), "agent control");
        // Durable before visible: the FSM acts after the flush, and the caller
        // hears only once it has (so a listing asked for after the answer already
        // shows the new controls).
        let durable = self.deps.store.durable();
        let agent_id = msg.agent_id;
        Box::pin(
            async move {
                durable.await?;
                if let Err(e) = fsm.send(Control(controls)).await {
                    tracing::error!(agent_id = %agent_id, error = %e, "agent state machine unreachable");
                }
                Ok(controls)
            }
            .into_actor(self),
        )
    }
}

/// What changed for other agents to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresenceEvent {
    Joined,
    Left,
    StatusChanged,
}

/// An FSM's latest view of itself.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PresenceUpdate {
    pub view: AgentView,
    pub push: Option<Recipient<Push>>,
    pub event: Option<PresenceEvent>,
}

impl Handler<PresenceUpdate> for Presence {
    type Result = ();

    fn handle(&mut self, msg: PresenceUpdate, _: &mut Context<Self>) {
        let agent_id = msg.view.agent_id.clone();
        match msg.push {
            Some(push) => {
                self.online.insert(agent_id.clone(), push);
            }
            None => {
                self.online.remove(&agent_id);
            }
        }
        let logged = match msg.event {
            Some(PresenceEvent::Joined) => {
                self.deps.telemetry.add(Counter::Connected, 1);
                self.seen_online.insert(agent_id.clone());
                Some("agent_connected")
            }
            Some(PresenceEvent::Left) => {
                self.deps.telemetry.add(Counter::Disconnected, 1);
                Some("agent_disconnected")
            }
            _ => None,
        };
        if let Some(kind) = logged {
            let info = msg.view.info(false);
            let event = NewEvent::untasked(
                kind,
                Some(agent_id.clone()),
                &agent_id,
                serde_json::json!({"name": info.name, "capabilities": info.capabilities,
                                   "slots": msg.view.slots.slots,
                                   "reserve_slot_for_standing": msg.view.slots.reserve_standing}),
            );
            // Durable with the next flush of the store (a connect acknowledges nothing).
            if let Err(e) = self.deps.log.record([event]) {
                tracing::error!(agent_id = %agent_id, error = %e, "event log write failed");
            }
        }
        let frame = match msg.event {
            Some(PresenceEvent::Joined) => Some(ServerFrame::AgentJoined {
                agent: msg.view.info(false),
            }),
            Some(PresenceEvent::Left) => Some(ServerFrame::AgentLeft {
                agent_id: agent_id.clone(),
            }),
            Some(PresenceEvent::StatusChanged) => Some(ServerFrame::StatusChanged {
                agent: msg.view.info(false),
            }),
            None => None,
        };
        if let Some(frame) = frame {
            self.broadcast(&agent_id, frame);
        }
        if self.deps.bus.watched() {
            self.deps.bus.publish(match msg.event {
                Some(PresenceEvent::Joined) => HubEvent::AgentJoined {
                    agent: msg.view.card(),
                },
                Some(PresenceEvent::Left) => HubEvent::AgentLeft {
                    agent_id: agent_id.clone(),
                },
                _ => HubEvent::StatusChanged {
                    agent: msg.view.card(),
                },
            });
        }
        self.views.insert(agent_id, msg.view);
    }
}

/// Every known agent (or only the online ones), by id.
#[derive(Message)]
#[rtype(result = "Vec<AgentView>")]
pub(crate) struct ListAgents {
    pub online_only: bool,
}

impl Handler<ListAgents> for Presence {
    type Result = MessageResult<ListAgents>;

    fn handle(&mut self, msg: ListAgents, _: &mut Context<Self>) -> Self::Result {
        let mut out: Vec<AgentView> = self
            .views
            .values()
            .filter(|v| !msg.online_only || self.online.contains_key(&v.agent_id))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        MessageResult(out)
    }
}

/// One agent's view.
#[derive(Message)]
#[rtype(result = "Option<AgentView>")]
pub(crate) struct AgentState {
    pub agent_id: String,
}

impl Handler<AgentState> for Presence {
    type Result = Option<AgentView>;

    fn handle(&mut self, msg: AgentState, _: &mut Context<Self>) -> Self::Result {
        self.views.get(&msg.agent_id).cloned()
    }
}

/// How many agents are online.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct OnlineCount;

impl Handler<OnlineCount> for Presence {
    type Result = usize;

    fn handle(&mut self, _: OnlineCount, _: &mut Context<Self>) -> usize {
        self.online.len()
    }
}

/// Online agents and how many of them hold a task (assigned or working): counts
/// only, so metrics do not copy every agent's view.
#[derive(Message)]
#[rtype(result = "(u64, u64)")]
pub(crate) struct OnlineAndBusy;

impl Handler<OnlineAndBusy> for Presence {
    type Result = MessageResult<OnlineAndBusy>;

    fn handle(&mut self, _: OnlineAndBusy, _: &mut Context<Self>) -> Self::Result {
        let busy = self
            .online
            .keys()
            .filter_map(|id| self.views.get(id))
            .filter(|v| matches!(v.fsm_state, FsmState::Assigned | FsmState::Working))
            .count();
        MessageResult((self.online.len() as u64, busy as u64))
    }
}

/// What the fleet alerts read: agents that were online and are offline since
/// before `offline_before` (with since when), and every online agent's
/// capabilities (its implicit `agent:<id>` included).
#[derive(Message)]
#[rtype(result = "FleetState")]
pub(crate) struct Fleet {
    pub offline_before: i64,
}

#[derive(Debug, Default)]
pub(crate) struct FleetState {
    pub offline: Vec<(String, i64)>,
    pub online_capabilities: Vec<Vec<String>>,
    /// Credential groups paused for a usage limit, with until when.
    pub usage_paused: Vec<(String, i64)>,
}

impl Handler<Fleet> for Presence {
    type Result = MessageResult<Fleet>;

    fn handle(&mut self, msg: Fleet, _: &mut Context<Self>) -> Self::Result {
        let mut offline: Vec<(String, i64)> = self
            .seen_online
            .iter()
            .filter(|id| !self.online.contains_key(*id))
            .filter_map(|id| self.views.get(id))
            .filter(|v| {
                v.fsm_state == FsmState::Offline && v.last_state_change < msg.offline_before
            })
            .map(|v| (v.agent_id.clone(), v.last_state_change))
            .collect();
        offline.sort_by_key(|(_, since)| *since);
        let online_capabilities = self
            .online
            .keys()
            .filter_map(|id| self.views.get(id))
            .map(|v| {
                let mut caps = v.capabilities.clone();
                caps.push(format!("agent:{}", v.agent_id));
                caps
            })
            .collect();
        let usage_paused = self
            .usage
            .list(now_ms())
            .into_iter()
            .map(|(g, p)| (g.to_string(), p.until))
            .collect();
        MessageResult(FleetState {
            offline,
            online_capabilities,
            usage_paused,
        })
    }
}

/// Seconds left of the agent's violation cooldown, if one is active.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub(crate) struct CooldownLeft {
    pub agent_id: String,
}

impl Handler<CooldownLeft> for Presence {
    type Result = Option<u64>;

    fn handle(&mut self, msg: CooldownLeft, _: &mut Context<Self>) -> Option<u64> {
        let now = now_ms();
        let c = self.cooldowns.get(&msg.agent_id)?;
        (c.until > now).then(|| ((c.until - now + 999) / 1000) as u64)
    }
}

/// The agent's socket was closed for too many validation errors.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ViolationDisconnect {
    pub agent_id: String,
}

impl Handler<ViolationDisconnect> for Presence {
    type Result = ();

    fn handle(&mut self, msg: ViolationDisconnect, _: &mut Context<Self>) {
        let previous = self.cooldowns.get(&msg.agent_id).copied();
        self.cooldowns
            .insert(msg.agent_id, Cooldown::after(previous, now_ms()));
    }
}

impl Cooldown {
    /// The cooldown after a violation disconnect at `now` (PROTOCOL.md 1.2): 30 s,
    /// then 60 s, then 300 s for every later one; the count starts over after an
    /// hour without a violation disconnect.
    fn after(previous: Option<Cooldown>, now: i64) -> Cooldown {
        let disconnects = match previous {
            Some(p) if now - p.last_at <= COOLDOWN_DECAY_MS => p.disconnects + 1,
            _ => 1,
        };
        let secs = COOLDOWN_SECS[(disconnects - 1).min(COOLDOWN_SECS.len() - 1)];
        Cooldown {
            disconnects,
            last_at: now,
            until: now + secs * 1000,
        }
    }
}

/// Push a frame to one agent if it is online; answers whether it was handed to a
/// live socket.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Deliver {
    pub agent_id: String,
    pub frame: ServerFrame,
}

impl Handler<Deliver> for Presence {
    type Result = bool;

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) -> bool {
        self.online
            .get(&msg.agent_id)
            .zip(Push::encode(&msg.frame))
            .is_some_and(|(push, encoded)| push.try_send(encoded).is_ok())
    }
}

/// Push a frame to those of `agents` that are online.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DeliverMany {
    pub agents: Vec<String>,
    pub frame: ServerFrame,
}

impl Handler<DeliverMany> for Presence {
    type Result = ();

    fn handle(&mut self, msg: DeliverMany, _: &mut Context<Self>) {
        let Some(encoded) = Push::encode(&msg.frame) else {
            return;
        };
        for agent_id in &msg.agents {
            if let Some(push) = self.online.get(agent_id) {
                push.do_send(encoded.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldowns_grow_30_60_300_and_start_over_after_an_hour() {
        let mut c = None;
        let mut t = 1_000_000;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let next = Cooldown::after(c, t);
            lengths.push((next.until - t) / 1000);
            c = Some(next);
            t += 10 * 60 * 1000; // ten minutes apart: within the hour
        }
        assert_eq!(lengths, [30, 60, 300, 300, 300]);
        // An hour and a bit without a violation disconnect: back to 30 s.
        let last = c.expect("cooldown");
        let fresh = Cooldown::after(c, last.last_at + COOLDOWN_DECAY_MS + 1);
        assert_eq!(
            (fresh.disconnects, (fresh.until - fresh.last_at) / 1000),
            (1, 30)
        );
        // Exactly an hour still counts as within it.
        let within = Cooldown::after(c, last.last_at + COOLDOWN_DECAY_MS);
        assert_eq!(within.disconnects, 6);
    }
}

/// Sets an agent's status line (what `status` over its socket does), from
/// HTTP (`agentcom-sidecar status`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetAgentStatus {
    pub agent_id: String,
    pub status: String,
}

impl Handler<SetAgentStatus> for Presence {
    type Result = ();

    fn handle(&mut self, msg: SetAgentStatus, ctx: &mut Context<Self>) {
        let fsm = <Self as Handler<FsmFor>>::handle(
            self,
            FsmFor {
                agent_id: msg.agent_id,
            },
            ctx,
        );
        fsm.0.do_send(crate::agents::fsm::SetStatus(msg.status));
    }
}
