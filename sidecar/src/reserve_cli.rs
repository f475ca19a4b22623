//! `agentcom-sidecar scope reserve | renew | release | list`: direct
//! reservations of repository paths with this agent's token (PROTOCOL.md 6.21).
//!
//! Each prints the hub's JSON answer on stdout. Exit codes: 0 granted or done;
//! 3 a conflict (the answer names the holder); 2 a request the hub refused as
//! invalid; 1 the hub unreachable or any other refusal. Run inside a woken task,
//! `reserve` ties the reservation to that task (`$TASK_ID`) so it is released
//! with it, unless `--no-task`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::{fatal, http, load_config, Fatal};

/// A path segment or query value, percent-encoded.
fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Subcommand)]
pub enum ScopeCmd {
    /// Reserve paths of a repository (exclusive unless --shared).
    Reserve {
        #[arg(long)]
        repo: String,
        /// A gitignore-style glob relative to the repository root; repeatable.
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// Others may read the paths too; nobody may write them.
        #[arg(long)]
        shared: bool,
        /// How long it holds (ms; default 10 minutes, at most a day).
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// The running task it is for [default: $TASK_ID].
        #[arg(long, conflicts_with = "no_task")]
        task_id: Option<String>,
        /// Not tied to the current task.
        #[arg(long)]
        no_task: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Move a reservation's expiry to --ttl-ms from now.
    Renew {
        reservation_id: String,
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Release a reservation.
    Release {
        reservation_id: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Every live claim: reservations and running tasks' scopes.
    List {
        #[arg(long)]
        repo: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: ScopeCmd) -> Result<(), Fatal> {
    let (config, method, path, body) = match cmd {
        ScopeCmd::Reserve {
            repo,
            paths,
            shared,
            ttl_ms,
            task_id,
            no_task,
            config,
        } => {
            let mut body = json!({
                "repo": repo,
                "paths": paths,
                "mode": if shared { "shared" } else { "exclusive" },
            });
            if let Some(t) = ttl_ms {
                body["ttl_ms"] = json!(t);
            }
            let task = task_id.or_else(|| {
                (!no_task)
                    .then(|| std::env::var("TASK_ID").ok())
                    .flatten()
                    .filter(|t| !t.is_empty())
            });
            if let Some(t) = task {
                body["task_id"] = json!(t);
            }
            (config, "POST", "/api/reservations".to_string(), Some(body))
        }
        ScopeCmd::Renew {
            reservation_id,
            ttl_ms,
            config,
        } => {
            let body = ttl_ms.map_or_else(|| json!({}), |t| json!({"ttl_ms": t}));
            let path = format!(
                "/api/reservations/{}/renew",
                encode_segment(&reservation_id)
            );
            (config, "POST", path, Some(body))
        }
        ScopeCmd::Release {
            reservation_id,
            config,
        } => {
            let path = format!("/api/reservations/{}", encode_segment(&reservation_id));
            (config, "DELETE", path, None)
        }
        ScopeCmd::List { repo, config } => {
            let path = match repo {
                Some(r) => format!("/api/reservations?repo={}", encode_segment(&r)),
                None => "/api/reservations".to_string(),
            };
            (config, "GET", path, None)
        }
    };
    let cfg = load_config(config)?;
    let (status, resp): (u16, Value) = http::to_hub(
        &cfg.hub_api_urls,
        method,
        &path,
        Some(&cfg.token),
        body.as_ref(),
    )
    .map_err(|e| fatal(1, format!("cannot reach the hub: {e}")))?;
    println!("{resp}");
    match status {
        200 | 201 => Ok(()),
        409 if resp["error"] == "scope_conflict" => Err(fatal(
            3,
            format!(
                "held by {} ({})",
                resp["holder"]["agent_id"].as_str().unwrap_or("?"),
                resp["holder"]["paths"]
            ),
        )),
        400 | 422 => Err(fatal(
            2,
            format!("the hub refused the request (HTTP {status})"),
        )),
        _ => Err(fatal(
            1,
            format!("the hub refused the request (HTTP {status})"),
        )),
    }
}
