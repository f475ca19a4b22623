//! `agentcom-hub mcp`: a Model Context Protocol server on stdin/stdout (rmcp), so
//! a coordinating model session can drive a running hub through typed tools.
//!
//! It is a client of the hub like any other: every tool is one or a few HTTP
//! requests made with the configured token, so the hub decides what the token
//! may do. `tools.rs` holds the tools; this file the command line and start-up.
//!
//! Architecture invariant: knows the hub only through `hub_client` (its public
//! HTTP API); nothing is written to stdout but MCP messages (logs go to stderr).

mod tools;

use std::time::Duration;

use clap::Args;

use crate::cli::hub_client::HubClient;
use crate::Fatal;

pub use tools::HubTools;

#[derive(Args)]
pub struct McpArgs {
    /// The running hub's URL, or several hubs' URLs separated by commas
    /// (hubs on one Postgres: requests go to the active one).
    #[arg(
        long,
        env = "AGENTCOM_HUB_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    hub: String,
    /// Bearer token the tools act with: an agent's token or the admin token
    /// (prefer the environment variable: a flag shows in the process list).
    #[arg(long, env = "AGENTCOM_TOKEN", hide_env_values = true)]
    token: String,
}

/// Runs the server until the client closes stdin.
pub fn run(args: McpArgs) -> Result<(), Fatal> {
    check_url(&args.hub)?;
    let token = args.token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Fatal {
            code: 2,
            message: "--token (AGENTCOM_TOKEN) must be a non-empty token without spaces".into(),
        });
    }
    // stdout carries the protocol: logs go to stderr only (RUST_LOG to change).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fatal {
            code: 1,
            message: format!("cannot start the runtime: {e}"),
        })?;
    let tools = HubTools::new(HubClient::new(&args.hub, token));
    runtime.block_on(async move {
        tools.check_token(Duration::from_secs(10)).await?;
        tools.serve_stdio().await
    })
}

fn check_url(urls: &str) -> Result<(), Fatal> {
    let list = agentcom_hub::protocol::split_hub_urls(urls);
    let bad = |url: &str| {
        Fatal {
        code: 2,
        message: format!(
            "--hub (AGENTCOM_HUB_URL) must be an http:// or https:// URL, or several separated by commas, got {url:?}"
        ),
    }
    };
    if list.is_empty() || list.len() > agentcom_hub::protocol::MAX_HUB_URLS {
        return Err(bad(urls));
    }
    for url in &list {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {}
            _ => return Err(bad(url)),
        }
    }
    Ok(())
}
