//! Hub configuration: defaults, an optional TOML file, then environment overrides,
//! then command-line flags (each later source wins).
//!
//! Architecture invariant: this module only reads and checks settings. It starts
//! nothing and opens no storage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::protocol::{ApprovalRule, BlockedPolicy, MAX_BLOCKED_REQUEUE_MS};

/// Every setting of the hub. The TOML file uses the same flat keys; see README.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve HTTP and WebSockets on.
    pub bind: String,
    /// Directory of the embedded sled store.
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Also write the JSON log to this file (rotated); none = stderr only.
    pub log_file: Option<PathBuf>,
    /// `never`, `hourly` or `daily`.
    pub log_rotation: String,
    /// Rotated log files kept.
    pub log_keep: u64,
    /// Largest inbound WebSocket frame; larger frames close the socket with 1009.
    pub max_frame_bytes: usize,
    /// A connection with no inbound frame for this long is closed.
    pub idle_timeout_ms: u64,
    /// Time from `task_assign` to `task_accepted` before the task is reclaimed.
    pub acceptance_timeout_ms: u64,
    /// Lease of a task without its own `lease_ms`: reclaimed after this long
    /// without a lifecycle frame.
    pub default_lease_ms: u64,
    /// How often leases and `complete_by` deadlines are checked.
    pub sweep_interval_ms: u64,
    /// Group commit: under load (the last flush served several waiters), store
    /// flushes (fsync) start at most once per this many microseconds, each
    /// covering every change since the last; a lone request is flushed at once.
    /// 0 = no pacing. At most 100000.
    pub group_commit_window_us: u64,
    /// How often a metrics snapshot is taken (`GET /api/metrics`, `GET /metrics`).
    pub metrics_interval_ms: u64,
    /// A bearer token that may read `GET /metrics` (Prometheus) besides the admin's.
    pub metrics_token: Option<String>,
    /// How often alert rules are checked.
    pub alert_check_interval_ms: u64,
    /// No alert fires this long after start.
    pub alert_startup_grace_ms: u64,
    /// Optional: POST alert events here (JSON), retried with backoff.
    pub alert_webhook_url: Option<String>,
    /// Retries of a failed webhook delivery (0 to 10).
    pub alert_webhook_retries: u32,
    /// Rate limits of PROTOCOL.md section 5 (per agent, per transport, per tier).
    pub rate_limits_enabled: bool,
    /// Actions per minute (and bucket capacity) of each tier.
    pub rate_limit_light_per_min: u32,
    pub rate_limit_normal_per_min: u32,
    pub rate_limit_heavy_per_min: u32,
    /// Safety-net pass of the scheduler (it is event-driven; this only repairs).
    pub scheduler_sweep_ms: u64,
    /// After an agent rejects a task it is offered new work only after this long,
    /// so a busy agent is not handed the same task in a tight loop.
    pub reject_backoff_ms: u64,
    /// Failed attempts after which a task dead-letters (when the task sets none).
    pub default_max_retries: u32,
    /// Reclaims after which a task dead-letters (when the task sets none).
    pub default_max_reclaims: u32,
    /// Let anyone register an agent without an invite (off: invites or admin only).
    pub open_registration: bool,
    /// How agents reach this hub (e.g. `http://hub.tailnet:4000`); used in invites
    /// and registration answers. Default: the address the request came in on.
    pub public_url: Option<String>,
    /// Repository handed to newly registered agents.
    pub default_repo: Option<String>,
    /// How long an invite stays valid.
    pub invite_ttl_hours: u64,
    /// Messages kept per agent mailbox; past it the oldest are evicted (counted).
    pub mailbox_cap: u64,
    /// Mailbox messages older than this are dropped (counted as expired).
    pub mailbox_ttl_days: u64,
    /// Messages kept per channel history.
    pub channel_history: u64,
    /// Message history (queries, threads) is kept this long.
    pub message_retention_days: u64,
    /// Hourly analytics buckets are kept this long.
    pub analytics_retention_days: u64,
    /// Largest message payload (serialized JSON bytes).
    pub max_message_bytes: usize,
    /// How often retention runs.
    pub retention_interval_ms: u64,
    /// Where backup files go. Default: `agentcom-backups` next to the data
    /// directory (`<data_dir>/../agentcom-backups`). Must not be inside the data
    /// directory.
    pub backup_dir: Option<PathBuf>,
    /// Hours between periodic backups; 0 = none (the start-up backup, taken when
    /// the backup directory has none, and on-demand backups remain).
    pub backup_interval_hours: u64,
    /// Milliseconds between periodic backups; overrides `backup_interval_hours`
    /// when set (for tests and unusual set-ups).
    pub backup_interval_ms: Option<u64>,
    /// Backup files kept; older ones are deleted after each backup. At least 1.
    pub backup_keep: u64,
    /// What happens to a task an agent reports blocked, unless the task says:
    /// `requeue` (back to the queue after `blocked_requeue_ms`), `route` (back at
    /// once for agents with the capability the agent `needs`; without `needs`,
    /// like `requeue`) or `wait` (until an operator acts).
    pub blocked_policy: BlockedPolicy,
    /// Delay of the `requeue` policy (unless the task sets `blocked_requeue_ms`).
    pub blocked_requeue_ms: u64,
    /// A retryable failure goes back to the queue after
    /// `min(retry_backoff_max_ms, retry_backoff_base_ms × 2^(failures−1))`,
    /// with full jitter, or after the agent's `retry_after_s`. 0 = at once.
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// The event log keeps events this long.
    pub event_retention_days: u64,
    /// How often standing orders look at their schedules and runs.
    pub standing_order_tick_ms: u64,
    /// Testing only: the hub's calendar (standing orders' schedules, the UTC day
    /// of daily budgets) reads the time (ms since the epoch) from this file
    /// instead of the system clock, so a test can move time. Also read as
    /// `standing_order_clock_file`, its earlier name.
    #[serde(alias = "standing_order_clock_file")]
    pub calendar_clock_file: Option<PathBuf>,
    /// Hours between compactions of the live store; 0 = never.
    pub compact_interval_hours: u64,
    /// Milliseconds between compactions; overrides `compact_interval_hours`.
    pub compact_interval_ms: Option<u64>,
    /// Completions that wait for a person's approval (ext, PROTOCOL.md 6.27),
    /// until an operator sets rules with `PUT /api/admin/approval-rules`.
    pub approval_rules: Vec<ApprovalRule>,
    /// Days topic events are kept (ext, PROTOCOL.md 6.30).
    pub topic_retention_days: u64,
    /// `sled` (the embedded default) or `postgres` (ext, #22): Postgres as the
    /// source of truth, several hubs on one database with one active.
    pub storage: String,
    /// The Postgres connection string (also `AGENTCOM_POSTGRES_URL`), e.g.
    /// `host=db user=agentcom password=… dbname=agentcom`.
    pub postgres_url: Option<String>,
    /// With Postgres: the local cache of the store, rebuilt at every start
    /// (default: `<data_dir>.pgcache`).
    pub postgres_cache_dir: Option<PathBuf>,
    /// With Postgres: the leader lease; a standby takes over at most this
    /// long after the active hub stopped renewing it.
    pub failover_ms: u64,
    /// The public URLs of every hub on the same database, this one too
    /// (`http://hub-a:4000`; a trailing `/` is dropped at load): the
    /// dashboard moves to the active one when its hub stops (ext, #22).
    pub hub_urls: Vec<String>,
    /// Completed, cancelled and dead-lettered tasks last changed longer ago
    /// are archived to the backup directory (ext, PROTOCOL.md 6.34); 0 = never.
    pub task_retention_days: u64,
    /// Overrides `task_retention_days` when set (tests, unusual set-ups).
    pub task_retention_ms: Option<u64>,
    /// Finished standing-order runs older than this are archived; 0 = never.
    pub standing_run_retention_days: u64,
    /// Overrides `standing_run_retention_days` when set.
    pub standing_run_retention_ms: Option<u64>,
    /// Largest shared context value (bytes; ext, PROTOCOL.md 6.33).
    pub context_max_bytes: usize,
    /// Versions kept of each shared context key.
    pub context_history: u64,
    /// Who may write shared context keys by prefix (the longest matching
    /// prefix decides; no match: the admin and coordinators).
    pub context_writers: Vec<ContextWriters>,
}

/// `[[context_writers]]`: the roles that may write keys starting with
/// `prefix` (the admin always may).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextWriters {
    pub prefix: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:4000".into(),
            data_dir: PathBuf::from("./agentcom-data"),
            log_level: "info".into(),
            log_file: None,
            log_rotation: "daily".into(),
            log_keep: 7,
            max_frame_bytes: 1024 * 1024,
            idle_timeout_ms: 60_000,
            acceptance_timeout_ms: 60_000,
            default_lease_ms: 300_000,
            sweep_interval_ms: 1_000,
            group_commit_window_us: 1_000,
            metrics_interval_ms: 10_000,
            metrics_token: None,
            alert_check_interval_ms: 10_000,
            alert_startup_grace_ms: 30_000,
            alert_webhook_url: None,
            alert_webhook_retries: 3,
            rate_limits_enabled: true,
            rate_limit_light_per_min: 120,
            rate_limit_normal_per_min: 60,
            rate_limit_heavy_per_min: 10,
            scheduler_sweep_ms: 5_000,
            reject_backoff_ms: 1_000,
            default_max_retries: 3,
            default_max_reclaims: 5,
            open_registration: false,
            public_url: None,
            default_repo: None,
            invite_ttl_hours: 24,
            mailbox_cap: 1_000,
            mailbox_ttl_days: 7,
            channel_history: 200,
            message_retention_days: 7,
            analytics_retention_days: 7,
            max_message_bytes: 256 * 1024,
            retention_interval_ms: 60_000,
            backup_dir: None,
            backup_interval_hours: 6,
            backup_interval_ms: None,
            backup_keep: 7,
            compact_interval_hours: 24,
            compact_interval_ms: None,
            blocked_policy: BlockedPolicy::Route,
            blocked_requeue_ms: 60_000,
            retry_backoff_base_ms: 5_000,
            retry_backoff_max_ms: 600_000,
            event_retention_days: 30,
            standing_order_tick_ms: 1_000,
            calendar_clock_file: None,
            approval_rules: Vec::new(),
            topic_retention_days: 30,
            storage: "sled".into(),
            postgres_url: None,
            postgres_cache_dir: None,
            failover_ms: 5_000,
            hub_urls: Vec::new(),
            task_retention_days: 90,
            task_retention_ms: None,
            standing_run_retention_days: 90,
            standing_run_retention_ms: None,
            context_max_bytes: 64 * 1024,
            context_history: 50,
            context_writers: Vec::new(),
        }
    }
}

/// Values given on the command line or in the environment, which override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub postgres_url: Option<String>,
}

impl Config {
    /// The test's calendar clock (`calendar_clock_file`), if one is set.
    pub(crate) fn calendar_clock(&self) -> Option<crate::util::Clock> {
        self.calendar_clock_file
            .clone()
            .map(crate::util::file_clock)
    }

    /// Reads the file (if any), applies overrides and checks every value.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    reason: describe_toml_error(&text, &e),
                })?
            }
        };
        if let Some(bind) = &overrides.bind {
            config.bind = bind.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &overrides.postgres_url {
            config.postgres_url = Some(url.clone());
        }
        // Each hub's URL as the dashboard and the sidecars use it.
        for url in &mut config.hub_urls {
            url.truncate(url.trim_end_matches('/').len());
        }
        config.check()?;
        Ok(config)
    }

    /// The URL agents use to reach the hub's HTTP API, without a trailing slash.
    pub fn hub_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.bind),
        }
    }

    /// A number of days in milliseconds (saturating).
    pub fn days_ms(days: u64) -> i64 {
        (days as i64).saturating_mul(86_400_000)
    }

    /// The backup directory (see `backup_dir`).
    /// How long finished tasks stay in the live store; `None`: forever.
    pub fn task_retention(&self) -> Option<Duration> {
        match (self.task_retention_ms, self.task_retention_days) {
            (Some(ms), _) => Some(Duration::from_millis(ms)),
            (None, 0) => None,
            (None, days) => Some(Duration::from_secs(days.saturating_mul(86_400))),
        }
    }

    /// How long finished standing-order runs stay; `None`: forever.
    pub fn standing_run_retention(&self) -> Option<Duration> {
        match (
            self.standing_run_retention_ms,
            self.standing_run_retention_days,
        ) {
            (Some(ms), _) => Some(Duration::from_millis(ms)),
            (None, 0) => None,
            (None, days) => Some(Duration::from_secs(days.saturating_mul(86_400))),
        }
    }

    pub fn backup_dir(&self) -> PathBuf {
        if let Some(dir) = &self.backup_dir {
            return dir.clone();
        }
        match self.data_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join("agentcom-backups"),
            _ => PathBuf::from("agentcom-backups"),
        }
    }

    /// Time between periodic backups, `None` when off.
    pub fn backup_interval(&self) -> Option<Duration> {
        interval(self.backup_interval_ms, self.backup_interval_hours)
    }

    /// Time between compactions, `None` when off.
    pub fn compact_interval(&self) -> Option<Duration> {
        interval(self.compact_interval_ms, self.compact_interval_hours)
    }

    /// The bind address, parsed.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind.parse().map_err(|_| ConfigError::Invalid {
            field: "bind",
            reason: format!("{:?} is not an address like 127.0.0.1:4000", self.bind),
        })
    }

    /// The rules as `PUT /api/admin/approval-rules` would check them, globs
    /// included.
    fn check_storage(&self) -> Result<(), ConfigError> {
        match self.storage.as_str() {
            "sled" => {}
            "postgres"
                if self
                    .postgres_url
                    .as_deref()
                    .is_some_and(|u| !u.trim().is_empty()) => {}
            "postgres" => {
                return Err(ConfigError::Invalid {
                    field: "postgres_url",
                    reason: "storage = \"postgres\" needs postgres_url (or AGENTCOM_POSTGRES_URL)"
                        .into(),
                })
            }
            _ => {
                return Err(ConfigError::Invalid {
                    field: "storage",
                    reason: "must be sled or postgres".into(),
                })
            }
        }
        if self.hub_urls.len() > crate::protocol::MAX_HUB_URLS
            || self.hub_urls.iter().any(|u| {
                let rest = u
                    .strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"));
                // URL characters only: the dashboard's policy names them.
                !matches!(rest, Some(h) if !h.is_empty()
                    && h.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-_[]%".contains(c)))
            })
        {
            return Err(ConfigError::Invalid {
                field: "hub_urls",
                reason: format!(
                    "expected at most {} http:// or https:// URLs",
                    crate::protocol::MAX_HUB_URLS
                ),
            });
        }
        if !(1_000..=600_000).contains(&self.failover_ms) {
            return Err(ConfigError::Invalid {
                field: "failover_ms",
                reason: "must be between 1000 and 600000".into(),
            });
        }
        Ok(())
    }

    /// The Postgres backend's local cache directory.
    pub fn postgres_cache_dir(&self) -> PathBuf {
        self.postgres_cache_dir.clone().unwrap_or_else(|| {
            let mut name = self.data_dir.as_os_str().to_os_string();
            name.push(".pgcache");
            PathBuf::from(name)
        })
    }

    fn check_context(&self) -> Result<(), ConfigError> {
        if self.context_max_bytes == 0 || self.context_max_bytes > 1024 * 1024 {
            return Err(ConfigError::Invalid {
                field: "context_max_bytes",
                reason: "must be between 1 and 1048576 (1 MiB)".into(),
            });
        }
        if self.context_history == 0 || self.context_history > 1000 {
            return Err(ConfigError::Invalid {
                field: "context_history",
                reason: "must be between 1 and 1000".into(),
            });
        }
        for w in &self.context_writers {
            let bad_prefix = w.prefix.is_empty()
                || crate::protocol::check_context_key(&w.prefix, "prefix").is_err();
            let bad_role = w
                .roles
                .iter()
                .any(|r| !matches!(r.as_str(), "agent" | "coordinator"));
            if bad_prefix || bad_role {
                return Err(ConfigError::Invalid {
                    field: "context_writers",
                    reason: format!(
                        "prefix {:?}: a prefix is 1 to 128 letters, digits and . _ - :, roles are agent or coordinator",
                        w.prefix
                    ),
                });
            }
        }
        Ok(())
    }

    fn check_approval_rules(&self) -> Result<(), ConfigError> {
        let body = serde_json::json!({ "rules": self.approval_rules });
        let invalid = |reason: String| ConfigError::Invalid {
            field: "approval_rules",
            reason,
        };
        crate::protocol::parse_rules(&body).map_err(|errors| {
            invalid(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        for (i, rule) in self.approval_rules.iter().enumerate() {
            if !rule.paths.is_empty() {
                agentcom_scopes::Scope::parse(&rule.paths)
                    .map_err(|e| invalid(format!("rules[{i}].paths: {e}")))?;
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        if !["never", "hourly", "daily"].contains(&self.log_rotation.as_str()) {
            return Err(ConfigError::Invalid {
                field: "log_rotation",
                reason: "must be never, hourly or daily".into(),
            });
        }
        if self.log_keep == 0 || self.log_keep > 10_000 {
            return Err(ConfigError::Invalid {
                field: "log_keep",
                reason: "must be between 1 and 10000".into(),
            });
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(ConfigError::Invalid {
                field: "log_level",
                reason: "must be one of error, warn, info, debug, trace".into(),
            });
        }
        let positive: [(&'static str, u64); 19] = [
            ("topic_retention_days", self.topic_retention_days),
            ("standing_order_tick_ms", self.standing_order_tick_ms),
            ("event_retention_days", self.event_retention_days),
            ("retention_interval_ms", self.retention_interval_ms),
            ("invite_ttl_hours", self.invite_ttl_hours),
            ("mailbox_cap", self.mailbox_cap),
            ("mailbox_ttl_days", self.mailbox_ttl_days),
            ("channel_history", self.channel_history),
            ("message_retention_days", self.message_retention_days),
            ("analytics_retention_days", self.analytics_retention_days),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("acceptance_timeout_ms", self.acceptance_timeout_ms),
            ("default_lease_ms", self.default_lease_ms),
            ("sweep_interval_ms", self.sweep_interval_ms),
            ("scheduler_sweep_ms", self.scheduler_sweep_ms),
            ("metrics_interval_ms", self.metrics_interval_ms),
            ("alert_check_interval_ms", self.alert_check_interval_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        for (field, value) in [
            ("rate_limit_light_per_min", self.rate_limit_light_per_min),
            ("rate_limit_normal_per_min", self.rate_limit_normal_per_min),
            ("rate_limit_heavy_per_min", self.rate_limit_heavy_per_min),
        ] {
            if value == 0 || value > crate::agents::ratelimit::MAX_PER_MINUTE {
                return Err(ConfigError::Invalid {
                    field,
                    reason: format!(
                        "must be between 1 and {}",
                        crate::agents::ratelimit::MAX_PER_MINUTE
                    ),
                });
            }
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || t.len() > 256)
        {
            return Err(ConfigError::Invalid {
                field: "metrics_token",
                reason: "must be 16 to 256 characters".into(),
            });
        }
        if self.blocked_requeue_ms > MAX_BLOCKED_REQUEUE_MS {
            return Err(ConfigError::Invalid {
                field: "blocked_requeue_ms",
                reason: format!("must be at most {MAX_BLOCKED_REQUEUE_MS} (a week)"),
            });
        }
        for (field, value) in [
            ("retry_backoff_base_ms", self.retry_backoff_base_ms),
            ("retry_backoff_max_ms", self.retry_backoff_max_ms),
        ] {
            if value > MAX_BLOCKED_REQUEUE_MS {
                return Err(ConfigError::Invalid {
                    field,
                    reason: format!("must be at most {MAX_BLOCKED_REQUEUE_MS} (a week)"),
                });
            }
        }
        if self.alert_webhook_retries > 10 {
            return Err(ConfigError::Invalid {
                field: "alert_webhook_retries",
                reason: "must be at most 10".into(),
            });
        }
        if let Some(url) = &self.alert_webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    field: "alert_webhook_url",
                    reason: "must start with http:// or https://".into(),
                });
            }
        }
        self.check_approval_rules()?;
        self.check_context()?;
        self.check_storage()?;
        for (field, days) in [
            ("task_retention_days", self.task_retention_days),
            (
                "standing_run_retention_days",
                self.standing_run_retention_days,
            ),
        ] {
            if days > 36_500 {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be at most 36500 (a hundred years); 0 keeps everything".into(),
                });
            }
        }
        for (field, ms) in [
            ("task_retention_ms", self.task_retention_ms),
            ("standing_run_retention_ms", self.standing_run_retention_ms),
        ] {
            if ms == Some(0) {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        if self.group_commit_window_us > 100_000 {
            return Err(ConfigError::Invalid {
                field: "group_commit_window_us",
                reason: "must be at most 100000 (0.1 s)".into(),
            });
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    field: "public_url",
                    reason: "must start with http:// or https://".into(),
                });
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                field: "data_dir",
                reason: "must not be empty".into(),
            });
        }
        if self.backup_keep == 0 {
            return Err(ConfigError::Invalid {
                field: "backup_keep",
                reason: "must be at least 1".into(),
            });
        }
        // A backup inside the data directory would be moved aside with it, and a
        // directory equal to it would mix backup files into sled's files.
        let backups = self.backup_dir();
        if backups.as_os_str().is_empty() || backups.starts_with(&self.data_dir) {
            return Err(ConfigError::Invalid {
                field: "backup_dir",
                reason: format!(
                    "{} must not be empty or inside data_dir {}",
                    backups.display(),
                    self.data_dir.display()
                ),
            });
        }
        Ok(())
    }
}

fn interval(ms: Option<u64>, hours: u64) -> Option<Duration> {
    let ms = ms.unwrap_or(hours.saturating_mul(3_600_000));
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// The parser's message plus the line it points at, so a wrong value is reported
/// with its key (`line 3: sweep_interval_ms = "soon": invalid type ...`).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text.get(..start).unwrap_or(text).matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    format!("line {line_no}: `{line}`: {}", e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn file_then_overrides() {
        let f = write("bind = \"127.0.0.1:5000\"\nacceptance_timeout_ms = 10\n");
        let o = Overrides {
            bind: Some("127.0.0.1:6000".into()),
            data_dir: None,
            postgres_url: None,
        };
        let c = Config::load(Some(f.path()), &o).expect("valid");
        assert_eq!(c.bind, "127.0.0.1:6000");
        assert_eq!(c.acceptance_timeout_ms, 10);
    }

    #[test]
    fn the_calendar_clock_is_also_read_under_its_earlier_name() {
        for key in ["calendar_clock_file", "standing_order_clock_file"] {
            let f = write(&format!("{key} = \"/tmp/clock\"\n"));
            let c = Config::load(Some(f.path()), &Overrides::default()).expect("valid");
            assert_eq!(
                c.calendar_clock_file,
                Some(PathBuf::from("/tmp/clock")),
                "{key}"
            );
        }
    }

    #[test]
    fn the_shipped_example_configs_are_valid() {
        for file in ["hub.toml.example", "hub-postgres.toml.example"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("ops/systemd")
                .join(file);
            let c = Config::load(Some(&path), &Overrides::default())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(c.bind.starts_with("100.64."), "{file}");
        }
    }

    #[test]
    fn postgres_needs_its_url() {
        let f = write("storage = \"postgres\"\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("postgres_url"), "{e}");
        let o = Overrides {
            postgres_url: Some("host=db dbname=agentcom".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(f.path()), &o).expect("the environment's URL");
        assert_eq!(c.postgres_url.as_deref(), Some("host=db dbname=agentcom"));
        let f = write("storage = \"mysql\"\n");
        assert!(Config::load(Some(f.path()), &Overrides::default()).is_err());
        let f = write("data_dir = \"/srv/d\"\n");
        let c = Config::load(Some(f.path()), &Overrides::default()).expect("valid");
        assert_eq!(
            c.postgres_cache_dir(),
            std::path::PathBuf::from("/srv/d.pgcache")
        );
    }

    #[test]
    fn hub_urls_hold_only_http_urls() {
        let f = write("hub_urls = [\"http://hub-a:4000\", \"https://hub-b\"]\n");
        let c = Config::load(Some(f.path()), &Overrides::default()).expect("valid");
        assert_eq!(c.hub_urls.len(), 2);
        for bad in [
            "[\"ws://hub-a:4000\"]",
            "[\"http://\"]",
            // It goes into the dashboard's content security policy.
            "[\"http://a; script-src *\"]",
            "[\"http://a 'unsafe-inline'\"]",
        ] {
            let f = write(&format!("hub_urls = {bad}\n"));
            let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("hub_urls"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_names_the_key() {
        let f = write("acceptance_timeout = 10\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("acceptance_timeout"), "{e}");
    }

    #[test]
    fn backup_dir_defaults_next_to_the_data_dir_and_never_inside_it() {
        let c = Config {
            data_dir: "/srv/hub/data".into(),
            ..Config::default()
        };
        assert_eq!(c.backup_dir(), PathBuf::from("/srv/hub/agentcom-backups"));
        assert_eq!(c.backup_interval(), Some(Duration::from_secs(6 * 3600)));
        let f = write("data_dir = \"/srv/hub/data\"\nbackup_dir = \"/srv/hub/data/b\"\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("backup_dir"), "{e}");
        let f = write("compact_interval_hours = 0\nbackup_interval_ms = 250\n");
        let c = Config::load(Some(f.path()), &Overrides::default()).expect("valid");
        assert_eq!(c.compact_interval(), None);
        assert_eq!(c.backup_interval(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn bad_value_names_the_field() {
        let f = write("sweep_interval_ms = 0\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("sweep_interval_ms"), "{e}");
        let f = write("bind = \"nowhere\"\n");
        let e = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("bind"), "{e}");
    }
}
