//! The embedded store: one sled `Db` in the data directory, one `Tree` per kind of
//! record, versioned values, and group-commit durability.
//!
//! Durability rule: a change is acknowledged to anyone only after a flush that
//! started after the change was written. [`Store::durable`] hands back a future that
//! resolves when such a flush has finished. One flusher thread serves all callers:
//! every waiter that registered while a flush was running is covered by the next
//! single flush, so the number of fsyncs grows with time, not with load.
//!
//! The store lock: every read and write of a [`Tree`] holds one store-wide
//! `RwLock` shared (an iterator holds it until it is dropped); a backup snapshot or
//! a compaction swap holds it alone ([`Store::exclusive`]). So a snapshot sees no
//! write in progress, and a swap can close the old sled `Db` knowing that nothing
//! still uses it. The lock also holds the open `Db` itself, so every clone of a
//! `Store` (and of its trees) sees the new trees after a swap. A thread that
//! already shares the lock takes it again recursively, so nested use (a write
//! inside a scan) cannot deadlock behind a waiting snapshot.
//!
//! The seal: a clean close ([`Store::seal_and_close`]) records a SHA-256 of every
//! record in `agentcom-seal.json` inside the data directory. The next open takes
//! the seal out (so any later write, by the hub or a command-line tool, can never
//! contradict a seal left behind) and keeps it for the start-up check, which
//! compares it with the store's contents ([`Store::scan_all`]). sled treats a
//! damaged log tail as an interrupted write and silently drops it; the seal is
//! what notices that records a clean shutdown had on disk are gone. After a crash
//! there is no seal, and only what sled and the record decoding report is known.
//!
//! Architecture invariant: the store knows record encodings and trees, not the
//! meaning of any record. It never decides task or agent state, and it does not
//! know when or why it is snapshotted or swapped (that is `backup`).

mod codec;
mod files;
mod flusher;
mod postgres;

pub use postgres::PostgresSettings;
pub(crate) use postgres::Replica;
mod seal;
mod staging;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::{RwLock, RwLockWriteGuard};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::error::StoreError;
pub(crate) use codec::*;
use files::environment_or_sled;
pub(crate) use files::{open_sled, replace_dir};
use flusher::run_flusher;
pub(crate) use seal::Seal;
#[cfg(test)]
use seal::SEAL_FILE;
use seal::{files_digest, files_unchanged, take_seal, write_seal};
pub(crate) use staging::Hook;
use staging::Staging;
pub(crate) use tree::Tree;
use tree::{share, HeldMark, Open, Slot};

/// sled's page cache when not configured (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Every tree of the store, in the order of the `Store` fields.
pub(crate) const TREE_NAMES: [&str; 24] = [
    "tasks",
    "task_ids",
    "tokens",
    "token_hashes",
    "meta",
    "invites",
    "messages",
    "message_ids",
    "replies",
    "mailbox",
    "mailbox_meta",
    "channels",
    "channel_log",
    "analytics",
    "events",
    "events_by_task",
    "events_by_agent",
    "task_correlations",
    "standing_orders",
    "standing_runs",
    "task_specs",
    "topic_events",
    "context",
    "archive",
];

pub(super) type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Sees each record of a full scan as (tree name, key, value); an error stops it.
pub(crate) type RecordVisitor<'a> = dyn FnMut(&[u8], &[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// A digest of the store's contents: what [`Store::scan_all`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentDigest {
    pub records: u64,
    pub sha256: String,
}

/// Trees added after the first release's layout: hashed into a seal only when
/// they hold records, so a seal written by a release without them (whose next
/// open creates them empty) still matches.
const LATER_TREES: [&str; 4] = ["task_specs", "topic_events", "context", "archive"];

/// Visits every record of every tree (trees sorted by name, records by key) and
/// hashes names, keys and values with their lengths.
fn digest_db(db: &sled::Db, visit: &mut RecordVisitor<'_>) -> Result<ContentDigest, StoreError> {
    let mut names = db.tree_names();
    names.sort();
    let mut hash = Sha256::new();
    let mut records = 0u64;
    for name in names {
        let tree = db.open_tree(&name)?;
        if LATER_TREES.iter().any(|t| t.as_bytes() == &name[..]) && tree.is_empty() {
            continue;
        }
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(&name);
        for item in tree.iter() {
            let (key, value) = item?;
            visit(&name, &key, &value)?;
            hash.update((key.len() as u64).to_be_bytes());
            hash.update(&key);
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(&value);
            records += 1;
        }
        // Ends the tree, so records cannot slide from one tree into the next.
        hash.update(u64::MAX.to_be_bytes());
    }
    Ok(ContentDigest {
        records,
        sha256: hex::encode(hash.finalize()),
    })
}

struct Inner {
    slot: Slot,
    path: PathBuf,
    cache_bytes: u64,
    flush_requests: mpsc::Sender<Waiter>,
    /// Group-commit window under load, in microseconds (see `run_flusher`).
    commit_window_us: Arc<AtomicU64>,
    /// The seal taken out of the data directory at open, if there was one.
    opened_seal: Option<Seal>,
    /// Whether the files were, before sled opened them, exactly what the close
    /// that wrote `opened_seal` left (see `seal`).
    files_unchanged: bool,
    /// Writes not yet in sled (see `staging`).
    staging: Arc<Staging>,
    /// Asks the flusher to give the Postgres leader lease up.
    release: Arc<std::sync::atomic::AtomicBool>,
    /// With Postgres: the epoch of the lease this hub holds.
    epoch: Option<i64>,
}

/// Handle to the open store. Cheap to clone; every clone sees the same open `Db`
/// (also after a compaction swap).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Task state records by sequence number (u64 big-endian), so scans run in
    /// creation order (whole task records in stores older than `task_specs`).
    pub tasks: Tree,
    /// Task id → sequence number.
    pub task_ids: Tree,
    /// Agent id → token record (hash never the token).
    pub tokens: Tree,
    /// Token hash → agent id.
    pub token_hashes: Tree,
    /// Hub-wide settings and markers (admin token hash, format version).
    pub meta: Tree,
    /// Invite code hash → one-time invite record.
    pub invites: Tree,
    /// Message history by sequence.
    pub messages: Tree,
    /// Message id → sequence.
    pub message_ids: Tree,
    /// (parent message id, reply sequence) → reply id: the thread index.
    pub replies: Tree,
    /// (agent id, mailbox sequence) → mailbox entry.
    pub mailbox: Tree,
    /// Agent id → mailbox bookkeeping (last sequence, count, evictions, ack).
    pub mailbox_meta: Tree,
    /// Channel name → channel record (subscribers included).
    pub channels: Tree,
    /// (channel name, sequence) → channel history entry.
    pub channel_log: Tree,
    /// (agent id, hour) → activity counters.
    pub analytics: Tree,
    /// The event log: event sequence (u64 big-endian) → event record.
    pub events: Tree,
    /// (task id, event sequence) → nothing: the event log's task index.
    pub events_by_task: Tree,
    /// (agent id, event sequence) → nothing: the event log's agent index.
    pub events_by_agent: Tree,
    /// (correlation id, task sequence) → nothing: tasks and their follow-ups.
    pub task_correlations: Tree,
    /// Standing order name → standing order record.
    pub standing_orders: Tree,
    /// (standing order name, scheduled time) → run record.
    pub standing_runs: Tree,
    /// Task sequence → the task's spec, written once.
    pub task_specs: Tree,
    /// Topic events (see `topics`).
    pub topic_events: Tree,
    /// Shared context documents and their versions (see `context`).
    pub context: Tree,
    /// Where archived finished work is (see `storage::archive`).
    pub archive: Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir` and starts its flusher thread. sled
    /// keeps at most `cache_bytes` of pages in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let unchanged = files_unchanged(dir);
        Store::from_open(
            dir,
            cache_bytes,
            Open::start(dir, cache_bytes)?,
            unchanged,
            None,
        )
    }

    /// [`Store::open_with_cache`] on a directory whose sled `Db` this process
    /// has just closed (a restore's fresh store): sled's lock is waited for.
    pub(crate) fn reopen_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let unchanged = files_unchanged(dir);
        Store::from_open(
            dir,
            cache_bytes,
            Open::reopen(dir, cache_bytes)?,
            unchanged,
            None,
        )
    }

    fn from_open(
        dir: &Path,
        cache_bytes: u64,
        open: Open,
        files_unchanged: bool,
        replica: Option<postgres::Replica>,
    ) -> Result<Store, StoreError> {
        let opened_seal = take_seal(dir)?;
        let files_unchanged = files_unchanged && opened_seal.is_some();
        let slot: Slot = Arc::new(RwLock::new(Some(open)));
        let (tx, rx) = mpsc::channel::<Waiter>();
        let commit_window_us = Arc::new(AtomicU64::new(0));
        let staging = Arc::new(Staging::default());
        if replica.is_some() {
            staging.enable_replication();
        }
        let (flush_slot, window, flush_staging) =
            (slot.clone(), commit_window_us.clone(), staging.clone());
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flush_release = release.clone();
        std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                run_flusher(
                    flush_slot,
                    flush_staging,
                    rx,
                    window,
                    (replica, flush_release),
                )
            })
            .map_err(|e| StoreError::Sled(format!("cannot start flusher: {e}")))?;
        let tree = |index: usize| Tree {
            slot: slot.clone(),
            index,
            staging: staging.clone(),
        };
        Ok(Store {
            tasks: tree(0),
            task_ids: tree(1),
            tokens: tree(2),
            token_hashes: tree(3),
            meta: tree(4),
            invites: tree(5),
            messages: tree(6),
            message_ids: tree(7),
            replies: tree(8),
            mailbox: tree(9),
            mailbox_meta: tree(10),
            channels: tree(11),
            channel_log: tree(12),
            analytics: tree(13),
            events: tree(14),
            events_by_task: tree(15),
            events_by_agent: tree(16),
            task_correlations: tree(17),
            standing_orders: tree(18),
            standing_runs: tree(19),
            task_specs: tree(20),
            topic_events: tree(21),
            context: tree(22),
            archive: tree(23),
            inner: Arc::new(Inner {
                slot,
                path: dir.to_path_buf(),
                cache_bytes,
                flush_requests: tx,
                commit_window_us,
                opened_seal,
                files_unchanged,
                staging,
                release,
                epoch: None,
            }),
        })
    }

    /// Every tree of the store with its name (a migration writes by name).
    pub(crate) fn trees_by_name(&self) -> Vec<(&'static str, Tree)> {
        TREE_NAMES
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let tree = Tree {
                    slot: self.inner.slot.clone(),
                    index,
                    staging: self.inner.staging.clone(),
                };
                (*name, tree)
            })
            .collect()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// sled's page cache size this store was opened with.
    pub fn cache_bytes(&self) -> u64 {
        self.inner.cache_bytes
    }

    /// Flushes start at most this often, so under load one flush covers every
    /// change of the window (less CPU per change, at most one window more
    /// latency). Zero flushes whenever a change waits.
    pub fn set_commit_window(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.inner.commit_window_us.store(us, Ordering::Relaxed);
    }

    /// Resolves once every change written before this call is on disk.
    pub fn durable(&self) -> impl std::future::Future<Output = Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.inner.flush_requests.send(tx).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Sled("store flusher has stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Sled("store flusher has stopped".into())))
        }
    }

    /// Flushes synchronously (command-line tools, shutdown).
    /// With the Postgres backend it waits for the flusher's commit (polling,
    /// so it may run on any thread).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        if self.inner.staging.replicating() {
            let (tx, mut rx) = oneshot::channel();
            self.inner
                .flush_requests
                .send(tx)
                .map_err(|_| StoreError::Sled("store flusher has stopped".into()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match rx.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Empty)
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return Err(StoreError::Sled("store flush did not answer".into())),
                }
            }
        }
        let hold = share(&self.inner.slot);
        let open = hold.guard.as_ref().ok_or(StoreError::Closed)?;
        self.inner.staging.apply(open)?;
        open.db.flush()?;
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        let hold = share(&self.inner.slot);
        hold.guard
            .as_ref()
            .and_then(|o| o.db.size_on_disk().ok())
            .unwrap_or(0)
    }

    /// Records per tree (every tree of the `Db`, by name). Scans each tree.
    pub fn tree_lengths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let hold = share(&self.inner.slot);
        let open = hold.guard.as_ref().ok_or(StoreError::Closed)?;
        self.inner.staging.apply(open)?;
        let mut out = Vec::new();
        for name in open.db.tree_names() {
            let tree = open.db.open_tree(&name)?;
            out.push((
                String::from_utf8_lossy(&name).into_owned(),
                tree.len() as u64,
            ));
        }
        Ok(out)
    }

    /// The seal the last clean close left (taken out of the directory at open).
    pub fn opened_seal(&self) -> Option<&Seal> {
        self.inner.opened_seal.as_ref()
    }

    /// Whether the store's files were, when it opened, byte for byte what the
    /// close that wrote [`Store::opened_seal`] left (then so are its records).
    pub fn files_match_seal(&self) -> bool {
        self.inner.files_unchanged
    }

    /// Visits every record of every tree (trees by name, records by key) and
    /// returns the digest a seal would hold. Shares the store lock throughout.
    pub fn scan_all(&self, visit: &mut RecordVisitor<'_>) -> Result<ContentDigest, StoreError> {
        let hold = share(&self.inner.slot);
        let open = hold.guard.as_ref().ok_or(StoreError::Closed)?;
        self.inner.staging.apply(open)?;
        digest_db(&open.db, visit)
    }

    /// Closes the store cleanly: under the lock held alone, digests every record,
    /// flushes, closes the `Db` and writes the seal. Every later use of any clone
    /// fails with `Closed`, so nothing can change the store after its seal.
    pub fn seal_and_close(&self) -> Result<Seal, StoreError> {
        let mut exclusive = self.exclusive()?;
        let open = exclusive.guard.take().ok_or(StoreError::Closed)?;
        let sealed = digest_db(&open.db, &mut |_, _, _| Ok(())).and_then(|digest| {
            open.db.flush()?;
            Ok(Seal {
                sealed_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                records: digest.records,
                sha256: digest.sha256,
                files_blake3: None,
            })
        });
        drop(open);
        let mut seal = sealed?;
        // sled is closed: its files are what the next open will find.
        seal.files_blake3 = files_digest(self.path())
            .inspect_err(|e| tracing::warn!(error = %e, "store files not digested for the seal"))
            .ok();
        write_seal(self.path(), &seal).map_err(|e| environment_or_sled(self.path(), e))?;
        Ok(seal)
    }

    /// Takes the store lock alone: every read and write of every clone waits until
    /// the returned guard is dropped. Refused (instead of deadlocking) on a thread
    /// that holds it shared. Every staged write is in sled once it is held.
    pub fn exclusive(&self) -> Result<Exclusive<'_>, StoreError> {
        if HeldMark::nested() {
            return Err(StoreError::Sled(
                "the store lock was asked for exclusively by a thread that shares it".into(),
            ));
        }
        let guard = self.inner.slot.write();
        if let Some(open) = guard.as_ref() {
            self.inner.staging.apply(open)?;
        }
        Ok(Exclusive { guard, store: self })
    }

    /// Adds a pre-apply hook: writes handed over before the staged ones of every
    /// apply (see `staging`). The event log's chunks.
    pub(crate) fn add_hook(&self, hook: Hook) {
        self.inner.staging.add_hook(hook);
    }

    /// Flushes and closes the sled `Db` now (its files and lock are released before
    /// this returns). Every later use of any clone fails with `Closed`.
    pub fn close(&self) -> Result<(), StoreError> {
        let mut exclusive = self.exclusive()?;
        if let Some(open) = exclusive.guard.take() {
            let flushed = open.db.flush();
            drop(open);
            flushed?;
        }
        Ok(())
    }
}

/// The store lock held alone (see [`Store::exclusive`]).
pub struct Exclusive<'a> {
    guard: RwLockWriteGuard<'a, Option<Open>>,
    store: &'a Store,
}

impl Exclusive<'_> {
    /// The open sled `Db` (for a snapshot: its trees cannot change meanwhile).
    pub fn db(&self) -> Result<&sled::Db, StoreError> {
        self.guard.as_ref().map(|o| &o.db).ok_or(StoreError::Closed)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Swaps in the sled directory `fresh` (written while this lock was held):
    /// flushes and closes the current `Db`, puts `fresh` in the data directory's
    /// place and the previous one at `aside` ([`replace_dir`]), and opens it. Every clone of the store
    /// uses the new trees from then on; the flusher follows, since it too reaches
    /// the `Db` through the lock. Returns where the previous directory now is. On
    /// failure the old directory is put back and reopened, and the error says what
    /// failed.
    pub fn swap_in(&mut self, fresh: &Path, aside: &Path) -> Result<Option<PathBuf>, StoreError> {
        let dir = self.store.path().to_path_buf();
        let cache = self.store.cache_bytes();
        if let Some(open) = self.guard.take() {
            let flushed = open.db.flush();
            // The lock is held alone, so this is the last handle: dropping it joins
            // sled's threads and closes its files before the directory moves.
            drop(open);
            if let Err(e) = flushed {
                *self.guard = Some(Open::reopen(&dir, cache)?);
                return Err(e.into());
            }
        }
        let previous = match replace_dir(&dir, fresh, aside) {
            Ok(previous) => previous,
            Err(e) => {
                *self.guard = Some(Open::reopen(&dir, cache)?);
                return Err(StoreError::Sled(format!(
                    "cannot move the new store into place: {e}"
                )));
            }
        };
        match Open::reopen(&dir, cache) {
            Ok(open) => {
                *self.guard = Some(open);
                Ok(previous)
            }
            Err(e) => {
                // Put the previous store back and serve it.
                if let Some(previous) = previous {
                    let _ = replace_dir(&dir, &previous, fresh);
                }
                *self.guard = Some(Open::reopen(&dir, cache)?);
                Err(StoreError::Sled(format!(
                    "the new store does not open: {e}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_waits_for_a_lock_this_process_is_about_to_release() {
        let dir = tempfile::tempdir().expect("temp dir");
        let held = open_sled(dir.path(), DEFAULT_CACHE_BYTES).expect("first open");
        // While the first handle lives, the directory is locked, even in-process.
        assert!(matches!(
            Open::start(dir.path(), DEFAULT_CACHE_BYTES),
            Err(StoreError::Locked(_))
        ));
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let reopened = Open::reopen(dir.path(), DEFAULT_CACHE_BYTES);
        release.join().expect("release thread");
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }

    #[actix_rt::test]
    async fn durable_resolves_after_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.meta.insert("k", b"v".to_vec()).expect("insert");
        let waits: Vec<_> = (0..50).map(|_| store.durable()).collect();
        for w in waits {
            w.await.expect("flushed");
        }
    }

    #[test]
    fn a_seal_is_taken_out_at_open_and_matches_unchanged_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .tasks
            .insert(seq_key(1), encode(&"one"))
            .expect("insert");
        let seal = store.seal_and_close().expect("sealed");
        assert_eq!(seal.records, 1);
        assert!(
            store.tasks.insert(seq_key(2), b"x".to_vec()).is_err(),
            "closed"
        );
        let again = Store::reopen_with_cache(dir.path(), DEFAULT_CACHE_BYTES).expect("reopen");
        assert!(!dir.path().join(SEAL_FILE).exists(), "taken out at open");
        assert_eq!(again.opened_seal(), Some(&seal));
        let digest = again.scan_all(&mut |_, _, _| Ok(())).expect("scan");
        assert_eq!(digest.sha256, seal.sha256);
        again.tasks.remove(seq_key(1)).expect("remove");
        let changed = again.scan_all(&mut |_, _, _| Ok(())).expect("scan");
        assert_ne!(changed.sha256, seal.sha256);
    }

    #[test]
    fn staged_writes_are_read_at_once_and_reach_sled_after_the_hooks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let calls = Arc::new(AtomicU64::new(0));
        let (seen, meta) = (calls.clone(), store.meta.clone());
        // A hook runs under the store lock (alone, at a close): it must not use
        // the store itself.
        store.add_hook(Box::new(move || {
            if seen.fetch_add(1, Ordering::SeqCst) > 0 {
                return Vec::new();
            }
            vec![meta.hook_write(b"hooked".to_vec(), b"h".to_vec())]
        }));
        store.meta.insert("k", b"1".to_vec()).expect("stage");
        store.meta.insert("k", b"2".to_vec()).expect("stage again");
        store.meta.insert("gone", b"x".to_vec()).expect("stage");
        store.meta.remove("gone").expect("stage removal");
        assert_eq!(
            store.meta.get("k").expect("get").as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(store.meta.get("gone").expect("get"), None);
        assert_eq!(
            store.meta.take("k").expect("take").as_deref(),
            Some(&b"2"[..])
        );
        store.meta.insert("k", b"3".to_vec()).expect("stage");
        // A scan writes everything first.
        let keys: Vec<Vec<u8>> = store
            .meta
            .iter()
            .keys()
            .map(|k| k.expect("key").to_vec())
            .collect();
        assert_eq!(keys, vec![b"hooked".to_vec(), b"k".to_vec()]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one apply ran the hook");
        store.close().expect("close");
        assert!(store.meta.insert("late", b"x".to_vec()).is_err(), "closed");
        let again = Store::reopen_with_cache(dir.path(), DEFAULT_CACHE_BYTES).expect("reopen");
        assert_eq!(
            again.meta.get("k").expect("get").as_deref(),
            Some(&b"3"[..])
        );
        assert_eq!(again.meta.get("gone").expect("get"), None);
    }

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        match Store::open(dir.path()) {
            Err(StoreError::Locked(_)) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("expected Locked, got an open store"),
        }
    }
}
