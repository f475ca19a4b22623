//! Metrics: telemetry counters bumped where things happen, and the `Metrics` actor
//! that turns them, the queue's counts and the agents' states into a snapshot every
//! `metrics_interval_ms` (10 s by default), keeping the last hour of snapshots for
//! trends. Served as JSON (`GET /api/metrics`) and Prometheus text (`GET /metrics`).
//!
//! Architecture invariant: reads only. It asks `TaskQueue` and `Presence` for counts
//! and views and never changes a task or an agent; `Telemetry` is written by the
//! queue (task events) and by `Presence` (connects, disconnects) and read here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::agents::presence::{OnlineAndBusy, Presence};
use crate::ops::telemetry::Telemetry;
use crate::queue::{Stats, TaskQueue};
use crate::storage::bus::{EventBus, HubEvent};
use crate::storage::store::Store;
use crate::util::now_ms;

/// p50 / p90 / p99 / max in milliseconds, and how many samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub count: usize,
}

impl Latency {
    fn of(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            count: samples.len(),
        }
    }
}

/// One snapshot (PROTOCOL.md section 3, `GET /api/metrics`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snapshot {
    pub timestamp: i64,
    pub interval_ms: u64,
    pub queue_depth: QueueDepth,
    pub task_latency: TaskLatency,
    pub agent_utilization: Utilization,
    pub error_rates: ErrorRates,
    pub storage: Storage,
    /// Totals since the hub started.
    pub counters: BTreeMap<&'static str, u64>,
    /// Spend today (UTC) by agent, credential group and capability, the daily
    /// budgets and each kept day's total (ext, PROTOCOL.md 6.28).
    pub spend: Value,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueDepth {
    /// Queued tasks now.
    pub now: u64,
    /// Change since the previous snapshot.
    pub trend: i64,
    pub max_1h: u64,
    pub avg_1h: f64,
    pub by_status: Value,
    pub by_priority: Value,
    pub dead_letter: u64,
    /// How long the task waiting longest for an agent has waited (ms).
    pub oldest_queued_age_ms: Option<i64>,
    /// How long the longest-blocked task has been blocked (ms).
    pub oldest_blocked_age_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskLatency {
    /// Over the last interval.
    pub submit_to_assign_ms: Latency,
    pub assign_to_complete_ms: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Utilization {
    pub online: u64,
    pub busy: u64,
    pub idle: u64,
    /// busy / online (0 when nobody is online).
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorRates {
    /// Over the last interval, per minute.
    pub failed_per_min: f64,
    pub dead_lettered_per_min: f64,
    pub completed_per_min: f64,
    /// Error answers (HTTP 4xx/5xx but 429, WS `error` frames) per minute.
    pub errors_per_min: f64,
    /// failed / (failed + completed) over the last interval (0 without either).
    pub failure_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Storage {
    pub size_on_disk_bytes: u64,
}

/// Takes snapshots; answers with the newest.
pub(crate) struct Metrics {
    telemetry: Arc<Telemetry>,
    queue: Addr<TaskQueue>,
    presence: Addr<Presence>,
    store: Store,
    every: Duration,
    history: VecDeque<Snapshot>,
    last_counters: BTreeMap<&'static str, u64>,
    bus: EventBus,
}

impl Metrics {
    pub(crate) fn new(
        telemetry: Arc<Telemetry>,
        queue: Addr<TaskQueue>,
        presence: Addr<Presence>,
        store: Store,
        bus: EventBus,
        every: Duration,
    ) -> Metrics {
        Metrics {
            telemetry,
            queue,
            presence,
            store,
            every,
            history: VecDeque::new(),
            last_counters: BTreeMap::new(),
            bus,
        }
    }

    fn kept(&self) -> usize {
        let every = self.every.as_millis().max(1);
        usize::try_from(3_600_000 / every)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    fn take(&mut self, ctx: &mut Context<Self>) {
        let stats = self.queue.send(Stats);
        let agents = self.presence.send(OnlineAndBusy);
        let fut = async move { (stats.await, agents.await) };
        ctx.wait(fut.into_actor(self).map(|(stats, agents), act, _| {
            let (Ok(stats), Ok((online, busy))) = (stats, agents) else {
                tracing::warn!("metrics snapshot skipped: an actor did not answer");
                return;
            };
            act.record(stats, online, busy);
        }));
    }

    fn record(&mut self, stats: Value, online: u64, busy: u64) {
        let counters = self.telemetry.counters();
        let delta = |name: &str| {
            counters.get(name).copied().unwrap_or(0)
                - self.last_counters.get(name).copied().unwrap_or(0)
        };
        let minutes = self.every.as_secs_f64() / 60.0;
        let (failed, dead, completed) =
            (delta("failed"), delta("dead_lettered"), delta("completed"));
        let (s2a, a2c) = self.telemetry.take_samples();
        let queued = stats["by_status"]["queued"].as_u64().unwrap_or(0);
        let previous = self.history.back().map_or(queued, |s| s.queue_depth.now);
        let depths: Vec<u64> = self
            .history
            .iter()
            .map(|s| s.queue_depth.now)
            .chain(std::iter::once(queued))
            .collect();
        let timestamp = now_ms();
        let age = |since: Option<i64>| since.map(|at| timestamp.saturating_sub(at).max(0));
        let snapshot = Snapshot {
            timestamp,
            interval_ms: u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX),
            queue_depth: QueueDepth {
                now: queued,
                trend: queued as i64 - previous as i64,
                max_1h: depths.iter().copied().max().unwrap_or(0),
                avg_1h: depths.iter().sum::<u64>() as f64 / depths.len().max(1) as f64,
                by_status: stats["by_status"].clone(),
                by_priority: stats["by_priority"].clone(),
                dead_letter: stats["dead_letter"].as_u64().unwrap_or(0),
                oldest_queued_age_ms: age(stats["oldest_queued_since"].as_i64()),
                oldest_blocked_age_ms: age(stats["oldest_blocked_since"].as_i64()),
            },
            task_latency: TaskLatency {
                submit_to_assign_ms: Latency::of(s2a),
                assign_to_complete_ms: Latency::of(a2c),
            },
            agent_utilization: Utilization {
                online,
                busy,
                idle: online.saturating_sub(busy),
                ratio: if online == 0 {
                    0.0
                } else {
                    busy as f64 / online as f64
                },
            },
            error_rates: ErrorRates {
                failed_per_min: failed as f64 / minutes,
                dead_lettered_per_min: dead as f64 / minutes,
                completed_per_min: completed as f64 / minutes,
                errors_per_min: delta("errors") as f64 / minutes,
                failure_rate: if failed + completed == 0 {
                    0.0
                } else {
                    failed as f64 / (failed + completed) as f64
                },
            },
            storage: Storage {
                size_on_disk_bytes: self.store.size_on_disk(),
            },
            counters: counters.clone(),
            spend: stats["spend"].clone(),
        };
        self.last_counters = counters;
        if self.bus.watched() {
            if let Ok(data) = serde_json::to_value(&snapshot) {
                self.bus.publish(HubEvent::MetricsSnapshot { data });
            }
        }
        self.history.push_back(snapshot);
        while self.history.len() > self.kept() {
            self.history.pop_front();
        }
    }
}

impl Actor for Metrics {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.take(ctx);
        ctx.run_interval(self.every, |act, ctx| act.take(ctx));
    }
}

/// The newest snapshot (`None` before the first), with the live counters.
#[derive(Message)]
#[rtype(result = "Option<Snapshot>")]
pub(crate) struct Latest;

impl Handler<Latest> for Metrics {
    type Result = Option<Snapshot>;

    fn handle(&mut self, _: Latest, _: &mut Context<Self>) -> Option<Snapshot> {
        self.history.back().cloned().map(|mut s| {
            s.counters = self.telemetry.counters();
            s
        })
    }
}

/// The oldest snapshot taken at or after `since` (ms) and the newest one: the
/// counters' difference between them is what happened in the window.
#[derive(Message)]
#[rtype(result = "Option<(Snapshot, Snapshot)>")]
pub(crate) struct Window {
    pub since: i64,
}

impl Handler<Window> for Metrics {
    type Result = Option<(Snapshot, Snapshot)>;

    fn handle(&mut self, msg: Window, _: &mut Context<Self>) -> Self::Result {
        let newest = self.history.back()?.clone();
        let oldest = self
            .history
            .iter()
            .find(|s| s.timestamp >= msg.since)
            .unwrap_or(&newest)
            .clone();
        Some((oldest, newest))
    }
}

/// The last hour of snapshots, oldest first (for charts).
#[derive(Message)]
#[rtype(result = "Vec<Snapshot>")]
pub(crate) struct History;

impl Handler<History> for Metrics {
    type Result = MessageResult<History>;

    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.history.iter().cloned().collect())
    }
}

/// Prometheus text of a hub's role among hubs on one database (ext, #22):
/// `role` is `leader`, `standby` or `single` (sled); `epoch` the leader
/// lease's epoch (this hub's when it leads, the leader's as a standby saw
/// it); `standby_seconds` how long a standby has waited.
pub(crate) fn role_metrics(role: &str, epoch: Option<i64>, standby_seconds: Option<f64>) -> String {
    let mut out = String::from(
        "# HELP agentcom_hub_role This hub's role among hubs on one database: 1 for the role it has.\n# TYPE agentcom_hub_role gauge\n",
    );
    for r in ["leader", "standby", "single"] {
        out.push_str(&format!(
            "agentcom_hub_role{{role=\"{r}\"}} {}\n",
            u8::from(r == role)
        ));
    }
    if let Some(e) = epoch {
        out.push_str(&format!(
            "# HELP agentcom_hub_leader_epoch The leader lease's epoch (it rises at every takeover).\n# TYPE agentcom_hub_leader_epoch gauge\nagentcom_hub_leader_epoch {e}\n"
        ));
    }
    if let Some(s) = standby_seconds {
        out.push_str(&format!(
            "# HELP agentcom_hub_standby_seconds How long this standby has waited for the leader lease.\n# TYPE agentcom_hub_standby_seconds gauge\nagentcom_hub_standby_seconds {s:.3}\n"
        ));
    }
    out
}

/// Prometheus text exposition of a snapshot.
pub(crate) fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in lines {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "agentcom_queue_depth",
        "gauge",
        "Queued tasks.",
        one(s.queue_depth.now.to_string()),
    );
    metric(
        "agentcom_queue_depth_max_1h",
        "gauge",
        "Largest queue depth over the last hour.",
        one(s.queue_depth.max_1h.to_string()),
    );
    let statuses = s
        .queue_depth
        .by_status
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (format!("{{status=\"{k}\"}}"), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    metric("agentcom_tasks", "gauge", "Tasks by status.", statuses);
    metric(
        "agentcom_oldest_queued_age_seconds",
        "gauge",
        "How long the task waiting longest for an agent has waited (0 when none waits).",
        one(format!(
            "{:.3}",
            s.queue_depth.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0
        )),
    );
    metric(
        "agentcom_oldest_blocked_age_seconds",
        "gauge",
        "How long the longest-blocked task has been blocked (0 when none is).",
        one(format!(
            "{:.3}",
            s.queue_depth.oldest_blocked_age_ms.unwrap_or(0) as f64 / 1000.0
        )),
    );
    metric(
        "agentcom_dead_letter_tasks",
        "gauge",
        "Tasks in the dead letter.",
        one(s.queue_depth.dead_letter.to_string()),
    );
    metric(
        "agentcom_events_total",
        "counter",
        "Task and agent events since the hub started.",
        s.counters
            .iter()
            .map(|(k, v)| (format!("{{event=\"{k}\"}}"), v.to_string()))
            .collect(),
    );
    for (name, l) in [
        (
            "agentcom_submit_to_assign_ms",
            &s.task_latency.submit_to_assign_ms,
        ),
        (
            "agentcom_assign_to_complete_ms",
            &s.task_latency.assign_to_complete_ms,
        ),
    ] {
        metric(
            name,
            "summary",
            "Latency over the last interval, milliseconds.",
            vec![
                ("{quantile=\"0.5\"}".into(), l.p50.to_string()),
                ("{quantile=\"0.9\"}".into(), l.p90.to_string()),
                ("{quantile=\"0.99\"}".into(), l.p99.to_string()),
                ("_count".into(), l.count.to_string()),
            ],
        );
    }
    metric(
        "agentcom_agents",
        "gauge",
        "Online agents by activity.",
        vec![
            (
                "{state=\"busy\"}".into(),
                s.agent_utilization.busy.to_string(),
            ),
            (
                "{state=\"idle\"}".into(),
                s.agent_utilization.idle.to_string(),
            ),
        ],
    );
    metric(
        "agentcom_agent_utilization",
        "gauge",
        "Busy share of online agents.",
        one(format!("{:.4}", s.agent_utilization.ratio)),
    );
    metric(
        "agentcom_failure_rate",
        "gauge",
        "Failed share of finished attempts over the last interval.",
        one(format!("{:.4}", s.error_rates.failure_rate)),
    );
    metric(
        "agentcom_storage_bytes",
        "gauge",
        "Store size on disk.",
        one(s.storage.size_on_disk_bytes.to_string()),
    );
    let today = &s.spend["today"];
    let spend_lines = |part: &str| -> Vec<(String, String)> {
        let mut lines = vec![(String::new(), number(&today["total"][part]))];
        for (label, key) in [
            ("agent", "agents"),
            ("group", "groups"),
            ("capability", "capabilities"),
        ] {
            if let Some(m) = today[key].as_object() {
                for (name, v) in m {
                    lines.push((
                        format!("{{{label}=\"{}\"}}", escape_label(name)),
                        number(&v[part]),
                    ));
                }
            }
        }
        lines
    };
    metric(
        "agentcom_spend_tokens_today",
        "gauge",
        "Tokens spent today (UTC): in all, and by agent, credential group and capability.",
        spend_lines("tokens"),
    );
    metric(
        "agentcom_spend_usd_today",
        "gauge",
        "Dollars spent today (UTC): in all, and by agent, credential group and capability.",
        spend_lines("cost_usd"),
    );
    out
}

/// A JSON number as Prometheus prints it (0 when absent).
fn number(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => n.to_string(),
        None => format!("{}", v.as_f64().unwrap_or(0.0)),
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A snapshot as JSON for the API.
pub(crate) fn to_json(s: &Snapshot) -> Value {
    serde_json::to_value(s).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let l = Latency::of((1..=100).collect());
        assert_eq!(
            (l.p50, l.p90, l.p99, l.max, l.count),
            (50, 90, 99, 100, 100)
        );
        assert_eq!(Latency::of(vec![]), Latency::default());
    }
}
