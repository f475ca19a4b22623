//! The one after-flush outbox: every effect others could observe (bus events,
//! scheduling, withdrawal notices, analytics counts) is put here while a handler
//! changes tasks, and released only once a flush that began after the change has
//! made it durable.

use actix::prelude::*;

use super::{QueueError, TaskQueue};
use crate::agents::fsm::Withdrawn;
use crate::agents::presence::{Deliver, ToAgent};
use crate::agents::scheduler::{Holds, TaskReady, TaskUnready};
use crate::domain::task::Task;
use crate::ops::analytics::Count;
use crate::storage::bus::HubEvent;

/// Effects waiting for the flush of the changes that caused them.
#[derive(Default)]
pub(super) struct Outbox {
    /// For the event bus (only built while someone watches it).
    events: Vec<HubEvent>,
    /// Tasks that became schedulable, for the scheduler.
    pub(super) ready: Vec<TaskReady>,
    /// Tasks that left the queue (or changed lane), for the scheduler.
    pub(super) unready: Vec<String>,
    /// Agents that lost a task, for presence to tell them.
    pub(super) withdrawn: Vec<Withdrawn>,
    /// Frames for an agent's socket (answers to its questions).
    pub(super) pushes: Vec<Deliver>,
    /// Per-agent completions and failures, for analytics.
    pub(super) counts: Vec<Count>,
    /// Holds taken and released (write scopes, concurrency keys), for the
    /// scheduler: sent after the ready tasks of the same flush.
    pub(super) holds: Holds,
    /// Global order of task events on the bus.
    event_seq: u64,
}

/// What one flush releases.
struct Batch {
    holds: Holds,
    events: Vec<HubEvent>,
    ready: Vec<TaskReady>,
    unready: Vec<String>,
    withdrawn: Vec<Withdrawn>,
    pushes: Vec<Deliver>,
    counts: Vec<Count>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.holds.changes.is_empty()
            && self.ready.is_empty()
            && self.unready.is_empty()
            && self.withdrawn.is_empty()
            && self.pushes.is_empty()
            && self.counts.is_empty()
    }

    /// Everything put in so far; the outbox is empty afterwards.
    fn take(&mut self) -> Batch {
        Batch {
            holds: std::mem::take(&mut self.holds),
            events: std::mem::take(&mut self.events),
            ready: std::mem::take(&mut self.ready),
            unready: std::mem::take(&mut self.unready),
            withdrawn: std::mem::take(&mut self.withdrawn),
            pushes: std::mem::take(&mut self.pushes),
            counts: std::mem::take(&mut self.counts),
        }
    }

    /// Drops the scheduling effects (a reload offers every ready task itself).
    pub(super) fn forget_scheduling(&mut self) {
        self.ready.clear();
        self.unready.clear();
        self.holds = Holds::default();
    }

    /// Any other event for the bus.
    pub(super) fn push_event(&mut self, event: HubEvent) {
        self.events.push(event);
    }

    /// A task event for the bus.
    pub(super) fn announce(
        &mut self,
        task: &Task,
        event: &str,
        timestamp: i64,
        description: Option<String>,
        completion: Option<serde_json::Value>,
    ) {
        self.event_seq += 1;
        self.events.push(HubEvent::TaskEvent {
            task_id: task.id.clone(),
            event: event.to_string(),
            agent_id: task.assigned_to.clone(),
            timestamp,
            status: task.status.as_str(),
            seq: self.event_seq,
            priority: task.priority,
            description,
            completion,
            progress: (event == "progress")
                .then(|| serde_json::to_value(task.progress.as_ref()?).ok())
                .flatten(),
        });
    }
}

impl TaskQueue {
    /// Replies once the writes so far are durable, then releases the outbox.
    pub(super) fn after_flush<T: 'static>(
        &mut self,
        value: Result<T, QueueError>,
    ) -> ResponseActFuture<Self, Result<T, QueueError>> {
        self.collect_holds();
        if value.is_err() && self.outbox.is_empty() {
            // A failed change wrote nothing.
            return Box::pin(fut::ready(value));
        }
        let batch = self.outbox.take();
        Box::pin(
            self.store
                .durable()
                .into_actor(self)
                .map(move |flushed, act, _| {
                    flushed?;
                    act.release(batch);
                    value
                }),
        )
    }

    /// Releases the outbox after a flush, outside any reply (timers, sweeps).
    pub(super) fn spawn_release(&mut self, ctx: &mut Context<Self>) {
        self.collect_holds();
        if self.outbox.is_empty() {
            return;
        }
        let batch = self.outbox.take();
        ctx.spawn(
            self.store
                .durable()
                .into_actor(self)
                .map(|flushed, act, _| match flushed {
                    Ok(()) => act.release(batch),
                    Err(e) => tracing::error!(error = %e, "flush before release failed"),
                }),
        );
    }

    fn release(&self, batch: Batch) {
        for event in batch.events {
            self.peers.bus.publish(event);
        }
        for task_id in batch.unready {
            self.peers.scheduler.do_send(TaskUnready { task_id });
        }
        for ready in batch.ready {
            self.peers.scheduler.do_send(ready);
        }
        // After the ready tasks: a task that was put back (a reclaim) is served
        // before the ones its claim kept back, as its age says. A ready task
        // whose hold is only now taken may be matched first; the queue refuses
        // that assignment and offers it again, under the hold.
        if !batch.holds.changes.is_empty() || batch.holds.replace {
            self.peers.scheduler.do_send(batch.holds);
        }
        for w in batch.withdrawn {
            self.peers.presence.do_send(ToAgent(w));
        }
        for p in batch.pushes {
            self.peers.presence.do_send(p);
        }
        for c in batch.counts {
            self.peers.analytics.do_send(c);
        }
    }
}
