//! AgentCom hub: a durable priority queue, per-agent state machines and a scheduler
//! that push work to AI agents over WebSockets. See ARCHITECTURE.md for the map.
//!
//! The folders follow the layers: `domain` (pure task rules and indexes), `queue`
//! (the task owner), `agents` (sockets, per-agent state, scheduling, tokens),
//! `messaging`, `ops` (metrics, alerts, standing orders, logging), `storage`
//! (sled, the event log, the in-memory bus, backups) and `web` (HTTP, dashboard).
//! [`protocol`] is the `agentcom-protocol` crate (the wire contract shared with
//! the sidecar), re-exported so the hub's paths name it in one place.

pub use agentcom_protocol as protocol;

pub mod agents;
pub mod config;
pub mod domain;
pub mod error;
pub mod hub;
pub mod messaging;
pub mod ops;
pub mod queue;
pub mod storage;
pub mod util;
pub mod web;
