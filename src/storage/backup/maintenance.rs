//! The running hub's side of storage resilience: [`Maintenance`] (backups and
//! compaction on demand, what storage health reports) and the
//! [`StorageMaintenance`] actor (the schedule).
//!
//! Backups and compactions block (file I/O, and the store lock held alone), so they
//! run on the blocking thread pool, never on an actor's thread, and one at a time.
//! A scheduled run that finds another one in progress is skipped, not queued.
//!
//! Architecture invariant: decides when, never what is in the store; talks to no
//! other actor. Its events go to the log ([`storage_alert`]) and the event bus; the
//! alerter reads [`Maintenance::problems`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::recovery::{compact, CompactionReport, RecoveryEvent};
use super::{list_backups, prune_backups, take_backup, BackupSummary, Progress};
use crate::config::Config;
use crate::error::BackupError;
use crate::storage::bus::{EventBus, HubEvent, StorageEvent};
use crate::storage::store::Store;
use crate::util::now_ms;

/// The hook for storage events (`backup_complete`, `backup_failed`,
/// `compaction_complete`, `compaction_failed`, `recovery_complete`,
/// `recovery_failed`): one structured log line. The running hub's events also go
/// to the event bus (the one `Maintenance::new` was given).
pub(crate) fn storage_alert(kind: &'static str, details: &impl Serialize) {
    let details = serde_json::to_string(details).unwrap_or_default();
    if kind.ends_with("_failed") || kind.starts_with("recovery") {
        tracing::error!(storage_event = kind, details = %details, "storage event");
    } else {
        tracing::info!(storage_event = kind, details = %details, "storage event");
    }
}

/// A failed backup or compaction, for storage health.
#[derive(Debug, Clone, Serialize)]
struct Failure {
    at: i64,
    trigger: &'static str,
    error: String,
}

#[derive(Default)]
struct State {
    last_backup: Option<(BackupSummary, &'static str)>,
    last_backup_error: Option<Failure>,
    backups_since_start: u64,
    last_compaction: Option<(CompactionReport, &'static str)>,
    last_compaction_error: Option<Failure>,
    recoveries: Vec<RecoveryEvent>,
}

struct Inner {
    store: Store,
    backup_dir: PathBuf,
    keep: usize,
    backup_every: Option<Duration>,
    compact_every: Option<Duration>,
    started_at: i64,
    /// One backup or compaction at a time.
    job: Mutex<()>,
    state: Mutex<State>,
    /// Where storage events go besides the log (the dashboard), in a running hub.
    bus: Option<EventBus>,
}

/// Backups, compaction and storage health of the running hub. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Maintenance {
    inner: Arc<Inner>,
}

impl Maintenance {
    /// Starts nothing and touches no file. `bus` is the running hub's (none for
    /// the offline command-line tools).
    pub(crate) fn new(store: Store, config: &Config, bus: Option<EventBus>) -> Maintenance {
        Maintenance {
            inner: Arc::new(Inner {
                store,
                backup_dir: config.backup_dir(),
                keep: usize::try_from(config.backup_keep).unwrap_or(usize::MAX),
                backup_every: config.backup_interval(),
                compact_every: config.compact_interval(),
                started_at: now_ms(),
                job: Mutex::new(()),
                state: Mutex::new(State::default()),
                bus,
            }),
        }
    }

    /// Logs a storage event and publishes it.
    fn event(&self, kind: &'static str, details: &impl Serialize) {
        storage_alert(kind, details);
        if let Some(bus) = self.inner.bus.as_ref().filter(|b| b.watched()) {
            bus.publish(HubEvent::Storage(StorageEvent {
                kind,
                data: serde_json::to_value(details).unwrap_or(Value::Null),
            }));
        }
    }

    /// What start-up recovery did (kept for storage health).
    pub(crate) fn record_recoveries(&self, events: Vec<RecoveryEvent>) {
        self.inner.state.lock().recoveries.extend(events);
    }

    /// Writes a backup now and prunes old ones (blocking; waits for a running job).
    pub(crate) fn backup_now(&self, trigger: &'static str) -> Result<BackupSummary, BackupError> {
        let _job = self.inner.job.lock();
        self.backup_locked(trigger)
    }

    fn backup_locked(&self, trigger: &'static str) -> Result<BackupSummary, BackupError> {
        let dir = &self.inner.backup_dir;
        let result =
            take_backup(&self.inner.store, dir, &Progress::logged("backup")).and_then(|summary| {
                prune_backups(dir, self.inner.keep)?;
                Ok(summary)
            });
        let mut state = self.inner.state.lock();
        match &result {
            Ok(summary) => {
                state.last_backup = Some((summary.clone(), trigger));
                state.backups_since_start += 1;
                drop(state);
                self.event(
                    "backup_complete",
                    &json!({"trigger": trigger, "path": summary.path, "size_bytes": summary.size_bytes, "records": summary.records}),
                );
            }
            Err(e) => {
                state.last_backup_error = Some(Failure {
                    at: now_ms(),
                    trigger,
                    error: e.to_string(),
                });
                drop(state);
                self.event(
                    "backup_failed",
                    &json!({"trigger": trigger, "error": e.to_string()}),
                );
            }
        }
        result
    }

    /// A scheduled backup: skipped (`None`) while another job runs.
    fn scheduled_backup(&self) -> Option<Result<BackupSummary, BackupError>> {
        let _job = self.inner.job.try_lock()?;
        Some(self.backup_locked("scheduled"))
    }

    /// The start-up backup: only when the backup directory has none.
    fn backup_if_none(&self) -> Option<Result<BackupSummary, BackupError>> {
        let _job = self.inner.job.lock();
        match list_backups(&self.inner.backup_dir) {
            Ok(found) if !found.is_empty() => None,
            _ => Some(self.backup_locked("startup")),
        }
    }

    /// Compacts the live store now (blocking; waits for a running job).
    pub(crate) fn compact_now(
        &self,
        trigger: &'static str,
    ) -> Result<CompactionReport, BackupError> {
        let _job = self.inner.job.lock();
        self.compact_locked(trigger)
    }

    fn compact_locked(&self, trigger: &'static str) -> Result<CompactionReport, BackupError> {
        let result = compact(&self.inner.store, &Progress::logged("compact"));
        let mut state = self.inner.state.lock();
        match &result {
            Ok(report) => {
                state.last_compaction = Some((report.clone(), trigger));
                drop(state);
                self.event("compaction_complete", report);
            }
            Err(e) => {
                state.last_compaction_error = Some(Failure {
                    at: now_ms(),
                    trigger,
                    error: e.to_string(),
                });
                drop(state);
                self.event(
                    "compaction_failed",
                    &json!({"trigger": trigger, "error": e.to_string()}),
                );
            }
        }
        result
    }

    fn scheduled_compaction(&self) -> Option<Result<CompactionReport, BackupError>> {
        let _job = self.inner.job.try_lock()?;
        Some(self.compact_locked("scheduled"))
    }

    /// Storage health (blocking: counts the records of every tree).
    /// What is wrong with storage now, cheaply (no scan): `recovered_at_startup`,
    /// `backup_failing`, `compaction_failing`. For the alerter.
    pub(crate) fn problems(&self) -> Vec<&'static str> {
        let state = self.inner.state.lock();
        let mut p = Vec::new();
        if !state.recoveries.is_empty() {
            p.push("recovered_at_startup");
        }
        let failing = |err: Option<i64>, ok: Option<i64>| match (err, ok) {
            (Some(e), Some(o)) => e > o,
            (Some(_), None) => true,
            _ => false,
        };
        if failing(
            state.last_backup_error.as_ref().map(|f| f.at),
            state.last_backup.as_ref().map(|(b, _)| b.created_at),
        ) {
            p.push("backup_failing");
        }
        if failing(
            state.last_compaction_error.as_ref().map(|f| f.at),
            state.last_compaction.as_ref().map(|(c, _)| c.at),
        ) {
            p.push("compaction_failing");
        }
        p
    }

    pub(crate) fn health(&self) -> Value {
        let inner = &self.inner;
        let now = now_ms();
        let mut trees = Map::new();
        let mut records = 0u64;
        let tree_error = match inner.store.tree_lengths() {
            Ok(lengths) => {
                for (name, n) in lengths {
                    records += n;
                    trees.insert(name, n.into());
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let (backups, list_error) = match list_backups(&inner.backup_dir) {
            Ok(b) => (b, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let newest = backups.first();
        let state = inner.state.lock();
        let backup_failing = match (&state.last_backup_error, &state.last_backup) {
            (Some(f), Some((ok, _))) => f.at > ok.created_at,
            (Some(_), None) => true,
            _ => false,
        };
        let compaction_failing = match (&state.last_compaction_error, &state.last_compaction) {
            (Some(f), Some((ok, _))) => f.at > ok.at,
            (Some(_), None) => true,
            _ => false,
        };
        let mut conditions = Vec::new();
        if !state.recoveries.is_empty() {
            conditions.push("recovered_at_startup");
        }
        if backup_failing {
            conditions.push("backup_failing");
        }
        if compaction_failing {
            conditions.push("compaction_failing");
        }
        if backups.is_empty() {
            conditions.push("no_backup");
        }
        if tree_error.is_some() {
            conditions.push("store_unreadable");
        }
        json!({
            "status": if conditions.is_empty() { "ok" } else { "degraded" },
            "conditions": conditions,
            "started_at": inner.started_at,
            "data_dir": inner.store.path(),
            "store_bytes": inner.store.size_on_disk(),
            "records": records,
            "trees": trees,
            "trees_error": tree_error,
            "backup": {
                "dir": inner.backup_dir,
                "count": backups.len(),
                "keep": inner.keep,
                "interval_ms": inner.backup_every.map(|d| d.as_millis() as u64),
                "last_backup_at": newest.map(|b| b.created_at),
                "last_backup_age_ms": newest.map(|b| now.saturating_sub(b.created_at).max(0)),
                "last_backup_file": newest.map(|b| b.path.clone()),
                "last_backup_bytes": newest.map(|b| b.size_bytes),
                "last_error": state.last_backup_error,
                "list_error": list_error,
                "since_start": state.backups_since_start,
                "last_since_start": state.last_backup.as_ref().map(|(s, trigger)| json!({
                    "trigger": trigger,
                    "path": s.path,
                    "created_at": s.created_at,
                    "size_bytes": s.size_bytes,
                    "sha256": s.sha256,
                    "records": s.records,
                })),
            },
            "compaction": {
                "interval_ms": inner.compact_every.map(|d| d.as_millis() as u64),
                "last_compaction_at": state.last_compaction.as_ref().map(|(r, _)| r.at),
                "last_compaction_age_ms": state.last_compaction.as_ref().map(|(r, _)| now.saturating_sub(r.at).max(0)),
                "last": state.last_compaction.as_ref().map(|(r, trigger)| {
                    let mut v = json!(r);
                    v["trigger"] = json!(trigger);
                    v
                }),
                "last_error": state.last_compaction_error,
            },
            "recovery": {
                "recovered_since_start": !state.recoveries.is_empty(),
                "events": state.recoveries,
            },
            "archive": crate::storage::archive::Archive::new(inner.store.clone(), inner.backup_dir.clone())
                .totals()
                .unwrap_or_else(|e| json!({"error": e.to_string()})),
        })
    }
}

/// Runs a blocking job on the blocking pool and logs a failure of the pool itself
/// (the job reports its own result through `Maintenance`).
fn run_blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) {
    actix_rt::spawn(async move {
        if let Err(e) = actix_rt::task::spawn_blocking(job).await {
            tracing::error!(error = %e, "storage maintenance job did not finish");
        }
    });
}

/// The schedule: a backup at start-up when none exists, then every
/// `backup_interval`, and a compaction every `compact_interval`.
pub(crate) struct StorageMaintenance {
    keeper: Maintenance,
}

impl StorageMaintenance {
    pub(crate) fn new(keeper: Maintenance) -> StorageMaintenance {
        StorageMaintenance { keeper }
    }
}

impl Actor for StorageMaintenance {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let keeper = self.keeper.clone();
        run_blocking(move || keeper.backup_if_none());
        if let Some(every) = self.keeper.inner.backup_every {
            ctx.run_interval(every, |act, _| {
                let keeper = act.keeper.clone();
                run_blocking(move || keeper.scheduled_backup());
            });
        }
        if let Some(every) = self.keeper.inner.compact_every {
            ctx.run_interval(every, |act, _| {
                let keeper = act.keeper.clone();
                run_blocking(move || keeper.scheduled_compaction());
            });
        }
    }
}
