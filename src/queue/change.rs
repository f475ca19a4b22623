//! The one path of a change to an existing task: `with_task`. The task's rule
//! (a method of `Task`) runs on the record, then its events are appended to the
//! log, the record is written, the indexes follow, and what the new state means
//! goes to the outbox: scheduling (a task that became schedulable is offered, one
//! that left the queue withdrawn) and dependency settling (a completion frees
//! dependents, a dead letter or cancel blocks them, down the chain).

use std::sync::Arc;

use serde_json::Value;

use super::entry::{Entry, Queued};
use super::index::TaskIndex;
use super::lanes::Lanes;
use super::outbox::Outbox;
use super::records;
use super::scopes::Scopes;
use super::timers::Timers;
use super::TaskQueue;
use super::{QueueError, TaskReady};
use crate::agents::fsm::Withdrawn;
use crate::domain::completions::Completion;
use crate::domain::dependencies::{DepState, DependencyGraph, Settled};
use crate::domain::matching::{HoldId, Placement};
use crate::domain::task::{HistoryEntry, Task, TaskError, TaskStatus};
use crate::error::StoreError;
use crate::storage::eventlog::{EventLog, NewEvent};
use crate::util::now_ms;

/// What callers of `with_task` need to know about the changed task.
#[derive(Debug, Clone)]
pub(super) struct Changed {
    pub(super) status: TaskStatus,
    pub(super) generation: u64,
    pub(super) updated_at: i64,
}

/// What a change means for the tasks that depend on the changed one.
pub(super) enum Settle {
    /// The task completed, dead-lettered, was cancelled or blocked on a dependency.
    Finished(String, TaskStatus),
    /// `task`, back in the queue, depends on `dep`, which cannot complete.
    Block {
        task: String,
        dep: String,
        status: TaskStatus,
    },
}

/// The event-log records of a task's new history entries. The agent of an event
/// is the one its details name (the holder, for reports and reclaims).
pub(super) fn task_events(task: &Task, recorded: &[HistoryEntry], actor: &str) -> Vec<NewEvent> {
    recorded
        .iter()
        .map(|e| NewEvent {
            ts: e.ts,
            kind: e.event.clone(),
            task_id: Some(task.id.clone()),
            task_seq: Some(task.seq),
            agent_id: e
                .details
                .get("agent_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            actor: actor.to_string(),
            details: e.details.clone(),
        })
        .collect()
}

impl TaskQueue {
    /// Applies `change` to one task (see [`TaskQueue::change_task`]), then settles
    /// what the change means for the tasks that depend on it.
    pub(super) fn with_task<R>(
        &mut self,
        id: &str,
        actor: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
    ) -> Result<(R, Changed), QueueError> {
        let mut settle = Vec::new();
        let out = self.change_task(id, actor, change, &mut settle)?;
        self.settle_dependencies(settle);
        Ok(out)
    }

    /// Applies `change` to one task: all of it, its events appended to the log and
    /// the record written to sled, or nothing. A live task is moved out of memory
    /// and back, never cloned (this is the hot path). Tasks whose new state
    /// matters to their dependents are pushed on `settle`.
    pub(super) fn change_task<R>(
        &mut self,
        id: &str,
        actor: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
        settle: &mut Vec<Settle>,
    ) -> Result<(R, Changed), QueueError> {
        let now = now_ms();
        let (mut task, was_live) = self.take_task(id)?;
        let (old, old_priority, recorded_before) = (task.status, task.priority, task.recorded);
        let was_held = task.is_held();
        let out = match change(&mut task, now) {
            Ok(out) => out,
            Err(e) => {
                self.put_back(task, was_live);
                return Err(e.into());
            }
        };
        if let Err(e) = self.persist(&task, recorded_before, actor) {
            // Not written: the in-memory record must not run ahead of sled. The
            // change methods only move forward, so take the stored record back.
            if let Ok(Some(stored)) = self.read_stored(id) {
                self.put_back(stored, was_live);
            }
            return Err(e);
        }
        self.tell_end(&task, old);
        self.index.count(&task, Some((old, old_priority)), now);
        if !task.status.is_terminal() {
            // Back from dead letter or cancel: its scope counts again.
            self.scopes.track(&task);
        }
        self.observe(&task, recorded_before);
        let changed = Changed {
            status: task.status,
            generation: task.generation,
            updated_at: task.updated_at,
        };
        self.follow_on(&task, old, now, settle);
        if task.status.is_terminal() {
            self.deps.forget(&task.id);
        }
        let let_go = was_held && !task.is_held();
        let key = let_go.then(|| task.concurrency_key.clone()).flatten();
        self.index.settle_in(task);
        if let_go {
            self.stop_running(id, key.as_deref(), changed.status.is_terminal(), now);
        } else if changed.status.is_terminal() {
            self.stop_running(id, None, true, now);
        }
        Ok((out, changed))
    }

    /// The task out of memory (kept whole), read from the store (kept compact:
    /// queued) or read from the store alone (finished).
    fn take_task(&mut self, id: &str) -> Result<(Task, bool), QueueError> {
        let live = self.index.ids.get(id).copied();
        match live.and_then(|seq| self.index.live.remove(&seq)) {
            Some(Entry::Whole(task)) => return Ok((*task, true)),
            Some(queued) => {
                return match self.read_entry(&queued) {
                    Ok(Some(task)) => Ok((task, true)),
                    read => {
                        // Unreadable: memory keeps what it had.
                        self.index.live.insert(queued.seq(), queued);
                        Err(match read {
                            Err(e) => QueueError::Store(e),
                            Ok(_) => TaskError::NotFound.into(),
                        })
                    }
                };
            }
            None => {}
        }
        match self.read(id)? {
            Some(t) => Ok((t, false)),
            None => Err(TaskError::NotFound.into()),
        }
    }

    fn put_back(&mut self, task: Task, was_live: bool) {
        if was_live {
            self.index.insert_live(task);
        }
    }

    /// The events first: a change is never durable without its record in the log.
    fn persist(&self, task: &Task, recorded_before: u64, actor: &str) -> Result<(), QueueError> {
        self.writable()?;
        let recorded = task.recorded_since(recorded_before);
        if let Err(e) = self.log.append(task_events(task, recorded, actor)) {
            tracing::error!(task_id = %task.id, error = %e, "event log write failed; change refused");
            return Err(QueueError::Store(e));
        }
        if let Err(e) = self.records.update(task.seq, records::encode_state(task)) {
            tracing::error!(task_id = %task.id, error = %e, "task write failed");
            return Err(QueueError::Store(e));
        }
        Ok(())
    }

    /// Refuses every write once the stop's checkpoint is written.
    pub(super) fn writable(&self) -> Result<(), QueueError> {
        match self.frozen {
            true => Err(QueueError::Store(StoreError::Closed)),
            false => Ok(()),
        }
    }

    /// Telemetry, the completions projection and bus events of the new entries.
    fn observe(&mut self, task: &Task, recorded_before: u64) {
        let recorded = task.recorded_since(recorded_before);
        self.peers
            .telemetry
            .task_events(recorded, task.created_at, task.assigned_at);
        let completion = recorded
            .iter()
            .any(|e| e.event == "completed")
            .then(|| Completion::of(task))
            .flatten();
        if let Some(c) = &completion {
            self.completions.record(c.clone());
        }
        for e in recorded {
            let agent = e.details.get("agent_id").and_then(Value::as_str);
            // A failure report says `retry` or, at the last retry, `dead_letter`
            // with its `retry_count` (other dead letters are no agent's failure).
            let failed = e.event == "retry"
                || (e.event == "dead_letter" && e.details.get("retry_count").is_some());
            match agent {
                Some(agent) if e.event == "completed" => self.outcomes.record(agent, None),
                Some(agent) if failed => {
                    let error = e.details.get("error").and_then(Value::as_str);
                    self.outcomes
                        .record(agent, Some(error.unwrap_or_default().to_string()));
                }
                _ => {}
            }
        }
        if self.peers.bus.watched() {
            let row = completion
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok());
            for e in recorded {
                let row = (e.event == "completed").then(|| row.clone()).flatten();
                self.outbox.announce(task, &e.event, e.ts, None, row);
            }
        }
    }

    /// What the new state means: dependents to settle, dependencies to wait for
    /// again, scheduling, and the `requeue` timer of a blocked task.
    fn follow_on(&mut self, task: &Task, old: TaskStatus, now: i64, settle: &mut Vec<Settle>) {
        match task.status {
            TaskStatus::Completed | TaskStatus::DeadLetter | TaskStatus::Cancelled => {
                settle.push(Settle::Finished(task.id.clone(), task.status));
            }
            TaskStatus::Blocked if task.blocked_on.is_some() => {
                settle.push(Settle::Finished(task.id.clone(), task.status));
            }
            _ => {}
        }
        if task.status == TaskStatus::Queued
            && old != TaskStatus::Queued
            && !task.depends_on.is_empty()
        {
            // Back in the queue (retry, requeue): wait again for what is unfinished.
            if let Some((dep, status)) = self.track_dependencies(&task.id, &task.depends_on) {
                settle.push(Settle::Block {
                    task: task.id.clone(),
                    dep,
                    status,
                });
            }
        }
        match (old, task.status) {
            (_, TaskStatus::Queued) => {
                if old == TaskStatus::Queued {
                    // Same queue, new lane: the scheduler re-indexes it.
                    self.outbox.unready.push(task.id.clone());
                }
                self.offer(task, now);
            }
            (TaskStatus::Queued, TaskStatus::Assigned) => {}
            (TaskStatus::Queued, _) => self.outbox.unready.push(task.id.clone()),
            _ => {}
        }
        if let Some(at) = task
            .unblock_at
            .filter(|_| task.status == TaskStatus::Blocked)
        {
            self.timers.set(at, &task.id);
        }
    }

    /// Runs an operator change of one task; the agent holding it (if any) loses
    /// it and is told why.
    pub(super) fn operator_change<R>(
        &mut self,
        task_id: &str,
        by: &str,
        why: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
    ) -> Result<R, QueueError> {
        let holder = self.index.leases.get(task_id).cloned();
        let (out, changed) = self.with_task(task_id, by, change)?;
        let still_held = changed.status.is_held();
        if let Some(lease) = holder.filter(|l| !still_held || l.generation != changed.generation) {
            self.outbox.withdrawn.push(Withdrawn {
                agent_id: lease.agent_id,
                task_id: task_id.to_string(),
                generation: lease.generation,
                reason: why.to_string(),
                notice: None,
            });
        }
        tracing::info!(task_id = %task_id, by = %by, action = why, "operator action");
        Ok(out)
    }

    /// Renews the lease of an assigned task (a sign of life from its holder).
    pub(super) fn renew(&mut self, task_id: &str, accepted: bool) {
        let now = now_ms();
        let lease_ms = self
            .index
            .whole(task_id)
            .map_or(self.policy.defaults.lease_ms, |t| t.lease_ms);
        if let Some(lease) = self.index.leases.get_mut(task_id) {
            lease.deadline = now.saturating_add(lease_ms as i64);
            lease.accepted |= accepted;
        }
    }

    // Scheduling ------------------------------------------------------------

    /// Makes a queued task ready if nothing holds it back; one that waits for its
    /// `run_after` gets a timer.
    pub(super) fn offer(&mut self, task: &Task, now: i64) {
        let (_, parts) = self.split_for_offer();
        offer(&Offered::Whole(task), parts, now);
    }

    /// `offer` for a live task, found by id (no copy of the task).
    pub(super) fn offer_live(&mut self, id: &str, now: i64) {
        let (index, parts) = self.split_for_offer();
        if let Some(Entry::Queued(task)) = index.entry(id) {
            offer(&Offered::Queued(task), parts, now);
        }
    }

    /// The index, and what `offer` changes, borrowed apart.
    fn split_for_offer(&mut self) -> (&TaskIndex, OfferParts<'_>) {
        let Self {
            index,
            deps,
            lanes,
            timers,
            outbox,
            scopes,
            log,
            ..
        } = self;
        let parts = OfferParts {
            deps,
            lanes,
            timers,
            outbox,
            scopes,
            log,
        };
        (index, parts)
    }

    /// Whether a live task may be offered at start (everything queued before a
    /// restart is ready again, in order).
    pub(super) fn ready_at_start(&self, entry: &Entry, now: i64) -> Option<TaskReady> {
        let Entry::Queued(task) = entry else {
            return None;
        };
        let task = Offered::Queued(task);
        (!held_back(&task, &self.deps, &self.lanes) && task.run_after().is_none_or(|at| at <= now))
            .then(|| task.ready(self.scopes.hold_for(task.id())))
    }

    // Dependencies ----------------------------------------------------------

    /// Records which of `task`'s dependencies are unfinished (it waits for them).
    /// Answers a dependency that can no longer complete, if there is one.
    pub(super) fn track_dependencies(
        &mut self,
        task: &str,
        depends_on: &[String],
    ) -> Option<(String, TaskStatus)> {
        let mut deps = std::mem::take(&mut self.deps);
        let failed = deps.track(task, depends_on, |dep| self.dep_state(dep));
        self.deps = deps;
        failed
    }

    fn dep_state(&self, dep: &str) -> DepState {
        match self.status_of(dep) {
            Some(TaskStatus::Completed) => DepState::Completed,
            Some(s @ (TaskStatus::DeadLetter | TaskStatus::Cancelled)) => DepState::Failed(s),
            Some(TaskStatus::Blocked)
                if self
                    .index
                    .whole(dep)
                    .is_some_and(|d| d.blocked_on.is_some()) =>
            {
                DepState::Failed(TaskStatus::Blocked)
            }
            Some(_) => DepState::Open,
            None => DepState::Unknown,
        }
    }

    /// What finished tasks mean for the tasks waiting on them: a completion frees
    /// its dependents (scheduled once nothing else holds them); a dead letter,
    /// cancel or dependency block blocks them, and so on down the chain.
    pub(super) fn settle_dependencies(&mut self, mut settle: Vec<Settle>) {
        while let Some(item) = settle.pop() {
            let (dep, status, dependents) = match item {
                Settle::Block { task, dep, status } => (dep, status, vec![task]),
                Settle::Finished(id, status) => match self.deps.settle(&id, status) {
                    Settled::Released(free) => {
                        let now = now_ms();
                        for task in free {
                            self.offer_live(&task, now);
                        }
                        continue;
                    }
                    Settled::Block(dependents) => (id, status, dependents),
                },
            };
            for dependent in dependents {
                let queued = self
                    .index
                    .entry(&dependent)
                    .is_some_and(|t| t.status() == TaskStatus::Queued);
                if !queued {
                    continue;
                }
                let blocked = self.change_task(
                    &dependent,
                    "hub",
                    |t, now| t.block_on_dependency(&dep, status, now),
                    &mut settle,
                );
                if let Err(e) = blocked {
                    tracing::error!(task_id = %dependent, error = e.as_str(), "dependent could not be blocked");
                }
            }
        }
    }
}

/// A task being offered: whole (just changed) or compact (kept queued).
enum Offered<'a> {
    Whole(&'a Task),
    Queued(&'a Queued),
}

impl Offered<'_> {
    fn id(&self) -> &str {
        match self {
            Offered::Whole(t) => &t.id,
            Offered::Queued(q) => &q.id,
        }
    }

    fn queued(&self) -> bool {
        match self {
            Offered::Whole(t) => t.status == TaskStatus::Queued,
            Offered::Queued(_) => true,
        }
    }

    fn priority(&self) -> u8 {
        match self {
            Offered::Whole(t) => t.priority,
            Offered::Queued(q) => q.priority,
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Offered::Whole(t) => t.seq,
            Offered::Queued(q) => q.seq,
        }
    }

    fn run_after(&self) -> Option<i64> {
        match self {
            Offered::Whole(t) => t.run_after,
            Offered::Queued(q) => q.run_after,
        }
    }

    /// The scheduler's view of the task; `scope` is its write scope's hold.
    fn ready(&self, scope: Option<HoldId>) -> TaskReady {
        let (fair, key, standing): (Option<Arc<str>>, Option<Arc<str>>, bool) = match self {
            Offered::Whole(t) => (
                t.fairness_group().map(Into::into),
                t.concurrency_key.as_deref().map(Into::into),
                t.is_standing_run(),
            ),
            Offered::Queued(q) => q
                .tags
                .as_ref()
                .map(|t| (t.fair.clone(), t.key.clone(), t.standing))
                .unwrap_or_default(),
        };
        let mut holds: Vec<HoldId> = scope.into_iter().collect();
        if let Some(k) = key {
            holds.push(super::keys::hold_of(&k));
        }
        let placement = Placement {
            fair,
            holds,
            standing,
        };
        match self {
            Offered::Whole(task) => TaskReady {
                task_id: task.id.as_str().into(),
                seq: task.seq,
                priority: task.priority,
                capabilities: task.needed_capabilities.as_slice().into(),
                avoid: task
                    .attempts
                    .last()
                    .filter(|a| a.outcome.as_deref() == Some("failed"))
                    .map(|a| a.agent_id.clone()),
                placement,
            },
            Offered::Queued(q) => TaskReady {
                task_id: q.id.clone(),
                seq: q.seq,
                priority: q.priority,
                capabilities: q.capabilities.clone(),
                avoid: q.avoid.as_deref().map(str::to_string),
                placement,
            },
        }
    }
}

/// Not schedulable whatever the time: not queued, waiting for dependencies, or
/// in a paused lane.
fn held_back(task: &Offered<'_>, deps: &DependencyGraph, lanes: &Lanes) -> bool {
    !task.queued() || deps.is_waiting(task.id()) || lanes.holds(task.priority())
}

/// What `offer` works with (borrowed from the queue apart from its index, so a
/// live task can be offered while borrowed from it).
struct OfferParts<'a> {
    deps: &'a DependencyGraph,
    lanes: &'a Lanes,
    timers: &'a mut Timers,
    outbox: &'a mut Outbox,
    scopes: &'a mut Scopes,
    log: &'a EventLog,
}

/// Makes a queued task ready if nothing holds it back; one that waits for its
/// `run_after` gets a timer. A task whose write scope is held goes to the
/// scheduler too (which keeps it back under the hold); its wait is recorded.
fn offer(task: &Offered<'_>, parts: OfferParts<'_>, now: i64) {
    if held_back(task, parts.deps, parts.lanes) {
        return;
    }
    match task.run_after() {
        Some(at) if at > now => parts.timers.set(at, task.id()),
        _ => {
            note_wait(parts.scopes, parts.log, (task.id(), Some(task.seq())), now);
            let hold = parts.scopes.hold_for(task.id());
            parts.outbox.ready.push(task.ready(hold));
        }
    }
}

/// Whether `task_id`'s write scope is held by a claim: then its wait is
/// recorded in the event log (once per wait).
pub(super) fn note_wait(
    scopes: &mut Scopes,
    log: &EventLog,
    (task_id, task_seq): (&str, Option<u64>),
    now: i64,
) -> bool {
    let Some(holder) = scopes.conflict(task_id) else {
        return false;
    };
    if scopes.first_wait(task_id) {
        let reservation = scopes
            .is_reservation(&holder.claim_id)
            .then(|| holder.claim_id.clone());
        let event = NewEvent {
            ts: now,
            kind: "scope_waiting".into(),
            task_id: Some(task_id.to_string()),
            task_seq,
            agent_id: Some(holder.agent_id.clone()),
            actor: "hub".into(),
            details: serde_json::json!({
                "holder_task_id": holder.task_id,
                "holder_agent_id": holder.agent_id,
                "reservation_id": reservation,
            }),
        };
        if let Err(e) = log.append(vec![event]) {
            tracing::error!(task_id, error = %e, "scope_waiting not recorded");
        }
    }
    true
}
