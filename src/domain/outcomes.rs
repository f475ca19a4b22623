//! `AgentOutcomes`: how each agent's most recent finished attempts ended
//! (completed, or failed with an error), for the `agent_failing` alert.
//!
//! Architecture invariant: pure data, bounded per agent; it counts what the
//! queue tells it and decides nothing.

use std::collections::{HashMap, VecDeque};

/// Outcomes kept per agent.
pub(crate) const OUTCOMES_KEPT: usize = 50;

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct AgentOutcomes {
    /// Per agent, newest last: `None` completed, `Some(error)` failed.
    recent: HashMap<String, VecDeque<Option<String>>>,
}

impl AgentOutcomes {
    /// One finished attempt of `agent`: `failure` is its error, `None` if it
    /// completed.
    pub(crate) fn record(&mut self, agent: &str, failure: Option<String>) {
        let recent = self.recent.entry(agent.to_string()).or_default();
        if recent.len() == OUTCOMES_KEPT {
            recent.pop_front();
        }
        recent.push_back(failure);
    }

    /// Agents whose last `attempts` finished attempts all failed (and that have
    /// at least that many), with the newest error, by agent id.
    pub(crate) fn failing(&self, attempts: usize) -> Vec<(String, String)> {
        let attempts = attempts.clamp(1, OUTCOMES_KEPT);
        let mut failing: Vec<(String, String)> = self
            .recent
            .iter()
            .filter(|(_, recent)| {
                recent.len() >= attempts && recent.iter().rev().take(attempts).all(Option::is_some)
            })
            .map(|(agent, recent)| {
                let last = recent.back().cloned().flatten().unwrap_or_default();
                (agent.clone(), last)
            })
            .collect();
        failing.sort();
        failing
    }

    pub(crate) fn clear(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_failing_only_when_its_last_attempts_all_failed() {
        let mut o = AgentOutcomes::default();
        o.record("a", Some("boom".into()));
        assert!(o.failing(2).is_empty(), "one failure is not two");
        o.record("a", Some("bang".into()));
        o.record("b", Some("x".into()));
        o.record("b", None);
        assert_eq!(o.failing(2), vec![("a".to_string(), "bang".to_string())]);
        o.record("a", None);
        assert!(o.failing(2).is_empty(), "a completion clears it");
        assert!(o.failing(1).is_empty());
    }

    #[test]
    fn only_the_newest_outcomes_are_kept() {
        let mut o = AgentOutcomes::default();
        o.record("a", None);
        for _ in 0..OUTCOMES_KEPT {
            o.record("a", Some("e".into()));
        }
        assert_eq!(o.failing(OUTCOMES_KEPT).len(), 1, "the old success is gone");
        assert_eq!(o.failing(usize::MAX).len(), 1, "asking for more clamps");
    }
}
