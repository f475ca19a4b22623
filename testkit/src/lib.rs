//! The integration-test kit of the hub and the sidecar (a dev-dependency of both,
//! never published).
//!
//! Everything here drives real parts: the real `agentcom-hub` and
//! `agentcom-sidecar` binaries as child processes (`Hub::launch` takes any
//! binary's path; `Hub::start` finds the workspace's), real TCP sockets on 127.0.0.1
//! (HTTP via `ureq`, WebSocket via `tungstenite`) and a real sled data directory
//! inside a `TempDir`. Nothing is mocked.
//!
//! Every wait is bounded by a deadline; the only wall-clock assumptions are the
//! generous upper bounds named by the constants in [`support`].

pub mod agent;
pub mod browser;
pub mod chaos;
pub mod clock;
pub mod fixtures;
pub mod http;
pub mod hub;
pub mod messaging;
pub mod sidecar;
pub mod support;
pub mod worker;

pub use agent::*;
pub use browser::*;
pub use chaos::*;
pub use clock::*;
pub use fixtures::*;
pub use http::*;
pub use hub::*;
pub use messaging::*;
pub use sidecar::*;
pub use support::*;
pub use worker::*;
