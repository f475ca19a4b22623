//! Write scopes in the queue: the claims on repository paths (every assigned
//! task that declares a scope, and every direct reservation) and which queued
//! tasks they keep back.
//!
//! - Live tasks with the same scope (repository, write globs, read globs) share
//!   one *group*, compiled once. A group is *held* while a live claim conflicts
//!   with it: the scheduler then keeps every queued task of the group back (the
//!   hold `scope:<group>`), and a task's `waiting_on_scope` names that claim's
//!   holder. A hold is released the moment no live claim conflicts any more (the
//!   holder completed, failed, was reclaimed, blocked or cancelled, or the
//!   reservation was released or lapsed); the group's tasks are then served.
//! - The queue takes a task's claim when it assigns it (refused `scope_busy`
//!   while its group is held); a reservation is granted only when no live claim
//!   conflicts with it.
//! - Cost: the groups a group conflicts with are found once, the first time
//!   it is claimed (one overlap test per group of its repository), and kept up
//!   to date as groups come and go (a new scope is tested against the groups
//!   whose lists are known). A claim then visits only the groups it conflicts
//!   with, a released one the groups it held times the claims of the
//!   repository, and a task's offer visits none: nothing here grows with the
//!   number of queued tasks. `ops` counts the visits (the tests bound them).
//! - Direct reservations (`scope_reserve`, `/api/reservations`) are claims with
//!   an expiry, kept here as their records (the queue stores them in `meta`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use crate::domain::matching::HoldId;
use crate::domain::reservations::{Claim, Reservations};
use crate::domain::scopes::{Scope, ScopeError};
use crate::domain::task::Task;
use crate::protocol::{Reservation, ReserveMode, ScopeHolderInfo};

/// A compiled scope.
#[derive(Debug)]
pub(super) struct TaskScope {
    pub(super) repo: String,
    pub(super) writes: Scope,
    pub(super) reads: Scope,
}

/// What identifies a group: (repo, writes, reads) as declared.
type GroupKey = (String, Vec<String>, Vec<String>);
type GroupId = u64;

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

    fn key(&self) -> GroupKey {
        (
            self.repo.clone(),
            self.writes.globs().to_vec(),
            self.reads.globs().to_vec(),
        )
    }

    /// Whether two scopes may not be claimed at once.
    fn conflicts(&self, other: &TaskScope) -> bool {
        self.repo == other.repo
            && (self.writes.overlaps(&other.writes)
                || self.writes.overlaps(&other.reads)
                || self.reads.overlaps(&other.writes))
    }
}

/// Who a held task waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeHolder {
    pub task_id: Option<String>,
    pub claim_id: String,
    pub agent_id: String,
}

/// What a released claim leaves to do: the reservations that ended with it
/// (to delete).
#[derive(Default)]
pub(super) struct Freed {
    pub(super) ended: Vec<Reservation>,
}

struct Group {
    scope: Arc<TaskScope>,
    /// Live tasks and reservations using it.
    users: usize,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Scopes {
    groups: HashMap<GroupId, Group>,
    group_ids: HashMap<GroupKey, GroupId>,
    next_group: GroupId,
    by_repo: HashMap<String, HashSet<GroupId>>,
    /// Live task → its group.
    task_group: HashMap<String, GroupId>,
    claims: Reservations,
    /// Claim id → its group.
    claim_group: HashMap<String, GroupId>,
    /// Direct reservations by id (their claims are in `claims`).
    direct: HashMap<String, Reservation>,
    /// Held group → the claim holding it; claim → the groups it holds.
    held_by: HashMap<GroupId, String>,
    holding: HashMap<String, HashSet<GroupId>>,
    /// The groups a group conflicts with (itself included when it writes),
    /// for the groups claimed at least once.
    adj: AHashMap<GroupId, AHashSet<GroupId>>,
    /// Held tasks whose wait is recorded already.
    recorded: HashSet<String>,
    /// Holds taken (`true`) and released, in order, for the scheduler.
    pub(super) changes: Vec<(HoldId, bool)>,
    ops: u64,
}

/// The scheduler's name of a group's hold.
pub(super) fn hold_of(group: GroupId) -> HoldId {
    format!("scope:{group}").into()
}

impl Scopes {
    /// Forgets everything but the group numbering: a group made after a
    /// reload never reuses the number (the scheduler's hold name) of one
    /// before it.
    pub(super) fn clear(&mut self) {
        let next_group = self.next_group;
        *self = Scopes::default();
        self.next_group = next_group;
    }

    /// Visits so far (for the tests that bound the work).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests only"))]
    pub(super) fn ops(&self) -> u64 {
        self.ops
    }

    /// The compiled scope of (repo, writes, reads): a live group's, or compiled
    /// now. Answers the field whose glob does not compile.
    pub(super) fn compile(
        &self,
        repo: Option<&str>,
        write_paths: &[String],
        read_paths: &[String],
    ) -> Result<Option<Arc<TaskScope>>, (&'static str, ScopeError)> {
        if let Some(repo) = repo {
            let key = (repo.to_string(), write_paths.to_vec(), read_paths.to_vec());
            if let Some(g) = self.group_ids.get(&key).and_then(|id| self.groups.get(id)) {
                return Ok(Some(g.scope.clone()));
            }
        }
        TaskScope::of(repo, write_paths, read_paths).map(|s| s.map(Arc::new))
    }

    /// Keeps the scope of a live task (compiling it from `task`).
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
        if self.task_group.contains_key(task_id) {
            return;
        }
        let compiled = self
            .compile(repo, write_paths, read_paths)
            .unwrap_or_else(|(field, e)| {
                // Validated at submit; a record that no longer compiles covers
                // everything (conservative).
                tracing::error!(task_id, field, error = %e, "stored scope does not compile");
                Some(Arc::new(TaskScope {
                    repo: repo.unwrap_or_default().to_string(),
                    writes: Scope::everything(),
                    reads: Scope::everything(),
                }))
            });
        if let Some(scope) = compiled {
            self.track_compiled(task_id, scope);
        }
    }

    /// Keeps an already compiled scope (a new task's, compiled at submit).
    pub(super) fn track_compiled(&mut self, task_id: &str, scope: Arc<TaskScope>) {
        if self.task_group.contains_key(task_id) {
            return;
        }
        let group = self.join(scope);
        self.task_group.insert(task_id.to_string(), group);
    }

    /// The group of `scope` (made, and held if a live claim conflicts), with one
    /// more user.
    fn join(&mut self, scope: Arc<TaskScope>) -> GroupId {
        let key = scope.key();
        if let Some(id) = self.group_ids.get(&key).copied() {
            if let Some(g) = self.groups.get_mut(&id) {
                g.users += 1;
            }
            return id;
        }
        let id = self.next_group;
        self.next_group += 1;
        let repo = scope.repo.clone();
        self.groups.insert(id, Group { scope, users: 1 });
        self.group_ids.insert(key, id);
        self.by_repo.entry(repo.clone()).or_default().insert(id);
        // Known conflict lists learn of the new group.
        let known: Vec<GroupId> = self
            .by_repo
            .get(&repo)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|g| self.adj.contains_key(g))
                    .collect()
            })
            .unwrap_or_default();
        for other in known {
            self.ops += 1;
            if self.scopes_conflict(id, other) {
                if let Some(set) = self.adj.get_mut(&other) {
                    set.insert(id);
                }
            }
        }
        if let Some(claim) = self.conflicting_claim(&repo, id, None) {
            self.hold_group(id, claim);
        }
        id
    }

    /// One user fewer; a group nobody uses goes (its hold released).
    fn leave(&mut self, group: GroupId) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        g.users = g.users.saturating_sub(1);
        if g.users > 0 {
            return;
        }
        let Some(g) = self.groups.remove(&group) else {
            return;
        };
        self.group_ids.remove(&g.scope.key());
        self.adj.remove(&group);
        let known: Vec<GroupId> = self
            .by_repo
            .get(&g.scope.repo)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for other in known {
            if let Some(set) = self.adj.get_mut(&other) {
                set.remove(&group);
            }
        }
        if let Some(set) = self.by_repo.get_mut(&g.scope.repo) {
            set.remove(&group);
            if set.is_empty() {
                self.by_repo.remove(&g.scope.repo);
            }
        }
        if let Some(claim) = self.held_by.remove(&group) {
            if let Some(set) = self.holding.get_mut(&claim) {
                set.remove(&group);
            }
            self.changes.push((hold_of(group), false));
        }
    }

    /// The scope groups of live tasks as declared: (task id, repo, writes,
    /// reads), for the checkpoint.
    pub(super) fn declared(&self) -> Vec<(String, String, Vec<String>, Vec<String>)> {
        self.task_group
            .iter()
            .filter_map(|(id, g)| {
                let s = &self.groups.get(g)?.scope;
                Some((
                    id.clone(),
                    s.repo.clone(),
                    s.writes.globs().to_vec(),
                    s.reads.globs().to_vec(),
                ))
            })
            .collect()
    }

    /// Whether `task_id` declares a scope.
    pub(super) fn is_scoped(&self, task_id: &str) -> bool {
        self.task_group.contains_key(task_id)
    }

    /// The hold a task carries to the scheduler (its group's), if it has a scope.
    pub(super) fn hold_for(&self, task_id: &str) -> Option<HoldId> {
        self.task_group.get(task_id).map(|g| hold_of(*g))
    }

    /// Every held group's hold (what the scheduler must know at start).
    pub(super) fn held(&self) -> Vec<HoldId> {
        self.held_by.keys().map(|g| hold_of(*g)).collect()
    }

    /// Who holds `task_id`'s scope, if its group is held.
    pub(super) fn conflict(&self, task_id: &str) -> Option<ScopeHolder> {
        let group = self.task_group.get(task_id)?;
        let claim_id = self.held_by.get(group)?;
        let claim = self.claims.get(claim_id, i64::MIN)?;
        Some(ScopeHolder {
            task_id: claim.task_id.clone(),
            claim_id: claim.id.clone(),
            agent_id: claim.holder.clone(),
        })
    }

    /// The first time a held task is seen waiting: true (to record it).
    pub(super) fn first_wait(&mut self, task_id: &str) -> bool {
        self.recorded.insert(task_id.to_string())
    }

    /// Whether `claim_id` is a direct reservation (not a task's own claim).
    pub(super) fn is_reservation(&self, claim_id: &str) -> bool {
        self.direct.contains_key(claim_id)
    }

    /// The assignment of `task_id` to `agent` takes its claim; answers the groups
    /// it now holds (for the event log).
    pub(super) fn take(&mut self, task_id: &str, agent: &str) -> Vec<GroupId> {
        self.recorded.remove(task_id);
        let Some(group) = self.task_group.get(task_id).copied() else {
            return Vec::new();
        };
        let Some(g) = self.groups.get(&group) else {
            return Vec::new();
        };
        let claim = claim_of(&g.scope, task_id, agent, Some(task_id), None);
        self.claim_group.insert(task_id.to_string(), group);
        self.claims.insert(claim);
        self.hold_conflicting(task_id, group)
    }

    /// A new claim `claim_id` of `group`: every unheld group of its repository
    /// that conflicts with it is held by it.
    fn hold_conflicting(&mut self, claim_id: &str, group: GroupId) -> Vec<GroupId> {
        let others: Vec<GroupId> = self.neighbours(group).iter().copied().collect();
        let mut held = Vec::new();
        for other in others {
            self.ops += 1;
            if !self.held_by.contains_key(&other) {
                self.hold_group(other, claim_id.to_string());
                held.push(other);
            }
        }
        held
    }

    fn hold_group(&mut self, group: GroupId, claim: String) {
        self.holding.entry(claim.clone()).or_default().insert(group);
        self.held_by.insert(group, claim);
        self.changes.push((hold_of(group), true));
    }

    /// A live claim of `repo` (other than `except`) that conflicts with `group`.
    fn conflicting_claim(
        &mut self,
        repo: &str,
        group: GroupId,
        except: Option<&str>,
    ) -> Option<String> {
        let candidates: Vec<(String, GroupId)> = self
            .claims
            .in_repo(repo)
            .filter(|c| Some(c.id.as_str()) != except)
            .filter_map(|c| Some((c.id.clone(), *self.claim_group.get(&c.id)?)))
            .collect();
        for (claim, claim_group) in candidates {
            self.ops += 1;
            if self.groups_conflict(claim_group, group) {
                return Some(claim);
            }
        }
        None
    }

    /// Whether two groups conflict.
    fn groups_conflict(&mut self, a: GroupId, b: GroupId) -> bool {
        self.neighbours(a).contains(&b)
    }

    /// The groups `group` conflicts with, found the first time they are asked
    /// for (one overlap test per group of its repository).
    fn neighbours(&mut self, group: GroupId) -> &AHashSet<GroupId> {
        if !self.adj.contains_key(&group) {
            let repo = self.groups.get(&group).map(|g| g.scope.repo.clone());
            let others: Vec<GroupId> = repo
                .and_then(|r| self.by_repo.get(&r))
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            let mut set = AHashSet::new();
            for other in others {
                self.ops += 1;
                if self.scopes_conflict(group, other) {
                    set.insert(other);
                }
            }
            self.adj.insert(group, set);
        }
        self.adj.entry(group).or_default()
    }

    /// The overlap test of two groups' scopes.
    fn scopes_conflict(&self, a: GroupId, b: GroupId) -> bool {
        match (self.groups.get(&a), self.groups.get(&b)) {
            (Some(x), Some(y)) => x.scope.conflicts(&y.scope),
            _ => false,
        }
    }

    /// The claim `claim_id` is gone: each group it held is held by another live
    /// claim that conflicts with it, or released.
    fn drop_claim(&mut self, claim: &Claim, freed: &mut Freed) {
        let group = self.claim_group.remove(&claim.id);
        for g in self.holding.remove(&claim.id).unwrap_or_default() {
            self.held_by.remove(&g);
            match self.conflicting_claim(&claim.repo, g, Some(&claim.id)) {
                Some(other) => {
                    self.holding.entry(other.clone()).or_default().insert(g);
                    self.held_by.insert(g, other);
                }
                None => self.changes.push((hold_of(g), false)),
            }
        }
        if let Some(r) = self.direct.remove(&claim.id) {
            if let Some(g) = group {
                self.leave(g);
            }
            freed.ended.push(r);
        }
    }

    /// The task no longer runs: its claim goes, and every reservation made for
    /// it.
    pub(super) fn release(&mut self, task_id: &str) -> Freed {
        let mut freed = Freed::default();
        for claim in self.claims.release_task(task_id) {
            self.drop_claim(&claim, &mut freed);
        }
        freed
    }

    /// The task is finished: nothing of it is kept.
    pub(super) fn forget(&mut self, task_id: &str) -> Freed {
        let freed = self.release(task_id);
        self.recorded.remove(task_id);
        if let Some(group) = self.task_group.remove(task_id) {
            self.leave(group);
        }
        freed
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
        let group = self.join(reservation_scope(&r, paths));
        let conflict = self
            .claims
            .in_repo(&r.repo)
            .filter(|c| c.expires_at.is_none_or(|at| at > now))
            .filter(|c| !(c.task_id.is_some() && c.task_id == r.task_id))
            .map(|c| (c.id.clone(), self.claim_group.get(&c.id).copied()))
            .collect::<Vec<_>>()
            .into_iter()
            .find(|(_, g)| {
                self.ops += 1;
                g.is_some_and(|g| self.groups_conflict(g, group))
            });
        if let Some((claim_id, _)) = conflict {
            let info = self
                .claims
                .get(&claim_id, i64::MIN)
                .map(|c| self.holder_info(c));
            self.leave(group);
            if let Some(info) = info {
                return Err(info);
            }
        }
        self.install(r, group);
        Ok(())
    }

    /// Puts back a stored reservation at start, whatever it overlaps (it was
    /// granted when it was made).
    pub(super) fn restore(&mut self, r: Reservation, paths: Scope) {
        let group = self.join(reservation_scope(&r, paths));
        self.install(r, group);
    }

    fn install(&mut self, r: Reservation, group: GroupId) {
        let Some(g) = self.groups.get(&group) else {
            return;
        };
        let claim = claim_of(
            &g.scope,
            &r.reservation_id,
            &r.holder,
            r.task_id.as_deref(),
            Some(r.expires_at),
        );
        self.claim_group.insert(r.reservation_id.clone(), group);
        self.claims.insert(claim);
        self.hold_conflicting(&r.reservation_id, group);
        self.direct.insert(r.reservation_id.clone(), r);
    }

    /// The live reservation `id`.
    pub(super) fn reservation(&self, id: &str, now: i64) -> Option<&Reservation> {
        self.claims.get(id, now)?;
        self.direct.get(id)
    }

    /// How many live reservations `holder` has.
    pub(super) fn reservations_of(&self, holder: &str, now: i64) -> usize {
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
            self.drop_claim(&claim, &mut freed);
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
            self.drop_claim(&claim, &mut freed);
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

    /// Who holds a claim, as answered to a refused reservation.
    pub(super) fn holder_info(&self, held: &Claim) -> ScopeHolderInfo {
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

    /// How many groups are held (for tests).
    #[cfg(test)]
    fn held_groups(&self) -> usize {
        self.held_by.len()
    }
}

fn claim_of(
    scope: &TaskScope,
    id: &str,
    holder: &str,
    task_id: Option<&str>,
    expires_at: Option<i64>,
) -> Claim {
    Claim {
        id: id.to_string(),
        repo: scope.repo.clone(),
        writes: scope.writes.clone(),
        reads: scope.reads.clone(),
        holder: holder.to_string(),
        task_id: task_id.map(str::to_string),
        expires_at,
    }
}

/// The scope of a direct reservation: exclusive writes its paths, shared reads
/// them.
fn reservation_scope(r: &Reservation, paths: Scope) -> Arc<TaskScope> {
    let (writes, reads) = match r.mode {
        ReserveMode::Exclusive => (paths, Scope::nothing()),
        ReserveMode::Shared => (Scope::nothing(), paths),
    };
    Arc::new(TaskScope {
        repo: r.repo.clone(),
        writes,
        reads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<String> {
        list.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn a_claim_holds_the_groups_it_conflicts_with_and_its_end_releases_them() {
        let mut s = Scopes::default();
        s.track_parts("api", Some("web"), &globs(&["src/api/**"]), &[]);
        s.track_parts("handler", Some("web"), &globs(&["src/api/h.rs"]), &[]);
        s.track_parts("docs", Some("web"), &globs(&["docs/**"]), &[]);
        s.track_parts("other", Some("cli"), &globs(&["src/api/**"]), &[]);
        let held = s.take("api", "a1");
        assert_eq!(held.len(), 2, "its own group and the handler's");
        assert_eq!(
            s.conflict("handler").map(|h| h.task_id),
            Some(Some("api".into()))
        );
        assert!(s.conflict("docs").is_none());
        assert!(s.conflict("other").is_none());
        assert_eq!(s.changes.iter().filter(|(_, held)| *held).count(), 2);
        s.forget("api");
        assert!(s.conflict("handler").is_none());
        assert_eq!(s.changes.iter().filter(|(_, held)| !*held).count(), 2);
        assert_eq!(s.held_groups(), 0);
        // A reload never reuses a group's number (the scheduler's hold name).
        let used = s.next_group;
        s.clear();
        s.track_parts("z", Some("web"), &globs(&["a/**"]), &[]);
        assert_eq!(s.hold_for("z"), Some(hold_of(used)));
    }

    #[test]
    fn writes_conflict_with_writes_and_reads_but_reads_share() {
        let scope = |w: &[&str], r: &[&str]| {
            TaskScope::of(Some("web"), &globs(w), &globs(r))
                .expect("valid")
                .expect("a scope")
        };
        let api = scope(&["src/api/**"], &["docs/**"]);
        assert!(
            api.conflicts(&scope(&["src/api/x.rs"], &[])),
            "write over write"
        );
        assert!(
            api.conflicts(&scope(&["docs/intro.md"], &[])),
            "a write over a read"
        );
        assert!(
            api.conflicts(&scope(&[], &["src/api/**"])),
            "a read over a write"
        );
        assert!(!api.conflicts(&scope(&[], &["docs/**"])), "reads share");
        assert!(!api.conflicts(&scope(&["src/web/**"], &[])), "disjoint");
        let other = TaskScope::of(Some("cli"), &globs(&["src/api/**"]), &[])
            .expect("valid")
            .expect("a scope");
        assert!(!api.conflicts(&other), "another repository");
    }

    #[test]
    fn work_per_event_grows_with_groups_not_tasks() {
        // 100,000 queued tasks across 1,000 scopes in 10 repositories.
        let mut s = Scopes::default();
        for i in 0..100_000u32 {
            let scope = i % 1000;
            let repo = format!("repo{}", scope % 10);
            let w = globs(&[&format!("mod{scope}/**")]);
            s.track_parts(&format!("t{i}"), Some(&repo), &w, &[]);
        }
        assert_eq!(s.groups.len(), 1000, "one compiled scope per group");
        let before = s.ops();
        s.take("t0", "agent");
        let assign = s.ops() - before;
        // One visit per group of the repository (100), not per task (10,000).
        assert!(assign <= 110, "{assign} visits to assign");
        let before = s.ops();
        s.forget("t0");
        let finish = s.ops() - before;
        assert!(finish <= 10, "{finish} visits to finish");
        // The group's next claim visits only the groups it conflicts with.
        let before = s.ops();
        s.take("t1000", "agent");
        let again = s.ops() - before;
        assert!(again <= 3, "{again} visits for a group claimed before");
        let before = s.ops();
        s.track_parts("late", Some("repo3"), &globs(&["mod3/**"]), &[]);
        assert!(
            s.ops() - before <= 2,
            "a task of a known scope costs nothing"
        );
    }
}
