//! A standby's HTTP (ext, #22): while another hub holds the Postgres leader
//! lease, this hub listens on its address and answers `GET /health` with its
//! role and the leader (503, so a load balancer sends nothing here), and
//! `GET /metrics` with its role (Prometheus text, no token: nothing more
//! than `/health` says), and every other request with 503
//! `{"error":"standby","leader"}`: clients with
//! several hub URLs move on to the next. Once this hub holds the lease the
//! standby server stops and the hub's own server binds the same address.
//!
//! Architecture invariant: knows no actor and no store; only what the lease
//! loop tells it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

/// The standby's view of who leads.
#[derive(Clone, Default)]
struct Leader(Arc<Mutex<String>>);

impl Leader {
    fn get(&self) -> String {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running standby server.
pub struct Standby {
    leader: Leader,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn body(leader: &str) -> serde_json::Value {
    json!({"error": "standby", "status": "standby", "role": "standby", "service": "agent_com", "leader": leader,
           "hint": "another hub holds the leader lease: use it (this one takes over if it stops)"})
}

/// A standby's `/metrics` (no token: it tells only what `/health` tells):
/// its role, the leader's epoch as the lease row says, how long it waited.
fn standby_metrics(leader: &str, waited: std::time::Duration) -> String {
    let epoch = leader
        .rsplit_once("(epoch ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse::<i64>().ok());
    crate::ops::metrics::role_metrics("standby", epoch, Some(waited.as_secs_f64()))
}

impl Standby {
    /// Binds `bind` and serves on a thread of its own.
    pub fn start(bind: &str) -> std::io::Result<Standby> {
        let leader = Leader::default();
        let listener = std::net::TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = leader.clone();
        let started = std::time::Instant::now();
        let thread = std::thread::Builder::new()
            .name("standby-http".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                let result = system.block_on(async move {
                    let server = HttpServer::new(move || {
                        let l = served.clone();
                        let m = served.clone();
                        App::new()
                            .route(
                                "/metrics",
                                web::get().to(move || {
                                    let text = standby_metrics(&m.get(), started.elapsed());
                                    async move {
                                        HttpResponse::Ok()
                                            .content_type("text/plain; version=0.0.4")
                                            .body(text)
                                    }
                                }),
                            )
                            .default_service(web::to(move || {
                                let leader = l.get();
                                async move {
                                    HttpResponse::ServiceUnavailable()
                                        .insert_header(("Access-Control-Allow-Origin", "*"))
                                        .json(body(&leader))
                                }
                            }))
                    })
                    .workers(1)
                    .disable_signals()
                    .listen(listener)?
                    .run();
                    let handle = server.handle();
                    actix_web::rt::spawn(async move {
                        let _ = rx.await;
                        handle.stop(false).await;
                    });
                    server.await
                });
                if let Err(e) = result {
                    tracing::error!(error = %e, "standby server failed");
                }
            })?;
        Ok(Standby {
            leader,
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the hub binds it again once it leads).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Who leads now (the lease loop tells).
    pub fn set_leader(&self, leader: &str) {
        if let Ok(mut l) = self.leader.0.lock() {
            *l = leader.to_string();
        }
    }

    /// Stops serving and lets the address go.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
