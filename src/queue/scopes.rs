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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::reservations::{Claim, Reservations};
use crate::domain::scopes::{Scope, ScopeError};
use crate::domain::task::Task;

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

/// See the module documentation.
#[derive(Default)]
pub(super) struct Scopes {
    compiled: HashMap<String, Arc<TaskScope>>,
    claims: Reservations,
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

    /// The other live tasks with a scope in `task_id`'s repository that wait
    /// for nothing (candidates to wait for its new claim).
    pub(super) fn unhindered_neighbours(&self, task_id: &str) -> Vec<String> {
        let Some(mine) = self.compiled.get(task_id) else {
            return Vec::new();
        };
        self.compiled
            .iter()
            .filter(|(id, s)| {
                id.as_str() != task_id && s.repo == mine.repo && !self.waiting.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The task no longer runs: its claim goes. Answers the tasks that waited
    /// for it (to offer again).
    pub(super) fn release(&mut self, task_id: &str) -> Vec<String> {
        self.claims.release_task(task_id);
        let waiters = self.waiters.remove(task_id).unwrap_or_default();
        for w in &waiters {
            self.waiting.remove(w);
        }
        waiters.into_iter().collect()
    }

    /// The task is finished: nothing of it is kept.
    pub(super) fn forget(&mut self, task_id: &str) -> Vec<String> {
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
