//! The queue's checkpoint: what memory holds of the tasks, written by a clean
//! stop as the queue's last write, so the next start need not read every task
//! record (a million queued tasks are three million sled records).
//!
//! Rules that keep it true:
//! - written only when the hub stops; from then on the queue changes nothing
//!   (`frozen`: every write is refused as `Closed`, as it would be a moment later
//!   when the store is sealed);
//! - read only when the store's files are byte for byte what that stop sealed
//!   (`Store::files_match_seal`) and the highest task sequence is the one it
//!   names; otherwise every record is read, as after a crash;
//! - removed by the first load that finds it, used or not, so it can never
//!   describe a later state of the store.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Queued};
use super::records;
use super::TaskQueue;
use crate::domain::completions::{Completions, SavedCompletions};
use crate::domain::task::TaskStatus;
use crate::error::StoreError;
use crate::storage::store::{decode, encode};

/// A clean stop: write the checkpoint, then change nothing (see the module
/// documentation). Sent once nothing else will reach the queue.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct StopAndCheckpoint;

impl Handler<StopAndCheckpoint> for TaskQueue {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: StopAndCheckpoint, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, |this| this.write_checkpoint())
    }
}

/// Where the checkpoint is kept.
const KEY: &str = "queue_checkpoint";

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    next_seq: u64,
    /// The highest task sequence stored when it was written.
    last_seq: Option<u64>,
    counts: Vec<(TaskStatus, u64)>,
    dead_letter: Vec<u64>,
    /// `dedupe_key` → task id.
    dedupe: Vec<(String, String)>,
    /// Distinct capability lists; queued tasks name theirs by position.
    caps: Vec<Vec<String>>,
    queued: Vec<SavedQueued>,
    /// Assigned and blocked tasks: read whole from the store.
    whole: Vec<u64>,
    /// Queued tasks waiting for dependencies, with the ones still open.
    waiting: Vec<(String, Vec<String>)>,
    completions: SavedCompletions,
    /// Live tasks' write scopes: (task id, repo, writes, reads).
    #[serde(default)]
    scopes: Vec<(String, String, Vec<String>, Vec<String>)>,
}

#[derive(Serialize, Deserialize)]
struct SavedQueued {
    seq: u64,
    id: String,
    priority: u8,
    updated_at: i64,
    run_after: Option<i64>,
    caps: u32,
    avoid: Option<String>,
    #[serde(default)]
    fair: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    standing: bool,
}

impl TaskQueue {
    /// Writes the checkpoint (made durable by the seal's flush) and freezes the
    /// queue: nothing changes after it.
    pub(super) fn write_checkpoint(&mut self) -> Result<(), StoreError> {
        if self.frozen {
            return Ok(());
        }
        let mut caps: Vec<Vec<String>> = Vec::new();
        let mut caps_at = std::collections::HashMap::new();
        let mut queued = Vec::new();
        let mut whole = Vec::new();
        for (seq, entry) in &self.index.live {
            match entry {
                Entry::Queued(q) => {
                    let at = *caps_at.entry(q.capabilities.clone()).or_insert_with(|| {
                        caps.push(q.capabilities.to_vec());
                        caps.len() as u32 - 1
                    });
                    queued.push(SavedQueued {
                        seq: *seq,
                        id: q.id.to_string(),
                        priority: q.priority,
                        updated_at: q.updated_at,
                        run_after: q.run_after,
                        caps: at,
                        avoid: q.avoid.as_deref().map(str::to_string),
                        fair: q
                            .tags
                            .as_ref()
                            .and_then(|t| t.fair.as_deref().map(str::to_string)),
                        key: q
                            .tags
                            .as_ref()
                            .and_then(|t| t.key.as_deref().map(str::to_string)),
                        standing: q.tags.as_ref().is_some_and(|t| t.standing),
                    });
                }
                Entry::Whole(_) => whole.push(*seq),
            }
        }
        let waiting = self
            .deps
            .waiting()
            .filter(|(id, _)| {
                self.index
                    .entry(id)
                    .is_some_and(|e| e.status() == TaskStatus::Queued)
            })
            .map(|(id, open)| (id.to_string(), open.iter().cloned().collect()))
            .collect();
        let checkpoint = Checkpoint {
            next_seq: self.index.next_seq,
            last_seq: self.records.last_seq()?,
            counts: self.index.counts.iter().map(|(s, n)| (*s, *n)).collect(),
            dead_letter: self.index.dead_letter.iter().copied().collect(),
            dedupe: self
                .index
                .dedupe
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            caps,
            queued,
            whole,
            waiting,
            completions: self.completions.saved(),
            scopes: self.scopes.declared(),
        };
        self.write_ledger(crate::util::now_ms());
        self.frozen = true;
        self.records.put_summary(KEY, encode(&checkpoint))?;
        tracing::info!(
            live = self.index.live.len(),
            "task queue checkpoint written; no more changes"
        );
        Ok(())
    }

    /// Takes the checkpoint out of the store and, when it may be trusted (see
    /// the module documentation), loads the indexes from it. Answers whether it
    /// did; `false` leaves the indexes empty for a full load.
    pub(super) fn load_checkpoint(&mut self, now: i64) -> Result<bool, StoreError> {
        let Some(bytes) = self.records.take_summary(KEY)? else {
            return Ok(false);
        };
        if !self.store.files_match_seal() {
            tracing::info!("queue checkpoint ignored: the store changed since it was written");
            return Ok(false);
        }
        let checkpoint: Checkpoint = match decode("meta", KEY.as_bytes(), &bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "queue checkpoint unreadable; reading every task");
                return Ok(false);
            }
        };
        if checkpoint.last_seq != self.records.last_seq()? {
            tracing::warn!("queue checkpoint does not match the stored tasks; reading every task");
            return Ok(false);
        }
        match self.restore(checkpoint, now) {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "queue checkpoint not loadable; reading every task");
                self.index.clear();
                self.scopes.clear();
                self.deps.clear();
                self.timers.clear();
                self.completions = Completions::default();
                Ok(false)
            }
        }
    }

    fn restore(&mut self, c: Checkpoint, now: i64) -> Result<(), StoreError> {
        for (id, repo, writes, reads) in &c.scopes {
            self.scopes.track_parts(id, Some(repo), writes, reads);
        }
        self.index_whole(&c.whole, now)?;
        let index = &mut self.index;
        index.next_seq = c.next_seq;
        index.dead_letter = c.dead_letter.into_iter().collect();
        index.dedupe = c.dedupe.into_iter().collect();
        index.ids.reserve(c.queued.len());
        let caps: Vec<_> = c.caps.iter().map(|l| index.caps.share(l)).collect();
        for q in c.queued {
            let capabilities =
                caps.get(q.caps as usize)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: "meta",
                        key: KEY.into(),
                        reason: "a queued task names no capability list".into(),
                    })?;
            let id: crate::domain::matching::TaskId = q.id.as_str().into();
            index.ids.insert(id.clone(), q.seq);
            index.queued_by_lane[super::index::lane(q.priority)] += 1;
            if let Some(at) = q.run_after.filter(|at| *at > now) {
                self.timers.set(at, &q.id);
            }
            let tags = index
                .caps
                .tags(q.fair.as_deref(), q.key.as_deref(), q.standing);
            index.live.insert(
                q.seq,
                Entry::Queued(Queued {
                    id,
                    seq: q.seq,
                    priority: q.priority,
                    updated_at: q.updated_at,
                    run_after: q.run_after,
                    capabilities,
                    avoid: q.avoid.map(String::into_boxed_str),
                    tags,
                }),
            );
        }
        // The whole tasks were counted as they were put in place; the saved
        // counts (which include them) replace those.
        index.counts = c.counts.into_iter().collect();
        self.completions = Completions::restore(c.completions);
        for (task, open) in c.waiting {
            self.track_dependencies(&task, &open);
        }
        Ok(())
    }

    /// Reads the assigned and blocked tasks named by `seqs` and puts them in
    /// place (leases and `requeue` timers included).
    fn index_whole(&mut self, seqs: &[u64], now: i64) -> Result<(), StoreError> {
        for seq in seqs {
            let stored = self.records.get(*seq)?.ok_or_else(|| StoreError::Corrupt {
                tree: "tasks",
                key: seq.to_string(),
                reason: "the checkpoint names a task that is not stored".into(),
            })?;
            let task = records::decode_task(&stored)?;
            if task.status == TaskStatus::Blocked {
                if let Some(at) = task.unblock_at {
                    self.timers.set(at, &task.id);
                }
            }
            self.index.count(&task, None, now);
            self.scopes.track(&task);
            if task.is_held() {
                self.start_running(&task);
            }
            self.index.insert_live(task);
        }
        Ok(())
    }
}
