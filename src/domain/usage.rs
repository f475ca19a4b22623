//! Usage-limit pauses (#19): agents sharing a provider account (a *credential
//! group*) hit its usage window together. When one reports the limit, the whole
//! group is paused until the window resets: none of its agents is offered work
//! meanwhile, and the pause ends by itself at `until` (or earlier by an
//! operator).
//!
//! Architecture invariant: pure data; the caller passes `now` (the clock is
//! injected, so the tests drive time instead of sleeping); no I/O, no actor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest pause accepted: a `resets_at` further away is cut to this (ms).
pub(crate) const MAX_PAUSE_MS: i64 = 7 * 24 * 3_600_000;

/// One group's pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    /// Offered no work before this time (ms).
    pub until: i64,
    pub since: i64,
    /// The agent whose report started (or last extended) it.
    pub reported_by: String,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reported {
    /// The group is paused from now.
    Paused,
    /// It was paused already; the pause now ends later.
    Extended,
    /// It was paused already at least that long (or `resets_at` is past).
    Unchanged,
}

/// The paused groups (see the module documentation).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsagePauses {
    paused: BTreeMap<String, Pause>,
}

impl UsagePauses {
    /// An agent of `group` reported the limit, resetting at `resets_at`.
    pub(crate) fn report(
        &mut self,
        group: &str,
        resets_at: i64,
        (reported_by, task_id, reason): (&str, Option<&str>, Option<&str>),
        now: i64,
    ) -> Reported {
        let until = resets_at.min(now.saturating_add(MAX_PAUSE_MS));
        if until <= now {
            return Reported::Unchanged;
        }
        let pause = Pause {
            until,
            since: now,
            reported_by: reported_by.to_string(),
            task_id: task_id.map(str::to_string),
            reason: reason.map(str::to_string),
        };
        match self.paused.get_mut(group) {
            Some(p) if p.until > now => {
                if until > p.until {
                    p.until = until;
                    p.reported_by = pause.reported_by;
                    p.task_id = pause.task_id;
                    p.reason = pause.reason;
                    Reported::Extended
                } else {
                    Reported::Unchanged
                }
            }
            _ => {
                self.paused.insert(group.to_string(), pause);
                Reported::Paused
            }
        }
    }

    /// Ends `group`'s pause now (an operator's resume, or its time came).
    pub(crate) fn resume(&mut self, group: &str) -> Option<Pause> {
        self.paused.remove(group)
    }

    /// The groups whose pause ended by `now`.
    pub(crate) fn due(&self, now: i64) -> Vec<String> {
        self.paused
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Until when `group` is paused, if it is at `now`.
    pub(crate) fn paused_until(&self, group: &str, now: i64) -> Option<i64> {
        self.paused
            .get(group)
            .filter(|p| p.until > now)
            .map(|p| p.until)
    }

    /// Every pause still in force at `now`, by group.
    pub(crate) fn list(&self, now: i64) -> Vec<(&str, &Pause)> {
        self.paused
            .iter()
            .filter(|(_, p)| p.until > now)
            .map(|(g, p)| (g.as_str(), p))
            .collect()
    }
}

/// The credential group of an agent: its token's, else its own (an agent that
/// shares no account pauses alone).
pub(crate) fn group_of(agent_id: &str, credential_group: Option<&str>) -> String {
    match credential_group {
        Some(g) => g.to_string(),
        None => format!("agent:{agent_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_pauses_the_group_until_the_reset_and_the_clock_ends_it() {
        let mut clock = 1_000;
        let mut u = UsagePauses::default();
        let who = ("a1", Some("task-1"), Some("5-hour limit"));
        assert_eq!(u.report("team", 5_000, who, clock), Reported::Paused);
        assert_eq!(u.paused_until("team", clock), Some(5_000));
        assert_eq!(u.paused_until("other", clock), None);
        // A second agent of the group reports a later reset: extended.
        clock = 2_000;
        assert_eq!(
            u.report("team", 8_000, ("a2", None, None), clock),
            Reported::Extended
        );
        assert_eq!(
            u.report("team", 6_000, ("a3", None, None), clock),
            Reported::Unchanged
        );
        assert_eq!(u.list(clock)[0].1.reported_by, "a2");
        clock = 7_999;
        assert!(u.due(clock).is_empty());
        clock = 8_000;
        assert_eq!(u.due(clock), vec!["team".to_string()]);
        assert_eq!(u.paused_until("team", clock), None, "over at its time");
        assert!(u.resume("team").is_some());
        assert!(u.list(clock).is_empty());
    }

    #[test]
    fn a_past_reset_changes_nothing_and_a_far_one_is_cut_to_a_week() {
        let mut u = UsagePauses::default();
        assert_eq!(
            u.report("g", 10, ("a", None, None), 100),
            Reported::Unchanged
        );
        assert!(u.list(100).is_empty());
        assert_eq!(
            u.report("g", i64::MAX, ("a", None, None), 100),
            Reported::Paused
        );
        assert_eq!(u.paused_until("g", 100), Some(100 + MAX_PAUSE_MS));
        assert_eq!(group_of("a1", None), "agent:a1");
        assert_eq!(group_of("a1", Some("team")), "team");
    }
}
