//! Running the hub: metrics and telemetry, alerts, per-agent analytics, standing
//! orders, retention and logging.

pub mod alerts;
pub mod analytics;
pub mod logging;
pub mod metrics;
pub mod retention;
pub mod standing;
pub mod telemetry;
