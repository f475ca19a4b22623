//! Restore, compaction and start-up recovery: everything that builds a fresh sled
//! directory and puts it in the data directory's place.
//!
//! The order is always the same: write and sync the fresh directory next to the
//! data directory, then move the data directory aside and the fresh one in
//! (`store::replace_dir`). A data directory is never deleted: a damaged one is kept
//! as `<data_dir>.corrupt-<time>`, one replaced by a restore as
//! `<data_dir>.before-restore-<time>`. Only compaction removes its own
//! `before-compact` copy, once the compacted store is open and holds the same
//! number of records.
//!
//! Architecture invariant: the start-up check is the only place outside the queue
//! and auth that decodes records (tasks and tokens), and it only asks whether they
//! decode.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::de::IgnoredAny;
use serde::Serialize;

use super::format::{read_backup, BackupSummary, Item};
use super::{absolute_dir, io_error, list_backups, lock_data_dir, sibling, Progress};
use crate::agents::auth::TokenRecord;

use crate::error::{BackupError, StoreError};
use crate::storage::store::{decode, open_sled, replace_dir, Store};
use crate::util::now_ms;

/// Records written per sled batch while building a fresh store.
const BATCH: usize = 1024;

/// What start-up recovery did; kept for storage health and logged.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecoveryEvent {
    pub at: i64,
    /// `restored_from_backup`, or `started_empty` when no backup verified.
    pub outcome: &'static str,
    /// Why the store was refused.
    pub reason: String,
    pub data_dir: PathBuf,
    /// Where the damaged data directory was moved (kept, never deleted).
    pub quarantined_to: PathBuf,
    pub restored_from: Option<PathBuf>,
    pub backup_created_at: Option<i64>,
    pub records: u64,
    /// Newer backups that were tried and refused, with the reason.
    pub skipped_backups: Vec<(PathBuf, String)>,
}

/// What `agentcom-hub restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: BackupSummary,
    pub data_dir: PathBuf,
    /// Where the previous data directory was moved (`None` if there was none).
    pub previous_moved_to: Option<PathBuf>,
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompactionReport {
    pub at: i64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records: u64,
    pub duration_ms: u64,
    /// How long the store lock was held alone (the hub waited this long).
    pub paused_ms: u64,
}

/// Whether one record passes the start-up check: task records must be whole
/// records of a known format, tokens must decode.
fn check_record(tree: &[u8], key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    match tree {
        b"tasks" => decode::<IgnoredAny>("tasks", key, value).map(|_| ()),
        b"task_specs" => decode::<IgnoredAny>("task_specs", key, value).map(|_| ()),
        b"tokens" => decode::<TokenRecord>("tokens", key, value).map(|_| ()),
        _ => Ok(()),
    }
}

/// The start-up check: reads every record of every tree (sled reports damaged
/// pages as errors or panics). With a seal from the last clean shutdown, the
/// contents must match it byte for byte (then they are exactly what that run
/// wrote, and decoding them again proves nothing more); without one, every task
/// and token must decode.
pub(super) fn check_store(store: &Store) -> Result<(), BackupError> {
    let failed = |e: StoreError| BackupError::CheckFailed(e.to_string());
    match store.opened_seal() {
        // Byte-identical files hold byte-identical records.
        Some(_) if store.files_match_seal() => {
            tracing::info!("store files unchanged since the last clean shutdown");
        }
        Some(seal) => {
            let digest = store.scan_all(&mut |_, _, _| Ok(())).map_err(failed)?;
            if seal.sha256 != digest.sha256 {
                return Err(BackupError::CheckFailed(format!(
                    "the store does not match its seal from the last clean shutdown \
                     ({} records then, {} now): records were lost or changed on disk",
                    seal.records, digest.records
                )));
            }
        }
        None => {
            store
                .scan_all(&mut |tree, key, value| check_record(tree, key, value))
                .map_err(failed)?;
        }
    }
    Ok(())
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Opens the store, turning a sled panic on damaged files into an error.
pub(crate) fn open_guarded(dir: &Path, cache_bytes: u64) -> Result<Store, BackupError> {
    open_guarded_with(dir, cache_bytes, Store::open_with_cache)
}

fn open_guarded_with(
    dir: &Path,
    cache_bytes: u64,
    open: fn(&Path, u64) -> Result<Store, StoreError>,
) -> Result<Store, BackupError> {
    match catch_unwind(AssertUnwindSafe(|| open(dir, cache_bytes))) {
        Ok(opened) => Ok(opened?),
        Err(p) => Err(BackupError::CheckFailed(format!(
            "sled panicked opening the store: {}",
            panic_text(p.as_ref())
        ))),
    }
}

/// Opens the store and runs [`check_store`]; a store that fails is closed again.
fn open_checked(dir: &Path, cache_bytes: u64) -> Result<Store, BackupError> {
    checked(open_guarded(dir, cache_bytes)?)
}

/// [`open_checked`] for a store this process has just written and closed (a
/// restore): sled may hold its lock a moment after the close.
fn reopen_checked(dir: &Path, cache_bytes: u64) -> Result<Store, BackupError> {
    checked(open_guarded_with(
        dir,
        cache_bytes,
        Store::reopen_with_cache,
    )?)
}

fn checked(store: Store) -> Result<Store, BackupError> {
    let checked = match catch_unwind(AssertUnwindSafe(|| check_store(&store))) {
        Ok(checked) => checked,
        Err(p) => Err(BackupError::CheckFailed(format!(
            "sled panicked reading the store: {}",
            panic_text(p.as_ref())
        ))),
    };
    match checked {
        Ok(()) => Ok(store),
        Err(e) => {
            let _ = catch_unwind(AssertUnwindSafe(|| store.close()));
            Err(e)
        }
    }
}

/// Writes the backup `file` into the new directory `fresh` (which must not exist)
/// and syncs it. Every record passes the start-up check first; on any failure
/// `fresh` is removed again (it is this function's own, half-written output).
pub(super) fn restore_to_dir(
    file: &Path,
    fresh: &Path,
    cache_bytes: u64,
    progress: &Progress,
) -> Result<BackupSummary, BackupError> {
    if fresh.exists() {
        return Err(BackupError::Io {
            action: "restore into",
            path: fresh.to_path_buf(),
            reason: "it already exists".into(),
        });
    }
    let written = (|| {
        let db = open_sled(fresh, cache_bytes)?;
        let mut tree: Option<(Vec<u8>, sled::Tree)> = None;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let summary = read_backup(file, progress, &mut |item| {
            match item {
                Item::Tree(name) => {
                    if let Some((_, t)) = &tree {
                        t.apply_batch(std::mem::take(&mut batch))
                            .map_err(StoreError::from)?;
                        pending = 0;
                    }
                    tree = Some((name.to_vec(), db.open_tree(name).map_err(StoreError::from)?));
                }
                Item::Record(key, value) => {
                    let Some((name, t)) = &tree else {
                        return Err(BackupError::CheckFailed("a record before any tree".into()));
                    };
                    check_record(name, key, value)
                        .map_err(|e| BackupError::CheckFailed(e.to_string()))?;
                    batch.insert(key, value);
                    pending += 1;
                    if pending >= BATCH {
                        t.apply_batch(std::mem::take(&mut batch))
                            .map_err(StoreError::from)?;
                        pending = 0;
                    }
                }
            }
            Ok(())
        })?;
        if let Some((_, t)) = &tree {
            t.apply_batch(batch).map_err(StoreError::from)?;
        }
        db.flush().map_err(StoreError::from)?;
        Ok(summary)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(fresh);
    }
    written
}

/// Opens the store in `data_dir`; if it does not open or fails its check, moves it
/// aside (`<data_dir>.corrupt-<time>`), restores the newest backup in `backup_dir`
/// that verifies (or starts empty when none does) and says so in the returned
/// events, in the log (error level) and through [`super::storage_alert`].
/// A store held by another hub, or one that cannot be used for reasons outside it
/// (permissions, full disk), is an error: nothing is moved.
pub fn open_or_recover(
    data_dir: &Path,
    backup_dir: &Path,
    cache_bytes: u64,
) -> Result<(Store, Vec<RecoveryEvent>), BackupError> {
    let reason = match open_checked(data_dir, cache_bytes) {
        Ok(store) => return Ok((store, Vec::new())),
        Err(BackupError::Store(StoreError::Locked(p))) => return Err(BackupError::HubRunning(p)),
        Err(e @ BackupError::Store(StoreError::Environment { .. })) => return Err(e),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        data_dir = %data_dir.display(),
        reason = %reason,
        "store failed its start-up check: recovering from the newest good backup"
    );
    let quarantined_to = quarantine(data_dir)?;
    let mut skipped = Vec::new();
    let backups = list_backups(backup_dir).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot list backups");
        Vec::new()
    });
    for backup in backups {
        let fresh = sibling(data_dir, "restore")?;
        let restored = restore_to_dir(
            &backup.path,
            &fresh,
            cache_bytes,
            &Progress::logged("restore"),
        )
        .and_then(|summary| {
            std::fs::rename(&fresh, data_dir)
                .map_err(io_error("move the restored store into", data_dir))?;
            Ok(summary)
        });
        let summary = match restored {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(backup = %backup.path.display(), error = %e, "backup refused");
                skipped.push((backup.path, e.to_string()));
                continue;
            }
        };
        match reopen_checked(data_dir, cache_bytes) {
            Ok(store) => {
                let event = RecoveryEvent {
                    at: now_ms(),
                    outcome: "restored_from_backup",
                    reason,
                    data_dir: data_dir.to_path_buf(),
                    quarantined_to,
                    restored_from: Some(backup.path),
                    backup_created_at: Some(summary.created_at),
                    records: summary.records,
                    skipped_backups: skipped,
                };
                tracing::error!(
                    event = %serde_json::to_string(&event).unwrap_or_default(),
                    "store recovered from backup"
                );
                super::storage_alert("recovery_complete", &event);
                return Ok((store, vec![event]));
            }
            Err(e) => {
                // Restored yet unusable: keep it aside too and try an older backup.
                let moved = quarantine(data_dir)?;
                tracing::error!(backup = %backup.path.display(), error = %e, kept_at = %moved.display(), "restored store failed its check");
                skipped.push((backup.path, e.to_string()));
            }
        }
    }
    let store = open_guarded(data_dir, cache_bytes)?;
    let event = RecoveryEvent {
        at: now_ms(),
        outcome: "started_empty",
        reason,
        data_dir: data_dir.to_path_buf(),
        quarantined_to,
        restored_from: None,
        backup_created_at: None,
        records: 0,
        skipped_backups: skipped,
    };
    tracing::error!(
        event = %serde_json::to_string(&event).unwrap_or_default(),
        backup_dir = %backup_dir.display(),
        "NO GOOD BACKUP: the hub starts with an EMPTY store; the damaged one is kept aside"
    );
    super::storage_alert("recovery_failed", &event);
    Ok((store, vec![event]))
}

/// Moves the data directory to `<data_dir>.corrupt-<time>`.
fn quarantine(data_dir: &Path) -> Result<PathBuf, BackupError> {
    let to = sibling(data_dir, "corrupt")?;
    std::fs::rename(data_dir, &to).map_err(io_error("move the damaged store aside", data_dir))?;
    tracing::error!(from = %data_dir.display(), to = %to.display(), "damaged store moved aside (kept)");
    Ok(to)
}

/// `agentcom-hub restore`: verifies `file`, refuses while a hub holds `data_dir`,
/// writes the backup into a fresh directory next to it, then moves the current
/// data directory aside (`<data_dir>.before-restore-<time>`) and the fresh one in.
/// Any failure before the final move changes nothing.
pub fn restore_file(
    file: &Path,
    data_dir: &Path,
    cache_bytes: u64,
    progress: &Progress,
) -> Result<RestoreReport, BackupError> {
    // Refuse early, before the (possibly long) write.
    let lock = lock_data_dir(data_dir)?;
    let data_dir = absolute_dir(data_dir)?;
    let fresh = sibling(&data_dir, "restore")?;
    let backup = restore_to_dir(file, &fresh, cache_bytes, progress)?;
    let aside = sibling(&data_dir, "before-restore")?;
    let moved = replace_dir(&data_dir, &fresh, &aside);
    drop(lock);
    let previous_moved_to = match moved {
        Ok(previous) => previous,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(io_error("move the restored store into", &data_dir)(e));
        }
    };
    tracing::info!(
        file = %file.display(),
        data_dir = %data_dir.display(),
        records = backup.records,
        previous = ?previous_moved_to,
        "store restored from backup"
    );
    Ok(RestoreReport {
        backup,
        data_dir,
        previous_moved_to,
    })
}

/// Copies every tree of `src` into a new sled directory `fresh`, syncs it and
/// checks each tree's record count. Returns the number of records.
fn copy_db(
    src: &sled::Db,
    fresh: &Path,
    cache_bytes: u64,
    progress: &Progress,
) -> Result<u64, BackupError> {
    let dst = open_sled(fresh, cache_bytes)?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    for name in src.tree_names() {
        let from = src.open_tree(&name).map_err(StoreError::from)?;
        let to = dst.open_tree(&name).map_err(StoreError::from)?;
        let mut batch = sled::Batch::default();
        let (mut pending, mut count) = (0usize, 0u64);
        for item in from.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
            pending += 1;
            count += 1;
            if pending >= BATCH {
                to.apply_batch(std::mem::take(&mut batch))
                    .map_err(StoreError::from)?;
                pending = 0;
                progress.at(bytes, records + count);
            }
        }
        to.apply_batch(batch).map_err(StoreError::from)?;
        let copied = to.len() as u64;
        if copied != count {
            return Err(BackupError::CheckFailed(format!(
                "compaction copied {copied} of {count} records of tree {}",
                String::from_utf8_lossy(&name)
            )));
        }
        records += count;
    }
    dst.flush().map_err(StoreError::from)?;
    progress.at(bytes, records);
    Ok(records)
}

/// Rewrites the store into a fresh sled directory and swaps it in, under the
/// running hub or offline: the store lock is held alone while the trees are copied
/// and swapped, so every clone of `store` continues on the compacted trees. The
/// previous directory is removed once the compacted one is open.
pub fn compact(store: &Store, progress: &Progress) -> Result<CompactionReport, BackupError> {
    let started = Instant::now();
    let bytes_before = store.size_on_disk();
    let fresh = sibling(store.path(), "compact")?;
    let aside = sibling(store.path(), "before-compact")?;
    let (records, previous, paused_ms) = {
        let mut lock = store.exclusive()?;
        let paused = Instant::now();
        let records = match copy_db(lock.db()?, &fresh, store.cache_bytes(), progress) {
            Ok(n) => n,
            Err(e) => {
                drop(lock);
                let _ = std::fs::remove_dir_all(&fresh);
                return Err(e);
            }
        };
        let previous = match lock.swap_in(&fresh, &aside) {
            Ok(previous) => previous,
            Err(e) => {
                drop(lock);
                if fresh.exists() {
                    let _ = std::fs::remove_dir_all(&fresh);
                }
                return Err(e.into());
            }
        };
        (records, previous, paused.elapsed().as_millis() as u64)
    };
    if let Some(previous) = previous {
        if let Err(e) = std::fs::remove_dir_all(&previous) {
            tracing::warn!(path = %previous.display(), error = %e, "pre-compaction copy not removed");
        }
    }
    let report = CompactionReport {
        at: now_ms(),
        bytes_before,
        bytes_after: store.size_on_disk(),
        records,
        duration_ms: started.elapsed().as_millis() as u64,
        paused_ms,
    };
    tracing::info!(
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        records,
        paused_ms,
        "store compacted"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::encode;

    #[test]
    fn live_compaction_keeps_records_and_every_clone_follows() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let store = Store::open(&dir).expect("open");
        let clone = store.clone();
        for i in 0u64..500 {
            store
                .messages
                .insert(i.to_be_bytes(), encode(&format!("message {i}")))
                .expect("insert");
            store
                .messages
                .remove((i / 2).to_be_bytes())
                .expect("remove");
        }
        let before = store.messages.len();
        let report = compact(&store, &Progress::silent()).expect("compacted");
        assert_eq!(clone.messages.len(), before);
        assert_eq!(report.records as usize, before);
        // Writes keep working through an old clone, and reach the new directory.
        clone.meta.insert("after", b"yes".to_vec()).expect("insert");
        clone.flush_now().expect("flush");
        assert!(dir.join("db").exists());
        let leftovers: Vec<_> = std::fs::read_dir(root.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "only the data dir remains: {leftovers:?}"
        );
        store.close().expect("close");
        let again = Store::open(&dir).expect("reopen");
        assert_eq!(
            again.meta.get("after").expect("get").as_deref(),
            Some(&b"yes"[..])
        );
        assert_eq!(again.messages.len(), before);
    }

    #[test]
    fn a_write_waits_while_the_lock_is_held_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = Store::open(root.path()).expect("open");
        let writer = store.clone();
        let lock = store.exclusive().expect("exclusive");
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            writer.meta.insert("k", b"v".to_vec()).expect("insert");
            let _ = tx.send(());
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(lock);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        handle.join().expect("writer");
    }

    #[test]
    fn a_write_inside_a_scan_does_not_deadlock_behind_a_waiting_snapshot() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = Store::open(root.path()).expect("open");
        for i in 0u8..10 {
            store.tasks.insert([i], vec![i]).expect("insert");
        }
        let snapshot = store.clone();
        let mut waiting = None;
        for (n, item) in store.tasks.iter().enumerate() {
            let (k, v) = item.expect("item");
            if n == 0 {
                let s = snapshot.clone();
                waiting = Some(std::thread::spawn(move || {
                    let _lock = s.exclusive().expect("exclusive");
                }));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            store.task_ids.insert(k, v).expect("nested write");
        }
        if let Some(h) = waiting {
            h.join().expect("snapshot thread");
        }
        assert_eq!(store.task_ids.len(), 10);
    }
}
