//! Serving: binds the address, runs the HTTP server over the actors `hub` started,
//! and on SIGTERM or SIGINT stops it and seals the store.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::hub::start_actors;
use crate::queue::StopAndCheckpoint;
use crate::storage::backup::{RecoveryEvent, StorageMaintenance};
use crate::storage::store::Store;
use crate::web::http;

/// Largest HTTP body accepted (a full batch of long tasks fits).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_stop_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = actix_rt::signal::ctrl_c().await;
        }
    }
}

/// Serves until the process is told to stop. `recoveries` is what start-up recovery
/// did (for storage health); `on_listening` gets the bound address.
pub async fn serve(
    config: Config,
    store: Store,
    recoveries: Vec<RecoveryEvent>,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let addr = config
        .bind_addr()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    // Bound before any actor starts: a busy port fails the start cleanly.
    let listener = std::net::TcpListener::bind(addr)?;
    let state = start_actors(config.clone(), store.clone())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    state.storage.record_recoveries(recoveries);
    StorageMaintenance::new(state.storage.clone()).start();
    let stopping = state.stopping.clone();
    let queue = state.queue.clone();
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(http::limit_requests))
            .wrap(ErrorHandlers::new().default_handler(http::json_errors))
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(http::routes)
            .default_service(web::to(http::not_found))
    })
    .workers(2)
    // Frames and responses are small. The write buffer only fills up on a slow
    // socket, and what it once held stays resident: a burst of pushes (a fleet
    // connecting at once) would leave every connection holding 8+ KiB. Past 2 KiB
    // the socket is written before more frames are taken.
    .h1_write_buffer_size(2 * 1024)
    // Frames are small and latency matters: no Nagle delay on agent sockets.
    .tcp_nodelay(true)
    // Open agent sockets must not hold a stop (SIGTERM) for long.
    .shutdown_timeout(3)
    .listen(listener)?;
    if let Some(bound) = server.addrs().first() {
        on_listening(*bound);
    }
    let server = server.disable_signals().run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        wait_for_stop_signal().await;
        // A stop is not a disconnect: agents keep their tasks across a restart and
        // recover them when they reconnect (their leases still run).
        stopping.set();
        tracing::info!("stopping: agent tasks stay assigned for recovery");
        handle.stop(true).await;
    });
    let result = server.await;
    // The queue's last write: what it holds, so the next start reads little.
    match queue.send(StopAndCheckpoint).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "queue checkpoint not written"),
        Err(e) => tracing::warn!(error = %e, "queue checkpoint not written"),
    }
    // Durable (with Postgres: committed) before the seal.
    if let Err(e) = store.durable().await {
        tracing::error!(error = %e, "final flush failed");
    }
    // Sealed, the next start can tell whether the store lost anything meanwhile.
    match store.seal_and_close() {
        Ok(seal) => tracing::info!(records = seal.records, "store sealed and closed"),
        Err(e) => tracing::error!(error = %e, "final flush and seal failed"),
    }
    // With Postgres, a standby takes over at once.
    let _ = store.release_lease().await;
    result
}
