//! The `bench` subcommand's arguments, and what it prints.

use clap::Args;

use super::{render, run, scale_idle_agents, scale_queued, BenchOptions};
use crate::Fatal;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Target a running hub (admin token in AGENTCOM_ADMIN_TOKEN) instead of
    /// starting one on a temporary data dir.
    #[arg(long)]
    hub: Option<String>,
    /// Run the bench's own hub on Postgres instead of sled: a key=value
    /// connection string (`host=… user=… password=…`) to a server where the
    /// bench may create a database; it makes one for the run and drops it.
    #[arg(long, conflicts_with = "hub")]
    postgres: Option<String>,
    /// Simulated agents (WebSocket connections).
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Tasks to submit and complete.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Tasks per POST /api/tasks (1 = single submits, up to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 2)]
    submitters: usize,
    /// Distinct capabilities spread over agents and tasks (0 = none needed).
    #[arg(long, default_value_t = 0)]
    capabilities: usize,
    /// Spread tasks over the four priority lanes.
    #[arg(long)]
    mixed_priorities: bool,
    /// Give tasks write scopes: this many distinct ones in one repository
    /// (tasks of one scope run one at a time).
    #[arg(long, default_value_t = 0)]
    scopes: usize,
    /// Give tasks this many distinct concurrency keys (served round-robin).
    #[arg(long, default_value_t = 0)]
    concurrency_keys: usize,
    /// Subscriptions to task.completed (whose filter matches no bench task)
    /// during the run: the hub then publishes every completion as an event,
    /// and each subscription reads it (the cost of subscriptions).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    subscriptions: u64,
    /// Filler bytes in each task description.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Submit at this many tasks per second (a latency run below saturation);
    /// default: as fast as the hub takes them.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Stop submitting after this many seconds (--tasks is then an upper bound).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration_secs: Option<u64>,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print the report as one JSON object on the last stdout line.
    #[arg(long)]
    json: bool,
    /// A scale run instead of the throughput run: `idle-agents` measures hub memory
    /// per idle connection (--agents); `queued` fills the queue (--tasks), measures
    /// RSS, restart-to-serving time and per-assignment cost at 1k vs that many.
    #[arg(long, value_enum)]
    scale: Option<Scale>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err("must be a number of tasks per second above 0 (at most 10000000)".into()),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Scale {
    IdleAgents,
    Queued,
}

/// `agentcom-hub bench`: runs what the arguments ask for and prints the report.
pub fn command(args: BenchArgs) -> Result<(), Fatal> {
    if let Some(scale) = args.scale {
        let report = match scale {
            Scale::IdleAgents => scale_idle_agents(args.agents),
            Scale::Queued => scale_queued(args.tasks, !args.json),
        }
        .map_err(|message| Fatal { code: 1, message })?;
        let text = serde_json::to_string(&report).unwrap_or_default();
        if args.json {
            println!("{text}");
        } else {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or(text));
        }
        return Ok(());
    }
    let opts = BenchOptions {
        hub: args.hub,
        postgres: args.postgres,
        admin_token: std::env::var("AGENTCOM_ADMIN_TOKEN").ok(),
        agents: args.agents,
        tasks: args.tasks,
        batch: args.batch as usize,
        submitters: args.submitters,
        capabilities: args.capabilities,
        mixed_priorities: args.mixed_priorities,
        scopes: args.scopes,
        concurrency_keys: args.concurrency_keys,
        subscriptions: args.subscriptions as usize,
        payload_bytes: args.payload_bytes,
        rate: args.rate,
        duration: args.duration_secs.map(std::time::Duration::from_secs),
        timeout: std::time::Duration::from_secs(args.timeout_secs),
        progress: !args.json,
    };
    let report = run(&opts).map_err(|message| Fatal { code: 1, message })?;
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!("{}", render(&report));
    }
    if report.lost > 0 || report.duplicated > 0 {
        return Err(Fatal {
            code: 1,
            message: format!("{} lost and {} duplicated", report.lost, report.duplicated),
        });
    }
    Ok(())
}
