//! The dependency graph of unfinished tasks (`depends_on`): which live tasks
//! wait for which dependencies, what a dependency's end means for them, and the
//! cycle check of a batch.
//!
//! Architecture invariant: pure data. It knows task ids and statuses, never a
//! task record, the store or an actor; the caller says what state each
//! dependency is in and carries out what the graph decides.

use std::collections::{BTreeSet, HashMap};

use crate::domain::task::TaskStatus;

/// What a dependency's state means for a task that depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepState {
    /// Completed: nothing to wait for.
    Completed,
    /// Not finished yet: wait for it.
    Open,
    /// Cannot complete as things stand (dead-lettered, cancelled, or blocked on
    /// a dependency of its own, with this status): wait for it (an operator may
    /// retry it) but block the dependent now.
    Failed(TaskStatus),
    /// No such task (a record lost to corruption): it can never complete.
    Unknown,
}

/// What the end of a dependency means for the tasks waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// It completed: these tasks wait for nothing else now.
    Released(Vec<String>),
    /// It can no longer complete: these tasks must be blocked on it.
    Block(Vec<String>),
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct DependencyGraph {
    /// Live task id → its dependencies not completed yet. A task listed here is
    /// not scheduled.
    waiting: HashMap<String, BTreeSet<String>>,
    /// Dependency id → the live tasks that wait for it.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl DependencyGraph {
    /// Records which of `task`'s dependencies it waits for, asking `state_of`
    /// about each. Answers a dependency that cannot complete (with the status to
    /// block on), if there is one.
    pub(crate) fn track(
        &mut self,
        task: &str,
        depends_on: &[String],
        mut state_of: impl FnMut(&str) -> DepState,
    ) -> Option<(String, TaskStatus)> {
        let mut open = BTreeSet::new();
        let mut failed = None;
        for dep in depends_on {
            let state = state_of(dep);
            match state {
                DepState::Completed => continue,
                DepState::Open => {}
                DepState::Failed(status) => {
                    // Held back until the caller blocks it (never offered in
                    // between), and freed should the dependency complete after an
                    // operator's retry.
                    failed.get_or_insert((dep.clone(), status));
                }
                DepState::Unknown => {
                    failed.get_or_insert((dep.clone(), TaskStatus::Cancelled));
                }
            }
            open.insert(dep.clone());
            if state != DepState::Unknown {
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .insert(task.to_string());
            }
        }
        if open.is_empty() {
            self.waiting.remove(task);
        } else {
            self.waiting.insert(task.to_string(), open);
        }
        failed
    }

    /// Whether `task` waits for a dependency (and so is not scheduled).
    pub(crate) fn is_waiting(&self, task: &str) -> bool {
        self.waiting.contains_key(task)
    }

    /// How many tasks wait for dependencies.
    /// Each waiting task with the dependencies it still waits for.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.waiting.iter().map(|(t, open)| (t.as_str(), open))
    }

    pub(crate) fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// `task` finished: it waits for nothing any more.
    pub(crate) fn forget(&mut self, task: &str) {
        self.waiting.remove(task);
    }

    /// What the end of `dep` with `status` means for the tasks waiting on it. A
    /// completion releases them from `dep` (and answers those waiting for
    /// nothing else); any other end answers them all, to be blocked.
    pub(crate) fn settle(&mut self, dep: &str, status: TaskStatus) -> Settled {
        if status != TaskStatus::Completed {
            let dependents = self
                .dependents
                .get(dep)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default();
            return Settled::Block(dependents);
        }
        let mut released = Vec::new();
        for task in self.dependents.remove(dep).unwrap_or_default() {
            let Some(open) = self.waiting.get_mut(&task) else {
                continue;
            };
            open.remove(dep);
            if open.is_empty() {
                self.waiting.remove(&task);
                released.push(task);
            }
        }
        Settled::Released(released)
    }

    /// Forgets everything (before a reload).
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
        self.dependents.clear();
    }
}

/// The entries of a batch's dependency graph (entry → entries it depends on)
/// that lie on or behind a cycle: what a topological sort cannot order.
pub(crate) fn cycle_members(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut needs = vec![0usize; n];
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, deps) in edges.iter().enumerate() {
        for &to in deps {
            needs[from] += 1;
            needed_by[to].push(from);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| needs[i] == 0).collect();
    let mut ordered = vec![false; n];
    while let Some(i) = ready.pop() {
        ordered[i] = true;
        for &j in &needed_by[i] {
            needs[j] -= 1;
            if needs[j] == 0 {
                ready.push(j);
            }
        }
    }
    (0..n).filter(|&i| !ordered[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| d.to_string()).collect()
    }

    fn states<'a>(table: &'a [(&'a str, DepState)]) -> impl FnMut(&str) -> DepState + 'a {
        move |id| {
            table
                .iter()
                .find(|(d, _)| *d == id)
                .map_or(DepState::Unknown, |(_, s)| *s)
        }
    }

    #[test]
    fn a_task_waits_only_for_unfinished_dependencies() {
        let mut g = DependencyGraph::default();
        let table = [("a", DepState::Completed), ("b", DepState::Open)];
        assert_eq!(g.track("t", &deps(&["a", "b"]), states(&table)), None);
        assert!(g.is_waiting("t"));
        assert_eq!(
            g.settle("b", TaskStatus::Completed),
            Settled::Released(deps(&["t"]))
        );
        assert!(!g.is_waiting("t"));
        assert_eq!(g.waiting_len(), 0);
    }

    #[test]
    fn a_task_with_only_completed_dependencies_does_not_wait() {
        let mut g = DependencyGraph::default();
        assert_eq!(
            g.track("t", &deps(&["a"]), states(&[("a", DepState::Completed)])),
            None
        );
        assert!(!g.is_waiting("t"));
    }

    #[test]
    fn a_completion_releases_only_tasks_waiting_for_nothing_else() {
        let mut g = DependencyGraph::default();
        let table = [("a", DepState::Open), ("b", DepState::Open)];
        g.track("both", &deps(&["a", "b"]), states(&table));
        g.track("only-a", &deps(&["a"]), states(&table));
        assert_eq!(
            g.settle("a", TaskStatus::Completed),
            Settled::Released(deps(&["only-a"]))
        );
        assert!(g.is_waiting("both"));
        assert_eq!(
            g.settle("b", TaskStatus::Completed),
            Settled::Released(deps(&["both"]))
        );
    }

    #[test]
    fn a_failed_dependency_is_reported_and_still_waited_for() {
        let mut g = DependencyGraph::default();
        let table = [
            ("ok", DepState::Open),
            ("dead", DepState::Failed(TaskStatus::DeadLetter)),
        ];
        assert_eq!(
            g.track("t", &deps(&["ok", "dead"]), states(&table)),
            Some(("dead".into(), TaskStatus::DeadLetter))
        );
        assert!(g.is_waiting("t"), "held back until blocked");
        // An operator retried the dead letter and it completed after all.
        g.settle("ok", TaskStatus::Completed);
        assert_eq!(
            g.settle("dead", TaskStatus::Completed),
            Settled::Released(deps(&["t"]))
        );
    }

    #[test]
    fn an_unknown_dependency_can_never_complete() {
        let mut g = DependencyGraph::default();
        assert_eq!(
            g.track("t", &deps(&["gone"]), states(&[])),
            Some(("gone".into(), TaskStatus::Cancelled))
        );
        assert!(g.is_waiting("t"));
        assert_eq!(
            g.settle("gone", TaskStatus::Completed),
            Settled::Released(vec![])
        );
        assert!(g.is_waiting("t"), "nothing the lost record does frees it");
    }

    #[test]
    fn a_dependency_that_cannot_complete_blocks_every_dependent() {
        let mut g = DependencyGraph::default();
        let table = [("a", DepState::Open)];
        g.track("x", &deps(&["a"]), states(&table));
        g.track("y", &deps(&["a"]), states(&table));
        assert_eq!(
            g.settle("a", TaskStatus::Cancelled),
            Settled::Block(deps(&["x", "y"]))
        );
        assert!(g.is_waiting("x") && g.is_waiting("y"));
    }

    #[test]
    fn tracking_again_replaces_what_a_task_waits_for() {
        let mut g = DependencyGraph::default();
        g.track("t", &deps(&["a"]), states(&[("a", DepState::Open)]));
        g.track("t", &deps(&["a"]), states(&[("a", DepState::Completed)]));
        assert!(!g.is_waiting("t"));
        g.track("u", &deps(&["b"]), states(&[("b", DepState::Open)]));
        g.forget("u");
        assert!(!g.is_waiting("u"));
    }

    #[test]
    fn cycles_and_what_depends_on_them_are_found() {
        // 0 → 1 → 2 → 0 is a cycle, 3 depends on it, 4 is free, 5 → 4.
        let edges = vec![vec![1], vec![2], vec![0], vec![0], vec![], vec![4]];
        assert_eq!(cycle_members(&edges), vec![0, 1, 2, 3]);
        assert!(cycle_members(&[vec![], vec![0], vec![0, 1]]).is_empty());
        assert_eq!(cycle_members(&[vec![0]]), vec![0], "a self-loop is a cycle");
    }
}
