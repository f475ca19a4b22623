//! Panics and restarts: every handler body runs through `contained`, so a panic
//! is logged, answered with an error, and the actor stops; its `Supervisor`
//! restarts it and `reload` rebuilds every in-memory index from sled.

use actix::prelude::*;

use super::change::Settle;
use super::entry::Entry;
use super::lanes::Lanes;
use super::records;
use super::{QueueError, TaskQueue};
use crate::domain::completions::{Completion, Completions};
use crate::domain::task::{Task, TaskStatus};
use crate::error::StoreError;
use crate::util::now_ms;

/// A reply to give when a handler panicked (the queue restarts from sled).
pub(super) trait PanicReply {
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
    pub(super) fn contained<R: PanicReply>(
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
}

/// Queued tasks with dependencies, as loaded: (id, dependencies).
type Dependent = Vec<(String, Vec<String>)>;

impl TaskQueue {
    /// Rebuilds every in-memory index from sled (start and restart).
    pub(super) fn reload(&mut self) -> Result<(), StoreError> {
        self.index.clear();
        self.scopes.clear();
        self.deps.clear();
        self.timers.clear();
        self.lanes = Lanes::load(&self.store)?;
        self.keys = super::keys::ConcurrencyKeys::load(&self.store)?;
        let calendar = self.budgets.calendar.clone();
        self.budgets = super::budgets::Budgets::load(&self.store, calendar)?;
        self.approvals =
            super::approvals::ApprovalRules::load(&self.store, &self.policy.approval_rules)?;
        self.completions = Completions::default();
        self.outcomes.clear();
        let now = now_ms();
        let mut corrupt = 0;
        let from_checkpoint = self.load_checkpoint(now)?;
        if !from_checkpoint {
            let dependent;
            (corrupt, dependent) = self.load_records(now)?;
            self.rebuild_waiting(dependent, now);
        }
        self.load_reservations(now)?;
        // What the settling made ready is offered in `started`, with the rest.
        self.outbox.forget_scheduling();
        tracing::info!(
            tasks = self.index.total(),
            live = self.index.live.len(),
            waiting = self.deps.waiting_len(),
            corrupt,
            from_checkpoint,
            "task queue loaded"
        );
        Ok(())
    }

    /// Reads every task record: counts, completions, and the unfinished ones into
    /// memory. A record that cannot be decoded is reported and left in place
    /// (never deleted), and the rest still load. Answers how many were unreadable,
    /// and the queued tasks that have dependencies (id, dependencies).
    fn load_records(&mut self, now: i64) -> Result<(usize, Dependent), StoreError> {
        let mut corrupt = 0usize;
        let mut dependent = Vec::new();
        let mut running = Vec::new();
        let check_ids = !self.records.ids_complete();
        for item in self.records.scan_from(0) {
            let stored = item?;
            self.index.next_seq = self.index.next_seq.max(stored.seq + 1);
            // Most of a big store is queued tasks: read only what memory keeps.
            match records::decode_queued(&stored) {
                Ok(Some(mut q)) => {
                    if check_ids {
                        self.records.repair_id(&q.id, stored.seq)?;
                    }
                    if !q.depends_on.is_empty() {
                        dependent.push((q.id.clone(), std::mem::take(&mut q.depends_on)));
                    }
                    self.scopes.track_parts(
                        &q.id,
                        q.repo.as_deref(),
                        &q.write_paths,
                        &q.read_paths,
                    );
                    self.index.load_queued(stored.seq, q);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    corrupt += 1;
                    tracing::error!(error = %e, "skipping unreadable task record");
                    continue;
                }
            }
            let task: Task = match records::decode_task(&stored) {
                Ok(t) => t,
                Err(e) => {
                    corrupt += 1;
                    tracing::error!(error = %e, "skipping unreadable task record");
                    continue;
                }
            };
            // The id index is written in the same flush as the record, after it;
            // repair it if a crash left only the record.
            if check_ids {
                self.records.repair_id(&task.id, task.seq)?;
            }
            self.index.count(&task, None, now);
            if let Some(c) = Completion::of(&task) {
                self.completions.record(c);
            }
            if !task.status.is_terminal() {
                if let Some(key) = &task.dedupe_key {
                    self.index.dedupe.insert(key.clone(), task.id.clone());
                }
                if task.status == TaskStatus::Queued && !task.depends_on.is_empty() {
                    dependent.push((task.id.clone(), task.depends_on.clone()));
                }
                self.scopes.track(&task);
                if let (true, Some(agent)) = (task.status.is_held(), &task.assigned_to) {
                    running.push((task.id.clone(), agent.clone(), task.concurrency_key.clone()));
                }
                self.index.insert_live(task);
            }
        }
        for (id, agent, key) in running {
            self.start_running_parts(&id, &agent, key.as_deref());
        }
        Ok((corrupt, dependent))
    }

    /// Dependencies and timers, once every live task is loaded. A dependency that
    /// failed while the hub stopped before its dependents were blocked blocks
    /// them now.
    fn rebuild_waiting(&mut self, dependent: Dependent, now: i64) {
        for entry in self.index.live.values() {
            let at = match entry {
                Entry::Queued(q) => q.run_after.filter(|at| *at > now),
                Entry::Whole(t) if t.status == TaskStatus::Blocked => t.unblock_at,
                Entry::Whole(_) => None,
            };
            if let Some(at) = at {
                self.timers.set(at, entry.id());
            }
        }
        let mut settle = Vec::new();
        for (task, depends_on) in dependent {
            if let Some((dep, status)) = self.track_dependencies(&task, &depends_on) {
                settle.push(Settle::Block { task, dep, status });
            }
        }
        self.settle_dependencies(settle);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::protocol::parse_task_spec;
    use crate::queue::{GetTask, Stats, Submit};
    use crate::storage::store::Store;

    /// Simulates a bug: half-clears the indexes, then panics.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for TaskQueue {
        type Result = ();

        fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
            self.contained(ctx, |this| {
                this.index.clear();
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
