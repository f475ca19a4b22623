//! Spend and daily budgets (ext, PROTOCOL.md 6.28) as the queue keeps them:
//! what was spent each UTC day by agent, credential group and capability
//! (`meta`, one small record per day and name, `queue_spend/<day>/<kind>/<name>`;
//! the newest [`DAYS_KEPT`] days), and the daily budgets of agents and groups
//! (`meta`, `queue_daily_budgets`).
//!
//! The ledger is a sum of what the tasks' own records hold (each report's
//! spend is written with the report), so it is written at most every
//! [`WRITE_EVERY_MS`] (by the report that finds it due, else by the sweep)
//! and at a clean stop, not once per report: a crash may lose that much of
//! the day's totals, never a task's spend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::StoreError;
use crate::protocol::{DailyBudgets, Limit, Spend};
use crate::storage::store::{decode, encode, Store};

const BUDGETS_KEY: &str = "queue_daily_budgets";
const SPEND_PREFIX: &str = "queue_spend/";
/// Days of spend kept.
pub(super) const DAYS_KEPT: i64 = 8;
const DAY_MS: i64 = 86_400_000;
/// Longest the ledger in memory runs ahead of the store.
pub(super) const WRITE_EVERY_MS: i64 = 250;

/// The UTC day of `now` (days since the epoch).
pub(super) fn day_of(now: i64) -> i64 {
    now.div_euclid(DAY_MS)
}

fn date_of(day: i64) -> String {
    chrono::DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// One day's spend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct DaySpend {
    #[serde(default)]
    pub(super) total: Spend,
    #[serde(default)]
    pub(super) agents: BTreeMap<String, Spend>,
    #[serde(default)]
    pub(super) groups: BTreeMap<String, Spend>,
    #[serde(default)]
    pub(super) capabilities: BTreeMap<String, Spend>,
}

/// Where the UTC day comes from: the time the caller passes, or a test's
/// calendar clock (`calendar_clock_file`).
#[derive(Default, Clone)]
pub(super) struct Calendar(Option<crate::util::Clock>);

impl Calendar {
    pub(super) fn new(clock: Option<crate::util::Clock>) -> Calendar {
        Calendar(clock)
    }
}

impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Calendar(clock file)"
        } else {
            "Calendar(system)"
        })
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    pub(super) calendar: Calendar,
    pub(super) daily: DailyBudgets,
    days: BTreeMap<i64, DaySpend>,
    /// Records changed in memory since the last write: (day, kind, name).
    dirty: std::collections::BTreeSet<(i64, &'static str, String)>,
    last_write: i64,
}

/// Adds to one name's spend.
fn add(map: &mut BTreeMap<String, Spend>, name: &str, delta: Spend) {
    match map.get_mut(name) {
        Some(e) => *e = e.plus(delta),
        None => {
            map.insert(name.to_string(), delta);
        }
    }
}

impl Budgets {
    /// Empty, with its calendar.
    pub(super) fn with_calendar(calendar: Calendar) -> Budgets {
        Budgets {
            calendar,
            ..Budgets::default()
        }
    }

    pub(super) fn load(store: &Store, calendar: Calendar) -> Result<Budgets, StoreError> {
        let mut b = Budgets::with_calendar(calendar);
        if let Some(v) = store.meta.get(BUDGETS_KEY)? {
            b.daily = decode("meta", BUDGETS_KEY.as_bytes(), &v)?;
        }
        for item in store.meta.scan_prefix(SPEND_PREFIX) {
            let (k, v) = item?;
            let parts = std::str::from_utf8(&k[SPEND_PREFIX.len()..])
                .ok()
                .map(|rest| rest.splitn(3, '/').map(str::to_string).collect::<Vec<_>>());
            let spend = decode::<Spend>("meta", &k, &v);
            let (Some([day, kind, name]), Ok(spend)) = (parts.as_deref(), spend) else {
                tracing::error!("skipping an unreadable record of spend");
                continue;
            };
            let Ok(day) = day.parse::<i64>() else {
                continue;
            };
            let d = b.days.entry(day).or_default();
            match kind.as_str() {
                "total" => d.total = spend,
                "agent" => {
                    d.agents.insert(name.clone(), spend);
                }
                "group" => {
                    d.groups.insert(name.clone(), spend);
                }
                "capability" => {
                    d.capabilities.insert(name.clone(), spend);
                }
                _ => {}
            }
        }
        Ok(b)
    }

    /// Writes the daily budgets (made durable by the caller's flush).
    pub(super) fn save_budgets(&self, store: &Store) -> Result<(), StoreError> {
        store.meta.insert(BUDGETS_KEY, encode(&self.daily))?;
        Ok(())
    }

    /// Adds spend to `now`'s day; writes what changed when a write is due.
    pub(super) fn record(
        &mut self,
        store: &Store,
        now: i64,
        who: (&str, &str),
        capabilities: &[String],
        delta: Spend,
    ) -> Result<(), StoreError> {
        if delta.is_zero() {
            return Ok(());
        }
        let today = self.today(now);
        let (agent, group) = who;
        let day = self.days.entry(today).or_default();
        day.total = day.total.plus(delta);
        add(&mut day.agents, agent, delta);
        add(&mut day.groups, group, delta);
        let none = [String::from("(none)")];
        let caps = if capabilities.is_empty() {
            &none[..]
        } else {
            capabilities
        };
        for c in caps {
            add(&mut day.capabilities, c, delta);
        }
        self.dirty.insert((today, "total", String::new()));
        self.dirty.insert((today, "agent", agent.to_string()));
        self.dirty.insert((today, "group", group.to_string()));
        for c in caps {
            self.dirty.insert((today, "capability", c.clone()));
        }
        if now.saturating_sub(self.last_write) >= WRITE_EVERY_MS {
            self.write(store, now)?;
        }
        Ok(())
    }

    /// Writes the changed records (made durable by the caller's flush) and
    /// drops the days too old.
    pub(super) fn write(&mut self, store: &Store, now: i64) -> Result<(), StoreError> {
        self.last_write = now;
        for (day, kind, name) in std::mem::take(&mut self.dirty) {
            let Some(d) = self.days.get(&day) else {
                continue;
            };
            let spend = match kind {
                "total" => Some(d.total),
                "agent" => d.agents.get(&name).copied(),
                "group" => d.groups.get(&name).copied(),
                _ => d.capabilities.get(&name).copied(),
            };
            if let Some(s) = spend {
                store
                    .meta
                    .insert(format!("{SPEND_PREFIX}{day}/{kind}/{name}"), encode(&s))?;
            }
        }
        let today = self.today(now);
        while let Some((&oldest, _)) = self.days.first_key_value() {
            if oldest > today - DAYS_KEPT {
                break;
            }
            self.days.remove(&oldest);
            let keys: Vec<_> = store
                .meta
                .scan_prefix(format!("{SPEND_PREFIX}{oldest}/"))
                .keys()
                .collect::<Result<_, _>>()?;
            for k in keys {
                store.meta.remove(k)?;
            }
        }
        Ok(())
    }

    /// The UTC day at `now`, or at the calendar clock's time when a test set one.
    pub(super) fn today(&self, now: i64) -> i64 {
        day_of(self.calendar.0.as_ref().map_or(now, |clock| clock()))
    }

    /// Whether changes wait to be written.
    pub(super) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The daily budget `agent` or its `group` is over today, if any:
    /// (scope, budget).
    pub(super) fn over(&self, now: i64, agent: &str, group: &str) -> Option<(String, Limit)> {
        let today = self.days.get(&self.today(now));
        let spent = |m: Option<&BTreeMap<String, Spend>>, k: &str| {
            m.and_then(|m| m.get(k)).copied().unwrap_or_default()
        };
        if let Some(l) = self.daily.agents.get(agent) {
            if l.exceeded_by(spent(today.map(|d| &d.agents), agent)) {
                return Some((format!("agent:{agent}"), *l));
            }
        }
        if let Some(l) = self.daily.groups.get(group) {
            if l.exceeded_by(spent(today.map(|d| &d.groups), group)) {
                return Some((format!("group:{group}"), *l));
            }
        }
        None
    }

    /// Whether a daily hold's `scope` (`agent:<id>` / `group:<g>`) is still
    /// over today.
    pub(super) fn still_over(&self, now: i64, scope: &str) -> bool {
        let today = self.days.get(&self.today(now));
        let check = |budgets: &BTreeMap<String, Limit>,
                     spent: Option<&BTreeMap<String, Spend>>,
                     key: &str| {
            budgets.get(key).is_some_and(|l| {
                l.exceeded_by(spent.and_then(|m| m.get(key)).copied().unwrap_or_default())
            })
        };
        match scope.split_once(':') {
            Some(("agent", a)) => check(&self.daily.agents, today.map(|d| &d.agents), a),
            Some(("group", g)) => check(&self.daily.groups, today.map(|d| &d.groups), g),
            _ => false,
        }
    }

    /// Today's spend, the budgets, and each kept day's total.
    pub(super) fn view(&self, now: i64) -> Value {
        let today = self.today(now);
        let empty = DaySpend::default();
        let t = self.days.get(&today).unwrap_or(&empty);
        let days: Vec<Value> = self
            .days
            .iter()
            .rev()
            .map(|(d, s)| json!({"date": date_of(*d), "spent": s.total}))
            .collect();
        json!({
            "date": date_of(today),
            "budgets": self.daily,
            "today": {
                "total": t.total,
                "agents": t.agents,
                "groups": t.groups,
                "capabilities": t.capabilities,
            },
            "days": days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_dated() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(date_of(day_of(1_700_000_000_000)), "2023-11-14");
    }
}
