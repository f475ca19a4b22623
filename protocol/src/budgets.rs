//! Budgets (ext, PROTOCOL.md 6.28): what a task, an agent or a credential
//! group may spend, and what was spent. An agent reports its spend with
//! `task_progress` and `task_complete` (`tokens_used`, `cost_usd`: what the
//! current attempt has spent so far); a task over a budget is paused, not
//! killed, until an operator raises the budget or cancels it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::FieldError;

/// Largest token budget.
pub const MAX_BUDGET_TOKENS: u64 = 1_000_000_000_000;
/// Largest budget in US dollars.
pub const MAX_BUDGET_USD: f64 = 1_000_000.0;
/// Most agents or groups with a daily budget.
pub const MAX_DAILY_BUDGETS: usize = 10_000;

/// Tokens and dollars spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
}

impl Spend {
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_add(other.tokens),
            cost_usd: self.cost_usd + other.cost_usd,
        }
    }

    /// Each part the larger of the two (reports are running totals).
    pub fn max(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.max(other.tokens),
            cost_usd: self.cost_usd.max(other.cost_usd),
        }
    }

    /// What `self` adds over `before` (never negative).
    pub fn since(self, before: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_sub(before.tokens),
            cost_usd: (self.cost_usd - before.cost_usd).max(0.0),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.tokens == 0 && self.cost_usd <= 0.0
    }
}

/// A budget: tokens, dollars, or both (none: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

impl Limit {
    /// Whether `spent` is over this budget.
    pub fn exceeded_by(&self, spent: Spend) -> bool {
        self.tokens.is_some_and(|t| spent.tokens > t)
            || self.usd.is_some_and(|u| spent.cost_usd > u)
    }

    pub fn is_none(&self) -> bool {
        self.tokens.is_none() && self.usd.is_none()
    }
}

/// Daily budgets (UTC days) of agents and credential groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DailyBudgets {
    #[serde(default)]
    pub agents: BTreeMap<String, Limit>,
    #[serde(default)]
    pub groups: BTreeMap<String, Limit>,
}

/// Checks one budget pair: `tokens` 1 to [`MAX_BUDGET_TOKENS`], `usd` above 0
/// up to [`MAX_BUDGET_USD`]. Field names are `<prefix><tokens_key>`.
pub fn check_limit(
    obj: &Map<String, Value>,
    (tokens_key, usd_key): (&str, &str),
    prefix: &str,
) -> Result<Limit, Vec<FieldError>> {
    let mut errors = Vec::new();
    let tokens = match obj.get(tokens_key).filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match v.as_u64().filter(|t| (1..=MAX_BUDGET_TOKENS).contains(t)) {
            Some(t) => Some(t),
            None => {
                errors.push(FieldError::new(
                    &format!("{prefix}{tokens_key}"),
                    "invalid_value",
                    format!("a whole number from 1 to {MAX_BUDGET_TOKENS}"),
                ));
                None
            }
        },
    };
    let usd = match obj.get(usd_key).filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match v
            .as_f64()
            .filter(|u| u.is_finite() && *u > 0.0 && *u <= MAX_BUDGET_USD)
        {
            Some(u) => Some(u),
            None => {
                errors.push(FieldError::new(
                    &format!("{prefix}{usd_key}"),
                    "invalid_value",
                    format!("a number above 0, at most {MAX_BUDGET_USD}"),
                ));
                None
            }
        },
    };
    match errors.is_empty() {
        true => Ok(Limit { tokens, usd }),
        false => Err(errors),
    }
}

/// `PUT /api/admin/budgets {agents?: {id: {tokens?, usd?}}, groups?: {...}}`:
/// the whole table of daily budgets.
pub fn parse_daily_budgets(body: &Value) -> Result<DailyBudgets, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new(
            "",
            "wrong_type",
            "expected an object",
        )]);
    };
    let mut errors = Vec::new();
    if let Some(k) = obj.keys().find(|k| *k != "agents" && *k != "groups") {
        errors.push(FieldError::new(
            k,
            "unknown_field",
            "not a field of this body",
        ));
    }
    let mut table = |key: &str| -> BTreeMap<String, Limit> {
        let mut out = BTreeMap::new();
        let entries = match obj.get(key).filter(|v| !v.is_null()) {
            None => return out,
            Some(Value::Object(m)) => m,
            Some(_) => {
                errors.push(FieldError::new(key, "wrong_type", "expected an object"));
                return out;
            }
        };
        if entries.len() > MAX_DAILY_BUDGETS {
            errors.push(FieldError::new(
                key,
                "invalid_value",
                format!("at most {MAX_DAILY_BUDGETS} entries"),
            ));
            return out;
        }
        for (name, v) in entries {
            let at = format!("{key}.{name}.");
            if name.is_empty() || name.chars().count() > 128 {
                errors.push(FieldError::new(
                    key,
                    "invalid_value",
                    "names are 1 to 128 characters",
                ));
                continue;
            }
            let Some(limit) = v.as_object() else {
                errors.push(FieldError::new(
                    &format!("{key}.{name}"),
                    "wrong_type",
                    "expected {tokens?, usd?}",
                ));
                continue;
            };
            if let Some(k) = limit.keys().find(|k| *k != "tokens" && *k != "usd") {
                errors.push(FieldError::new(
                    &format!("{at}{k}"),
                    "unknown_field",
                    "expected tokens or usd",
                ));
                continue;
            }
            match check_limit(limit, ("tokens", "usd"), &at) {
                Ok(l) if l.is_none() => errors.push(FieldError::new(
                    &format!("{key}.{name}"),
                    "required",
                    "give tokens, usd or both",
                )),
                Ok(l) => {
                    out.insert(name.clone(), l);
                }
                Err(e) => errors.extend(e),
            }
        }
        out
    };
    let agents = table("agents");
    let groups = table("groups");
    match errors.is_empty() {
        true => Ok(DailyBudgets { agents, groups }),
        false => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_and_spend() {
        let l = Limit {
            tokens: Some(100),
            usd: Some(1.5),
        };
        assert!(!l.exceeded_by(Spend {
            tokens: 100,
            cost_usd: 1.5
        }));
        assert!(l.exceeded_by(Spend {
            tokens: 101,
            cost_usd: 0.0
        }));
        assert!(l.exceeded_by(Spend {
            tokens: 0,
            cost_usd: 1.51
        }));
        let a = Spend {
            tokens: 10,
            cost_usd: 0.5,
        };
        let b = Spend {
            tokens: 4,
            cost_usd: 0.7,
        };
        assert_eq!(
            a.max(b),
            Spend {
                tokens: 10,
                cost_usd: 0.7
            }
        );
        assert_eq!(b.since(a).tokens, 0);
        assert!((b.since(a).cost_usd - 0.2).abs() < 1e-9);
    }

    #[test]
    fn daily_budgets_are_checked_whole() {
        let ok = parse_daily_budgets(&json!({"agents": {"a": {"tokens": 1000}},
                                             "groups": {"team": {"usd": 20.0}}}))
        .expect("valid");
        assert_eq!(ok.agents["a"].tokens, Some(1000));
        let bad = parse_daily_budgets(&json!({"agents": {"a": {}, "b": {"tokens": 0},
                                                         "c": {"usd": -1}, "d": {"x": 1}},
                                              "other": 1}))
        .expect_err("invalid");
        let fields: Vec<&str> = bad.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "other",
                "agents.a",
                "agents.b.tokens",
                "agents.c.usd",
                "agents.d.x"
            ]
        );
        assert_eq!(parse_daily_budgets(&json!({})), Ok(DailyBudgets::default()));
    }
}
