//! The event log: an append-only, durable record of what happened to every task
//! and agent, and which operator did what.
//!
//! Records are keyed by a global sequence (big-endian), so a scan runs in the
//! order events were appended; two index trees map (task sequence, event
//! sequence) and (agent id, event sequence) to nothing, so the events of one task
//! or one agent are read without a scan of the rest. The task index is keyed by
//! the task's creation sequence, not its id, so new entries land near the end of
//! its key space instead of at random places (measured: a quarter of the log's
//! write cost saved). The writer appends inside its own handler, next to
//! the change the event describes, so both become durable in the same flush.
//!
//! Retention drops events older than `event_retention_days`, oldest first, with
//! their index entries; nothing younger is ever dropped.
//!
//! Architecture invariant: the log records what owners tell it; it never decides
//! anything and knows nothing of actors, sockets or HTTP.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;
use crate::storage::store::{decode, encode, key_seq, scoped_key, seq_key, Store};

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

struct Inner {
    store: Store,
    /// The next sequence; held while appending so sequences reach sled in order.
    next: Mutex<u64>,
}

/// Handle to the event log. Cheap to clone; every clone appends to the same log.
#[derive(Clone)]
pub(crate) struct EventLog {
    inner: Arc<Inner>,
}

impl EventLog {
    /// Opens the log in `store`, continuing after its newest event.
    pub(crate) fn open(store: Store) -> Result<EventLog, StoreError> {
        let next = match store.events.last()? {
            Some((key, _)) => key_seq(&key).map_or(1, |s| s + 1),
            None => 1,
        };
        Ok(EventLog {
            inner: Arc::new(Inner {
                store,
                next: Mutex::new(next),
            }),
        })
    }

    /// Appends events in order. They are durable with the next flush of the store,
    /// the same one that covers the change they describe when it was written first.
    pub(crate) fn append(
        &self,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let mut next = self.inner.next.lock();
        for e in events {
            let seq = *next;
            let record = EventRecord {
                seq,
                ts: e.ts,
                kind: e.kind,
                task_id: e.task_id,
                agent_id: e.agent_id,
                actor: e.actor,
                details: e.details,
            };
            let task_seq = match (e.task_seq, &record.task_id) {
                (Some(s), _) => Some(s),
                (None, Some(task)) => self.task_seq(task)?,
                (None, None) => None,
            };
            if let Some(task_seq) = task_seq {
                store.events_by_task.insert(pair_key(task_seq, seq), &[])?;
            }
            if let Some(agent) = &record.agent_id {
                store.events_by_agent.insert(scoped_key(agent, seq), &[])?;
            }
            store.events.insert(seq_key(seq), encode(&record))?;
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
        let limit = q.limit.max(1);
        let mut events = Vec::new();
        let mut last_seen = None;
        let mut budget = SCAN_BUDGET;
        let mut exhausted = true;
        let from = q.cursor.saturating_add(1);
        // The narrowest index the query allows: (tree, first key, last key).
        let index = match (&q.task_id, &q.agent_id) {
            (Some(task), _) => {
                let Some(task_seq) = self.task_seq(task)? else {
                    return Ok(EventPage {
                        events,
                        next_cursor: None,
                    });
                };
                Some((
                    &store.events_by_task,
                    pair_key(task_seq, from).to_vec(),
                    pair_key(task_seq, u64::MAX).to_vec(),
                ))
            }
            (None, Some(agent)) => Some((
                &store.events_by_agent,
                scoped_key(agent, from),
                scoped_key(agent, u64::MAX),
            )),
            (None, None) => None,
        };
        let mut consider = |seq: u64, value: Option<sled::IVec>| -> Result<bool, StoreError> {
            let Some(value) = value else {
                // Index entry of an event retention already dropped.
                return Ok(true);
            };
            let record: EventRecord = decode("events", &seq_key(seq), &value)?;
            if q.matches(&record) {
                events.push(record);
            }
            Ok(events.len() < limit)
        };
        match index {
            Some((tree, start, end)) => {
                for item in tree.range(start..=end) {
                    let (key, _) = item?;
                    let Some(seq) = key.len().checked_sub(8).and_then(|at| key_seq(&key[at..]))
                    else {
                        continue;
                    };
                    let value = store.events.get(seq_key(seq))?;
                    budget -= 1;
                    last_seen = Some(seq);
                    if !consider(seq, value)? || budget == 0 {
                        exhausted = false;
                        break;
                    }
                }
            }
            None => {
                for item in store.events.range(seq_key(from)..) {
                    let (key, value) = item?;
                    let Some(seq) = key_seq(&key) else { continue };
                    budget -= 1;
                    last_seen = Some(seq);
                    if !consider(seq, Some(value))? || budget == 0 {
                        exhausted = false;
                        break;
                    }
                }
            }
        }
        // More may follow unless the scan ran to the end of the range.
        let next_cursor = if exhausted { None } else { last_seen };
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    /// Drops events older than `before` (ms), oldest first, with their index
    /// entries; at most one batch per call. Returns how many went.
    pub(crate) fn prune(&self, before: i64) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let mut dropped = 0;
        let mut doomed = Vec::new();
        for item in store.events.iter() {
            let (key, value) = item?;
            if doomed.len() >= PRUNE_BATCH {
                break;
            }
            match decode::<EventRecord>("events", &key, &value) {
                // Sequences follow append order, so the first young event ends the
                // run (an event stamped late by a clock step waits its turn).
                Ok(e) if e.ts >= before => break,
                Ok(e) => doomed.push((key, Some(e))),
                Err(err) => {
                    tracing::error!(error = %err, "unreadable event record kept");
                    break;
                }
            }
        }
        for (key, record) in doomed {
            if let Some(e) = record {
                if let Some(task_seq) = match &e.task_id {
                    Some(task) => self.task_seq(task)?,
                    None => None,
                } {
                    store.events_by_task.remove(pair_key(task_seq, e.seq))?;
                }
                if let Some(agent) = &e.agent_id {
                    store.events_by_agent.remove(scoped_key(agent, e.seq))?;
                }
            }
            store.events.remove(key)?;
            dropped += 1;
        }
        Ok(dropped)
    }
}

/// Key of event `seq` in the task index: (task sequence, event sequence).
fn pair_key(task_seq: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&task_seq.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
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
        let mut cursor = 0;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let page = log
                .query(&EventQuery {
                    task_id: Some("t".into()),
                    cursor,
                    limit: 10,
                    ..EventQuery::default()
                })
                .expect("query");
            seen.extend(page.events.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
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
}
