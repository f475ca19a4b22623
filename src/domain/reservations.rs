//! Who holds which paths of which repository: the claims of running tasks and
//! agents' direct reservations, and the conflict rule between two claims.
//!
//! A claim writes some paths and reads others (a direct reservation is
//! exclusive: it writes, or shared: it reads). Two claims on the same
//! repository conflict when one's writes can overlap the other's writes or
//! reads; reads never conflict with reads. A claim with an expiry stops
//! counting at that time (`expire` drops it).
//!
//! A check costs one overlap test per live claim on the same repository, and
//! claims on a repository are at most its running tasks and reservations.
//!
//! Architecture invariant: pure data; the caller passes `now`; no I/O, no actor.

use std::collections::HashMap;

use super::scopes::Scope;

/// One claim (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    /// Unique among live claims: a task's id, or a reservation's id.
    pub id: String,
    pub repo: String,
    pub writes: Scope,
    pub reads: Scope,
    /// The agent holding it.
    pub holder: String,
    /// The task it is for (released with the task).
    pub task_id: Option<String>,
    /// When it lapses (ms); `None`: held until released.
    pub expires_at: Option<i64>,
}

impl Claim {
    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// Both are for one task (its own claim and a reservation made for it):
    /// they never conflict.
    fn same_task(&self, other: &Claim) -> bool {
        self.task_id.is_some() && self.task_id == other.task_id
    }

    /// Whether the two claims may not be held at once.
    pub(crate) fn conflicts_with(&self, other: &Claim) -> bool {
        self.repo == other.repo
            && (self.writes.overlaps(&other.writes)
                || self.writes.overlaps(&other.reads)
                || self.reads.overlaps(&other.writes))
    }
}

/// The live claims, by repository.
#[derive(Default, Debug)]
pub(crate) struct Reservations {
    by_repo: HashMap<String, Vec<Claim>>,
}

impl Reservations {
    /// The first live claim (other than one with the same id) that `claim`
    /// conflicts with.
    pub(crate) fn conflict(&self, claim: &Claim, now: i64) -> Option<&Claim> {
        self.by_repo.get(&claim.repo)?.iter().find(|held| {
            held.id != claim.id
                && !held.same_task(claim)
                && held.live(now)
                && held.conflicts_with(claim)
        })
    }

    /// Takes `claim` unless it conflicts with a live one (answered instead). A
    /// claim with the same id is replaced.
    pub(crate) fn grant(&mut self, claim: Claim, now: i64) -> Result<(), Box<Claim>> {
        if let Some(held) = self.conflict(&claim, now) {
            return Err(Box::new(held.clone()));
        }
        let claims = self.by_repo.entry(claim.repo.clone()).or_default();
        claims.retain(|c| c.id != claim.id);
        claims.push(claim);
        Ok(())
    }

    /// Puts `claim` in place without a check (one granted before a restart).
    pub(crate) fn insert(&mut self, claim: Claim) {
        let claims = self.by_repo.entry(claim.repo.clone()).or_default();
        claims.retain(|c| c.id != claim.id);
        claims.push(claim);
    }

    /// Moves the expiry of a live claim; false when there is none by that id.
    pub(crate) fn renew(&mut self, id: &str, expires_at: Option<i64>, now: i64) -> bool {
        match self
            .by_repo
            .values_mut()
            .flat_map(|c| c.iter_mut())
            .find(|c| c.id == id && c.live(now))
        {
            Some(c) => {
                c.expires_at = expires_at;
                true
            }
            None => false,
        }
    }

    /// Drops the claim `id` (and answers it).
    pub(crate) fn release(&mut self, id: &str) -> Option<Claim> {
        let mut found = None;
        for claims in self.by_repo.values_mut() {
            if let Some(at) = claims.iter().position(|c| c.id == id) {
                found = Some(claims.swap_remove(at));
                break;
            }
        }
        self.by_repo.retain(|_, c| !c.is_empty());
        found
    }

    /// Drops every claim made for `task_id`.
    pub(crate) fn release_task(&mut self, task_id: &str) -> Vec<Claim> {
        self.take_where(|c| c.task_id.as_deref() == Some(task_id))
    }

    /// Drops the claims that lapsed by `now`.
    pub(crate) fn expire(&mut self, now: i64) -> Vec<Claim> {
        self.take_where(|c| !c.live(now))
    }

    /// The earliest expiry of a claim.
    pub(crate) fn next_expiry(&self) -> Option<i64> {
        self.by_repo
            .values()
            .flatten()
            .filter_map(|c| c.expires_at)
            .min()
    }

    /// The live claim `id`.
    pub(crate) fn get(&self, id: &str, now: i64) -> Option<&Claim> {
        self.by_repo
            .values()
            .flatten()
            .find(|c| c.id == id && c.live(now))
    }

    /// Every live claim, by repository then id.
    pub(crate) fn list(&self, now: i64) -> Vec<&Claim> {
        let mut all: Vec<&Claim> = self
            .by_repo
            .values()
            .flatten()
            .filter(|c| c.live(now))
            .collect();
        all.sort_by(|a, b| (&a.repo, &a.id).cmp(&(&b.repo, &b.id)));
        all
    }

    fn take_where(&mut self, pick: impl Fn(&Claim) -> bool) -> Vec<Claim> {
        let mut taken = Vec::new();
        for claims in self.by_repo.values_mut() {
            let (out, keep): (Vec<Claim>, Vec<Claim>) =
                std::mem::take(claims).into_iter().partition(|c| pick(c));
            *claims = keep;
            taken.extend(out);
        }
        self.by_repo.retain(|_, c| !c.is_empty());
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(globs: &[&str]) -> Scope {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        Scope::parse(&globs).expect("valid globs")
    }

    fn claim(id: &str, repo: &str, writes: &[&str], reads: &[&str]) -> Claim {
        Claim {
            id: id.into(),
            repo: repo.into(),
            writes: scope(writes),
            reads: scope(reads),
            holder: format!("agent-{id}"),
            task_id: Some(format!("task-{id}")),
            expires_at: None,
        }
    }

    #[test]
    fn writes_conflict_with_writes_and_reads_but_reads_share() {
        let mut r = Reservations::default();
        assert!(r
            .grant(claim("a", "web", &["src/api/**"], &["docs/**"]), 0)
            .is_ok());
        let held = r
            .grant(claim("b", "web", &["src/api/x.rs"], &[]), 0)
            .expect_err("write over write");
        assert_eq!(held.id, "a");
        assert_eq!(
            r.grant(claim("c", "web", &["docs/intro.md"], &[]), 0)
                .map_err(|c| c.id),
            Err("a".into()),
            "a write over a held read"
        );
        assert!(
            r.grant(claim("d", "web", &[], &["src/api/**"]), 0).is_err(),
            "a read over a held write"
        );
        assert!(
            r.grant(claim("e", "web", &[], &["docs/**"]), 0).is_ok(),
            "reads share"
        );
        assert!(
            r.grant(claim("f", "web", &["src/web/**"], &[]), 0).is_ok(),
            "disjoint"
        );
        assert!(
            r.grant(claim("g", "cli", &["src/api/**"], &[]), 0).is_ok(),
            "another repository"
        );
        assert_eq!(r.list(0).len(), 4);
    }

    #[test]
    fn releasing_a_task_or_an_expiry_frees_its_paths() {
        let mut r = Reservations::default();
        let mut timed = claim("t", "web", &["infra/**"], &[]);
        timed.task_id = None;
        timed.expires_at = Some(100);
        assert!(r.grant(timed, 0).is_ok());
        assert!(r.grant(claim("a", "web", &["src/**"], &[]), 0).is_ok());
        assert!(r
            .grant(claim("b", "web", &["infra/x.tf"], &[]), 50)
            .is_err());
        assert!(r.renew("t", Some(200), 50));
        assert!(
            r.grant(claim("b", "web", &["infra/x.tf"], &[]), 150)
                .is_err(),
            "renewed"
        );
        // Lapsed at 200: no longer in the way, then dropped by `expire`.
        assert!(r
            .conflict(&claim("b", "web", &["infra/x.tf"], &[]), 200)
            .is_none());
        assert_eq!(r.expire(200).len(), 1);
        assert!(!r.renew("t", Some(300), 200), "gone");
        let released = r.release_task("task-a");
        assert_eq!(released.len(), 1);
        assert!(r
            .grant(claim("c", "web", &["src/main.rs"], &[]), 200)
            .is_ok());
        assert!(r.release("c").is_some());
        assert!(r.list(200).is_empty());
    }

    #[test]
    fn a_reservation_made_for_a_task_never_conflicts_with_its_own_claim() {
        let mut r = Reservations::default();
        assert!(r.grant(claim("a", "web", &["src/**"], &[]), 0).is_ok());
        let mut extra = claim("r1", "web", &["src/lib.rs", "/Cargo.toml"], &[]);
        extra.task_id = Some("task-a".into());
        extra.expires_at = Some(100);
        assert!(r.grant(extra, 0).is_ok(), "same task");
        assert_eq!(r.next_expiry(), Some(100));
        assert_eq!(r.get("r1", 0).map(|c| c.holder.as_str()), Some("agent-r1"));
        assert!(r.get("r1", 100).is_none(), "lapsed");
        let other = claim("b", "web", &["/Cargo.toml"], &[]);
        assert_eq!(r.conflict(&other, 0).map(|c| c.id.as_str()), Some("r1"));
        assert_eq!(r.release_task("task-a").len(), 2, "released with the task");
    }
}
