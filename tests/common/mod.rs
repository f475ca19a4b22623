//! The hub's integration tests use `agentcom-testkit`: the hub process harness,
//! HTTP and WebSocket clients, workers and the chaos parts, shared with the
//! sidecar's tests.

pub use agentcom_testkit::*;
