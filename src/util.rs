//! Small helpers with no home of their own: clock and identifiers.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
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

/// Where the hub's calendar reads the time: standing orders' schedules and the
/// UTC day of daily budgets.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(now_ms)
}

/// A clock read from a file holding ms since the epoch (tests drive time with it;
/// write it atomically). An unreadable file keeps the last good reading (the
/// system time until there is one), so a half-written file never jumps the clock.
pub(crate) fn file_clock(path: PathBuf) -> Clock {
    let last = Mutex::new(None::<i64>);
    Arc::new(move || {
        let read = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok());
        let mut last = last.lock();
        if let Some(t) = read {
            *last = Some(t);
        }
        last.unwrap_or_else(now_ms)
    })
}
