//! Group commit: one thread flushes for every waiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::staging::Staging;
use super::tree::{share, Slot};
use super::Waiter;
use crate::error::StoreError;

/// A write nobody waits for is applied and flushed within this long.
const IDLE_APPLY: Duration = Duration::from_millis(200);
/// A flush that served at least this many waiters means load: the next one
/// waits out the commit window.
const BUSY_WAITERS: usize = 4;

/// The group-commit loop: wait for one request, take every request queued behind it,
/// flush once, answer them all. Under load (the last flush served several
/// waiters) flushes start at most once per commit window, so one flush (one round
/// of fsyncs, which cost real CPU on this kind of machine) covers a window's
/// worth; otherwise a request is flushed at once, so a change that needs two
/// flushes in a row (a submit, then its assignment) does not wait a window for
/// the second.
pub(super) fn run_flusher(
    slot: Slot,
    staging: Arc<Staging>,
    requests: mpsc::Receiver<Waiter>,
    window_us: Arc<AtomicU64>,
) {
    let mut last_flush = Instant::now();
    let mut last_waiters = 0usize;
    loop {
        let first = match requests.recv_timeout(IDLE_APPLY) {
            Ok(first) => Some(first),
            // Writes nobody waits for still reach the disk within `IDLE_APPLY`.
            Err(mpsc::RecvTimeoutError::Timeout) if staging.is_idle() => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let window = Duration::from_micros(window_us.load(Ordering::Relaxed));
        if last_waiters >= BUSY_WAITERS {
            if let Some(left) = window.checked_sub(last_flush.elapsed()) {
                std::thread::sleep(left);
            }
        }
        let mut waiters: Vec<Waiter> = first.into_iter().collect();
        waiters.extend(requests.try_iter());
        last_waiters = waiters.len();
        last_flush = Instant::now();
        let result = {
            let hold = share(&slot);
            match hold.guard.as_ref() {
                Some(open) => staging
                    .apply(open)
                    .and_then(|()| open.db.flush().map(|_| ()))
                    .map_err(StoreError::from),
                None => Err(StoreError::Closed),
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = waiters.len(), "store flush failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
