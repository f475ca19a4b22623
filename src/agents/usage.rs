//! Usage-limit pauses, kept by `Presence` (ext, PROTOCOL.md 6.23): an agent's
//! `usage_limited` report pauses every agent of its credential group (the
//! token's `credential_group`, else the agent alone) until `resets_at`. The
//! pause is written to `meta` and recorded (`usage_paused`) before anyone is
//! told; each FSM of the group then stops asking for work. At `resets_at` the
//! pause ends by itself (`usage_resumed`, actor `hub`); an operator may end it
//! earlier. The rules are `domain::usage`; this file adds storage, timers and
//! messages.
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`UsageReported`] | `AgentFsm` (`usage_limited`) | the group and until when, after the flush |
//! | [`ResumeUsage`] | `POST /api/usage/:group/resume` | the pause that ended, after the flush |
//! | [`UsageList`] | `GET /api/usage`, the dashboard, the alerter | every pause in force |

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::fsm::UsagePause;
use super::presence::Presence;
use super::scheduler::AgentUnavailable;
use crate::domain::usage::{group_of, Reported, UsagePauses};
use crate::error::StoreError;
use crate::storage::bus::HubEvent;
use crate::storage::eventlog::NewEvent;
use crate::storage::store::{decode, encode};
use crate::util::now_ms;

/// Where the pauses are kept in `meta`.
const PAUSES_KEY: &str = "usage_pauses";

/// Loads the pauses (none when nothing is stored).
pub(crate) fn load_pauses(store: &crate::storage::store::Store) -> Result<UsagePauses, StoreError> {
    match store.meta.get(PAUSES_KEY)? {
        Some(v) => decode("meta", PAUSES_KEY.as_bytes(), &v),
        None => Ok(UsagePauses::default()),
    }
}

/// An agent reported its provider's usage limit.
#[derive(Message)]
#[rtype(result = "Result<(String, i64), StoreError>")]
pub(crate) struct UsageReported {
    pub agent_id: String,
    pub resets_at: i64,
    pub task_id: Option<String>,
    pub reason: Option<String>,
}

impl Handler<UsageReported> for Presence {
    type Result = ResponseActFuture<Self, Result<(String, i64), StoreError>>;

    fn handle(&mut self, msg: UsageReported, ctx: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let group = self.group_of(&msg.agent_id);
        let mut pauses = self.usage.clone();
        let who = (
            msg.agent_id.as_str(),
            msg.task_id.as_deref(),
            msg.reason.as_deref(),
        );
        let reported = pauses.report(&group, msg.resets_at, who, now);
        let until = pauses.paused_until(&group, now).unwrap_or(now);
        let answer = (group.clone(), until);
        if reported == Reported::Unchanged {
            return Box::pin(fut::ready(Ok(answer)));
        }
        let event = NewEvent::untasked(
            "usage_paused",
            Some(msg.agent_id.clone()),
            &msg.agent_id,
            json!({"credential_group": group, "until": until, "task_id": msg.task_id,
                   "reason": msg.reason, "extended": reported == Reported::Extended}),
        );
        if let Err(e) = self.save_pauses(&pauses, event) {
            return Box::pin(fut::ready(Err(e)));
        }
        self.usage = pauses;
        tracing::warn!(credential_group = %group, until, agent_id = %msg.agent_id, "usage limit: group paused");
        self.resume_at(group.clone(), until, ctx);
        // Told at once: a pause only withholds work (were it lost in a crash,
        // the group would resume early, nothing more).
        self.tell_group(&group, Some(until));
        Box::pin(
            self.deps
                .store
                .durable()
                .into_actor(self)
                .map(move |flushed, act, _| {
                    flushed?;
                    act.announce_usage();
                    Ok(answer)
                }),
        )
    }
}

/// An operator ends a pause before its time.
#[derive(Message)]
#[rtype(result = "Result<Option<Value>, StoreError>")]
pub(crate) struct ResumeUsage {
    pub credential_group: String,
    pub by: String,
}

impl Handler<ResumeUsage> for Presence {
    type Result = ResponseActFuture<Self, Result<Option<Value>, StoreError>>;

    fn handle(&mut self, msg: ResumeUsage, _: &mut Context<Self>) -> Self::Result {
        match self.end_pause(&msg.credential_group, &msg.by) {
            Ok(Some(ended)) => Box::pin(self.deps.store.durable().into_actor(self).map(
                move |flushed, act, _| {
                    flushed?;
                    act.tell_group(&msg.credential_group, None);
                    act.announce_usage();
                    Ok(Some(ended))
                },
            )),
            other => Box::pin(fut::ready(other)),
        }
    }
}

/// Every pause in force: `{credential_group, until, since, reported_by, task_id, reason}`.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub(crate) struct UsageList;

impl Handler<UsageList> for Presence {
    type Result = MessageResult<UsageList>;

    fn handle(&mut self, _: UsageList, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.usage_view())
    }
}

/// A pause's time came (a timer of `Presence`).
#[derive(Message)]
#[rtype(result = "()")]
struct PauseDue(String);

impl Handler<PauseDue> for Presence {
    type Result = ();

    fn handle(&mut self, msg: PauseDue, ctx: &mut Context<Self>) {
        let now = now_ms();
        if !self.usage.due(now).contains(&msg.0) {
            // Extended meanwhile, or resumed already: its own timer decides.
            if let Some(until) = self.usage.paused_until(&msg.0, now) {
                self.resume_at(msg.0, until, ctx);
            }
            return;
        }
        match self.end_pause(&msg.0, "hub") {
            Ok(_) => {
                let group = msg.0;
                ctx.spawn(self.deps.store.durable().into_actor(self).map(
                    move |flushed, act, _| match flushed {
                        Ok(()) => {
                            act.tell_group(&group, None);
                            act.announce_usage();
                        }
                        Err(e) => tracing::error!(error = %e, "usage resume not durable"),
                    },
                ));
            }
            Err(e) => tracing::error!(error = %e, credential_group = %msg.0, "usage resume failed"),
        }
    }
}

impl Presence {
    /// The credential group of `agent_id` (its token's; else the agent alone).
    pub(crate) fn group_of(&self, agent_id: &str) -> String {
        let record = self.deps.tokens.get(agent_id).ok().flatten();
        group_of(agent_id, record.and_then(|r| r.credential_group).as_deref())
    }

    /// Until when `agent_id`'s group is paused, if it is.
    pub(crate) fn paused_until(&self, agent_id: &str) -> Option<i64> {
        self.usage.paused_until(&self.group_of(agent_id), now_ms())
    }

    /// Schedules the end of `group`'s pause at `until`.
    pub(crate) fn resume_at(&self, group: String, until: i64, ctx: &mut Context<Self>) {
        let wait =
            Duration::from_millis(u64::try_from(until.saturating_sub(now_ms())).unwrap_or(0));
        ctx.notify_later(PauseDue(group), wait);
    }

    /// Ends `group`'s pause (recorded, written; made durable by the caller).
    fn end_pause(&mut self, group: &str, by: &str) -> Result<Option<Value>, StoreError> {
        let mut pauses = self.usage.clone();
        let Some(p) = pauses.resume(group) else {
            return Ok(None);
        };
        let early = p.until > now_ms();
        let event = NewEvent::untasked(
            "usage_resumed",
            None,
            by,
            json!({"credential_group": group, "until": p.until, "early": early}),
        );
        self.save_pauses(&pauses, event)?;
        self.usage = pauses;
        tracing::info!(credential_group = %group, by, early, "usage limit: group resumed");
        Ok(Some(
            json!({"credential_group": group, "until": p.until, "early": early}),
        ))
    }

    fn save_pauses(&self, pauses: &UsagePauses, event: NewEvent) -> Result<(), StoreError> {
        self.deps.log.append([event])?;
        self.deps.store.meta.insert(PAUSES_KEY, encode(pauses))?;
        Ok(())
    }

    /// Tells every FSM of `group` its new pause (`None`: resumed).
    fn tell_group(&self, group: &str, until: Option<i64>) {
        for (agent_id, fsm) in &self.fsms {
            if self.group_of(agent_id) == group {
                if until.is_some() {
                    // The scheduler hears it first, before the reporter's task
                    // goes back to the queue (its FSM waits for this answer):
                    // no member of the group can be matched with it meanwhile.
                    self.deps.scheduler.do_send(AgentUnavailable {
                        agent_id: agent_id.clone(),
                    });
                }
                fsm.do_send(UsagePause(until));
            }
        }
    }

    pub(crate) fn usage_view(&self) -> Vec<Value> {
        self.usage
            .list(now_ms())
            .into_iter()
            .map(|(group, p)| {
                json!({"credential_group": group, "until": p.until, "since": p.since,
                       "reported_by": p.reported_by, "task_id": p.task_id, "reason": p.reason})
            })
            .collect()
    }

    fn announce_usage(&self) {
        if self.deps.bus.watched() {
            self.deps.bus.publish(HubEvent::Usage {
                pauses: self.usage_view(),
            });
        }
    }
}
