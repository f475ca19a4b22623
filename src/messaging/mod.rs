//! `Messaging`: the one owner of messages, mailboxes and channels.
//!
//! - Every message (direct, broadcast, channel) is stored in the `messages` history
//!   (by sequence) with an id index and a reply index for threads.
//! - A direct message goes to its recipient's mailbox, a broadcast to the mailbox
//!   of every registered agent but the sender (per-agent sequence, cursor ack,
//!   TTL, cap; an eviction at the cap is counted and logged, never silent), and
//!   stays there until acknowledged. The push to an online recipient (with its
//!   `mailbox_seq`, once durable) is a wake-up; the mailbox is the record.
//! - Channels keep their subscribers and the newest `channel_history` messages.
//!
//! Replies to senders wait for the flush covering the change, like every other
//! acknowledgement in the hub.
//!
//! Architecture invariant: messaging never touches tasks or agent state. It reaches
//! sockets only through `Presence` (which knows who is online) and counts activity
//! only through `Analytics`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agents::auth::Tokens;
use crate::agents::presence::{Deliver, DeliverMany, Presence};
use crate::error::StoreError;
use crate::ops::analytics::{Analytics, Count, Counter};
use crate::protocol::{ChannelInfo, ChatMessage, SeqEntry, ServerFrame};
use crate::storage::store::{decode, encode, key_seq, scope_prefix, scoped_key, seq_key, Store};
use crate::util::now_ms;

mod channels;
mod mailbox;
mod queries;
pub(crate) use channels::*;
pub(crate) use mailbox::*;
pub(crate) use queries::*;

/// Most messages one thread view returns.
const THREAD_LIMIT: usize = 1000;
/// Most mailbox entries one read returns.
const MAILBOX_READ_LIMIT: usize = 1000;

/// Limits and retention of messaging.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessagingLimits {
    pub mailbox_cap: u64,
    pub mailbox_ttl_ms: i64,
    pub channel_history: u64,
    pub history_ttl_ms: i64,
    pub max_message_bytes: usize,
}

/// Why a messaging request was refused.
#[derive(Debug, Clone)]
pub(crate) enum MsgError {
    /// A direct message to an agent that is not registered.
    RecipientNotFound(String),
    ChannelNotFound(String),
    ChannelExists(String),
    MessageNotFound(String),
    /// The payload is larger than `max_message_bytes` (limit, first 50 characters of
    /// the payload's JSON).
    TooLarge(usize, String),
    Store(StoreError),
}

impl From<StoreError> for MsgError {
    fn from(e: StoreError) -> Self {
        MsgError::Store(e)
    }
}

impl From<sled::Error> for MsgError {
    fn from(e: sled::Error) -> Self {
        MsgError::Store(e.into())
    }
}

/// Per-agent mailbox bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct MailboxMeta {
    /// Sequence of the newest message ever put in this mailbox.
    pub last_seq: u64,
    pub count: u64,
    /// Messages dropped because the mailbox was full.
    pub evicted: u64,
    /// Messages dropped because they outlived the TTL.
    pub expired: u64,
    pub acked: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ChannelRecord {
    name: String,
    description: String,
    created_at: i64,
    created_by: String,
    subscribers: BTreeSet<String>,
    last_seq: u64,
    count: u64,
}

impl ChannelRecord {
    /// Subscribers other than `agent_id` (who never gets its own events echoed).
    fn others(&self, agent_id: &str) -> Vec<String> {
        self.subscribers
            .iter()
            .filter(|s| *s != agent_id)
            .cloned()
            .collect()
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            subscriber_count: self.subscribers.len(),
            created_at: self.created_at,
        }
    }
}

pub(crate) struct Messaging {
    store: Store,
    tokens: Tokens,
    presence: Addr<Presence>,
    analytics: Addr<Analytics>,
    limits: MessagingLimits,
    next_seq: u64,
    mailboxes: HashMap<String, MailboxMeta>,
    channels: BTreeMap<String, ChannelRecord>,
    evictions: EvictionWarnings,
}

/// How often a full mailbox's evictions are logged, per agent: an agent that
/// never acknowledges would otherwise log one warning per message it is sent.
const EVICTION_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The first eviction from an agent's mailbox is logged at once; later ones at
/// most once per [`EVICTION_WARNING_EVERY`], with how many there were since.
/// The mailbox's `evicted` count (its status, the metrics) counts every one.
#[derive(Default)]
struct EvictionWarnings {
    last: HashMap<String, (std::time::Instant, u64)>,
}

impl EvictionWarnings {
    /// Counts one eviction; `Some(n)` when it is time to log the `n` since the last warning.
    fn evicted(&mut self, agent_id: &str, now: std::time::Instant) -> Option<u64> {
        match self.last.get_mut(agent_id) {
            Some((at, quiet)) if now.duration_since(*at) < EVICTION_WARNING_EVERY => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                let n = *quiet + 1;
                (*at, *quiet) = (now, 0);
                Some(n)
            }
            None => {
                self.last.insert(agent_id.to_string(), (now, 0));
                Some(1)
            }
        }
    }
}

fn new_message_id() -> String {
    format!("msg-{:016x}", rand::random::<u64>())
}

impl Messaging {
    /// Loads channels and mailbox bookkeeping from sled.
    pub(crate) fn load(
        store: Store,
        tokens: Tokens,
        presence: Addr<Presence>,
        analytics: Addr<Analytics>,
        limits: MessagingLimits,
    ) -> Result<Messaging, StoreError> {
        let next_seq = match store.messages.last()? {
            Some((k, _)) => key_seq(&k).unwrap_or(0) + 1,
            None => 1,
        };
        let mut channels = BTreeMap::new();
        for item in store.channels.iter() {
            let (k, v) = item?;
            match decode::<ChannelRecord>("channels", &k, &v) {
                Ok(c) => {
                    channels.insert(c.name.clone(), c);
                }
                Err(e) => tracing::error!(error = %e, "skipping unreadable channel"),
            }
        }
        let mut mailboxes = HashMap::new();
        for item in store.mailbox_meta.iter() {
            let (k, v) = item?;
            match decode::<MailboxMeta>("mailbox_meta", &k, &v) {
                Ok(m) => {
                    mailboxes.insert(String::from_utf8_lossy(&k).into_owned(), m);
                }
                Err(e) => tracing::error!(error = %e, "skipping unreadable mailbox record"),
            }
        }
        Ok(Messaging {
            store,
            tokens,
            presence,
            analytics,
            limits,
            next_seq,
            mailboxes,
            channels,
            evictions: EvictionWarnings::default(),
        })
    }

    fn check_size(&self, payload: &Map<String, Value>) -> Result<(), MsgError> {
        let text = serde_json::to_string(payload).unwrap_or_default();
        if text.len() > self.limits.max_message_bytes {
            let head: String = text.chars().take(50).collect();
            return Err(MsgError::TooLarge(
                self.limits.max_message_bytes,
                format!("{head}..."),
            ));
        }
        Ok(())
    }

    /// Writes a message to the history with its id and reply indexes.
    fn record(&mut self, m: &ChatMessage) -> Result<u64, MsgError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.store.messages.insert(seq_key(seq), encode(m))?;
        self.store
            .message_ids
            .insert(m.id.as_bytes(), &seq_key(seq))?;
        if let Some(parent) = &m.reply_to {
            self.store
                .replies
                .insert(scoped_key(parent, seq), m.id.as_bytes())?;
        }
        self.analytics.do_send(Count {
            agent_id: m.from.clone(),
            counter: Counter::MessagesSent,
            at: m.timestamp,
        });
        if let Some(to) = &m.to {
            self.analytics.do_send(Count {
                agent_id: to.clone(),
                counter: Counter::MessagesReceived,
                at: m.timestamp,
            });
        }
        Ok(seq)
    }

    /// `id`, when a message with it is recorded already.
    fn sent_before(&self, id: Option<&str>) -> Result<Option<String>, MsgError> {
        match id {
            Some(id) if self.store.message_ids.contains_key(id.as_bytes())? => {
                Ok(Some(id.to_string()))
            }
            _ => Ok(None),
        }
    }

    fn save_mailbox(&self, agent_id: &str, meta: &MailboxMeta) -> Result<(), MsgError> {
        self.store
            .mailbox_meta
            .insert(agent_id.as_bytes(), encode(meta))?;
        Ok(())
    }

    /// Puts a message in an agent's mailbox, evicting the oldest past the cap.
    fn mailbox_put(&mut self, agent_id: &str, message: ChatMessage) -> Result<u64, MsgError> {
        let mut meta = self.mailboxes.get(agent_id).cloned().unwrap_or_default();
        meta.last_seq += 1;
        meta.count += 1;
        let entry = SeqEntry {
            seq: meta.last_seq,
            message,
            stored_at: now_ms(),
        };
        self.store
            .mailbox
            .insert(scoped_key(agent_id, entry.seq), encode(&entry))?;
        while meta.count > self.limits.mailbox_cap {
            let Some((oldest, _)) = self
                .store
                .mailbox
                .scan_prefix(scope_prefix(agent_id))
                .next()
                .transpose()?
            else {
                break;
            };
            self.store.mailbox.remove(oldest)?;
            meta.count -= 1;
            meta.evicted += 1;
            if let Some(since) = self.evictions.evicted(agent_id, std::time::Instant::now()) {
                tracing::warn!(agent_id = %agent_id, evicted = since, evicted_total = meta.evicted,
                               cap = self.limits.mailbox_cap,
                               "mailbox full: evicted its oldest message(s) (logged at most once a minute per agent)");
            }
        }
        self.save_mailbox(agent_id, &meta)?;
        self.mailboxes.insert(agent_id.to_string(), meta);
        Ok(entry.seq)
    }

    fn channel(&self, name: &str) -> Result<&ChannelRecord, MsgError> {
        self.channels
            .get(name)
            .ok_or_else(|| MsgError::ChannelNotFound(name.to_string()))
    }

    fn save_channel(&mut self, c: ChannelRecord) -> Result<(), MsgError> {
        self.store.channels.insert(c.name.as_bytes(), encode(&c))?;
        self.channels.insert(c.name.clone(), c);
        Ok(())
    }

    fn message_by_id(&self, id: &str) -> Result<Option<(u64, ChatMessage)>, MsgError> {
        let Some(seq) = self.store.message_ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        let Some(v) = self.store.messages.get(&seq)? else {
            return Ok(None);
        };
        Ok(Some((
            key_seq(&seq).unwrap_or(0),
            decode("messages", &seq, &v)?,
        )))
    }

    fn replies_of(&self, id: &str) -> Result<Vec<(u64, ChatMessage)>, MsgError> {
        let mut out = Vec::new();
        for item in self.store.replies.scan_prefix(scope_prefix(id)) {
            let (_, child) = item?;
            if let Some(m) = self.message_by_id(&String::from_utf8_lossy(&child))? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn root_of(&self, id: &str) -> Result<(u64, ChatMessage), MsgError> {
        let mut current = self
            .message_by_id(id)?
            .ok_or_else(|| MsgError::MessageNotFound(id.to_string()))?;
        let mut seen = HashSet::new();
        while let Some(parent) = current.1.reply_to.clone() {
            if !seen.insert(parent.clone()) || seen.len() > THREAD_LIMIT {
                break;
            }
            match self.message_by_id(&parent)? {
                Some(p) => current = p,
                None => break,
            }
        }
        Ok(current)
    }

    /// Drops mailbox entries and history past their TTL.
    fn prune(&mut self, now: i64) -> Result<(), MsgError> {
        let mailbox_cutoff = now.saturating_sub(self.limits.mailbox_ttl_ms);
        let agents: Vec<String> = self.mailboxes.keys().cloned().collect();
        for agent_id in agents {
            let mut meta = self.mailboxes.get(&agent_id).cloned().unwrap_or_default();
            let mut dropped = 0;
            for item in self.store.mailbox.scan_prefix(scope_prefix(&agent_id)) {
                let (k, v) = item?;
                let entry: SeqEntry = decode("mailbox", &k, &v)?;
                if entry.stored_at >= mailbox_cutoff {
                    break;
                }
                self.store.mailbox.remove(k)?;
                dropped += 1;
            }
            if dropped > 0 {
                meta.count = meta.count.saturating_sub(dropped);
                meta.expired += dropped;
                tracing::info!(agent_id = %agent_id, dropped, "mailbox messages expired");
                self.save_mailbox(&agent_id, &meta)?;
                self.mailboxes.insert(agent_id, meta);
            }
        }
        let history_cutoff = now.saturating_sub(self.limits.history_ttl_ms);
        let mut dropped = 0u64;
        for item in self.store.messages.iter() {
            let (k, v) = item?;
            let m: ChatMessage = decode("messages", &k, &v)?;
            if m.timestamp >= history_cutoff {
                break;
            }
            self.store.messages.remove(&k)?;
            self.store.message_ids.remove(m.id.as_bytes())?;
            for reply in self.store.replies.scan_prefix(scope_prefix(&m.id)).keys() {
                self.store.replies.remove(reply?)?;
            }
            if let (Some(parent), Some(seq)) = (&m.reply_to, key_seq(&k)) {
                self.store.replies.remove(scoped_key(parent, seq))?;
            }
            dropped += 1;
        }
        if dropped > 0 {
            tracing::info!(dropped, "message history expired");
        }
        Ok(())
    }

    /// Replies once the writes so far are durable.
    fn after_flush<T: 'static>(
        &self,
        value: Result<T, MsgError>,
    ) -> ResponseActFuture<Self, Result<T, MsgError>> {
        self.after_flush_then(value, |_| {})
    }

    /// [`Messaging::after_flush`], running `then` once the writes are durable
    /// (not when the flush fails).
    fn after_flush_then<T: 'static>(
        &self,
        value: Result<T, MsgError>,
        then: impl FnOnce(&mut Self) + 'static,
    ) -> ResponseActFuture<Self, Result<T, MsgError>> {
        if value.is_err() {
            return Box::pin(fut::ready(value));
        }
        Box::pin(
            self.store
                .durable()
                .into_actor(self)
                .map(|flushed, act, _| {
                    flushed?;
                    then(act);
                    value
                }),
        )
    }
}

impl Actor for Messaging {
    type Context = Context<Self>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn eviction_warnings_come_once_a_minute_per_agent_with_the_count_since() {
        let mut w = super::EvictionWarnings::default();
        let t0 = std::time::Instant::now();
        let later = |secs| t0 + std::time::Duration::from_secs(secs);
        assert_eq!(w.evicted("bob", t0), Some(1));
        assert_eq!(w.evicted("bob", later(1)), None);
        assert_eq!(w.evicted("bob", later(59)), None);
        assert_eq!(
            w.evicted("carol", later(59)),
            Some(1),
            "each agent has its own"
        );
        // A minute after the last warning: logged, with the two kept quiet.
        assert_eq!(w.evicted("bob", later(60)), Some(3));
        assert_eq!(w.evicted("bob", later(61)), None);
    }

    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    #[actix_rt::test]
    async fn retention_expires_old_mailbox_entries_and_history_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let hub = crate::hub::start_actors(Arc::new(Config::default()), store.clone())
            .expect("start actors");
        hub.tokens
            .issue_now("away", vec![])
            .map_err(|_| "issue")
            .expect("token");
        let mut ids = Vec::new();
        for i in 0..3 {
            let mut payload = Map::new();
            payload.insert("n".into(), Value::from(i));
            let id = hub
                .messaging
                .send(SendMessage {
                    from: "admin".into(),
                    to: Some("away".into()),
                    message_type: None,
                    payload,
                    reply_to: ids.last().cloned(),
                    id: None,
                })
                .await
                .expect("messaging reachable")
                .expect("sent");
            ids.push(id);
        }
        let read = || ReadMailbox {
            agent_id: "away".into(),
            since: 0,
        };
        let (entries, _) = hub
            .messaging
            .send(read())
            .await
            .expect("reachable")
            .expect("read");
        assert_eq!(entries.len(), 3);
        // Still within the TTL: nothing goes.
        hub.messaging
            .send(PruneMessages { now: now_ms() })
            .await
            .expect("pruned");
        let (entries, _) = hub
            .messaging
            .send(read())
            .await
            .expect("reachable")
            .expect("read");
        assert_eq!(entries.len(), 3);
        // Eight days later (TTL 7 days): the mailbox and the history are empty, counted.
        let later = now_ms() + Config::days_ms(8);
        hub.messaging
            .send(PruneMessages { now: later })
            .await
            .expect("pruned");
        let (entries, meta) = hub
            .messaging
            .send(read())
            .await
            .expect("reachable")
            .expect("read");
        assert!(entries.is_empty());
        assert_eq!((meta.expired, meta.count, meta.last_seq), (3, 0, 3));
        let thread = hub
            .messaging
            .send(Thread {
                id: ids[0].clone(),
                view: ThreadView::Thread,
            })
            .await
            .expect("reachable");
        assert!(matches!(thread, Err(MsgError::MessageNotFound(_))));
        assert_eq!(
            store.replies.len(),
            0,
            "no reply index entry outlives its messages"
        );
    }
}
