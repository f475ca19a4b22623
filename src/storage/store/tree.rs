//! The store lock and the handles that share it: [`Tree`] (one kind of record)
//! and [`Iter`] (a scan), over the open sled `Db` ([`Open`]).

use std::cell::Cell;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::lock_api::ArcRwLockReadGuard;
use parking_lot::{RawRwLock, RwLock, RwLockReadGuard};
use sled::IVec;

use super::files::open_sled;
use super::staging::{HookWrite, Staging};
use super::TREE_NAMES;
use crate::error::StoreError;

/// The open sled database and its trees (index = position in [`TREE_NAMES`]).
/// `None` in the lock while a swap has no store open.
pub(super) struct Open {
    pub(super) db: sled::Db,
    pub(super) trees: Vec<sled::Tree>,
}

impl Open {
    pub(super) fn start(dir: &Path, cache_bytes: u64) -> Result<Open, StoreError> {
        let db = open_sled(dir, cache_bytes)?;
        let trees = TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Open { db, trees })
    }

    /// `start` on a directory whose sled `Db` this process has just dropped (a
    /// swap: the previous store, or the fresh one its writer just closed). sled
    /// lets go of a directory's file lock only when the last of its background
    /// I/O jobs for that `Db` ends, which can be a moment after the drop; so a
    /// `Locked` here is retried for a bounded time before it counts.
    pub(super) fn reopen(dir: &Path, cache_bytes: u64) -> Result<Open, StoreError> {
        const ATTEMPTS: u32 = 200;
        const PAUSE: Duration = Duration::from_millis(25);
        let mut attempt = 1;
        loop {
            match Open::start(dir, cache_bytes) {
                Err(StoreError::Locked(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(PAUSE);
                }
                other => {
                    if attempt > 1 {
                        tracing::info!(attempts = attempt, dir = %dir.display(), "store reopened after sled released its lock");
                    }
                    return other;
                }
            }
        }
    }
}

pub(super) type Slot = Arc<RwLock<Option<Open>>>;

thread_local! {
    /// How many shared holds of a store lock this thread has (guards and live
    /// iterators). Above zero, further holds are recursive: they must not queue
    /// behind a waiting exclusive holder, which waits for this very thread.
    static SHARED_HELD: Cell<usize> = const { Cell::new(0) };
}

/// Counts one shared hold on this thread while it lives.
pub(super) struct HeldMark;

impl HeldMark {
    /// Whether this thread holds a store lock shared already.
    pub(super) fn nested() -> bool {
        SHARED_HELD.with(|h| h.get() > 0)
    }

    pub(super) fn enter() -> HeldMark {
        SHARED_HELD.with(|h| h.set(h.get() + 1));
        HeldMark
    }
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        SHARED_HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

/// A shared hold of the store lock.
pub(super) struct SharedHold<'a> {
    pub(super) guard: RwLockReadGuard<'a, Option<Open>>,
    _mark: HeldMark,
}

pub(super) fn share(slot: &RwLock<Option<Open>>) -> SharedHold<'_> {
    let guard = if HeldMark::nested() {
        slot.read_recursive()
    } else {
        slot.read()
    };
    SharedHold {
        guard,
        _mark: HeldMark::enter(),
    }
}

fn closed_error() -> sled::Error {
    sled::Error::Io(std::io::Error::other(
        "the store is closed (a restore or compaction swap did not complete)",
    ))
}

/// One tree of the store. Same methods as `sled::Tree` (those the hub uses); each
/// call shares the store lock, so it waits while a snapshot or swap runs, and
/// always reaches the tree of the currently open `Db`. Writes are staged
/// ([`Staging`]); point reads see them at once, scans write them to sled first.
#[derive(Clone)]
pub struct Tree {
    pub(super) slot: Slot,
    pub(super) index: usize,
    pub(super) staging: Arc<Staging>,
}

impl Tree {
    fn with<T>(&self, op: impl FnOnce(&sled::Tree) -> sled::Result<T>) -> sled::Result<T> {
        let hold = share(&self.slot);
        match hold.guard.as_ref().and_then(|o| o.trees.get(self.index)) {
            Some(tree) => op(tree),
            None => Err(closed_error()),
        }
    }

    /// `with`, once every staged write is in sled (for reads of more than one key).
    fn with_applied<T>(&self, op: impl FnOnce(&sled::Tree) -> sled::Result<T>) -> sled::Result<T> {
        let hold = share(&self.slot);
        let Some(open) = hold.guard.as_ref() else {
            return Err(closed_error());
        };
        self.staging.apply(open)?;
        match open.trees.get(self.index) {
            Some(tree) => op(tree),
            None => Err(closed_error()),
        }
    }

    fn scan(&self, op: impl FnOnce(&sled::Tree) -> sled::Iter) -> Iter {
        let guard = if HeldMark::nested() {
            self.slot.read_arc_recursive()
        } else {
            self.slot.read_arc()
        };
        let mark = HeldMark::enter();
        let applied = match guard.as_ref() {
            Some(open) => self.staging.apply(open),
            None => Ok(()),
        };
        let inner = match applied {
            Ok(()) => guard.as_ref().and_then(|o| o.trees.get(self.index)).map(op),
            Err(e) => {
                tracing::error!(error = %e, "staged writes could not be written before a scan");
                None
            }
        };
        Iter {
            inner,
            reported_closed: false,
            _guard: guard,
            _mark: mark,
        }
    }

    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        if let Some(staged) = self.staging.lookup(self.index, key.as_ref()) {
            return Ok(staged);
        }
        self.with(|t| t.get(key))
    }

    /// Stages the write (see [`Staging`]); fails only when the store is closed.
    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) -> sled::Result<()> {
        self.with(|_| {
            self.staging
                .stage(self.index, key.as_ref(), Some(value.into()));
            Ok(())
        })
    }

    /// Stages the removal (see [`Staging`]); fails only when the store is closed.
    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<()> {
        self.with(|_| {
            self.staging.stage(self.index, key.as_ref(), None);
            Ok(())
        })
    }

    /// A write of this tree for a pre-apply hook to hand over.
    pub(crate) fn hook_write(&self, key: Vec<u8>, value: Vec<u8>) -> HookWrite {
        (self.index, key, value)
    }

    /// Removes a key and answers the value it had.
    pub fn take<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let old = self.get(key.as_ref())?;
        if old.is_some() {
            self.remove(key)?;
        }
        Ok(old)
    }

    /// Writes `new` only if the key holds `old` now; staged like every write
    /// (so the Postgres backend commits it too), atomic against every other
    /// compare-and-swap of the store.
    pub fn compare_and_swap<K, OV, NV>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>>
    where
        K: AsRef<[u8]>,
        OV: AsRef<[u8]>,
        NV: Into<IVec>,
    {
        let _one = self.staging.swap_lock();
        let current = self.get(key.as_ref())?;
        if current.as_deref() != old.as_ref().map(AsRef::as_ref) {
            return Ok(Err(sled::CompareAndSwapError {
                current,
                proposed: new.map(Into::into),
            }));
        }
        match new {
            Some(v) => self.insert(key, v)?,
            None => self.remove(key)?,
        }
        Ok(Ok(()))
    }

    pub fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    pub fn first(&self) -> sled::Result<Option<(IVec, IVec)>> {
        self.with_applied(|t| t.first())
    }

    pub fn last(&self) -> sled::Result<Option<(IVec, IVec)>> {
        self.with_applied(|t| t.last())
    }

    /// Number of records (a full scan, as in sled). 0 while the store is closed.
    pub fn len(&self) -> usize {
        self.with_applied(|t| Ok(t.len())).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.with_applied(|t| Ok(t.is_empty())).unwrap_or(true)
    }

    pub fn iter(&self) -> Iter {
        self.scan(|t| t.iter())
    }

    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        self.scan(|t| t.range(range))
    }

    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        self.scan(|t| t.scan_prefix(prefix))
    }
}

/// A scan of one tree. It shares the store lock until dropped, so keep it no longer
/// than the loop that reads it.
pub struct Iter {
    // Declared first: dropped before the lock is released.
    inner: Option<sled::Iter>,
    reported_closed: bool,
    _guard: ArcRwLockReadGuard<RawRwLock, Option<Open>>,
    _mark: HeldMark,
}

impl Iter {
    fn closed(&mut self) -> Option<sled::Result<(IVec, IVec)>> {
        if self.reported_closed {
            return None;
        }
        self.reported_closed = true;
        Some(Err(closed_error()))
    }

    pub fn keys(self) -> impl DoubleEndedIterator<Item = sled::Result<IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }

    pub fn values(self) -> impl DoubleEndedIterator<Item = sled::Result<IVec>> {
        self.map(|r| r.map(|(_, v)| v))
    }
}

impl Iterator for Iter {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Some(i) => i.next(),
            None => self.closed(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Some(i) => i.next_back(),
            None => self.closed(),
        }
    }
}
