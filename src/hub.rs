//! The hub's wiring: starts the actors in dependency order on an open store and
//! hands out their addresses as `HubState` (what every HTTP handler gets).
//!
//! Architecture invariant: this is the only module that knows every actor; the
//! actors know each other only through the addresses handed to them here.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::agents::auth::Tokens;
use crate::agents::fsm::{FsmTimings, HubStopping};
use crate::agents::presence::{Presence, PresenceDeps};
use crate::agents::ratelimit::{Limits, RateLimits};
use crate::agents::scheduler::Scheduler;
use crate::agents::session::SessionDeps;
use crate::config::Config;
use crate::context::{ContextReader, ContextRights, SharedContext};
use crate::error::StoreError;
use crate::messaging::{Messaging, MessagingLimits};
use crate::ops::alerts::{Alerter, AlerterConfig, AlerterDeps};
use crate::ops::analytics::Analytics;
use crate::ops::metrics::Metrics;
use crate::ops::retention::Retention;
use crate::ops::standing::{self, StandingOrders};
use crate::ops::telemetry::Telemetry;
use crate::queue::{Peers, TaskQueue};
use crate::storage::archive::Archive;
use crate::storage::backup::Maintenance;
use crate::storage::bus::EventBus;
use crate::storage::eventlog::EventLog;
use crate::storage::store::Store;
use crate::topics::{HubOutlet, Topics};
use crate::util::now_ms;
use crate::web::dashboard::{DashboardDeps, Sessions, SharedDeps};

/// Shared, read-only handles every HTTP handler gets.
pub(crate) struct HubState {
    pub config: Arc<Config>,
    pub tokens: Tokens,
    pub queue: Addr<TaskQueue>,
    pub presence: Addr<Presence>,
    pub messaging: Addr<Messaging>,
    pub analytics: Addr<Analytics>,
    pub limits: RateLimits,
    pub metrics: Addr<Metrics>,
    pub telemetry: Arc<Telemetry>,
    pub alerter: Addr<Alerter>,
    /// Backups, compaction and storage health (its schedule starts in `serve`).
    pub storage: Maintenance,
    pub bus: EventBus,
    /// The event log (read by `GET /api/events`; owners append).
    pub events: EventLog,
    pub standing: Addr<StandingOrders>,
    pub topics: Addr<Topics>,
    /// The shared context store, and who may write which keys.
    pub context: Addr<SharedContext>,
    pub context_rights: ContextRights,
    /// Archived finished work (read by `GET /api/tasks/:id` for a task no
    /// longer in the live store).
    pub archive: Archive,
    pub sessions: Sessions,
    pub dashboard: SharedDeps,
    /// Set when the server is told to stop (agents' sockets closing then keep
    /// their tasks for recovery).
    pub stopping: HubStopping,
    /// With Postgres: the epoch of the leader lease this hub holds.
    pub leader_epoch: Option<i64>,
}

/// This hub's role among hubs on one database: `leader` while it holds the
/// Postgres lease at `epoch`, `single` on sled (a standby runs no hub yet).
pub(crate) fn role_of(epoch: Option<i64>) -> &'static str {
    match epoch {
        Some(_) => "leader",
        None => "single",
    }
}

impl HubState {
    pub(crate) fn session_deps(&self) -> SessionDeps {
        SessionDeps {
            tokens: self.tokens.clone(),
            limits: self.limits.clone(),
            telemetry: self.telemetry.clone(),
            presence: self.presence.clone(),
            messaging: self.messaging.clone(),
            queue: self.queue.clone(),
            topics: self.topics.clone(),
            idle_timeout: Duration::from_millis(self.config.idle_timeout_ms),
        }
    }
}

/// Starts the actors on the current actix system. Must run inside one.
pub(crate) fn start_actors(config: Arc<Config>, store: Store) -> Result<HubState, StoreError> {
    store.set_commit_window(Duration::from_micros(config.group_commit_window_us));
    let started_at = now_ms();
    let bus = EventBus::new();
    // The queue, scheduler and presence refer to one another: create the contexts
    // first so every actor can be given the others' addresses.
    let analytics = Analytics::new(
        store.clone(),
        Config::days_ms(config.analytics_retention_days),
    )
    .start();
    let scheduler_ctx = Context::<Scheduler>::new();
    let presence_ctx = Context::<Presence>::new();
    let telemetry = Arc::new(Telemetry::default());
    let events = EventLog::open(store.clone())?;
    // The hub's own topic events and notices: staged by their owners, told by
    // `Topics` (connected when it starts).
    let outlet = HubOutlet::open(store.clone())?;
    // Finished work moves to files in the backup directory (its index stays).
    let archive = Archive::new(store.clone(), config.backup_dir());
    let queue = TaskQueue::load(
        store.clone(),
        events.clone(),
        &config,
        Peers {
            scheduler: scheduler_ctx.address(),
            presence: presence_ctx.address(),
            analytics: analytics.clone(),
            telemetry: telemetry.clone(),
            bus: bus.clone(),
            outlet: outlet.clone(),
            context: ContextReader::new(store.clone()),
            archive: archive.clone(),
        },
    )?;
    // Supervised: a handler panic stops the queue and it restarts from sled.
    let queue = Supervisor::start(move |_| queue);
    let scheduler = scheduler_ctx.run(Scheduler::new(
        queue.clone(),
        Duration::from_millis(config.scheduler_sweep_ms),
    ));
    let timings = FsmTimings {
        acceptance_timeout: Duration::from_millis(config.acceptance_timeout_ms),
        reject_backoff: Duration::from_millis(config.reject_backoff_ms),
    };
    let stopping = HubStopping::default();
    let tokens = Tokens::new(store.clone());
    let presence = presence_ctx.run(Presence::load(
        timings,
        PresenceDeps {
            queue: queue.clone(),
            scheduler: scheduler.clone(),
            store: store.clone(),
            log: events.clone(),
            bus: bus.clone(),
            telemetry: telemetry.clone(),
            stopping: stopping.clone(),
            tokens: tokens.clone(),
        },
    )?);
    let metrics = Metrics::new(
        telemetry.clone(),
        queue.clone(),
        presence.clone(),
        store.clone(),
        bus.clone(),
        Duration::from_millis(config.metrics_interval_ms),
    )
    .start();
    let rate_limits = RateLimits::load(
        store.clone(),
        config.rate_limits_enabled,
        Limits {
            light: config.rate_limit_light_per_min,
            normal: config.rate_limit_normal_per_min,
            heavy: config.rate_limit_heavy_per_min,
        },
    )?;
    // Buckets of callers gone quiet are full again: forget them, so memory follows
    // the callers active now, not every caller ever seen.
    let sweeping = rate_limits.clone();
    actix_rt::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            every.tick().await;
            sweeping.sweep();
        }
    });
    let limits = MessagingLimits {
        mailbox_cap: config.mailbox_cap,
        mailbox_ttl_ms: Config::days_ms(config.mailbox_ttl_days),
        channel_history: config.channel_history,
        history_ttl_ms: Config::days_ms(config.message_retention_days),
        max_message_bytes: config.max_message_bytes,
    };
    let messaging = Messaging::load(
        store.clone(),
        tokens.clone(),
        presence.clone(),
        analytics.clone(),
        limits,
    )?
    .start();
    let clock = config
        .calendar_clock()
        .unwrap_or_else(standing::system_clock);
    let standing = StandingOrders::load(
        store.clone(),
        queue.clone(),
        events.clone(),
        clock,
        Duration::from_millis(config.standing_order_tick_ms),
        (outlet.clone(), archive.clone()),
    )?
    .start();
    Retention {
        every: Duration::from_millis(config.retention_interval_ms),
        messaging: messaging.clone(),
        analytics: analytics.clone(),
        events: events.clone(),
        event_retention_ms: Config::days_ms(config.event_retention_days),
        queue: queue.clone(),
        task_retention: config.task_retention(),
        standing: standing.clone(),
        run_retention: config.standing_run_retention(),
    }
    .start();
    let topics = Topics::load(
        store.clone(),
        (
            bus.clone(),
            events.clone(),
            queue.clone(),
            messaging.clone(),
        ),
        outlet.clone(),
        config.topic_retention_days,
        Duration::from_millis(config.retention_interval_ms),
    )?
    .start();
    let context = SharedContext::new(store.clone(), events.clone(), config.context_history).start();
    let context_rights = ContextRights::new(&config.context_writers);
    let storage = Maintenance::new(store.clone(), &config, Some(bus.clone()));
    let alerter = Alerter::new(
        AlerterDeps {
            store: store.clone(),
            tokens: tokens.clone(),
            metrics: metrics.clone(),
            queue: queue.clone(),
            presence: presence.clone(),
            storage: storage.clone(),
            standing: standing.clone(),
            bus: bus.clone(),
        },
        AlerterConfig {
            check_every: Duration::from_millis(config.alert_check_interval_ms),
            startup_grace: Duration::from_millis(config.alert_startup_grace_ms),
            webhook_url: config.alert_webhook_url.clone(),
            webhook_retries: config.alert_webhook_retries,
        },
    )?
    .start();
    let dashboard = Arc::new(DashboardDeps::new(
        queue.clone(),
        presence.clone(),
        metrics.clone(),
        alerter.clone(),
        storage.clone(),
        rate_limits.clone(),
        tokens.clone(),
        bus.clone(),
        started_at,
        serde_json::json!({
            "storage": config.storage,
            "role": role_of(store.leader_epoch()),
            "epoch": store.leader_epoch(),
            "hub_urls": config.hub_urls,
        }),
    ));
    Ok(HubState {
        leader_epoch: store.leader_epoch(),
        stopping,
        sessions: Sessions::new(store.clone(), tokens.clone()),
        dashboard,
        bus,
        events,
        standing,
        topics,
        context,
        context_rights,
        archive,
        limits: rate_limits,
        metrics,
        telemetry,
        alerter,
        storage,
        tokens,
        messaging,
        analytics,
        config,
        queue,
        presence,
    })
}
