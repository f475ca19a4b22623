//! Write-behind: a tree's `insert` and `remove` are staged in memory, in order,
//! and the flusher writes them to sled just before it flushes (or a reader that
//! needs sled itself to be current, a scan, writes them first). A key written
//! twice before that is written once, with its last value: a task record that
//! changes four times in one commit window costs one sled write, not four, and
//! the owner's handler pays a map insert instead of a B-tree update.
//!
//! Order is what durability needs: staged writes reach sled in the order they
//! were first staged, after the writes of the pre-apply hooks (the event log's
//! chunks), which are taken after the staged writes. So every record written
//! with its event-log record appended before it reaches sled after that event,
//! and sled, which recovers a prefix of what it was given, never holds a change
//! without its event. A point read (`get`) sees staged values first; what a hook
//! hands over is seen by scans, which wait for an apply in progress.

use std::sync::Arc;

use indexmap::{Equivalent, IndexMap};
use parking_lot::{Mutex, RwLock};
use sled::IVec;

use super::tree::Open;

/// (tree index, key).
type Key = (usize, Box<[u8]>);

/// Writes in the order they were first staged; `None` removes.
pub(super) type Writes = IndexMap<Key, Option<IVec>>;

/// A borrowed `Key` for lookups (no copy of the key per read). Hashes exactly
/// as the tuple does.
#[derive(Hash)]
struct Probe<'a>(usize, &'a [u8]);

impl Equivalent<Key> for Probe<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == &*key.1
    }
}

/// One write a pre-apply hook hands over: (tree index, key, value).
pub(crate) type HookWrite = (usize, Vec<u8>, Vec<u8>);

/// Writes that must reach sled before the staged ones of the same apply. A hook
/// runs under the store lock (held alone at a close or snapshot), so it must not
/// use the store itself, nor wait on anyone who might.
pub(crate) type Hook = Box<dyn Fn() -> Vec<HookWrite> + Send + Sync>;

#[derive(Default)]
struct State {
    pending: Writes,
    /// Taken by the apply in progress (or left by one that failed, to be
    /// retried first); point reads still see them until sled has them.
    applying: Option<Arc<Writes>>,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Staging {
    state: Mutex<State>,
    /// One apply at a time, so applies reach sled in order.
    apply: Mutex<()>,
    hooks: RwLock<Vec<Hook>>,
    /// With a replica (the Postgres backend): what reached sled and waits for
    /// the flusher's next commit, in order.
    replicate: Mutex<Option<Vec<Arc<Writes>>>>,
    /// Makes a tree's compare-and-swap atomic against the others.
    swap: Mutex<()>,
}

impl Staging {
    pub(super) fn stage(&self, tree: usize, key: &[u8], value: Option<IVec>) {
        self.state.lock().pending.insert((tree, key.into()), value);
    }

    /// The staged value of a key: `Some(None)` when staged as removed, `None`
    /// when nothing is staged for it.
    pub(super) fn lookup(&self, tree: usize, key: &[u8]) -> Option<Option<IVec>> {
        let state = self.state.lock();
        let probe = Probe(tree, key);
        if let Some(v) = state.pending.get(&probe) {
            return Some(v.clone());
        }
        state.applying.as_ref().and_then(|a| a.get(&probe)).cloned()
    }

    /// Whether anything waits to be written.
    pub(super) fn is_idle(&self) -> bool {
        let state = self.state.lock();
        state.pending.is_empty() && state.applying.is_none()
    }

    pub(super) fn swap_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.swap.lock()
    }

    /// Whether applies are kept for a replica (the Postgres backend).
    pub(super) fn replicating(&self) -> bool {
        self.replicate.lock().is_some()
    }

    /// From now on every apply is also kept for the replica.
    pub(super) fn enable_replication(&self) {
        *self.replicate.lock() = Some(Vec::new());
    }

    /// What reached sled since the last call, in order, for the replica.
    pub(super) fn take_replicated(&self) -> Vec<Arc<Writes>> {
        self.replicate
            .lock()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Puts back a commit that failed, before what came since.
    pub(super) fn requeue_replicated(&self, mut failed: Vec<Arc<Writes>>) {
        if let Some(q) = self.replicate.lock().as_mut() {
            failed.append(q);
            *q = failed;
        }
    }

    pub(super) fn add_hook(&self, hook: Hook) {
        self.hooks.write().push(hook);
    }

    /// Writes everything staged so far (and what the hooks hand over first) to
    /// the trees of `open`. On failure the writes stay visible and are retried
    /// first by the next apply.
    pub(super) fn apply(&self, open: &Open) -> sled::Result<()> {
        let _one = self.apply.lock();
        let writes = {
            let mut state = self.state.lock();
            if let Some(left) = state.applying.clone() {
                left
            } else {
                if state.pending.is_empty() && self.hooks.read().is_empty() {
                    return Ok(());
                }
                // Moved to `applying` under the lock: point reads never miss them.
                let staged = Arc::new(std::mem::take(&mut state.pending));
                state.applying = Some(staged.clone());
                drop(state);
                // Taken after the staged writes: every event a staged record
                // was written with is among them (or went in an earlier apply).
                let mut writes = Writes::new();
                for hook in self.hooks.read().iter() {
                    for (tree, key, value) in hook() {
                        writes.insert((tree, key.into()), Some(value.into()));
                    }
                }
                if writes.is_empty() {
                    staged
                } else {
                    for (key, value) in staged.iter() {
                        // A hook's key staged again later keeps its first place.
                        writes.insert(key.clone(), value.clone());
                    }
                    let writes = Arc::new(writes);
                    self.state.lock().applying = Some(writes.clone());
                    writes
                }
            }
        };
        if writes.is_empty() {
            self.state.lock().applying = None;
            return Ok(());
        }
        for ((tree, key), value) in writes.iter() {
            let Some(tree) = open.trees.get(*tree) else {
                continue;
            };
            match value {
                Some(v) => tree.insert(key, v.clone())?,
                None => tree.remove(key)?,
            };
        }
        if let Some(q) = self.replicate.lock().as_mut() {
            q.push(writes.clone());
        }
        self.state.lock().applying = None;
        Ok(())
    }
}
