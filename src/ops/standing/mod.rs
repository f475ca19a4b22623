//! Standing orders: named schedules that create one run task per occurrence and
//! track each occurrence to an outcome (`completed`, `no_work`, `blocked`,
//! `failed`), `missed` when its window closes without one, or `cancelled`.
//!
//! Exactly one run per occurrence: a run's task has an id derived from (order,
//! scheduled time), and the queue creates a task with a fixed id once
//! (`SubmitFixed`). An order remembers how far it has planned (`planned_through`)
//! and moves it only after the runs up to there exist, so a restart re-plans what
//! was not yet recorded and creates nothing twice, and a clock that jumps back
//! plans nothing again. A clock that jumps forward past whole windows records
//! those occurrences as missed (they were never run), at most `PLAN_CAP` per tick.
//!
//! The clock is injected (`Clock`): the system clock in production, a file that a
//! test writes in tests (`calendar_clock_file`).
//!
//! Architecture invariant: standing orders create and cancel tasks only through
//! the `TaskQueue`'s messages and read their state the same way; they never
//! choose an agent (a run targets a capability or `agent:<id>`).

pub(crate) mod api;
mod archive;
pub(crate) mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::domain::task::TaskStatus;
use crate::error::StoreError;
use crate::protocol::{parse_task_spec, FieldError, STANDING_SUBMITTER};
use crate::queue::{
    ControlTask, NewTask, SubmitFixed, TaskControl, TaskOutcome, TaskOutcomes, TaskQueue,
};
use crate::storage::eventlog::{EventLog, NewEvent};
use crate::storage::store::{decode, encode, scope_prefix, scoped_key, split_scoped_key, Store};
use crate::util::now_ms;
pub(crate) use api::*;
pub(crate) use archive::ArchiveRuns;
pub(crate) use schedule::{Schedule, ScheduleError, Step};

/// Most occurrences one order plans per tick (the rest on the next ones).
const PLAN_CAP: usize = 100;
/// Most runs one `runs` query returns.
pub(crate) const MAX_RUNS: usize = 1000;

pub(crate) use crate::util::{system_clock, Clock};

/// A standing order as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StandingOrder {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// Runs go to agents with this capability...
    #[serde(default)]
    pub capability: Option<String>,
    /// ...or to this agent (neither: any agent that fits the template).
    #[serde(default)]
    pub agent: Option<String>,
    /// The run task's spec (a `POST /api/tasks` body without dependencies).
    pub task: Map<String, Value>,
    /// How long after its scheduled time an occurrence may take to report.
    pub window_ms: u64,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    /// Every occurrence up to here has its run (or missed record).
    pub planned_through: i64,
}

/// What became of one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatus {
    /// The run task exists and has not finished.
    Pending,
    Completed,
    NoWork,
    Blocked,
    Failed,
    /// No outcome by the end of the window (or never run).
    Missed,
    /// An operator cancelled the run task.
    Cancelled,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Completed => "completed",
            RunStatus::NoWork => "no_work",
            RunStatus::Blocked => "blocked",
            RunStatus::Failed => "failed",
            RunStatus::Missed => "missed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    fn reported(outcome: &str) -> Option<RunStatus> {
        match outcome {
            "completed" => Some(RunStatus::Completed),
            "no_work" => Some(RunStatus::NoWork),
            "blocked" => Some(RunStatus::Blocked),
            "failed" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

/// One occurrence of an order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StandingRun {
    pub order: String,
    pub scheduled_for: i64,
    pub due_by: i64,
    pub task_id: Option<String>,
    pub status: RunStatus,
    /// What the agent reported (`result.evidence`, else the whole result), or the
    /// error, reason or cause behind a failed, blocked or missed run.
    pub evidence: Option<Value>,
    pub recorded_at: i64,
    pub finished_at: Option<i64>,
}

/// Why a standing-order operation was refused.
#[derive(Debug, Clone)]
pub(crate) enum StandingError {
    NotFound(String),
    AlreadyExists(String),
    Invalid(Vec<FieldError>),
    Store(StoreError),
}

impl From<StoreError> for StandingError {
    fn from(e: StoreError) -> Self {
        StandingError::Store(e)
    }
}

impl From<sled::Error> for StandingError {
    fn from(e: sled::Error) -> Self {
        StandingError::Store(e.into())
    }
}

/// The id of the run task of `order` at `scheduled_for`: the same every time.
pub(crate) fn run_task_id(order: &str, scheduled_for: i64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("standing-order\0{order}\0{scheduled_for}"));
    format!("task-{}", hex::encode(&digest[..8]))
}

/// Checks an order's schedule and template; the validated template fields are
/// those of a task submission, without the ones that make no sense for a
/// recurring run.
pub(crate) fn check_order(order: &StandingOrder) -> Result<Schedule, Vec<FieldError>> {
    let mut errors = Vec::new();
    let schedule = match Schedule::parse(&order.cron, &order.timezone) {
        Ok(s) => Some(s),
        Err(ScheduleError::Cron(reason)) => {
            errors.push(FieldError::new("cron", "invalid_value", reason));
            None
        }
        Err(e @ ScheduleError::TimeZone(_)) => {
            errors.push(FieldError::new("timezone", "invalid_value", e.to_string()));
            None
        }
    };
    match parse_task_spec(&Value::Object(order.task.clone()), "task.") {
        Ok(_) => {}
        Err(mut e) => errors.append(&mut e),
    }
    for field in [
        "depends_on",
        "ref",
        "dedupe_key",
        "run_after",
        "complete_by",
    ] {
        if order.task.get(field).is_some_and(|v| !v.is_null()) {
            errors.push(FieldError::new(
                &format!("task.{field}"),
                "invalid_value",
                "not allowed in a standing order's task (each run is scheduled by the order)",
            ));
        }
    }
    if order.capability.is_some() && order.agent.is_some() {
        errors.push(FieldError::new(
            "agent",
            "invalid_value",
            "give a capability or an agent, not both",
        ));
    }
    match (schedule, errors.is_empty()) {
        (Some(s), true) => Ok(s),
        _ => Err(errors),
    }
}

struct Live {
    order: StandingOrder,
    schedule: Schedule,
}

pub(crate) struct StandingOrders {
    store: Store,
    queue: Addr<TaskQueue>,
    log: EventLog,
    clock: Clock,
    tick: Duration,
    orders: BTreeMap<String, Live>,
    /// Unfinished runs by (order, scheduled_for).
    pending: BTreeMap<(String, i64), StandingRun>,
    /// Missed runs recorded, newest last (for the alerter): (order, scheduled_for,
    /// recorded at by the order clock).
    missed: Vec<(String, i64, i64)>,
    /// A tick's queue round trip is in flight; the next tick waits for it.
    busy: bool,
    /// Where a missed run is published (`standing_order.missed`).
    outlet: crate::topics::HubOutlet,
    /// Where finished runs are archived.
    archive: crate::storage::archive::Archive,
    /// A run archive is being written.
    archiving: bool,
}

impl StandingOrders {
    /// Loads every order and unfinished run from `store`. An order whose stored
    /// schedule no longer parses is logged and skipped (kept in the store).
    pub(crate) fn load(
        store: Store,
        queue: Addr<TaskQueue>,
        log: EventLog,
        clock: Clock,
        tick: Duration,
        (outlet, archive): (crate::topics::HubOutlet, crate::storage::archive::Archive),
    ) -> Result<StandingOrders, StoreError> {
        let mut orders = BTreeMap::new();
        for item in store.standing_orders.iter() {
            let (key, value) = item?;
            let order: StandingOrder = match decode("standing_orders", &key, &value) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable standing order kept, skipped");
                    continue;
                }
            };
            match check_order(&order) {
                Ok(schedule) => {
                    orders.insert(order.name.clone(), Live { order, schedule });
                }
                Err(errors) => {
                    tracing::error!(order = %order.name, ?errors, "standing order no longer valid, skipped")
                }
            }
        }
        let mut pending = BTreeMap::new();
        for item in store.standing_runs.iter() {
            let (key, value) = item?;
            match decode::<StandingRun>("standing_runs", &key, &value) {
                Ok(run) if run.status == RunStatus::Pending => {
                    pending.insert((run.order.clone(), run.scheduled_for), run);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "unreadable standing run kept, skipped"),
            }
        }
        Ok(StandingOrders {
            store,
            queue,
            log,
            clock,
            tick,
            orders,
            pending,
            missed: Vec::new(),
            busy: false,
            outlet,
            archive,
            archiving: false,
        })
    }

    fn run_key(order: &str, scheduled_for: i64) -> Vec<u8> {
        scoped_key(order, u64::try_from(scheduled_for).unwrap_or(0))
    }

    fn write_run(&self, run: &StandingRun) -> Result<(), StoreError> {
        self.store
            .standing_runs
            .insert(Self::run_key(&run.order, run.scheduled_for), encode(run))?;
        Ok(())
    }

    fn write_order(&self, order: &StandingOrder) -> Result<(), StoreError> {
        self.store
            .standing_orders
            .insert(order.name.as_bytes(), encode(order))?;
        Ok(())
    }

    fn event(&self, kind: &str, actor: &str, task_id: Option<String>, details: Value) {
        if kind == "standing_run_missed" {
            let order = details["order"].as_str().unwrap_or_default();
            let at = details["scheduled_for"].as_i64().unwrap_or_default();
            if let Err(err) = self.outlet.run_missed(order, at) {
                tracing::error!(error = %err, "standing_order.missed not staged");
            }
        }
        let e = NewEvent {
            ts: now_ms(),
            kind: kind.to_string(),
            task_id,
            task_seq: None,
            agent_id: None,
            actor: actor.to_string(),
            details,
        };
        if let Err(err) = self.log.append([e]) {
            tracing::error!(error = %err, kind, "event log write failed");
        }
    }

    /// The run task of `order` for `scheduled_for`.
    fn run_task(order: &StandingOrder, scheduled_for: i64, due_by: i64) -> Option<NewTask> {
        let mut spec = parse_task_spec(&Value::Object(order.task.clone()), "").ok()?;
        let target = order
            .capability
            .clone()
            .or_else(|| order.agent.as_ref().map(|a| format!("agent:{a}")));
        if let Some(t) = target {
            if !spec.needed_capabilities.contains(&t) {
                spec.needed_capabilities.push(t);
                spec.needed_capabilities.sort();
            }
        }
        spec.metadata.insert(
            "standing_order".into(),
            json!({"name": order.name, "scheduled_for": scheduled_for, "due_by": due_by,
                   "report": "put outcome (completed|no_work|blocked|failed) and evidence in the result"}),
        );
        Some(NewTask {
            spec,
            id: Some(run_task_id(&order.name, scheduled_for)),
            parent: None,
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let now = (self.clock)();
        let mut creates: Vec<(String, StandingRun, NewTask)> = Vec::new();
        let mut advanced: HashMap<String, i64> = HashMap::new();
        for live in self.orders.values().filter(|l| l.order.enabled) {
            let o = &live.order;
            let (steps, through) = plan(
                &live.schedule,
                o.window_ms,
                o.planned_through,
                now,
                PLAN_CAP,
            );
            if through == o.planned_through {
                continue;
            }
            let mut ok = true;
            for step in steps {
                let (at, missed) = match step {
                    Step::Create { scheduled_for } => (scheduled_for, false),
                    Step::Missed { scheduled_for } => (scheduled_for, true),
                };
                let due_by = at.saturating_add(i64::try_from(o.window_ms).unwrap_or(i64::MAX));
                let key = Self::run_key(&o.name, at);
                match self.store.standing_runs.contains_key(&key) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "standing run lookup failed");
                        ok = false;
                        break;
                    }
                }
                let mut run = StandingRun {
                    order: o.name.clone(),
                    scheduled_for: at,
                    due_by,
                    task_id: None,
                    status: RunStatus::Missed,
                    evidence: None,
                    recorded_at: now,
                    finished_at: None,
                };
                if missed {
                    run.evidence =
                        Some(json!({"cause": "window closed before the hub could run it"}));
                    run.finished_at = Some(now);
                    if let Err(e) = self.write_run(&run) {
                        tracing::error!(error = %e, "standing run write failed");
                        ok = false;
                        break;
                    }
                    self.event(
                        "standing_run_missed",
                        "hub",
                        None,
                        json!({"order": o.name, "scheduled_for": at}),
                    );
                    self.missed.push((o.name.clone(), at, now));
                    continue;
                }
                let Some(task) = Self::run_task(o, at, due_by) else {
                    ok = false;
                    break;
                };
                run.status = RunStatus::Pending;
                run.task_id = task.id.clone();
                creates.push((o.name.clone(), run, task));
            }
            if ok {
                advanced.insert(o.name.clone(), through);
            }
        }
        let due: Vec<StandingRun> = self
            .pending
            .values()
            .filter(|r| r.task_id.is_some())
            .cloned()
            .collect();
        if creates.is_empty() && due.is_empty() && advanced.is_empty() {
            return;
        }
        self.busy = true;
        let tasks: Vec<NewTask> = creates.iter().map(|(_, _, t)| t.clone()).collect();
        let create = (!tasks.is_empty()).then(|| {
            self.queue.send(SubmitFixed {
                tasks,
                submitted_by: STANDING_SUBMITTER.into(),
            })
        });
        let ids: Vec<String> = due.iter().filter_map(|r| r.task_id.clone()).collect();
        let outcomes = self.queue.send(TaskOutcomes { ids });
        let store = self.store.clone();
        let work = async move {
            let created = match create {
                Some(c) => Some(c.await),
                None => None,
            };
            (created, outcomes.await)
        };
        ctx.spawn(work.into_actor(self).then(move |(created, outcomes), act, _| {
            let created_ok = match created {
                None => true,
                Some(Ok(Ok(_))) => true,
                Some(Ok(Err(e))) => {
                    tracing::error!(error = e.as_str(), "standing-order runs not created");
                    false
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "task queue unreachable");
                    false
                }
            };
            if created_ok {
                act.record_created(creates, advanced);
            }
            let cancels = match outcomes {
                Ok(outcomes) => act.settle_runs(due, outcomes, now),
                Err(e) => {
                    tracing::error!(error = %e, "task queue unreachable");
                    Vec::new()
                }
            };
            let queue = act.queue.clone();
            async move {
                for task_id in cancels {
                    let cancelled = queue
                        .send(ControlTask {
                            task_id: task_id.clone(),
                            control: TaskControl::Cancel,
                            by: "standing_order".into(),
                        })
                        .await;
                    if let Ok(Err(e)) = cancelled {
                        tracing::debug!(task_id = %task_id, error = e.as_str(), "missed run not cancelled");
                    }
                }
                if let Err(e) = store.durable().await {
                    tracing::error!(error = %e, "standing orders flush failed");
                }
            }
            .into_actor(act)
            .map(|(), act, _| act.busy = false)
        }));
    }

    /// The runs whose tasks now exist are recorded, then each order's plan moves on.
    fn record_created(
        &mut self,
        creates: Vec<(String, StandingRun, NewTask)>,
        advanced: HashMap<String, i64>,
    ) {
        let mut failed_orders = Vec::new();
        for (order, run, _) in creates {
            if let Err(e) = self.write_run(&run) {
                tracing::error!(error = %e, "standing run write failed");
                failed_orders.push(order);
                continue;
            }
            self.event(
                "standing_run_created",
                "hub",
                run.task_id.clone(),
                json!({"order": run.order, "scheduled_for": run.scheduled_for, "due_by": run.due_by}),
            );
            self.pending.insert((order, run.scheduled_for), run);
        }
        for (name, through) in advanced {
            if failed_orders.contains(&name) {
                continue;
            }
            let Some(live) = self.orders.get_mut(&name) else {
                continue;
            };
            live.order.planned_through = through;
            let order = live.order.clone();
            if let Err(e) = self.write_order(&order) {
                tracing::error!(error = %e, "standing order write failed");
            }
        }
    }

    /// Records the outcome of every run whose task finished, and marks missed the
    /// runs whose window closed without one. Answers the tasks to cancel.
    fn settle_runs(
        &mut self,
        due: Vec<StandingRun>,
        outcomes: Vec<Option<TaskOutcome>>,
        now: i64,
    ) -> Vec<String> {
        let mut cancels = Vec::new();
        for (mut run, outcome) in due.into_iter().zip(outcomes) {
            let closed = now >= run.due_by;
            let (status, evidence) = match outcome {
                None if closed => (RunStatus::Missed, json!({"cause": "run task not found"})),
                None => continue,
                Some(o) => match o.status {
                    TaskStatus::Completed => {
                        let result = o.result.unwrap_or_default();
                        // The sidecar's result status `no_work` counts as the outcome.
                        let status = result
                            .get("outcome")
                            .or_else(|| result.get("status").filter(|s| *s == "no_work"))
                            .and_then(Value::as_str)
                            .and_then(RunStatus::reported)
                            .unwrap_or(RunStatus::Completed);
                        let evidence = result
                            .get("evidence")
                            .cloned()
                            .unwrap_or(Value::Object(result));
                        (status, evidence)
                    }
                    TaskStatus::DeadLetter => (RunStatus::Failed, json!({"error": o.last_error})),
                    TaskStatus::Cancelled => {
                        (RunStatus::Cancelled, json!({"reason": o.last_error}))
                    }
                    TaskStatus::Blocked if closed => (
                        RunStatus::Blocked,
                        json!({"reason": o.last_error, "needs": o.needs}),
                    ),
                    _ if closed => {
                        if let Some(id) = &run.task_id {
                            cancels.push(id.clone());
                        }
                        (
                            RunStatus::Missed,
                            json!({"cause": format!("no outcome by the end of the window (task {})", o.status.as_str())}),
                        )
                    }
                    _ => continue,
                },
            };
            run.status = status;
            run.evidence = Some(evidence);
            run.finished_at = Some(now);
            if let Err(e) = self.write_run(&run) {
                tracing::error!(error = %e, "standing run write failed");
                continue;
            }
            let kind = if status == RunStatus::Missed {
                self.missed
                    .push((run.order.clone(), run.scheduled_for, now));
                "standing_run_missed"
            } else {
                "standing_run_finished"
            };
            self.event(
                kind,
                "hub",
                run.task_id.clone(),
                json!({"order": run.order, "scheduled_for": run.scheduled_for, "status": status.as_str()}),
            );
            self.pending.remove(&(run.order.clone(), run.scheduled_for));
        }
        // The alerter looks at the last hour of the order clock.
        let horizon = now.saturating_sub(3_600_000);
        self.missed.retain(|(_, _, at)| *at >= horizon);
        cancels
    }

    fn view(&self, live: &Live) -> Value {
        let o = &live.order;
        let now = (self.clock)();
        let next: Vec<i64> = if o.enabled {
            live.schedule
                .occurrences(o.planned_through.max(now), i64::MAX, 3)
        } else {
            Vec::new()
        };
        json!({
            "name": o.name,
            "cron": o.cron,
            "timezone": o.timezone,
            "capability": o.capability,
            "agent": o.agent,
            "task": o.task,
            "window_ms": o.window_ms,
            "enabled": o.enabled,
            "created_at": o.created_at,
            "updated_at": o.updated_at,
            "created_by": o.created_by,
            "planned_through": o.planned_through,
            "next_runs": next,
            "pending_runs": self.pending.keys().filter(|(n, _)| n == &o.name).count(),
        })
    }
}

use schedule::plan;

impl Actor for StandingOrders {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick, |act, ctx| act.tick(ctx));
    }
}
