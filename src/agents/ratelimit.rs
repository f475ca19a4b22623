//! Rate limits (PROTOCOL.md section 5): a token bucket per caller, per transport,
//! per tier (light / normal / heavy, capacity one minute's worth), with per-agent
//! overrides and a whitelist that are set at runtime and persisted.
//!
//! The buckets are governor's GCRA limiters, one per (caller, transport, tier) that
//! has acted recently. A bucket left alone for a minute is full again, so `sweep`
//! drops those: memory stays bounded by the callers active in the last minutes.
//!
//! Architecture invariant: knows callers only as keys (an agent id, or `ip:<addr>`
//! for callers without a token) and actions only as tiers. It knows nothing of
//! sockets, actors or tasks; sessions and the HTTP middleware ask it, and the
//! session tells the agent's FSM when the agent is over its limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};

/// Where the overrides and the whitelist are kept in the `meta` tree.
const SETTINGS_KEY: &[u8] = b"rate_limits";
/// A warning goes out when fewer than this share of a bucket is left.
const WARN_BELOW: f64 = 0.2;
/// Largest per-minute limit an override may set.
pub(crate) const MAX_PER_MINUTE: u32 = 1_000_000;
/// Buckets idle this long are full again and are dropped by `sweep`.
const IDLE_BUCKET: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Tier {
    Light,
    Normal,
    Heavy,
}

impl Tier {
    pub(crate) fn parse(name: &str) -> Option<Tier> {
        match name {
            "light" => Some(Tier::Light),
            "normal" => Some(Tier::Normal),
            "heavy" => Some(Tier::Heavy),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tier::Light => "light",
            Tier::Normal => "normal",
            Tier::Heavy => "heavy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Transport {
    Ws,
    Http,
}

/// Actions per minute for each tier (also each bucket's capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Limits {
    pub light: u32,
    pub normal: u32,
    pub heavy: u32,
}

impl Limits {
    fn of(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Light => self.light,
            Tier::Normal => self.normal,
            Tier::Heavy => self.heavy,
        }
    }
}

/// An override: the tiers it sets replace the defaults for one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub(crate) struct Override {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 1_000_000))]
    pub light: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 1_000_000))]
    pub normal: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 1_000_000))]
    pub heavy: Option<u32>,
}

impl Override {
    fn apply(&self, base: Limits) -> Limits {
        Limits {
            light: self.light.unwrap_or(base.light),
            normal: self.normal.unwrap_or(base.normal),
            heavy: self.heavy.unwrap_or(base.heavy),
        }
    }
}

/// What the operator set at runtime; persisted as one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub overrides: BTreeMap<String, Override>,
    pub whitelist: BTreeSet<String>,
}

/// Sent before the reply when a bucket is nearly empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Warning {
    pub tier: Tier,
    pub remaining: u32,
    pub capacity: u32,
}

/// The verdict on one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed(Option<Warning>),
    /// Refused; the bucket has room again after `retry_after`.
    Denied {
        tier: Tier,
        retry_after: Duration,
    },
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Entry {
    bucket: Bucket,
    per_minute: u32,
    last_used: Instant,
}

struct State {
    settings: Settings,
    buckets: HashMap<(String, Transport, Tier), Entry>,
    /// Callers refused recently, with when their refusal ends (for views).
    limited: HashMap<String, Instant>,
}

/// The hub's rate limits; cheap to clone, shared by sessions and HTTP workers.
#[derive(Clone)]
pub(crate) struct RateLimits {
    enabled: bool,
    defaults: Limits,
    store: Store,
    clock: DefaultClock,
    state: Arc<Mutex<State>>,
}

impl RateLimits {
    /// Loads the persisted overrides and whitelist.
    pub(crate) fn load(
        store: Store,
        enabled: bool,
        defaults: Limits,
    ) -> Result<RateLimits, StoreError> {
        let settings = match store.meta.get(SETTINGS_KEY)? {
            Some(bytes) => decode("meta", SETTINGS_KEY, &bytes)?,
            None => Settings::default(),
        };
        Ok(RateLimits {
            enabled,
            defaults,
            store,
            clock: DefaultClock::default(),
            state: Arc::new(Mutex::new(State {
                settings,
                buckets: HashMap::new(),
                limited: HashMap::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends one action of `tier` for `key`.
    pub(crate) fn check(&self, key: &str, transport: Transport, tier: Tier) -> Decision {
        if !self.enabled {
            return Decision::Allowed(None);
        }
        let now = Instant::now();
        let mut state = self.lock();
        if state.settings.whitelist.contains(key) {
            return Decision::Allowed(None);
        }
        let limits = state
            .settings
            .overrides
            .get(key)
            .map_or(self.defaults, |o| o.apply(self.defaults));
        let per_minute = limits.of(tier).clamp(1, MAX_PER_MINUTE);
        let entry = state
            .buckets
            .entry((key.to_string(), transport, tier))
            .or_insert_with(|| new_entry(per_minute, &self.clock, now));
        if entry.per_minute != per_minute {
            // The limit changed at runtime: start the caller on the new one.
            *entry = new_entry(per_minute, &self.clock, now);
        }
        entry.last_used = now;
        match entry.bucket.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let warn = f64::from(remaining) < f64::from(per_minute) * WARN_BELOW;
                Decision::Allowed(warn.then_some(Warning {
                    tier,
                    remaining,
                    capacity: per_minute,
                }))
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                state.limited.insert(key.to_string(), now + retry_after);
                Decision::Denied { tier, retry_after }
            }
        }
    }

    /// Drops buckets idle long enough to be full again, and ended refusals.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .buckets
            .retain(|_, e| now.duration_since(e.last_used) < IDLE_BUCKET);
        state.limited.retain(|_, until| *until > now);
        state.buckets.len()
    }

    pub(crate) fn defaults(&self) -> Limits {
        self.defaults
    }

    pub(crate) fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Everything an operator sees: on or off, defaults, overrides, whitelist and
    /// who is limited now (milliseconds until each may act again).
    pub(crate) fn view(&self) -> serde_json::Value {
        let settings = self.settings();
        serde_json::json!({
            "enabled": self.enabled,
            "defaults": self.defaults,
            "overrides": settings.overrides,
            "whitelist": settings.whitelist,
            "limited": self.limited_now(),
        })
    }

    /// Callers refused in the last minutes, with milliseconds until they may act.
    pub(crate) fn limited_now(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        self.lock()
            .limited
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(k, until)| (k.clone(), duration_ms(until.duration_since(now))))
            .collect()
    }

    /// Sets (replaces) `agent_id`'s override and persists it.
    pub(crate) async fn set_override(&self, agent_id: &str, o: Override) -> Result<(), StoreError> {
        self.change(|s| {
            s.overrides.insert(agent_id.to_string(), o);
        })?;
        self.store.durable().await
    }

    /// Removes `agent_id`'s override; answers whether there was one.
    pub(crate) async fn remove_override(&self, agent_id: &str) -> Result<bool, StoreError> {
        let mut had = false;
        self.change(|s| had = s.overrides.remove(agent_id).is_some())?;
        self.store.durable().await?;
        Ok(had)
    }

    /// Replaces the whitelist and persists it.
    pub(crate) async fn set_whitelist(&self, keys: BTreeSet<String>) -> Result<(), StoreError> {
        self.change(|s| s.whitelist = keys)?;
        self.store.durable().await
    }

    /// Applies `edit` to the settings and writes them; on a failed write the
    /// in-memory settings stay as they were. The public setters wait for the
    /// flush that covers the write before they answer.
    fn change(&self, edit: impl FnOnce(&mut Settings)) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut next = state.settings.clone();
        edit(&mut next);
        self.store.meta.insert(SETTINGS_KEY, encode(&next))?;
        state.settings = next;
        Ok(())
    }
}

fn new_entry(per_minute: u32, clock: &DefaultClock, now: Instant) -> Entry {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Entry {
        bucket: RateLimiter::direct_with_clock(Quota::per_minute(n), clock.clone())
            .with_middleware::<StateInformationMiddleware>(),
        per_minute,
        last_used: now,
    }
}

/// Whole milliseconds, rounded up (a retry hint must never be early).
pub(crate) fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_micros().div_ceil(1000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(light: u32) -> Limits {
        Limits {
            light,
            normal: 60,
            heavy: 10,
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        (dir, store)
    }

    #[test]
    fn a_bucket_holds_one_minute_and_warns_under_a_fifth() {
        let (_dir, store) = open();
        let rl = RateLimits::load(store, true, limits(10)).expect("load");
        let mut warnings = Vec::new();
        for _ in 0..10 {
            match rl.check("a", Transport::Ws, Tier::Light) {
                Decision::Allowed(w) => warnings.push(w.map(|w| w.remaining)),
                d => panic!("refused early: {d:?}"),
            }
        }
        // 10 per minute: warned once 1 or 0 are left (under 20 % of 10).
        assert_eq!(&warnings[..8], &[None; 8]);
        assert_eq!(&warnings[8..], &[Some(1), Some(0)]);
        match rl.check("a", Transport::Ws, Tier::Light) {
            Decision::Denied { tier, retry_after } => {
                assert_eq!(tier, Tier::Light);
                assert!(
                    retry_after > Duration::from_secs(1) && retry_after <= Duration::from_secs(6)
                );
            }
            d => panic!("expected a refusal, got {d:?}"),
        }
        assert!(rl.limited_now().contains_key("a"));
        // Other keys, transports and tiers have their own buckets.
        assert!(matches!(
            rl.check("b", Transport::Ws, Tier::Light),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            rl.check("a", Transport::Http, Tier::Light),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            rl.check("a", Transport::Ws, Tier::Normal),
            Decision::Allowed(_)
        ));
    }

    #[actix_rt::test]
    async fn whitelist_and_overrides_apply_at_once_and_are_stored() {
        let (_dir, store) = open();
        let rl = RateLimits::load(store.clone(), true, limits(100)).expect("load");
        rl.set_override(
            "slow",
            Override {
                light: Some(2),
                ..Override::default()
            },
        )
        .await
        .expect("override");
        rl.set_whitelist(["vip".to_string()].into_iter().collect())
            .await
            .expect("whitelist");
        for _ in 0..2 {
            assert!(matches!(
                rl.check("slow", Transport::Ws, Tier::Light),
                Decision::Allowed(_)
            ));
        }
        assert!(matches!(
            rl.check("slow", Transport::Ws, Tier::Light),
            Decision::Denied { .. }
        ));
        for _ in 0..500 {
            assert_eq!(
                rl.check("vip", Transport::Ws, Tier::Heavy),
                Decision::Allowed(None)
            );
        }
        // A second load reads what the first wrote (restarts: tests/rate_limits.rs).
        let rl = RateLimits::load(store, true, limits(100)).expect("reload");
        let s = rl.settings();
        assert_eq!(s.overrides["slow"].light, Some(2));
        assert!(s.whitelist.contains("vip"));
        assert!(rl.remove_override("slow").await.expect("remove"));
        assert!(!rl.remove_override("slow").await.expect("remove again"));
    }

    #[test]
    fn sweep_forgets_idle_buckets_only() {
        let (_dir, store) = open();
        let rl = RateLimits::load(store, true, limits(100)).expect("load");
        for i in 0..50 {
            rl.check(&format!("agent-{i}"), Transport::Ws, Tier::Light);
        }
        assert_eq!(rl.sweep(), 50, "recent buckets stay");
        {
            let mut state = rl.lock();
            for e in state.buckets.values_mut() {
                e.last_used -= IDLE_BUCKET;
            }
        }
        assert_eq!(rl.sweep(), 0, "idle buckets go");
    }

    #[test]
    fn disabled_limits_allow_everything() {
        let (_dir, store) = open();
        let rl = RateLimits::load(store, false, limits(1)).expect("load");
        for _ in 0..100 {
            assert_eq!(
                rl.check("a", Transport::Http, Tier::Heavy),
                Decision::Allowed(None)
            );
        }
    }
}
