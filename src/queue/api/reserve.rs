//! Direct reservations of repository paths (ext, PROTOCOL.md 6.21), by agents
//! and operators.
//!
//! | message | sent by | answer |
//! |---|---|---|
//! | [`Reserve`] | `AgentSession` (`scope_reserve`), `POST /api/reservations` | granted, or who holds the overlap; after the flush |
//! | [`RenewReservation`] | `scope_renew`, `POST /api/reservations/:id/renew` | the reservation with its new expiry, after the flush |
//! | [`ReleaseReservation`] | `scope_release`, `DELETE /api/reservations/:id` | the released reservation, after the flush |
//! | [`ListReservations`] | `GET /api/reservations`, the dashboard's snapshot | every live claim |
//!
//! A reservation is granted only when no live claim (a running task's scope or
//! another reservation) conflicts; queued tasks it conflicts with wait for it.

use actix::prelude::*;
use rand::Rng;
use serde_json::{json, Value};

use crate::domain::scopes::Scope;
use crate::protocol::{
    FieldError, Reservation, ReserveRequest, ScopeHolderInfo, MAX_RESERVATIONS_PER_HOLDER,
};
use crate::queue::{QueueError, TaskQueue};
use crate::util::now_ms;

/// Who asks: an agent (it holds what it reserves, and may renew or release
/// only its own) or an operator (the admin token: may act for anyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserver {
    Agent(String),
    /// `holder`: the agent an operator reserves for (`admin` when none).
    Operator {
        holder: Option<String>,
    },
}

impl Reserver {
    fn actor(&self) -> &str {
        match self {
            Reserver::Agent(id) => id,
            Reserver::Operator { .. } => "admin",
        }
    }

    /// Whether it may renew or release `r`.
    fn may_change(&self, r: &Reservation) -> bool {
        match self {
            Reserver::Agent(id) => *id == r.holder,
            Reserver::Operator { .. } => true,
        }
    }
}

/// What a reservation request got.
#[derive(Debug, Clone)]
pub(crate) enum ReserveOutcome {
    Granted(Reservation),
    /// Nothing was reserved: this holds an overlapping claim.
    Conflict(ScopeHolderInfo),
}

/// Reserve paths of a repository.
#[derive(Message)]
#[rtype(result = "Result<ReserveOutcome, QueueError>")]
pub(crate) struct Reserve {
    pub request: ReserveRequest,
    pub by: Reserver,
}

impl Handler<Reserve> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<ReserveOutcome, QueueError>>;

    fn handle(&mut self, msg: Reserve, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.reserve(msg.request, &msg.by);
            this.after_flush(result)
        })
    }
}

/// Move a reservation's expiry to `ttl_ms` from now.
#[derive(Message)]
#[rtype(result = "Result<Reservation, QueueError>")]
pub(crate) struct RenewReservation {
    pub reservation_id: String,
    pub ttl_ms: u64,
    pub by: Reserver,
}

impl Handler<RenewReservation> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Reservation, QueueError>>;

    fn handle(&mut self, msg: RenewReservation, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.renew_reservation(&msg);
            this.after_flush(result)
        })
    }
}

/// Release a reservation.
#[derive(Message)]
#[rtype(result = "Result<Reservation, QueueError>")]
pub(crate) struct ReleaseReservation {
    pub reservation_id: String,
    pub by: Reserver,
}

impl Handler<ReleaseReservation> for TaskQueue {
    type Result = ResponseActFuture<Self, Result<Reservation, QueueError>>;

    fn handle(&mut self, msg: ReleaseReservation, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| -> Self::Result {
            let result = this.release_reservation(&msg);
            this.after_flush(result)
        })
    }
}

/// Every live claim (direct reservations and running tasks' scopes), by
/// repository; only `repo`'s when named.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub(crate) struct ListReservations {
    pub repo: Option<String>,
}

impl Handler<ListReservations> for TaskQueue {
    type Result = MessageResult<ListReservations>;

    fn handle(&mut self, msg: ListReservations, ctx: &mut Context<Self>) -> Self::Result {
        self.contained(ctx, move |this| {
            let mut all = this.scopes.listing(now_ms());
            if let Some(repo) = &msg.repo {
                all.retain(|c| c["repo"].as_str() == Some(repo));
            }
            MessageResult(all)
        })
    }
}

impl TaskQueue {
    fn reserve(
        &mut self,
        req: ReserveRequest,
        by: &Reserver,
    ) -> Result<ReserveOutcome, QueueError> {
        self.writable()?;
        let now = now_ms();
        let paths = Scope::parse(&req.paths).map_err(|e| {
            QueueError::Invalid(vec![FieldError::new(
                "paths",
                "invalid_glob",
                e.to_string(),
            )])
        })?;
        let holder = match (&req.task_id, by) {
            (Some(task_id), _) => {
                let holder = self
                    .index
                    .whole(task_id)
                    .filter(|t| t.status.is_held())
                    .and_then(|t| t.assigned_to.clone());
                match (holder, by) {
                    (Some(h), Reserver::Agent(me)) if h == *me => h,
                    (Some(h), Reserver::Operator { .. }) => h,
                    _ => return Err(QueueError::Reservation("task_not_held")),
                }
            }
            (None, Reserver::Agent(me)) => me.clone(),
            (None, Reserver::Operator { holder }) => {
                holder.clone().unwrap_or_else(|| "admin".into())
            }
        };
        if self.scopes.reservations_of(&holder, now) >= MAX_RESERVATIONS_PER_HOLDER {
            return Err(QueueError::Reservation("too_many_reservations"));
        }
        let reservation = Reservation {
            reservation_id: format!("res-{:016x}", rand::thread_rng().gen::<u64>()),
            repo: req.repo,
            paths: req.paths,
            mode: req.mode,
            holder,
            task_id: req.task_id,
            granted_at: now,
            expires_at: now.saturating_add(i64::try_from(req.ttl_ms).unwrap_or(i64::MAX)),
        };
        if let Err(held) = self.scopes.reserve(reservation.clone(), paths, now) {
            let details = json!({"holder": held});
            self.record_scope("scope_conflict", &reservation, by.actor(), details, now);
            return Ok(ReserveOutcome::Conflict(held));
        }
        if let Err(e) = self.save_reservation(&reservation) {
            self.scopes.release_reservation(&reservation.reservation_id);
            return Err(QueueError::Store(e));
        }
        let details = json!({
            "reservation_id": reservation.reservation_id,
            "expires_at": reservation.expires_at,
        });
        self.record_scope("scope_granted", &reservation, by.actor(), details, now);
        self.announce_claims(now);
        tracing::info!(reservation_id = %reservation.reservation_id, holder = %reservation.holder, repo = %reservation.repo, "paths reserved");
        Ok(ReserveOutcome::Granted(reservation))
    }

    fn own_reservation(
        &self,
        id: &str,
        by: &Reserver,
        now: i64,
    ) -> Result<Reservation, QueueError> {
        let r = self
            .scopes
            .reservation(id, now)
            .ok_or(QueueError::Reservation("reservation_not_found"))?;
        if !by.may_change(r) {
            return Err(QueueError::Reservation("not_holder"));
        }
        Ok(r.clone())
    }

    fn renew_reservation(&mut self, msg: &RenewReservation) -> Result<Reservation, QueueError> {
        self.writable()?;
        let now = now_ms();
        let before = self.own_reservation(&msg.reservation_id, &msg.by, now)?;
        let expires_at = now.saturating_add(i64::try_from(msg.ttl_ms).unwrap_or(i64::MAX));
        let renewed = self
            .scopes
            .renew(&msg.reservation_id, expires_at, now)
            .ok_or(QueueError::Reservation("reservation_not_found"))?;
        if let Err(e) = self.save_reservation(&renewed) {
            self.scopes
                .renew(&msg.reservation_id, before.expires_at, now);
            return Err(QueueError::Store(e));
        }
        let details = json!({
            "reservation_id": renewed.reservation_id,
            "expires_at": renewed.expires_at,
        });
        self.record_scope("scope_renewed", &renewed, msg.by.actor(), details, now);
        self.announce_claims(now);
        Ok(renewed)
    }

    fn release_reservation(&mut self, msg: &ReleaseReservation) -> Result<Reservation, QueueError> {
        self.writable()?;
        let now = now_ms();
        let r = self.own_reservation(&msg.reservation_id, &msg.by, now)?;
        let freed = self.scopes.release_reservation(&msg.reservation_id);
        self.apply_freed(freed, "released", msg.by.actor(), now);
        tracing::info!(reservation_id = %r.reservation_id, by = msg.by.actor(), "reservation released");
        Ok(r)
    }
}
