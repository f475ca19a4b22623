//! AgentCom hub: a durable priority queue, per-agent state machines and a scheduler
//! that push work to AI agents over WebSockets. See ARCHITECTURE.md for the map.
//!
//! [`protocol`] is the `agentcom-protocol` crate (the wire contract shared with
//! the sidecar), re-exported so the hub's paths name it in one place.

pub use agentcom_protocol as protocol;

pub mod alerts;
pub mod analytics;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod completions;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod eventlog;
pub mod events;
pub mod fsm;
pub mod http;
pub mod logging;
pub mod messaging;
pub mod metrics;
pub mod presence;
pub mod queue;
pub mod ratelimit;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod standing;
pub mod store;
pub mod task;
pub mod util;
