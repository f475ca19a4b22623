//! What keeps a queued task back besides its own state: the claims on write
//! scopes (`scopes`) and the concurrency keys at their limit (`keys`). Both
//! become *holds* the scheduler applies (`scope:<group>`, `key:<key>`), sent
//! after the flush, after the ready tasks of the same flush.
//!
//! A task starts running when the queue assigns it (its scope's claim is taken,
//! its key counted) and stops when it leaves `assigned` (the claim released,
//! reservations made for it ended, its key uncounted).

use std::sync::Arc;

use super::change::note_wait;
use super::entry::Entry;
use super::TaskQueue;
use crate::agents::scheduler::Holds;
use crate::domain::task::{Task, TaskError};
use crate::queue::QueueError;

impl TaskQueue {
    /// Why `task_id` may not start now (its scope is held, its key is at its
    /// limit); the wait is recorded.
    pub(super) fn start_refused(&mut self, task_id: &str, now: i64) -> Option<TaskError> {
        let seq = self.index.ids.get(task_id).copied();
        if note_wait(&mut self.scopes, &self.log, (task_id, seq), now) {
            return Some(TaskError::ScopeBusy);
        }
        let key = self.concurrency_key_of(task_id);
        (!self.keys.admits(key.as_deref())).then_some(TaskError::ConcurrencyLimit)
    }

    fn concurrency_key_of(&self, task_id: &str) -> Option<Arc<str>> {
        match self.index.entry(task_id)? {
            Entry::Queued(q) => q.tags.as_ref()?.key.clone(),
            Entry::Whole(t) => t.concurrency_key.as_deref().map(Into::into),
        }
    }

    /// `task` was assigned (or is found assigned at start): its scope's claim
    /// is taken and its key counted.
    pub(super) fn start_running(&mut self, task: &Task) {
        if let Some(agent) = task.assigned_to.as_deref() {
            self.start_running_parts(&task.id, agent, task.concurrency_key.as_deref());
        }
    }

    /// [`TaskQueue::start_running`] from the task's id, holder and key.
    pub(super) fn start_running_parts(&mut self, task_id: &str, agent: &str, key: Option<&str>) {
        let held = self.scopes.take(task_id, agent);
        if let Some(key) = key {
            self.keys.started(key);
            self.announce_keys();
        }
        if !held.is_empty() || self.scopes.is_scoped(task_id) {
            self.announce_claims(crate::util::now_ms());
        }
    }

    /// A task left `assigned` (`finished`: it ended): its claim goes with the
    /// reservations made for it, its key is uncounted.
    pub(super) fn stop_running(
        &mut self,
        task_id: &str,
        key: Option<&str>,
        finished: bool,
        now: i64,
    ) {
        let scoped = self.scopes.is_scoped(task_id);
        let freed = if finished {
            self.scopes.forget(task_id)
        } else {
            self.scopes.release(task_id)
        };
        if let Some(key) = key {
            self.keys.stopped(key);
            self.announce_keys();
        }
        let quiet = freed.ended.is_empty();
        self.apply_freed(freed, "task_ended", "hub", now);
        if scoped && quiet {
            self.announce_claims(now);
        }
    }

    /// Moves the holds changed so far into the outbox (called before a flush's
    /// release is scheduled).
    pub(super) fn collect_holds(&mut self) {
        let scopes = std::mem::take(&mut self.scopes.changes);
        let keys = std::mem::take(&mut self.keys.changes);
        self.outbox.holds.changes.extend(scopes);
        self.outbox.holds.changes.extend(keys);
    }

    /// Every hold there is, replacing what the scheduler held (start, reload).
    pub(super) fn all_holds(&mut self) -> Holds {
        self.scopes.changes.clear();
        self.keys.changes.clear();
        let mut changes: Vec<_> = self.scopes.held().into_iter().map(|h| (h, true)).collect();
        changes.extend(self.keys.held().into_iter().map(|h| (h, true)));
        Holds {
            changes,
            replace: true,
        }
    }

    /// An `Assign` refused by a hold: the task goes back to the scheduler
    /// (under the hold that refused it).
    pub(super) fn refuse_start(&mut self, task_id: &str, why: TaskError, now: i64) -> QueueError {
        self.offer_live(task_id, now);
        QueueError::Task(why)
    }
}
