//! AgentCom hub: a durable priority queue, per-agent state machines and a scheduler
//! that push work to AI agents over WebSockets. See ARCHITECTURE.md for the map.
//!
//! Only [`protocol`] is built without the `server` feature; it is the wire contract
//! shared with the sidecar.

pub mod protocol;

#[cfg(feature = "server")]
pub mod alerts;
#[cfg(feature = "server")]
pub mod analytics;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod backup;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod completions;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod dashboard;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod eventlog;
#[cfg(feature = "server")]
pub mod events;
#[cfg(feature = "server")]
pub mod fsm;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod messaging;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod presence;
#[cfg(feature = "server")]
pub mod queue;
#[cfg(feature = "server")]
pub mod ratelimit;
#[cfg(feature = "server")]
pub mod retention;
#[cfg(feature = "server")]
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod standing;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod task;
#[cfg(feature = "server")]
pub mod util;
