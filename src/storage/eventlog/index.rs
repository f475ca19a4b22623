//! The event log's two indexes, kept in buckets so that an event adds no new
//! sled key: the events of 16 neighbouring tasks within 1,024 consecutive
//! sequences share one record of the task index, and an agent's events within
//! 1,024 consecutive sequences share one of the agent index (so no record grows
//! past 16 KiB however busy one task or agent is). Appending rewrites a bucket;
//! the buckets being filled are kept in memory ([`Buckets`]), and staged writes
//! coalesce, so a commit window writes each touched bucket once.
//!
//! - `events_by_task`: `b'T'` + (task sequence >> 4) + (event sequence >> 10) →
//!   (task sequence, event sequence) pairs, 16 bytes each, in append order.
//! - `events_by_agent`: scoped (agent id, event sequence >> 10) → event
//!   sequences, 8 bytes each, ascending.
//!
//! Stores written before the buckets had one empty-valued key per event; an open
//! converts them ([`migrate`]).

use std::collections::{BTreeMap, HashMap};

use crate::error::StoreError;
use crate::storage::store::{key_seq, scoped_key, split_scoped_key, Store, Tree};

/// `meta` key of the index layout; absent means one key per event.
const LAYOUT_KEY: &str = "event_index_layout";
const LAYOUT_BUCKETS: &[u8] = b"buckets-v2";

const TASK_GROUP_BITS: u32 = 4;
const SEQ_BUCKET_BITS: u32 = 10;
/// The buckets kept in memory at most (the ones being filled, in practice).
const CACHED_BUCKETS: usize = 4096;

/// The prefix of every bucket of `task_seq`'s group.
fn task_group(task_seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = b'T';
    key[1..].copy_from_slice(&(task_seq >> TASK_GROUP_BITS).to_be_bytes());
    key
}

fn task_key(task_seq: u64, seq: u64) -> Vec<u8> {
    let mut key = task_group(task_seq).to_vec();
    key.extend_from_slice(&(seq >> SEQ_BUCKET_BITS).to_be_bytes());
    key
}

fn agent_key(agent: &str, seq: u64) -> Vec<u8> {
    scoped_key(agent, seq >> SEQ_BUCKET_BITS)
}

/// The buckets being filled, by (tree, key): what sled (or the staging) holds
/// for them, without reading it back for every event. Only the event log writes
/// these trees, under its append lock, which also guards this cache.
#[derive(Default)]
pub(super) struct Buckets {
    values: HashMap<(bool, Vec<u8>), Vec<u8>>,
}

impl Buckets {
    /// Forgets everything (after anything but an append rewrote buckets).
    pub(super) fn clear(&mut self) {
        self.values.clear();
    }

    /// Appends `entry` to the bucket `key` of the task (`true`) or agent index
    /// and stages the bucket.
    fn append(
        &mut self,
        store: &Store,
        task: bool,
        key: Vec<u8>,
        entry: &[u8],
    ) -> Result<(), StoreError> {
        let tree = if task {
            &store.events_by_task
        } else {
            &store.events_by_agent
        };
        let slot = (task, key);
        if !self.values.contains_key(&slot) {
            if self.values.len() >= CACHED_BUCKETS {
                self.values.clear();
            }
            let stored = tree.get(&slot.1)?.map(|v| v.to_vec()).unwrap_or_default();
            self.values.insert(slot.clone(), stored);
        }
        if let Some(value) = self.values.get_mut(&slot) {
            value.extend_from_slice(entry);
            tree.insert(&slot.1, value.clone())?;
        }
        Ok(())
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    key_seq(bytes.get(at..at + 8)?)
}

/// Adds event `seq` to the indexes of its task and agent.
pub(super) fn add(
    store: &Store,
    buckets: &mut Buckets,
    task_seq: Option<u64>,
    agent: Option<&str>,
    seq: u64,
) -> Result<(), StoreError> {
    if let Some(task_seq) = task_seq {
        let mut pair = [0u8; 16];
        pair[..8].copy_from_slice(&task_seq.to_be_bytes());
        pair[8..].copy_from_slice(&seq.to_be_bytes());
        buckets.append(store, true, task_key(task_seq, seq), &pair)?;
    }
    if let Some(agent) = agent {
        buckets.append(store, false, agent_key(agent, seq), &seq.to_be_bytes())?;
    }
    Ok(())
}

/// The sequences of `task_seq`'s events from `from` on, ascending.
pub(super) fn task_events(store: &Store, task_seq: u64, from: u64) -> Result<Vec<u64>, StoreError> {
    let group = task_group(task_seq);
    let mut end = group.to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    let mut seqs = Vec::new();
    for item in store.events_by_task.range(task_key(task_seq, from)..=end) {
        let (_, value) = item?;
        seqs.extend(
            value
                .chunks_exact(16)
                .filter(|pair| u64_at(pair, 0) == Some(task_seq))
                .filter_map(|pair| u64_at(pair, 8))
                .filter(|seq| *seq >= from),
        );
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The sequences of `agent`'s events from `from` on, bucket by bucket
/// (ascending); the caller stops when it has enough.
pub(super) fn agent_events(
    store: &Store,
    agent: &str,
    from: u64,
) -> impl Iterator<Item = Result<Vec<u64>, StoreError>> {
    let start = agent_key(agent, from);
    let end = scoped_key(agent, u64::MAX);
    store.events_by_agent.range(start..=end).map(move |item| {
        let (_, value) = item?;
        Ok(value
            .chunks_exact(8)
            .filter_map(key_seq)
            .filter(|seq| *seq >= from)
            .collect())
    })
}

/// Takes events `seqs` (of `task_seq` / `agent`) out of the indexes.
pub(super) fn remove(
    store: &Store,
    task_seq: Option<u64>,
    agent: Option<&str>,
    seqs: &[u64],
) -> Result<(), StoreError> {
    if let Some(task_seq) = task_seq {
        let entry_of = |pair: &[u8]| {
            (u64_at(pair, 0) == Some(task_seq))
                .then(|| u64_at(pair, 8))
                .flatten()
        };
        drop_entries(
            &store.events_by_task,
            seqs,
            |seq| task_key(task_seq, seq),
            16,
            entry_of,
        )?;
    }
    if let Some(agent) = agent {
        drop_entries(
            &store.events_by_agent,
            seqs,
            |seq| agent_key(agent, seq),
            8,
            key_seq,
        )?;
    }
    Ok(())
}

/// Rewrites the buckets (`bucket_of` each sequence) of `tree` without the
/// entries (`width` bytes each; `seq_of` reads the event sequence of one, `None`
/// when it is another task's) of `seqs`; an emptied bucket goes.
fn drop_entries(
    tree: &Tree,
    seqs: &[u64],
    bucket_of: impl Fn(u64) -> Vec<u8>,
    width: usize,
    seq_of: impl Fn(&[u8]) -> Option<u64>,
) -> Result<(), StoreError> {
    let mut buckets: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for seq in seqs {
        buckets.entry(bucket_of(*seq)).or_default().push(*seq);
    }
    for (key, gone) in buckets {
        let Some(value) = tree.get(&key)? else {
            continue;
        };
        let kept: Vec<u8> = value
            .chunks_exact(width)
            .filter(|entry| !seq_of(entry).is_some_and(|s| gone.contains(&s)))
            .flatten()
            .copied()
            .collect();
        if kept.is_empty() {
            tree.remove(&key)?;
        } else {
            tree.insert(&key, kept)?;
        }
    }
    Ok(())
}

/// Converts indexes of one key per event (stores written before the buckets)
/// into buckets. Every old key is removed before any bucket is written, so a
/// bucket key equal to an old key keeps the bucket.
pub(super) fn migrate(store: &Store) -> Result<(), StoreError> {
    if store.meta.get(LAYOUT_KEY)?.as_deref() == Some(LAYOUT_BUCKETS) {
        return Ok(());
    }
    let mut tasks: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut old_task_keys = Vec::new();
    for item in store.events_by_task.iter() {
        let (key, _) = item?;
        if let (Some(task_seq), Some(seq), 16) = (u64_at(&key, 0), u64_at(&key, 8), key.len()) {
            let bucket = tasks.entry(task_key(task_seq, seq)).or_default();
            bucket.extend_from_slice(&task_seq.to_be_bytes());
            bucket.extend_from_slice(&seq.to_be_bytes());
        }
        old_task_keys.push(key);
    }
    let mut agents: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut old_agent_keys = Vec::new();
    for item in store.events_by_agent.iter() {
        let (key, _) = item?;
        if let Some((agent, seq)) = split_scoped_key(&key) {
            agents
                .entry(agent_key(&agent, seq))
                .or_default()
                .extend_from_slice(&seq.to_be_bytes());
        }
        old_agent_keys.push(key);
    }
    let converted = old_task_keys.len() + old_agent_keys.len();
    for key in old_task_keys {
        store.events_by_task.remove(key)?;
    }
    for key in old_agent_keys {
        store.events_by_agent.remove(key)?;
    }
    for (key, value) in tasks {
        store.events_by_task.insert(key, value)?;
    }
    for (key, value) in agents {
        store.events_by_agent.insert(key, value)?;
    }
    store.meta.insert(LAYOUT_KEY, LAYOUT_BUCKETS)?;
    if converted > 0 {
        tracing::info!(
            entries = converted,
            "event log indexes converted to buckets"
        );
    }
    Ok(())
}
