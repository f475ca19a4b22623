//! When a standing order runs: a cron expression evaluated in a time zone, and
//! the pure planning step that turns "time passed" into "create these runs, mark
//! those missed".
//!
//! Architecture invariant: no clock, no I/O; callers pass every time in (ms since
//! the epoch, UTC).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScheduleError {
    /// The cron expression does not parse; the parser's reason.
    Cron(String),
    /// Not an IANA time zone name (e.g. `Europe/Berlin`, `UTC`).
    TimeZone(String),
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleError::Cron(reason) => write!(f, "invalid cron expression: {reason}"),
            ScheduleError::TimeZone(tz) => write!(f, "unknown time zone {tz:?}"),
        }
    }
}

impl Schedule {
    /// A five-field cron expression (minute hour day-of-month month day-of-week,
    /// with lists, ranges, steps and names) in the IANA time zone `tz`. A local
    /// time skipped by a daylight-saving change runs at the first time after the
    /// gap; a local time that happens twice runs once.
    pub(crate) fn parse(cron: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let fields = cron.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Cron(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
            )));
        }
        let cron = Cron::from_str(cron).map_err(|e| ScheduleError::Cron(e.to_string()))?;
        let tz = Tz::from_str(tz).map_err(|_| ScheduleError::TimeZone(tz.to_string()))?;
        Ok(Schedule { cron, tz })
    }

    fn local(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first occurrence strictly after `after_ms`.
    pub(crate) fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = self.local(after_ms)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let at = next.timestamp_millis();
        // Occurrences are whole minutes; `after_ms` may sit inside one.
        (at > after_ms).then_some(at)
    }

    /// Occurrences `t` with `after_ms < t <= until_ms`, ascending, at most `cap`.
    pub(crate) fn occurrences(&self, after_ms: i64, until_ms: i64, cap: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut from = after_ms;
        while out.len() < cap {
            match self.next_after(from) {
                Some(t) if t <= until_ms => {
                    out.push(t);
                    from = t;
                }
                _ => break,
            }
        }
        out
    }
}

/// What planning decided for one occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Create the run (its window is still open).
    Create { scheduled_for: i64 },
    /// Its window closed before the hub got to it (the hub was down, or the clock
    /// jumped): recorded as missed, no task.
    Missed { scheduled_for: i64 },
}

/// Plans the occurrences in `(planned_through, now]`: each becomes a run, or a
/// missed one when `now` is already past its window. Answers the steps and the new
/// `planned_through`. A clock that went back (`now < planned_through`) plans
/// nothing, so no occurrence is planned twice; at most `cap` per call, the rest on
/// the next.
pub(crate) fn plan(
    schedule: &Schedule,
    window_ms: u64,
    planned_through: i64,
    now: i64,
    cap: usize,
) -> (Vec<Step>, i64) {
    if now <= planned_through {
        return (Vec::new(), planned_through);
    }
    let due = schedule.occurrences(planned_through, now, cap);
    let through = if due.len() == cap {
        due.last().copied().unwrap_or(now)
    } else {
        now
    };
    let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
    let steps = due
        .into_iter()
        .map(|t| {
            if t.saturating_add(window) <= now {
                Step::Missed { scheduled_for: t }
            } else {
                Step::Create { scheduled_for: t }
            }
        })
        .collect();
    (steps, through)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .timestamp_millis()
    }

    #[test]
    fn every_minute_lists_each_minute_once() {
        let s = Schedule::parse("* * * * *", "UTC").expect("valid");
        let t0 = ms("2026-11-21T10:00:30Z");
        assert_eq!(
            s.occurrences(t0, t0 + 3 * MIN, 10),
            vec![
                ms("2026-11-21T10:01:00Z"),
                ms("2026-11-21T10:02:00Z"),
                ms("2026-11-21T10:03:00Z")
            ]
        );
        assert_eq!(s.occurrences(t0, t0 + 3 * MIN, 2).len(), 2);
    }

    #[test]
    fn time_zones_and_daylight_saving_are_honoured() {
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        let s = Schedule::parse("0 9 * * *", "Europe/Berlin").expect("valid");
        assert_eq!(
            s.next_after(ms("2026-11-21T00:00:00Z")),
            Some(ms("2026-11-21T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(ms("2026-07-01T00:00:00Z")),
            Some(ms("2026-07-01T07:00:00Z"))
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: it runs once, after the gap.
        let gap = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let runs = gap.occurrences(ms("2026-03-28T12:00:00Z"), ms("2026-03-30T12:00:00Z"), 10);
        assert_eq!(runs.len(), 2, "{runs:?}");
        // 02:30 happens twice on 2026-10-25: it runs once.
        let twice = gap.occurrences(ms("2026-10-24T12:00:00Z"), ms("2026-10-25T12:00:00Z"), 10);
        assert_eq!(twice.len(), 1, "{twice:?}");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        assert!(matches!(
            Schedule::parse("* * * *", "UTC"),
            Err(ScheduleError::Cron(_))
        ));
        assert!(matches!(
            Schedule::parse("61 * * * *", "UTC"),
            Err(ScheduleError::Cron(_))
        ));
        assert_eq!(
            Schedule::parse("* * * * *", "Mars/Olympus").err(),
            Some(ScheduleError::TimeZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn planning_creates_open_windows_misses_closed_ones_and_ignores_a_clock_going_back() {
        let s = Schedule::parse("* * * * *", "UTC").expect("valid");
        let t0 = ms("2026-11-21T10:00:00Z");
        // Three minutes pass with a 60 s window: 10:01 and 10:02 closed, 10:03 open.
        let (steps, through) = plan(&s, 60_000, t0, t0 + 3 * MIN + 10_000, 100);
        assert_eq!(
            steps,
            vec![
                Step::Missed {
                    scheduled_for: t0 + MIN
                },
                Step::Missed {
                    scheduled_for: t0 + 2 * MIN
                },
                Step::Create {
                    scheduled_for: t0 + 3 * MIN
                },
            ]
        );
        assert_eq!(through, t0 + 3 * MIN + 10_000);
        // The clock goes back: nothing is planned again.
        let (again, kept) = plan(&s, 90_000, through, t0 + MIN, 100);
        assert!(again.is_empty());
        assert_eq!(kept, through);
        // A cap leaves the rest for the next call, without gaps or repeats.
        let (first, mid) = plan(&s, 90_000, t0, t0 + 10 * MIN, 4);
        let (rest, end) = plan(&s, 90_000, mid, t0 + 10 * MIN, 100);
        assert_eq!(first.len() + rest.len(), 10);
        assert_eq!(end, t0 + 10 * MIN);
    }
}
