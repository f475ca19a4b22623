//! The embedded store: one sled `Db` in the data directory, one `Tree` per kind of
//! record, versioned values, and group-commit durability.
//!
//! Durability rule: a change is acknowledged to anyone only after a flush that
//! started after the change was written. [`Store::durable`] hands back a future that
//! resolves when such a flush has finished. One flusher thread serves all callers:
//! every waiter that registered while a flush was running is covered by the next
//! single flush, so the number of fsyncs grows with time, not with load.
//!
//! Architecture invariant: the store knows record encodings and trees, not the
//! meaning of any record. It never decides task or agent state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::StoreError;

/// sled's page cache when not configured (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Leading byte of every stored value; bump it when a record's format changes.
pub const FORMAT_V1: u8 = 1;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the open store. Cheap to clone (sled trees are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    /// Task records by sequence number (u64 big-endian), so scans run in creation order.
    pub tasks: sled::Tree,
    /// Task id → sequence number.
    pub task_ids: sled::Tree,
    /// Agent id → token record (hash never the token).
    pub tokens: sled::Tree,
    /// Token hash → agent id.
    pub token_hashes: sled::Tree,
    /// Hub-wide settings and markers (admin token hash, format version).
    pub meta: sled::Tree,
    /// Invite code hash → one-time invite record.
    pub invites: sled::Tree,
    /// Message history by sequence.
    pub messages: sled::Tree,
    /// Message id → sequence.
    pub message_ids: sled::Tree,
    /// (parent message id, reply sequence) → reply id: the thread index.
    pub replies: sled::Tree,
    /// (agent id, mailbox sequence) → mailbox entry.
    pub mailbox: sled::Tree,
    /// Agent id → mailbox bookkeeping (last sequence, count, evictions, ack).
    pub mailbox_meta: sled::Tree,
    /// Channel name → channel record (subscribers included).
    pub channels: sled::Tree,
    /// (channel name, sequence) → channel history entry.
    pub channel_log: sled::Tree,
    /// (agent id, hour) → activity counters.
    pub analytics: sled::Tree,
    flush_requests: mpsc::Sender<Waiter>,
    /// Group-commit window under load, in microseconds (see `run_flusher`).
    commit_window_us: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir` and starts its flusher thread. sled
    /// keeps at most `cache_bytes` of pages in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock") || text.contains("WouldBlock") {
                    StoreError::Locked(dir.to_path_buf())
                } else {
                    StoreError::Sled(text)
                }
            })?;
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flush_db = db.clone();
        let commit_window_us = Arc::new(AtomicU64::new(0));
        let window = commit_window_us.clone();
        std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || run_flusher(flush_db, rx, window))
            .map_err(|e| StoreError::Sled(format!("cannot start flusher: {e}")))?;
        Ok(Store {
            tasks: db.open_tree("tasks")?,
            task_ids: db.open_tree("task_ids")?,
            tokens: db.open_tree("tokens")?,
            token_hashes: db.open_tree("token_hashes")?,
            meta: db.open_tree("meta")?,
            invites: db.open_tree("invites")?,
            messages: db.open_tree("messages")?,
            message_ids: db.open_tree("message_ids")?,
            replies: db.open_tree("replies")?,
            mailbox: db.open_tree("mailbox")?,
            mailbox_meta: db.open_tree("mailbox_meta")?,
            channels: db.open_tree("channels")?,
            channel_log: db.open_tree("channel_log")?,
            analytics: db.open_tree("analytics")?,
            path: dir.to_path_buf(),
            db,
            flush_requests: tx,
            commit_window_us,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes start at most this often, so under load one flush covers every
    /// change of the window (less CPU per change, at most one window more
    /// latency). Zero flushes whenever a change waits.
    pub fn set_commit_window(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.commit_window_us.store(us, Ordering::Relaxed);
    }

    /// Resolves once every change written before this call is on disk.
    pub fn durable(&self) -> impl std::future::Future<Output = Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.flush_requests.send(tx).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Sled("store flusher has stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Sled("store flusher has stopped".into())))
        }
    }

    /// Flushes synchronously (command-line tools, shutdown).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The group-commit loop: wait for one request, take every request queued behind it,
/// flush once, answer them all. Flushes start at most once per commit window: a
/// request after a quiet spell is flushed at once, under load one flush (one round
/// of fsyncs, which cost real CPU on this kind of machine) covers a window's worth.
fn run_flusher(db: sled::Db, requests: mpsc::Receiver<Waiter>, window_us: Arc<AtomicU64>) {
    let mut last_flush = Instant::now();
    while let Ok(first) = requests.recv() {
        let window = Duration::from_micros(window_us.load(Ordering::Relaxed));
        if let Some(left) = window.checked_sub(last_flush.elapsed()) {
            std::thread::sleep(left);
        }
        let mut waiters = vec![first];
        waiters.extend(requests.try_iter());
        last_flush = Instant::now();
        let result = db.flush().map(|_| ()).map_err(StoreError::from);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = waiters.len(), "store flush failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Encodes a record: format byte, then JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    // Serializing our own plain structs to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).unwrap_or_default();
    out
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((other, _)) => Err(corrupt(format!("unknown format byte {other}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// Big-endian key for ordered scans.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Prefix of every key scoped to `scope` (length-prefixed, so no scope is a prefix
/// of another's keys).
pub fn scope_prefix(scope: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + scope.len() + 8);
    key.extend_from_slice(&(scope.len() as u32).to_be_bytes());
    key.extend_from_slice(scope.as_bytes());
    key
}

/// Key of entry `seq` within `scope`; ordered by sequence inside the scope.
pub fn scoped_key(scope: &str, seq: u64) -> Vec<u8> {
    let mut key = scope_prefix(scope);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The (scope, seq) of a key written by [`scoped_key`].
pub fn split_scoped_key(key: &[u8]) -> Option<(String, u64)> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let scope = key.get(4..4 + len)?;
    let seq = key_seq(key.get(4 + len..)?)?;
    Some((String::from_utf8_lossy(scope).into_owned(), seq))
}

/// Reads a big-endian u64 key back.
pub fn key_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption_is_reported() {
        let v = serde_json::json!({"a": 1});
        let bytes = encode(&v);
        let back: serde_json::Value = decode("t", b"k", &bytes).expect("decodes");
        assert_eq!(back, v);
        let e = decode::<serde_json::Value>("t", b"k", &[9, b'{']).unwrap_err();
        assert!(e.to_string().contains("format byte 9"));
    }

    #[test]
    fn scoped_keys_do_not_collide_and_round_trip() {
        assert!(!scoped_key("a", 1).starts_with(&scope_prefix("ab")));
        assert!(!scoped_key("ab", 1).starts_with(&scope_prefix("a")));
        assert!(scoped_key("a", 1) < scoped_key("a", 2));
        assert_eq!(
            split_scoped_key(&scoped_key("x\u{0}y", 7)),
            Some(("x\u{0}y".into(), 7))
        );
        assert_eq!(split_scoped_key(b"\x00"), None);
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
