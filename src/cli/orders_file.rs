//! `agentcom-hub standing-orders apply -f orders.toml [--prune] [--dry-run]`:
//! standing orders kept in a file. The file is read and checked whole, the
//! hub's orders are compared with it, the difference is printed, and then (not
//! with `--dry-run`) applied: new orders created, changed ones updated, and
//! with `--prune` orders the file no longer names deleted. Applying the same
//! file twice changes nothing the second time.
//!
//! ```toml
//! [[order]]
//! name = "inbox-sweep"
//! cron = "*/15 * * * *"
//! timezone = "Europe/Berlin"   # default UTC
//! capability = "reports"       # or agent = "night-owl"
//! window_ms = 600000           # default 15 minutes
//! enabled = true               # default true
//! [order.task]
//! description = "Sweep the inbox"
//! priority = "high"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Map, Value};

use agentcom_hub::standing_defaults::{DEFAULT_TIMEZONE, DEFAULT_WINDOW_MS};

use crate::cli::hub_client::encode;
use crate::{accepted, hub_request, Fatal};

/// The keys an order may have in the file.
const KEYS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "capability",
    "agent",
    "task",
    "window_ms",
    "enabled",
];

/// One change the file asks for.
#[derive(Debug, PartialEq)]
enum Change {
    Create(Map<String, Value>),
    /// The order's full fields, and which differ.
    Update(Map<String, Value>, Vec<String>),
    Delete,
}

/// An order of the file with every key the hub compares, defaults filled in.
fn normalized(order: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in KEYS {
        let v = order.get(*key).cloned().unwrap_or(Value::Null);
        let v = match (*key, v) {
            ("timezone", Value::Null) => json!(DEFAULT_TIMEZONE),
            ("window_ms", Value::Null) => json!(DEFAULT_WINDOW_MS),
            ("enabled", Value::Null) => json!(true),
            (_, v) => v,
        };
        out.insert(key.to_string(), v);
    }
    out
}

/// Reads and checks the file: TOML, a list `order` of tables with known keys,
/// each with a unique `name`, a `cron` and a `task` table.
fn read_file(path: &Path) -> Result<BTreeMap<String, Map<String, Value>>, Fatal> {
    let bad = |message: String| Fatal { code: 2, message };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if let Some(key) = table.keys().find(|k| *k != "order") {
        return Err(bad(format!(
            "{}: unknown key {key:?} (the file holds [[order]] tables)",
            path.display()
        )));
    }
    let orders = match table.get("order") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(bad(format!(
                "{}: order must be [[order]] tables",
                path.display()
            )))
        }
    };
    let mut out = BTreeMap::new();
    for (i, order) in orders.into_iter().enumerate() {
        let at = format!("{}: order[{i}]", path.display());
        let value = serde_json::to_value(order).map_err(|e| bad(format!("{at}: {e}")))?;
        let Value::Object(order) = value else {
            return Err(bad(format!("{at}: expected a table")));
        };
        if let Some(key) = order.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(format!(
                "{at}: unknown key {key:?} (known: {})",
                KEYS.join(", ")
            )));
        }
        let name = match order.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(bad(format!("{at}: name is required (a non-empty string)"))),
        };
        if !order.get("cron").is_some_and(Value::is_string) {
            return Err(bad(format!("{at} ({name}): cron is required (a string)")));
        }
        if !order.get("task").is_some_and(Value::is_object) {
            return Err(bad(format!("{at} ({name}): task is required (a table)")));
        }
        if out.insert(name.clone(), order).is_some() {
            return Err(bad(format!("{at}: the name {name:?} is used twice")));
        }
    }
    Ok(out)
}

/// What applying `wanted` to the hub's `current` orders changes, by name.
fn plan(
    wanted: &BTreeMap<String, Map<String, Value>>,
    current: &BTreeMap<String, Map<String, Value>>,
    prune: bool,
) -> BTreeMap<String, Change> {
    let mut changes = BTreeMap::new();
    for (name, order) in wanted {
        let want = normalized(order);
        match current.get(name) {
            None => {
                changes.insert(name.clone(), Change::Create(want));
            }
            Some(have) => {
                let have = normalized(have);
                let differ: Vec<String> = KEYS
                    .iter()
                    .filter(|k| want.get(**k) != have.get(**k))
                    .map(|k| k.to_string())
                    .collect();
                if !differ.is_empty() {
                    changes.insert(name.clone(), Change::Update(want, differ));
                }
            }
        }
    }
    if prune {
        let named: BTreeSet<&String> = wanted.keys().collect();
        for name in current.keys().filter(|n| !named.contains(n)) {
            changes.insert(name.clone(), Change::Delete);
        }
    }
    changes
}

/// Runs `standing-orders apply`.
pub fn apply(file: &Path, prune: bool, dry_run: bool, hub: &str) -> Result<(), Fatal> {
    let wanted = read_file(file)?;
    let listed = accepted(hub_request(hub, "GET", "/api/standing-orders", None)?)?;
    let current: BTreeMap<String, Map<String, Value>> = listed["orders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["name"].as_str()?.to_string(), o.as_object()?.clone())))
        .collect();
    let changes = plan(&wanted, &current, prune);
    let kept = current.keys().filter(|n| !wanted.contains_key(*n)).count();
    if changes.is_empty() {
        println!(
            "no changes: {} orders as in {}",
            wanted.len(),
            file.display()
        );
    }
    for (name, change) in &changes {
        match change {
            Change::Create(_) => println!("+ create {name}"),
            Change::Update(_, differ) => println!("~ update {name}: {}", differ.join(", ")),
            Change::Delete => println!("- delete {name}"),
        }
    }
    if !prune && kept > 0 {
        println!("({kept} orders on the hub are not in the file; --prune deletes them)");
    }
    if dry_run || changes.is_empty() {
        return Ok(());
    }
    for (name, change) in changes {
        let path = format!("/api/standing-orders/{}", encode(&name));
        let answer = match change {
            Change::Create(order) => hub_request(
                hub,
                "POST",
                "/api/standing-orders",
                Some(Value::Object(order)),
            )?,
            Change::Update(mut order, _) => {
                order.remove("name");
                hub_request(hub, "PUT", &path, Some(Value::Object(order)))?
            }
            Change::Delete => hub_request(hub, "DELETE", &path, None)?,
        };
        accepted(answer).map_err(|f| Fatal {
            code: f.code,
            message: format!(
                "{name}: {} (the changes listed before it were applied)",
                f.message
            ),
        })?;
    }
    println!("applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_plan_creates_updates_and_prunes_and_defaults_count_as_given() {
        let wanted: BTreeMap<String, Map<String, Value>> = [
            (
                "a",
                json!({"name": "a", "cron": "* * * * *", "task": {"description": "x"}}),
            ),
            (
                "b",
                json!({"name": "b", "cron": "0 9 * * *", "task": {"description": "y"}}),
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), order(v)))
        .collect();
        let current: BTreeMap<String, Map<String, Value>> = [
            // As the hub lists it: defaults filled in, extra fields.
            (
                "a",
                json!({"name": "a", "cron": "* * * * *", "timezone": "UTC",
                         "capability": null, "agent": null, "task": {"description": "x"},
                         "window_ms": 900000, "enabled": true, "created_at": 1}),
            ),
            (
                "b",
                json!({"name": "b", "cron": "0 8 * * *", "timezone": "UTC",
                         "task": {"description": "y"}, "window_ms": 900000, "enabled": true}),
            ),
            (
                "old",
                json!({"name": "old", "cron": "0 0 * * *", "task": {}}),
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), order(v)))
        .collect();
        let p = plan(&wanted, &current, false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(matches!(&p["b"], Change::Update(_, d) if d == &["cron".to_string()]));
        let p = plan(&wanted, &current, true);
        assert_eq!(p.get("old"), Some(&Change::Delete));
        let p = plan(&wanted, &BTreeMap::new(), true);
        assert!(matches!(&p["a"], Change::Create(_)) && p.len() == 2);
    }
}
