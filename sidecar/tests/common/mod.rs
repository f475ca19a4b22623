//! The sidecar's integration tests use `agentcom-testkit`: the hub and sidecar
//! process harnesses, HTTP and WebSocket clients, and the chaos parts shared with
//! the hub's own tests.

pub use agentcom_testkit::*;
