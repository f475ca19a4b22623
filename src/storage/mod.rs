//! Storage: the sled store and its group commit, the task queue's records, the
//! durable event log, the in-memory event bus, and backups, restore and
//! compaction.

pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod bus;
pub(crate) mod eventlog;
pub(crate) mod migrate;
pub(crate) mod store;
pub(crate) mod tasks;
