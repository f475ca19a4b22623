//! Messages that create work or steer it: submitters, standing orders and
//! operators (HTTP, the dashboard, the CLI through HTTP).
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`Submit`] | `POST /api/tasks` | one [`Submitted`] per spec, after the flush |
//! | [`SubmitFixed`] | `StandingOrders` (runs with fixed ids) | one [`Submitted`] per task |
//! | [`ControlTask`] | operator routes, dashboard socket | [`Controlled`], after the flush |
//! | [`PauseLanes`] | `POST /api/queue/pause` and `/resume` | the paused lanes, after the flush |
//! | [`PausedLanes`] | `GET /api/queue/lanes` | the paused lanes |

use actix::prelude::*;
use serde_json::json;

use crate::domain::task::TaskStatus;
use crate::protocol::TaskSpec;
use crate::queue::index::lane;
use crate::queue::{NewTask, QueueError, Submitted, TaskQueue};
use crate::storage::eventlog::NewEvent;
use crate::util::now_ms;

/// Create tasks (one or a batch, all in one flush). A spec whose `dedupe_key`
/// an unfinished task holds (or an earlier spec of the batch) creates nothing and
/// is answered with that task.
#[derive(Message)]
#[rtype(result = "Result<Vec<Submitted>, QueueError>")]
pub(crate) struct Submit {
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
            this.after_flush(result)
        })
    }
}

/// Create hub-made tasks with fixed ids (standing-order runs): each is created
/// once, whatever how often it is asked for.
#[derive(Message)]
#[rtype(result = "Result<Vec<Submitted>, QueueError>")]
pub(crate) struct SubmitFixed {
    pub tasks: Vec<NewTask>,
    pub submitted_by: String,
}

impl Handler<SubmitFixed> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<Submitted>, QueueError>>;

    fn handle(&mut self, msg: SubmitFixed, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.create_tasks(msg.tasks, &msg.submitted_by, |i| format!("[{i}]."));
            this.after_flush(result)
        })
    }
}

/// An operator's control of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskControl {
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
pub(crate) struct Controlled {
    pub previous_status: TaskStatus,
    pub status: TaskStatus,
    pub previous_priority: u8,
    pub priority: u8,
}

/// Apply an operator control to a task. The agent holding it, if it loses it,
/// gets `task_cancelled`; the change is in the event log with `by` as actor.
#[derive(Message)]
#[rtype(result = "Result<Controlled, QueueError>")]
pub(crate) struct ControlTask {
    pub task_id: String,
    pub control: TaskControl,
    pub by: String,
}

impl Handler<ControlTask> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Controlled, QueueError>>;

    fn handle(&mut self, msg: ControlTask, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let (by, control) = (msg.by, msg.control);
            let result = this.operator_change(&msg.task_id, &by, control.reason(), |t, now| {
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
            this.after_flush(result)
        })
    }
}

/// Operator: pause or resume priority lanes (all four = the whole queue). Queued
/// tasks of a paused lane stay queued and are not scheduled; assigned ones run
/// on. Persisted, so a restart keeps the lanes as they were. Answers the paused
/// lanes.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, QueueError>")]
pub(crate) struct PauseLanes {
    pub lanes: Vec<u8>,
    pub paused: bool,
    pub by: String,
}

impl Handler<PauseLanes> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Vec<u8>, QueueError>>;

    fn handle(&mut self, msg: PauseLanes, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let before = this.lanes;
            for l in &msg.lanes {
                this.lanes.set(*l, msg.paused);
            }
            let lanes = this.lanes.paused();
            let kind = if msg.paused {
                "lanes_paused"
            } else {
                "lanes_resumed"
            };
            let written = this
                .log
                .append([NewEvent::untasked(
                    kind,
                    None,
                    &msg.by,
                    json!({"lanes": msg.lanes, "paused_lanes": lanes}),
                )])
                .and_then(|()| this.lanes.save(&this.store));
            if let Err(e) = written {
                this.lanes = before;
                return Box::pin(fut::ready(Err(QueueError::Store(e))));
            }
            // Lanes that changed: withdraw their queued tasks, or offer them again.
            let now = now_ms();
            let changed = this.lanes.changed_from(&before);
            let affected: Vec<String> = this
                .index
                .live
                .values()
                .filter(|t| {
                    t.status() == TaskStatus::Queued && changed.contains(&lane(t.priority()))
                })
                .map(|t| t.id().to_string())
                .collect();
            for id in affected {
                if msg.paused {
                    this.outbox.unready.push(id);
                } else {
                    this.offer_live(&id, now);
                }
            }
            tracing::info!(by = %msg.by, paused = ?lanes, "queue lanes changed");
            this.after_flush(Ok(lanes))
        })
    }
}

/// The paused lanes.
#[derive(Message)]
#[rtype(result = "Vec<u8>")]
pub(crate) struct PausedLanes;

impl Handler<PausedLanes> for TaskQueue {
    type Result = MessageResult<PausedLanes>;

    fn handle(&mut self, _: PausedLanes, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            MessageResult(this.lanes.paused())
        })
    }
}
