//! Storage admin routes: on-demand backup and compaction, storage health, and the
//! restore refusal (a restore replaces the store, so it needs a stopped hub).
//!
//! Architecture invariant: handlers only hand work to `backup::Maintenance` on the
//! blocking pool; they never touch sled or backup files themselves.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Admin, Watch};
use crate::error::ApiError;
use crate::hub::HubState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/backup", web::post().to(backup))
        .route("/api/admin/storage-health", web::get().to(storage_health))
        // The v1.1 (Elixir/DETS) name of the same report.
        .route("/api/admin/dets-health", web::get().to(storage_health))
        .route("/api/admin/compact", web::post().to(compact))
        .route("/api/admin/restore", web::post().to(restore));
}

fn blocking_failed(e: actix_web::error::BlockingError) -> ApiError {
    ApiError::Unavailable(format!("storage job did not run: {e}"))
}

/// `POST /api/admin/backup`: writes a backup now (waits for a running one).
async fn backup(_admin: Admin, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let keeper = state.storage.clone();
    let summary = web::block(move || keeper.backup_now("on_demand"))
        .await
        .map_err(blocking_failed)??;
    Ok(HttpResponse::Created().json(json!({
        "status": "complete",
        "path": summary.path,
        "size_bytes": summary.size_bytes,
        "sha256": summary.sha256,
        "created_at": summary.created_at,
        "records": summary.records,
        "format_version": summary.format_version,
    })))
}

/// `POST /api/admin/compact`: compacts the live store now; the hub keeps serving
/// (requests wait while the store is copied and swapped).
async fn compact(_admin: Admin, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let keeper = state.storage.clone();
    let report = web::block(move || keeper.compact_now("on_demand"))
        .await
        .map_err(blocking_failed)??;
    let mut body = json!(report);
    body["status"] = json!("complete");
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/admin/storage-health` (alias `/api/admin/dets-health`).
async fn storage_health(
    _watch: Watch,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let keeper = state.storage.clone();
    let health = web::block(move || keeper.health())
        .await
        .map_err(blocking_failed)?;
    Ok(HttpResponse::Ok().json(health))
}

/// `POST /api/admin/restore`: refused while the hub runs. Swapping the store under
/// the running actors would leave their in-memory state (queue indexes, leases,
/// presence) describing data that no longer exists; a restore is an offline step.
async fn restore(_admin: Admin) -> Result<HttpResponse, ApiError> {
    Err(ApiError::HubRunning {
        hint: "stop the hub and run agentcom-hub restore FILE",
    })
}
