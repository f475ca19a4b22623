//! Concurrency limits (ext, #19), by operators.
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`SetConcurrencyLimit`] | `PUT` / `DELETE /api/admin/concurrency/:key` | the key's limit and running count, after the flush |
//! | [`ConcurrencyLimits`] | `GET /api/admin/concurrency`, the dashboard's snapshot | every key with a limit or a running task |

use actix::prelude::*;
use serde_json::{json, Value};

use crate::queue::{QueueError, TaskQueue};
use crate::storage::eventlog::NewEvent;

/// Cap how many tasks of `key` run at once (`None`: no cap).
#[derive(Message)]
#[rtype(result = "Result<Value, QueueError>")]
pub(crate) struct SetConcurrencyLimit {
    pub key: String,
    pub limit: Option<u32>,
    pub by: String,
}

impl Handler<SetConcurrencyLimit> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Value, QueueError>>;

    fn handle(&mut self, msg: SetConcurrencyLimit, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.set_concurrency_limit(&msg);
            this.after_flush(result)
        })
    }
}

/// Every key with a limit or a running task: `{key, limit, running}`.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub(crate) struct ConcurrencyLimits;

impl Handler<ConcurrencyLimits> for TaskQueue {
    type Result = MessageResult<ConcurrencyLimits>;

    fn handle(&mut self, _: ConcurrencyLimits, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, |this| MessageResult(this.concurrency_view()))
    }
}

impl TaskQueue {
    /// Every key with a limit or a running task: `{key, limit, running}`.
    pub(in crate::queue) fn concurrency_view(&self) -> Vec<Value> {
        self.keys
            .list()
            .into_iter()
            .map(|(key, limit, running)| json!({"key": key, "limit": limit, "running": running}))
            .collect()
    }

    /// The keys changed: the dashboard gets the new list (built only while
    /// someone watches).
    pub(in crate::queue) fn announce_keys(&mut self) {
        if self.peers.bus.watched() {
            let keys = self.concurrency_view();
            self.outbox
                .push_event(crate::storage::bus::HubEvent::Concurrency { keys });
        }
    }

    fn set_concurrency_limit(&mut self, msg: &SetConcurrencyLimit) -> Result<Value, QueueError> {
        self.writable()?;
        let previous = self.keys.set_limit(&msg.key, msg.limit);
        let undo = |this: &mut TaskQueue| {
            this.keys.set_limit(&msg.key, previous);
            this.keys.changes.clear();
        };
        let kind = match msg.limit {
            Some(_) => "concurrency_limit_set",
            None => "concurrency_limit_removed",
        };
        let details = json!({"key": msg.key, "limit": msg.limit, "previous_limit": previous});
        let event = NewEvent::untasked(kind, None, &msg.by, details);
        if let Err(e) = self
            .log
            .append(vec![event])
            .and_then(|()| self.keys.save(&self.store))
        {
            undo(self);
            return Err(QueueError::Store(e));
        }
        let running = self
            .keys
            .list()
            .into_iter()
            .find(|(k, _, _)| *k == msg.key)
            .map_or(0, |(_, _, r)| r);
        self.announce_keys();
        tracing::info!(key = %msg.key, limit = ?msg.limit, by = %msg.by, "concurrency limit changed");
        Ok(json!({
            "key": msg.key,
            "limit": msg.limit,
            "previous_limit": previous,
            "running": running,
        }))
    }
}
