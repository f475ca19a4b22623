//! Write scopes in the queue: the claim of every assigned task that declares a
//! scope, and the queued tasks waiting for one to be released.
//!
//! - A queued task whose scope conflicts with a claim is not offered to the
//!   scheduler; it waits on that claim (`scope_waiting` in the event log,
//!   `waiting_on_scope` on the task) and is offered again the moment the claim is
//!   released (the holder completed, failed, was reclaimed, blocked or
//!   cancelled). Tasks behind it that do not conflict are offered as usual.
//! - The queue takes the claim when it assigns. Queued tasks of the same
//!   repository that now conflict leave the scheduler and wait; two conflicting
//!   tasks matched at once are told apart there too: the second `Assign` is
//!   refused (`scope_busy`) and that task waits.
//! - Compiled scopes are kept for live tasks only (a task's globs compile once).
//! - Direct reservations (`scope_reserve`, `/api/reservations`) are claims too,
//!   with an expiry: kept here as their records (the queue stores them in
//!   `meta`), granted only when nothing live conflicts, released by their holder,
//!   by their expiry, or with the task they were made for.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::reservations::{Claim, Reservations};
use crate::domain::scopes::{Scope, ScopeError};
use crate::domain::task::Task;
use crate::protocol::{Reservation, ReserveMode, ScopeHolderInfo};

/// A task's compiled scope.
#[derive(Debug)]
pub(super) struct TaskScope {
    pub(super) repo: String,
    pub(super) writes: Scope,
    pub(super) reads: Scope,
}

impl TaskScope {
    /// Compiles the scope of `task`, if it declares one.
    pub(super) fn of(
        repo: Option<&str>,
        write_paths: &[String],
        read_paths: &[String],
    ) -> Result<Option<TaskScope>, (&'static str, ScopeError)> {
        let Some(repo) = repo else {
            return Ok(None);
        };
        if write_paths.is_empty() && read_paths.is_empty() {
            return Ok(None);
        }
        Ok(Some(TaskScope {
            repo: repo.to_string(),
            writes: Scope::parse(write_paths).map_err(|e| ("write_paths", e))?,
            reads: Scope::parse(read_paths).map_err(|e| ("read_paths", e))?,
        }))
    }

    fn claim(&self, task_id: &str, holder: &str) -> Claim {
        Claim {
            id: task_id.to_string(),
            repo: self.repo.clone(),
            writes: self.writes.clone(),
            reads: self.reads.clone(),
            holder: holder.to_string(),
            task_id: Some(task_id.to_string()),
            expires_at: None,
        }
    }
}

/// Who a waiting task waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeHolder {
    pub task_id: Option<String>,
    pub claim_id: String,
    pub agent_id: String,
}

/// What a released claim leaves to do: the tasks that waited for it (to offer
/// again) and the direct reservations that ended with it (to delete).
#[derive(Default)]
pub(super) struct Freed {
    pub(super) waiters: Vec<String>,
    pub(super) ended: Vec<Reservation>,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Scopes {
    compiled: HashMap<String, Arc<TaskScope>>,
    claims: Reservations,
    /// Direct reservations by id (their claims are in `claims`).
    direct: HashMap<String, Reservation>,
    /// Waiting task → the claim it waits for.
    waiting: HashMap<String, ScopeHolder>,
    /// Claim → the tasks waiting for it.
    waiters: HashMap<String, BTreeSet<String>>,
}

impl Scopes {
    pub(super) fn clear(&mut self) {
        *self = Scopes::default();
    }

    /// Keeps the compiled scope of a live task (compiling it from `task`).
    pub(super) fn track(&mut self, task: &Task) {
        self.track_parts(
            &task.id,
            task.repo.as_deref(),
            &task.write_paths,
            &task.read_paths,
        );
    }

    /// [`Scopes::track`] from a task's scope fields.
    pub(super) fn track_parts(
        &mut self,
        task_id: &str,
        repo: Option<&str>,
        write_paths: &[String],
        read_paths: &[String],
    ) {
        if self.compiled.contains_key(task_id) {
            return;
        }
        let compiled = TaskScope::of(repo, write_paths, read_paths).unwrap_or_else(|(field, e)| {
            // Validated at submit; a record that no longer compiles covers
            // everything (conservative).
            tracing::error!(task_id, field, error = %e, "stored scope does not compile");
            Some(TaskScope {
                repo: repo.unwrap_or_default().to_string(),
                writes: Scope::everything(),
                reads: Scope::everything(),
            })
        });
        if let Some(c) = compiled {
            self.compiled.insert(task_id.to_string(), Arc::new(c));
        }
    }

    /// The scopes of live tasks as declared: (task id, repo, writes, reads).
    pub(super) fn declared(&self) -> Vec<(String, String, Vec<String>, Vec<String>)> {
        self.compiled
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.repo.clone(),
                    s.writes.globs().to_vec(),
                    s.reads.globs().to_vec(),
                )
            })
            .collect()
    }

    /// Keeps an already compiled scope (a new task's, compiled at submit).
    pub(super) fn track_compiled(&mut self, task_id: &str, scope: TaskScope) {
        self.compiled.insert(task_id.to_string(), Arc::new(scope));
    }

    /// The claim a queued task's scope conflicts with, if any.
    pub(super) fn conflict(&self, task_id: &str, now: i64) -> Option<ScopeHolder> {
        let scope = self.compiled.get(task_id)?;
        let probe = scope.claim(task_id, "");
        self.claims.conflict(&probe, now).map(|c| ScopeHolder {
            task_id: c.task_id.clone(),
            claim_id: c.id.clone(),
            agent_id: c.holder.clone(),
        })
    }

    /// Whether `claim_id` is a direct reservation (not a task's own claim).
    pub(super) fn is_reservation(&self, claim_id: &str) -> bool {
        self.direct.contains_key(claim_id)
    }

    // Direct reservations ----------------------------------------------------

    /// Grants `r` (its globs already compiled into `paths`) unless a live claim
    /// conflicts: then answers who holds it.
    pub(super) fn reserve(
        &mut self,
        r: Reservation,
        paths: Scope,
        now: i64,
    ) -> Result<(), ScopeHolderInfo> {
        let claim = reservation_claim(&r, paths);
        match self.claims.grant(claim, now) {
            Ok(()) => {
                self.direct.insert(r.reservation_id.clone(), r);
                Ok(())
            }
            Err(held) => Err(self.holder_info(&held)),
        }
    }

    /// Puts back a stored reservation at start, whatever it overlaps (it was
    /// granted when it was made).
    pub(super) fn restore(&mut self, r: Reservation, paths: Scope) {
        self.claims.insert(reservation_claim(&r, paths));
        self.direct.insert(r.reservation_id.clone(), r);
    }

    /// The live reservation `id`.
    pub(super) fn reservation(&self, id: &str, now: i64) -> Option<&Reservation> {
        self.claims.get(id, now)?;
        self.direct.get(id)
    }

    /// How many live reservations `holder` has.
    pub(super) fn held_by(&self, holder: &str, now: i64) -> usize {
        self.direct
            .values()
            .filter(|r| r.holder == holder && r.expires_at > now)
            .count()
    }

    /// Moves a live reservation's expiry; answers it.
    pub(super) fn renew(&mut self, id: &str, expires_at: i64, now: i64) -> Option<Reservation> {
        if !self.claims.renew(id, Some(expires_at), now) {
            return None;
        }
        let r = self.direct.get_mut(id)?;
        r.expires_at = expires_at;
        Some(r.clone())
    }

    /// Drops the reservation `id`.
    pub(super) fn release_reservation(&mut self, id: &str) -> Freed {
        let mut freed = Freed::default();
        if let Some(claim) = self.claims.release(id) {
            self.freed_claim(&claim, &mut freed);
        }
        freed
    }

    /// The earliest expiry of a reservation.
    pub(super) fn next_expiry(&self) -> Option<i64> {
        self.claims.next_expiry()
    }

    /// Drops the reservations that lapsed by `now`.
    pub(super) fn expire(&mut self, now: i64) -> Freed {
        let mut freed = Freed::default();
        for claim in self.claims.expire(now) {
            self.freed_claim(&claim, &mut freed);
        }
        freed
    }

    /// Every live claim, for listings: direct reservations and the claims of
    /// running tasks, by repository.
    pub(super) fn listing(&self, now: i64) -> Vec<serde_json::Value> {
        self.claims
            .list(now)
            .into_iter()
            .map(|c| match self.direct.get(&c.id) {
                Some(r) => {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    v["kind"] = "reservation".into();
                    v
                }
                None => serde_json::json!({
                    "kind": "task",
                    "task_id": c.task_id,
                    "repo": c.repo,
                    "paths": c.writes.globs(),
                    "read_paths": c.reads.globs(),
                    "holder": c.holder,
                }),
            })
            .collect()
    }

    fn holder_info(&self, held: &Claim) -> ScopeHolderInfo {
        ScopeHolderInfo {
            agent_id: held.holder.clone(),
            task_id: held.task_id.clone(),
            reservation_id: self.direct.contains_key(&held.id).then(|| held.id.clone()),
            repo: held.repo.clone(),
            paths: held
                .writes
                .globs()
                .iter()
                .chain(held.reads.globs())
                .cloned()
                .collect(),
        }
    }

    fn freed_claim(&mut self, claim: &Claim, freed: &mut Freed) {
        if let Some(w) = self.waiters.remove(&claim.id) {
            for t in &w {
                self.waiting.remove(t);
            }
            freed.waiters.extend(w);
        }
        if let Some(r) = self.direct.remove(&claim.id) {
            freed.ended.push(r);
        }
    }

    /// `task_id` waits for `holder`; answers whether this is new (to record).
    pub(super) fn wait(&mut self, task_id: &str, holder: ScopeHolder) -> bool {
        let claim = holder.claim_id.clone();
        let previous = self.waiting.insert(task_id.to_string(), holder.clone());
        if let Some(p) = &previous {
            if let Some(w) = self.waiters.get_mut(&p.claim_id) {
                w.remove(task_id);
            }
        }
        self.waiters
            .entry(claim)
            .or_default()
            .insert(task_id.to_string());
        previous.as_ref() != Some(&holder)
    }

    pub(super) fn waiting_on(&self, task_id: &str) -> Option<&ScopeHolder> {
        self.waiting.get(task_id)
    }

    /// The assignment of `task_id` to `agent` takes its claim.
    pub(super) fn take(&mut self, task_id: &str, agent: &str, now: i64) {
        self.stop_waiting(task_id);
        if let Some(scope) = self.compiled.get(task_id) {
            let claim = scope.claim(task_id, agent);
            if let Err(held) = self.claims.grant(claim, now) {
                // Checked just before; only a broken invariant lands here.
                tracing::error!(task_id, holder = %held.id, "scope claimed over a conflicting claim");
            }
        }
    }

    /// The repository of `task_id`'s scope.
    pub(super) fn repo_of(&self, task_id: &str) -> Option<String> {
        self.compiled.get(task_id).map(|s| s.repo.clone())
    }

    /// The live tasks with a scope in `repo` (other than `except`) that wait
    /// for nothing (candidates to wait for a new claim there).
    pub(super) fn unhindered_in(&self, repo: &str, except: &str) -> Vec<String> {
        self.compiled
            .iter()
            .filter(|(id, s)| {
                id.as_str() != except && s.repo == repo && !self.waiting.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The task no longer runs: its claim goes, and every reservation made for
    /// it.
    pub(super) fn release(&mut self, task_id: &str) -> Freed {
        let mut freed = Freed::default();
        for claim in self.claims.release_task(task_id) {
            self.freed_claim(&claim, &mut freed);
        }
        freed
    }

    /// The task is finished: nothing of it is kept.
    pub(super) fn forget(&mut self, task_id: &str) -> Freed {
        self.stop_waiting(task_id);
        self.compiled.remove(task_id);
        self.release(task_id)
    }

    fn stop_waiting(&mut self, task_id: &str) {
        if let Some(h) = self.waiting.remove(task_id) {
            if let Some(w) = self.waiters.get_mut(&h.claim_id) {
                w.remove(task_id);
                if w.is_empty() {
                    self.waiters.remove(&h.claim_id);
                }
            }
        }
    }
}

/// The claim of a direct reservation: exclusive writes its paths, shared reads
/// them.
fn reservation_claim(r: &Reservation, paths: Scope) -> Claim {
    let (writes, reads) = match r.mode {
        ReserveMode::Exclusive => (paths, Scope::nothing()),
        ReserveMode::Shared => (Scope::nothing(), paths),
    };
    Claim {
        id: r.reservation_id.clone(),
        repo: r.repo.clone(),
        writes,
        reads,
        holder: r.holder.clone(),
        task_id: r.task_id.clone(),
        expires_at: Some(r.expires_at),
    }
}
