//! The scheduler's matching index: ready tasks and idle agents, both indexed by
//! capability signature (the sorted list of capabilities a task needs).
//!
//! - `ready[sig]`: ready tasks ordered by (priority, sequence);
//! - `idle[sig]`: idle agents able to serve `sig`, ordered by how long they have
//!   been idle (longest first), built the first time `sig` is seen.
//!
//! After every call the index holds no pair of an idle agent and a ready task it
//! could take: a call that would create one answers it as a [`Match`] instead (the
//! task and the agent leave the index). A new task costs O(log n); a newly idle
//! agent costs O(signatures × log n). Nothing scans all tasks or all agents.
//!
//! Architecture invariant: pure data. It decides *who*, knows no actor, no clock
//! and no task record; `A` is whatever the caller needs to reach an agent.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ahash::AHashMap;

/// A capability signature: sorted, without repeats. One copy per signature.
type Sig = Arc<[String]>;
/// A task id, shared with the queue's own index (one copy in memory).
pub(crate) type TaskId = Arc<str>;
/// Ordering key of a ready task: (priority, sequence, id).
type TaskKey = (u8, u64, TaskId);
/// Ordering key of an idle agent: idle since (ms), then id.
type IdleKey = (i64, String);

struct IdleAgent<A> {
    since: i64,
    capabilities: HashSet<String>,
    handle: A,
}

/// A decision: give `task_id` to `agent_id`. The agent left the idle index; its
/// handle comes with the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Match<A> {
    pub task_id: String,
    pub agent_id: String,
    pub agent: A,
}

/// See the module documentation.
pub(crate) struct MatchIndex<A> {
    ready: AHashMap<Sig, BTreeSet<TaskKey>>,
    /// task id → (signature, priority, sequence), to remove a ready task by id.
    ready_index: AHashMap<TaskId, (Sig, u8, u64)>,
    idle: HashMap<Sig, BTreeSet<IdleKey>>,
    agents: HashMap<String, IdleAgent<A>>,
}

impl<A> Default for MatchIndex<A> {
    fn default() -> Self {
        MatchIndex {
            ready: AHashMap::new(),
            ready_index: AHashMap::new(),
            idle: HashMap::new(),
            agents: HashMap::new(),
        }
    }
}

fn covers(caps: &HashSet<String>, sig: &[String]) -> bool {
    sig.iter().all(|c| caps.contains(c))
}

impl<A> MatchIndex<A> {
    /// A task became ready (`capabilities` sorted, without repeats). The longest
    /// idle agent that covers it takes it at once; else it waits in the index. A
    /// task already waiting is left as it is.
    #[cfg(test)]
    pub(crate) fn task_ready(
        &mut self,
        task_id: String,
        seq: u64,
        priority: u8,
        capabilities: Vec<String>,
    ) -> Option<Match<A>> {
        self.task_ready_avoiding(task_id.into(), seq, priority, &capabilities, None)
    }

    /// [`MatchIndex::task_ready`], where `avoid` (the agent whose attempt just
    /// failed) takes the task only when no other covering agent is idle.
    pub(crate) fn task_ready_avoiding(
        &mut self,
        task_id: TaskId,
        seq: u64,
        priority: u8,
        capabilities: &[String],
        avoid: Option<&str>,
    ) -> Option<Match<A>> {
        if self.ready_index.contains_key(&task_id) {
            return None;
        }
        let sig: Sig = match self.ready.get_key_value(capabilities) {
            Some((sig, _)) => sig.clone(),
            None => match self.idle.get_key_value(capabilities) {
                Some((sig, _)) => sig.clone(),
                None => capabilities.into(),
            },
        };
        let idle = self.idle_for(&sig);
        let pick = match avoid {
            Some(avoid) => idle
                .iter()
                .find(|(_, id)| id != avoid)
                .or_else(|| idle.first()),
            None => idle.first(),
        };
        if let Some((_, agent_id)) = pick.cloned() {
            return self.take_agent(&task_id, agent_id);
        }
        self.ready
            .entry(sig.clone())
            .or_default()
            .insert((priority, seq, task_id.clone()));
        self.ready_index.insert(task_id, (sig, priority, seq));
        None
    }

    /// A ready task is no longer schedulable; whether it was waiting.
    pub(crate) fn task_unready(&mut self, task_id: &str) -> bool {
        let Some((id, (sig, priority, seq))) = self.ready_index.remove_entry(task_id) else {
            return false;
        };
        if let Some(set) = self.ready.get_mut(&sig) {
            set.remove(&(priority, seq, id));
            if set.is_empty() {
                self.ready.remove(&sig);
            }
        }
        true
    }

    /// Room for `n` more ready tasks (a start hands over many at once).
    pub(crate) fn reserve_ready(&mut self, n: usize) {
        self.ready_index.reserve(n);
    }

    /// An agent became idle (replacing what the index knew of it). It takes the
    /// best ready task it covers, the lowest (priority, sequence) over the heads
    /// of every signature it covers; else it waits in the index.
    pub(crate) fn agent_idle(
        &mut self,
        agent_id: String,
        since: i64,
        capabilities: Vec<String>,
        handle: A,
    ) -> Option<Match<A>> {
        self.agent_busy(&agent_id);
        let agent = IdleAgent {
            since,
            capabilities: capabilities.into_iter().collect(),
            handle,
        };
        let key = (agent.since, agent_id.clone());
        for (sig, set) in self.idle.iter_mut() {
            if covers(&agent.capabilities, sig) {
                set.insert(key.clone());
            }
        }
        let best = self
            .ready
            .iter()
            .filter(|(sig, _)| covers(&agent.capabilities, sig))
            .filter_map(|(_, set)| set.first())
            .min()
            .map(|(_, _, id)| id.clone());
        self.agents.insert(agent_id.clone(), agent);
        let task_id = best?;
        self.task_unready(&task_id);
        self.take_agent(&task_id, agent_id)
    }

    /// An agent is no longer idle; its handle, if it was.
    pub(crate) fn agent_busy(&mut self, agent_id: &str) -> Option<A> {
        let agent = self.agents.remove(agent_id)?;
        let key = (agent.since, agent_id.to_string());
        for set in self.idle.values_mut() {
            set.remove(&key);
        }
        Some(agent.handle)
    }

    /// Every (ready task, idle agent covering it) pair the index still holds, as
    /// matches. None while the invariant holds: a safety net only.
    pub(crate) fn repair(&mut self) -> Vec<Match<A>> {
        let mut matches = Vec::new();
        let sigs: Vec<Sig> = self.ready.keys().cloned().collect();
        for sig in sigs {
            while let Some((_, _, task_id)) = self.ready.get(&sig).and_then(|s| s.first()).cloned()
            {
                let Some((_, agent_id)) = self.idle_for(&sig).first().cloned() else {
                    break;
                };
                self.task_unready(&task_id);
                matches.extend(self.take_agent(&task_id, agent_id));
            }
        }
        matches
    }

    /// Ready tasks waiting in the index.
    #[cfg(test)]
    fn ready_len(&self) -> usize {
        self.ready_index.len()
    }

    /// Idle agents waiting in the index.
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.agents.len()
    }

    /// The idle set for `sig`, built from the idle agents the first time `sig`
    /// is seen.
    fn idle_for(&mut self, sig: &Sig) -> &mut BTreeSet<IdleKey> {
        let agents = &self.agents;
        self.idle.entry(sig.clone()).or_insert_with(|| {
            agents
                .iter()
                .filter(|(_, a)| covers(&a.capabilities, sig))
                .map(|(id, a)| (a.since, id.clone()))
                .collect()
        })
    }

    fn take_agent(&mut self, task_id: &str, agent_id: String) -> Option<Match<A>> {
        let agent = self.agent_busy(&agent_id)?;
        Some(Match {
            task_id: task_id.to_string(),
            agent_id,
            agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    }

    fn pair(m: Option<Match<()>>) -> Option<(String, String)> {
        m.map(|m| (m.task_id, m.agent_id))
    }

    #[test]
    fn a_waiting_task_goes_to_the_first_agent_that_covers_it() {
        let mut index = MatchIndex::default();
        assert_eq!(index.task_ready("t1".into(), 1, 2, caps(&["rust"])), None);
        assert_eq!(
            index.agent_idle("py".into(), 10, caps(&["python"]), ()),
            None
        );
        assert_eq!(
            pair(index.agent_idle("rs".into(), 20, caps(&["rust", "git"]), ())),
            Some(("t1".into(), "rs".into()))
        );
        assert_eq!((index.ready_len(), index.idle_len()), (0, 1));
    }

    #[test]
    fn a_new_task_goes_to_the_longest_idle_capable_agent() {
        let mut index = MatchIndex::default();
        for (id, since) in [("late", 30), ("early", 10), ("middle", 20)] {
            assert_eq!(
                index.agent_idle(id.into(), since, caps(&["code"]), ()),
                None
            );
        }
        assert_eq!(
            pair(index.task_ready("t".into(), 1, 2, caps(&["code"]))),
            Some(("t".into(), "early".into()))
        );
        assert_eq!(
            pair(index.task_ready("u".into(), 2, 2, caps(&["code"]))),
            Some(("u".into(), "middle".into()))
        );
    }

    #[test]
    fn an_agent_takes_the_most_urgent_then_oldest_task_over_every_signature_it_covers() {
        let mut index = MatchIndex::default();
        index.task_ready("normal-old".into(), 1, 2, caps(&[]));
        index.task_ready("urgent-new".into(), 9, 0, caps(&["a", "b"]));
        index.task_ready("urgent-old".into(), 5, 0, caps(&["a"]));
        index.task_ready("not-covered".into(), 0, 0, caps(&["c"]));
        let order: Vec<String> = (0..3)
            .filter_map(|i| {
                pair(index.agent_idle(format!("agent{i}"), i, caps(&["a", "b"]), ()))
                    .map(|(t, _)| t)
            })
            .collect();
        assert_eq!(order, vec!["urgent-old", "urgent-new", "normal-old"]);
        assert_eq!(index.ready_len(), 1, "the task nobody covers still waits");
    }

    #[test]
    fn an_agent_must_cover_every_needed_capability() {
        let mut index = MatchIndex::default();
        assert_eq!(index.agent_idle("half".into(), 1, caps(&["a"]), ()), None);
        assert_eq!(index.task_ready("ab".into(), 1, 0, caps(&["a", "b"])), None);
        assert_eq!(
            index.agent_idle("other".into(), 2, caps(&["b", "c"]), ()),
            None
        );
        assert_eq!(
            pair(index.agent_idle("full".into(), 3, caps(&["a", "b", "c"]), ())),
            Some(("ab".into(), "full".into()))
        );
        // No capability needed: any agent will do.
        assert_eq!(
            pair(index.task_ready("any".into(), 2, 2, caps(&[]))),
            Some(("any".into(), "half".into()))
        );
    }

    #[test]
    fn the_agent_whose_attempt_failed_is_served_last() {
        let mut index = MatchIndex::default();
        index.agent_idle("failed".into(), 10, caps(&["x"]), ());
        index.agent_idle("other".into(), 20, caps(&["x"]), ());
        let m = index.task_ready_avoiding("t".into(), 1, 2, &caps(&["x"]), Some("failed"));
        assert_eq!(pair(m), Some(("t".into(), "other".into())));
        // Alone, it still takes the task.
        let m = index.task_ready_avoiding("u".into(), 2, 2, &caps(&["x"]), Some("failed"));
        assert_eq!(pair(m), Some(("u".into(), "failed".into())));
    }

    #[test]
    fn unready_tasks_and_busy_agents_leave_the_index() {
        let mut index = MatchIndex::default();
        index.task_ready("t".into(), 1, 2, caps(&["x"]));
        assert!(index.task_unready("t"));
        assert!(!index.task_unready("t"));
        assert_eq!(index.agent_idle("a".into(), 1, caps(&["x"]), 7), None);
        assert_eq!(index.agent_busy("a"), Some(7));
        assert_eq!(index.task_ready("u".into(), 2, 2, caps(&["x"])), None);
    }

    #[test]
    fn a_task_already_waiting_is_not_indexed_twice() {
        let mut index: MatchIndex<()> = MatchIndex::default();
        index.task_ready("t".into(), 1, 2, caps(&["x"]));
        index.task_ready("t".into(), 1, 2, caps(&["x"]));
        assert_eq!(index.ready_len(), 1);
        assert!(index.agent_idle("a".into(), 1, caps(&["x"]), ()).is_some());
        assert!(index.agent_idle("b".into(), 2, caps(&["x"]), ()).is_none());
    }

    #[test]
    fn an_agent_idle_again_replaces_its_old_entry() {
        let mut index = MatchIndex::default();
        index.agent_idle("a".into(), 1, caps(&["x"]), "old");
        index.agent_idle("a".into(), 5, caps(&["y"]), "new");
        assert_eq!(index.idle_len(), 1);
        assert_eq!(index.task_ready("t".into(), 1, 2, caps(&["x"])), None);
        let m = index.task_ready("u".into(), 2, 2, caps(&["y"]));
        assert_eq!(m.map(|m| m.agent), Some("new"));
    }

    #[test]
    fn repair_finds_nothing_while_the_invariant_holds() {
        let mut index = MatchIndex::default();
        index.task_ready("t".into(), 1, 2, caps(&["x"]));
        index.agent_idle("a".into(), 1, caps(&["y"]), ());
        assert!(index.repair().is_empty());
        assert_eq!((index.ready_len(), index.idle_len()), (1, 1));
    }
}
