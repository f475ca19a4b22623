//! Pure task rules and indexes: no actor, no I/O, no clock (time comes in as
//! `now`). Everything here is unit-tested on its own.
//!
//! - `task`: the task record and every transition;
//! - `dependencies`: the dependency graph of unfinished tasks and the cycle check;
//! - `matching`: the scheduler's index of ready tasks and idle agents;
//! - `completions`: recent completions and last-hour throughput;
//! - `reservations`, `scopes`: claims on repository paths, glob scopes;
//! - `usage`: usage-limit pauses of credential groups.

pub(crate) mod completions;
pub(crate) mod dependencies;
pub(crate) mod matching;
pub(crate) mod outcomes;
pub(crate) mod reservations;
pub(crate) mod scopes;
pub(crate) mod task;
pub(crate) mod usage;
