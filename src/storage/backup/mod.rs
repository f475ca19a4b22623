//! Storage resilience: backups, restore, compaction and start-up recovery.
//!
//! - A backup is one file with every tree of the store (`format`), written while
//!   the store lock is held alone ([`Store::exclusive`]), so no write is half in it.
//!   Files are named `agentcom-backup-<UTC time>.acbk`, written as a hidden
//!   `.partial` file first and renamed once synced; only files with exactly that
//!   name pattern are ever listed or pruned.
//! - A restore writes the backup into a fresh sled directory next to the data
//!   directory, then moves the data directory aside (never deleting it) and the
//!   fresh one into its place (`recovery`).
//! - Compaction copies every tree into a fresh sled directory under the store lock
//!   and swaps it in under the running hub (`recovery::compact`).
//! - Start-up recovery quarantines a store that does not open or does not pass its
//!   check, and restores the newest backup that verifies (`recovery`).
//! - `maintenance` runs all of that on a schedule and on demand, and keeps what
//!   storage health reports.
//!
//! Architecture invariant: this module never interprets records beyond the
//! start-up check (tasks and tokens must decode); it does not know actors other
//! than its own timer, and it never deletes a data directory or anything in the
//! backup directory but its own backup files past the retention count (and the
//! pre-compaction copy once the compacted store is in place).

mod format;
mod maintenance;
mod recovery;

use std::cell::Cell;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use format::read_backup;
pub use format::BackupSummary;
pub(crate) use maintenance::{storage_alert, Maintenance, StorageMaintenance};
pub use recovery::{compact, open_or_recover, restore_file, RecoveryEvent};

use crate::error::BackupError;
use crate::storage::store::Store;
use crate::util::now_ms;

/// Written into every backup header.
pub(crate) const HUB_VERSION: &str = env!("CARGO_PKG_VERSION");
const FILE_PREFIX: &str = "agentcom-backup-";
const FILE_SUFFIX: &str = ".acbk";
/// Length of a millisecond stamp: `YYYYMMDDTHHMMSSmmmZ`.
const STAMP_MS_LEN: usize = 19;

/// Progress of a long backup, restore or compaction: an optional terminal bar (the
/// CLI) and a log line at most every few seconds (always).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: &'static str,
    log: bool,
    last_log: Cell<Instant>,
}

impl Progress {
    const LOG_EVERY: Duration = Duration::from_secs(2);

    /// Reports nothing.
    pub fn silent() -> Progress {
        Progress {
            bar: None,
            label: "",
            log: false,
            last_log: Cell::new(Instant::now()),
        }
    }

    /// Logs progress (the hub).
    pub fn logged(label: &'static str) -> Progress {
        Progress {
            bar: None,
            label,
            log: true,
            last_log: Cell::new(Instant::now()),
        }
    }

    /// Logs and draws a bar on stderr (the CLI; hidden when stderr is no terminal).
    /// `total_bytes` sizes the bar; a spinner when unknown.
    pub fn with_bar(label: &'static str, total_bytes: Option<u64>) -> Progress {
        let bar = match total_bytes {
            Some(total) => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {bar:40} {bytes}/{total_bytes} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            }
            None => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {spinner} {bytes} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar
            }
        };
        bar.set_prefix(label);
        Progress {
            bar: Some(bar),
            label,
            log: true,
            last_log: Cell::new(Instant::now()),
        }
    }

    /// `bytes` processed so far and `records` among them.
    pub fn at(&self, bytes: u64, records: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{records} records"));
        }
        if self.log && self.last_log.get().elapsed() >= Self::LOG_EVERY {
            self.last_log.set(Instant::now());
            tracing::info!(operation = self.label, bytes, records, "storage progress");
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A backup file found in the backup directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BackupFile {
    pub path: PathBuf,
    /// From the file name (the header says the same).
    pub created_at: i64,
    pub size_bytes: u64,
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl Fn(std::io::Error) -> BackupError + 'a {
    move |e| BackupError::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSmmmZ` (UTC) for `ms` since the epoch; sorts like time.
pub fn stamp_ms(ms: i64) -> String {
    let ms = ms.max(0);
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}{milli:03}Z")
}

/// `YYYYMMDDTHHMMSSZ` (UTC): the suffix of directories moved aside.
pub(crate) fn stamp_s(ms: i64) -> String {
    let full = stamp_ms(ms);
    format!("{}Z", &full[..15])
}

fn parse_stamp_ms(stamp: &str) -> Option<i64> {
    let b = stamp.as_bytes();
    if b.len() != STAMP_MS_LEN || b[8] != b'T' || b[18] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = stamp.get(from..to)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi, s, ms) = (num(9, 11)?, num(11, 13)?, num(13, 15)?, num(15, 18)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400_000 + ((h * 60 + mi) * 60 + s) * 1000 + ms)
}

/// The file name of a backup made at `created_at`.
pub(crate) fn backup_file_name(created_at: i64) -> String {
    format!("{FILE_PREFIX}{}{FILE_SUFFIX}", stamp_ms(created_at))
}

/// The creation time in a backup file name, or `None` when the name is not
/// exactly one of ours.
pub(crate) fn parse_backup_file_name(name: &str) -> Option<i64> {
    parse_stamp_ms(name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?)
}

/// Backup files in `dir`, newest first. A missing directory has none.
pub(crate) fn list_backups(dir: &Path) -> Result<Vec<BackupFile>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list backup directory", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("list backup directory", dir))?;
        let Some(created_at) = entry.file_name().to_str().and_then(parse_backup_file_name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            found.push(BackupFile {
                path: entry.path(),
                created_at,
                size_bytes: meta.len(),
            });
        }
    }
    found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.path.cmp(&a.path)));
    Ok(found)
}

/// Deletes all but the newest `keep` backup files in `dir` (never any other file).
/// Returns the deleted paths.
pub fn prune_backups(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut deleted = Vec::new();
    for old in list_backups(dir)?.into_iter().skip(keep.max(1)) {
        std::fs::remove_file(&old.path).map_err(io_error("delete old backup", &old.path))?;
        tracing::info!(path = %old.path.display(), "old backup pruned");
        deleted.push(old.path);
    }
    Ok(deleted)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

/// Writes a backup of `store` into `dir` (created if missing). The store lock is
/// held alone only while the trees are copied into the file; syncing and renaming
/// happen after the hub has resumed.
pub fn take_backup(
    store: &Store,
    dir: &Path,
    progress: &Progress,
) -> Result<BackupSummary, BackupError> {
    std::fs::create_dir_all(dir).map_err(io_error("create backup directory", dir))?;
    let mut created_at = now_ms();
    // A unique name: two backups within one millisecond get consecutive stamps.
    let (path, partial, file) = loop {
        let name = backup_file_name(created_at);
        let path = dir.join(&name);
        let partial = dir.join(format!(".{name}.partial"));
        if path.exists() {
            created_at += 1;
            continue;
        }
        match File::options().write(true).create_new(true).open(&partial) {
            Ok(f) => break (path, partial, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => created_at += 1,
            Err(e) => return Err(io_error("create backup file", &partial)(e)),
        }
    };
    let started = Instant::now();
    let written = store
        .exclusive()
        .map_err(BackupError::from)
        .and_then(|lock| {
            let db = lock.db()?;
            format::write_backup(db, &file, &path, created_at, HUB_VERSION, progress)
        });
    let paused_ms = started.elapsed().as_millis() as u64;
    let finished = written.and_then(|summary| {
        file.sync_all()
            .map_err(io_error("sync backup file", &partial))?;
        std::fs::rename(&partial, &path).map_err(io_error("rename backup file", &partial))?;
        sync_dir(dir)?;
        Ok(summary)
    });
    match finished {
        Ok(summary) => {
            tracing::info!(
                path = %path.display(),
                bytes = summary.size_bytes,
                records = summary.records,
                paused_ms,
                "backup written"
            );
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Verifies a backup file: magic, version, checksum and every frame.
pub fn verify_backup(path: &Path, progress: &Progress) -> Result<BackupSummary, BackupError> {
    read_backup(path, progress, &mut |_| Ok(()))
}

/// `dir` made absolute lexically (`.` and `..` resolved, symlinks kept), so its
/// parent and name are known even for `.` or a relative path, and a directory
/// next to it is next to the path the operator configured.
pub(crate) fn absolute_dir(dir: &Path) -> Result<PathBuf, BackupError> {
    let base = if dir.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().map_err(io_error("resolve", dir))?
    };
    let mut out = PathBuf::new();
    for part in base.join(dir).components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// A path next to `dir` named `<dir name>.<tag>-<UTC time>` that does not exist yet.
pub(crate) fn sibling(dir: &Path, tag: &str) -> Result<PathBuf, BackupError> {
    let dir = absolute_dir(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupError::Io {
            action: "name a directory next to",
            path: dir.clone(),
            reason: "the data directory has no name".into(),
        })?;
    let base = format!("{name}.{tag}-{}", stamp_s(now_ms()));
    for n in 1..10_000 {
        let candidate = if n == 1 {
            dir.with_file_name(&base)
        } else {
            dir.with_file_name(format!("{base}-{n}"))
        };
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(BackupError::Io {
        action: "name a directory next to",
        path: dir,
        reason: "too many directories with the same name and time".into(),
    })
}

/// Holds sled's lock on a data directory (an exclusive `flock` on `<dir>/db`, the
/// lock sled takes) so no hub opens it while a restore replaces it.
pub(crate) struct DirLock {
    _file: Option<File>,
}

/// Takes the data directory's lock, or `HubRunning` when a hub holds it. A
/// directory without a store needs no lock.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<DirLock, BackupError> {
    let db = dir.join("db");
    let file = match File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirLock { _file: None }),
        Err(e) => return Err(io_error("open", &db)(e)),
    };
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            BackupError::HubRunning(dir.to_path_buf())
        } else {
            io_error("lock", &db)(e)
        });
    }
    Ok(DirLock { _file: Some(file) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_round_trip() {
        assert_eq!(stamp_ms(0), "19700101T000000000Z");
        // 2024-02-29 23:59:58.007 UTC
        let ms = 1_709_251_198_007;
        assert_eq!(stamp_ms(ms), "20240229T235958007Z");
        assert_eq!(stamp_s(ms), "20240229T235958Z");
        assert_eq!(parse_backup_file_name(&backup_file_name(ms)), Some(ms));
        assert_eq!(parse_backup_file_name("agentcom-backup-2024.acbk"), None);
        assert_eq!(parse_backup_file_name("notes.txt"), None);
        assert_eq!(
            parse_backup_file_name(&format!(".{}.partial", backup_file_name(ms))),
            None
        );
    }

    #[test]
    fn pruning_keeps_the_newest_and_touches_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            std::fs::write(dir.path().join(backup_file_name(1_000_000 + i)), b"x").expect("w");
        }
        std::fs::write(dir.path().join("notes.txt"), b"keep me").expect("w");
        std::fs::write(dir.path().join("agentcom-backup-old.acbk"), b"keep me").expect("w");
        let deleted = prune_backups(dir.path(), 2).expect("pruned");
        assert_eq!(deleted.len(), 3);
        let left: Vec<i64> = list_backups(dir.path())
            .expect("list")
            .iter()
            .map(|b| b.created_at)
            .collect();
        assert_eq!(left, vec![1_000_004, 1_000_003]);
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("agentcom-backup-old.acbk").exists());
    }

    #[test]
    fn siblings_are_next_to_the_dir_and_unique() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let a = sibling(&data, "corrupt").expect("a");
        std::fs::create_dir(&a).expect("mkdir");
        let b = sibling(&data, "corrupt").expect("b");
        assert_ne!(a, b);
        assert_eq!(a.parent(), absolute_dir(root.path()).ok().as_deref());
        assert!(a
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("data.corrupt-")));
    }
}
