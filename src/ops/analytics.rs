//! `Analytics`: per-agent activity counters in hourly buckets (messages sent and
//! received, tasks completed and failed), kept in sled and pruned by `Retention`.
//!
//! Architecture invariant: analytics only counts what it is told; it never reads
//! tasks or messages, and nothing depends on its numbers being exact (a count sent
//! just before a crash may be missing).

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::storage::store::{decode, encode, scoped_key, split_scoped_key, Store};

const HOUR_MS: i64 = 3_600_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    MessagesSent,
    MessagesReceived,
    TasksCompleted,
    TasksFailed,
}

/// Counters of one agent in one hour (or summed over several).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Counts {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
}

impl Counts {
    fn bump(&mut self, counter: Counter) {
        match counter {
            Counter::MessagesSent => self.messages_sent += 1,
            Counter::MessagesReceived => self.messages_received += 1,
            Counter::TasksCompleted => self.tasks_completed += 1,
            Counter::TasksFailed => self.tasks_failed += 1,
        }
    }

    fn add(&mut self, other: &Counts) {
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.tasks_completed += other.tasks_completed;
        self.tasks_failed += other.tasks_failed;
    }
}

pub(crate) struct Analytics {
    store: Store,
    retention_ms: i64,
}

impl Analytics {
    pub(crate) fn new(store: Store, retention_ms: i64) -> Self {
        Analytics {
            store,
            retention_ms,
        }
    }

    fn bucket(at: i64) -> u64 {
        (at.max(0) / HOUR_MS) as u64
    }

    fn all(&self) -> Result<Vec<(String, u64, Counts)>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.analytics.iter() {
            let (k, v) = item?;
            if let Some((agent, hour)) = split_scoped_key(&k) {
                out.push((agent, hour, decode("analytics", &k, &v)?));
            }
        }
        Ok(out)
    }
}

impl Actor for Analytics {
    type Context = Context<Self>;
}

/// Count one event for an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Count {
    pub agent_id: String,
    pub counter: Counter,
    pub at: i64,
}

impl Handler<Count> for Analytics {
    type Result = ();

    fn handle(&mut self, msg: Count, _: &mut Context<Self>) {
        let key = scoped_key(&msg.agent_id, Self::bucket(msg.at));
        let result = (|| -> Result<(), StoreError> {
            let mut counts: Counts = match self.store.analytics.get(&key)? {
                Some(v) => decode("analytics", &key, &v)?,
                None => Counts::default(),
            };
            counts.bump(msg.counter);
            self.store.analytics.insert(key, encode(&counts))?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "analytics count lost");
        }
    }
}

/// Totals per agent over the retention window.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<String, Counts>, StoreError>")]
pub(crate) struct AgentTotals;

impl Handler<AgentTotals> for Analytics {
    type Result = Result<BTreeMap<String, Counts>, StoreError>;

    fn handle(&mut self, _: AgentTotals, _: &mut Context<Self>) -> Self::Result {
        let mut totals: BTreeMap<String, Counts> = BTreeMap::new();
        for (agent, _, counts) in self.all()? {
            totals.entry(agent).or_default().add(&counts);
        }
        Ok(totals)
    }
}

/// One agent's last `hours` hourly buckets, oldest first (empty hours included):
/// (hour start ms, counts).
#[derive(Message)]
#[rtype(result = "Result<Vec<(i64, Counts)>, StoreError>")]
pub(crate) struct Hourly {
    pub agent_id: String,
    pub hours: u64,
    pub now: i64,
}

impl Handler<Hourly> for Analytics {
    type Result = Result<Vec<(i64, Counts)>, StoreError>;

    fn handle(&mut self, msg: Hourly, _: &mut Context<Self>) -> Self::Result {
        let last = Self::bucket(msg.now);
        let first = last.saturating_sub(msg.hours.saturating_sub(1));
        let mut out = Vec::new();
        for hour in first..=last {
            let key = scoped_key(&msg.agent_id, hour);
            let counts = match self.store.analytics.get(&key)? {
                Some(v) => decode("analytics", &key, &v)?,
                None => Counts::default(),
            };
            out.push((hour as i64 * HOUR_MS, counts));
        }
        Ok(out)
    }
}

/// Hub-wide totals: over the retention window and over the last 24 hours.
#[derive(Message)]
#[rtype(result = "Result<(Counts, Counts, usize), StoreError>")]
pub(crate) struct Summary {
    pub now: i64,
}

impl Handler<Summary> for Analytics {
    type Result = Result<(Counts, Counts, usize), StoreError>;

    fn handle(&mut self, msg: Summary, _: &mut Context<Self>) -> Self::Result {
        let recent = Self::bucket(msg.now).saturating_sub(23);
        let (mut total, mut day) = (Counts::default(), Counts::default());
        let mut active = std::collections::BTreeSet::new();
        for (agent, hour, counts) in self.all()? {
            total.add(&counts);
            if hour >= recent {
                day.add(&counts);
                active.insert(agent);
            }
        }
        Ok((total, day, active.len()))
    }
}

/// Drop buckets older than the retention window (sent by `Retention`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PruneAnalytics {
    pub now: i64,
}

impl Handler<PruneAnalytics> for Analytics {
    type Result = ();

    fn handle(&mut self, msg: PruneAnalytics, _: &mut Context<Self>) {
        let cutoff = Self::bucket(msg.now.saturating_sub(self.retention_ms));
        let old: Vec<_> = self
            .store
            .analytics
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter(|k| split_scoped_key(k).is_some_and(|(_, hour)| hour < cutoff))
            .collect();
        for k in old {
            if let Err(e) = self.store.analytics.remove(k) {
                tracing::error!(error = %e, "analytics retention failed");
                return;
            }
        }
    }
}
