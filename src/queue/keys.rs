//! Concurrency keys (ext, #19): a task may carry `concurrency_key`; an operator
//! caps how many tasks of a key run at once (`PUT /api/admin/concurrency/:key`).
//! While a key is at its limit the scheduler keeps its queued tasks back (the
//! hold `key:<key>`); the next one is served the moment one of its tasks leaves
//! `assigned`. Limits are kept in `meta`; running counts are rebuilt from the
//! assigned tasks at start.

use std::collections::BTreeMap;

use crate::domain::matching::HoldId;
use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};

/// Where the limits are kept in `meta`.
const LIMITS_KEY: &str = "queue_concurrency_limits";

/// The scheduler's name of a key's hold.
pub(super) fn hold_of(key: &str) -> HoldId {
    format!("key:{key}").into()
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct ConcurrencyKeys {
    limits: BTreeMap<String, u32>,
    running: BTreeMap<String, u32>,
    /// Holds taken (`true`) and released, in order, for the scheduler.
    pub(super) changes: Vec<(HoldId, bool)>,
}

impl ConcurrencyKeys {
    /// The limits as stored (none when nothing is stored); nothing running.
    pub(super) fn load(store: &Store) -> Result<ConcurrencyKeys, StoreError> {
        let mut keys = ConcurrencyKeys::default();
        if let Some(v) = store.meta.get(LIMITS_KEY)? {
            keys.limits = decode("meta", LIMITS_KEY.as_bytes(), &v)?;
        }
        Ok(keys)
    }

    /// Writes the limits (made durable by the caller's flush).
    pub(super) fn save(&self, store: &Store) -> Result<(), StoreError> {
        store.meta.insert(LIMITS_KEY, encode(&self.limits))?;
        Ok(())
    }

    fn full(&self, key: &str) -> bool {
        self.limits
            .get(key)
            .is_some_and(|limit| self.running.get(key).copied().unwrap_or(0) >= *limit)
    }

    /// Whether a task of `key` may start now.
    pub(super) fn admits(&self, key: Option<&str>) -> bool {
        key.is_none_or(|k| !self.full(k))
    }

    /// A task of `key` started.
    pub(super) fn started(&mut self, key: &str) {
        let was = self.full(key);
        *self.running.entry(key.to_string()).or_default() += 1;
        if !was && self.full(key) {
            self.changes.push((hold_of(key), true));
        }
    }

    /// A task of `key` stopped running.
    pub(super) fn stopped(&mut self, key: &str) {
        let was = self.full(key);
        if let Some(n) = self.running.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(key);
            }
        }
        if was && !self.full(key) {
            self.changes.push((hold_of(key), false));
        }
    }

    /// Sets (or with `None` removes) `key`'s limit; answers the previous one.
    pub(super) fn set_limit(&mut self, key: &str, limit: Option<u32>) -> Option<u32> {
        let was = self.full(key);
        let previous = match limit {
            Some(l) => self.limits.insert(key.to_string(), l),
            None => self.limits.remove(key),
        };
        let now = self.full(key);
        if was != now {
            self.changes.push((hold_of(key), now));
        }
        previous
    }

    /// Every key with a limit or a running task: (key, limit, running).
    pub(super) fn list(&self) -> Vec<(String, Option<u32>, u32)> {
        let mut keys: Vec<&String> = self.limits.keys().chain(self.running.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                (
                    k.clone(),
                    self.limits.get(k).copied(),
                    self.running.get(k).copied().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The holds of every key at its limit (what the scheduler must know at
    /// start).
    pub(super) fn held(&self) -> Vec<HoldId> {
        self.limits
            .keys()
            .filter(|k| self.full(k))
            .map(|k| hold_of(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_at_its_limit_and_released_below_it() {
        let mut k = ConcurrencyKeys::default();
        assert!(k.set_limit("web", Some(2)).is_none());
        k.started("web");
        assert!(k.admits(Some("web")));
        k.started("web");
        assert!(!k.admits(Some("web")));
        assert!(k.admits(Some("cli")) && k.admits(None));
        assert_eq!(k.changes, vec![(hold_of("web"), true)]);
        k.stopped("web");
        assert_eq!(k.changes.last(), Some(&(hold_of("web"), false)));
        k.started("web");
        // Raising the limit releases at once; removing it too.
        assert_eq!(k.set_limit("web", Some(5)), Some(2));
        assert_eq!(k.changes.last(), Some(&(hold_of("web"), false)));
        assert_eq!(k.list(), vec![("web".to_string(), Some(5), 2)]);
        k.set_limit("web", Some(1));
        assert_eq!(k.held(), vec![hold_of("web")]);
        k.set_limit("web", None);
        assert!(k.held().is_empty());
    }
}
