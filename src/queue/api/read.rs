//! Read-only messages: what the API, the dashboard, metrics, alerts and standing
//! orders read from the queue. None of them changes anything.
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`GetTask`] | `GET /api/tasks/:id`, the long poll | the task as the API shows it |
//! | [`GetAttempts`] | `GET /api/tasks/:id/attempts` | its attempt records |
//! | [`ListTasks`] | `GET /api/tasks` | a [`TaskPage`] in creation order |
//! | [`DeadLetters`] | `GET /api/tasks/dead-letter`, dashboard | dead-lettered tasks |
//! | [`TaskOutcomes`] | `StandingOrders` | what became of each run's task |
//! | [`Stats`] | `GET /api/tasks/stats`, metrics, dashboard | counts by status and lane |
//! | [`RecentCompletions`] | dashboard | newest completions, last hour's throughput |
//! | [`StuckTasks`] | `Alerter` | tasks assigned since before a time |
//! | [`BlockedTasks`] | `Alerter` | tasks blocked since before a time |
//! | [`LongestWaiting`] | `Alerter` | the task waiting longest for an agent |
//! | [`FailingAgents`] | `Alerter` | agents whose last attempts all failed |

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::domain::completions::{Completion, Throughput};
use crate::domain::task::{Task, TaskStatus};
use crate::error::StoreError;
use crate::queue::entry::Entry;
use crate::queue::records;
use crate::queue::TaskQueue;
use crate::util::now_ms;

/// A task's attempt records as the API shows them.
#[derive(Message)]
#[rtype(result = "Result<Option<Value>, StoreError>")]
pub(crate) struct GetAttempts {
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
pub(crate) struct BlockedTasks {
    pub blocked_before: i64,
}

impl Handler<BlockedTasks> for TaskQueue {
    type Result = MessageResult<BlockedTasks>;

    fn handle(&mut self, msg: BlockedTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut blocked: Vec<(String, i64, String)> = this
                .index
                .live
                .values()
                .filter_map(Entry::whole)
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
pub(crate) struct GetTask {
    pub task_id: String,
}

impl Handler<GetTask> for TaskQueue {
    type Result = Result<Option<Value>, StoreError>;

    fn handle(&mut self, msg: GetTask, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            Ok(this.read(&msg.task_id)?.map(|t| this.view_of(&t)))
        })
    }
}

/// A page of tasks in creation order.
#[derive(Message, Default)]
#[rtype(result = "Result<TaskPage, StoreError>")]
pub(crate) struct ListTasks {
    pub status: Option<TaskStatus>,
    pub priority: Option<u8>,
    pub assigned_to: Option<String>,
    /// Only a task and its follow-ups (read through the correlation index).
    pub correlation_id: Option<String>,
    pub limit: usize,
    /// Only tasks created after the task with this sequence.
    pub cursor: u64,
}

pub(crate) struct TaskPage {
    pub tasks: Vec<Value>,
    pub next_cursor: Option<u64>,
}

impl ListTasks {
    /// `matches` for a live task without a correlation filter (what the
    /// compact entry of a queued task can tell).
    fn matches_entry(&self, e: &Entry) -> bool {
        match e.whole() {
            Some(t) => self.matches(t),
            None => {
                self.status.is_none_or(|s| s == e.status())
                    && self.priority.is_none_or(|p| p == e.priority())
                    && self
                        .assigned_to
                        .as_ref()
                        .is_none_or(|a| e.assigned_to() == Some(a.as_str()))
            }
        }
    }

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

impl TaskQueue {
    /// A task as the API shows it, with what only the queue knows: the running
    /// task whose write scope it waits for.
    fn view_of(&self, t: &Task) -> Value {
        let mut v = t.view();
        let waits = t.status == crate::domain::task::TaskStatus::Queued;
        if let Some(h) = self.scopes.conflict(&t.id).filter(|_| waits) {
            v["waiting_on_scope"] = serde_json::json!({
                "task_id": h.task_id,
                "agent_id": h.agent_id,
            });
            if self.scopes.is_reservation(&h.claim_id) {
                v["waiting_on_scope"]["reservation_id"] = h.claim_id.clone().into();
            }
        }
        v
    }
}

impl Handler<ListTasks> for TaskQueue {
    type Result = Result<TaskPage, StoreError>;

    fn handle(&mut self, msg: ListTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut page: Vec<Task> = Vec::with_capacity(msg.limit.min(1024) + 1);
            let start = msg.cursor.saturating_add(1);
            if let Some(correlation) = &msg.correlation_id {
                let mut seqs = this
                    .records
                    .correlated(correlation, start)
                    .take(msg.limit + 1)
                    .collect::<Result<Vec<u64>, StoreError>>()?;
                // The task whose id names the correlation has no entry of its own
                // (it was its own correlation when created); `matches` checks it.
                if let Some(root) = this.records.seq_of(correlation)?.filter(|s| *s >= start) {
                    seqs.push(root);
                    seqs.sort_unstable();
                    seqs.dedup();
                }
                for seq in seqs {
                    let task = match this.index.live.get(&seq) {
                        Some(e) => this.read_entry(e)?,
                        None => match this.records.get(seq)? {
                            Some(stored) => Some(records::decode_task(&stored)?),
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
                // Unfinished tasks are all in memory (queued ones compact: what
                // the filters need, the rest read for the page).
                for (_, entry) in this.index.live.range(start..) {
                    if !msg.matches_entry(entry) {
                        continue;
                    }
                    if let Some(t) = this.read_entry(entry)? {
                        page.push(t);
                    }
                    if page.len() > msg.limit {
                        break;
                    }
                }
            } else {
                for item in this.records.scan_from(start) {
                    match records::decode_task(&item?) {
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
                tasks: page.iter().map(|t| this.view_of(t)).collect(),
                next_cursor,
            })
        })
    }
}

/// Dead-lettered tasks, oldest first (at most `limit`).
#[derive(Message)]
#[rtype(result = "Result<Vec<Value>, StoreError>")]
pub(crate) struct DeadLetters {
    pub limit: usize,
    pub newest_first: bool,
}

impl Handler<DeadLetters> for TaskQueue {
    type Result = Result<Vec<Value>, StoreError>;

    fn handle(&mut self, msg: DeadLetters, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut out = Vec::new();
            let seqs: Box<dyn Iterator<Item = &u64>> = if msg.newest_first {
                Box::new(this.index.dead_letter.iter().rev())
            } else {
                Box::new(this.index.dead_letter.iter())
            };
            for seq in seqs.take(msg.limit) {
                if let Some(stored) = this.records.get(*seq)? {
                    out.push(records::decode_task(&stored)?.view());
                }
            }
            Ok(out)
        })
    }
}

/// What became of a task, as standing orders read it.
#[derive(Debug, Clone)]
pub(crate) struct TaskOutcome {
    pub status: TaskStatus,
    pub result: Option<Map<String, Value>>,
    pub last_error: Option<String>,
    pub needs: Option<String>,
}

/// The outcome of each task of `ids` (`None` when unknown), in order.
#[derive(Message)]
#[rtype(result = "Vec<Option<TaskOutcome>>")]
pub(crate) struct TaskOutcomes {
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
pub(crate) struct Stats;

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
pub(crate) struct RecentCompletions;

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

/// Tasks assigned (held by an agent) since before `assigned_before` (ms), oldest
/// first: (task id, agent id, assigned_at).
#[derive(Message)]
#[rtype(result = "Vec<(String, String, i64)>")]
pub(crate) struct StuckTasks {
    pub assigned_before: i64,
}

impl Handler<StuckTasks> for TaskQueue {
    type Result = MessageResult<StuckTasks>;

    fn handle(&mut self, msg: StuckTasks, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let mut stuck: Vec<(String, String, i64)> = this
                .index
                .leases
                .iter()
                .filter_map(|(id, lease)| {
                    let task = this.index.whole(id)?;
                    let at = task.assigned_at?;
                    (at < msg.assigned_before).then(|| (id.clone(), lease.agent_id.clone(), at))
                })
                .collect();
            stuck.sort_by_key(|(_, _, at)| *at);
            MessageResult(stuck)
        })
    }
}

/// The queued task that has waited longest for an agent (see
/// `TaskQueue::oldest_waiting`), if it waits since before `since_before`.
#[derive(Message)]
#[rtype(result = "Option<LongWait>")]
pub(crate) struct LongestWaiting {
    pub since_before: i64,
}

/// A task waiting for an agent.
#[derive(Debug, Clone)]
pub(crate) struct LongWait {
    pub task_id: String,
    pub since: i64,
    pub needed_capabilities: Vec<String>,
}

impl Handler<LongestWaiting> for TaskQueue {
    type Result = MessageResult<LongestWaiting>;

    fn handle(&mut self, msg: LongestWaiting, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let wait = this
                .oldest_waiting(now_ms())
                .filter(|(_, since)| *since < msg.since_before)
                .map(|(t, since)| LongWait {
                    task_id: t.id.to_string(),
                    since,
                    needed_capabilities: t.capabilities.to_vec(),
                });
            MessageResult(wait)
        })
    }
}

/// Agents whose last `attempts` finished attempts all failed, with the error of
/// the newest: (agent id, last error).
#[derive(Message)]
#[rtype(result = "Vec<(String, String)>")]
pub(crate) struct FailingAgents {
    pub attempts: usize,
}

impl Handler<FailingAgents> for TaskQueue {
    type Result = MessageResult<FailingAgents>;

    fn handle(&mut self, msg: FailingAgents, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            MessageResult(this.outcomes.failing(msg.attempts))
        })
    }
}
