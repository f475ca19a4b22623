//! The operator dashboard's server side: the page's files (embedded at build
//! time), login sessions, the snapshot (PROTOCOL.md section 4) and the socket
//! that streams events to the page.
//!
//! Architecture invariant: reads through the owners' messages and acts only
//! through them (`Retry`, `Cancel`, `Acknowledge`); holds no hub state beyond a
//! short-lived storage-health cache. Knows nothing of HTTP routing (see
//! `http::dashboard`).

mod sessions;
mod socket;

pub(crate) use sessions::{Sessions, SESSION_TTL_MS};
pub(crate) use socket::DashboardSocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::agents::auth::Tokens;
use crate::agents::presence::{ListAgents, Presence};
use crate::agents::ratelimit::RateLimits;
use crate::ops::alerts::{Alerter, AlertsView};
use crate::ops::metrics::{History, Metrics, Snapshot};
use crate::queue::{
    ConcurrencyLimits, DeadLetters, ListReservations, RecentCompletions, Stats, TaskQueue,
};
use crate::storage::backup::Maintenance;
use crate::storage::bus::EventBus;
use crate::util::now_ms;

/// The page's files: (path under `/dashboard/`, content type, body).
pub(crate) const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../dashboard/app.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../dashboard/charts.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../dashboard/style.css"),
    ),
];

/// Dead-letter tasks and completions a snapshot carries.
const LISTED: usize = 100;
/// Storage health counts every record (a scan of the store): computed at most
/// this often, or after a storage event.
const STORAGE_HEALTH_TTL: Duration = Duration::from_secs(30);

/// What the dashboard reads and acts through.
pub(crate) struct DashboardDeps {
    pub queue: Addr<TaskQueue>,
    pub presence: Addr<Presence>,
    pub metrics: Addr<Metrics>,
    pub alerter: Addr<Alerter>,
    pub storage: Maintenance,
    pub limits: RateLimits,
    pub tokens: Tokens,
    pub bus: EventBus,
    pub started_at: i64,
    /// This hub's place among hubs on one database: storage, role, epoch and
    /// every hub's URL (the page moves to the active one when this one stops).
    pub hub: Value,
    storage_health: Mutex<Option<(Instant, Value)>>,
}

impl DashboardDeps {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        queue: Addr<TaskQueue>,
        presence: Addr<Presence>,
        metrics: Addr<Metrics>,
        alerter: Addr<Alerter>,
        storage: Maintenance,
        limits: RateLimits,
        tokens: Tokens,
        bus: EventBus,
        started_at: i64,
        hub: Value,
    ) -> DashboardDeps {
        DashboardDeps {
            queue,
            presence,
            metrics,
            alerter,
            storage,
            limits,
            tokens,
            bus,
            started_at,
            hub,
            storage_health: Mutex::new(None),
        }
    }

    /// Storage health, from a cache at most [`STORAGE_HEALTH_TTL`] old (or fresh
    /// when `fresh`, after a storage event). Computed off the actor threads.
    async fn storage_health(&self, fresh: bool) -> Value {
        if !fresh {
            if let Some((at, v)) = self.storage_health.lock().as_ref() {
                if at.elapsed() < STORAGE_HEALTH_TTL {
                    return v.clone();
                }
            }
        }
        let keeper = self.storage.clone();
        match actix_web::rt::task::spawn_blocking(move || keeper.health()).await {
            Ok(v) => {
                *self.storage_health.lock() = Some((Instant::now(), v.clone()));
                v
            }
            Err(e) => json!({"status": "unknown", "error": e.to_string()}),
        }
    }

    /// The whole picture (PROTOCOL.md section 4): `(data, alert events)`.
    pub(crate) async fn snapshot(
        &self,
        fresh_storage: bool,
    ) -> Result<(Value, Value), MailboxError> {
        let stats = self.queue.send(Stats);
        let dead = self.queue.send(DeadLetters {
            limit: LISTED,
            newest_first: true,
        });
        let completions = self.queue.send(RecentCompletions);
        let reservations = self.queue.send(ListReservations { repo: None });
        let concurrency = self.queue.send(ConcurrencyLimits);
        let agents = self.presence.send(ListAgents { online_only: false });
        let usage = self.presence.send(crate::agents::usage::UsageList);
        let alerts = self.alerter.send(AlertsView);
        let history = self.metrics.send(History);
        let (stats, dead, (recent, throughput), reservations, agents, alerts, history) = (
            stats.await?,
            dead.await?,
            completions.await?,
            reservations.await?,
            agents.await?,
            alerts.await?,
            history.await?,
        );
        let dead = dead.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "dashboard: dead-letter tasks unreadable");
            Vec::new()
        });
        let storage = self.storage_health(fresh_storage).await;
        let mut cards: Vec<Value> = agents.iter().map(|a| a.card()).collect();
        // Registered agents that never connected since the hub started.
        match self.tokens.list() {
            Ok(records) => cards.extend(
                records
                    .iter()
                    .filter(|r| !agents.iter().any(|a| a.agent_id == r.agent_id))
                    .map(|r| {
                        json!({
                            "agent_id": r.agent_id,
                            "name": r.agent_id,
                            "status": "never connected since the hub started",
                            "fsm_state": "offline",
                            "current_task_id": null,
                            "running": [],
                            "slots": r.slots.unwrap_or(1),
                            "capabilities": r.capabilities,
                            "connected_at": null,
                            "last_state_change": r.created_at,
                            "flags": [],
                            "online": false,
                        })
                    }),
            ),
            Err(e) => tracing::warn!(error = %e, "dashboard: agent tokens unreadable"),
        }
        // Online agents first, then by id.
        cards.sort_by_key(|c| {
            (
                !c["online"].as_bool().unwrap_or(false),
                c["agent_id"].as_str().unwrap_or_default().to_string(),
            )
        });
        let active = alerts["active"].clone();
        let now = now_ms();
        let data = json!({
            "uptime_ms": now.saturating_sub(self.started_at).max(0),
            "timestamp": now,
            "health": health(&active, &self.storage.problems()),
            "hub": self.hub,
            "agents": cards,
            "queue": stats,
            "dead_letter_tasks": dead,
            "reservations": reservations,
            "concurrency": concurrency.await?,
            "usage": usage.await?,
            "recent_completions": recent,
            "throughput": throughput,
            "storage": storage,
            "active_alerts": active,
            "rate_limits": self.limits.view(),
            "charts": charts(&history),
        });
        Ok((data, alerts["events"].clone()))
    }
}

/// The health banner: the worst of the active alerts and storage problems.
fn health(active_alerts: &Value, storage_problems: &[&str]) -> Value {
    let mut conditions = Vec::new();
    let mut status = "ok";
    for a in active_alerts.as_array().into_iter().flatten() {
        let severity = a["severity"].as_str().unwrap_or("warning");
        if severity == "critical" {
            status = "critical";
        } else if severity == "warning" && status == "ok" {
            status = "warning";
        }
        conditions.push(json!({
            "severity": severity,
            "source": "alert",
            "rule_id": a["rule_id"],
            "message": a["message"],
            "acknowledged": a["acknowledged"],
        }));
    }
    for p in storage_problems {
        if status == "ok" {
            status = "warning";
        }
        let message = match *p {
            "recovered_at_startup" => "storage was recovered from a backup at start-up",
            "backup_failing" => "backups are failing",
            "compaction_failing" => "compactions are failing",
            other => other,
        };
        conditions.push(json!({
            "severity": "warning",
            "source": "storage",
            "condition": p,
            "message": message,
        }));
    }
    json!({"status": status, "conditions": conditions})
}

/// Chart points of the last hour, oldest first.
fn charts(history: &[Snapshot]) -> Value {
    let points: Vec<Value> = history
        .iter()
        .map(|s| {
            let l = &s.task_latency.assign_to_complete_ms;
            json!({
                "t": s.timestamp,
                "queue_depth": s.queue_depth.now,
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "utilization": s.agent_utilization.ratio,
            })
        })
        .collect();
    json!({
        "interval_ms": history.last().map_or(0, |s| s.interval_ms),
        "points": points,
    })
}

/// Shared by every dashboard socket.
pub(crate) type SharedDeps = Arc<DashboardDeps>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_the_worst_condition() {
        assert_eq!(health(&json!([]), &[])["status"], "ok");
        let warning = json!([{"severity": "warning", "rule_id": "queue_growing", "message": "m", "acknowledged": false}]);
        let h = health(&warning, &["backup_failing"]);
        assert_eq!(h["status"], "warning");
        assert_eq!(h["conditions"].as_array().map(Vec::len), Some(2));
        assert_eq!(h["conditions"][1]["message"], "backups are failing");
        let critical = json!([
            {"severity": "warning", "rule_id": "a", "message": "m"},
            {"severity": "critical", "rule_id": "b", "message": "m"},
        ]);
        assert_eq!(health(&critical, &[])["status"], "critical");
    }

    #[test]
    fn every_asset_is_embedded_and_not_empty() {
        for (name, _, body) in ASSETS {
            assert!(!body.trim().is_empty(), "{name} is empty");
        }
        let index = ASSETS
            .iter()
            .find(|(n, _, _)| *n == "index.html")
            .map(|(_, _, b)| *b)
            .unwrap_or_default();
        // No network fetches: every script and stylesheet is our own.
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(index.contains("/dashboard/app.js"));
    }
}
