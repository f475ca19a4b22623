//! Group commit: one thread flushes for every waiter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::postgres::{is_fenced, Replica};
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
///
/// With a replica (the Postgres backend) a flush is a commit of everything
/// that reached sled since the last one, in one transaction that also renews
/// the leader lease; sled itself is only a cache then and is not synced. An
/// idle replica renews its lease every third of it. A replica fenced out (its
/// lease gone) ends the process: it must not write again.
pub(super) fn run_flusher(
    slot: Slot,
    staging: Arc<Staging>,
    requests: mpsc::Receiver<Waiter>,
    window_us: Arc<AtomicU64>,
    (mut replica, release): (Option<Replica>, Arc<AtomicBool>),
) {
    let mut last_flush = Instant::now();
    let mut last_waiters = 0usize;
    loop {
        let idle_wait = match &replica {
            Some(_) => IDLE_APPLY.min(Duration::from_millis(100)),
            None => IDLE_APPLY,
        };
        let first = match requests.recv_timeout(idle_wait) {
            Ok(first) => Some(first),
            Err(mpsc::RecvTimeoutError::Timeout) if staging.is_idle() => {
                if let Some(r) = replica.as_mut().filter(|r| r.renew_due()) {
                    if let Err(e) = r.renew() {
                        stop_if_fenced(&e);
                        tracing::error!(error = %e, "leader lease not renewed");
                    }
                }
                // Writes nobody waits for still reach the disk within `IDLE_APPLY`.
                continue;
            }
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
            match (hold.guard.as_ref(), replica.as_mut()) {
                (Some(open), None) => staging
                    .apply(open)
                    .and_then(|()| open.db.flush().map(|_| ()))
                    .map_err(StoreError::from),
                (Some(open), Some(r)) => staging
                    .apply(open)
                    .map_err(StoreError::from)
                    .and_then(|()| commit_replicated(&staging, r)),
                // Closed (a stop's seal) with every write applied: nothing is
                // left for sled; what reached it is still committed to the
                // replica (the stop's last round, which releases the lease).
                (None, None) if staging.is_idle() => Ok(()),
                (None, Some(r)) if staging.is_idle() => commit_replicated(&staging, r),
                (None, _) => Err(StoreError::Closed),
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = waiters.len(), "store flush failed");
        }
        if release.load(Ordering::SeqCst) {
            if let Some(mut r) = replica.take() {
                match r.release() {
                    Ok(()) => tracing::info!("leader lease released"),
                    Err(e) => tracing::warn!(error = %e, "leader lease not released (it expires)"),
                }
            }
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Commits everything applied to sled since the last commit; on failure it
/// stays queued for the next one.
fn commit_replicated(staging: &Staging, replica: &mut Replica) -> Result<(), StoreError> {
    let batches = staging.take_replicated();
    let committed = replica.commit(&batches);
    if let Err(e) = &committed {
        stop_if_fenced(e);
        staging.requeue_replicated(batches);
    }
    committed
}

/// A fenced hub stops at once: another holds the lease and writes now.
fn stop_if_fenced(e: &StoreError) {
    if is_fenced(e) {
        tracing::error!(error = %e, "this hub lost the leader lease: stopping, nothing more is written");
        std::process::exit(3);
    }
}
