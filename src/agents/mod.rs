//! The agent side: one `AgentSession` per socket, one `AgentFsm` per agent, the
//! `Presence` registry (and the usage-limit pauses it keeps, `usage`), the
//! `Scheduler`, rate limits and tokens.

pub(crate) mod auth;
pub(crate) mod fsm;
pub(crate) mod presence;
pub(crate) mod ratelimit;
pub(crate) mod scheduler;
pub(crate) mod session;
pub(crate) mod usage;
