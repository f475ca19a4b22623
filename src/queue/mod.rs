//! `TaskQueue`: the one owner of task state.
//!
//! It keeps every unfinished task in memory (ordered by sequence; a queued one
//! compact, its record read when needed) and all tasks in the store. A change is applied to the in-memory record and written to sled inside the
//! handler, so the actor's mailbox orders all changes; the reply (and every effect
//! others can observe: scheduling, withdrawal notices, bus events) waits in the
//! outbox for the group-commit flush that covers the write.
//!
//! The folder, by what each part owns:
//! - `index`: unfinished tasks in memory, counts, dead letters, leases, reads;
//! - `entry`: how memory keeps one unfinished task (queued ones compact);
//! - `change`: the one path of a change (`with_task`), scheduling and dependency
//!   settling (the graph itself is `domain::dependencies`);
//! - `create`: the one path of creation (`create_tasks`), follow-ups;
//! - `outbox`: effects released after the flush;
//! - `timers`: the lease / `complete_by` sweep, `run_after` and `requeue` timers;
//! - `lanes`: paused priority lanes;
//! - `scopes`: write scopes: claims of assigned tasks and direct reservations,
//!   and the scope groups they hold;
//! - `keys`: concurrency keys, their limits and running counts;
//! - `approvals`: the approval rules a completion is checked against;
//! - `budgets`: the day's spend by agent, group and capability, daily budgets;
//! - `holds`: what starting and stopping a task does to scopes and keys, and
//!   the holds the scheduler gets;
//! - `reservations`: direct reservations stored, loaded, expired;
//! - `supervise`: panic containment and the reload from sled;
//! - `checkpoint`: what a clean stop leaves so the next start reads little;
//! - `api/`: the messages, by caller (`agent`, `operator`, `read`).
//!
//! Architecture invariant: the queue never talks to a socket and never chooses an
//! agent. It tells the `Scheduler` which tasks are ready and `Presence` which agents
//! lost a task, only after the flush; the rules of each transition live in
//! `domain::task`.

mod api;
mod approvals;
mod archive;
mod budgets;
mod change;
mod checkpoint;
mod create;
mod entry;
mod flow;
mod holds;
mod index;
mod keys;
mod lanes;
mod outbox;
mod records;
mod reservations;
mod scopes;
mod supervise;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub(crate) use api::agent::{AgentReport, Assign, HeldBy, Reclaim, Report, ReportReply};
pub(crate) use api::approvals::{ApprovalRulesView, SetApprovalRules};
pub(crate) use api::budgets::{RaiseBudget, SetDailyBudgets, SpendView};
pub(crate) use api::keys::{ConcurrencyLimits, SetConcurrencyLimit};
pub(crate) use api::operator::{
    ControlTask, PauseLanes, PausedLanes, Submit, SubmitFixed, TaskControl,
};
pub(crate) use api::questions::{AnswerTask, DecideApproval, Questions};
pub(crate) use api::read::{
    BlockedTasks, DeadLetters, FailingAgents, GetAttempts, GetTask, ListTasks, LongWait,
    LongestWaiting, RecentCompletions, Stats, StuckTasks, TaskOutcome, TaskOutcomes,
};
pub(crate) use api::reserve::{
    ListReservations, ReleaseReservation, RenewReservation, Reserve, ReserveOutcome, Reserver,
};
pub(crate) use archive::ArchiveOld;
pub(crate) use checkpoint::StopAndCheckpoint;
pub use create::follow_up_id;
pub(crate) use create::{NewTask, Submitted};

use crate::agents::presence::Presence;
use crate::agents::scheduler::{Scheduler, TaskReady, TasksReady};
use crate::config::Config;
use crate::domain::completions::Completions;
use crate::domain::dependencies::DependencyGraph;
use crate::domain::outcomes::AgentOutcomes;
use crate::domain::task::{Backoff, TaskDefaults, TaskError};
use crate::error::StoreError;
use crate::ops::analytics::Analytics;
use crate::ops::telemetry::Telemetry;
use crate::protocol::{BlockedPolicy, FieldError};
use crate::storage::bus::EventBus;
use crate::storage::eventlog::EventLog;
use crate::storage::store::Store;
use crate::storage::tasks::TaskRecords;
use crate::util::now_ms;

/// Ready tasks per message to the scheduler at start.
const READY_BATCH: usize = 4096;

/// Why a queue operation failed.
#[derive(Debug, Clone)]
pub(crate) enum QueueError {
    /// Refused by the task's rules; nothing changed.
    Task(TaskError),
    /// The store failed; the change was not made durable.
    Store(StoreError),
    /// The submission does not fit what the queue holds (an unknown dependency, a
    /// dependency cycle, a repeated `ref`); nothing changed.
    Invalid(Vec<FieldError>),
    /// A reservation request refused (ext): `reservation_not_found`,
    /// `not_holder`, `too_many_reservations`, `task_not_held`.
    Reservation(&'static str),
}

impl QueueError {
    /// The wire code, e.g. `stale_generation` or `storage_error`: the one
    /// spelling every edge (HTTP, agent socket, dashboard socket) uses.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            QueueError::Task(e) => e.as_str(),
            QueueError::Store(_) => "storage_error",
            QueueError::Invalid(_) => "validation_failed",
            QueueError::Reservation(code) => code,
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

/// What the queue tells after a flush, and the telemetry it counts into.
pub(crate) struct Peers {
    pub scheduler: Addr<Scheduler>,
    pub presence: Addr<Presence>,
    pub analytics: Addr<Analytics>,
    pub telemetry: Arc<Telemetry>,
    pub bus: EventBus,
    /// The hub's topic events and a submitter's notice of its task's end.
    pub outlet: crate::topics::HubOutlet,
    /// Reads of the shared context a task names (carried in its assignment).
    pub context: crate::context::ContextReader,
    /// Where finished tasks are archived, and the index that finds them.
    pub archive: crate::storage::archive::Archive,
}

/// The configured rules the queue applies.
struct Policy {
    defaults: TaskDefaults,
    sweep_every: Duration,
    blocked_policy: BlockedPolicy,
    blocked_requeue_ms: u64,
    backoff: Backoff,
    /// The config's approval rules (those an operator sets replace them).
    approval_rules: Vec<crate::protocol::ApprovalRule>,
}

/// See the module documentation.
pub(crate) struct TaskQueue {
    store: Store,
    /// Where tasks are kept (see `records` for what the bytes are).
    records: TaskRecords,
    log: EventLog,
    policy: Policy,
    index: index::TaskIndex,
    deps: DependencyGraph,
    timers: timers::Timers,
    lanes: lanes::Lanes,
    scopes: scopes::Scopes,
    keys: keys::ConcurrencyKeys,
    approvals: approvals::ApprovalRules,
    budgets: budgets::Budgets,
    /// The UTC day the sweep last saw (a new one resumes the day's holds;
    /// the first sweep after a start looks at them too).
    spend_day: i64,
    outbox: outbox::Outbox,
    peers: Peers,
    completions: Completions,
    /// Each agent's most recent finished attempts (not kept across a restart).
    outcomes: AgentOutcomes,
    /// Set once the stop's checkpoint is written: every change is refused.
    frozen: bool,
    /// An archive file is being written (one pass at a time).
    archiving: bool,
}

impl TaskQueue {
    /// Builds the queue and its in-memory indexes from sled. A record that cannot
    /// be decoded is reported and left in place (never deleted), and the rest
    /// still load.
    pub(crate) fn load(
        store: Store,
        log: EventLog,
        config: &Config,
        peers: Peers,
    ) -> Result<TaskQueue, StoreError> {
        let mut queue = TaskQueue {
            policy: Policy {
                defaults: TaskDefaults {
                    max_retries: config.default_max_retries,
                    max_reclaims: config.default_max_reclaims,
                    lease_ms: config.default_lease_ms,
                },
                sweep_every: Duration::from_millis(config.sweep_interval_ms),
                blocked_policy: config.blocked_policy,
                blocked_requeue_ms: config.blocked_requeue_ms,
                backoff: Backoff {
                    base_ms: config.retry_backoff_base_ms,
                    max_ms: config.retry_backoff_max_ms,
                },
                approval_rules: config.approval_rules.clone(),
            },
            index: index::TaskIndex::default(),
            deps: DependencyGraph::default(),
            timers: timers::Timers::default(),
            lanes: lanes::Lanes::default(),
            scopes: scopes::Scopes::default(),
            keys: keys::ConcurrencyKeys::default(),
            approvals: approvals::ApprovalRules::default(),
            budgets: budgets::Budgets::with_calendar(budgets::Calendar::new(
                config.calendar_clock(),
            )),
            spend_day: i64::MIN,
            outbox: outbox::Outbox::default(),
            completions: Completions::default(),
            outcomes: AgentOutcomes::default(),
            frozen: false,
            archiving: false,
            peers,
            records: TaskRecords::new(store.clone()),
            store,
            log,
        };
        queue.reload()?;
        Ok(queue)
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
        let mut ready: Vec<TaskReady> = self
            .index
            .live
            .values()
            .filter_map(|entry| self.ready_at_start(entry, now))
            .collect();
        // Most urgent first, in batches: other actors on this thread (and an
        // agent that connects meanwhile, given the best task known so far) run
        // between them.
        // The holds first: a task whose write scope is claimed, or whose key is
        // at its limit, waits under its hold.
        let holds = self.all_holds();
        self.peers.scheduler.do_send(holds);
        ready.sort_by_key(|r| (r.priority, r.seq));
        let mut coming = ready.len();
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let tasks: Vec<TaskReady> = ready.by_ref().take(READY_BATCH).collect();
            let batch = TasksReady { tasks, coming };
            coming -= batch.tasks.len();
            self.peers.scheduler.do_send(batch);
        }
        ctx.run_interval(self.policy.sweep_every, |act, ctx| act.sweep(ctx));
    }
}
