//! Direct reservations in the queue: how they are stored (one record each in
//! `meta`, under `reservation/<id>`, written in the flush that answers the
//! request), loaded at start, expired by the sweep, and what a released claim
//! sets off (a reservation that ended is deleted and `scope_released`
//! recorded; the holds it released reach the scheduler with the flush).
//!
//! The claim table itself is `scopes::Scopes`; the messages are
//! `api/reserve.rs`.

use serde_json::{json, Value};

use super::scopes::Freed;
use super::TaskQueue;
use crate::domain::scopes::Scope;
use crate::error::StoreError;
use crate::protocol::Reservation;
use crate::storage::bus::HubEvent;
use crate::storage::eventlog::NewEvent;
use crate::storage::store::{decode, encode};

/// Where reservations are kept in `meta`.
const PREFIX: &str = "reservation/";

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

impl TaskQueue {
    /// Puts the stored reservations back (start and restart); lapsed ones are
    /// deleted. A record that cannot be read is reported and left in place.
    pub(super) fn load_reservations(&mut self, now: i64) -> Result<(), StoreError> {
        let mut lapsed = Vec::new();
        for item in self.store.meta.scan_prefix(PREFIX) {
            let (k, v) = item?;
            let r: Reservation = match decode("meta", &k, &v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable reservation");
                    continue;
                }
            };
            if r.expires_at <= now {
                lapsed.push(r.reservation_id);
                continue;
            }
            let paths = Scope::parse(&r.paths).unwrap_or_else(|e| {
                tracing::error!(reservation_id = %r.reservation_id, error = %e, "stored reservation does not compile; it covers everything");
                Scope::everything()
            });
            self.scopes.restore(r, paths);
        }
        for id in lapsed {
            self.store.meta.remove(key(&id))?;
        }
        Ok(())
    }

    /// Writes a reservation (made durable by the caller's flush).
    pub(super) fn save_reservation(&self, r: &Reservation) -> Result<(), StoreError> {
        self.store.meta.insert(key(&r.reservation_id), encode(r))?;
        Ok(())
    }

    /// What a released claim sets off: each reservation that ended is deleted
    /// and recorded (`reason`: `released`, `expired`, `task_ended`).
    pub(super) fn apply_freed(&mut self, freed: Freed, reason: &str, actor: &str, now: i64) {
        let changed = !freed.ended.is_empty();
        for r in freed.ended {
            if let Err(e) = self.store.meta.remove(key(&r.reservation_id)) {
                tracing::error!(reservation_id = %r.reservation_id, error = %e, "reservation not deleted");
            }
            self.record_scope(
                "scope_released",
                &r,
                actor,
                json!({"reservation_id": r.reservation_id, "reason": reason}),
                now,
            );
        }
        if changed {
            self.announce_claims(now);
        }
    }

    /// The sweep: reservations whose time is up are released.
    pub(super) fn expire_reservations(&mut self, now: i64) {
        if self.scopes.next_expiry().is_none_or(|at| at > now) {
            return;
        }
        let freed = self.scopes.expire(now);
        for r in &freed.ended {
            tracing::info!(reservation_id = %r.reservation_id, holder = %r.holder, "reservation expired");
        }
        self.apply_freed(freed, "expired", "hub", now);
    }

    /// One reservation decision in the event log.
    pub(super) fn record_scope(
        &self,
        kind: &str,
        r: &Reservation,
        actor: &str,
        details: Value,
        now: i64,
    ) {
        let task_seq = r
            .task_id
            .as_deref()
            .and_then(|t| self.index.ids.get(t).copied());
        let mut details = details;
        details["repo"] = json!(r.repo);
        details["paths"] = json!(r.paths);
        details["mode"] = json!(r.mode.as_str());
        let event = NewEvent {
            ts: now,
            kind: kind.into(),
            task_id: r.task_id.clone(),
            task_seq,
            agent_id: Some(r.holder.clone()),
            actor: actor.to_string(),
            details,
        };
        if let Err(e) = self.log.append(vec![event]) {
            tracing::error!(kind, error = %e, "reservation event not recorded");
        }
    }

    /// The claims changed: the dashboard gets the new list (built only while
    /// someone watches).
    pub(super) fn announce_claims(&mut self, now: i64) {
        if self.peers.bus.watched() {
            let reservations = self.scopes.listing(now);
            self.outbox
                .push_event(HubEvent::Reservations { reservations });
        }
    }
}
