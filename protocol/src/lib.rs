//! Wire types of the AgentCom protocol (`docs/PROTOCOL.md`), shared by the hub and
//! the sidecar.
//!
//! Architecture invariant: this crate depends on serde and serde_json only. It knows
//! nothing of actors, storage or HTTP; the sidecar and the fuzz targets use it
//! directly, and the hub re-exports it as `agentcom_hub::protocol`.
//!
//! Inbound objects are validated field by field against a schema table before they are
//! turned into typed values, so every failure can be reported with the exact
//! `{field, error, detail}` shape the protocol asks for, and types are strict (no
//! coercion of `"3"` to `3`). `null` counts as absent.
#![warn(unreachable_pub)]

mod approvals;
mod budgets;
mod context;
mod failover;
mod flow;
mod frames;
mod priority;
mod questions;
mod schema;
mod scopes;
mod server_frames;
mod slots;
mod task_spec;
mod topics;

pub use approvals::*;
pub use budgets::*;
pub use context::*;
pub use failover::*;
pub use flow::*;
pub use frames::*;
pub use priority::*;
pub use questions::*;
pub use schema::*;
pub use scopes::*;
pub use server_frames::*;
pub use slots::*;
pub use task_spec::*;
pub use topics::*;

/// Protocol version this crate speaks (compatible with the AgentCom v1.1 sidecar).
pub const PROTOCOL_VERSION: &str = "1.1";
