//! The command line's clients of a running hub (binary-only): they know the hub
//! only as any remote client does, through its HTTP and WebSocket API.
//!
//! - `hub_client`: a blocking HTTP client holding one bearer token;
//! - `ops`: the operator's commands against a running hub;
//! - `policies`: approval rules, daily budgets, topic events and subscriptions;
//! - `context`: the shared context (list, get, history, put, delete);
//! - `orders_file`: `standing-orders apply`, standing orders kept in a file;
//! - `mcp`: `agentcom-hub mcp`, a Model Context Protocol server on stdio;
//! - `bench`: `agentcom-hub bench`, the load generator.
//!
//! Architecture invariant: nothing here touches the store or an actor.

pub(crate) mod bench;
pub(crate) mod context;
pub(crate) mod hub_client;
pub(crate) mod mcp;
pub(crate) mod ops;
pub(crate) mod orders_file;
pub(crate) mod policies;
