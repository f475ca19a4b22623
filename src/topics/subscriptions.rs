//! Subscriptions (ext, PROTOCOL.md 6.31): every event of a topic that
//! matches a subscription's filter creates one task from its template, or is
//! delivered as a message to an agent or a channel.
//!
//! Exactly once, across restarts and kill -9: each subscription keeps a
//! cursor (the sequence of the last event it handled, `u/<id>` in
//! `topic_events`). Events after the cursor are handled in order, one at a
//! time; a task (or a delivered message) gets a fixed id from
//! (subscription, event), so an event handled again after a crash (its task
//! created, the cursor not yet moved) creates or sends nothing twice. At start
//! every subscription catches up.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{event_key, Topics};
use crate::error::StoreError;
use crate::messaging::{Publish as ChannelPublish, SendMessage};
use crate::protocol::{
    filter_matches, parse_task_spec, render_template, NewSubscription, SubscriptionAction,
    TopicEvent, MAX_SUBSCRIPTIONS,
};
use crate::queue::{NewTask, SubmitFixed};
use crate::storage::eventlog::NewEvent;
use crate::storage::store::{decode, encode};
use crate::util::now_ms;

/// How often subscriptions whose action failed try again.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Most non-matching events one step skips.
const SKIP_BATCH: usize = 1_000;

/// A subscription as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub id: String,
    pub topic: String,
    #[serde(default)]
    pub filter: Map<String, Value>,
    pub action: SubscriptionAction,
    pub created_by: String,
    pub created_at: i64,
    /// The sequence of the last event handled.
    pub cursor: u64,
    /// Tasks created or messages sent.
    #[serde(default)]
    pub fired: u64,
}

fn sub_key(id: &str) -> Vec<u8> {
    let mut k = b"u/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// The fixed id of the task `subscription` makes of the event `seq`.
pub(crate) fn task_id_for(subscription: &str, seq: u64) -> String {
    let digest = Sha256::digest(format!("subscription\0{subscription}\0{seq}"));
    format!("task-{}", &hex::encode(digest)[..16])
}

/// The fixed id of the message `subscription` delivers of the event `seq`.
fn message_id_for(subscription: &str, seq: u64) -> String {
    let digest = Sha256::digest(format!("subscription message\0{subscription}\0{seq}"));
    format!("msg-{}", &hex::encode(digest)[..16])
}

impl Topics {
    pub(super) fn load_subscriptions(&mut self) -> Result<(), StoreError> {
        for item in self.events.store.topic_events.scan_prefix(b"u/") {
            let (k, v) = item?;
            match decode::<Subscription>("topic_events", &k, &v) {
                Ok(s) => {
                    self.subs.insert(s.id.clone(), s);
                }
                Err(e) => tracing::error!(error = %e, "skipping an unreadable subscription"),
            }
        }
        self.refresh_wanted();
        Ok(())
    }

    /// Tells the hub's publishers which topics are listened to.
    fn refresh_wanted(&self) {
        let topics = self.subs.values().map(|s| s.topic.clone()).collect();
        self.outlet.set_wanted(topics);
    }

    fn save_sub(&self, s: &Subscription) -> Result<(), StoreError> {
        self.events
            .store
            .topic_events
            .insert(sub_key(&s.id), encode(s))?;
        Ok(())
    }

    /// The next event of `sub`'s topic after its cursor that it must handle;
    /// events its filter skips move the cursor on (saved with the next
    /// handled event, or by the timer: skipping one again after a crash is
    /// harmless). The newest events are read from memory.
    fn next_for(&mut self, id: &str) -> Result<Option<TopicEvent>, StoreError> {
        let Some(sub) = self.subs.get(id) else {
            return Ok(None);
        };
        let from_seq = sub.cursor.saturating_add(1);
        let filter = &sub.filter;
        let found = self
            .events
            .recent_find(&sub.topic, from_seq, |e| filter_matches(filter, &e.payload));
        let (found, skipped) = match found {
            Some(found) => found,
            None => {
                let from = event_key(&sub.topic, from_seq);
                let to = event_key(&sub.topic, u64::MAX);
                let mut skipped = None;
                let mut found = None;
                for item in self
                    .events
                    .store
                    .topic_events
                    .range(from..=to)
                    .take(SKIP_BATCH)
                {
                    let (k, v) = item?;
                    let event: TopicEvent = decode("topic_events", &k, &v)?;
                    if filter_matches(filter, &event.payload) {
                        found = Some(event);
                        break;
                    }
                    skipped = Some(event.seq);
                }
                (found, skipped)
            }
        };
        if let Some(seq) = skipped {
            if let Some(s) = self.subs.get_mut(id) {
                s.cursor = s.cursor.max(seq);
                self.unsaved.insert(id.to_string());
            }
        }
        Ok(found)
    }

    /// Saves the cursors that skipping moved (the retry timer).
    pub(super) fn save_skipped(&mut self) {
        for id in std::mem::take(&mut self.unsaved) {
            if let Some(sub) = self.subs.get(&id) {
                if let Err(e) = self.save_sub(sub) {
                    tracing::error!(subscription = %id, error = %e, "subscription cursor not saved");
                }
            }
        }
    }

    /// Handles the next event of some subscription, one at a time; called on
    /// every publish, at start, and by the retry timer.
    pub(super) fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.firing {
            self.kick_again = true;
            return;
        }
        let now = now_ms();
        self.retry_at.retain(|_, at| *at > now);
        let ids: Vec<String> = self
            .subs
            .keys()
            .filter(|id| !self.retry_at.contains_key(*id))
            .cloned()
            .collect();
        for id in ids {
            let event = match self.next_for(&id) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(subscription = %id, error = %e, "subscription cursor unreadable");
                    continue;
                }
            };
            let Some(sub) = self.subs.get(&id).cloned() else {
                continue;
            };
            self.firing = true;
            let work = self.act(&sub, event.clone());
            ctx.spawn(work.into_actor(self).map(move |done, act, ctx| {
                act.firing = false;
                match done {
                    Ok(task) => act.handled(&sub.id, &event, task),
                    Err(why) => {
                        tracing::warn!(subscription = %sub.id, event = %event.id, why, "subscription action failed; retried");
                        let at = now_ms() + RETRY_EVERY.as_millis() as i64;
                        act.retry_at.insert(sub.id.clone(), at);
                    }
                }
                act.kick_again = false;
                act.kick(ctx);
            }));
            return;
        }
        if std::mem::take(&mut self.kick_again) {
            ctx.notify(Kick);
        }
    }

    /// Carries out `sub`'s action for `event`: `Ok(Some((task_id, created)))`
    /// for a task, `Ok(None)` for a delivery.
    fn act(
        &self,
        sub: &Subscription,
        event: TopicEvent,
    ) -> impl std::future::Future<Output = Result<Option<(String, bool)>, String>> {
        let (queue, messaging) = (self.queue.clone(), self.messaging.clone());
        let by = format!("subscription:{}", sub.id);
        let sub_id = sub.id.clone();
        let action = sub.action.clone();
        let message_id = message_id_for(&sub.id, event.seq);
        async move {
            let body = json!({"subscription": sub_id, "event_id": event.id, "seq": event.seq,
                              "topic": event.topic, "payload": event.payload,
                              "publisher": event.publisher});
            let Value::Object(body) = body else {
                return Err("unreachable".into());
            };
            match action {
                SubscriptionAction::Task(template) => {
                    let task = render_template(&template, &event, &sub_id);
                    let spec = parse_task_spec(&Value::Object(task), "").map_err(|e| {
                        format!("the template makes no valid task: {}", e[0].detail)
                    })?;
                    let id = task_id_for(&sub_id, event.seq);
                    let created = queue
                        .send(SubmitFixed {
                            tasks: vec![NewTask {
                                spec,
                                id: Some(id.clone()),
                                parent: None,
                            }],
                            submitted_by: by,
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.as_str().to_string())?;
                    let existing = created.first().is_some_and(|s| s.existing);
                    Ok(Some((id, !existing)))
                }
                SubscriptionAction::Agent(to) => messaging
                    .send(SendMessage {
                        from: by,
                        to: Some(to),
                        message_type: Some("topic_event".into()),
                        payload: body,
                        reply_to: None,
                        id: Some(message_id.clone()),
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| None)
                    .map_err(|e| format!("{e:?}")),
                SubscriptionAction::Channel(channel) => messaging
                    .send(ChannelPublish {
                        channel,
                        from: by,
                        message_type: Some("topic_event".into()),
                        payload: body,
                        reply_to: None,
                        id: Some(message_id.clone()),
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| None)
                    .map_err(|e| format!("{e:?}")),
            }
        }
    }

    /// `event` was handled by `id`: the cursor moves on, and the task is in
    /// the event log with the event that caused it. Both are written in one
    /// flush: an event handled again after a crash lost them (its task was
    /// there already, with its fixed id) is counted and logged once.
    fn handled(&mut self, id: &str, event: &TopicEvent, task: Option<(String, bool)>) {
        let Some(sub) = self.subs.get_mut(id) else {
            return;
        };
        sub.cursor = sub.cursor.max(event.seq);
        sub.fired += 1;
        let sub = sub.clone();
        self.unsaved.remove(id);
        if let Err(e) = self.save_sub(&sub) {
            tracing::error!(subscription = %id, error = %e, "subscription cursor not saved");
        }
        if let Some((task_id, _)) = task {
            let details = json!({"subscription": id, "event_id": event.id, "topic": event.topic,
                                 "task_id": task_id});
            let entry = NewEvent::untasked("subscription_fired", None, "hub", details);
            if let Err(e) = self.log.append(vec![entry]) {
                tracing::error!(error = %e, "subscription_fired not logged");
            }
        }
    }

    fn create_sub(&mut self, new: NewSubscription, by: &str) -> Result<Subscription, SubError> {
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubError::TooMany);
        }
        // New subscriptions see what comes after them.
        let cursor = self.outlet.next_seq().saturating_sub(1);
        let sub = Subscription {
            id: format!("sub-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            topic: new.topic,
            filter: new.filter,
            action: new.action,
            created_by: by.to_string(),
            created_at: now_ms(),
            cursor,
            fired: 0,
        };
        self.save_sub(&sub)?;
        let details = json!({"subscription": sub.id, "topic": sub.topic});
        self.log.append(vec![NewEvent::untasked(
            "subscription_created",
            None,
            by,
            details,
        )])?;
        self.subs.insert(sub.id.clone(), sub.clone());
        self.refresh_wanted();
        Ok(sub)
    }
}

/// Why a subscription change was refused.
#[derive(Debug)]
pub(crate) enum SubError {
    NotFound,
    TooMany,
    Store(StoreError),
}

impl From<StoreError> for SubError {
    fn from(e: StoreError) -> Self {
        SubError::Store(e)
    }
}

/// Look for work (a publish, the retry timer).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Kick;

impl Handler<Kick> for Topics {
    type Result = ();

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.kick(ctx);
    }
}

/// Create a subscription (answered once durable).
#[derive(Message)]
#[rtype(result = "Result<Subscription, SubError>")]
pub(crate) struct Subscribe {
    pub subscription: NewSubscription,
    pub by: String,
}

impl Handler<Subscribe> for Topics {
    type Result = ResponseFuture<Result<Subscription, SubError>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let created = self.create_sub(msg.subscription, &msg.by);
        let durable = self.events.store.durable();
        Box::pin(async move {
            let sub = created?;
            durable.await?;
            Ok(sub)
        })
    }
}

/// Delete a subscription (answered once durable).
#[derive(Message)]
#[rtype(result = "Result<(), SubError>")]
pub(crate) struct Unsubscribe {
    pub id: String,
    pub by: String,
}

impl Handler<Unsubscribe> for Topics {
    type Result = ResponseFuture<Result<(), SubError>>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let removed = match self.subs.remove(&msg.id).inspect(|_| self.refresh_wanted()) {
            None => Err(SubError::NotFound),
            Some(s) => self
                .events
                .store
                .topic_events
                .remove(sub_key(&s.id))
                .map_err(|e| SubError::Store(e.into()))
                .and_then(|_| {
                    let details = json!({"subscription": s.id, "topic": s.topic});
                    let entry = NewEvent::untasked("subscription_deleted", None, &msg.by, details);
                    self.log.append(vec![entry]).map_err(SubError::from)
                }),
        };
        let durable = self.events.store.durable();
        Box::pin(async move {
            removed?;
            durable.await?;
            Ok(())
        })
    }
}

/// Every subscription.
#[derive(Message)]
#[rtype(result = "Vec<Subscription>")]
pub(crate) struct Subscriptions;

impl Handler<Subscriptions> for Topics {
    type Result = MessageResult<Subscriptions>;

    fn handle(&mut self, _: Subscriptions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.subs.values().cloned().collect())
    }
}
