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
            tracing::warn!(agent_id = %agent_id, evicted_total = meta.evicted,
                           cap = self.limits.mailbox_cap, "mailbox full: evicted its oldest message");
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

/// Send a direct (`to`) or broadcast message; answers its id.
#[derive(Message)]
#[rtype(result = "Result<String, MsgError>")]
pub(crate) struct SendMessage {
    pub from: String,
    /// `None` or `"broadcast"`: every other online agent.
    pub to: Option<String>,
    pub message_type: Option<String>,
    pub payload: Map<String, Value>,
    pub reply_to: Option<String>,
}

impl Handler<SendMessage> for Messaging {
    type Result = ResponseActFuture<Self, Result<String, MsgError>>;

    fn handle(&mut self, msg: SendMessage, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_size(&msg.payload) {
            return Box::pin(fut::ready(Err(e)));
        }
        let to = msg.to.filter(|t| t != "broadcast");
        if let Some(agent) = &to {
            match self.tokens.get(agent) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Box::pin(fut::ready(Err(MsgError::RecipientNotFound(agent.clone()))))
                }
                Err(e) => return Box::pin(fut::ready(Err(e.into()))),
            }
        }
        let message = ChatMessage {
            id: new_message_id(),
            from: msg.from,
            to: to.clone(),
            channel: None,
            message_type: msg.message_type.unwrap_or_else(|| "chat".into()),
            payload: Value::Object(msg.payload),
            reply_to: msg.reply_to,
            timestamp: now_ms(),
        };
        if let Err(e) = self.record(&message) {
            return Box::pin(fut::ready(Err(e)));
        }
        let id = message.id.clone();
        // The mailbox is the record, the push only a wake-up: every recipient
        // (every registered agent but the sender, for a broadcast) keeps the
        // message until it acknowledges it, online or not.
        let recipients = match to {
            Some(agent) => vec![agent],
            None => match self.tokens.list() {
                Ok(records) => records
                    .into_iter()
                    .map(|r| r.agent_id)
                    .filter(|a| *a != message.from)
                    .collect(),
                Err(e) => return Box::pin(fut::ready(Err(e.into()))),
            },
        };
        let mut pushes = Vec::with_capacity(recipients.len());
        for agent in recipients {
            let seq = match self.mailbox_put(&agent, message.clone()) {
                Ok(seq) => seq,
                Err(e) => return self.after_flush(Err(e)),
            };
            pushes.push(Deliver {
                agent_id: agent,
                frame: ServerFrame::for_mailbox(&message, seq),
            });
        }
        // Pushed only once durable: a mailbox sequence a client has seen is
        // never given to another message after a crash.
        self.after_flush_then(Ok(id), move |act| {
            for push in pushes {
                act.presence.do_send(push);
            }
        })
    }
}

/// An agent's mailbox: entries after `since`, oldest first.
#[derive(Message)]
#[rtype(result = "Result<(Vec<SeqEntry>, MailboxMeta), MsgError>")]
pub(crate) struct ReadMailbox {
    pub agent_id: String,
    pub since: u64,
}

impl Handler<ReadMailbox> for Messaging {
    type Result = Result<(Vec<SeqEntry>, MailboxMeta), MsgError>;

    fn handle(&mut self, msg: ReadMailbox, _: &mut Context<Self>) -> Self::Result {
        let meta = self
            .mailboxes
            .get(&msg.agent_id)
            .cloned()
            .unwrap_or_default();
        let start = scoped_key(&msg.agent_id, msg.since.saturating_add(1));
        let end = scoped_key(&msg.agent_id, u64::MAX);
        let mut out = Vec::new();
        for item in self
            .store
            .mailbox
            .range(start..=end)
            .take(MAILBOX_READ_LIMIT)
        {
            let (k, v) = item?;
            out.push(decode("mailbox", &k, &v)?);
        }
        Ok((out, meta))
    }
}

/// Acknowledge (and drop) an agent's mailbox entries up to `seq`; answers the
/// sequence actually acknowledged.
#[derive(Message)]
#[rtype(result = "Result<u64, MsgError>")]
pub(crate) struct AckMailbox {
    pub agent_id: String,
    pub seq: u64,
}

impl Handler<AckMailbox> for Messaging {
    type Result = ResponseActFuture<Self, Result<u64, MsgError>>;

    fn handle(&mut self, msg: AckMailbox, _: &mut Context<Self>) -> Self::Result {
        let result = (|| {
            let mut meta = self
                .mailboxes
                .get(&msg.agent_id)
                .cloned()
                .unwrap_or_default();
            let up_to = msg.seq.min(meta.last_seq);
            let start = scoped_key(&msg.agent_id, 0);
            let end = scoped_key(&msg.agent_id, up_to);
            let keys: Vec<_> = self
                .store
                .mailbox
                .range(start..=end)
                .keys()
                .collect::<Result<_, _>>()?;
            for k in &keys {
                self.store.mailbox.remove(k)?;
            }
            meta.count = meta.count.saturating_sub(keys.len() as u64);
            meta.acked = meta.acked.max(up_to);
            self.save_mailbox(&msg.agent_id, &meta)?;
            self.mailboxes.insert(msg.agent_id.clone(), meta);
            Ok(up_to)
        })();
        self.after_flush(result)
    }
}

#[derive(Message)]
#[rtype(result = "Result<ChannelInfo, MsgError>")]
pub(crate) struct CreateChannel {
    pub name: String,
    pub description: String,
    pub by: String,
}

impl Handler<CreateChannel> for Messaging {
    type Result = ResponseActFuture<Self, Result<ChannelInfo, MsgError>>;

    fn handle(&mut self, msg: CreateChannel, _: &mut Context<Self>) -> Self::Result {
        if self.channels.contains_key(&msg.name) {
            return Box::pin(fut::ready(Err(MsgError::ChannelExists(msg.name))));
        }
        let record = ChannelRecord {
            name: msg.name,
            description: msg.description,
            created_at: now_ms(),
            created_by: msg.by,
            subscribers: BTreeSet::new(),
            last_seq: 0,
            count: 0,
        };
        let info = record.info();
        let result = self.save_channel(record).map(|_| info);
        self.after_flush(result)
    }
}

/// Subscribe an agent; answers whether it was subscribed already.
#[derive(Message)]
#[rtype(result = "Result<bool, MsgError>")]
pub(crate) struct Subscribe {
    pub channel: String,
    pub agent_id: String,
}

impl Handler<Subscribe> for Messaging {
    type Result = ResponseActFuture<Self, Result<bool, MsgError>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let result = self.channel(&msg.channel).cloned().and_then(|mut c| {
            if c.subscribers.contains(&msg.agent_id) {
                return Ok(true);
            }
            c.subscribers.insert(msg.agent_id.clone());
            let others = c.others(&msg.agent_id);
            self.save_channel(c)?;
            self.presence.do_send(DeliverMany {
                agents: others,
                frame: ServerFrame::ChannelAgentJoined {
                    channel: msg.channel.clone(),
                    agent_id: msg.agent_id.clone(),
                },
            });
            Ok(false)
        });
        self.after_flush(result)
    }
}

/// Unsubscribe an agent; answers whether it was subscribed.
#[derive(Message)]
#[rtype(result = "Result<bool, MsgError>")]
pub(crate) struct Unsubscribe {
    pub channel: String,
    pub agent_id: String,
}

impl Handler<Unsubscribe> for Messaging {
    type Result = ResponseActFuture<Self, Result<bool, MsgError>>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let result = self.channel(&msg.channel).cloned().and_then(|mut c| {
            let was = c.subscribers.remove(&msg.agent_id);
            if was {
                self.save_channel(c)?;
            }
            Ok(was)
        });
        self.after_flush(result)
    }
}

/// Publish on a channel; answers (seq, message id).
#[derive(Message)]
#[rtype(result = "Result<(u64, String), MsgError>")]
pub(crate) struct Publish {
    pub channel: String,
    pub from: String,
    pub message_type: Option<String>,
    pub payload: Map<String, Value>,
    pub reply_to: Option<String>,
}

impl Handler<Publish> for Messaging {
    type Result = ResponseActFuture<Self, Result<(u64, String), MsgError>>;

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) -> Self::Result {
        let result = self.check_size(&msg.payload).and_then(|_| {
            let mut c = self.channel(&msg.channel)?.clone();
            let message = ChatMessage {
                id: new_message_id(),
                from: msg.from.clone(),
                to: None,
                channel: Some(msg.channel.clone()),
                message_type: msg.message_type.unwrap_or_else(|| "chat".into()),
                payload: Value::Object(msg.payload),
                reply_to: msg.reply_to,
                timestamp: now_ms(),
            };
            self.record(&message)?;
            c.last_seq += 1;
            c.count += 1;
            let entry = SeqEntry {
                seq: c.last_seq,
                message,
                stored_at: now_ms(),
            };
            self.store
                .channel_log
                .insert(scoped_key(&c.name, entry.seq), encode(&entry))?;
            while c.count > self.limits.channel_history {
                let oldest = self
                    .store
                    .channel_log
                    .scan_prefix(scope_prefix(&c.name))
                    .keys()
                    .next();
                let Some(oldest) = oldest.transpose()? else {
                    break;
                };
                self.store.channel_log.remove(oldest)?;
                c.count -= 1;
            }
            let subscribers = c.others(&msg.from);
            self.save_channel(c)?;
            self.presence.do_send(DeliverMany {
                agents: subscribers,
                frame: ServerFrame::for_message(&entry.message),
            });
            Ok((entry.seq, entry.message.id))
        });
        self.after_flush(result)
    }
}

/// Channel messages with seq > `since`, oldest first, at most `limit`.
#[derive(Message)]
#[rtype(result = "Result<Vec<SeqEntry>, MsgError>")]
pub(crate) struct ChannelHistory {
    pub channel: String,
    pub since: u64,
    pub limit: usize,
}

impl Handler<ChannelHistory> for Messaging {
    type Result = Result<Vec<SeqEntry>, MsgError>;

    fn handle(&mut self, msg: ChannelHistory, _: &mut Context<Self>) -> Self::Result {
        self.channel(&msg.channel)?;
        let start = scoped_key(&msg.channel, msg.since.saturating_add(1));
        let end = scoped_key(&msg.channel, u64::MAX);
        let mut out = Vec::new();
        for item in self.store.channel_log.range(start..=end).take(msg.limit) {
            let (k, v) = item?;
            out.push(decode("channel_log", &k, &v)?);
        }
        Ok(out)
    }
}

/// Every channel, by name.
#[derive(Message)]
#[rtype(result = "Vec<ChannelInfo>")]
pub(crate) struct ListChannels;

impl Handler<ListChannels> for Messaging {
    type Result = MessageResult<ListChannels>;

    fn handle(&mut self, _: ListChannels, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.channels.values().map(ChannelRecord::info).collect())
    }
}

/// One channel with its subscribers.
#[derive(Message)]
#[rtype(result = "Result<(ChannelInfo, Vec<String>, u64), MsgError>")]
pub(crate) struct GetChannel {
    pub channel: String,
}

impl Handler<GetChannel> for Messaging {
    type Result = Result<(ChannelInfo, Vec<String>, u64), MsgError>;

    fn handle(&mut self, msg: GetChannel, _: &mut Context<Self>) -> Self::Result {
        let c = self.channel(&msg.channel)?;
        Ok((
            c.info(),
            c.subscribers.iter().cloned().collect(),
            c.last_seq,
        ))
    }
}

/// Message history with filters, in sequence order after `cursor`.
#[derive(Message, Default)]
#[rtype(result = "Result<(Vec<(u64, ChatMessage)>, Option<u64>), MsgError>")]
pub(crate) struct QueryMessages {
    pub from: Option<String>,
    pub to: Option<String>,
    pub channel: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub cursor: u64,
    pub limit: usize,
}

impl QueryMessages {
    fn matches(&self, m: &ChatMessage) -> bool {
        self.from.as_ref().is_none_or(|f| *f == m.from)
            && self.to.as_ref().is_none_or(|t| m.to.as_ref() == Some(t))
            && self
                .channel
                .as_ref()
                .is_none_or(|c| m.channel.as_ref() == Some(c))
            && self.start_time.is_none_or(|s| m.timestamp >= s)
            && self.end_time.is_none_or(|e| m.timestamp <= e)
    }
}

impl Handler<QueryMessages> for Messaging {
    type Result = Result<(Vec<(u64, ChatMessage)>, Option<u64>), MsgError>;

    fn handle(&mut self, msg: QueryMessages, _: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        for item in self
            .store
            .messages
            .range(seq_key(msg.cursor.saturating_add(1))..)
        {
            let (k, v) = item?;
            let m: ChatMessage = decode("messages", &k, &v)?;
            if msg.matches(&m) {
                out.push((key_seq(&k).unwrap_or(0), m));
                if out.len() > msg.limit {
                    break;
                }
            }
        }
        let more = out.len() > msg.limit;
        out.truncate(msg.limit);
        let next = if more {
            out.last().map(|(s, _)| *s)
        } else {
            None
        };
        Ok((out, next))
    }
}

/// Which view of a reply chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadView {
    /// The root and every message below it, in sequence order.
    Thread,
    /// Direct replies to the message.
    Replies,
    /// The first message of the chain.
    Root,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<ChatMessage>, MsgError>")]
pub(crate) struct Thread {
    pub id: String,
    pub view: ThreadView,
}

impl Handler<Thread> for Messaging {
    type Result = Result<Vec<ChatMessage>, MsgError>;

    fn handle(&mut self, msg: Thread, _: &mut Context<Self>) -> Self::Result {
        let found = |m: Option<(u64, ChatMessage)>| {
            m.ok_or_else(|| MsgError::MessageNotFound(msg.id.clone()))
        };
        match msg.view {
            ThreadView::Root => Ok(vec![self.root_of(&msg.id)?.1]),
            ThreadView::Replies => {
                found(self.message_by_id(&msg.id)?)?;
                Ok(self
                    .replies_of(&msg.id)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect())
            }
            ThreadView::Thread => {
                let root = self.root_of(&msg.id)?;
                let mut all = vec![root.clone()];
                let mut queue = VecDeque::from([root.1.id]);
                while let Some(id) = queue.pop_front() {
                    for reply in self.replies_of(&id)? {
                        if all.len() >= THREAD_LIMIT {
                            break;
                        }
                        queue.push_back(reply.1.id.clone());
                        all.push(reply);
                    }
                }
                all.sort_by_key(|(seq, _)| *seq);
                all.dedup_by_key(|(seq, _)| *seq);
                Ok(all.into_iter().map(|(_, m)| m).collect())
            }
        }
    }
}

/// Drop what outlived its retention (sent by `Retention`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PruneMessages {
    pub now: i64,
}

impl Handler<PruneMessages> for Messaging {
    type Result = ();

    fn handle(&mut self, msg: PruneMessages, _: &mut Context<Self>) {
        if let Err(e) = self.prune(msg.now) {
            tracing::error!(error = ?e, "message retention failed");
        }
    }
}

#[cfg(test)]
mod tests {
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
