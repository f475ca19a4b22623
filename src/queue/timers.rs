//! Time-driven changes: the sweep (leases that ran out, `complete_by` passed) and
//! the timers (`run_after` times, `requeue` blocked-work delays).

use std::collections::BTreeSet;

use actix::prelude::*;

use super::TaskQueue;
use crate::agents::fsm::Withdrawn;
use crate::domain::task::TaskStatus;
use crate::util::now_ms;

/// Due times: (ms, task id), earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    due: BTreeSet<(i64, String)>,
}

impl Timers {
    pub(super) fn set(&mut self, at: i64, task_id: &str) {
        self.due.insert((at, task_id.to_string()));
    }

    /// Whether a timer is due at `now`.
    fn any_due(&self, now: i64) -> bool {
        self.due.first().is_some_and(|(at, _)| *at <= now)
    }

    /// The next timer due at `now`, taken out.
    fn pop_due(&mut self, now: i64) -> Option<String> {
        if !self.any_due(now) {
            return None;
        }
        self.due.pop_first().map(|(_, id)| id)
    }

    pub(super) fn clear(&mut self) {
        self.due.clear();
    }
}

impl TaskQueue {
    /// Reclaims every assigned task whose lease ran out or whose `complete_by`
    /// passed, and runs the timers that are due.
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut due = Vec::new();
        for (task_id, lease) in &self.index.leases {
            let task = self.index.whole(task_id);
            let overdue = task.and_then(|t| t.complete_by).is_some_and(|by| by < now);
            // A task waiting for an answer holds no lease clock.
            let asking = task.is_some_and(|t| t.status == TaskStatus::InputRequired);
            if overdue {
                due.push((task_id.clone(), lease.clone(), "overdue"));
            } else if lease.deadline < now && !asking {
                due.push((task_id.clone(), lease.clone(), "lease_expired"));
            }
        }
        // Reservations whose time is up are released (and their waiters offered).
        self.expire_reservations(now);
        // A new UTC day, and the ledger's unwritten changes, whatever else is due.
        self.new_day(now);
        self.write_ledger(now);
        if due.is_empty() && !self.timers.any_due(now) {
            self.spawn_release(ctx);
            return;
        }
        for (task_id, lease, reason) in due {
            match self.with_task(&task_id, "hub", |t, now| {
                t.reclaim(&lease.agent_id, lease.generation, reason, now)
            }) {
                Ok(_) => {
                    tracing::warn!(task_id = %task_id, agent_id = %lease.agent_id, reason, "task reclaimed");
                    self.outbox.withdrawn.push(Withdrawn {
                        agent_id: lease.agent_id,
                        task_id,
                        generation: lease.generation,
                        reason: reason.to_string(),
                        notice: None,
                    });
                }
                Err(e) => {
                    tracing::error!(task_id = %task_id, error = e.as_str(), "sweep reclaim failed")
                }
            }
        }
        self.run_timers(now);
        self.spawn_release(ctx);
    }

    /// Tasks whose `run_after` came are offered; blocked tasks whose `requeue`
    /// delay passed go back to the queue.
    fn run_timers(&mut self, now: i64) {
        while let Some(id) = self.timers.pop_due(now) {
            let Some(task) = self.index.entry(&id) else {
                continue;
            };
            let unblock_due = task
                .whole()
                .and_then(|t| t.unblock_at)
                .is_some_and(|u| u <= now);
            match task.status() {
                TaskStatus::Queued => self.offer_live(&id, now),
                TaskStatus::InputRequired => self.question_due(&id),
                TaskStatus::Blocked if unblock_due => {
                    if let Err(e) = self.with_task(&id, "hub", |t, now| t.unblock_due(now)) {
                        tracing::error!(task_id = %id, error = e.as_str(), "blocked task not requeued");
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_due_in_time_order_and_only_once() {
        let mut t = Timers::default();
        t.set(30, "c");
        t.set(10, "a");
        t.set(20, "b");
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25).as_deref(), Some("a"));
        assert_eq!(t.pop_due(25).as_deref(), Some("b"));
        assert_eq!(t.pop_due(25), None);
        assert!(t.any_due(30));
        t.clear();
        assert!(!t.any_due(i64::MAX));
    }
}
