//! Who holds which paths of which repository: the claims of running tasks and
//! agents' direct reservations, by repository.
//!
//! A claim writes some paths and reads others (a direct reservation is
//! exclusive: it writes, or shared: it reads). A claim with an expiry stops
//! counting at that time (`get` and `list` pass over it; `expire` drops it).
//! Whether two claims conflict is the queue's (`queue::scopes`, decided once
//! per pair of scopes).
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
}

/// The live claims, by repository.
#[derive(Default, Debug)]
pub(crate) struct Reservations {
    by_repo: HashMap<String, Vec<Claim>>,
}

impl Reservations {
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

    /// Every claim on `repo` (lapsed ones too, until `expire` drops them).
    pub(crate) fn in_repo(&self, repo: &str) -> impl Iterator<Item = &Claim> {
        self.by_repo.get(repo).into_iter().flatten()
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

    fn claim(id: &str, repo: &str, writes: &[&str]) -> Claim {
        Claim {
            id: id.into(),
            repo: repo.into(),
            writes: scope(writes),
            reads: scope(&[]),
            holder: format!("agent-{id}"),
            task_id: Some(format!("task-{id}")),
            expires_at: None,
        }
    }

    #[test]
    fn claims_are_kept_by_repository_renewed_released_and_expired() {
        let mut r = Reservations::default();
        let mut timed = claim("t", "web", &["infra/**"]);
        timed.task_id = None;
        timed.expires_at = Some(100);
        r.insert(timed);
        r.insert(claim("a", "web", &["src/**"]));
        r.insert(claim("b", "cli", &["src/**"]));
        assert_eq!(r.in_repo("web").count(), 2);
        assert_eq!(r.next_expiry(), Some(100));
        assert!(r.renew("t", Some(200), 50));
        assert_eq!(r.get("t", 150).map(|c| c.holder.as_str()), Some("agent-t"));
        assert!(r.get("t", 200).is_none(), "lapsed");
        assert_eq!(r.list(0).len(), 3);
        assert_eq!(r.expire(200).len(), 1);
        assert!(!r.renew("t", Some(300), 200), "gone");
        assert_eq!(r.release_task("task-a").len(), 1);
        assert!(r.release("b").is_some());
        assert!(r.list(200).is_empty());
    }
}
