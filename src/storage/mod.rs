//! Storage: the sled store and its group commit, the durable event log, the
//! in-memory event bus, and backups, restore and compaction.

pub mod backup;
pub mod bus;
pub mod eventlog;
pub mod store;
