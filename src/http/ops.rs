//! Operator routes: the runtime log level.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{object_body, Admin};
use crate::error::ApiError;
use crate::logging::{self, LogError};
use crate::protocol::{Field, FieldError, Kind};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/log-level", web::get().to(get_level))
        .route("/api/admin/log-level", web::put().to(put_level));
}

fn unavailable(e: LogError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

async fn get_level(_: Admin) -> Result<HttpResponse, ApiError> {
    let level = logging::level().map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "level": level })))
}

const LEVEL_FIELDS: [Field; 1] = [Field {
    name: "level",
    kind: Kind::Str {
        max: 1024,
        non_empty: true,
    },
    required: true,
}];

/// `{"level": "debug"}` or a filter directive (`agentcom_hub=debug,actix_web=warn`):
/// in force at once, until the next change or restart.
async fn put_level(_: Admin, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let obj = object_body(&body, &LEVEL_FIELDS)?;
    let level = obj
        .get("level")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let previous = logging::level().map_err(unavailable)?;
    match logging::set_level(level) {
        Ok(()) => {
            tracing::warn!(level, previous = %previous, "log level changed");
            Ok(HttpResponse::Ok().json(json!({
                "status": "updated",
                "level": level,
                "previous": previous,
            })))
        }
        Err(LogError::InvalidLevel(_, reason)) => Err(ApiError::Validation(vec![FieldError::new(
            "level",
            "invalid_value",
            reason,
        )])),
        Err(e) => Err(unavailable(e)),
    }
}
