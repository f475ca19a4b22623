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

use crate::analytics::{Analytics, Count, Counter};
use crate::completions::{short_description, Completion, Completions, Throughput};
use crate::config::Config;
use crate::error::StoreError;
use crate::events::{EventBus, HubEvent};
use crate::fsm::Withdrawn;
use crate::metrics::{Counter as MetricCounter, Telemetry};
use crate::presence::{Presence, ToAgent};
use crate::protocol::{TaskAssignment, TaskSpec};
use crate::scheduler::{Scheduler, TaskReady, TaskUnready};
use crate::store::{decode, encode, key_seq, seq_key, Store};
use crate::task::{ReclaimOutcome, Task, TaskDefaults, TaskError, TaskStatus};
use crate::util::{new_task_id, now_ms};

/// Why a queue operation failed.
#[derive(Debug, Clone)]
pub enum QueueError {
    /// Refused by the task's rules; nothing changed.
    Task(TaskError),
    /// The store failed; the change was not made durable.
    Store(StoreError),
}

impl QueueError {
    /// Wire form, e.g. `stale_generation` or `storage_error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueError::Task(e) => e.as_str(),
            QueueError::Store(_) => "storage_error",
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
    priority: u8,
    updated_at: i64,
    ready: TaskReady,
}

/// Effects that others may see only after the change is durable.
#[derive(Default)]
struct Effects {
    /// For the event bus, published after the flush like every other effect.
    events: Vec<HubEvent>,
    ready: Vec<TaskReady>,
    unready: Vec<String>,
    withdrawn: Vec<Withdrawn>,
    counts: Vec<Count>,
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
    ) -> Result<TaskQueue, StoreError> {
        let mut queue = TaskQueue {
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

    /// Updates counters, dead letter and leases for a task whose status went from
    /// `old` (None when new) to its current one.
    fn index(&mut self, task: &Task, old: Option<TaskStatus>, now: i64) {
        if let Some(old) = old {
            if let Some(c) = self.counts.get_mut(&old) {
                *c = c.saturating_sub(1);
            }
            if old == TaskStatus::Queued {
                let p = &mut self.queued_by_priority[usize::from(task.priority.min(3))];
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

    /// Applies `change` to one task: all of it, written to sled, or nothing. The
    /// task is moved out of memory and back, never cloned (this is the hot path).
    fn with_task<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Task, i64) -> Result<R, TaskError>,
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
        let last_event = task.history.last().cloned();
        let out = match change(&mut task, now) {
            Ok(out) => out,
            Err(e) => {
                if live_seq.is_some() {
                    self.live.insert(task.seq, task);
                }
                return Err(e.into());
            }
        };
        if let Err(e) = self.store.tasks.insert(seq_key(task.seq), encode(&task)) {
            // Not written: the in-memory record must not run ahead of sled. The
            // change methods only move forward, so reload the stored record.
            tracing::error!(task_id = %id, error = %e, "task write failed");
            if let Ok(Some(stored)) = self.read_stored(id) {
                if live_seq.is_some() {
                    self.live.insert(stored.seq, stored);
                }
            }
            return Err(QueueError::Store(e.into()));
        }
        self.index(&task, Some(old), now);
        let recorded = match &last_event {
            Some(prev) => task
                .history
                .iter()
                .rposition(|e| e == prev)
                .map_or(&task.history[..], |i| &task.history[i + 1..]),
            None => &task.history[..],
        };
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
            for e in recorded {
                let row = (e.event == "completed").then(|| row.clone()).flatten();
                self.announce(&task, &e.event, e.ts, None, row);
            }
        }
        let changed = Changed {
            status: task.status,
            generation: task.generation,
            priority: task.priority,
            updated_at: task.updated_at,
            ready: Self::ready_of(&task),
        };
        if task.status.is_terminal() {
            self.ids.remove(&task.id);
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
        if value.is_err() {
            // A failed change wrote nothing; events of earlier changes wait for the
            // next flush.
            return Box::pin(fut::ready(value));
        }
        effects.events = std::mem::take(&mut self.unpublished);
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

    /// Reclaims every assigned task whose lease ran out or whose `complete_by` passed.
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
        if due.is_empty() {
            return;
        }
        let mut effects = Effects::default();
        for (task_id, lease, reason) in due {
            match self.with_task(&task_id, |t, now| {
                t.reclaim(&lease.agent_id, lease.generation, reason, now)
            }) {
                Ok((outcome, task)) => {
                    tracing::warn!(task_id = %task_id, agent_id = %lease.agent_id, reason, "task reclaimed");
                    if outcome == ReclaimOutcome::Requeued {
                        effects.ready.push(task.ready.clone());
                    }
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
        effects.events = std::mem::take(&mut self.unpublished);
        ctx.spawn(
            self.store
                .durable()
                .into_actor(self)
                .map(|flushed, act, _| match flushed {
                    Ok(()) => act.release(effects),
                    Err(e) => tracing::error!(error = %e, "flush after sweep failed"),
                }),
        );
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
        tracing::info!(
            tasks = self.counts.values().sum::<u64>(),
            live = self.live.len(),
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
        for task in self.live.values() {
            if task.status == TaskStatus::Queued {
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
    /// An unfinished task with the same `dedupe_key` existed: this is that task,
    /// and nothing was created.
    pub existing: bool,
}

/// The reply for the `i`-th task created by a batch.
fn first_of(tasks: &[Task], i: usize) -> Submitted {
    let t = &tasks[i];
    Submitted {
        task_id: t.id.clone(),
        priority: t.priority,
        created_at: t.created_at,
        existing: false,
    }
}

/// Create tasks (one or a batch, all in one flush). A spec whose `dedupe_key`
/// an unfinished task holds (or an earlier spec of the batch) creates nothing and
/// is answered with that task.
#[derive(Message)]
#[rtype(result = "Result<Vec<Submitted>, QueueError>")]
pub struct Submit {
    pub specs: Vec<TaskSpec>,
    pub submitted_by: String,
}

impl Handler<Submit> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<Submitted>, QueueError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let now = now_ms();
            let mut created = Vec::with_capacity(msg.specs.len());
            let mut effects = Effects::default();
            let mut records = sled::Batch::default();
            let mut ids = sled::Batch::default();
            let mut tasks = Vec::with_capacity(msg.specs.len());
            // Slot in the reply of each spec: a new task, or an existing one.
            let mut replies: Vec<Option<Submitted>> = Vec::with_capacity(msg.specs.len());
            let mut batch_keys: HashMap<String, usize> = HashMap::new();
            for spec in msg.specs {
                if let Some(key) = &spec.dedupe_key {
                    if let Some(existing) = this.dedupe_hit(key) {
                        replies.push(Some(existing));
                        continue;
                    }
                    if let Some(&first) = batch_keys.get(key) {
                        // The same key twice in one batch: one task.
                        replies.push(Some(Submitted {
                            existing: true,
                            ..first_of(&tasks, first)
                        }));
                        continue;
                    }
                    batch_keys.insert(key.clone(), tasks.len());
                }
                replies.push(None);
                let seq = this.next_seq;
                this.next_seq += 1;
                let task = Task::new(
                    new_task_id(),
                    seq,
                    spec,
                    &msg.submitted_by,
                    this.defaults,
                    now,
                );
                records.insert(&seq_key(seq), encode(&task));
                ids.insert(task.id.as_bytes(), &seq_key(seq));
                tasks.push(task);
            }
            let written = this
                .store
                .tasks
                .apply_batch(records)
                .and_then(|_| this.store.task_ids.apply_batch(ids));
            if let Err(e) = written {
                return Box::pin(fut::ready(Err(QueueError::Store(e.into()))));
            }
            this.telemetry
                .add(MetricCounter::Submitted, tasks.len() as u64);
            let mut fresh = tasks.iter().map(|t| Submitted {
                task_id: t.id.clone(),
                priority: t.priority,
                created_at: t.created_at,
                existing: false,
            });
            for reply in replies {
                if let Some(s) = reply.or_else(|| fresh.next()) {
                    created.push(s);
                }
            }
            for task in tasks {
                if let Some(key) = &task.dedupe_key {
                    this.dedupe.insert(key.clone(), task.id.clone());
                }
                effects.ready.push(Self::ready_of(&task));
                if this.bus.watched() {
                    let description = Some(short_description(&task.description));
                    this.announce(&task, "queued", task.created_at, description, None);
                }
                this.index(&task, None, now);
                this.ids.insert(task.id.clone(), task.seq);
                this.live.insert(task.seq, task);
            }
            this.after_flush(effects, Ok(created))
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
                .with_task(&msg.task_id, |t, now| t.assign(&msg.agent_id, now))
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
                    let r = this.with_task(&task_id, |t, now| {
                        t.progress(&agent, generation, progress, message, now)
                    });
                    if r.is_ok() {
                        this.renew(&task_id, false);
                    }
                    // Progress is not acknowledged, so it need not wait for a flush.
                    return Box::pin(fut::ready(r.map(|_| ReportReply::Noted)));
                }
                Report::Accept { generation } => this
                    .with_task(&task_id, |t, now| t.accept(&agent, generation, now))
                    .map(|(_, task)| {
                        this.renew(&task_id, true);
                        ReportReply::Accepted(task.generation)
                    }),
                Report::Complete {
                    generation,
                    result,
                    tokens_used,
                } => this
                    .with_task(&task_id, |t, now| {
                        fresh(t, |t| {
                            t.complete(&agent, generation, result, tokens_used, now)
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
                    .with_task(&task_id, |t, now| {
                        fresh(t, |t| t.fail(&agent, generation, error, now))
                    })
                    .map(|((ack, fresh), task)| {
                        if fresh {
                            effects.counts.push(Count {
                                agent_id: agent.clone(),
                                counter: Counter::TasksFailed,
                                at: task.updated_at,
                            });
                            if task.status == TaskStatus::Queued {
                                effects.ready.push(task.ready.clone());
                            }
                        }
                        ReportReply::Ack(ack)
                    }),
                Report::Reject { generation, reason } => this
                    .with_task(&task_id, |t, now| {
                        fresh(t, |t| t.reject(&agent, generation, reason, now))
                    })
                    .map(|((ack, fresh), task)| {
                        if fresh && task.status == TaskStatus::Queued {
                            effects.ready.push(task.ready.clone());
                        }
                        ReportReply::Ack(ack)
                    }),
                Report::Block {
                    generation,
                    reason,
                    needs,
                } => this
                    .with_task(&task_id, |t, now| {
                        t.block(&agent, generation, reason, needs, now)
                    })
                    .map(|(ack, _)| ReportReply::Ack(ack)),
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
            let mut effects = Effects::default();
            let result = this
                .with_task(&msg.task_id, |t, now| {
                    t.reclaim(&msg.agent_id, msg.generation, &msg.reason, now)
                })
                .map(|(outcome, task)| {
                    tracing::warn!(task_id = %msg.task_id, agent_id = %msg.agent_id,
                                   reason = %msg.reason, "task reclaimed");
                    if outcome == ReclaimOutcome::Requeued {
                        effects.ready.push(task.ready.clone());
                    }
                    outcome
                });
            this.after_flush(effects, result)
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

/// Operator cancel; answers the previous status.
#[derive(Message)]
#[rtype(result = "Result<TaskStatus, QueueError>")]
pub struct Cancel {
    pub task_id: String,
    pub by: String,
}

impl Handler<Cancel> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<TaskStatus, QueueError>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut effects = Effects::default();
            let holder = this.leases.get(&msg.task_id).cloned();
            let result = this
                .with_task(&msg.task_id, |t, now| t.cancel(&msg.by, now))
                .map(|(previous, _)| {
                    match previous {
                        TaskStatus::Queued => effects.unready.push(msg.task_id.clone()),
                        TaskStatus::Assigned => {
                            if let Some(lease) = holder {
                                effects.withdrawn.push(Withdrawn {
                                    agent_id: lease.agent_id,
                                    task_id: msg.task_id.clone(),
                                    generation: lease.generation,
                                    reason: "cancelled".into(),
                                });
                            }
                        }
                        _ => {}
                    }
                    tracing::info!(task_id = %msg.task_id, by = %msg.by, "task cancelled");
                    previous
                });
            this.after_flush(effects, result)
        })
    }
}

/// Operator retry of a dead-lettered or blocked task; answers its priority.
#[derive(Message)]
#[rtype(result = "Result<u8, QueueError>")]
pub struct Retry {
    pub task_id: String,
    pub by: String,
}

impl Handler<Retry> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<u8, QueueError>>;

    fn handle(&mut self, msg: Retry, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut effects = Effects::default();
            let result = this
                .with_task(&msg.task_id, |t, now| {
                    t.retry_from_dead_letter(&msg.by, now)
                })
                .map(|(_, task)| {
                    effects.ready.push(task.ready.clone());
                    task.priority
                });
            this.after_flush(effects, result)
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
    }
}

impl Handler<ListTasks> for TaskQueue {
    type Result = Result<TaskPage, StoreError>;

    fn handle(&mut self, msg: ListTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut page: Vec<Task> = Vec::with_capacity(msg.limit.min(1024) + 1);
            let start = msg.cursor.saturating_add(1);
            if msg.status.is_some_and(|s| !s.is_terminal()) {
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
            crate::server::start_actors(Arc::new(Config::default()), store).expect("start actors");
        let spec = parse_task_spec(&serde_json::json!({"description": "survive"}), "")
            .expect("valid spec");
        let created = hub
            .queue
            .send(Submit {
                specs: vec![spec],
                submitted_by: "test".into(),
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
