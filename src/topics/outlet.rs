//! `HubOutlet`: the one writer of topic events, shared by `Topics` (events
//! agents and operators publish) and the hub's own actors (the queue for a
//! task's end, standing orders for a missed run), and how a submitter is told
//! its task ended (ext, PROTOCOL.md 6.32).
//!
//! An event gets the next hub-wide sequence and is staged (`e/`, `s/`, `d/`)
//! under one lock, so sequences are staged in order whoever writes; the
//! writer's flush makes it durable with the change it describes (a task's end
//! and its `task.completed` are one write). The written events are handed to
//! `Topics` in memory, in order, which counts them, keeps the newest, tells
//! the bus and wakes subscriptions once durable.
//!
//! A notice by message is a pending record (`p/<key>` in `topic_events`)
//! staged with the change; `Topics` sends it with a message id fixed by task
//! and generation (so it is sent once), removes it, and takes what a crash
//! left at start. So a task's end is told exactly once.
//!
//! The hub publishes `task.completed` and `task.finished` (which every task
//! would publish) only while a subscription to them exists; the rarer topics
//! always.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{dedupe_key, event_key, order_key, seq_of, Order};
use crate::error::StoreError;
use crate::protocol::{
    carried_result, Notify, Publish, TopicEvent, MAX_EVENT_PAYLOAD, TOPIC_STANDING_MISSED,
    TOPIC_TASK_CANCELLED, TOPIC_TASK_COMPLETED, TOPIC_TASK_DEAD_LETTER, TOPIC_TASK_FINISHED,
};
use crate::storage::store::{encode, Store};
use crate::util::now_ms;

/// A message that waits to be sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Pending {
    Message {
        id: String,
        to: String,
        message_type: String,
        payload: Map<String, Value>,
    },
}

/// `Topics` has pending records to take.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// What the lock orders: the next sequence, and what was written since
/// `Topics` last took it.
struct Log {
    next_seq: u64,
    written: Vec<TopicEvent>,
    messages: Vec<(Vec<u8>, Pending)>,
}

struct Inner {
    store: Store,
    /// Topics some subscription listens to.
    wanted: RwLock<HashSet<String>>,
    log: Mutex<Log>,
    /// A `Drain` is on its way (one at a time is enough).
    kicked: AtomicBool,
    topics: OnceLock<Recipient<Drain>>,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HubOutlet {
    inner: Arc<Inner>,
}

pub(super) fn pending_key(name: &str) -> Vec<u8> {
    let mut k = b"p/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The fixed id of the message telling `task`'s submitter of its end at
/// `generation`.
pub(crate) fn notify_message_id(task: &str, generation: u64) -> String {
    let digest = Sha256::digest(format!("notify\0{task}\0{generation}"));
    format!("msg-{}", &hex::encode(digest)[..16])
}

/// A task's end, as the hub's events and the submitter's message tell it.
pub(crate) struct Ended<'a> {
    pub task_id: &'a str,
    pub generation: u64,
    pub status: &'a str,
    pub agent_id: Option<&'a str>,
    pub submitted_by: &'a str,
    pub correlation_id: &'a str,
    pub parent_task_id: Option<&'a str>,
    pub description: &'a str,
    pub metadata: &'a Map<String, Value>,
    pub result: Option<&'a Map<String, Value>>,
    pub last_error: Option<&'a str>,
    pub tokens_used: Option<u64>,
    pub notify: Option<Notify>,
    pub at: i64,
}

impl Ended<'_> {
    fn payload(&self) -> Map<String, Value> {
        let (carried, _) = carried_result(
            self.task_id,
            self.status,
            self.result,
            MAX_EVENT_PAYLOAD / 4,
        );
        let mut p = json!({
            "task_id": self.task_id,
            "status": self.status,
            "agent_id": self.agent_id,
            "submitted_by": self.submitted_by,
            "correlation_id": self.correlation_id,
            "parent_task_id": self.parent_task_id,
            "description": crate::domain::completions::short_description(self.description),
            "metadata": self.metadata,
            "last_error": self.last_error,
            "tokens_used": self.tokens_used,
            "finished_at": self.at,
        });
        for k in ["result", "result_ref", "result_bytes"] {
            if let Some(v) = carried.get(k) {
                p[k] = v.clone();
            }
        }
        match p {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

impl HubOutlet {
    /// Opens the writer after the newest stored event.
    pub(crate) fn open(store: Store) -> Result<HubOutlet, StoreError> {
        let mut next_seq = 1;
        for item in store
            .topic_events
            .range(order_key(0)..=order_key(u64::MAX))
            .rev()
        {
            let (k, _) = item?;
            if let Some(seq) = seq_of(&k) {
                next_seq = seq + 1;
                break;
            }
        }
        Ok(HubOutlet {
            inner: Arc::new(Inner {
                store,
                wanted: RwLock::new(HashSet::new()),
                log: Mutex::new(Log {
                    next_seq,
                    written: Vec::new(),
                    messages: Vec::new(),
                }),
                kicked: AtomicBool::new(false),
                topics: OnceLock::new(),
            }),
        })
    }

    fn log(&self) -> Result<std::sync::MutexGuard<'_, Log>, StoreError> {
        self.inner
            .log
            .lock()
            .map_err(|_| StoreError::Sled("the topic event writer is poisoned".into()))
    }

    /// The sequence the next event gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.log().map_or(0, |l| l.next_seq)
    }

    /// Writes an event (staged: the caller's flush makes it durable) and hands
    /// it to `Topics`; `tell` sends `Topics` a `Drain` (the hub's actors; not
    /// `Topics` itself).
    pub(super) fn write_event(
        &self,
        p: Publish,
        by: &str,
        tell: bool,
    ) -> Result<TopicEvent, StoreError> {
        let mut log = self.log()?;
        let seq = log.next_seq;
        let now = now_ms();
        let event = TopicEvent {
            id: format!("evt-{seq}"),
            seq,
            topic: p.topic,
            payload: p.payload,
            publisher: by.to_string(),
            published_at: now,
            dedupe_key: p.dedupe_key,
        };
        let t = &self.inner.store.topic_events;
        t.insert(event_key(&event.topic, seq), encode(&event))?;
        let order = Order {
            topic: event.topic.clone(),
            at: now,
        };
        t.insert(order_key(seq), encode(&order))?;
        if let Some(key) = &event.dedupe_key {
            t.insert(dedupe_key(&event.topic, key), seq.to_be_bytes().to_vec())?;
        }
        log.next_seq += 1;
        log.written.push(event.clone());
        drop(log);
        if tell {
            self.tell();
        }
        Ok(event)
    }

    fn tell(&self) {
        if !self.inner.kicked.swap(true, Ordering::AcqRel) {
            match self.inner.topics.get() {
                Some(t) => t.do_send(Drain),
                None => self.inner.kicked.store(false, Ordering::Release),
            }
        }
    }

    /// Where pending records go (set once, when `Topics` starts).
    pub(crate) fn connect(&self, topics: Recipient<Drain>) {
        let _ = self.inner.topics.set(topics);
    }

    /// Whether some subscription listens to `topic`.
    pub(crate) fn wants(&self, topic: &str) -> bool {
        self.inner
            .wanted
            .read()
            .map(|w| w.contains(topic))
            .unwrap_or(false)
    }

    pub(super) fn set_wanted(&self, topics: HashSet<String>) {
        if let Ok(mut w) = self.inner.wanted.write() {
            *w = topics;
        }
    }

    /// Records a message under `name` (staged with the caller's change) and
    /// hands it to `Topics`.
    fn stage_message(&self, name: &str, pending: Pending) -> Result<(), StoreError> {
        let key = pending_key(name);
        self.inner
            .store
            .topic_events
            .insert(&key, encode(&pending))?;
        self.log()?.messages.push((key, pending));
        self.tell();
        Ok(())
    }

    fn hub_event(&self, topic: &str, payload: Map<String, Value>) -> Result<(), StoreError> {
        let publish = Publish {
            topic: topic.to_string(),
            payload: Value::Object(payload),
            dedupe_key: None,
        };
        self.write_event(publish, "hub", true).map(|_| ())
    }

    /// A task ended: its hub events, and its submitter's message if asked.
    pub(crate) fn task_ended(&self, e: &Ended<'_>) -> Result<(), StoreError> {
        let topic = match e.status {
            "completed" => Some(TOPIC_TASK_COMPLETED).filter(|t| self.wants(t)),
            "dead_letter" => Some(TOPIC_TASK_DEAD_LETTER),
            "cancelled" => Some(TOPIC_TASK_CANCELLED),
            _ => None,
        };
        let finished = e.notify == Some(Notify::Event) || self.wants(TOPIC_TASK_FINISHED);
        let message = e.notify == Some(Notify::Message);
        if topic.is_none() && !finished && !message {
            return Ok(());
        }
        let payload = e.payload();
        if message {
            let id = notify_message_id(e.task_id, e.generation);
            self.stage_message(
                &format!("message\0{id}"),
                Pending::Message {
                    id,
                    to: e.submitted_by.to_string(),
                    message_type: "task_finished".into(),
                    payload: payload.clone(),
                },
            )?;
        }
        match (topic, finished) {
            (Some(topic), true) => {
                self.hub_event(topic, payload.clone())?;
                self.hub_event(TOPIC_TASK_FINISHED, payload)
            }
            (Some(topic), false) => self.hub_event(topic, payload),
            (None, true) => self.hub_event(TOPIC_TASK_FINISHED, payload),
            (None, false) => Ok(()),
        }
    }

    /// A standing order's run was missed.
    pub(crate) fn run_missed(&self, order: &str, scheduled_for: i64) -> Result<(), StoreError> {
        let payload = json!({"order": order, "scheduled_for": scheduled_for});
        let Value::Object(payload) = payload else {
            return Ok(());
        };
        self.hub_event(TOPIC_STANDING_MISSED, payload)
    }

    /// The events written since the last call, in order.
    pub(super) fn take_written(&self) -> Vec<TopicEvent> {
        self.log()
            .map(|mut log| std::mem::take(&mut log.written))
            .unwrap_or_default()
    }

    /// The messages staged since the last call.
    pub(super) fn take_messages(&self) -> Vec<(Vec<u8>, Pending)> {
        self.inner.kicked.store(false, Ordering::Release);
        self.log()
            .map(|mut log| std::mem::take(&mut log.messages))
            .unwrap_or_default()
    }
}
