//! `Topics`: the one owner of topic events (ext, PROTOCOL.md 6.30).
//!
//! An agent, an operator or the hub publishes `{topic, payload, dedupe_key?}`;
//! the event gets the next hub-wide sequence and is written to the
//! `topic_events` tree by the one writer (`outlet.rs`, shared with the hub's
//! actors, whose events are written with the change they describe), and the
//! publisher's answer waits for the flush that covers it. A `dedupe_key` already used on the topic answers the event it
//! named (`existing`), so a retried publish creates nothing twice. Readers
//! page a topic in order by sequence. Events older than
//! `topic_retention_days` are removed by a timer.
//!
//! Layout of `topic_events` (big-endian sequences, so keys sort in order):
//! - `e/<topic>\0<seq>`: the event;
//! - `s/<seq>`: `(topic, published_at)`, the hub-wide order (retention, start);
//! - `d/<topic>\0<dedupe key>`: the sequence of the event that used it;
//! - `p/<name>`: a notice (message) the hub's actors staged, not yet sent
//!   (`outlet.rs`);
//! - `u/<id>`: a subscription with its cursor (`subscriptions.rs`).
//!
//! Subscriptions (`subscriptions.rs`) turn events into tasks (through the
//! queue's `SubmitFixed`) or messages (through `Messaging`).
//!
//! Architecture invariant: knows no agent or socket; changes tasks only
//! through the queue's messages and sends messages only through `Messaging`.

mod outlet;
mod subscriptions;

pub(crate) use outlet::{Ended, HubOutlet};
pub(crate) use subscriptions::{SubError, Subscribe, Subscriptions, Unsubscribe};

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::StoreError;
use crate::messaging::{Messaging, MsgError, SendMessage};
use crate::protocol::{Publish, TopicEvent, MAX_EVENT_PAGE};
use crate::queue::TaskQueue;
use crate::storage::bus::{EventBus, HubEvent};
use crate::storage::eventlog::EventLog;
use crate::storage::store::{decode, Store};
use crate::util::now_ms;

const DAY_MS: i64 = 86_400_000;
/// Most events one retention pass removes (the next pass goes on).
const PRUNE_BATCH: usize = 10_000;

/// What `s/<seq>` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    topic: String,
    at: i64,
}

/// What is known of one topic (rebuilt from `s/` at start).
#[derive(Debug, Clone, Default, Serialize)]
struct TopicInfo {
    count: u64,
    last_seq: u64,
    last_at: i64,
}

fn event_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 11);
    k.extend_from_slice(b"e/");
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn order_key(seq: u64) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn dedupe_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = b"d/".to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn seq_of(bytes: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// How many of the newest events memory keeps (subscriptions read them from
/// there instead of the store).
const RECENT_KEPT: usize = 4096;

/// The events as stored, and what is known of each topic.
pub(crate) struct Events {
    store: Store,
    /// The one writer (shared with the hub's actors).
    writer: HubOutlet,
    topics: BTreeMap<String, TopicInfo>,
    retention_ms: i64,
    /// The newest events taken from the writer, in order.
    recent: std::collections::VecDeque<TopicEvent>,
    /// Events taken from the writer, not yet told to the bus and the
    /// subscriptions: (topic, sequence).
    fresh: Vec<(String, u64)>,
}

/// See the module documentation.
pub(crate) struct Topics {
    events: Events,
    bus: EventBus,
    log: EventLog,
    queue: Addr<TaskQueue>,
    messaging: Addr<Messaging>,
    subs: BTreeMap<String, subscriptions::Subscription>,
    /// A subscription's action is under way (they run one at a time).
    firing: bool,
    /// Work came while one ran: look again after it.
    kick_again: bool,
    /// Subscriptions whose action failed wait until then (ms) before trying
    /// again; the others go on meanwhile.
    retry_at: std::collections::HashMap<String, i64>,
    prune_every: Duration,
    outlet: HubOutlet,
    /// Staged records not yet handled (left at start, or failed): tried again
    /// by the retry timer.
    leftover: Vec<(Vec<u8>, outlet::Pending)>,
    /// Subscriptions whose cursor skipping moved, not yet saved.
    unsaved: std::collections::HashSet<String>,
}

impl Topics {
    /// Loads the events' sequence, the topics and the subscriptions.
    pub(crate) fn load(
        store: Store,
        peers: (EventBus, EventLog, Addr<TaskQueue>, Addr<Messaging>),
        outlet: HubOutlet,
        retention_days: u64,
        prune_every: Duration,
    ) -> Result<Topics, StoreError> {
        let (bus, log, queue, messaging) = peers;
        let mut leftover = Vec::new();
        for item in store.topic_events.scan_prefix(b"p/") {
            let (k, v) = item?;
            match decode::<outlet::Pending>("topic_events", &k, &v) {
                Ok(p) => leftover.push((k.to_vec(), p)),
                Err(e) => tracing::error!(error = %e, "skipping an unreadable staged event"),
            }
        }
        let mut topics = Topics {
            events: Events::open(store, retention_days, outlet.clone())?,
            bus,
            log,
            queue,
            messaging,
            subs: BTreeMap::new(),
            firing: false,
            kick_again: false,
            retry_at: std::collections::HashMap::new(),
            prune_every,
            outlet,
            leftover,
            unsaved: std::collections::HashSet::new(),
        };
        topics.load_subscriptions()?;
        Ok(topics)
    }
}

impl Events {
    /// Reads the topics from the order index.
    pub(crate) fn open(
        store: Store,
        retention_days: u64,
        writer: HubOutlet,
    ) -> Result<Events, StoreError> {
        let mut topics: BTreeMap<String, TopicInfo> = BTreeMap::new();
        for item in store.topic_events.scan_prefix(b"s/") {
            let (k, v) = item?;
            let Some(seq) = seq_of(&k) else {
                continue;
            };
            let Ok(o) = decode::<Order>("topic_events", &k, &v) else {
                tracing::error!("skipping an unreadable topic event index entry");
                continue;
            };
            let t = topics.entry(o.topic).or_default();
            t.count += 1;
            t.last_seq = seq;
            t.last_at = o.at;
        }
        // What the hub's actors wrote while loading is in the index already.
        writer.take_written();
        Ok(Events {
            store,
            writer,
            topics,
            retention_ms: i64::try_from(retention_days)
                .unwrap_or(i64::MAX / DAY_MS)
                .saturating_mul(DAY_MS),
            recent: std::collections::VecDeque::new(),
            fresh: Vec::new(),
        })
    }

    /// Takes what the writer wrote since: counted, kept among the newest, and
    /// fresh (to be told).
    fn adopt(&mut self) {
        for event in self.writer.take_written() {
            let info = self.topics.entry(event.topic.clone()).or_default();
            info.count += 1;
            info.last_seq = event.seq;
            info.last_at = event.published_at;
            self.fresh.push((event.topic.clone(), event.seq));
            if self.recent.len() == RECENT_KEPT {
                self.recent.pop_front();
            }
            self.recent.push_back(event);
        }
    }

    /// The first of `topic`'s events from sequence `from` on that `wanted`
    /// takes, with the sequence of the last one passed over before it, when
    /// memory holds them all (`None`: read the store).
    fn recent_find(
        &self,
        topic: &str,
        from: u64,
        wanted: impl Fn(&TopicEvent) -> bool,
    ) -> Option<(Option<TopicEvent>, Option<u64>)> {
        let last = self.topics.get(topic).map_or(0, |t| t.last_seq);
        if last < from {
            return Some((None, None));
        }
        if self.recent.front().is_none_or(|e| e.seq > from) {
            return None;
        }
        let start = self.recent.partition_point(|e| e.seq < from);
        let mut skipped = None;
        for e in self.recent.range(start..).filter(|e| e.topic == topic) {
            if wanted(e) {
                return Some((Some(e.clone()), skipped));
            }
            skipped = Some(e.seq);
        }
        Some((None, skipped))
    }

    fn read(&self, topic: &str, seq: u64) -> Result<Option<TopicEvent>, StoreError> {
        let key = event_key(topic, seq);
        match self.store.topic_events.get(&key)? {
            Some(v) => Ok(Some(decode("topic_events", &key, &v)?)),
            None => Ok(None),
        }
    }

    /// Writes the event (or finds the one its dedupe key names); the caller
    /// waits for the flush.
    fn publish(&mut self, p: Publish, by: &str) -> Result<(TopicEvent, bool), StoreError> {
        if let Some(key) = &p.dedupe_key {
            if let Some(v) = self.store.topic_events.get(dedupe_key(&p.topic, key))? {
                if let Some(event) = seq_of(&v).and_then(|s| self.read(&p.topic, s).transpose()) {
                    return Ok((event?, true));
                }
            }
        }
        let event = self.writer.write_event(p, by, false)?;
        self.adopt();
        Ok((event, false))
    }

    /// `topic`'s newest `n` events, oldest first.
    fn newest(&self, topic: &str, n: usize) -> Result<Vec<TopicEvent>, StoreError> {
        let from = event_key(topic, 0);
        let to = event_key(topic, u64::MAX);
        let mut out = Vec::new();
        for item in self.store.topic_events.range(from..=to).rev() {
            let (k, v) = item?;
            out.push(decode::<TopicEvent>("topic_events", &k, &v)?);
            if out.len() >= n.clamp(1, MAX_EVENT_PAGE) {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// A page of `topic`'s events after `cursor` (a sequence), published at
    /// or after `since`.
    fn page(
        &self,
        topic: &str,
        since: Option<i64>,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<TopicEvent>, Option<u64>), StoreError> {
        let limit = limit.clamp(1, MAX_EVENT_PAGE);
        let from = event_key(topic, cursor.map_or(0, |c| c.saturating_add(1)));
        let to = event_key(topic, u64::MAX);
        let mut out = Vec::new();
        for item in self.store.topic_events.range(from..=to) {
            let (k, v) = item?;
            let event: TopicEvent = decode("topic_events", &k, &v)?;
            if since.is_some_and(|s| event.published_at < s) {
                continue;
            }
            out.push(event);
            if out.len() == limit {
                break;
            }
        }
        let next = (out.len() == limit)
            .then(|| out.last().map(|e| e.seq))
            .flatten();
        Ok((out, next))
    }

    /// Removes events older than the retention, oldest first, at most a batch.
    fn prune(&mut self, now: i64) -> Result<usize, StoreError> {
        let cutoff = now.saturating_sub(self.retention_ms);
        let mut old = Vec::new();
        for item in self.store.topic_events.scan_prefix(b"s/") {
            let (k, v) = item?;
            let o: Order = decode("topic_events", &k, &v)?;
            if o.at >= cutoff || old.len() == PRUNE_BATCH {
                break;
            }
            if let Some(seq) = seq_of(&k) {
                old.push((seq, o.topic));
            }
        }
        if let Some((newest, _)) = old.last() {
            let newest = *newest;
            self.recent.retain(|e| e.seq > newest);
        }
        for (seq, topic) in &old {
            if let Some(event) = self.read(topic, *seq)? {
                if let Some(key) = &event.dedupe_key {
                    self.store.topic_events.remove(dedupe_key(topic, key))?;
                }
            }
            self.store.topic_events.remove(event_key(topic, *seq))?;
            self.store.topic_events.remove(order_key(*seq))?;
            if let Some(info) = self.topics.get_mut(topic) {
                info.count = info.count.saturating_sub(1);
                if info.count == 0 {
                    self.topics.remove(topic);
                }
            }
        }
        Ok(old.len())
    }
}

impl Actor for Topics {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Subscriptions catch up on what came while the hub was down, and
        // those whose action failed try again.
        self.outlet.connect(ctx.address().recipient());
        self.drain(ctx);
        self.kick(ctx);
        ctx.run_interval(subscriptions::RETRY_EVERY, |act, ctx| {
            if !act.leftover.is_empty() {
                act.drain(ctx);
            }
            act.save_skipped();
            act.kick(ctx)
        });
        ctx.run_interval(self.prune_every, |act, _| {
            match act.events.prune(now_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "old topic events removed"),
                Err(e) => tracing::error!(error = %e, "topic event retention failed"),
            }
        });
    }
}

impl Topics {
    /// Takes what the hub's actors wrote: their events are counted and told
    /// (once durable), their messages sent (with fixed ids; each record is
    /// removed once sent).
    fn drain(&mut self, ctx: &mut Context<Self>) {
        self.events.adopt();
        self.tell_fresh(ctx);
        let mut messages = std::mem::take(&mut self.leftover);
        messages.extend(self.outlet.take_messages());
        for (key, pending) in messages {
            self.send_notice(key, pending, ctx);
        }
    }

    /// Tells the bus of the fresh events and wakes the subscriptions to their
    /// topics, once durable.
    fn tell_fresh(&mut self, ctx: &mut Context<Self>) {
        let fresh = std::mem::take(&mut self.events.fresh);
        if fresh.is_empty() {
            return;
        }
        let subscribed = fresh
            .iter()
            .any(|(topic, _)| self.subs.values().any(|s| s.topic == *topic));
        let (bus, durable) = (self.bus.clone(), self.events.store.durable());
        ctx.spawn(durable.into_actor(self).map(move |flushed, _, ctx| {
            if let Err(e) = flushed {
                tracing::error!(error = %e, "topic events not flushed");
                return;
            }
            if bus.watched() {
                for (topic, seq) in fresh {
                    bus.publish(HubEvent::TopicEvent { topic, seq });
                }
            }
            if subscribed {
                ctx.notify(subscriptions::Kick);
            }
        }));
    }

    /// Sends one staged notice; removes its record once sent, or keeps it
    /// for the retry timer.
    fn send_notice(&mut self, key: Vec<u8>, pending: outlet::Pending, ctx: &mut Context<Self>) {
        let outlet::Pending::Message {
            id,
            to,
            message_type,
            payload,
        } = pending;
        let send = self.messaging.send(SendMessage {
            from: "hub".into(),
            to: Some(to.clone()),
            message_type: Some(message_type.clone()),
            payload: payload.clone(),
            reply_to: None,
            id: Some(id.clone()),
        });
        let mut retry = outlet::Pending::Message {
            id,
            to,
            message_type,
            payload,
        };
        ctx.spawn(send.into_actor(self).map(move |sent, act, _| {
            let gone = match sent {
                Ok(Ok(_)) => true,
                Ok(Err(MsgError::RecipientNotFound(to))) => {
                    tracing::warn!(to, "task_finished message for no agent dropped");
                    true
                }
                Ok(Err(MsgError::TooLarge(..))) => {
                    // Sent again without what made it large; the task's
                    // record has all of it.
                    let outlet::Pending::Message { payload, .. } = &mut retry;
                    payload.remove("metadata");
                    if payload.remove("result").is_some() {
                        let id = payload["task_id"].as_str().unwrap_or_default();
                        payload.insert("result_ref".into(), json!(crate::protocol::result_ref(id)));
                    }
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = ?e, "task_finished message not sent; tried again");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "task_finished message not sent; tried again");
                    false
                }
            };
            match gone {
                true => {
                    if let Err(e) = act.events.store.topic_events.remove(&key) {
                        tracing::error!(error = %e, "sent message's record kept");
                    }
                }
                false => act.leftover.push((key, retry)),
            }
        }));
    }
}

impl Handler<outlet::Drain> for Topics {
    type Result = ();

    fn handle(&mut self, _: outlet::Drain, ctx: &mut Context<Self>) {
        self.drain(ctx);
    }
}

/// Publish an event as `by`.
#[derive(Message)]
#[rtype(result = "Result<(TopicEvent, bool), StoreError>")]
pub(crate) struct PublishEvent {
    pub publish: Publish,
    pub by: String,
}

impl Handler<PublishEvent> for Topics {
    type Result = ResponseFuture<Result<(TopicEvent, bool), StoreError>>;

    fn handle(&mut self, msg: PublishEvent, ctx: &mut Context<Self>) -> Self::Result {
        let written = self.events.publish(msg.publish, &msg.by);
        // Told once durable, like every bus event; subscriptions act on
        // durable events only.
        self.tell_fresh(ctx);
        let durable = self.events.store.durable();
        Box::pin(async move {
            let out = written?;
            durable.await?;
            Ok(out)
        })
    }
}

/// A page of one topic's events.
#[derive(Message)]
#[rtype(result = "Result<Value, StoreError>")]
pub(crate) struct TopicPage {
    pub topic: String,
    pub since: Option<i64>,
    pub cursor: Option<u64>,
    pub limit: usize,
    /// Instead: the newest `limit` events (oldest first), no cursor.
    pub newest: bool,
}

impl Handler<TopicPage> for Topics {
    type Result = Result<Value, StoreError>;

    fn handle(&mut self, msg: TopicPage, _: &mut Context<Self>) -> Self::Result {
        let (events, next) = match msg.newest {
            true => (self.events.newest(&msg.topic, msg.limit)?, None),
            false => self
                .events
                .page(&msg.topic, msg.since, msg.cursor, msg.limit)?,
        };
        Ok(
            json!({"topic": msg.topic, "count": events.len(), "events": events,
                  "next_cursor": next}),
        )
    }
}

/// Every topic with its event count and newest event.
#[derive(Message)]
#[rtype(result = "Value")]
pub(crate) struct TopicList;

impl Handler<TopicList> for Topics {
    type Result = MessageResult<TopicList>;

    fn handle(&mut self, _: TopicList, _: &mut Context<Self>) -> Self::Result {
        let topics: Vec<Value> = self
            .events
            .topics
            .iter()
            .map(|(name, i)| {
                json!({"topic": name, "count": i.count, "last_seq": i.last_seq,
                                   "last_published_at": i.last_at})
            })
            .collect();
        MessageResult(json!({"count": topics.len(), "topics": topics}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(dir: &std::path::Path) -> Events {
        let store = Store::open(dir).expect("store");
        let writer = HubOutlet::open(store.clone()).expect("writer");
        Events::open(store, 30, writer).expect("open")
    }

    fn publish(t: &mut Events, topic: &str, n: u64, key: Option<&str>) -> (TopicEvent, bool) {
        t.publish(
            Publish {
                topic: topic.into(),
                payload: json!({"n": n}),
                dedupe_key: key.map(str::to_string),
            },
            "a",
        )
        .expect("publish")
    }

    #[test]
    fn events_page_in_order_per_topic_and_dedupe() {
        let dir = tempfile::tempdir().expect("dir");
        let mut t = topics(dir.path());
        for n in 0..5 {
            publish(&mut t, "pr_opened", n, None);
            publish(&mut t, "other", n, None);
        }
        let (again, existing) = publish(&mut t, "pr_opened", 9, Some("k"));
        assert!(!existing);
        let (same, existing) = publish(&mut t, "pr_opened", 10, Some("k"));
        assert!(existing);
        assert_eq!(same.seq, again.seq);
        let (page, next) = t.page("pr_opened", None, None, 4).expect("page");
        assert_eq!(
            page.iter()
                .map(|e| e.payload["n"].as_u64())
                .collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        let (rest, end) = t.page("pr_opened", None, next, 4).expect("rest");
        assert_eq!(rest.len(), 2);
        assert!(end.is_none());
        assert!(rest.iter().all(|e| e.topic == "pr_opened"));
        assert_eq!(t.writer.next_seq(), 12);
        assert_eq!(t.topics["pr_opened"].count, 6);
        let newest = t.newest("pr_opened", 2).expect("newest");
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 11]);
    }

    #[test]
    fn old_events_are_removed_with_their_dedupe_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let mut t = topics(dir.path());
        publish(&mut t, "x", 1, Some("k"));
        assert_eq!(t.prune(now_ms() + 31 * DAY_MS).expect("prune"), 1);
        assert!(t.topics.is_empty());
        let (_, existing) = publish(&mut t, "x", 2, Some("k"));
        assert!(!existing, "the key is free again");
    }
}
