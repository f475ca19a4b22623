//! What each rule finds: the metrics window's rules (`evaluate`), blocked
//! tasks, the fleet rules and questions waiting, each as an optional
//! [`Finding`]. Pure reads of what `check` gathered.

use serde_json::{json, Value};

use super::*;

impl Alerter {
    /// blocked_tasks: tasks blocked for longer than the threshold, oldest first.
    pub(super) fn blocked_finding(&self, blocked: &[(String, i64, String)]) -> Option<Finding> {
        (!blocked.is_empty()).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{} task(s) blocked for longer than {} s",
                blocked.len(),
                self.thresholds.blocked_task_ms / 1000
            ),
            details: json!({"tasks": blocked.iter().take(20).map(|(id, at, reason)|
                json!({"task_id": id, "blocked_at": at, "reason": reason})).collect::<Vec<_>>(),
                "count": blocked.len()}),
        })
    }

    /// agent_offline, queued_too_long and agent_failing.
    pub(super) fn fleet_findings(
        &self,
        fleet: &FleetState,
        waiting: Option<&LongWait>,
        failing: &[(String, String)],
    ) -> Vec<(&'static str, Option<Finding>)> {
        let t = &self.thresholds;
        let agent_offline = (!fleet.offline.is_empty()).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{} agent(s) offline for longer than {} s: {}",
                fleet.offline.len(),
                t.agent_offline_ms / 1000,
                names(fleet.offline.iter().map(|(id, _)| id.as_str()))
            ),
            details: json!({"agents": fleet.offline.iter().take(20).map(|(id, since)|
                json!({"agent_id": id, "offline_since": since})).collect::<Vec<_>>(),
                "count": fleet.offline.len()}),
        });
        let queued_too_long = waiting.map(|w| {
            let capable = fleet
                .online_capabilities
                .iter()
                .any(|caps| w.needed_capabilities.iter().all(|c| caps.contains(c)));
            let why = if capable {
                "a capable agent is online but busy"
            } else {
                "no capable agent is online"
            };
            Finding {
                severity: Severity::Warning,
                message: format!(
                    "task {} has waited {} s for an agent ({why})",
                    w.task_id,
                    now_ms().saturating_sub(w.since).max(0) / 1000
                ),
                details: json!({"task_id": w.task_id, "waiting_since": w.since,
                                "needed_capabilities": w.needed_capabilities,
                                "capable_agent_online": capable,
                                "threshold_ms": t.queued_age_ms}),
            }
        });
        let agent_failing = (!failing.is_empty()).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{} failed their last {} attempts",
                names(failing.iter().map(|(id, _)| id.as_str())),
                t.agent_failing_attempts
            ),
            details: json!({"agents": failing.iter().take(20).map(|(id, error)|
                json!({"agent_id": id, "last_error": error})).collect::<Vec<_>>(),
                "attempts": t.agent_failing_attempts}),
        });
        let usage_limited = (!fleet.usage_paused.is_empty()).then(|| Finding {
            severity: Severity::Info,
            message: format!(
                "{} credential group(s) paused for a usage limit: {}",
                fleet.usage_paused.len(),
                names(fleet.usage_paused.iter().map(|(g, _)| g.as_str()))
            ),
            details: json!({"groups": fleet.usage_paused.iter().take(20).map(|(g, until)|
                json!({"credential_group": g, "until": until})).collect::<Vec<_>>()}),
        });
        vec![
            ("agent_offline", agent_offline),
            ("queued_too_long", queued_too_long),
            ("agent_failing", agent_failing),
            ("usage_limited", usage_limited),
        ]
    }

    /// What each rule finds, given the oldest snapshot of the window and the newest.
    pub(super) fn evaluate(
        &mut self,
        oldest: &Snapshot,
        s: &Snapshot,
        stuck: &[(String, String, i64)],
        registered: usize,
    ) -> Vec<(&'static str, Option<Finding>)> {
        let t = self.thresholds.clone();
        let depth = s.queue_depth.now;
        // Growth is counted per new snapshot: higher than at the previous one.
        if self.last_snapshot != Some(s.timestamp) {
            self.last_snapshot = Some(s.timestamp);
            let rising = self.last_depth.is_some_and(|d| depth > d);
            self.last_depth = Some(depth);
            self.growing_checks = if depth > t.queue_depth && rising {
                self.growing_checks.saturating_add(1)
            } else if depth > t.queue_depth && self.active.contains_key("queue_growing") {
                self.growing_checks
            } else {
                0
            };
        }
        let queue_growing = (self.growing_checks >= t.queue_growing_checks).then(|| Finding {
            severity: if depth > t.queue_depth.saturating_mul(10) {
                Severity::Critical
            } else {
                Severity::Warning
            },
            message: format!(
                "{depth} tasks queued and growing (threshold {})",
                t.queue_depth
            ),
            details: json!({"queue_depth": depth, "threshold": t.queue_depth,
                            "checks_rising": self.growing_checks}),
        });

        let delta = |name: &str| {
            let at = |snap: &Snapshot| snap.counters.get(name).copied().unwrap_or(0);
            at(s).saturating_sub(at(oldest))
        };
        let (failed, completed) = (delta("failed"), delta("completed"));
        let finished = failed + completed;
        let failure_rate = if finished == 0 {
            0.0
        } else {
            failed as f64 / finished as f64
        };
        let high_failure_rate =
            (finished >= t.min_finished && failure_rate > t.failure_rate).then(|| Finding {
                severity: if failure_rate >= t.failure_rate_critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                message: format!(
                    "{:.0}% of the last {finished} finished attempts failed",
                    failure_rate * 100.0
                ),
                details: json!({"failure_rate": failure_rate, "finished": finished,
                                "threshold": t.failure_rate}),
            });

        let stuck_tasks = (!stuck.is_empty()).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{} task(s) assigned for longer than {} s",
                stuck.len(),
                t.stuck_task_ms / 1000
            ),
            details: json!({"tasks": stuck.iter().take(20).map(|(id, agent, at)|
                json!({"task_id": id, "agent_id": agent, "assigned_at": at})).collect::<Vec<_>>(),
                "count": stuck.len()}),
        });

        let no_agents_online =
            (registered > 0 && s.agent_utilization.online == 0).then(|| Finding {
                severity: Severity::Critical,
                message: format!("none of the {registered} registered agents is online"),
                details: json!({"registered": registered}),
            });

        // Over the window, or over one interval while the window has one snapshot.
        let span_ms =
            (s.timestamp - oldest.timestamp).max(i64::try_from(s.interval_ms).unwrap_or(1));
        let errors = if s.timestamp == oldest.timestamp {
            s.error_rates.errors_per_min
        } else {
            delta("errors") as f64 * 60_000.0 / span_ms as f64
        };
        let high_error_rate = (errors > t.error_rate_per_min).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{errors:.0} error answers per minute (threshold {})",
                t.error_rate_per_min
            ),
            details: json!({"errors_per_min": errors, "threshold": t.error_rate_per_min}),
        });

        let problems = self.deps.storage.problems();
        let storage = (!problems.is_empty()).then(|| Finding {
            severity: if problems.contains(&"recovered_at_startup") {
                Severity::Critical
            } else {
                Severity::Warning
            },
            message: format!("storage: {}", problems.join(", ")),
            details: json!({"conditions": problems,
                            "see": "GET /api/admin/storage-health"}),
        });

        let dead_lettered = delta("dead_lettered");
        let dead_letter_growth = (dead_lettered >= t.dead_letter_growth).then(|| Finding {
            severity: Severity::Warning,
            message: format!(
                "{dead_lettered} task(s) dead-lettered in the last {} s",
                t.window_ms / 1000
            ),
            details: json!({"dead_lettered": dead_lettered, "window_ms": t.window_ms,
                            "threshold": t.dead_letter_growth,
                            "dead_letter": s.queue_depth.dead_letter}),
        });

        vec![
            ("storage", storage),
            ("dead_letter_growth", dead_letter_growth),
            ("queue_growing", queue_growing),
            ("high_failure_rate", high_failure_rate),
            ("stuck_tasks", stuck_tasks),
            ("no_agents_online", no_agents_online),
            ("high_error_rate", high_error_rate),
        ]
    }
}

/// question_waiting (ext): agents wait for an answer (PROTOCOL.md 6.26).
pub(super) fn question_finding(questions: &[Value]) -> Option<Finding> {
    (!questions.is_empty()).then(|| Finding {
        severity: Severity::Warning,
        message: format!(
            "{} question(s), approval(s) or budget pause(s) wait for a person: {}",
            questions.len(),
            names(
                questions
                    .iter()
                    .map(|q| q["task_id"].as_str().unwrap_or("?"))
            )
        ),
        details: json!({"questions": questions.iter().take(20).map(|q| json!({
            "task_id": q["task_id"], "agent_id": q["assigned_to"], "kind": q["kind"],
            "question": q["question"]["question"], "asked_at": q["question"]["asked_at"]}))
            .collect::<Vec<_>>(), "count": questions.len()}),
    })
}

/// standing_order_missed: occurrences that got no outcome in their window (or
/// never ran) in the last hour.
pub(super) fn missed_finding(missed: &[(String, i64)]) -> Option<Finding> {
    (!missed.is_empty()).then(|| Finding {
        severity: Severity::Warning,
        message: format!(
            "{} standing-order run(s) missed in the last hour",
            missed.len()
        ),
        details: json!({"runs": missed.iter().rev().take(20).map(|(order, at)|
            json!({"order": order, "scheduled_for": at})).collect::<Vec<_>>(),
            "count": missed.len()}),
    })
}

/// The first five names of a list, with how many more.
fn names<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = ids.len();
    let shown: Vec<&str> = ids.take(5).collect();
    let more = total - shown.len();
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}
