//! The Postgres backend (ext, #22): Postgres is the source of truth and the
//! local sled directory a cache of it, rebuilt at every start.
//!
//! Every write already goes through the staging map and the flusher; with this
//! backend the flusher commits each group's writes to the `agentcom_kv` table
//! in one transaction (group commit) before it answers the waiters. The same
//! transaction first extends the leader lease, and only while this process
//! still holds it at its epoch: a hub that lost the lease (paused past it, cut
//! off) commits nothing, and every row carries the epoch that wrote it.
//!
//! Schema: versioned migrations (`agentcom_schema_migrations`), applied at
//! start under an advisory lock so two hubs starting at once apply each once.
//!
//! Architecture invariant: knows trees, keys and bytes, not what a record
//! means; all its I/O runs on the flusher's thread (or before the store is
//! open, `Store::open_postgres`), never on an actor's.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use postgres::{Client, NoTls};
use sled::IVec;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::files;
use super::staging::Writes;
use super::tree::Open;
use super::{Store, TREE_NAMES};
use crate::error::StoreError;

/// Where the Postgres backend is, who this hub is, and how long its lease
/// lasts (the longest a standby waits before taking over).
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub holder: String,
    pub lease: Duration,
}

/// The Postgres side of `Store`: opening it (before the store is open, on
/// the caller's thread), its epoch, and giving the lease up.
impl Store {
    /// Opens the Postgres backend (ext, #22): connects, migrates the schema,
    /// waits until it holds the leader lease (a standby meanwhile), then
    /// rebuilds the local cache in `cache_dir` from the database. Every flush
    /// is then a commit to Postgres.
    /// With `give_up`, a lease another hub keeps renewing that long is
    /// refused (the offline commands); a lease left by a hub that died
    /// expires within it.
    pub fn open_postgres(
        cache_dir: &Path,
        cache_bytes: u64,
        pg: &PostgresSettings,
        give_up: Option<Duration>,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Store, StoreError> {
        let mut replica = Replica::connect(&pg.url, &pg.holder, pg.lease)?;
        let started = std::time::Instant::now();
        let mut told = None;
        let epoch = loop {
            match replica.acquire()? {
                Ok(epoch) => break epoch,
                Err(holder) if give_up.is_some_and(|d| started.elapsed() >= d) => {
                    return Err(StoreError::Sled(format!(
                        "the store is in use by a running hub (it holds the Postgres leader lease: \
                         {holder}): stop it, or use --hub URL (admin token in \
                         AGENTCOM_ADMIN_TOKEN) to ask the hub itself"
                    )))
                }
                Err(holder) => {
                    on_wait(&holder);
                    if told.as_ref() != Some(&holder) {
                        tracing::info!(leader = %holder, "standby: another hub holds the leader lease");
                        told = Some(holder);
                    }
                    std::thread::sleep(pg.lease / 5);
                }
            }
        };
        files::reset_cache_dir(cache_dir)?;
        let open = Open::start(cache_dir, cache_bytes)?;
        let rows = replica.load_into(&open)?;
        tracing::info!(epoch, rows, holder = %pg.holder, "leader: the local cache holds the store");
        let mut store = Store::from_open(cache_dir, cache_bytes, open, false, Some(replica))?;
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.epoch = Some(epoch);
        }
        Ok(store)
    }

    /// With the Postgres backend, the epoch of the leader lease this hub
    /// holds; `None` on sled.
    pub fn leader_epoch(&self) -> Option<i64> {
        self.inner.epoch
    }

    /// With the Postgres backend, gives the leader lease up after the flush
    /// this waits for (a clean stop; no write follows it).
    pub fn release_lease(&self) -> impl std::future::Future<Output = Result<(), StoreError>> {
        self.inner.release.store(true, Ordering::SeqCst);
        self.durable()
    }

    /// `release_lease` for a caller without a runtime (the offline commands).
    pub fn release_lease_now(&self) -> Result<(), StoreError> {
        self.inner.release.store(true, Ordering::SeqCst);
        self.flush_now()
    }
}

/// Versioned schema changes, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE agentcom_kv (
         tree TEXT NOT NULL,
         k BYTEA NOT NULL,
         v BYTEA NOT NULL,
         epoch BIGINT NOT NULL,
         PRIMARY KEY (tree, k)
     );
     CREATE TABLE agentcom_leader (
         id INT PRIMARY KEY CHECK (id = 1),
         holder TEXT NOT NULL,
         epoch BIGINT NOT NULL,
         expires_at TIMESTAMPTZ NOT NULL
     );",
)];

/// The advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x6167_656e_7463_6f6d;
/// Rows read per round trip while a start copies the store.
const LOAD_PAGE: i64 = 5_000;

fn pg_error(what: &str, e: postgres::Error) -> StoreError {
    StoreError::Sled(format!("postgres: {what}: {e}"))
}

/// The lease is gone: this hub must stop writing at once.
pub(crate) fn fenced(holder: &str, epoch: i64) -> StoreError {
    StoreError::Sled(format!(
        "postgres: fenced: {holder} no longer holds the leader lease of epoch {epoch}"
    ))
}

/// Whether `e` is [`fenced`].
pub(crate) fn is_fenced(e: &StoreError) -> bool {
    matches!(e, StoreError::Sled(m) if m.starts_with("postgres: fenced"))
}

/// A connection holding (or waiting for) the leader lease.
/// One flush: the lease extended (only while ours at our epoch) and, joined
/// to it, the deletes and the upserts; answers 1 when the lease held. One
/// statement, so one round trip and one implicit transaction. The epoch is
/// the fence: a lease that expired while nobody took it (a long pause, no
/// standby) is still ours, since taking it raises the epoch.
const COMMIT_SQL: &str = "WITH lease AS (
    UPDATE agentcom_leader
       SET expires_at = now() + $3::float8 * interval '1 millisecond'
     WHERE id = 1 AND holder = $1 AND epoch = $2
    RETURNING 1 AS held
), gone AS (
    DELETE FROM agentcom_kv kv
     USING UNNEST($4::text[], $5::bytea[]) AS d(tree, k), lease
     WHERE kv.tree = d.tree AND kv.k = d.k
    RETURNING 1
), put AS (
    INSERT INTO agentcom_kv (tree, k, v, epoch)
    SELECT u.t, u.k, u.v, $2 FROM UNNEST($6::text[], $7::bytea[], $8::bytea[]) AS u(t, k, v), lease
    ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v, epoch = EXCLUDED.epoch
    RETURNING 1
)
SELECT count(*) FROM lease";

pub(crate) struct Replica {
    client: Client,
    /// The connection string (a start reads the store on a second connection
    /// while this one keeps the lease).
    url: String,
    holder: String,
    lease: Duration,
    epoch: i64,
    last_renew: Instant,
    /// [`COMMIT_SQL`], prepared once per connection.
    commit_statement: Option<postgres::Statement>,
}

impl Replica {
    /// Connects and brings the schema up to date.
    pub(crate) fn connect(url: &str, holder: &str, lease: Duration) -> Result<Replica, StoreError> {
        let client = Client::connect(url, NoTls).map_err(|e| pg_error("cannot connect", e))?;
        let mut r = Replica {
            client,
            url: url.to_string(),
            holder: holder.to_string(),
            lease,
            epoch: 0,
            last_renew: Instant::now(),
            commit_statement: None,
        };
        // A hub paused (or cut off) inside a transaction must not keep its
        // locks, the lease row's above all, past its lease: the server ends
        // such a transaction, and a standby can take over.
        let idle = format!(
            "SET idle_in_transaction_session_timeout = {}",
            lease.as_millis().max(1)
        );
        r.client
            .batch_execute(&idle)
            .map_err(|e| pg_error("set up the session", e))?;
        r.migrate()?;
        Ok(r)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| pg_error("migrate", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| pg_error("migrate", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS agentcom_schema_migrations (
                 version INT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .map_err(|e| pg_error("migrate", e))?;
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM agentcom_schema_migrations WHERE version = $1",
                    &[version],
                )
                .map_err(|e| pg_error("migrate", e))?;
            if done.is_some() {
                continue;
            }
            tx.batch_execute(sql)
                .map_err(|e| pg_error(&format!("migration {version}"), e))?;
            tx.execute(
                "INSERT INTO agentcom_schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .map_err(|e| pg_error("migrate", e))?;
            tracing::info!(version, "postgres schema migrated");
        }
        tx.commit().map_err(|e| pg_error("migrate", e))
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_millis() as f64
    }

    /// Takes the leader lease when nobody holds it (or it expired): answers
    /// the new epoch, or `None` and who holds it.
    pub(crate) fn acquire(&mut self) -> Result<Result<i64, String>, StoreError> {
        let row = self
            .client
            .query_opt(
                "INSERT INTO agentcom_leader AS l (id, holder, epoch, expires_at)
                 VALUES (1, $1, 1, now() + $2::float8 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE
                   SET holder = $1, epoch = l.epoch + 1,
                       expires_at = now() + $2::float8 * interval '1 millisecond'
                   WHERE l.expires_at < now()
                 RETURNING epoch",
                &[&self.holder, &self.lease_ms()],
            )
            .map_err(|e| pg_error("acquire the lease", e))?;
        match row {
            Some(r) => {
                self.epoch = r.get(0);
                self.last_renew = Instant::now();
                Ok(Ok(self.epoch))
            }
            None => {
                let holder = self
                    .client
                    .query_opt(
                        "SELECT holder, epoch FROM agentcom_leader WHERE id = 1",
                        &[],
                    )
                    .map_err(|e| pg_error("read the lease", e))?
                    .map(|r| format!("{} (epoch {})", r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .unwrap_or_default();
                Ok(Err(holder))
            }
        }
    }

    /// Copies every row into the cache's trees (a start). The rows come on a
    /// connection of their own, page by page, while this one renews the lease
    /// between pages: a large store takes longer to read than the lease lasts.
    pub(super) fn load_into(&mut self, open: &Open) -> Result<u64, StoreError> {
        let mut reader = Client::connect(&self.url, NoTls).map_err(|e| pg_error("load", e))?;
        let mut tx = reader.transaction().map_err(|e| pg_error("load", e))?;
        let stmt = tx
            .prepare("SELECT tree, k, v FROM agentcom_kv ORDER BY tree, k")
            .map_err(|e| pg_error("load", e))?;
        let portal = tx.bind(&stmt, &[]).map_err(|e| pg_error("load", e))?;
        let mut n = 0u64;
        loop {
            if self.renew_due() {
                self.renew()?;
            }
            let rows = tx
                .query_portal(&portal, LOAD_PAGE as i32)
                .map_err(|e| pg_error("load", e))?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let tree: &str = row.get(0);
                let Some(index) = TREE_NAMES.iter().position(|t| *t == tree) else {
                    tracing::warn!(tree, "rows of an unknown tree left in postgres");
                    continue;
                };
                let (k, v): (&[u8], &[u8]) = (row.get(1), row.get(2));
                if let Some(t) = open.trees.get(index) {
                    t.insert(k, v)?;
                }
                n += 1;
            }
        }
        tx.commit().map_err(|e| pg_error("load", e))?;
        open.db.flush()?;
        if self.renew_due() {
            self.renew()?;
        }
        Ok(n)
    }

    /// Rows in the store table (a migration writes only into an empty one).
    pub(crate) fn row_count(&mut self) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM agentcom_kv", &[])
            .map_err(|e| pg_error("count", e))?;
        Ok(row.get(0))
    }

    /// Writes rows as they are (a migration), in one transaction with the
    /// lease renewed in it.
    pub(crate) fn insert_rows(
        &mut self,
        rows: &[(String, Vec<u8>, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let trees: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.1.as_slice()).collect();
        let values: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
        self.write_rows((&[], &[]), (&trees, &keys, &values))
    }

    /// Gives the lease up (a clean stop): a standby takes over at once.
    pub(crate) fn release(&mut self) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE agentcom_leader SET expires_at = now()
                  WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&self.holder, &self.epoch],
            )
            .map_err(|e| pg_error("release the lease", e))?;
        Ok(())
    }

    /// Whether the lease is due for renewal (a third of it passed).
    pub(crate) fn renew_due(&self) -> bool {
        self.last_renew.elapsed() >= self.lease / 3
    }

    /// Renews the lease (no writes).
    pub(crate) fn renew(&mut self) -> Result<(), StoreError> {
        self.commit(&[])
    }

    /// Commits `batches` (in order; a key's last write wins) in one
    /// transaction with the lease renewed in it.
    pub(crate) fn commit(&mut self, batches: &[std::sync::Arc<Writes>]) -> Result<(), StoreError> {
        let mut merged: IndexMap<(usize, &[u8]), &Option<IVec>> = IndexMap::new();
        for batch in batches {
            for ((tree, key), value) in batch.iter() {
                merged.insert((*tree, key), value);
            }
        }
        let (mut up_tree, mut up_k, mut up_v) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_tree, mut del_k) = (Vec::new(), Vec::new());
        for ((tree, key), value) in merged {
            let Some(name) = TREE_NAMES.get(tree) else {
                continue;
            };
            match value {
                Some(v) => {
                    up_tree.push(*name);
                    up_k.push(key);
                    up_v.push(v.as_ref());
                }
                None => {
                    del_tree.push(*name);
                    del_k.push(key);
                }
            }
        }
        self.write_rows((&del_tree, &del_k), (&up_tree, &up_k, &up_v))
    }

    /// Deletes and upserts rows and extends the lease, all in one statement
    /// (one round trip, its own transaction): the writes join the lease
    /// update, so they happen only while the lease is still ours at our epoch;
    /// else nothing is written and the hub is fenced.
    fn write_rows(
        &mut self,
        (del_tree, del_k): (&[&str], &[&[u8]]),
        (up_tree, up_k, up_v): (&[&str], &[&[u8]], &[&[u8]]),
    ) -> Result<(), StoreError> {
        let statement = match &self.commit_statement {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .client
                    .prepare(COMMIT_SQL)
                    .map_err(|e| pg_error("prepare the commit", e))?;
                self.commit_statement = Some(s.clone());
                s
            }
        };
        let (holder, epoch, lease_ms) = (self.holder.clone(), self.epoch, self.lease_ms());
        let row = self
            .client
            .query_one(
                &statement,
                &[
                    &holder, &epoch, &lease_ms, &del_tree, &del_k, &up_tree, &up_k, &up_v,
                ],
            )
            .map_err(|e| pg_error("commit", e))?;
        let held: i64 = row.get(0);
        if held != 1 {
            return Err(fenced(&holder, epoch));
        }
        self.last_renew = Instant::now();
        Ok(())
    }
}
