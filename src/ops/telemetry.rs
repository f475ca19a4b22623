//! `Telemetry`: counters and latency samples bumped where things happen (the
//! queue from the history entries each transition records, `Presence` on
//! connects and disconnects, the HTTP middleware and sessions on errors), read
//! by the `Metrics` actor for its snapshots.
//!
//! Architecture invariant: a leaf. Lock-free counters and small reservoirs,
//! cheap to bump from any thread; it knows no actor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::Rng;

use crate::domain::task::HistoryEntry;

/// Latency samples kept per interval (a uniform reservoir beyond that).
const SAMPLES_KEPT: usize = 10_000;

/// The events counted since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Counter {
    Submitted,
    Assigned,
    Completed,
    Failed,
    DeadLettered,
    Reclaimed,
    Connected,
    Disconnected,
    /// Error answers: HTTP 4xx/5xx (but 429) and WS `error` frames.
    Errors,
}

impl Counter {
    const ALL: [Counter; 9] = [
        Counter::Submitted,
        Counter::Assigned,
        Counter::Completed,
        Counter::Failed,
        Counter::DeadLettered,
        Counter::Reclaimed,
        Counter::Connected,
        Counter::Disconnected,
        Counter::Errors,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Counter::Submitted => "submitted",
            Counter::Assigned => "assigned",
            Counter::Completed => "completed",
            Counter::Failed => "failed",
            Counter::DeadLettered => "dead_lettered",
            Counter::Reclaimed => "reclaimed",
            Counter::Connected => "connected",
            Counter::Disconnected => "disconnected",
            Counter::Errors => "errors",
        }
    }
}

#[derive(Default)]
struct Reservoir {
    samples: Vec<u64>,
    seen: u64,
}

impl Reservoir {
    fn add(&mut self, value: u64) {
        self.seen += 1;
        if self.samples.len() < SAMPLES_KEPT {
            self.samples.push(value);
        } else {
            let slot = rand::thread_rng().gen_range(0..self.seen);
            if let Ok(i) = usize::try_from(slot) {
                if let Some(s) = self.samples.get_mut(i) {
                    *s = value;
                }
            }
        }
    }
}

/// Counters and latency samples; shared, cheap to bump from any thread.
#[derive(Default)]
pub(crate) struct Telemetry {
    counters: [AtomicU64; 9],
    submit_to_assign: Mutex<Reservoir>,
    assign_to_complete: Mutex<Reservoir>,
}

impl Telemetry {
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if let Some(c) = self.counters.get(counter as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn count(&self, counter: Counter) -> u64 {
        self.counters
            .get(counter as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn counters(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .map(|c| (c.as_str(), self.count(*c)))
            .collect()
    }

    /// Counts the history entries a task transition just recorded. `created_at`
    /// and the entries' times give the latencies.
    pub(crate) fn task_events(
        &self,
        new: &[HistoryEntry],
        created_at: i64,
        assigned_at: Option<i64>,
    ) {
        let reclaimed = new.iter().any(|e| e.event == "reclaimed");
        for e in new {
            match e.event.as_str() {
                "assigned" => {
                    self.add(Counter::Assigned, 1);
                    sample(&self.submit_to_assign, e.ts - created_at);
                }
                "completed" => {
                    self.add(Counter::Completed, 1);
                    if let Some(at) = assigned_at {
                        sample(&self.assign_to_complete, e.ts - at);
                    }
                }
                "retry" => self.add(Counter::Failed, 1),
                "reclaimed" => self.add(Counter::Reclaimed, 1),
                "dead_letter" => {
                    self.add(Counter::DeadLettered, 1);
                    // A dead letter after a failed attempt is also that failure.
                    if !reclaimed {
                        self.add(Counter::Failed, 1);
                    }
                }
                _ => {}
            }
        }
    }

    /// The latency samples since the last call: (submit → assign, assign →
    /// complete).
    pub(crate) fn take_samples(&self) -> (Vec<u64>, Vec<u64>) {
        let take = |r: &Mutex<Reservoir>| {
            let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *r).samples
        };
        (take(&self.submit_to_assign), take(&self.assign_to_complete))
    }
}

fn sample(reservoir: &Mutex<Reservoir>, ms: i64) {
    let ms = u64::try_from(ms).unwrap_or(0);
    reservoir.lock().unwrap_or_else(|p| p.into_inner()).add(ms);
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn task_events_count_failures_once() {
        let t = Telemetry::default();
        let e = |event: &str, ts: i64| HistoryEntry {
            event: event.into(),
            ts,
            details: Value::Null,
        };
        t.task_events(&[e("assigned", 150)], 100, None);
        t.task_events(&[e("completed", 400)], 100, Some(150));
        t.task_events(&[e("retry", 500)], 100, Some(450));
        t.task_events(&[e("dead_letter", 600)], 100, Some(550));
        t.task_events(
            &[e("reclaimed", 700), e("dead_letter", 700)],
            100,
            Some(650),
        );
        let c = t.counters();
        assert_eq!(c["assigned"], 1);
        assert_eq!(c["completed"], 1);
        assert_eq!(c["failed"], 2, "a retry and a dead letter after a failure");
        assert_eq!(c["reclaimed"], 1);
        assert_eq!(c["dead_lettered"], 2);
        let (s2a, a2c) = t.take_samples();
        assert_eq!((s2a, a2c), (vec![50], vec![250]));
    }
}
