//! `agentcom-sidecar`: the always-on relay between one agent and the AgentCom hub.
//!
//! ```text
//! run --config FILE        hold the hub connection, wake the agent, report results
//! join --hub URL ...       register with an invite, install, verify
//! submit "description"     submit a task to the hub
//! git start-task|submit|status   the agent's git workflow (one JSON object each)
//! progress [PERCENT] [--message M]   the woken agent reports progress
//! heartbeat                the woken agent says it is alive (detached mode)
//! ```
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad command line or configuration
//! (the message names the field).

mod config;
mod git;
mod http;
mod link;
mod liveness;
mod onboard;
mod relay;
mod results;
mod state;
mod wake;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "agentcom-sidecar",
    version,
    about = "AgentCom sidecar: relays tasks between the hub and one agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sidecar in the foreground (the service runs this).
    Run {
        /// Config file (TOML, or the v1.1 config.json)
        /// [default: $AGENTCOM_SIDECAR_CONFIG or ~/.agentcom/sidecar/config.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Join a hub with a one-time invite: register, write the config, run, verify.
    Join {
        /// The hub's URL (http://host:port).
        #[arg(long)]
        hub: String,
        #[arg(long)]
        agent_id: String,
        /// The one-time invite code from `agentcom-hub agent invite`.
        #[arg(long)]
        invite: String,
        /// Comma-separated capabilities.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// Where config, state and results live [default: ~/.agentcom/sidecar].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Wake command to put in the config (run with sh -c; task values in env).
        #[arg(long)]
        wake_command: Option<String>,
        /// Do not install a systemd user service even if systemd is available.
        #[arg(long)]
        no_service: bool,
        /// How long to wait for the onboarding task.
        #[arg(long, default_value_t = 60)]
        verify_timeout_secs: u64,
    },
    /// Submit a task to the hub (with this sidecar's token).
    Submit {
        description: String,
        /// urgent, high, normal, low (or 0-3).
        #[arg(long)]
        priority: Option<String>,
        /// A capability the task needs (repeatable).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Task metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Report progress on the current task (run by the woken agent): writes
    /// the task's progress file atomically; the sidecar passes it to the hub.
    Progress {
        /// Percent done, 0-100.
        #[arg(value_parser = clap::value_parser!(u64).range(0..=100))]
        percent: Option<u64>,
        /// What the agent is doing.
        #[arg(long)]
        message: Option<String>,
        /// The progress file [default: $AGENTCOM_PROGRESS_FILE].
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Say the agent is alive (run by the woken agent; `wake_mode = "detached"`
    /// needs one at least every `stall_ms`).
    Heartbeat {
        /// The heartbeat file [default: $AGENTCOM_HEARTBEAT_FILE].
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Git workflow for the agent's repository.
    Git {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The repository [default: repo_dir from the config, else the current directory].
        #[arg(long, global = true)]
        repo: Option<PathBuf>,
        /// Agent id for branch names [default: from the config].
        #[arg(long, global = true)]
        agent_id: Option<String>,
        #[command(subcommand)]
        action: GitCmd,
    },
}

#[derive(Subcommand)]
enum GitCmd {
    /// Create `<agent>/<slug>` from a freshly fetched origin/main.
    StartTask {
        /// [default: $TASK_ID]
        #[arg(long)]
        task_id: Option<String>,
        /// [default: $TASK_DESCRIPTION]
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        slug: Option<String>,
    },
    /// Push the branch (--force-with-lease) and open a pull request with gh.
    Submit {
        #[arg(long)]
        task_id: Option<String>,
        #[arg(long)]
        title: Option<String>,
    },
    /// Branch, commits ahead of origin/main, dirty files.
    Status {
        /// Fetch origin first.
        #[arg(long)]
        fetch: bool,
    },
}

/// A failure that ends the program.
struct Fatal {
    code: u8,
    message: String,
}

fn fatal(code: u8, message: impl Into<String>) -> Fatal {
    Fatal {
        code,
        message: message.into(),
    }
}

fn config_path(given: Option<PathBuf>) -> Result<PathBuf, Fatal> {
    given
        .or_else(config::default_path)
        .ok_or_else(|| fatal(2, "no config file: pass --config FILE (HOME is not set)"))
}

fn load_config(given: Option<PathBuf>) -> Result<Config, Fatal> {
    let path = config_path(given)?;
    Config::load(&path).map_err(|e| fatal(2, e.to_string()))
}

fn init_logging(level: &str, file: Option<&PathBuf>) -> Result<(), Fatal> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(filter);
    match file {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    fatal(
                        1,
                        format!("cannot create the log directory {}: {e}", parent.display()),
                    )
                })?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    fatal(
                        1,
                        format!("cannot open the log file {}: {e}", path.display()),
                    )
                })?;
            builder.with_writer(std::sync::Mutex::new(f)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn run(config: Option<PathBuf>) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    init_logging(&cfg.log_level, cfg.log_file.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fatal(1, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(relay::run(cfg)).map_err(|e| fatal(1, e))
}

fn submit(
    description: String,
    priority: Option<String>,
    capabilities: Vec<String>,
    metadata: Option<String>,
    config: Option<PathBuf>,
) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let mut task = json!({"description": description});
    if let Some(p) = priority {
        task["priority"] = match p.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(p),
        };
    }
    if !capabilities.is_empty() {
        task["needed_capabilities"] = json!(capabilities);
    }
    if let Some(m) = metadata {
        match serde_json::from_str::<Value>(&m) {
            Ok(v @ Value::Object(_)) => task["metadata"] = v,
            _ => return Err(fatal(2, "--metadata must be a JSON object")),
        }
    }
    let url = format!("{}/api/tasks", cfg.hub_api_url);
    let (status, resp) = http::request("POST", &url, Some(&cfg.token), Some(&task))
        .map_err(|e| fatal(1, format!("cannot reach the hub: {e}")))?;
    if status == 200 || status == 201 {
        println!("{resp}");
        Ok(())
    } else {
        println!("{resp}");
        Err(fatal(
            if status == 422 || status == 400 { 2 } else { 1 },
            format!("the hub refused the task (HTTP {status})"),
        ))
    }
}

/// The file a woken agent writes: `--file`, else the wake environment's.
fn agent_file(given: Option<PathBuf>, env: &str) -> Result<PathBuf, Fatal> {
    given
        .or_else(|| std::env::var_os(env).map(PathBuf::from))
        .ok_or_else(|| {
            fatal(
                2,
                format!("no file: pass --file, or run this from a woken agent (${env} is not set)"),
            )
        })
}

/// Writes `bytes` to `path` atomically (temp file, then rename).
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), Fatal> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| fatal(1, format!("cannot write {}: {e}", path.display())))
}

fn progress(
    percent: Option<u64>,
    message: Option<String>,
    file: Option<PathBuf>,
) -> Result<(), Fatal> {
    if percent.is_none() && message.is_none() {
        return Err(fatal(2, "give a percent, --message, or both"));
    }
    let path = agent_file(file, "AGENTCOM_PROGRESS_FILE")?;
    let body = json!({"percent": percent, "message": message});
    write_atomic(&path, body.to_string().as_bytes())
}

fn heartbeat(file: Option<PathBuf>) -> Result<(), Fatal> {
    let path = agent_file(file, "AGENTCOM_HEARTBEAT_FILE")?;
    let stamp = format!("{}\n", state::now_ms());
    write_atomic(&path, stamp.as_bytes())
}

fn git_cmd(
    config: Option<PathBuf>,
    repo: Option<PathBuf>,
    agent_id: Option<String>,
    action: GitCmd,
) -> Result<(), Fatal> {
    // The config is optional here when --repo and --agent-id are given.
    let explicit = config.is_some();
    let cfg = match config_path(config) {
        Ok(p) if explicit || p.exists() => {
            Some(Config::load(&p).map_err(|e| fatal(2, e.to_string()))?)
        }
        _ => None,
    };
    let repo = repo
        .or_else(|| cfg.as_ref().and_then(|c| c.repo_dir.clone()))
        .or_else(|| std::env::var_os("AGENTCOM_REPO_DIR").map(PathBuf::from))
        .or_else(|| std::env::current_dir().ok())
        .ok_or_else(|| fatal(2, "no repository: pass --repo"))?;
    let agent_id = agent_id
        .or_else(|| cfg.as_ref().map(|c| c.agent_id.clone()))
        .or_else(|| std::env::var("AGENTCOM_AGENT_ID").ok())
        .ok_or_else(|| fatal(2, "no agent id: pass --agent-id or --config"))?;
    let ctx = git::GitContext {
        repo,
        agent_id,
        reviewer: cfg.as_ref().and_then(|c| c.reviewer.clone()),
        state_dir: cfg.as_ref().map(|c| c.state_dir.clone()),
    };
    let result = match action {
        GitCmd::StartTask {
            task_id,
            description,
            slug,
        } => git::start_task(&ctx, task_id, description, slug),
        GitCmd::Submit { task_id, title } => git::submit(&ctx, task_id, title),
        GitCmd::Status { fetch } => git::status(&ctx, fetch),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            Ok(())
        }
        Err(git::GitFailure(v)) => {
            println!("{v}");
            Err(fatal(1, String::new()))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Run { config } => run(config),
        Cmd::Join {
            hub,
            agent_id,
            invite,
            capabilities,
            dir,
            wake_command,
            no_service,
            verify_timeout_secs,
        } => onboard::join(&onboard::JoinArgs {
            hub,
            agent_id,
            invite,
            capabilities,
            dir,
            wake_command,
            no_service,
            verify_timeout: Duration::from_secs(verify_timeout_secs),
        })
        .map_err(|e| fatal(e.code, e.message)),
        Cmd::Submit {
            description,
            priority,
            capabilities,
            metadata,
            config,
        } => submit(description, priority, capabilities, metadata, config),
        Cmd::Progress {
            percent,
            message,
            file,
        } => progress(percent, message, file),
        Cmd::Heartbeat { file } => heartbeat(file),
        Cmd::Git {
            config,
            repo,
            agent_id,
            action,
        } => git_cmd(config, repo, agent_id, action),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("agentcom-sidecar: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
