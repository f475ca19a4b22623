//! The event log: an append-only, durable record of what happened to every task
//! and agent, and which operator did what.
//!
//! Every event has a global sequence; events are stored in chunks keyed by the
//! sequence of their first event ([`chunks`]), so a scan runs in the order events
//! were appended. Two bucketed indexes ([`index`]) find the events of one task
//! or one agent without a scan of the rest. The writer appends inside its own
//! handler, next to the change the event describes: the event goes into the open
//! chunk and its index entries are staged; the store's flusher takes the chunk
//! (a pre-apply hook) before the staged writes of the same commit, so the event
//! reaches sled first and both become durable in the same flush.
//!
//! Retention drops events older than `event_retention_days`, oldest first, with
//! their index entries; nothing younger is ever dropped.
//!
//! Architecture invariant: the log records what owners tell it; it never decides
//! anything and knows nothing of actors, sockets or HTTP.

mod chunks;
mod index;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;
use crate::storage::store::{encode, key_seq, seq_key, Store};
use chunks::{decode_chunk, OpenChunk, Reader};

/// How many records one query may look at before it answers with what it found
/// and a cursor to go on from (a page may then hold fewer than `limit` events).
pub(crate) const SCAN_BUDGET: usize = 20_000;
/// How many events one retention pass drops at most.
const PRUNE_BATCH: usize = 50_000;

/// One event as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct EventRecord {
    pub seq: u64,
    pub ts: i64,
    /// What happened: a task history event (`queued`, `assigned`, `completed`, ...),
    /// `agent_connected`, `agent_disconnected`, or an operator action.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Who caused it: `admin`, an agent id, or `hub` (sweeps, timers, policies).
    pub actor: String,
    pub details: Value,
}

/// An event to append (the log gives it its sequence).
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub ts: i64,
    pub kind: String,
    pub task_id: Option<String>,
    /// The task's sequence when the caller knows it (else it is looked up).
    pub task_seq: Option<u64>,
    pub agent_id: Option<String>,
    pub actor: String,
    pub details: Value,
}

impl NewEvent {
    /// An event of no task (an operator's or the hub's own action), now.
    pub(crate) fn untasked(
        kind: &str,
        agent_id: Option<String>,
        actor: &str,
        details: Value,
    ) -> NewEvent {
        NewEvent {
            ts: crate::util::now_ms(),
            kind: kind.to_string(),
            task_id: None,
            task_seq: None,
            agent_id,
            actor: actor.to_string(),
            details,
        }
    }
}

/// Which events a query wants. Every filter is optional; `cursor` is the last
/// sequence already seen (0 = from the start).
#[derive(Debug, Clone, Default)]
pub(crate) struct EventQuery {
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    pub kind: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub cursor: u64,
    pub limit: usize,
}

impl EventQuery {
    fn matches(&self, e: &EventRecord) -> bool {
        self.task_id
            .as_ref()
            .is_none_or(|t| e.task_id.as_ref() == Some(t))
            && self
                .agent_id
                .as_ref()
                .is_none_or(|a| e.agent_id.as_ref() == Some(a))
            && self.kind.as_ref().is_none_or(|k| &e.kind == k)
            && self.since.is_none_or(|s| e.ts >= s)
            && self.until.is_none_or(|u| e.ts <= u)
    }
}

/// One page of a query, oldest first. `next_cursor` is set while more may follow.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventPage {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<u64>,
}

/// The events the flusher has not taken yet: the chunk being filled and full
/// ones. Its lock is held only to add or take events, never across a store
/// call, so the flusher's hook (which runs under the store lock) cannot wait on
/// an appender that waits on the store lock.
#[derive(Default)]
struct Handoff {
    open: OpenChunk,
    closed: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Handoff {
    /// Every chunk written so far, the open one closed.
    fn take_chunks(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.closed);
        out.extend(self.open.take());
        out
    }
}

struct Inner {
    store: Store,
    /// The next sequence and the index buckets being filled; held while
    /// appending, so sequences reach the chunks (and buckets are rewritten) in
    /// order.
    appending: Mutex<(u64, index::Buckets)>,
    handoff: Arc<Mutex<Handoff>>,
}

/// Handle to the event log. Cheap to clone; every clone appends to the same log.
#[derive(Clone)]
pub(crate) struct EventLog {
    inner: Arc<Inner>,
}

impl EventLog {
    /// Opens the log in `store`, continuing after its newest event (and converting
    /// the indexes of an older store first).
    pub(crate) fn open(store: Store) -> Result<EventLog, StoreError> {
        index::migrate(&store)?;
        let next = chunks::last_seq(&store)? + 1;
        let handoff = Arc::new(Mutex::new(Handoff::default()));
        let taken: Weak<Mutex<Handoff>> = Arc::downgrade(&handoff);
        let events = store.events.clone();
        store.add_hook(Box::new(move || match taken.upgrade() {
            Some(handoff) => {
                let chunks = handoff.lock().take_chunks();
                chunks
                    .into_iter()
                    .map(|(key, value)| events.hook_write(key, value))
                    .collect()
            }
            None => Vec::new(),
        }));
        Ok(EventLog {
            inner: Arc::new(Inner {
                store,
                appending: Mutex::new((next, index::Buckets::default())),
                handoff,
            }),
        })
    }

    /// Appends events in order. They are durable with the next flush of the store,
    /// the same one that covers the change they describe when it was written after.
    pub(crate) fn append(
        &self,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let mut appending = self.inner.appending.lock();
        let (next, buckets) = &mut *appending;
        for e in events {
            let seq = *next;
            let task_seq = match (e.task_seq, &e.task_id) {
                (Some(s), _) => Some(s),
                (None, Some(task)) => self.task_seq(task)?,
                (None, None) => None,
            };
            let record = EventRecord {
                seq,
                ts: e.ts,
                kind: e.kind,
                task_id: e.task_id,
                agent_id: e.agent_id,
                actor: e.actor,
                details: e.details,
            };
            let body = encode(&record);
            {
                let mut handoff = self.inner.handoff.lock();
                handoff.open.push_encoded(seq, &body);
                if handoff.open.is_full() {
                    let full = handoff.open.take();
                    handoff.closed.extend(full);
                }
            }
            // After the event: an index entry never reaches sled before it.
            index::add(store, buckets, task_seq, record.agent_id.as_deref(), seq)?;
            *next = seq + 1;
        }
        Ok(())
    }

    /// The creation sequence of `task_id` (none for an unknown task).
    fn task_seq(&self, task_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .store
            .task_ids
            .get(task_id.as_bytes())?
            .and_then(|v| key_seq(&v)))
    }

    /// Appends events that no other write accompanies (connects, disconnects) and
    /// asks for a flush, so they do not wait for the next change to become durable.
    pub(crate) fn record(
        &self,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<(), StoreError> {
        self.append(events)?;
        // The request is queued now; nobody needs to wait for it.
        drop(self.inner.store.durable());
        Ok(())
    }

    /// One page of events matching `q`, oldest first.
    pub(crate) fn query(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let store = &self.inner.store;
        let mut page = Page::new(q);
        let from = q.cursor.saturating_add(1);
        let mut reader = Reader::default();
        match (&q.task_id, &q.agent_id) {
            (Some(task), _) => {
                if let Some(task_seq) = self.task_seq(task)? {
                    for seq in index::task_events(store, task_seq, from)? {
                        if !page.consider(seq, reader.get(store, seq)?) {
                            break;
                        }
                    }
                }
            }
            (None, Some(agent)) => {
                'buckets: for bucket in index::agent_events(store, agent, from) {
                    for seq in bucket? {
                        if !page.consider(seq, reader.get(store, seq)?) {
                            break 'buckets;
                        }
                    }
                }
            }
            (None, None) => {
                // From the chunk holding `from` on.
                let start = match store.events.range(..=seq_key(from)).next_back() {
                    Some(item) => item?.0.to_vec(),
                    None => seq_key(from).to_vec(),
                };
                'chunks: for item in store.events.range(start..) {
                    let (key, value) = item?;
                    for event in decode_chunk(&key, &value)? {
                        if event.seq < from {
                            continue;
                        }
                        if !page.consider(event.seq, Some(event)) {
                            break 'chunks;
                        }
                    }
                }
            }
        }
        Ok(page.finish())
    }

    /// Drops events older than `before` (ms), oldest first, with their index
    /// entries; at most about one batch per call. Returns how many went.
    pub(crate) fn prune(&self, before: i64) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let mut dropped = Vec::new();
        let mut rewritten = None;
        for item in store.events.iter() {
            let (key, value) = item?;
            if dropped.len() >= PRUNE_BATCH {
                break;
            }
            let events = match decode_chunk(&key, &value) {
                Ok(events) => events,
                Err(err) => {
                    tracing::error!(error = %err, "unreadable event chunk kept");
                    break;
                }
            };
            // Sequences follow append order, so the first young event ends the
            // run (an event stamped late by a clock step waits its turn).
            let young = events.iter().position(|e| e.ts >= before);
            let cut = young.unwrap_or(events.len());
            let mut events = events;
            let kept = events.split_off(cut);
            dropped.extend(events);
            if young.is_some() {
                if cut > 0 {
                    rewritten = Some((key.to_vec(), kept));
                }
                break;
            }
            store.events.remove(&key)?;
        }
        if let Some((old_key, kept)) = rewritten {
            let mut chunk = OpenChunk::default();
            for e in &kept {
                chunk.push(e);
            }
            store.events.remove(&old_key)?;
            if let Some((key, value)) = chunk.take() {
                store.events.insert(key, value)?;
            }
        }
        let mut by_owner: BTreeMap<(Option<String>, Option<String>), Vec<u64>> = BTreeMap::new();
        for e in &dropped {
            by_owner
                .entry((e.task_id.clone(), e.agent_id.clone()))
                .or_default()
                .push(e.seq);
        }
        // Under the append lock: appends rewrite the same buckets.
        let mut appending = self.inner.appending.lock();
        appending.1.clear();
        for ((task, agent), seqs) in by_owner {
            let task_seq = match &task {
                Some(task) => self.task_seq(task)?,
                None => None,
            };
            index::remove(store, task_seq, agent.as_deref(), &seqs)?;
        }
        Ok(dropped.len())
    }
}

/// One page being filled: the limit, the scan budget and the cursor.
struct Page<'q> {
    q: &'q EventQuery,
    limit: usize,
    budget: usize,
    events: Vec<EventRecord>,
    last_seen: Option<u64>,
    exhausted: bool,
}

impl<'q> Page<'q> {
    fn new(q: &'q EventQuery) -> Page<'q> {
        Page {
            q,
            limit: q.limit.max(1),
            budget: SCAN_BUDGET,
            events: Vec::new(),
            last_seen: None,
            exhausted: true,
        }
    }

    /// Looks at event `seq` (`None`: an index entry of an event retention
    /// dropped); answers whether to go on.
    fn consider(&mut self, seq: u64, event: Option<EventRecord>) -> bool {
        self.budget -= 1;
        self.last_seen = Some(seq);
        if let Some(e) = event.filter(|e| self.q.matches(e)) {
            self.events.push(e);
        }
        if self.events.len() >= self.limit || self.budget == 0 {
            self.exhausted = false;
            return false;
        }
        true
    }

    fn finish(self) -> EventPage {
        EventPage {
            events: self.events,
            // More may follow unless the scan ran to the end of the range.
            next_cursor: if self.exhausted { None } else { self.last_seen },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ts: i64, kind: &str, task: Option<&str>, agent: Option<&str>) -> NewEvent {
        NewEvent {
            ts,
            kind: kind.into(),
            task_id: task.map(Into::into),
            task_seq: task.map(|_| 7),
            agent_id: agent.map(Into::into),
            actor: "hub".into(),
            details: json!({}),
        }
    }

    /// Every sequence a query for `task` (or all) gives, page by page.
    fn page_through(log: &EventLog, task: Option<&str>, limit: usize) -> Vec<u64> {
        let mut cursor = 0;
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let page = log
                .query(&EventQuery {
                    task_id: task.map(Into::into),
                    cursor,
                    limit,
                    ..EventQuery::default()
                })
                .expect("query");
            seen.extend(page.events.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
        seen
    }

    #[test]
    fn appends_in_order_and_continues_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let log = EventLog::open(store.clone()).expect("log");
        log.append([
            event(1, "queued", Some("t1"), None),
            event(2, "assigned", Some("t1"), Some("a")),
        ])
        .expect("append");
        let again = EventLog::open(store).expect("log");
        again
            .append([event(3, "agent_connected", None, Some("a"))])
            .expect("append");
        let all = again
            .query(&EventQuery {
                limit: 10,
                ..EventQuery::default()
            })
            .expect("query");
        let seqs: Vec<u64> = all.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(all.next_cursor, None);
        let by_agent = again
            .query(&EventQuery {
                agent_id: Some("a".into()),
                limit: 10,
                ..EventQuery::default()
            })
            .expect("query");
        assert_eq!(by_agent.events.len(), 2);
    }

    #[test]
    fn pages_by_cursor_and_prunes_only_old_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.task_ids.insert(b"t", &seq_key(7)).expect("task id");
        let log = EventLog::open(store).expect("log");
        log.append((0..25).map(|i| event(i, "progress", Some("t"), Some("a"))))
            .expect("append");
        let seen = page_through(&log, Some("t"), 10);
        assert_eq!(seen, (1..=25).collect::<Vec<u64>>());
        assert_eq!(log.prune(10).expect("prune"), 10);
        let left = log
            .query(&EventQuery {
                task_id: Some("t".into()),
                limit: 100,
                ..EventQuery::default()
            })
            .expect("query");
        assert_eq!(left.events.first().map(|e| e.ts), Some(10));
        assert_eq!(left.events.len(), 15);
    }

    #[test]
    fn an_open_converts_indexes_of_one_key_per_event_into_buckets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.task_ids.insert(b"t", &seq_key(7)).expect("task id");
        // Events and indexes as the format before chunks and buckets wrote them.
        for seq in 1..=3u64 {
            let record = EventRecord {
                seq,
                ts: seq as i64,
                kind: "progress".into(),
                task_id: Some("t".into()),
                agent_id: Some("a".into()),
                actor: "hub".into(),
                details: json!({"n": seq}),
            };
            let mut value = vec![crate::storage::store::FORMAT_JSON];
            value.extend(serde_json::to_vec(&record).expect("json"));
            store.events.insert(seq_key(seq), value).expect("event");
            let mut pair = seq_key(7).to_vec();
            pair.extend(seq_key(seq));
            store.events_by_task.insert(pair, &[]).expect("task index");
            store
                .events_by_agent
                .insert(crate::storage::store::scoped_key("a", seq), &[])
                .expect("agent index");
        }
        let log = EventLog::open(store.clone()).expect("log");
        assert_eq!(store.events_by_task.len(), 1, "one bucket");
        assert_eq!(store.events_by_agent.len(), 1, "one bucket");
        log.append([event(9, "progress", Some("t"), Some("a"))])
            .expect("append");
        for q in [
            EventQuery {
                agent_id: Some("a".into()),
                limit: 100,
                ..EventQuery::default()
            },
            EventQuery {
                task_id: Some("t".into()),
                limit: 100,
                ..EventQuery::default()
            },
            EventQuery {
                limit: 100,
                ..EventQuery::default()
            },
        ] {
            let page = log.query(&q).expect("query");
            let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, vec![1, 2, 3, 4], "{q:?}");
        }
        // Opened again: already converted, and the sequence goes on.
        let again = EventLog::open(store.clone()).expect("log");
        again
            .append([event(10, "progress", None, None)])
            .expect("append");
        let all = again
            .query(&EventQuery {
                cursor: 3,
                limit: 100,
                ..EventQuery::default()
            })
            .expect("query");
        let seqs: Vec<u64> = all.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }

    #[test]
    fn many_events_span_chunks_and_page_across_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.task_ids.insert(b"t", &seq_key(7)).expect("task id");
        let log = EventLog::open(store.clone()).expect("log");
        let n = 2500i64;
        log.append((0..n).map(|i| event(i, "progress", Some("t"), Some("a"))))
            .expect("append");
        assert!(store.events.len() >= 4, "{} chunks", store.events.len());
        // One busy task and agent: their index records stay bounded.
        for tree in [&store.events_by_task, &store.events_by_agent] {
            assert!(tree.len() >= 3, "{} buckets", tree.len());
            for item in tree.iter() {
                let (_, value) = item.expect("bucket");
                assert!(value.len() <= 16 * 1024, "{} bytes", value.len());
            }
        }
        let by_agent = log
            .query(&EventQuery {
                agent_id: Some("a".into()),
                cursor: 1500,
                limit: 5,
                ..EventQuery::default()
            })
            .expect("query");
        let seqs: Vec<u64> = by_agent.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1501, 1502, 1503, 1504, 1505]);
        for q in [None, Some("t")] {
            let seen = page_through(&log, q, 100);
            assert_eq!(seen, (1..=n as u64).collect::<Vec<u64>>(), "{q:?}");
        }
        // Pruning drops whole old chunks and cuts the one holding the boundary.
        let cut = chunks::CHUNK_EVENTS as i64 + 5;
        assert_eq!(log.prune(cut).expect("prune"), cut as usize);
        let left = log
            .query(&EventQuery {
                agent_id: Some("a".into()),
                limit: 10,
                ..EventQuery::default()
            })
            .expect("query");
        assert_eq!(left.events.first().map(|e| e.ts), Some(cut));
    }
}
