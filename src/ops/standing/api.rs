//! The messages of `StandingOrders`: create, update, delete, list orders,
//! their runs, and the runs missed lately (for the alerts). Each change answers
//! after the flush that makes it durable.

use actix::prelude::*;

use super::*;

/// The fields of an order a caller sets (create: all that have no default).
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderFields {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    /// `Some(None)` clears the target.
    pub capability: Option<Option<String>>,
    pub agent: Option<Option<String>>,
    pub task: Option<Map<String, Value>>,
    pub window_ms: Option<u64>,
    pub enabled: Option<bool>,
}

/// Default window of an order that does not set one: 15 minutes.
pub const DEFAULT_WINDOW_MS: u64 = 15 * 60_000;
/// Time zone of an order that does not set one.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Create an order (`name` must be new).
#[derive(Message)]
#[rtype(result = "Result<Value, StandingError>")]
pub(crate) struct CreateOrder {
    pub name: String,
    pub fields: OrderFields,
    pub by: String,
}

impl StandingOrders {
    fn create(&mut self, msg: CreateOrder) -> Result<Value, StandingError> {
        if self.orders.contains_key(&msg.name) {
            return Err(StandingError::AlreadyExists(msg.name));
        }
        let now = (self.clock)();
        let f = msg.fields;
        let order = StandingOrder {
            name: msg.name.clone(),
            cron: f.cron.unwrap_or_default(),
            timezone: f.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.into()),
            capability: f.capability.flatten(),
            agent: f.agent.flatten(),
            task: f.task.unwrap_or_default(),
            window_ms: f.window_ms.unwrap_or(DEFAULT_WINDOW_MS),
            enabled: f.enabled.unwrap_or(true),
            created_at: now_ms(),
            updated_at: now_ms(),
            created_by: msg.by.clone(),
            // No runs for occurrences before the order existed.
            planned_through: now,
        };
        let schedule = check_order(&order).map_err(StandingError::Invalid)?;
        self.write_order(&order)?;
        self.event(
            "standing_order_created",
            &msg.by,
            None,
            json!({"order": order.name, "cron": order.cron, "timezone": order.timezone}),
        );
        let live = Live { order, schedule };
        let view = self.view(&live);
        self.orders.insert(msg.name, live);
        Ok(view)
    }
}

/// Change some fields of an order.
#[derive(Message)]
#[rtype(result = "Result<Value, StandingError>")]
pub(crate) struct UpdateOrder {
    pub name: String,
    pub fields: OrderFields,
    pub by: String,
}

impl StandingOrders {
    fn update(&mut self, msg: UpdateOrder) -> Result<Value, StandingError> {
        let Some(live) = self.orders.get(&msg.name) else {
            return Err(StandingError::NotFound(msg.name));
        };
        let mut order = live.order.clone();
        let f = msg.fields;
        let was_enabled = order.enabled;
        if let Some(v) = f.cron {
            order.cron = v;
        }
        if let Some(v) = f.timezone {
            order.timezone = v;
        }
        if let Some(v) = f.capability {
            order.capability = v;
        }
        if let Some(v) = f.agent {
            order.agent = v;
        }
        if let Some(v) = f.task {
            order.task = v;
        }
        if let Some(v) = f.window_ms {
            order.window_ms = v;
        }
        if let Some(v) = f.enabled {
            order.enabled = v;
        }
        if order.enabled && !was_enabled {
            // Occurrences while it was disabled were not wanted: no runs, no misses.
            order.planned_through = order.planned_through.max((self.clock)());
        }
        order.updated_at = now_ms();
        let schedule = check_order(&order).map_err(StandingError::Invalid)?;
        self.write_order(&order)?;
        self.event(
            "standing_order_updated",
            &msg.by,
            None,
            json!({"order": order.name, "cron": order.cron, "timezone": order.timezone,
                   "enabled": order.enabled}),
        );
        let live = Live { order, schedule };
        let view = self.view(&live);
        self.orders.insert(msg.name, live);
        Ok(view)
    }
}

/// Delete an order; its run history stays readable.
#[derive(Message)]
#[rtype(result = "Result<(), StandingError>")]
pub(crate) struct DeleteOrder {
    pub name: String,
    pub by: String,
}

impl StandingOrders {
    fn delete(&mut self, msg: DeleteOrder) -> Result<(), StandingError> {
        if !self.orders.contains_key(&msg.name) {
            return Err(StandingError::NotFound(msg.name));
        }
        self.store.standing_orders.remove(msg.name.as_bytes())?;
        self.event(
            "standing_order_deleted",
            &msg.by,
            None,
            json!({"order": msg.name}),
        );
        self.orders.remove(&msg.name);
        Ok(())
    }
}

impl StandingOrders {
    /// Replies once what the change wrote is durable (a refused change wrote
    /// nothing and is answered at once).
    fn reply_durable<T: 'static>(
        &self,
        result: Result<T, StandingError>,
    ) -> ResponseActFuture<Self, Result<T, StandingError>> {
        if result.is_err() {
            return Box::pin(fut::ready(result));
        }
        Box::pin(
            self.store
                .durable()
                .into_actor(self)
                .map(move |flushed, _, _| {
                    flushed.map_err(StandingError::Store)?;
                    result
                }),
        )
    }
}
impl Handler<CreateOrder> for StandingOrders {
    type Result = ResponseActFuture<Self, Result<Value, StandingError>>;

    fn handle(&mut self, msg: CreateOrder, _: &mut Context<Self>) -> Self::Result {
        let result = self.create(msg);
        self.reply_durable(result)
    }
}

impl Handler<UpdateOrder> for StandingOrders {
    type Result = ResponseActFuture<Self, Result<Value, StandingError>>;

    fn handle(&mut self, msg: UpdateOrder, _: &mut Context<Self>) -> Self::Result {
        let result = self.update(msg);
        self.reply_durable(result)
    }
}

impl Handler<DeleteOrder> for StandingOrders {
    type Result = ResponseActFuture<Self, Result<(), StandingError>>;

    fn handle(&mut self, msg: DeleteOrder, _: &mut Context<Self>) -> Self::Result {
        let result = self.delete(msg);
        self.reply_durable(result)
    }
}

/// Every order (`name` set: that one, or `NotFound`).
#[derive(Message)]
#[rtype(result = "Result<Vec<Value>, StandingError>")]
pub(crate) struct ListOrders {
    pub name: Option<String>,
}

impl Handler<ListOrders> for StandingOrders {
    type Result = Result<Vec<Value>, StandingError>;

    fn handle(&mut self, msg: ListOrders, _: &mut Context<Self>) -> Self::Result {
        match msg.name {
            Some(name) => match self.orders.get(&name) {
                Some(live) => Ok(vec![self.view(live)]),
                None => Err(StandingError::NotFound(name)),
            },
            None => Ok(self.orders.values().map(|l| self.view(l)).collect()),
        }
    }
}

/// The occurrences of an order scheduled in `[since, until]`, oldest first (at
/// most `limit`), each with its status. Known for orders deleted since, too.
#[derive(Message)]
#[rtype(result = "Result<Vec<StandingRun>, StandingError>")]
pub(crate) struct ListRuns {
    pub name: String,
    pub since: i64,
    pub until: i64,
    pub limit: usize,
}

impl Handler<ListRuns> for StandingOrders {
    type Result = Result<Vec<StandingRun>, StandingError>;

    fn handle(&mut self, msg: ListRuns, _: &mut Context<Self>) -> Self::Result {
        let start = Self::run_key(&msg.name, msg.since.max(0));
        let end = Self::run_key(&msg.name, msg.until.max(0));
        let mut runs = Vec::new();
        for item in self.store.standing_runs.range(start..=end) {
            let (key, value) = item?;
            if split_scoped_key(&key).is_none_or(|(scope, _)| scope != msg.name) {
                continue;
            }
            runs.push(decode::<StandingRun>("standing_runs", &key, &value)?);
            if runs.len() >= msg.limit {
                break;
            }
        }
        let known = self.orders.contains_key(&msg.name)
            || self
                .store
                .standing_runs
                .scan_prefix(scope_prefix(&msg.name))
                .next()
                .is_some();
        if !known {
            return Err(StandingError::NotFound(msg.name));
        }
        Ok(runs)
    }
}

/// Runs missed in the last hour of the order clock: (order, scheduled_for).
#[derive(Message)]
#[rtype(result = "Vec<(String, i64)>")]
pub(crate) struct RecentlyMissed;

impl Handler<RecentlyMissed> for StandingOrders {
    type Result = MessageResult<RecentlyMissed>;

    fn handle(&mut self, _: RecentlyMissed, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.missed
                .iter()
                .map(|(o, at, _)| (o.clone(), *at))
                .collect(),
        )
    }
}
