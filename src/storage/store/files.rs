//! The data directory on disk: opening sled in it, telling environmental I/O
//! failures from damage, and swapping one directory for another.

use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Opens a sled database in `dir` (created if missing) without the hub's trees or
/// flusher: for tools that write a fresh store (restore, compaction).
pub(crate) fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| environment_or_sled(dir, e))?;
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") || text.contains("WouldBlock") {
                return StoreError::Locked(dir.to_path_buf());
            }
            match e {
                sled::Error::Io(io) => environment_or_sled(dir, io),
                _ => StoreError::Sled(text),
            }
        })
}

/// I/O failures that say nothing about the store's contents (permissions, a full
/// or read-only disk, no file descriptors left) are `Environment`, so start-up
/// recovery does not mistake them for corruption.
pub(super) fn environment_or_sled(dir: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    let environmental = matches!(
        e.kind(),
        ErrorKind::PermissionDenied
            | ErrorKind::StorageFull
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::QuotaExceeded
            | ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if environmental {
        StoreError::Environment {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        }
    } else {
        StoreError::Sled(e.to_string())
    }
}

/// Puts the directory `fresh` in the place of `dir`, moving `dir` to `aside`, and
/// returns where the previous directory now is (`None` when `dir` did not exist).
/// On Linux the two are exchanged atomically first (`renameat2(RENAME_EXCHANGE)`),
/// so `dir` exists at every instant even if the process dies half-way; where the
/// file system cannot exchange, two renames are used and undone on failure.
pub(crate) fn replace_dir(
    dir: &Path,
    fresh: &Path,
    aside: &Path,
) -> std::io::Result<Option<PathBuf>> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::rename(fresh, dir)?;
        return Ok(None);
    }
    match exchange(fresh, dir) {
        Ok(()) => {
            // `fresh` now names the previous directory.
            match std::fs::rename(fresh, aside) {
                Ok(()) => Ok(Some(aside.to_path_buf())),
                Err(e) => {
                    tracing::warn!(error = %e, kept_at = %fresh.display(), "previous store kept under the temporary name");
                    Ok(Some(fresh.to_path_buf()))
                }
            }
        }
        Err(_) => {
            std::fs::rename(dir, aside)?;
            if let Err(e) = std::fs::rename(fresh, dir) {
                let _ = std::fs::rename(aside, dir);
                return Err(e);
            }
            Ok(Some(aside.to_path_buf()))
        }
    }
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (to_c(a)?, to_c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the whole call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The marker of a directory that is only a cache of the Postgres backend.
const CACHE_MARKER: &str = ".agentcom-postgres-cache";

/// Empties `dir` for a rebuild of the Postgres backend's cache. A directory
/// that exists without the marker is refused: it may be a sled store.
pub(crate) fn reset_cache_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.exists() {
        if !dir.join(CACHE_MARKER).exists()
            && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
        {
            return Err(StoreError::Environment {
                path: dir.to_path_buf(),
                reason: "not a Postgres cache directory (no marker): refusing to empty it; point postgres_cache_dir elsewhere".into(),
            });
        }
        std::fs::remove_dir_all(dir).map_err(|e| environment_or_sled(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| environment_or_sled(dir, e))?;
    std::fs::write(dir.join(CACHE_MARKER), b"").map_err(|e| environment_or_sled(dir, e))?;
    Ok(())
}
