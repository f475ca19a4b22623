//! Small helpers with no home of their own: clock and identifiers.

use rand::Rng;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new task id: `task-` and 16 lowercase hex digits.
pub(crate) fn new_task_id() -> String {
    format!("task-{:016x}", rand::thread_rng().gen::<u64>())
}
