//! The seal file a clean close leaves in the data directory (see the module
//! documentation of `store`): a digest of every record and, since format 2 of
//! the hub's stores, a digest of the directory's files as sled left them.
//!
//! The file digest makes a clean restart cheap: before sled opens the
//! directory, the files are hashed (BLAKE3, a few GB/s); when they are byte for
//! byte what the close left, the records are too, and the start-up check need
//! not read every record (1–2 µs each in sled, three per queued task). When they
//! differ, for any reason (damage, or sled finishing a deferred write after the
//! close), the record digest decides as before: the fast path can only skip
//! work, never pass a store the record check would fail.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::environment_or_sled;
use crate::error::StoreError;

/// The seal file in the data directory.
pub(crate) const SEAL_FILE: &str = "agentcom-seal.json";

/// What a clean close recorded about the store's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Seal {
    pub sealed_at: i64,
    pub records: u64,
    /// SHA-256 over every tree (by name) and record (by key): see `digest_db`.
    pub sha256: String,
    /// BLAKE3 over the data directory's files after sled closed (see
    /// [`files_digest`]); absent in seals of older releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_blake3: Option<String>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn read_seal(dir: &Path) -> Result<Option<Seal>, StoreError> {
    let path = dir.join(SEAL_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(environment_or_sled(dir, e)),
    };
    match serde_json::from_slice::<Seal>(&text) {
        Ok(seal) => Ok(Some(seal)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable store seal ignored");
            Ok(None)
        }
    }
}

/// Takes the seal out of `dir`: reads it, then removes it durably before the store
/// can be written. An unreadable seal counts as none (and is logged).
pub(super) fn take_seal(dir: &Path) -> Result<Option<Seal>, StoreError> {
    let seal = read_seal(dir)?;
    let path = dir.join(SEAL_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir).map_err(|e| environment_or_sled(dir, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(environment_or_sled(dir, e)),
    }
    Ok(seal)
}

pub(super) fn write_seal(dir: &Path, seal: &Seal) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SEAL_FILE}.tmp"));
    let body = serde_json::to_vec(seal).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, &body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SEAL_FILE))?;
    sync_dir(dir)
}

/// BLAKE3 over every file under `dir` but the seal (paths sorted; each path,
/// length and content hashed), as hex. Files are mapped and hashed on every
/// core (a million queued tasks leave a few GB of sled files).
pub(super) fn files_digest(dir: &Path) -> std::io::Result<String> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with(SEAL_FILE)
            {
                paths.push(entry.path());
            }
        }
    }
    paths.sort();
    let mut hash = blake3::Hasher::new();
    for path in paths {
        let name = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy();
        hash.update(&(name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update(&std::fs::metadata(&path)?.len().to_be_bytes());
        hash.update_mmap_rayon(&path)?;
    }
    Ok(hash.finalize().to_hex().to_string())
}

/// Whether `dir`'s files are exactly what the close that wrote its seal left:
/// false when there is no seal, it has no file digest, or anything differs.
/// Read before sled opens the directory (sled's own start may write to it).
pub(super) fn files_unchanged(dir: &Path) -> bool {
    let Ok(Some(Seal {
        files_blake3: Some(sealed),
        ..
    })) = read_seal(dir)
    else {
        return false;
    };
    // sled's lock, held while hashing: no other process may open (and write)
    // the store meanwhile. Released before this process opens it.
    let lock = std::fs::File::open(dir.join("db"))
        .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::from));
    if let Err(e) = lock {
        tracing::info!(error = %e, "store files not checked against the seal: in use");
        return false;
    }
    match files_digest(dir) {
        Ok(now) => now == sealed,
        Err(e) => {
            tracing::warn!(error = %e, "store files unreadable for the seal check; checking every record");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::Store;

    #[test]
    fn the_file_digest_passes_untouched_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.meta.insert("k", b"v".to_vec()).expect("insert");
        let seal = store.seal_and_close().expect("sealed");
        assert!(seal.files_blake3.is_some(), "{seal:?}");
        assert!(files_unchanged(dir.path()), "nothing touched the files");
        // One byte more in sled's config file: not what the close left.
        let conf = dir.path().join("conf");
        let mut bytes = std::fs::read(&conf).expect("read conf");
        bytes.push(b'\n');
        std::fs::write(&conf, bytes).expect("write conf");
        assert!(!files_unchanged(dir.path()));
        // Without a seal there is nothing to match.
        std::fs::remove_file(dir.path().join(SEAL_FILE)).expect("remove seal");
        assert!(!files_unchanged(dir.path()));
    }
}
