//! Recent completions and last-hour throughput, kept by the queue as tasks
//! complete (the dashboard's `recent_completions` and `throughput`).
//!
//! Memory is fixed whatever the load: the newest [`RECENT_KEPT`] rows, and one
//! bucket of sums per minute of the last hour.
//!
//! Architecture invariant: a projection of completed tasks; pure data, no clock
//! (callers pass `now`), no I/O.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::task::Task;

/// Completions kept for the dashboard.
pub(crate) const RECENT_KEPT: usize = 100;
const MINUTE_MS: i64 = 60_000;
const MINUTES: usize = 60;

/// One completed task, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Completion {
    pub task_id: String,
    pub agent_id: Option<String>,
    pub description: String,
    pub completed_at: i64,
    /// From assignment to completion (from submission if never assigned).
    pub duration_ms: i64,
    pub tokens_used: Option<u64>,
    pub pr_url: Option<String>,
}

/// Longest description kept in a row (and in a dashboard event).
const DESCRIPTION_KEPT: usize = 200;

/// The start of a description, as rows and events show it.
pub(crate) fn short_description(description: &str) -> String {
    description.chars().take(DESCRIPTION_KEPT).collect()
}

impl Completion {
    /// The row for a completed task; `None` if it has not completed.
    pub(crate) fn of(task: &Task) -> Option<Completion> {
        let completed_at = task.completed_at?;
        let started = task.assigned_at.unwrap_or(task.created_at);
        let pr_url = task
            .result
            .as_ref()
            .and_then(|r| r.get("pr_url"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Some(Completion {
            task_id: task.id.clone(),
            agent_id: task.assigned_to.clone(),
            description: short_description(&task.description),
            completed_at,
            duration_ms: (completed_at - started).max(0),
            tokens_used: task.tokens_used,
            pr_url,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    count: u64,
    duration_ms: i64,
    tokens: u64,
}

/// What [`Completions`] keeps, as data (a restart's checkpoint holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedCompletions {
    recent: Vec<Completion>,
    minutes: Vec<Minute>,
}

/// Completions over the last hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Throughput {
    pub completed_last_hour: u64,
    pub avg_completion_ms: u64,
    pub total_tokens_hour: u64,
}

#[derive(Debug)]
pub(crate) struct Completions {
    recent: VecDeque<Completion>,
    minutes: [Minute; MINUTES],
}

impl Default for Completions {
    fn default() -> Self {
        Completions {
            recent: VecDeque::new(),
            minutes: [Minute::default(); MINUTES],
        }
    }
}

impl Completions {
    pub(crate) fn record(&mut self, c: Completion) {
        let minute = c.completed_at.div_euclid(MINUTE_MS);
        let slot = &mut self.minutes[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.at > minute {
            // An hour or more older than what the slot holds: outside the window.
        } else if slot.at < minute {
            *slot = Minute {
                at: minute,
                ..Minute::default()
            };
        }
        if slot.at == minute {
            slot.count += 1;
            slot.duration_ms += c.duration_ms;
            slot.tokens += c.tokens_used.unwrap_or(0);
        }
        if self.recent.len() >= RECENT_KEPT
            && self
                .recent
                .back()
                .is_some_and(|oldest| oldest.completed_at > c.completed_at)
        {
            return;
        }
        // Rows arrive in completion order, except while rebuilding from storage.
        let at = self
            .recent
            .iter()
            .position(|r| r.completed_at <= c.completed_at)
            .unwrap_or(self.recent.len());
        self.recent.insert(at, c);
        self.recent.truncate(RECENT_KEPT);
    }

    /// Everything kept, to be put back by [`Completions::restore`].
    pub(crate) fn saved(&self) -> SavedCompletions {
        SavedCompletions {
            recent: self.recent.iter().cloned().collect(),
            minutes: self.minutes.to_vec(),
        }
    }

    /// What [`Completions::saved`] answered (minutes past the window ignored).
    pub(crate) fn restore(saved: SavedCompletions) -> Completions {
        let mut c = Completions {
            recent: saved.recent.into_iter().take(RECENT_KEPT).collect(),
            ..Completions::default()
        };
        for (slot, m) in c.minutes.iter_mut().zip(saved.minutes) {
            *slot = m;
        }
        c
    }

    /// Newest first.
    pub(crate) fn recent(&self) -> Vec<Completion> {
        self.recent.iter().cloned().collect()
    }

    /// Completions in the 60 minutes up to `now` (whole minutes: the current one
    /// and the 59 before it).
    pub(crate) fn last_hour(&self, now: i64) -> Throughput {
        let this_minute = now.div_euclid(MINUTE_MS);
        let (count, duration, tokens) = self
            .minutes
            .iter()
            .filter(|m| m.count > 0 && m.at <= this_minute && this_minute - m.at < MINUTES as i64)
            .fold((0u64, 0i64, 0u64), |(c, d, t), m| {
                (c + m.count, d + m.duration_ms, t + m.tokens)
            });
        Throughput {
            completed_last_hour: count,
            avg_completion_ms: if count == 0 {
                0
            } else {
                u64::try_from(duration / count as i64).unwrap_or(0)
            },
            total_tokens_hour: tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, at: i64, ms: i64, tokens: u64) -> Completion {
        Completion {
            task_id: id.into(),
            agent_id: Some("a".into()),
            description: "d".into(),
            completed_at: at,
            duration_ms: ms,
            tokens_used: Some(tokens),
            pr_url: None,
        }
    }

    #[test]
    fn saved_completions_restore_to_the_same_projection() {
        let mut c = Completions::default();
        let now = 10 * 3_600_000;
        c.record(row("a", now - 30 * MINUTE_MS, 100, 5));
        c.record(row("b", now - 1, 300, 7));
        let back = Completions::restore(c.saved());
        assert_eq!(back.recent(), c.recent());
        assert_eq!(back.last_hour(now), c.last_hour(now));
        assert_eq!(back.saved(), c.saved());
    }

    #[test]
    fn keeps_the_newest_rows_first_and_only_so_many() {
        let mut c = Completions::default();
        for i in 0..(RECENT_KEPT as i64 + 10) {
            c.record(row(&i.to_string(), 1_000 + i, 10, 1));
        }
        // Out of order (a rebuild): lands in its place.
        c.record(row("late", 1_050, 10, 1));
        let recent = c.recent();
        assert_eq!(recent.len(), RECENT_KEPT);
        assert_eq!(recent[0].task_id, "109");
        assert!(recent
            .windows(2)
            .all(|w| w[0].completed_at >= w[1].completed_at));
        assert!(recent.iter().any(|r| r.task_id == "late"));
    }

    #[test]
    fn last_hour_counts_only_the_last_sixty_minutes() {
        let mut c = Completions::default();
        let now = 10 * 3_600_000;
        c.record(row("old", now - 61 * MINUTE_MS, 1_000, 100));
        c.record(row("a", now - 30 * MINUTE_MS, 100, 5));
        c.record(row("b", now - 1, 300, 7));
        let t = c.last_hour(now);
        assert_eq!(
            t,
            Throughput {
                completed_last_hour: 2,
                avg_completion_ms: 200,
                total_tokens_hour: 12,
            }
        );
        // The same slot an hour later starts over.
        c.record(row("c", now + 30 * MINUTE_MS, 50, 1));
        let later = c.last_hour(now + 30 * MINUTE_MS);
        assert_eq!(
            later.completed_last_hour, 2,
            "b and c; a's minute was reused"
        );
        assert_eq!(c.last_hour(now + 5 * 3_600_000).completed_last_hour, 0);
    }
}
