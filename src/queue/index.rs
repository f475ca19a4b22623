//! `TaskIndex`: the in-memory side of the queue. Every unfinished task (by
//! sequence, with an id index; queued ones compact, see `entry`), the
//! `dedupe_key`s they hold, counts by status and by lane, the dead-letter
//! sequences and the leases of assigned tasks. Finished tasks live only in the
//! store; `TaskQueue::read` finds either.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ahash::AHashMap;

use serde_json::{json, Map, Value};

use super::entry::{entry_of, queued_of, CapsTable, Entry, Queued};
use super::records;
use super::records::QueuedFields;
use super::TaskQueue;
use crate::domain::matching::TaskId;
use crate::domain::task::{Task, TaskStatus};
use crate::error::StoreError;
use crate::protocol::LANES;
use crate::util::now_ms;

/// The lease of an assigned task.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    pub(super) agent_id: String,
    pub(super) generation: u64,
    pub(super) accepted: bool,
    pub(super) deadline: i64,
}

/// See the module documentation.
pub(super) struct TaskIndex {
    /// Unfinished tasks (queued, assigned, blocked) by sequence.
    pub(super) live: BTreeMap<u64, Entry>,
    /// The capability lists of queued tasks, one copy each.
    pub(super) caps: CapsTable,
    /// Task id → sequence, for live tasks.
    pub(super) ids: AHashMap<TaskId, u64>,
    /// `dedupe_key` → task id, for live tasks that have one.
    pub(super) dedupe: HashMap<String, String>,
    /// Sequences of dead-lettered tasks.
    pub(super) dead_letter: BTreeSet<u64>,
    pub(super) counts: HashMap<TaskStatus, u64>,
    pub(super) queued_by_lane: [u64; LANES.len()],
    /// Assigned tasks by id.
    pub(super) leases: HashMap<String, Lease>,
    /// The sequence the next new task gets.
    pub(super) next_seq: u64,
}

impl Default for TaskIndex {
    fn default() -> Self {
        TaskIndex {
            live: BTreeMap::new(),
            caps: CapsTable::default(),
            ids: AHashMap::new(),
            dedupe: HashMap::new(),
            dead_letter: BTreeSet::new(),
            counts: HashMap::new(),
            queued_by_lane: [0; LANES.len()],
            leases: HashMap::new(),
            next_seq: 1,
        }
    }
}

/// The lane a task is counted in (a priority past the last lane counts in it).
pub(super) fn lane(priority: u8) -> usize {
    usize::from(priority).min(LANES.len() - 1)
}

impl TaskIndex {
    /// A live task by id.
    pub(super) fn entry(&self, id: &str) -> Option<&Entry> {
        self.ids.get(id).and_then(|seq| self.live.get(seq))
    }

    /// A live task that memory keeps whole (assigned or blocked), by id.
    pub(super) fn whole(&self, id: &str) -> Option<&Task> {
        self.entry(id).and_then(Entry::whole)
    }

    /// Puts a live task (back) in place.
    pub(super) fn insert_live(&mut self, task: Task) {
        let seq = task.seq;
        let entry = entry_of(task, &mut self.caps);
        self.ids.insert(entry.shared_id(), seq);
        self.live.insert(seq, entry);
    }

    /// Puts a queued task read light at start in place, counted, with its
    /// `dedupe_key`.
    pub(super) fn load_queued(&mut self, seq: u64, mut fields: QueuedFields) {
        *self.counts.entry(TaskStatus::Queued).or_insert(0) += 1;
        self.queued_by_lane[lane(fields.priority)] += 1;
        if let Some(key) = fields.dedupe_key.take() {
            self.dedupe.insert(key, fields.id.clone());
        }
        let entry = queued_of(seq, fields, &mut self.caps);
        self.ids.insert(entry.shared_id(), seq);
        self.live.insert(seq, entry);
    }

    /// Updates counters, dead letter and leases for a task whose (status,
    /// priority) went from `old` (None when new) to its current ones.
    pub(super) fn count(&mut self, task: &Task, old: Option<(TaskStatus, u8)>, now: i64) {
        if let Some((old, old_priority)) = old {
            if let Some(c) = self.counts.get_mut(&old) {
                *c = c.saturating_sub(1);
            }
            if old == TaskStatus::Queued {
                // The lane it was counted in (a priority change moves it).
                let p = &mut self.queued_by_lane[lane(old_priority)];
                *p = p.saturating_sub(1);
            }
        }
        *self.counts.entry(task.status).or_insert(0) += 1;
        if task.status == TaskStatus::Queued {
            self.queued_by_lane[lane(task.priority)] += 1;
        }
        if task.status == TaskStatus::DeadLetter {
            self.dead_letter.insert(task.seq);
        } else {
            self.dead_letter.remove(&task.seq);
        }
        match (&task.assigned_to, task.status.is_held()) {
            (Some(agent), true) => {
                let same = self
                    .leases
                    .get(&task.id)
                    .is_some_and(|l| l.generation == task.generation);
                if !same {
                    self.leases.insert(
                        task.id.clone(),
                        Lease {
                            agent_id: agent.clone(),
                            generation: task.generation,
                            accepted: task.accepted_at.is_some(),
                            deadline: now.saturating_add(task.lease_ms as i64),
                        },
                    );
                }
            }
            _ => {
                self.leases.remove(&task.id);
            }
        }
    }

    /// Keeps the id and `dedupe_key` indexes true for a task just changed: a
    /// finished one leaves them (and memory), an unfinished one is put back.
    pub(super) fn settle_in(&mut self, task: Task) {
        if task.status.is_terminal() {
            self.ids.remove(task.id.as_str());
            if let Some(key) = &task.dedupe_key {
                if self.dedupe.get(key) == Some(&task.id) {
                    self.dedupe.remove(key);
                }
            }
            return;
        }
        if let Some(key) = task
            .dedupe_key
            .as_ref()
            .filter(|k| !self.dedupe.contains_key(*k))
        {
            // Back from dead letter: the key is its again unless another took it.
            self.dedupe.insert(key.clone(), task.id.clone());
        }
        self.insert_live(task);
    }

    /// Since when the longest-blocked task is blocked.
    pub(super) fn oldest_blocked(&self) -> Option<i64> {
        self.live
            .values()
            .filter_map(Entry::whole)
            .filter(|t| t.status == TaskStatus::Blocked)
            .map(|t| t.blocked_at.unwrap_or(t.updated_at))
            .min()
    }

    /// Forgets every task (a reload follows).
    pub(super) fn clear(&mut self) {
        *self = TaskIndex::default();
    }

    /// Total tasks counted, by status.
    pub(super) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `GET /api/tasks/stats` without the parts other owners add.
    pub(super) fn stats(&self) -> (Map<String, Value>, Map<String, Value>) {
        let by_status = TaskStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_string(),
                    json!(self.counts.get(s).copied().unwrap_or(0)),
                )
            })
            .collect();
        let by_priority = self
            .queued_by_lane
            .iter()
            .enumerate()
            .map(|(p, n)| (p.to_string(), json!(n)))
            .collect();
        (by_status, by_priority)
    }
}

impl TaskQueue {
    /// Reads a task from memory or, for queued and finished tasks, from the
    /// store.
    pub(super) fn read(&self, id: &str) -> Result<Option<Task>, StoreError> {
        if let Some(t) = self.index.whole(id) {
            return Ok(Some(t.clone()));
        }
        self.read_stored(id)
    }

    /// The whole task of a live entry (read from the store when compact).
    pub(super) fn read_entry(&self, entry: &Entry) -> Result<Option<Task>, StoreError> {
        match entry {
            Entry::Whole(t) => Ok(Some(Task::clone(t))),
            Entry::Queued(q) => match self.records.get(q.seq)? {
                None => Ok(None),
                Some(stored) => records::decode_task(&stored).map(Some),
            },
        }
    }

    /// Reads a task's stored record from sled.
    pub(super) fn read_stored(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let Some(seq) = self.records.seq_of(id)? else {
            return Ok(None);
        };
        match self.records.get(seq)? {
            None => Ok(None),
            Some(stored) => records::decode_task(&stored).map(Some),
        }
    }

    /// The status of any task, live or finished; `None` when unknown or unreadable.
    pub(super) fn status_of(&self, id: &str) -> Option<TaskStatus> {
        if let Some(t) = self.index.entry(id) {
            return Some(t.status());
        }
        let stored = self.read_stored(id).and_then(|t| match t {
            Some(t) => Ok(Some(t.status)),
            // Archived: its index entry says how it ended.
            None => Ok(self
                .peers
                .archive
                .task(id)?
                .and_then(|a| TaskStatus::parse(&a.status))),
        });
        match stored {
            Ok(status) => status,
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "dependency unreadable");
                None
            }
        }
    }

    pub(super) fn stats(&self) -> Value {
        let (by_status, by_priority) = self.index.stats();
        json!({
            "by_status": by_status,
            "by_priority": by_priority,
            "dead_letter": self.index.dead_letter.len(),
            "paused_lanes": self.lanes.paused(),
            "spend": self.budgets.view(crate::util::now_ms()),
            "waiting_on_dependencies": self.deps.waiting_len(),
            // Times, not ages: the stats describe the stored tasks, not the clock.
            "oldest_queued_since": self.oldest_waiting(now_ms()).map(|(_, since)| since),
            "oldest_blocked_since": self.index.oldest_blocked(),
        })
    }

    /// The queued task that has waited longest for an agent, and since when: of
    /// the tasks nothing but a missing agent holds back (not waiting for
    /// dependencies or `run_after`, not in a paused lane).
    pub(super) fn oldest_waiting(&self, now: i64) -> Option<(&Queued, i64)> {
        self.index
            .live
            .values()
            .filter_map(|e| match e {
                Entry::Queued(q) => Some(q),
                Entry::Whole(_) => None,
            })
            .filter(|q| {
                !self.deps.is_waiting(&q.id)
                    && !self.lanes.holds(q.priority)
                    && q.run_after.is_none_or(|at| at <= now)
            })
            .map(|q| (q, q.waiting_since()))
            .min_by_key(|(_, since)| *since)
    }
}
