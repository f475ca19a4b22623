//! Running the hub: metrics and telemetry, alerts, per-agent analytics, standing
//! orders, retention and logging.

pub(crate) mod alerts;
pub(crate) mod analytics;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod retention;
pub(crate) mod standing;
pub(crate) mod telemetry;
