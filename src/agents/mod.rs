//! The agent side: one `AgentSession` per socket, one `AgentFsm` per agent, the
//! `Presence` registry, the `Scheduler`, rate limits and tokens.

pub mod auth;
pub mod fsm;
pub mod presence;
pub mod ratelimit;
pub mod scheduler;
pub mod session;
