//! AgentCom hub: a durable priority queue, per-agent state machines and a scheduler
//! that push work to AI agents over WebSockets. See ARCHITECTURE.md for the map.
//!
//! The folders follow the layers: `domain` (pure task rules and indexes), `queue`
//! (the task owner), `agents` (sockets, per-agent state, scheduling, tokens),
//! `messaging`, `ops` (metrics, alerts, standing orders, logging), `storage`
//! (sled, the event log, the in-memory bus, backups) and `web` (HTTP, dashboard);
//! `hub` wires them. All of it is private to the crate: this file is the surface
//! the `agentcom-hub` binary and the integration tests use.
#![warn(unreachable_pub)]

mod agents;
mod context;
mod domain;
mod hub;
mod messaging;
mod ops;
mod queue;
mod storage;
mod topics;
mod util;
mod web;

pub mod config;
pub mod error;

/// The wire contract (the `agentcom-protocol` crate), re-exported so the hub's
/// paths name it in one place.
pub use agentcom_protocol as protocol;

/// Agent tokens and one-time invites of a stopped hub's data dir (`agent add`,
/// `invite`, `list`, `revoke`).
pub use agents::auth::{join_command, IssueError, Role, TokenTerms, Tokens};
/// The fixed id of a completion's follow-up (tests find follow-ups by it).
pub use queue::follow_up_id;
/// What a standing order that leaves them out gets (the orders file compares
/// with them).
pub mod standing_defaults {
    pub use crate::ops::standing::api::{DEFAULT_TIMEZONE, DEFAULT_WINDOW_MS};
}
/// The sled store and its page-cache default.
pub use storage::store::{PostgresSettings, Store, DEFAULT_CACHE_BYTES};
/// Runs the hub until it is told to stop.
pub use web::server::serve;
pub use web::standby::Standby;

/// Backups, restore, verification and compaction of a data dir, and start-up
/// recovery (`serve`, `backup`, `verify-backup`, `restore`, `compact`).
/// Archives of finished work (`agentcom-hub verify-archive`).
pub mod archive {
    pub use crate::storage::archive::verify_archive;
}

/// `agentcom-hub migrate`: a whole store from sled to Postgres or back.
pub mod migrate {
    pub use crate::storage::migrate::{migrate, Endpoint, MigrateReport};
}

pub mod backup {
    pub use crate::storage::backup::{
        compact, open_or_recover, prune_backups, restore_file, stamp_ms, take_backup,
        verify_backup, BackupSummary, Progress, RecoveryEvent,
    };
}

/// The process's tracing subscriber (JSON to stderr, an optional rotating file).
pub mod logging {
    pub use crate::ops::logging::{init, LogFile};
}
