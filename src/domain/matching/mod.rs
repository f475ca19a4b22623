//! The scheduler's matching index: ready tasks and idle agents, both indexed by
//! capability signature (the sorted list of capabilities a task needs).
//!
//! - ready tasks wait in *buckets*: one per (signature, fairness group, holds)
//!   seen, each ordered by (priority, sequence);
//! - `idle[sig]`: idle agents able to serve `sig`, ordered by how long they have
//!   been idle (longest first), built the first time `sig` is seen.
//!
//! An agent whose free slot is kept for standing-order runs waits in `kept`
//! instead of `idle` and takes only buckets of standing-order runs; such a run
//! goes to a kept slot before an idle agent.
//!
//! A task's fairness group is its concurrency key (else its correlation id):
//! within a priority, an agent takes the head of the group served longest ago,
//! so groups are served round-robin however many tasks each has. A task's holds
//! (its write scope's group, its concurrency key) keep it back while any is held
//! (`hold`); `release` serves what a hold kept back.
//!
//! After every call the index holds no pair of an idle agent and a ready task it
//! could take (outside held buckets): a call that would create one answers it as
//! a [`Match`] instead (the task and the agent leave the index). A new task costs
//! O(log n); a newly idle agent O(buckets × log n); a release O(buckets of that
//! hold × log n). Nothing scans all tasks or all agents; `ops` counts the
//! buckets and sets visited, for the tests that bound it.
//!
//! Architecture invariant: pure data. It decides *who*, knows no actor, no clock
//! and no task record; `A` is whatever the caller needs to reach an agent.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

/// A capability signature: sorted, without repeats. One copy per signature.
type Sig = Arc<[String]>;
/// A task id, shared with the queue's own index (one copy in memory).
pub(crate) type TaskId = Arc<str>;
/// A hold: a name the queue holds and releases (`scope:<group>`, `key:<key>`).
pub(crate) type HoldId = Arc<str>;
/// Ordering key of a ready task: (priority, sequence, id).
type TaskKey = (u8, u64, TaskId);
/// Ordering key of an idle agent: idle since (ms), then id.
type IdleKey = (i64, String);
type BucketId = u32;
/// A fairness group: a concurrency key or correlation id, or none.
type Fair = Option<Arc<str>>;
/// How an agent ranks the heads it may take: (priority, the head's group's last
/// service, sequence).
type Rank = (u8, u64, u64);

/// Where a ready task waits besides its signature (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Placement {
    /// Its round-robin group within a priority.
    pub fair: Option<Arc<str>>,
    /// Kept back while any of these is held.
    pub holds: Vec<HoldId>,
    /// A standing-order run: an agent's slot kept for those may take it.
    pub standing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    sig: Sig,
    placement: Placement,
}

struct Bucket {
    key: BucketKey,
    tasks: BTreeSet<TaskKey>,
}

struct IdleAgent<A> {
    since: i64,
    capabilities: HashSet<String>,
    /// Only its slot kept for standing-order runs is free.
    standing_only: bool,
    handle: A,
}

/// A decision: give `task_id` to `agent_id`. The agent left the idle index; its
/// handle comes with the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Match<A> {
    pub task_id: String,
    pub agent_id: String,
    pub agent: A,
    /// The task is a standing-order run.
    pub standing: bool,
}

/// See the module documentation.
pub(crate) struct MatchIndex<A> {
    /// Buckets with ready tasks, by id (a free slot is `None`).
    buckets: Vec<Option<Bucket>>,
    bucket_ids: AHashMap<BucketKey, BucketId>,
    free: Vec<BucketId>,
    /// task id → (bucket, priority, sequence), to remove a ready task by id.
    ready_index: AHashMap<TaskId, (BucketId, u8, u64)>,
    held: AHashSet<HoldId>,
    /// hold → the buckets it keeps back.
    by_hold: AHashMap<HoldId, AHashSet<BucketId>>,
    /// fairness group → when it was last served (a rising tick; 0: never).
    served: AHashMap<Option<Arc<str>>, u64>,
    /// fairness group → how many buckets it has (its turn is kept while any).
    fair_buckets: AHashMap<Option<Arc<str>>, usize>,
    tick: u64,
    idle: HashMap<Sig, BTreeSet<IdleKey>>,
    /// The same for agents with only their standing-order slot free.
    kept: HashMap<Sig, BTreeSet<IdleKey>>,
    agents: HashMap<String, IdleAgent<A>>,
    ops: u64,
}

impl<A> Default for MatchIndex<A> {
    fn default() -> Self {
        MatchIndex {
            buckets: Vec::new(),
            bucket_ids: AHashMap::new(),
            free: Vec::new(),
            ready_index: AHashMap::new(),
            held: AHashSet::new(),
            by_hold: AHashMap::new(),
            served: AHashMap::new(),
            fair_buckets: AHashMap::new(),
            tick: 0,
            idle: HashMap::new(),
            kept: HashMap::new(),
            agents: HashMap::new(),
            ops: 0,
        }
    }
}

fn covers(caps: &HashSet<String>, sig: &[String]) -> bool {
    sig.iter().all(|c| caps.contains(c))
}

/// The idle agents (standing-only or not) that cover `sig`, by idle time.
fn covering<A>(
    agents: &HashMap<String, IdleAgent<A>>,
    sig: &Sig,
    standing_only: bool,
) -> BTreeSet<IdleKey> {
    agents
        .iter()
        .filter(|(_, a)| a.standing_only == standing_only && covers(&a.capabilities, sig))
        .map(|(id, a)| (a.since, id.clone()))
        .collect()
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
        let placement = Placement::default();
        self.task_ready_placed(
            task_id.into(),
            (seq, priority),
            &capabilities,
            placement,
            None,
        )
    }

    /// [`MatchIndex::task_ready`] with the task's placement; `avoid` (the agent
    /// whose attempt just failed) takes the task only when no other covering
    /// agent is idle. A task kept back by a held hold waits.
    pub(crate) fn task_ready_placed(
        &mut self,
        task_id: TaskId,
        (seq, priority): (u64, u8),
        capabilities: &[String],
        placement: Placement,
        avoid: Option<&str>,
    ) -> Option<Match<A>> {
        self.ops += 1;
        if self.ready_index.contains_key(&task_id) {
            return None;
        }
        let sig: Sig = match self.idle.get_key_value(capabilities) {
            Some((sig, _)) => sig.clone(),
            None => capabilities.into(),
        };
        let free = !placement.holds.iter().any(|h| self.held.contains(h));
        if free {
            if let Some(agent_id) = self.pick(&sig, placement.standing, avoid) {
                self.served_now(&placement.fair);
                return self.take_agent(&task_id, agent_id, placement.standing);
            }
        }
        let bucket = self.bucket(BucketKey { sig, placement });
        if let Some(b) = self.buckets[bucket as usize].as_mut() {
            b.tasks.insert((priority, seq, task_id.clone()));
        }
        self.ready_index.insert(task_id, (bucket, priority, seq));
        None
    }

    /// A ready task is no longer schedulable; whether it was waiting.
    pub(crate) fn task_unready(&mut self, task_id: &str) -> bool {
        self.ops += 1;
        let Some((id, (bucket, priority, seq))) = self.ready_index.remove_entry(task_id) else {
            return false;
        };
        let empty = match self
            .buckets
            .get_mut(bucket as usize)
            .and_then(Option::as_mut)
        {
            Some(b) => {
                b.tasks.remove(&(priority, seq, id));
                b.tasks.is_empty()
            }
            None => false,
        };
        if empty {
            self.drop_bucket(bucket);
        }
        true
    }

    /// Room for `n` more ready tasks (a start hands over many at once).
    pub(crate) fn reserve_ready(&mut self, n: usize) {
        self.ready_index.reserve(n);
    }

    /// `hold` is held: the tasks it keeps back wait (they stay in the index).
    pub(crate) fn hold(&mut self, hold: HoldId) {
        self.ops += 1;
        self.held.insert(hold);
    }

    /// `hold` is released: what it kept back is served to idle agents now.
    pub(crate) fn release(&mut self, hold: &str) -> Vec<Match<A>> {
        self.ops += 1;
        if !self.held.remove(hold) {
            return Vec::new();
        }
        let buckets: Vec<BucketId> = self
            .by_hold
            .get(hold)
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let mut matches = Vec::new();
        for bucket in buckets {
            matches.extend(self.serve_bucket(bucket));
        }
        matches
    }

    /// Every hold held.
    pub(crate) fn held(&self) -> Vec<HoldId> {
        self.held.iter().cloned().collect()
    }

    /// Whether `hold` is held.
    #[cfg(test)]
    pub(crate) fn is_held(&self, hold: &str) -> bool {
        self.held.contains(hold)
    }

    /// Buckets and sets visited so far (for the tests that bound the work).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests only"))]
    pub(crate) fn ops(&self) -> u64 {
        self.ops
    }

    /// An agent became idle (replacing what the index knew of it). It takes the
    /// best ready task it covers: the lowest (priority, fairness group's last
    /// service, sequence) over the heads of every bucket it covers that nothing
    /// holds; else it waits in the index.
    #[cfg(test)]
    pub(crate) fn agent_idle(
        &mut self,
        agent_id: String,
        since: i64,
        capabilities: Vec<String>,
        handle: A,
    ) -> Option<Match<A>> {
        self.agent_free(agent_id, since, capabilities, false, handle)
    }

    /// [`MatchIndex::agent_idle`] for an agent that may take only
    /// standing-order runs (`standing_only`: its other slots are taken).
    pub(crate) fn agent_free(
        &mut self,
        agent_id: String,
        since: i64,
        capabilities: Vec<String>,
        standing_only: bool,
        handle: A,
    ) -> Option<Match<A>> {
        self.agent_busy(&agent_id);
        let agent = IdleAgent {
            since,
            capabilities: capabilities.into_iter().collect(),
            standing_only,
            handle,
        };
        let key = (agent.since, agent_id.clone());
        let sets = if standing_only {
            &mut self.kept
        } else {
            &mut self.idle
        };
        for (sig, set) in sets.iter_mut() {
            self.ops += 1;
            if covers(&agent.capabilities, sig) {
                set.insert(key.clone());
            }
        }
        let best = self.best_for(&agent.capabilities, standing_only);
        self.agents.insert(agent_id.clone(), agent);
        let (task_id, fair, standing) = best?;
        self.task_unready(&task_id);
        self.served_now(&fair);
        self.take_agent(&task_id, agent_id, standing)
    }

    /// An agent is no longer idle; its handle, if it was.
    pub(crate) fn agent_busy(&mut self, agent_id: &str) -> Option<A> {
        let agent = self.agents.remove(agent_id)?;
        let key = (agent.since, agent_id.to_string());
        let sets = if agent.standing_only {
            &mut self.kept
        } else {
            &mut self.idle
        };
        for set in sets.values_mut() {
            self.ops += 1;
            set.remove(&key);
        }
        Some(agent.handle)
    }

    /// Every (ready task, idle agent covering it) pair the index still holds
    /// outside held buckets, as matches. None while the invariant holds: a
    /// safety net only.
    pub(crate) fn repair(&mut self) -> Vec<Match<A>> {
        let ids: Vec<BucketId> = self.bucket_ids.values().copied().collect();
        let mut matches = Vec::new();
        for bucket in ids {
            matches.extend(self.serve_bucket(bucket));
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

    /// The best head an agent with `caps` may take: (task, its fairness group,
    /// whether it is a standing-order run).
    fn best_for(
        &mut self,
        caps: &HashSet<String>,
        standing_only: bool,
    ) -> Option<(TaskId, Fair, bool)> {
        let mut best: Option<(Rank, &TaskId, &Placement)> = None;
        for bucket in self.buckets.iter().flatten() {
            self.ops += 1;
            let p = &bucket.key.placement;
            if (standing_only && !p.standing)
                || !covers(caps, &bucket.key.sig)
                || p.holds.iter().any(|h| self.held.contains(h))
            {
                continue;
            }
            let Some((priority, seq, id)) = bucket.tasks.first() else {
                continue;
            };
            let served = self.served.get(&p.fair).copied().unwrap_or(0);
            let rank = (*priority, served, *seq);
            if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                best = Some((rank, id, p));
            }
        }
        best.map(|(_, id, p)| (id.clone(), p.fair.clone(), p.standing))
    }

    /// The agent to serve a task of `sig` now: a standing-order run goes to a
    /// slot kept for those first; `avoid` is picked last.
    fn pick(&mut self, sig: &Sig, standing: bool, avoid: Option<&str>) -> Option<String> {
        if standing {
            if let Some((_, id)) = self.kept_for(sig).first() {
                return Some(id.clone());
            }
        }
        let idle = self.idle_for(sig);
        let pick = match avoid {
            Some(avoid) => idle
                .iter()
                .find(|(_, id)| id != avoid)
                .or_else(|| idle.first()),
            None => idle.first(),
        };
        pick.map(|(_, id)| id.clone())
    }

    /// Serves a bucket nothing holds to the idle agents covering it, head first.
    fn serve_bucket(&mut self, bucket: BucketId) -> Vec<Match<A>> {
        let mut matches = Vec::new();
        loop {
            self.ops += 1;
            let Some(b) = self.buckets.get(bucket as usize).and_then(Option::as_ref) else {
                break;
            };
            if b.key.placement.holds.iter().any(|h| self.held.contains(h)) {
                break;
            }
            let Some((_, _, task_id)) = b.tasks.first().cloned() else {
                break;
            };
            let (sig, fair) = (b.key.sig.clone(), b.key.placement.fair.clone());
            let standing = b.key.placement.standing;
            let Some(agent_id) = self.pick(&sig, standing, None) else {
                break;
            };
            self.task_unready(&task_id);
            self.served_now(&fair);
            matches.extend(self.take_agent(&task_id, agent_id, standing));
        }
        matches
    }

    fn served_now(&mut self, fair: &Option<Arc<str>>) {
        self.tick += 1;
        self.served.insert(fair.clone(), self.tick);
    }

    /// The bucket for `key`, made when first needed.
    fn bucket(&mut self, key: BucketKey) -> BucketId {
        if let Some(id) = self.bucket_ids.get(&key) {
            return *id;
        }
        let bucket = Bucket {
            key: key.clone(),
            tasks: BTreeSet::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.buckets[id as usize] = Some(bucket);
                id
            }
            None => {
                self.buckets.push(Some(bucket));
                (self.buckets.len() - 1) as BucketId
            }
        };
        for h in &key.placement.holds {
            self.by_hold.entry(h.clone()).or_default().insert(id);
        }
        *self
            .fair_buckets
            .entry(key.placement.fair.clone())
            .or_default() += 1;
        self.bucket_ids.insert(key, id);
        id
    }

    /// An empty bucket goes (its fairness group's turn is forgotten with its
    /// last bucket).
    fn drop_bucket(&mut self, id: BucketId) {
        let Some(bucket) = self.buckets.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(id);
        self.bucket_ids.remove(&bucket.key);
        for h in &bucket.key.placement.holds {
            if let Some(set) = self.by_hold.get_mut(h) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_hold.remove(h);
                }
            }
        }
        let fair = &bucket.key.placement.fair;
        let left = match self.fair_buckets.get_mut(fair) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.fair_buckets.remove(fair);
            self.served.remove(fair);
        }
    }

    /// The idle set for `sig`, built from the idle agents the first time `sig`
    /// is seen.
    fn idle_for(&mut self, sig: &Sig) -> &mut BTreeSet<IdleKey> {
        let agents = &self.agents;
        self.idle
            .entry(sig.clone())
            .or_insert_with(|| covering(agents, sig, false))
    }

    /// [`MatchIndex::idle_for`] of agents with only a standing-order slot free.
    fn kept_for(&mut self, sig: &Sig) -> &mut BTreeSet<IdleKey> {
        let agents = &self.agents;
        self.kept
            .entry(sig.clone())
            .or_insert_with(|| covering(agents, sig, true))
    }

    fn take_agent(&mut self, task_id: &str, agent_id: String, standing: bool) -> Option<Match<A>> {
        let agent = self.agent_busy(&agent_id)?;
        Some(Match {
            task_id: task_id.to_string(),
            agent_id,
            agent,
            standing,
        })
    }
}

#[cfg(test)]
mod tests;
