//! `agentcom-hub migrate` (ext, #22): copies a whole store from sled to
//! Postgres or back, with a progress bar, then verifies the copy: the digest
//! of every record (tree, key and value, in order) of the target must equal
//! the source's. The source is only read; the target must be empty (a sled
//! directory without a store, a database without rows). Both need the hubs
//! stopped: sled's lock, or the Postgres leader lease.
//!
//! Architecture invariant: bytes in, bytes out; knows no record's meaning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::store::{ContentDigest, PostgresSettings, Replica, Store, TREE_NAMES};
use crate::error::StoreError;

/// Rows per Postgres transaction while copying.
const BATCH: usize = 5_000;

/// One side of a migration.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Sled(PathBuf),
    Postgres(String),
}

impl Endpoint {
    /// `sled:DIR` or `postgres:CONNECTION STRING`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        match text.split_once(':') {
            Some(("sled", dir)) if !dir.is_empty() => Ok(Endpoint::Sled(PathBuf::from(dir))),
            Some(("postgres", url)) if !url.trim().is_empty() => {
                Ok(Endpoint::Postgres(url.to_string()))
            }
            _ => Err(format!(
                "{text:?}: expected sled:DIR or postgres:CONNECTION-STRING"
            )),
        }
    }
}

/// What a migration did.
#[derive(Debug, Clone)]
pub struct MigrateReport {
    pub source: ContentDigest,
    pub target: ContentDigest,
}

fn settings(url: &str, lease: Duration) -> PostgresSettings {
    PostgresSettings {
        url: url.to_string(),
        holder: format!("agentcom-hub migrate#{}", std::process::id()),
        lease,
    }
}

/// Opens a Postgres store into a throwaway cache (with the lease: no hub
/// may run on it meanwhile).
fn open_postgres(url: &str, cache: &Path, lease: Duration) -> Result<Store, StoreError> {
    let give_up = Some(lease + Duration::from_millis(500));
    Store::open_postgres(
        cache,
        super::store::DEFAULT_CACHE_BYTES,
        &settings(url, lease),
        give_up,
        &mut |_| {},
    )
}

fn refused(message: impl Into<String>) -> StoreError {
    StoreError::Sled(message.into())
}

/// Copies `from` into `to`, then checks the copy record by record (by
/// digest). `on_record` is called for every record copied (a progress bar).
pub fn migrate(
    from: &Endpoint,
    to: &Endpoint,
    work_dir: &Path,
    lease: Duration,
    on_record: &mut dyn FnMut(u64),
) -> Result<MigrateReport, StoreError> {
    let source = match from {
        Endpoint::Sled(dir) => {
            if !dir.join("db").is_file() {
                return Err(refused(format!("no sled store in {}", dir.display())));
            }
            Store::open(dir)?
        }
        Endpoint::Postgres(url) => open_postgres(url, &work_dir.join("source.pgcache"), lease)?,
    };
    let mut copied = 0u64;
    let source_digest = match to {
        Endpoint::Sled(dir) => {
            if dir.join("db").exists() {
                return Err(refused(format!("{} holds a store already", dir.display())));
            }
            let target = Store::open(dir)?;
            let trees = target.trees_by_name();
            let digest = source.scan_all(&mut |tree, k, v| {
                if let Some(t) = trees.iter().find(|(name, _)| name.as_bytes() == tree) {
                    t.1.insert(k, v)?;
                    copied += 1;
                    on_record(copied);
                    if copied.is_multiple_of(BATCH as u64) {
                        target.flush_now()?;
                    }
                }
                Ok(())
            })?;
            target.flush_now()?;
            digest
        }
        Endpoint::Postgres(url) => {
            let mut replica = Replica::connect(url, &settings(url, lease).holder, lease)?;
            if replica.acquire()?.is_err() {
                return Err(refused(
                    "a hub holds the Postgres leader lease: stop it first",
                ));
            }
            if replica.row_count()? > 0 {
                return Err(refused(
                    "the database holds a store already (agentcom_kv has rows)",
                ));
            }
            let mut batch = Vec::with_capacity(BATCH);
            let digest = source.scan_all(&mut |tree, k, v| {
                let Some(name) = TREE_NAMES.iter().find(|n| n.as_bytes() == tree) else {
                    return Ok(());
                };
                batch.push((name.to_string(), k.to_vec(), v.to_vec()));
                copied += 1;
                on_record(copied);
                if batch.len() == BATCH {
                    replica.insert_rows(&batch)?;
                    batch.clear();
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                replica.insert_rows(&batch)?;
            }
            replica.release()?;
            digest
        }
    };
    if let Endpoint::Postgres(_) = from {
        source.release_lease_now()?;
    }
    drop(source);
    // The check: the target read back as a hub would read it. A sled target
    // was closed a moment ago in this process: its lock is waited for.
    let target_digest = match to {
        Endpoint::Sled(dir) => Store::reopen_with_cache(dir, super::store::DEFAULT_CACHE_BYTES)?
            .scan_all(&mut |_, _, _| Ok(()))?,
        Endpoint::Postgres(url) => {
            let check = open_postgres(url, &work_dir.join("check.pgcache"), lease)?;
            let digest = check.scan_all(&mut |_, _, _| Ok(()))?;
            check.release_lease_now()?;
            digest
        }
    };
    if target_digest != source_digest {
        return Err(refused(format!(
            "the copy differs from the source: {} records {} against {} records {}",
            target_digest.records,
            target_digest.sha256,
            source_digest.records,
            source_digest.sha256
        )));
    }
    Ok(MigrateReport {
        source: source_digest,
        target: target_digest,
    })
}
