//! The queue's messages, by caller: `agent` (scheduler and FSMs), `operator`
//! (submitters, standing orders, operators), `reserve` (direct reservations of
//! repository paths), `keys` (concurrency limits) and `read` (everyone who
//! only reads).
//! Each file opens with a table of its messages.

pub(super) mod agent;
pub(super) mod approvals;
pub(super) mod budgets;
pub(super) mod keys;
pub(super) mod operator;
pub(super) mod questions;
pub(super) mod read;
pub(super) mod reserve;
