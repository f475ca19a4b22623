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

/// Text safe inside HTML.
fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a browser finds at a standby's `/dashboard`: who leads, a link to
/// each hub's dashboard (`hub_urls`), and a reload every few seconds, so the
/// page becomes the dashboard once this hub takes over.
fn standby_page(leader: &str, hub_urls: &[String]) -> String {
    let links: String = hub_urls
        .iter()
        .map(|u| {
            let u = html_text(u.trim_end_matches('/'));
            format!("<li><a href=\"{u}/dashboard\">{u}</a></li>")
        })
        .collect();
    let hubs = if links.is_empty() {
        String::new()
    } else {
        format!("<p>The hubs of this database:</p><ul>{links}</ul>")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>AgentCom: standby hub</title></head><body data-role=\"standby\">\
         <h1>This hub is a standby</h1><p>Another hub holds the leader lease: <code>{}</code>. \
         This page reloads and becomes the dashboard if this hub takes over.</p>{hubs}</body></html>",
        html_text(leader)
    )
}

impl Standby {
    /// Binds `bind` and serves on a thread of its own; its `/dashboard` links
    /// to `hub_urls` (the hub config's list).
    pub fn start(bind: &str, hub_urls: Vec<String>) -> std::io::Result<Standby> {
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
                        let d = served.clone();
                        let urls = hub_urls.clone();
                        App::new()
                            .route(
                                "/dashboard",
                                web::get().to(move || {
                                    let page = standby_page(&d.get(), &urls);
                                    async move {
                                        HttpResponse::ServiceUnavailable()
                                            .content_type("text/html; charset=utf-8")
                                            .insert_header(("Cache-Control", "no-store"))
                                            .body(page)
                                    }
                                }),
                            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standby_page_links_every_hub_and_escapes_what_it_shows() {
        let page = standby_page(
            "<hub-a>#1 (epoch 3)",
            &["http://hub-a:4000/".into(), "http://hub-b:4000".into()],
        );
        assert!(page.contains("&lt;hub-a&gt;#1 (epoch 3)"), "{page}");
        assert!(!page.contains("<hub-a>"), "{page}");
        assert!(
            page.contains("<a href=\"http://hub-a:4000/dashboard\">"),
            "{page}"
        );
        assert!(
            page.contains("<a href=\"http://hub-b:4000/dashboard\">"),
            "{page}"
        );
        assert!(page.contains("http-equiv=\"refresh\""), "{page}");
        assert!(!standby_page("x", &[]).contains("<ul>"));
    }

    #[test]
    fn standby_metrics_read_the_leaders_epoch() {
        let text = standby_metrics("h:1#7 (epoch 12)", std::time::Duration::from_secs(2));
        assert!(text.contains("agentcom_hub_leader_epoch 12\n"), "{text}");
        assert!(
            text.contains("agentcom_hub_role{role=\"standby\"} 1\n"),
            "{text}"
        );
        assert!(!standby_metrics("unknown", std::time::Duration::ZERO).contains("epoch "));
    }
}
