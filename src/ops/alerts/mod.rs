//! The alerter: rules checked against the newest metrics snapshot every
//! `alert_check_interval_ms`, alerts that fire, repeat, escalate and clear, operator
//! acknowledgement, thresholds changed at runtime (persisted; in force at the next
//! check), and delivery to `GET /api/alerts`, the dashboard feed and an optional
//! webhook (POST JSON, retried with backoff, failures counted).
//!
//! Rules: `queue_growing`, `high_failure_rate`, `stuck_tasks`, `blocked_tasks`,
//! `standing_order_missed`, `no_agents_online`
//! (agents were registered and none is online), `high_error_rate`, `storage`
//! (the store was recovered from a backup at start-up, or backups or compactions
//! are failing), and the fleet rules: `agent_offline` (an agent that was online
//! is gone for longer than `agent_offline_ms`), `queued_too_long` (the task
//! waiting longest for an agent, and whether a capable one is online),
//! `dead_letter_growth`, `agent_failing` (an agent's last attempts all failed),
//! `usage_limited` (info: a credential group is paused) and `question_waiting`
//! (agents wait for an answer). What each rule finds is in `findings.rs`. Nothing fires in
//! the start-up grace period. After an alert clears, the same rule does not fire
//! again within its cooldown unless the new alert is critical.
//!
//! Architecture invariant: reads only (metrics, the queue's held tasks, the token
//! list); never changes a task or an agent. Knows nothing of sockets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use validator::{Validate, ValidationError};

use crate::agents::auth::Tokens;
use crate::agents::presence::{Fleet, FleetState, Presence};
use crate::error::StoreError;
use crate::ops::metrics::{Metrics, Snapshot, Window};
use crate::ops::standing::{RecentlyMissed, StandingOrders};
use crate::queue::{
    BlockedTasks, FailingAgents, LongWait, LongestWaiting, Questions, StuckTasks, TaskQueue,
};
use crate::storage::backup::Maintenance;
use crate::storage::bus::{EventBus, HubEvent};
use crate::storage::store::{decode, encode, Store};
use crate::util::now_ms;

mod findings;
use findings::{missed_finding, question_finding};

const THRESHOLDS_KEY: &[u8] = b"alert_thresholds";
/// Alert events kept for `GET /api/alerts` and the dashboard.
const EVENTS_KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    /// Worth knowing, nothing to fix (a usage-limit pause): not a health problem.
    Info,
    Warning,
    Critical,
}

/// Limits the rules compare against; changed at runtime, persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(default, deny_unknown_fields)]
#[validate(schema(function = "critical_not_below_warning"))]
pub(crate) struct Thresholds {
    /// queue_growing: queued tasks above this, and rising for `queue_growing_checks`
    /// checks in a row (critical above 10× this).
    #[validate(range(min = 1))]
    pub queue_depth: u64,
    #[validate(range(min = 1, max = 1000))]
    pub queue_growing_checks: u32,
    /// high_failure_rate: failed / (failed + completed) over the last interval,
    /// once at least `min_finished` attempts finished in it.
    #[validate(range(min = 0.0, max = 1.0))]
    pub failure_rate: f64,
    #[validate(range(min = 0.0, max = 1.0))]
    pub failure_rate_critical: f64,
    #[validate(range(min = 1))]
    pub min_finished: u64,
    /// stuck_tasks: assigned for longer than this.
    #[validate(range(min = 1))]
    pub stuck_task_ms: u64,
    /// blocked_tasks: blocked (by an agent or a dependency) for longer than this.
    #[validate(range(min = 1))]
    pub blocked_task_ms: u64,
    /// high_error_rate: error answers (HTTP 4xx/5xx but 429, WS `error` frames) per
    /// minute over the last interval.
    #[validate(range(exclusive_min = 0.0))]
    pub error_rate_per_min: f64,
    /// After an alert clears, the rule stays quiet this long (critical excepted);
    /// an unacknowledged active alert is re-sent this often.
    pub cooldown_ms: u64,
    /// Rates (failures, errors) are measured over this much recent time.
    #[validate(range(min = 100, max = 3_600_000))]
    pub window_ms: u64,
    /// agent_offline: an agent that was online is offline for longer than this.
    #[validate(range(min = 1))]
    pub agent_offline_ms: u64,
    /// queued_too_long: the task waiting longest for an agent waits longer than this.
    #[validate(range(min = 1))]
    pub queued_age_ms: u64,
    /// dead_letter_growth: at least this many tasks dead-lettered over the window.
    #[validate(range(min = 1))]
    pub dead_letter_growth: u64,
    /// agent_failing: an agent's last this-many finished attempts all failed.
    #[validate(range(min = 1, max = 50))]
    pub agent_failing_attempts: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            queue_depth: 100,
            queue_growing_checks: 3,
            failure_rate: 0.5,
            failure_rate_critical: 0.9,
            min_finished: 5,
            stuck_task_ms: 30 * 60 * 1000,
            blocked_task_ms: 30 * 60 * 1000,
            error_rate_per_min: 60.0,
            cooldown_ms: 5 * 60 * 1000,
            window_ms: 5 * 60 * 1000,
            agent_offline_ms: 5 * 60 * 1000,
            queued_age_ms: 15 * 60 * 1000,
            dead_letter_growth: 10,
            agent_failing_attempts: 3,
        }
    }
}

/// `now` minus `ms` (a threshold), as a time.
fn ago(ms: u64) -> i64 {
    now_ms().saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// `failure_rate_critical` may not be below `failure_rate`.
fn critical_not_below_warning(t: &Thresholds) -> Result<(), ValidationError> {
    if t.failure_rate_critical < t.failure_rate {
        let mut e = ValidationError::new("invalid_value");
        e.message = Some("failure_rate_critical must be at least failure_rate".into());
        return Err(e);
    }
    Ok(())
}

/// An active alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Alert {
    pub rule_id: String,
    pub severity: Severity,
    pub message: String,
    pub details: Value,
    pub fired_at: i64,
    pub last_sent_at: i64,
    pub acknowledged: bool,
    pub acknowledged_at: Option<i64>,
}

/// What happened to an alert, in order (`GET /api/alerts`, dashboard events).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AlertEvent {
    pub seq: u64,
    /// `fired`, `repeated`, `escalated`, `acknowledged`, `cleared`.
    pub kind: String,
    pub rule_id: String,
    pub severity: Option<Severity>,
    pub message: String,
    pub at: i64,
}

/// Webhook delivery counts.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub attempts_failed: AtomicU64,
}

pub(crate) struct AlerterConfig {
    pub check_every: Duration,
    pub startup_grace: Duration,
    pub webhook_url: Option<String>,
    pub webhook_retries: u32,
}

pub(crate) struct Alerter {
    config: AlerterConfig,
    thresholds: Thresholds,
    started_at: i64,
    active: BTreeMap<String, Alert>,
    /// When each rule last cleared (for the cooldown).
    cleared_at: BTreeMap<String, i64>,
    growing_checks: u32,
    last_depth: Option<u64>,
    last_snapshot: Option<i64>,
    events: VecDeque<AlertEvent>,
    next_event: u64,
    webhook: Option<mpsc::Sender<Value>>,
    webhook_stats: Arc<WebhookStats>,
    deps: AlerterDeps,
}

/// What the alerter reads (and where its changes go).
pub(crate) struct AlerterDeps {
    pub store: Store,
    pub tokens: Tokens,
    pub metrics: Addr<Metrics>,
    pub queue: Addr<TaskQueue>,
    /// Offline agents and online agents' capabilities (the fleet rules).
    pub presence: Addr<Presence>,
    /// Storage problems (recovery at start-up, failing backups or compactions),
    /// watched as the `storage` rule.
    pub storage: Maintenance,
    /// Missed standing-order runs.
    pub standing: Addr<StandingOrders>,
    pub bus: EventBus,
}

/// What a rule found this check.
struct Finding {
    severity: Severity,
    message: String,
    details: Value,
}

impl Alerter {
    pub(crate) fn new(deps: AlerterDeps, config: AlerterConfig) -> Result<Alerter, StoreError> {
        let thresholds = match deps.store.meta.get(THRESHOLDS_KEY)? {
            Some(bytes) => decode("meta", THRESHOLDS_KEY, &bytes)?,
            None => Thresholds::default(),
        };
        let webhook_stats = Arc::new(WebhookStats::default());
        let webhook = config
            .webhook_url
            .clone()
            .map(|url| start_webhook(url, config.webhook_retries, webhook_stats.clone()));
        Ok(Alerter {
            config,
            thresholds,
            started_at: now_ms(),
            active: BTreeMap::new(),
            cleared_at: BTreeMap::new(),
            growing_checks: 0,
            last_depth: None,
            last_snapshot: None,
            events: VecDeque::new(),
            next_event: 1,
            webhook,
            webhook_stats,
            deps,
        })
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let grace = i64::try_from(self.config.startup_grace.as_millis()).unwrap_or(i64::MAX);
        if now_ms() - self.started_at < grace {
            return;
        }
        let window = self.deps.metrics.send(Window {
            since: now_ms()
                .saturating_sub(i64::try_from(self.thresholds.window_ms).unwrap_or(i64::MAX)),
        });
        let stuck = self.deps.queue.send(StuckTasks {
            assigned_before: now_ms()
                .saturating_sub(i64::try_from(self.thresholds.stuck_task_ms).unwrap_or(i64::MAX)),
        });
        let blocked = self.deps.queue.send(BlockedTasks {
            blocked_before: now_ms()
                .saturating_sub(i64::try_from(self.thresholds.blocked_task_ms).unwrap_or(i64::MAX)),
        });
        let missed = self.deps.standing.send(RecentlyMissed);
        let fleet = self.deps.presence.send(Fleet {
            offline_before: ago(self.thresholds.agent_offline_ms),
        });
        let waiting = self.deps.queue.send(LongestWaiting {
            since_before: ago(self.thresholds.queued_age_ms),
        });
        let failing = self.deps.queue.send(FailingAgents {
            attempts: self.thresholds.agent_failing_attempts as usize,
        });
        let questions = self.deps.queue.send(Questions);
        let fut = async move {
            let missed = missed.await.unwrap_or_default();
            let questions = questions.await.unwrap_or_default();
            let fleet = (
                fleet.await.unwrap_or_default(),
                waiting.await.ok().flatten(),
                failing.await.unwrap_or_default(),
            );
            (
                window.await,
                stuck.await,
                blocked.await,
                (missed, questions),
                fleet,
            )
        };
        ctx.wait(fut.into_actor(self).map(
            |(window, stuck, blocked, (missed, questions), fleet), act, _| {
                let (Ok(Some((oldest, newest))), Ok(stuck), Ok(blocked)) = (window, stuck, blocked)
                else {
                    return;
                };
                let registered = act.deps.tokens.count();
                let mut findings = act.evaluate(&oldest, &newest, &stuck, registered);
                findings.push(("blocked_tasks", act.blocked_finding(&blocked)));
                findings.push(("standing_order_missed", missed_finding(&missed)));
                findings.push(("question_waiting", question_finding(&questions)));
                let (fleet, waiting, failing) = fleet;
                findings.extend(act.fleet_findings(&fleet, waiting.as_ref(), &failing));
                act.apply(findings);
            },
        ));
    }

    fn apply(&mut self, findings: Vec<(&'static str, Option<Finding>)>) {
        let now = now_ms();
        let cooldown = i64::try_from(self.thresholds.cooldown_ms).unwrap_or(i64::MAX);
        for (rule, finding) in findings {
            match (finding, self.active.get(rule).cloned()) {
                (Some(f), None) => {
                    let cooling = self
                        .cleared_at
                        .get(rule)
                        .is_some_and(|at| now - at < cooldown);
                    if cooling && f.severity != Severity::Critical {
                        continue;
                    }
                    let alert = Alert {
                        rule_id: rule.to_string(),
                        severity: f.severity,
                        message: f.message,
                        details: f.details,
                        fired_at: now,
                        last_sent_at: now,
                        acknowledged: false,
                        acknowledged_at: None,
                    };
                    tracing::warn!(rule_id = rule, severity = ?alert.severity, message = %alert.message, "alert fired");
                    self.event("fired", &alert);
                    self.active.insert(rule.to_string(), alert);
                }
                (Some(f), Some(mut alert)) => {
                    let escalated = f.severity > alert.severity;
                    alert.severity = f.severity;
                    alert.message = f.message;
                    alert.details = f.details;
                    if escalated {
                        // Critical bypasses the cooldown and any acknowledgement.
                        alert.acknowledged = false;
                        alert.last_sent_at = now;
                        self.event("escalated", &alert);
                    } else if !alert.acknowledged && now - alert.last_sent_at >= cooldown {
                        alert.last_sent_at = now;
                        self.event("repeated", &alert);
                    }
                    self.active.insert(rule.to_string(), alert);
                }
                (None, Some(alert)) => {
                    tracing::info!(rule_id = rule, "alert cleared");
                    self.active.remove(rule);
                    self.cleared_at.insert(rule.to_string(), now);
                    self.event("cleared", &alert);
                }
                (None, None) => {}
            }
        }
    }

    fn event(&mut self, kind: &str, alert: &Alert) {
        let event = AlertEvent {
            seq: self.next_event,
            kind: kind.to_string(),
            rule_id: alert.rule_id.clone(),
            severity: (kind != "cleared").then_some(alert.severity),
            message: alert.message.clone(),
            at: now_ms(),
        };
        self.next_event += 1;
        if let Some(tx) = &self.webhook {
            let body = json!({
                "event": kind,
                "rule_id": alert.rule_id,
                "severity": alert.severity,
                "message": alert.message,
                "details": alert.details,
                "fired_at": alert.fired_at,
                "at": event.at,
                "service": "agent_com",
            });
            let _ = tx.send(body);
        }
        if self.deps.bus.watched() {
            let data = json!(alert);
            self.deps.bus.publish(match kind {
                "fired" => HubEvent::AlertFired { data },
                "cleared" => HubEvent::AlertCleared {
                    rule_id: alert.rule_id.clone(),
                },
                _ => HubEvent::AlertUpdated { data },
            });
        }
        self.events.push_back(event);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }
}

impl Actor for Alerter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.check_every, |act, ctx| act.check(ctx));
    }
}

/// Posts alert events to `url` from one thread, in order; each is tried
/// `1 + retries` times with doubling waits (0.5 s, 1 s, 2 s, ...).
fn start_webhook(url: String, retries: u32, stats: Arc<WebhookStats>) -> mpsc::Sender<Value> {
    let (tx, rx) = mpsc::channel::<Value>();
    let spawned = std::thread::Builder::new()
        .name("alert-webhook".into())
        .spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            for body in rx {
                let mut wait = Duration::from_millis(500);
                let mut sent = false;
                for attempt in 0..=retries {
                    match agent.post(&url).send_json(&body) {
                        Ok(_) => {
                            sent = true;
                            break;
                        }
                        Err(e) => {
                            stats.attempts_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(attempt, error = %e, "alert webhook delivery failed");
                            if attempt < retries {
                                std::thread::sleep(wait);
                                wait = wait.saturating_mul(2);
                            }
                        }
                    }
                }
                let counter = if sent {
                    &stats.delivered
                } else {
                    &stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the alert webhook thread");
    }
    tx
}

/// Active alerts, recent events and webhook counts.
#[derive(Message)]
#[rtype(result = "Value")]
pub(crate) struct AlertsView;

impl Handler<AlertsView> for Alerter {
    type Result = MessageResult<AlertsView>;

    fn handle(&mut self, _: AlertsView, _: &mut Context<Self>) -> Self::Result {
        let active: Vec<&Alert> = self.active.values().collect();
        MessageResult(json!({
            "active": active,
            "events": self.events,
            "webhook": {
                "configured": self.webhook.is_some(),
                "delivered": self.webhook_stats.delivered.load(Ordering::Relaxed),
                "failed": self.webhook_stats.failed.load(Ordering::Relaxed),
                "attempts_failed": self.webhook_stats.attempts_failed.load(Ordering::Relaxed),
            },
        }))
    }
}

/// Acknowledge the active alert of a rule; `false` if none is active.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Acknowledge {
    pub rule_id: String,
}

impl Handler<Acknowledge> for Alerter {
    type Result = bool;

    fn handle(&mut self, msg: Acknowledge, _: &mut Context<Self>) -> bool {
        let Some(mut alert) = self.active.get(&msg.rule_id).cloned() else {
            return false;
        };
        if !alert.acknowledged {
            alert.acknowledged = true;
            alert.acknowledged_at = Some(now_ms());
            self.event("acknowledged", &alert);
            self.active.insert(msg.rule_id, alert);
        }
        true
    }
}

/// The thresholds in force.
#[derive(Message)]
#[rtype(result = "Thresholds")]
pub(crate) struct GetThresholds;

impl Handler<GetThresholds> for Alerter {
    type Result = MessageResult<GetThresholds>;

    fn handle(&mut self, _: GetThresholds, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.thresholds.clone())
    }
}

/// Replace the thresholds (already validated); persisted, in force at the next check.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct SetThresholds(pub Thresholds);

impl Handler<SetThresholds> for Alerter {
    type Result = ResponseActFuture<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: SetThresholds, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.deps.store.meta.insert(THRESHOLDS_KEY, encode(&msg.0)) {
            return Box::pin(fut::ready(Err(e.into())));
        }
        self.thresholds = msg.0;
        // Answered once the thresholds are durable.
        Box::pin(self.deps.store.durable().into_actor(self))
    }
}
