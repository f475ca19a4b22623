//! `TaskQueue`: the one owner of task state.
//!
//! It keeps every unfinished task in memory (ordered by sequence) and all tasks in
//! sled. A change is applied to the in-memory record and written to sled inside the
//! handler, so the actor's mailbox orders all changes; the reply (and every effect
//! others can observe: scheduling, withdrawal notices) waits for the group-commit
//! flush that covers the write.
//!
//! Architecture invariant: the queue never talks to a socket and never chooses an
//! agent. It tells the `Scheduler` which tasks are ready and `Presence` which agents
//! lost a task; the rules of each transition live in `task`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Map, Value};

use crate::agents::fsm::Withdrawn;
use crate::agents::presence::{Presence, ToAgent};
use crate::agents::scheduler::{Scheduler, TaskReady, TaskUnready};
use crate::config::Config;
use crate::domain::completions::{short_description, Completion, Completions, Throughput};
use crate::domain::task::{
    BlockReport, HistoryEntry, ReclaimOutcome, Task, TaskDefaults, TaskError, TaskStatus,
};
use crate::error::StoreError;
use crate::ops::analytics::{Analytics, Count, Counter};
use crate::ops::telemetry::{Counter as MetricCounter, Telemetry};
use crate::protocol::{BlockedPolicy, FieldError};
use crate::protocol::{TaskAssignment, TaskSpec};
use crate::storage::bus::{EventBus, HubEvent};
use crate::storage::eventlog::{EventLog, NewEvent};
use crate::storage::store::{decode, encode, key_seq, scoped_key, seq_key, Store};
use crate::util::{new_task_id, now_ms};

/// Why a queue operation failed.
#[derive(Debug, Clone)]
pub enum QueueError {
    /// Refused by the task's rules; nothing changed.
    Task(TaskError),
    /// The store failed; the change was not made durable.
    Store(StoreError),
    /// The submission does not fit what the queue holds (an unknown dependency, a
    /// dependency cycle, a repeated `ref`); nothing changed.
    Invalid(Vec<FieldError>),
}

impl QueueError {
    /// Wire form, e.g. `stale_generation` or `storage_error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueError::Task(e) => e.as_str(),
            QueueError::Store(_) => "storage_error",
            QueueError::Invalid(_) => "validation_failed",
        }
    }
}

impl From<TaskError> for QueueError {
    fn from(e: TaskError) -> Self {
        QueueError::Task(e)
    }
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError::Store(e)
    }
}

/// The lease of an assigned task.
#[derive(Debug, Clone)]
struct Lease {
    agent_id: String,
    generation: u64,
    accepted: bool,
    deadline: i64,
}

/// What callers of `with_task` need to know about the changed task.
#[derive(Debug, Clone)]
struct Changed {
    status: TaskStatus,
    generation: u64,
    updated_at: i64,
}

/// The event-log records of a task's new history entries. The agent of an event
/// is the one its details name (the holder, for reports and reclaims).
fn task_events(task: &Task, recorded: &[HistoryEntry], actor: &str) -> Vec<NewEvent> {
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

/// Not schedulable whatever the time: not queued, waiting for dependencies, or
/// in a paused lane.
fn held_back(task: &Task, waiting: &HashMap<String, BTreeSet<String>>, paused: &[bool; 4]) -> bool {
    task.status != TaskStatus::Queued
        || waiting.contains_key(&task.id)
        || paused[usize::from(task.priority.min(3))]
}

/// What a change means for the tasks that depend on the changed one.
enum Settle {
    /// The task completed, dead-lettered, was cancelled or blocked on a dependency.
    Finished(String, TaskStatus),
    /// `task`, back in the queue, depends on `dep`, which cannot complete.
    Block {
        task: String,
        dep: String,
        status: TaskStatus,
    },
}

impl TaskQueue {
    /// Creates the follow-ups of a completion about to be accepted, before the
    /// completion is written: a crash can then leave follow-ups without their
    /// completion (the agent's retry of the report finds them by their fixed ids)
    /// but never a completion without its follow-ups. A repeat of an accepted
    /// completion creates nothing.
    fn create_follow_ups(
        &mut self,
        task_id: &str,
        agent: &str,
        generation: u64,
        specs: Vec<TaskSpec>,
    ) -> Result<(), QueueError> {
        if specs.is_empty() {
            return Ok(());
        }
        let Some(parent) = self.ids.get(task_id).and_then(|seq| self.live.get(seq)) else {
            // Finished or unknown: `complete` answers the repeat or the refusal.
            return Ok(());
        };
        if parent.check_holder(agent, Some(generation)).is_err() {
            return Ok(());
        }
        let correlation = parent.correlation().to_string();
        let items = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| NewTask {
                spec,
                id: Some(follow_up_id(task_id, generation, i)),
                parent: Some((task_id.to_string(), correlation.clone())),
            })
            .collect();
        self.create_tasks(items, agent, |i| format!("follow_ups[{i}]."))?;
        Ok(())
    }
}

/// Effects that others may see only after the change is durable.
#[derive(Default)]
pub(crate) struct Effects {
    /// For the event bus, published after the flush like every other effect.
    events: Vec<HubEvent>,
    ready: Vec<TaskReady>,
    unready: Vec<String>,
    withdrawn: Vec<Withdrawn>,
    counts: Vec<Count>,
}

impl Effects {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.ready.is_empty()
            && self.unready.is_empty()
            && self.withdrawn.is_empty()
            && self.counts.is_empty()
    }
}

pub struct TaskQueue {
    store: Store,
    defaults: TaskDefaults,
    sweep_every: Duration,
    /// Unfinished tasks (queued, assigned, blocked) by sequence.
    live: BTreeMap<u64, Task>,
    /// Task id → sequence, for live tasks.
    ids: HashMap<String, u64>,
    /// `dedupe_key` → task id, for live tasks that have one.
    dedupe: HashMap<String, String>,
    /// Sequences of dead-lettered tasks.
    dead_letter: BTreeSet<u64>,
    /// Live task id → its dependencies not completed yet. A task listed here is
    /// not scheduled.
    waiting: HashMap<String, BTreeSet<String>>,
    /// Dependency id → the live tasks that wait for it.
    dependents: HashMap<String, BTreeSet<String>>,
    /// (due ms, task id): `run_after` times and `requeue` policy delays.
    timers: BTreeSet<(i64, String)>,
    /// Paused priority lanes: their queued tasks are not scheduled.
    paused: [bool; 4],
    /// Effects of changes made in this handler (with_task adds the scheduling and
    /// dependency ones), released after the flush with the handler's own.
    pending: Effects,
    log: EventLog,
    blocked_policy: BlockedPolicy,
    blocked_requeue_ms: u64,
    counts: HashMap<TaskStatus, u64>,
    queued_by_priority: [u64; 4],
    /// Assigned tasks by id.
    leases: HashMap<String, Lease>,
    next_seq: u64,
    scheduler: Addr<Scheduler>,
    presence: Addr<Presence>,
    analytics: Addr<Analytics>,
    telemetry: Arc<Telemetry>,
    bus: EventBus,
    /// Task events not yet published (they wait for the flush of their change).
    unpublished: Vec<HubEvent>,
    event_seq: u64,
    completions: Completions,
}

impl TaskQueue {
    /// Publishes task events on `bus` from now on.
    pub fn with_bus(mut self, bus: EventBus) -> TaskQueue {
        self.bus = bus;
        self
    }

    /// Counts task events into `telemetry` (the hub's metrics) from now on.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> TaskQueue {
        self.telemetry = telemetry;
        self
    }

    /// Rebuilds the in-memory index from sled. A record that cannot be decoded is
    /// reported and left in place (never deleted), and the rest still load.
    pub fn load(
        store: Store,
        config: &Config,
        scheduler: Addr<Scheduler>,
        presence: Addr<Presence>,
        analytics: Addr<Analytics>,
        log: EventLog,
    ) -> Result<TaskQueue, StoreError> {
        let mut queue = TaskQueue {
            waiting: HashMap::new(),
            dependents: HashMap::new(),
            timers: BTreeSet::new(),
            paused: [false; 4],
            pending: Effects::default(),
            log,
            blocked_policy: config.blocked_policy,
            blocked_requeue_ms: config.blocked_requeue_ms,
            defaults: TaskDefaults {
                max_retries: config.default_max_retries,
                max_reclaims: config.default_max_reclaims,
                lease_ms: config.default_lease_ms,
            },
            sweep_every: Duration::from_millis(config.sweep_interval_ms),
            live: BTreeMap::new(),
            ids: HashMap::new(),
            dedupe: HashMap::new(),
            dead_letter: BTreeSet::new(),
            counts: HashMap::new(),
            queued_by_priority: [0; 4],
            leases: HashMap::new(),
            next_seq: 1,
            scheduler,
            presence,
            analytics,
            telemetry: Arc::new(Telemetry::default()),
            bus: EventBus::new(),
            unpublished: Vec::new(),
            event_seq: 0,
            completions: Completions::default(),
            store,
        };
        queue.reload()?;
        Ok(queue)
    }

    /// Updates counters, dead letter and leases for a task whose (status, priority)
    /// went from `old` (None when new) to its current ones.
    fn index(&mut self, task: &Task, old: Option<(TaskStatus, u8)>, now: i64) {
        if let Some((old, old_priority)) = old {
            if let Some(c) = self.counts.get_mut(&old) {
                *c = c.saturating_sub(1);
            }
            if old == TaskStatus::Queued {
                // The lane it was counted in (a priority change moves it).
                let p = &mut self.queued_by_priority[usize::from(old_priority.min(3))];
                *p = p.saturating_sub(1);
            }
        }
        *self.counts.entry(task.status).or_insert(0) += 1;
        if task.status == TaskStatus::Queued {
            self.queued_by_priority[usize::from(task.priority.min(3))] += 1;
        }
        if task.status == TaskStatus::DeadLetter {
            self.dead_letter.insert(task.seq);
        } else {
            self.dead_letter.remove(&task.seq);
        }
        match (&task.assigned_to, task.status) {
            (Some(agent), TaskStatus::Assigned) => {
                let same = self
                    .leases
                    .get(&task.id)
                    .is_some_and(|l| l.generation == task.generation);
                if !same {
                    self.leases.insert(
                        task.id.clone(),
                        Lease {
                            agent_id: agent.clone(),
                            generation: task.generation,
                            accepted: task.accepted_at.is_some(),
                            deadline: now.saturating_add(task.lease_ms as i64),
                        },
                    );
                }
            }
            _ => {
                self.leases.remove(&task.id);
            }
        }
    }

    /// Queues a task event for the bus; it goes out after the flush.
    fn announce(
        &mut self,
        task: &Task,
        event: &str,
        timestamp: i64,
        description: Option<String>,
        completion: Option<Value>,
    ) {
        self.event_seq += 1;
        self.unpublished.push(HubEvent::TaskEvent {
            task_id: task.id.clone(),
            event: event.to_string(),
            agent_id: task.assigned_to.clone(),
            timestamp,
            status: task.status.as_str(),
            seq: self.event_seq,
            priority: task.priority,
            description,
            completion,
        });
    }

    /// The live task holding `key`, as a submit reply.
    fn dedupe_hit(&self, key: &str) -> Option<Submitted> {
        let id = self.dedupe.get(key)?;
        let task = self.ids.get(id).and_then(|seq| self.live.get(seq))?;
        Some(Submitted {
            task_id: task.id.clone(),
            priority: task.priority,
            created_at: task.created_at,
            existing: true,
        })
    }

    fn ready_of(task: &Task) -> TaskReady {
        TaskReady {
            task_id: task.id.clone(),
            seq: task.seq,
            priority: task.priority,
            capabilities: task.needed_capabilities.clone(),
        }
    }

    /// Reads a task from memory or, for finished tasks, from sled.
    fn read(&self, id: &str) -> Result<Option<Task>, StoreError> {
        if let Some(seq) = self.ids.get(id) {
            if let Some(t) = self.live.get(seq) {
                return Ok(Some(t.clone()));
            }
        }
        self.read_stored(id)
    }

    /// Reads a task's stored record from sled.
    fn read_stored(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let Some(seq) = self.store.task_ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        match self.store.tasks.get(&seq)? {
            None => Ok(None),
            Some(v) => decode("tasks", &seq, &v).map(Some),
        }
    }

    /// Applies `change` to one task (see [`TaskQueue::change_task`]), then settles
    /// what the change means for the tasks that depend on it.
    fn with_task<R>(
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
    /// the record written to sled, or nothing. The task is moved out of memory and
    /// back, never cloned (this is the hot path). Scheduling follows the new state:
    /// a task that became schedulable is made ready, one that left the queue is
    /// withdrawn from the scheduler. Tasks whose new state matters to their
    /// dependents are pushed on `settle`.
    fn change_task<R>(
        &mut self,
        id: &str,
        actor: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
        settle: &mut Vec<Settle>,
    ) -> Result<(R, Changed), QueueError> {
        let now = now_ms();
        let live_seq = self.ids.get(id).copied();
        let mut task = match live_seq.and_then(|seq| self.live.remove(&seq)) {
            Some(t) => t,
            None => match self.read(id)? {
                Some(t) => t,
                None => return Err(TaskError::NotFound.into()),
            },
        };
        let old = task.status;
        let old_priority = task.priority;
        let recorded_before = task.recorded;
        let put_back = |this: &mut Self, task: Task| {
            if live_seq.is_some() {
                this.live.insert(task.seq, task);
            }
        };
        let out = match change(&mut task, now) {
            Ok(out) => out,
            Err(e) => {
                put_back(self, task);
                return Err(e.into());
            }
        };
        let recorded = task.recorded_since(recorded_before);
        // The events first: a change is never durable without its record in the log.
        if let Err(e) = self.log.append(task_events(&task, recorded, actor)) {
            tracing::error!(task_id = %id, error = %e, "event log write failed; change refused");
            if let Ok(Some(stored)) = self.read_stored(id) {
                put_back(self, stored);
            }
            return Err(QueueError::Store(e));
        }
        if let Err(e) = self.store.tasks.insert(seq_key(task.seq), encode(&task)) {
            // Not written: the in-memory record must not run ahead of sled. The
            // change methods only move forward, so reload the stored record.
            tracing::error!(task_id = %id, error = %e, "task write failed");
            if let Ok(Some(stored)) = self.read_stored(id) {
                put_back(self, stored);
            }
            return Err(QueueError::Store(e.into()));
        }
        self.index(&task, Some((old, old_priority)), now);
        self.telemetry
            .task_events(recorded, task.created_at, task.assigned_at);
        let completion = recorded
            .iter()
            .any(|e| e.event == "completed")
            .then(|| Completion::of(&task))
            .flatten();
        if let Some(c) = &completion {
            self.completions.record(c.clone());
        }
        if self.bus.watched() {
            let row = completion
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok());
            let recorded: Vec<(String, i64)> =
                recorded.iter().map(|e| (e.event.clone(), e.ts)).collect();
            for (event, ts) in recorded {
                let row = (event == "completed").then(|| row.clone()).flatten();
                self.announce(&task, &event, ts, None, row);
            }
        }
        let changed = Changed {
            status: task.status,
            generation: task.generation,
            updated_at: task.updated_at,
        };
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
            if let Some((dep, status)) = self.track_dependencies(&task) {
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
                    self.pending.unready.push(task.id.clone());
                }
                self.offer(&task, now);
            }
            (TaskStatus::Queued, TaskStatus::Assigned) => {}
            (TaskStatus::Queued, _) => self.pending.unready.push(task.id.clone()),
            _ => {}
        }
        if let Some(at) = task
            .unblock_at
            .filter(|_| task.status == TaskStatus::Blocked)
        {
            self.timers.insert((at, task.id.clone()));
        }
        if task.status.is_terminal() {
            self.ids.remove(&task.id);
            self.waiting.remove(&task.id);
            if let Some(key) = &task.dedupe_key {
                if self.dedupe.get(key) == Some(&task.id) {
                    self.dedupe.remove(key);
                }
            }
        } else {
            if let Some(key) = task
                .dedupe_key
                .as_ref()
                .filter(|k| !self.dedupe.contains_key(*k))
            {
                // Back from dead letter: the key is its again unless another took it.
                self.dedupe.insert(key.clone(), task.id.clone());
            }
            self.ids.insert(task.id.clone(), task.seq);
            self.live.insert(task.seq, task);
        }
        Ok((out, changed))
    }

    /// Makes a queued task ready if nothing holds it back; one that waits for its
    /// `run_after` gets a timer.
    fn offer(&mut self, task: &Task, now: i64) {
        if self.held_back(task) {
            return;
        }
        match task.run_after {
            Some(at) if at > now => {
                self.timers.insert((at, task.id.clone()));
            }
            _ => self.pending.ready.push(Self::ready_of(task)),
        }
    }

    /// `offer` for a live task, found by id (no copy of the task).
    fn offer_live(&mut self, id: &str, now: i64) {
        let Some(task) = self.ids.get(id).and_then(|seq| self.live.get(seq)) else {
            return;
        };
        if held_back(task, &self.waiting, &self.paused) {
            return;
        }
        match task.run_after {
            Some(at) if at > now => {
                self.timers.insert((at, task.id.clone()));
            }
            _ => self.pending.ready.push(Self::ready_of(task)),
        }
    }

    /// Not schedulable whatever the time: not queued, waiting for dependencies,
    /// or in a paused lane.
    fn held_back(&self, task: &Task) -> bool {
        held_back(task, &self.waiting, &self.paused)
    }

    /// The status of any task, live or finished; `None` when unknown or unreadable.
    fn status_of(&self, id: &str) -> Option<TaskStatus> {
        if let Some(t) = self.ids.get(id).and_then(|seq| self.live.get(seq)) {
            return Some(t.status);
        }
        match self.read_stored(id) {
            Ok(t) => t.map(|t| t.status),
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "dependency unreadable");
                None
            }
        }
    }

    /// Records which of `task`'s dependencies are unfinished (it waits for them).
    /// Answers a dependency that can no longer complete, if there is one.
    fn track_dependencies(&mut self, task: &Task) -> Option<(String, TaskStatus)> {
        let mut open = BTreeSet::new();
        let mut failed = None;
        for dep in &task.depends_on {
            match self.status_of(dep) {
                Some(TaskStatus::Completed) => {}
                Some(s @ (TaskStatus::DeadLetter | TaskStatus::Cancelled)) => {
                    // Held back until the settling blocks it (never offered in
                    // between), and freed should the dependency complete after an
                    // operator's retry.
                    failed.get_or_insert((dep.clone(), s));
                    open.insert(dep.clone());
                    self.dependents
                        .entry(dep.clone())
                        .or_default()
                        .insert(task.id.clone());
                }
                Some(s) => {
                    let blocked_on_dep = s == TaskStatus::Blocked
                        && self
                            .ids
                            .get(dep)
                            .and_then(|seq| self.live.get(seq))
                            .is_some_and(|d| d.blocked_on.is_some());
                    if blocked_on_dep {
                        failed.get_or_insert((dep.clone(), s));
                    }
                    open.insert(dep.clone());
                    self.dependents
                        .entry(dep.clone())
                        .or_default()
                        .insert(task.id.clone());
                }
                None => {
                    // Unknown (a record lost to corruption): it can never complete.
                    failed.get_or_insert((dep.clone(), TaskStatus::Cancelled));
                    open.insert(dep.clone());
                }
            }
        }
        if open.is_empty() {
            self.waiting.remove(&task.id);
        } else {
            self.waiting.insert(task.id.clone(), open);
        }
        failed
    }

    /// What finished tasks mean for the tasks waiting on them: a completion frees
    /// its dependents (scheduled once nothing else holds them); a dead letter,
    /// cancel or dependency block blocks them, and so on down the chain.
    fn settle_dependencies(&mut self, mut settle: Vec<Settle>) {
        while let Some(item) = settle.pop() {
            let (dep, status, dependents) = match item {
                Settle::Block { task, dep, status } => (dep, status, vec![task]),
                Settle::Finished(id, TaskStatus::Completed) => {
                    self.release_dependents(&id);
                    continue;
                }
                Settle::Finished(id, status) => {
                    let dependents: Vec<String> = self
                        .dependents
                        .get(&id)
                        .map(|d| d.iter().cloned().collect())
                        .unwrap_or_default();
                    (id, status, dependents)
                }
            };
            for dependent in dependents {
                let queued = self
                    .ids
                    .get(&dependent)
                    .and_then(|seq| self.live.get(seq))
                    .is_some_and(|t| t.status == TaskStatus::Queued);
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

    /// `id` completed: its dependents stop waiting for it, and those waiting for
    /// nothing else are offered to the scheduler.
    fn release_dependents(&mut self, id: &str) {
        let now = now_ms();
        for d in self.dependents.remove(id).unwrap_or_default() {
            let Some(open) = self.waiting.get_mut(&d) else {
                continue;
            };
            open.remove(id);
            if open.is_empty() {
                self.waiting.remove(&d);
                self.offer_live(&d, now);
            }
        }
    }

    fn renew(&mut self, task_id: &str, accepted: bool) {
        let now = now_ms();
        let lease_ms = self
            .ids
            .get(task_id)
            .and_then(|seq| self.live.get(seq))
            .map_or(self.defaults.lease_ms, |t| t.lease_ms);
        if let Some(lease) = self.leases.get_mut(task_id) {
            lease.deadline = now.saturating_add(lease_ms as i64);
            lease.accepted |= accepted;
        }
    }

    /// Replies once the writes so far are durable, then releases the effects.
    fn after_flush<T: 'static>(
        &mut self,
        mut effects: Effects,
        value: Result<T, QueueError>,
    ) -> ResponseActFuture<Self, Result<T, QueueError>> {
        if value.is_err() && self.pending.is_empty() && self.unpublished.is_empty() {
            // A failed change wrote nothing.
            return Box::pin(fut::ready(value));
        }
        self.take_pending(&mut effects);
        Box::pin(
            self.store
                .durable()
                .into_actor(self)
                .map(move |flushed, act, _| {
                    flushed?;
                    act.release(effects);
                    value
                }),
        )
    }

    fn release(&self, effects: Effects) {
        for event in effects.events {
            self.bus.publish(event);
        }
        for task_id in effects.unready {
            self.scheduler.do_send(TaskUnready { task_id });
        }
        for ready in effects.ready {
            self.scheduler.do_send(ready);
        }
        for w in effects.withdrawn {
            self.presence.do_send(ToAgent(w));
        }
        for c in effects.counts {
            self.analytics.do_send(c);
        }
    }

    /// Reclaims every assigned task whose lease ran out or whose `complete_by`
    /// passed, and runs the timers that are due (`run_after`, `requeue` delays).
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut due = Vec::new();
        for (task_id, lease) in &self.leases {
            let overdue = self
                .ids
                .get(task_id)
                .and_then(|seq| self.live.get(seq))
                .and_then(|t| t.complete_by)
                .is_some_and(|by| by < now);
            if overdue {
                due.push((task_id.clone(), lease.clone(), "overdue"));
            } else if lease.deadline < now {
                due.push((task_id.clone(), lease.clone(), "lease_expired"));
            }
        }
        let timers_due = self.timers.first().is_some_and(|(at, _)| *at <= now);
        if due.is_empty() && !timers_due {
            return;
        }
        let mut effects = Effects::default();
        for (task_id, lease, reason) in due {
            match self.with_task(&task_id, "hub", |t, now| {
                t.reclaim(&lease.agent_id, lease.generation, reason, now)
            }) {
                Ok(_) => {
                    tracing::warn!(task_id = %task_id, agent_id = %lease.agent_id, reason, "task reclaimed");
                    effects.withdrawn.push(Withdrawn {
                        agent_id: lease.agent_id,
                        task_id,
                        generation: lease.generation,
                        reason: reason.to_string(),
                    });
                }
                Err(e) => {
                    tracing::error!(task_id = %task_id, error = e.as_str(), "sweep reclaim failed")
                }
            }
        }
        self.run_timers(now);
        self.spawn_release(ctx, effects);
    }

    /// Tasks whose `run_after` came are offered; blocked tasks whose `requeue`
    /// delay passed go back to the queue.
    fn run_timers(&mut self, now: i64) {
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id.clone()));
            let Some(task) = self.ids.get(&id).and_then(|seq| self.live.get(seq)) else {
                continue;
            };
            match task.status {
                TaskStatus::Queued => self.offer_live(&id, now),
                TaskStatus::Blocked if task.unblock_at.is_some_and(|u| u <= now) => {
                    if let Err(e) = self.with_task(&id, "hub", |t, now| t.unblock_due(now)) {
                        tracing::error!(task_id = %id, error = e.as_str(), "blocked task not requeued");
                    }
                }
                _ => {}
            }
        }
    }

    /// Releases `effects` (and the pending ones) after a flush, outside any reply.
    fn spawn_release(&mut self, ctx: &mut Context<Self>, mut effects: Effects) {
        self.take_pending(&mut effects);
        if effects.is_empty() {
            return;
        }
        ctx.spawn(
            self.store
                .durable()
                .into_actor(self)
                .map(|flushed, act, _| match flushed {
                    Ok(()) => act.release(effects),
                    Err(e) => tracing::error!(error = %e, "flush before release failed"),
                }),
        );
    }

    /// Moves the effects accumulated by changes into `effects`.
    fn take_pending(&mut self, effects: &mut Effects) {
        let pending = std::mem::take(&mut self.pending);
        effects.events.extend(std::mem::take(&mut self.unpublished));
        effects.events.extend(pending.events);
        effects.ready.extend(pending.ready);
        effects.unready.extend(pending.unready);
        effects.withdrawn.extend(pending.withdrawn);
        effects.counts.extend(pending.counts);
    }

    fn stats(&self) -> Value {
        let by_status: Map<String, Value> = TaskStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_string(),
                    json!(self.counts.get(s).copied().unwrap_or(0)),
                )
            })
            .collect();
        let by_priority: Map<String, Value> = self
            .queued_by_priority
            .iter()
            .enumerate()
            .map(|(p, n)| (p.to_string(), json!(n)))
            .collect();
        json!({
            "by_status": by_status,
            "by_priority": by_priority,
            "dead_letter": self.dead_letter.len(),
            "paused_lanes": self.paused_lanes(),
            "waiting_on_dependencies": self.waiting.len(),
        })
    }
}

/// A reply to give when a handler panicked (the queue restarts from sled).
pub trait PanicReply {
    fn after_panic() -> Self;
}

impl<T: 'static> PanicReply for ResponseActFuture<TaskQueue, Result<T, QueueError>> {
    fn after_panic() -> Self {
        Box::pin(fut::ready(Err(QueueError::Store(StoreError::Sled(
            "internal error: the task queue restarted from storage".into(),
        )))))
    }
}

impl<T> PanicReply for Result<T, StoreError> {
    fn after_panic() -> Self {
        Err(StoreError::Sled(
            "internal error: the task queue restarted from storage".into(),
        ))
    }
}

impl PanicReply for () {
    fn after_panic() -> Self {}
}

impl<M> PanicReply for MessageResult<M>
where
    M: Message,
    M::Result: Default,
{
    fn after_panic() -> Self {
        MessageResult(M::Result::default())
    }
}

impl TaskQueue {
    /// Runs a handler body. A panic is contained: it is logged, the caller gets an
    /// error, and the actor stops so its `Supervisor` restarts it from sled (the
    /// in-memory index may be half-changed; the store is not).
    fn contained<R: PanicReply>(
        &mut self,
        ctx: &mut Context<Self>,
        body: impl FnOnce(&mut Self) -> R,
    ) -> R {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(self))) {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!("task queue handler panicked; restarting it from storage");
                ctx.stop();
                R::after_panic()
            }
        }
    }

    /// Rebuilds every in-memory index from sled (start and restart).
    fn reload(&mut self) -> Result<(), StoreError> {
        self.live.clear();
        self.ids.clear();
        self.dedupe.clear();
        self.dead_letter.clear();
        self.counts.clear();
        self.queued_by_priority = [0; 4];
        self.leases.clear();
        self.waiting.clear();
        self.dependents.clear();
        self.timers.clear();
        self.load_paused()?;
        self.completions = Completions::default();
        let now = now_ms();
        let mut corrupt = 0usize;
        for item in self.store.tasks.iter() {
            let (key, value) = item?;
            let task: Task = match decode("tasks", &key, &value) {
                Ok(t) => t,
                Err(e) => {
                    corrupt += 1;
                    tracing::error!(error = %e, "skipping unreadable task record");
                    continue;
                }
            };
            if let Some(seq) = key_seq(&key) {
                self.next_seq = self.next_seq.max(seq + 1);
            }
            // The id index is written in the same flush as the record; repair it if a
            // crash left only the record.
            if self.store.task_ids.get(task.id.as_bytes())?.is_none() {
                self.store
                    .task_ids
                    .insert(task.id.as_bytes(), &seq_key(task.seq))?;
            }
            self.index(&task, None, now);
            if let Some(c) = Completion::of(&task) {
                self.completions.record(c);
            }
            if !task.status.is_terminal() {
                if let Some(key) = &task.dedupe_key {
                    self.dedupe.insert(key.clone(), task.id.clone());
                }
                self.ids.insert(task.id.clone(), task.seq);
                self.live.insert(task.seq, task);
            }
        }
        // Dependencies and timers need every live task loaded first.
        let mut dependent = Vec::new();
        for task in self.live.values() {
            if !task.depends_on.is_empty() && task.status == TaskStatus::Queued {
                dependent.push(task.seq);
            }
            let at = match task.status {
                TaskStatus::Queued => task.run_after.filter(|at| *at > now),
                TaskStatus::Blocked => task.unblock_at,
                _ => None,
            };
            if let Some(at) = at {
                self.timers.insert((at, task.id.clone()));
            }
        }
        let mut settle = Vec::new();
        for seq in dependent {
            let Some(task) = self.live.get(&seq).cloned() else {
                continue;
            };
            // A dependency that failed while the hub stopped before its dependents
            // were blocked: block them now.
            if let Some((dep, status)) = self.track_dependencies(&task) {
                settle.push(Settle::Block {
                    task: task.id,
                    dep,
                    status,
                });
            }
        }
        self.settle_dependencies(settle);
        // What the settling made ready is offered in `started`, with the rest.
        self.pending = Effects::default();
        tracing::info!(
            tasks = self.counts.values().sum::<u64>(),
            live = self.live.len(),
            waiting = self.waiting.len(),
            corrupt,
            "task queue loaded"
        );
        Ok(())
    }
}

impl Supervised for TaskQueue {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "task queue could not reload from storage");
        }
    }
}

impl Actor for TaskQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Everything that was queued before the restart is ready again, in order.
        let now = now_ms();
        for task in self.live.values() {
            if !self.held_back(task) && task.run_after.is_none_or(|at| at <= now) {
                self.scheduler.do_send(Self::ready_of(task));
            }
        }
        ctx.run_interval(self.sweep_every, |act, ctx| act.sweep(ctx));
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// One accepted submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task_id: String,
    pub priority: u8,
    pub created_at: i64,
    /// An unfinished task with the same `dedupe_key` existed (or, for hub-made
    /// tasks with a fixed id, that task existed): this is that task, and nothing
    /// was created.
    pub existing: bool,
}

impl Submitted {
    fn of(task: &Task, existing: bool) -> Submitted {
        Submitted {
            task_id: task.id.clone(),
            priority: task.priority,
            created_at: task.created_at,
            existing,
        }
    }
}

/// A task to create: a validated spec plus what only the hub sets.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub spec: TaskSpec,
    /// A fixed id (follow-ups, standing-order runs): creating it twice creates it
    /// once.
    pub id: Option<String>,
    /// (parent task id, correlation id) of a follow-up.
    pub parent: Option<(String, String)>,
}

impl NewTask {
    pub fn from_spec(spec: TaskSpec) -> NewTask {
        NewTask {
            spec,
            id: None,
            parent: None,
        }
    }
}

/// The id of the `index`-th follow-up of `parent`'s completion at `generation`:
/// the same every time, so a repeated or replayed completion creates nothing new.
pub fn follow_up_id(parent: &str, generation: u64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("follow-up\0{parent}\0{generation}\0{index}"));
    format!("task-{}", hex::encode(&digest[..8]))
}

/// Where a batch entry's task comes from.
enum Planned {
    /// Answered with an existing task.
    Existing(Submitted),
    /// The `n`-th new task.
    New(usize),
}

impl TaskQueue {
    /// Creates tasks (one, a batch, or a completion's follow-ups) in one write,
    /// made durable by the caller's flush. `field` names entry `i` in errors.
    /// Dependencies are resolved against existing tasks and the batch's own `ref`s;
    /// an unknown one, a `ref` used twice or a cycle refuses the whole batch.
    fn create_tasks(
        &mut self,
        items: Vec<NewTask>,
        submitted_by: &str,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Submitted>, QueueError> {
        let now = now_ms();
        let mut errors = Vec::new();
        let mut plan = Vec::with_capacity(items.len());
        let mut fresh: Vec<(NewTask, String)> = Vec::new();
        let mut batch_keys: HashMap<String, usize> = HashMap::new();
        let mut refs: HashMap<String, String> = HashMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let existing = match &item.id {
                Some(id) => self.read(id)?.map(|t| Submitted::of(&t, true)),
                None => None,
            };
            let existing = existing.or_else(|| {
                let key = item.spec.dedupe_key.as_ref()?;
                self.dedupe_hit(key).or_else(|| {
                    // The same key twice in one batch: one task.
                    let n = *batch_keys.get(key)?;
                    Some(Submitted {
                        task_id: fresh[n].1.clone(),
                        priority: fresh[n].0.spec.priority,
                        created_at: now,
                        existing: true,
                    })
                })
            });
            let id = match &existing {
                Some(s) => s.task_id.clone(),
                None => item.id.clone().unwrap_or_else(new_task_id),
            };
            if let Some(r) = &item.spec.batch_ref {
                if refs.insert(r.clone(), id.clone()).is_some() {
                    errors.push(FieldError::new(
                        &format!("{}ref", field(i)),
                        "invalid_value",
                        format!("ref {r:?} names two entries of the batch"),
                    ));
                }
            }
            match existing {
                Some(s) => plan.push(Planned::Existing(s)),
                None => {
                    if let Some(key) = &item.spec.dedupe_key {
                        batch_keys.insert(key.clone(), fresh.len());
                    }
                    plan.push(Planned::New(fresh.len()));
                    fresh.push((item, id));
                }
            }
        }
        // Resolve `depends_on`: a batch ref or an existing task.
        let new_ids: HashMap<String, usize> = fresh
            .iter()
            .enumerate()
            .map(|(n, (_, id))| (id.clone(), n))
            .collect();
        let entry_of: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Planned::New(_) => Some(i),
                Planned::Existing(_) => None,
            })
            .collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); fresh.len()];
        for (n, (item, _)) in fresh.iter_mut().enumerate() {
            let mut resolved = Vec::with_capacity(item.spec.depends_on.len());
            for dep in &item.spec.depends_on {
                let id = match refs.get(dep) {
                    Some(id) => id.clone(),
                    None if self.status_of(dep).is_some() || new_ids.contains_key(dep) => {
                        dep.clone()
                    }
                    None => {
                        errors.push(FieldError::new(
                            &format!("{}depends_on", field(entry_of[n])),
                            "unknown_dependency",
                            format!("{dep:?} is neither a task nor a ref of this batch"),
                        ));
                        continue;
                    }
                };
                if let Some(&m) = new_ids.get(&id) {
                    edges[n].push(m);
                }
                if !resolved.contains(&id) {
                    resolved.push(id);
                }
            }
            item.spec.depends_on = resolved;
        }
        for n in cycle_members(&edges) {
            errors.push(FieldError::new(
                &format!("{}depends_on", field(entry_of[n])),
                "dependency_cycle",
                "the batch's dependencies form a cycle through this entry",
            ));
        }
        if !errors.is_empty() {
            return Err(QueueError::Invalid(errors));
        }
        let mut tasks = Vec::with_capacity(fresh.len());
        let mut records = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut correlations = sled::Batch::default();
        let mut events = Vec::new();
        for (item, id) in fresh {
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut task = Task::new(id, seq, item.spec, submitted_by, self.defaults, now);
            if let Some((parent, correlation)) = item.parent {
                task.parent_task_id = Some(parent);
                task.correlation_id = Some(correlation);
            }
            events.extend(task_events(&task, &task.history, submitted_by));
            records.insert(&seq_key(seq), encode(&task));
            ids.insert(task.id.as_bytes(), &seq_key(seq));
            correlations.insert(scoped_key(task.correlation(), seq), &[]);
            tasks.push(task);
        }
        self.log.append(events)?;
        self.store
            .tasks
            .apply_batch(records)
            .and_then(|()| self.store.task_ids.apply_batch(ids))
            .and_then(|()| self.store.task_correlations.apply_batch(correlations))
            .map_err(StoreError::from)?;
        self.telemetry
            .add(MetricCounter::Submitted, tasks.len() as u64);
        let replies: Vec<Submitted> = plan
            .into_iter()
            .map(|p| match p {
                Planned::Existing(s) => s,
                Planned::New(n) => Submitted::of(&tasks[n], false),
            })
            .collect();
        let mut with_deps = Vec::new();
        for task in tasks {
            if let Some(key) = &task.dedupe_key {
                self.dedupe.insert(key.clone(), task.id.clone());
            }
            if self.bus.watched() {
                let description = Some(short_description(&task.description));
                self.announce(&task, "queued", task.created_at, description, None);
            }
            self.index(&task, None, now);
            if !task.depends_on.is_empty() {
                with_deps.push(task.seq);
            }
            self.ids.insert(task.id.clone(), task.seq);
            self.live.insert(task.seq, task);
        }
        // Every new task is in place, so dependencies inside the batch resolve.
        let mut settle = Vec::new();
        for seq in with_deps {
            let Some(task) = self.live.get(&seq).cloned() else {
                continue;
            };
            if let Some((dep, status)) = self.track_dependencies(&task) {
                settle.push(Settle::Block {
                    task: task.id.clone(),
                    dep,
                    status,
                });
            }
        }
        for s in replies.iter().filter(|s| !s.existing) {
            self.offer_live(&s.task_id, now);
        }
        self.settle_dependencies(settle);
        Ok(replies)
    }
}

/// The entries of a dependency graph (entry → entries it depends on) that lie on
/// or behind a cycle: what a topological sort cannot order.
fn cycle_members(edges: &[Vec<usize>]) -> Vec<usize> {
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

/// Create tasks (one or a batch, all in one flush). A spec whose `dedupe_key`
/// an unfinished task holds (or an earlier spec of the batch) creates nothing and
/// is answered with that task.
#[derive(Message)]
#[rtype(result = "Result<Vec<Submitted>, QueueError>")]
pub struct Submit {
    pub specs: Vec<TaskSpec>,
    pub submitted_by: String,
    /// Errors name entries `[i].` (a batch) or nothing (a single task).
    pub batch: bool,
}

impl Handler<Submit> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<Submitted>, QueueError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let items = msg.specs.into_iter().map(NewTask::from_spec).collect();
            let batch = msg.batch;
            let result = this.create_tasks(items, &msg.submitted_by, |i| {
                if batch {
                    format!("[{i}].")
                } else {
                    String::new()
                }
            });
            this.after_flush(Effects::default(), result)
        })
    }
}

/// Create hub-made tasks with fixed ids (standing-order runs): each is created
/// once, whatever how often it is asked for.
#[derive(Message)]
#[rtype(result = "Result<Vec<Submitted>, QueueError>")]
pub struct SubmitFixed {
    pub tasks: Vec<NewTask>,
    pub submitted_by: String,
}

impl Handler<SubmitFixed> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<Submitted>, QueueError>>;

    fn handle(&mut self, msg: SubmitFixed, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.create_tasks(msg.tasks, &msg.submitted_by, |i| format!("[{i}]."));
            this.after_flush(Effects::default(), result)
        })
    }
}

/// The scheduler's decision: give this queued task to this agent.
#[derive(Message)]
#[rtype(result = "Result<TaskAssignment, QueueError>")]
pub struct Assign {
    pub task_id: String,
    pub agent_id: String,
}

impl Handler<Assign> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<TaskAssignment, QueueError>>;

    fn handle(&mut self, msg: Assign, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this
                .with_task(&msg.task_id, "hub", |t, now| t.assign(&msg.agent_id, now))
                .map(|(a, _)| a);
            if result.is_ok() {
                tracing::info!(task_id = %msg.task_id, agent_id = %msg.agent_id, "task assigned");
            }
            this.after_flush(Effects::default(), result)
        })
    }
}

/// Runs a report and tells whether it changed the task (a repeat of an accepted
/// report is acknowledged again but changes neither status nor generation).
fn fresh<R>(
    task: &mut Task,
    report: impl FnOnce(&mut Task) -> Result<R, TaskError>,
) -> Result<(R, bool), TaskError> {
    let before = (task.status, task.generation);
    let out = report(task)?;
    Ok((out, (task.status, task.generation) != before))
}

/// A lifecycle report from an agent, already validated.
#[derive(Debug, Clone)]
pub enum Report {
    Accept {
        generation: Option<u64>,
    },
    Progress {
        generation: Option<u64>,
        progress: Option<u64>,
        message: Option<String>,
    },
    Complete {
        generation: u64,
        result: Option<Map<String, Value>>,
        tokens_used: Option<u64>,
        /// Validated follow-up task specs, created with the completion.
        follow_ups: Vec<TaskSpec>,
    },
    Fail {
        generation: u64,
        error: String,
    },
    Reject {
        generation: Option<u64>,
        reason: Option<String>,
    },
    Block {
        generation: u64,
        reason: String,
        needs: Option<String>,
    },
    /// `task_recovering` and `state_report`: does the agent still hold the task?
    Recover {
        generation: Option<u64>,
    },
    /// `wake_result`; a success renews the lease.
    Wake {
        success: bool,
    },
}

/// What a report achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportReply {
    /// Send `task_ack` with this status.
    Ack(String),
    /// `task_accepted` took: the agent works on the task at this generation.
    Accepted(u64),
    /// The agent holds the task at this generation.
    Holds(u64),
    /// The agent does not hold the task.
    NotHeld,
    /// Recorded; nothing to answer.
    Noted,
}

#[derive(Message)]
#[rtype(result = "Result<ReportReply, QueueError>")]
pub struct AgentReport {
    pub agent_id: String,
    pub task_id: String,
    pub report: Report,
}

impl Handler<AgentReport> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<ReportReply, QueueError>>;

    fn handle(&mut self, msg: AgentReport, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let AgentReport {
                agent_id: agent,
                task_id,
                report,
            } = msg;
            let mut effects = Effects::default();
            let result = match report {
                Report::Recover { generation } => {
                    let holds = this
                        .leases
                        .get(&task_id)
                        .filter(|l| l.agent_id == agent && generation.is_none_or(|g| g == l.generation))
                        .map(|l| l.generation);
                    let reply = match holds {
                        Some(g) => {
                            this.renew(&task_id, true);
                            ReportReply::Holds(g)
                        }
                        None => ReportReply::NotHeld,
                    };
                    return Box::pin(fut::ready(Ok(reply)));
                }
                Report::Wake { success } => {
                    let held = this
                        .leases
                        .get(&task_id)
                        .is_some_and(|l| l.agent_id == agent);
                    if success && held {
                        this.renew(&task_id, false);
                    }
                    return Box::pin(fut::ready(Ok(ReportReply::Noted)));
                }
                Report::Progress {
                    generation,
                    progress,
                    message,
                } => {
                    let r = this.with_task(&task_id, &agent, |t, now| {
                        t.progress(&agent, generation, progress, message, now)
                    });
                    if r.is_ok() {
                        this.renew(&task_id, false);
                    }
                    // Progress is not acknowledged, so it need not wait for a flush.
                    return Box::pin(fut::ready(r.map(|_| ReportReply::Noted)));
                }
                Report::Accept { generation } => this
                    .with_task(&task_id, &agent, |t, now| t.accept(&agent, generation, now))
                    .map(|(_, task)| {
                        this.renew(&task_id, true);
                        ReportReply::Accepted(task.generation)
                    }),
                Report::Complete {
                    generation,
                    result,
                    tokens_used,
                    follow_ups,
                } => this
                    .create_follow_ups(&task_id, &agent, generation, follow_ups)
                    .and_then(|()| {
                        this.with_task(&task_id, &agent, |t, now| {
                            fresh(t, |t| {
                                t.complete(&agent, generation, result, tokens_used, now)
                            })
                        })
                    })
                    .map(|((ack, fresh), task)| {
                        if fresh {
                            effects.counts.push(Count {
                                agent_id: agent.clone(),
                                counter: Counter::TasksCompleted,
                                at: task.updated_at,
                            });
                        }
                        ReportReply::Ack(ack)
                    }),
                Report::Fail { generation, error } => this
                    .with_task(&task_id, &agent, |t, now| {
                        fresh(t, |t| t.fail(&agent, generation, error, now))
                    })
                    .map(|((ack, fresh), task)| {
                        if fresh {
                            effects.counts.push(Count {
                                agent_id: agent.clone(),
                                counter: Counter::TasksFailed,
                                at: task.updated_at,
                            });
                        }
                        ReportReply::Ack(ack)
                    }),
                Report::Reject { generation, reason } => this
                    .with_task(&task_id, &agent, |t, now| {
                        t.reject(&agent, generation, reason, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack)),
                Report::Block {
                    generation,
                    reason,
                    needs,
                } => {
                    let (policy, delay) = (this.blocked_policy, this.blocked_requeue_ms);
                    this.with_task(&task_id, &agent, |t, now| {
                        let report = BlockReport {
                            agent: &agent,
                            generation,
                            reason,
                            needs,
                        };
                        t.block(report, policy, delay, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack))
                }
            };
            if let Ok(ReportReply::Ack(status)) = &result {
                tracing::info!(task_id = %task_id, agent_id = %agent, status = %status, "task report accepted");
            }
            this.after_flush(effects, result)
        })
    }
}

/// Take a task back from an agent that lost it (disconnect, acceptance timeout).
#[derive(Message)]
#[rtype(result = "Result<ReclaimOutcome, QueueError>")]
pub struct Reclaim {
    pub task_id: String,
    pub agent_id: String,
    pub generation: u64,
    pub reason: String,
}

impl Handler<Reclaim> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<ReclaimOutcome, QueueError>>;

    fn handle(&mut self, msg: Reclaim, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this
                .with_task(&msg.task_id, "hub", |t, now| {
                    t.reclaim(&msg.agent_id, msg.generation, &msg.reason, now)
                })
                .map(|(outcome, _)| {
                    tracing::warn!(task_id = %msg.task_id, agent_id = %msg.agent_id,
                                   reason = %msg.reason, "task reclaimed");
                    outcome
                });
            this.after_flush(Effects::default(), result)
        })
    }
}

/// A task an agent holds, as seen by the queue.
#[derive(Debug, Clone)]
pub struct Held {
    pub task_id: String,
    pub generation: u64,
}

/// Tasks assigned (held by an agent) since before `assigned_before` (ms), oldest
/// first: (task id, agent id, assigned_at).
#[derive(Message)]
#[rtype(result = "Vec<(String, String, i64)>")]
pub struct StuckTasks {
    pub assigned_before: i64,
}

impl Handler<StuckTasks> for TaskQueue {
    type Result = MessageResult<StuckTasks>;

    fn handle(&mut self, msg: StuckTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut stuck: Vec<(String, String, i64)> = this
                .leases
                .iter()
                .filter_map(|(id, lease)| {
                    let task = this.ids.get(id).and_then(|seq| this.live.get(seq))?;
                    let at = task.assigned_at?;
                    (at < msg.assigned_before).then(|| (id.clone(), lease.agent_id.clone(), at))
                })
                .collect();
            stuck.sort_by_key(|(_, _, at)| *at);
            MessageResult(stuck)
        })
    }
}

/// Which tasks are assigned to this agent (oldest first)?
#[derive(Message)]
#[rtype(result = "Vec<Held>")]
pub struct HeldBy {
    pub agent_id: String,
}

impl Handler<HeldBy> for TaskQueue {
    type Result = MessageResult<HeldBy>;

    fn handle(&mut self, msg: HeldBy, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut held: Vec<(u64, Held)> = this
                .leases
                .iter()
                .filter(|(_, l)| l.agent_id == msg.agent_id)
                .map(|(id, l)| {
                    let seq = this.ids.get(id).copied().unwrap_or(u64::MAX);
                    (
                        seq,
                        Held {
                            task_id: id.clone(),
                            generation: l.generation,
                        },
                    )
                })
                .collect();
            held.sort_by_key(|(seq, _)| *seq);
            MessageResult(held.into_iter().map(|(_, h)| h).collect())
        })
    }
}

/// An operator's control of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskControl {
    /// Cancel an unfinished (or dead-lettered) task.
    Cancel,
    /// Force retry: a dead-lettered, blocked, cancelled or assigned task back to
    /// the queue with fresh budgets.
    Retry,
    /// Force an unfinished task to dead letter.
    DeadLetter,
    /// Move a queued task to this lane.
    Priority(u8),
}

impl TaskControl {
    /// What the holder of an assigned task is told when it loses it.
    fn reason(self) -> &'static str {
        match self {
            TaskControl::Cancel => "cancelled",
            TaskControl::Retry => "operator_retry",
            TaskControl::DeadLetter => "dead_lettered",
            TaskControl::Priority(_) => "priority_changed",
        }
    }
}

/// What a control did to the task.
#[derive(Debug, Clone, Copy)]
pub struct Controlled {
    pub previous_status: TaskStatus,
    pub status: TaskStatus,
    pub previous_priority: u8,
    pub priority: u8,
}

/// Apply an operator control to a task. The agent holding it, if it loses it,
/// gets `task_cancelled`; the change is in the event log with `by` as actor.
#[derive(Message)]
#[rtype(result = "Result<Controlled, QueueError>")]
pub struct ControlTask {
    pub task_id: String,
    pub control: TaskControl,
    pub by: String,
}

impl TaskQueue {
    /// Runs an operator change of one task; the agent holding it (if any) loses
    /// it and is told why.
    fn operator_change<R>(
        &mut self,
        task_id: &str,
        by: &str,
        why: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
    ) -> (Result<R, QueueError>, Effects) {
        let mut effects = Effects::default();
        let holder = self.leases.get(task_id).cloned();
        let result = self.with_task(task_id, by, change).map(|(out, changed)| {
            let still_held = changed.status == TaskStatus::Assigned;
            if let Some(lease) =
                holder.filter(|l| !still_held || l.generation != changed.generation)
            {
                effects.withdrawn.push(Withdrawn {
                    agent_id: lease.agent_id,
                    task_id: task_id.to_string(),
                    generation: lease.generation,
                    reason: why.to_string(),
                });
            }
            tracing::info!(task_id = %task_id, by = %by, action = why, "operator action");
            out
        });
        (result, effects)
    }
}

impl Handler<ControlTask> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Controlled, QueueError>>;

    fn handle(&mut self, msg: ControlTask, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let (by, control) = (msg.by, msg.control);
            let (result, effects) =
                this.operator_change(&msg.task_id, &by, control.reason(), |t, now| {
                    let (previous_status, previous_priority) = (t.status, t.priority);
                    match control {
                        TaskControl::Cancel => t.cancel(&by, now).map(|_| ()),
                        TaskControl::Retry => t.force_retry(&by, now).map(|_| ()),
                        TaskControl::DeadLetter => t.force_dead_letter(&by, now).map(|_| ()),
                        TaskControl::Priority(p) => t.set_priority(p, &by, now).map(|_| ()),
                    }?;
                    Ok(Controlled {
                        previous_status,
                        status: t.status,
                        previous_priority,
                        priority: t.priority,
                    })
                });
            this.after_flush(effects, result)
        })
    }
}

/// Operator: pause or resume priority lanes (all four = the whole queue). Queued
/// tasks of a paused lane stay queued and are not scheduled; assigned ones run
/// on. Persisted, so a restart keeps the lanes as they were. Answers the paused
/// lanes.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, QueueError>")]
pub struct PauseLanes {
    pub lanes: Vec<u8>,
    pub paused: bool,
    pub by: String,
}

/// Where the paused lanes are kept in `meta`.
const PAUSED_KEY: &str = "queue_paused_lanes";

impl TaskQueue {
    fn paused_lanes(&self) -> Vec<u8> {
        (0..4u8).filter(|l| self.paused[usize::from(*l)]).collect()
    }

    fn load_paused(&mut self) -> Result<(), StoreError> {
        self.paused = [false; 4];
        if let Some(v) = self.store.meta.get(PAUSED_KEY)? {
            let lanes: Vec<u8> = decode("meta", PAUSED_KEY.as_bytes(), &v)?;
            for l in lanes.into_iter().filter(|l| *l < 4) {
                self.paused[usize::from(l)] = true;
            }
        }
        Ok(())
    }
}

impl Handler<PauseLanes> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<u8>, QueueError>>;

    fn handle(&mut self, msg: PauseLanes, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let before = this.paused;
            for l in msg.lanes.iter().filter(|l| **l < 4) {
                this.paused[usize::from(*l)] = msg.paused;
            }
            let lanes = this.paused_lanes();
            let kind = if msg.paused {
                "lanes_paused"
            } else {
                "lanes_resumed"
            };
            let written = this
                .log
                .append([NewEvent {
                    ts: now_ms(),
                    kind: kind.into(),
                    task_id: None,
                    task_seq: None,
                    agent_id: None,
                    actor: msg.by.clone(),
                    details: json!({"lanes": msg.lanes, "paused_lanes": lanes}),
                }])
                .and_then(|()| {
                    Ok(this
                        .store
                        .meta
                        .insert(PAUSED_KEY, encode(&lanes))
                        .map(|_| ())?)
                });
            if let Err(e) = written {
                this.paused = before;
                return Box::pin(fut::ready(Err(QueueError::Store(e))));
            }
            // Lanes that changed: withdraw their queued tasks, or offer them again.
            let now = now_ms();
            let changed: Vec<usize> = (0..4).filter(|l| before[*l] != this.paused[*l]).collect();
            let affected: Vec<String> = this
                .live
                .values()
                .filter(|t| {
                    t.status == TaskStatus::Queued
                        && changed.contains(&usize::from(t.priority.min(3)))
                })
                .map(|t| t.id.clone())
                .collect();
            for id in affected {
                if msg.paused {
                    this.pending.unready.push(id);
                } else {
                    this.offer_live(&id, now);
                }
            }
            tracing::info!(by = %msg.by, paused = ?lanes, "queue lanes changed");
            this.after_flush(Effects::default(), Ok(lanes))
        })
    }
}

/// The paused lanes.
#[derive(Message)]
#[rtype(result = "Vec<u8>")]
pub struct PausedLanes;

impl Handler<PausedLanes> for TaskQueue {
    type Result = MessageResult<PausedLanes>;

    fn handle(&mut self, _: PausedLanes, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            MessageResult(this.paused_lanes())
        })
    }
}

/// A task's attempt records as the API shows them.
#[derive(Message)]
#[rtype(result = "Result<Option<Value>, StoreError>")]
pub struct GetAttempts {
    pub task_id: String,
}

impl Handler<GetAttempts> for TaskQueue {
    type Result = Result<Option<Value>, StoreError>;

    fn handle(&mut self, msg: GetAttempts, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            Ok(this.read(&msg.task_id)?.map(|t| t.attempts_view()))
        })
    }
}

/// Blocked tasks blocked since before `blocked_before` (ms), oldest first:
/// (task id, blocked_at, reason).
#[derive(Message)]
#[rtype(result = "Vec<(String, i64, String)>")]
pub struct BlockedTasks {
    pub blocked_before: i64,
}

impl Handler<BlockedTasks> for TaskQueue {
    type Result = MessageResult<BlockedTasks>;

    fn handle(&mut self, msg: BlockedTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut blocked: Vec<(String, i64, String)> = this
                .live
                .values()
                .filter(|t| t.status == TaskStatus::Blocked)
                .filter_map(|t| {
                    let at = t.blocked_at.unwrap_or(t.updated_at);
                    (at < msg.blocked_before)
                        .then(|| (t.id.clone(), at, t.last_error.clone().unwrap_or_default()))
                })
                .collect();
            blocked.sort_by_key(|(_, at, _)| *at);
            MessageResult(blocked)
        })
    }
}

/// One task as the API shows it.
#[derive(Message)]
#[rtype(result = "Result<Option<Value>, StoreError>")]
pub struct GetTask {
    pub task_id: String,
}

impl Handler<GetTask> for TaskQueue {
    type Result = Result<Option<Value>, StoreError>;

    fn handle(&mut self, msg: GetTask, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            Ok(this.read(&msg.task_id)?.map(|t| t.view()))
        })
    }
}

/// A page of tasks in creation order.
#[derive(Message, Default)]
#[rtype(result = "Result<TaskPage, StoreError>")]
pub struct ListTasks {
    pub status: Option<TaskStatus>,
    pub priority: Option<u8>,
    pub assigned_to: Option<String>,
    /// Only a task and its follow-ups (read through the correlation index).
    pub correlation_id: Option<String>,
    pub limit: usize,
    /// Only tasks created after the task with this sequence.
    pub cursor: u64,
}

pub struct TaskPage {
    pub tasks: Vec<Value>,
    pub next_cursor: Option<u64>,
}

impl ListTasks {
    fn matches(&self, t: &Task) -> bool {
        self.status.is_none_or(|s| s == t.status)
            && self.priority.is_none_or(|p| p == t.priority)
            && self
                .assigned_to
                .as_ref()
                .is_none_or(|a| t.assigned_to.as_ref() == Some(a))
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| t.correlation() == c)
    }
}

impl Handler<ListTasks> for TaskQueue {
    type Result = Result<TaskPage, StoreError>;

    fn handle(&mut self, msg: ListTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut page: Vec<Task> = Vec::with_capacity(msg.limit.min(1024) + 1);
            let start = msg.cursor.saturating_add(1);
            if let Some(correlation) = &msg.correlation_id {
                let start = scoped_key(correlation, start);
                let end = scoped_key(correlation, u64::MAX);
                for item in this.store.task_correlations.range(start..=end) {
                    let (key, _) = item?;
                    let Some(seq) = key.len().checked_sub(8).and_then(|at| key_seq(&key[at..]))
                    else {
                        continue;
                    };
                    let key = seq_key(seq);
                    let task = match this.live.get(&seq) {
                        Some(t) => Some(t.clone()),
                        None => match this.store.tasks.get(key)? {
                            Some(v) => Some(decode::<Task>("tasks", &key, &v)?),
                            None => None,
                        },
                    };
                    if let Some(t) = task.filter(|t| msg.matches(t)) {
                        page.push(t);
                    }
                    if page.len() > msg.limit {
                        break;
                    }
                }
            } else if msg.status.is_some_and(|s| !s.is_terminal()) {
                // Unfinished tasks are all in memory.
                page.extend(
                    this.live
                        .range(start..)
                        .map(|(_, t)| t)
                        .filter(|t| msg.matches(t))
                        .take(msg.limit + 1)
                        .cloned(),
                );
            } else {
                for item in this.store.tasks.range(seq_key(start)..) {
                    let (key, value) = item?;
                    match decode::<Task>("tasks", &key, &value) {
                        Ok(t) if msg.matches(&t) => page.push(t),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "skipping unreadable task record"),
                    }
                    if page.len() > msg.limit {
                        break;
                    }
                }
            }
            let more = page.len() > msg.limit;
            page.truncate(msg.limit);
            let next_cursor = if more {
                page.last().map(|t| t.seq)
            } else {
                None
            };
            Ok(TaskPage {
                tasks: page.iter().map(Task::view).collect(),
                next_cursor,
            })
        })
    }
}

/// Dead-lettered tasks, oldest first (at most `limit`).
#[derive(Message)]
#[rtype(result = "Result<Vec<Value>, StoreError>")]
pub struct DeadLetters {
    pub limit: usize,
    pub newest_first: bool,
}

impl Handler<DeadLetters> for TaskQueue {
    type Result = Result<Vec<Value>, StoreError>;

    fn handle(&mut self, msg: DeadLetters, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut out = Vec::new();
            let seqs: Box<dyn Iterator<Item = &u64>> = if msg.newest_first {
                Box::new(this.dead_letter.iter().rev())
            } else {
                Box::new(this.dead_letter.iter())
            };
            for seq in seqs.take(msg.limit) {
                let key = seq_key(*seq);
                if let Some(v) = this.store.tasks.get(key)? {
                    out.push(decode::<Task>("tasks", &key, &v)?.view());
                }
            }
            Ok(out)
        })
    }
}

/// What became of a task, as standing orders read it.
#[derive(Debug, Clone)]
pub struct TaskOutcome {
    pub status: TaskStatus,
    pub result: Option<Map<String, Value>>,
    pub last_error: Option<String>,
    pub needs: Option<String>,
}

/// The outcome of each task of `ids` (`None` when unknown), in order.
#[derive(Message)]
#[rtype(result = "Vec<Option<TaskOutcome>>")]
pub struct TaskOutcomes {
    pub ids: Vec<String>,
}

impl Handler<TaskOutcomes> for TaskQueue {
    type Result = MessageResult<TaskOutcomes>;

    fn handle(&mut self, msg: TaskOutcomes, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let outcomes = msg
                .ids
                .iter()
                .map(|id| match this.read(id) {
                    Ok(Some(t)) => Some(TaskOutcome {
                        status: t.status,
                        result: t.result,
                        last_error: t.last_error,
                        needs: t.needs,
                    }),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(task_id = %id, error = %e, "task unreadable");
                        None
                    }
                })
                .collect();
            MessageResult(outcomes)
        })
    }
}

/// Counts by status and by priority.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct Stats;

impl Handler<Stats> for TaskQueue {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            MessageResult(this.stats())
        })
    }
}

/// The newest completions (newest first) and the last hour's throughput.
#[derive(Message)]
#[rtype(result = "(Vec<Completion>, Throughput)")]
pub struct RecentCompletions;

impl Handler<RecentCompletions> for TaskQueue {
    type Result = MessageResult<RecentCompletions>;

    fn handle(&mut self, _: RecentCompletions, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            MessageResult((
                this.completions.recent(),
                this.completions.last_hour(now_ms()),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::parse_task_spec;

    /// Simulates a bug: half-clears the indexes, then panics.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for TaskQueue {
        type Result = ();

        fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
            self.contained(ctx, |this| {
                this.live.clear();
                this.counts.clear();
                panic!("injected fault");
            })
        }
    }

    #[actix_rt::test]
    async fn a_panicking_handler_restarts_the_queue_from_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let hub =
            crate::hub::start_actors(Arc::new(Config::default()), store).expect("start actors");
        let spec = parse_task_spec(&serde_json::json!({"description": "survive"}), "")
            .expect("valid spec");
        let created = hub
            .queue
            .send(Submit {
                specs: vec![spec],
                submitted_by: "test".into(),
                batch: false,
            })
            .await
            .expect("queue reachable")
            .expect("submitted");
        hub.queue
            .send(Crash)
            .await
            .expect("answered despite the panic");
        // The same address keeps serving, with its indexes rebuilt from sled.
        let stats = hub.queue.send(Stats).await.expect("queue restarted");
        assert_eq!(stats["by_status"]["queued"], 1, "{stats}");
        let task = hub
            .queue
            .send(GetTask {
                task_id: created[0].task_id.clone(),
            })
            .await
            .expect("queue restarted")
            .expect("store readable");
        assert_eq!(task.map(|t| t["status"].clone()), Some("queued".into()));
    }
}
