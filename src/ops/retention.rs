//! `Retention`: the background actor that asks each owner to drop what outlived
//! its retention (mailbox TTL, message history, analytics buckets) or to
//! archive it (finished tasks, standing-order runs), so nothing grows forever.
//! Channel history and mailboxes are also capped where they grow.
//!
//! Architecture invariant: retention decides *when*; each owner decides *what*.

use std::time::Duration;

use actix::prelude::*;

use crate::messaging::{Messaging, PruneMessages};
use crate::ops::analytics::{Analytics, PruneAnalytics};
use crate::ops::standing::{ArchiveRuns, StandingOrders};
use crate::queue::{ArchiveOld, TaskQueue};
use crate::storage::eventlog::EventLog;
use crate::util::now_ms;

pub(crate) struct Retention {
    pub every: Duration,
    pub messaging: Addr<Messaging>,
    pub analytics: Addr<Analytics>,
    pub events: EventLog,
    pub event_retention_ms: i64,
    /// Archived after these (`None`: kept).
    pub queue: Addr<TaskQueue>,
    pub task_retention: Option<Duration>,
    pub standing: Addr<StandingOrders>,
    pub run_retention: Option<Duration>,
}

impl Retention {
    fn tick(&self) {
        let now = now_ms();
        self.messaging.do_send(PruneMessages { now });
        self.analytics.do_send(PruneAnalytics { now });
        let before =
            |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some(d) = self.task_retention {
            self.queue.do_send(ArchiveOld { cutoff: before(d) });
        }
        if let Some(d) = self.run_retention {
            self.standing.do_send(ArchiveRuns { cutoff: before(d) });
        }
        // The log is append-only for everyone else; pruning its oldest end runs
        // here, off the owners' threads, one bounded batch per tick.
        let (log, before) = (
            self.events.clone(),
            now.saturating_sub(self.event_retention_ms),
        );
        actix_rt::task::spawn_blocking(move || match log.prune(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(dropped = n, "event log pruned"),
            Err(e) => tracing::error!(error = %e, "event log pruning failed"),
        });
    }
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick();
        ctx.run_interval(self.every, |act, _| act.tick());
    }
}
