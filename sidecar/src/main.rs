//! `agentcom-sidecar`: the always-on relay between one agent and the AgentCom hub.
//!
//! ```text
//! run --config FILE        hold the hub connection, wake the agent, report results
//! join --hub URL ...       register with an invite, install, verify
//! submit "description"     submit a task to the hub (every field of a submission)
//! status TEXT              this agent's status line
//! emit TOPIC --payload J   publish a topic event
//! git start-task|submit|status|check-scope   the agent's git workflow (one JSON
//!                          object each; start-task installs the write-scope hook)
//! scope reserve|renew|release|list   reserve repository paths (exit 3: conflict)
//! progress [PERCENT] [--message M]   the woken agent reports progress
//! heartbeat                the woken agent says it is alive (detached mode)
//! inbox [--json] [--ack ID|--ack-all|--peek]   unread messages, oldest first
//! send TO TEXT|--json F    send a message (TO: an agent id or "broadcast")
//! list [--json]            the agents installed on this machine and their state
//! remove NAME [--revoke]   stop and remove one (its hub token only with --revoke)
//! ```
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad command line or configuration
//! (the message names the field).

mod config;
mod fleet;
mod git;
mod http;
mod hub_cmds;
mod inbox;
mod link;
mod liveness;
mod merge;
mod onboard;
mod relay;
mod reserve_cli;
mod results;
mod runtimes;
mod scope_hook;
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
        /// [default: $AGENTCOM_SIDECAR_CONFIG, else the one agent installed here].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Join a hub with a one-time invite: register, write the config, run, verify.
    Join {
        /// The hub's URL (http://host:port), or several hubs' on one database
        /// separated by commas (the config then follows the active one).
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
        #[command(flatten)]
        task: Box<hub_cmds::SubmitArgs>,
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
    /// Set this agent's status line on the hub (what the dashboard shows).
    Status {
        /// The status text (1-256 characters).
        text: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Publish a topic event (with this sidecar's token): whoever subscribed
    /// to the topic hears of it. Prints the stored event.
    Emit {
        /// The topic (letters, digits and . _ - :).
        topic: String,
        /// The payload: JSON (any value), or a file with it (@path, @- for stdin).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Publishing again with the same key on the topic creates nothing.
        #[arg(long)]
        dedupe_key: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The fleet's shared context (with this sidecar's token): get, put
    /// (where your role may write), list.
    Context {
        #[command(subcommand)]
        action: hub_cmds::ContextCmd,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The wake of `runtime = "claude-code"` (run by the sidecar): runs
    /// claude on the task and writes the agent's files from its stream.
    ClaudeRun,
    /// The wake of `runtime = "openclaw"` (run by the sidecar): sends
    /// OpenClaw's hook with the task.
    OpenclawWake,
    /// Say the agent is alive (run by the woken agent; `wake_mode = "detached"`
    /// needs one at least every `stall_ms`).
    Heartbeat {
        /// The heartbeat file [default: $AGENTCOM_HEARTBEAT_FILE].
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the unread messages of the inbox (oldest first) and mark them read.
    Inbox {
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
        /// Only mark this message (id) read.
        #[arg(long, conflicts_with_all = ["ack_all", "peek"])]
        ack: Option<String>,
        /// Only mark every unread message read.
        #[arg(long, conflicts_with = "peek")]
        ack_all: bool,
        /// Print without marking read.
        #[arg(long)]
        peek: bool,
    },
    /// Send a message to an agent, or to every agent with TO = broadcast.
    Send {
        to: String,
        /// The text (sent as {"text": TEXT}).
        #[arg(required_unless_present = "json")]
        text: Option<String>,
        /// The payload: a JSON object from this file ("-": standard input).
        #[arg(long, conflicts_with = "text")]
        json: Option<PathBuf>,
        /// The message type [default: chat].
        #[arg(long = "type")]
        message_type: Option<String>,
        /// The id of the message this answers.
        #[arg(long)]
        reply_to: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The agents installed on this machine: unit, state, current task, unread
    /// messages.
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Stop and remove one agent installed on this machine (its unit; its
    /// directory is moved aside). Its hub token is revoked only with --revoke.
    Remove {
        agent_id: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Reserve repository paths with this agent's token (list, reserve,
    /// renew, release).
    Scope {
        #[command(subcommand)]
        action: reserve_cli::ScopeCmd,
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
        /// The task's write scope, a gitignore-style glob; repeatable
        /// [default: $TASK_WRITE_PATHS, one per line]. A pre-commit hook then
        /// refuses commits touching other files.
        #[arg(long = "write-path")]
        write_paths: Vec<String>,
    },
    /// The pre-commit hook's check: refuses when a staged file is outside the
    /// branch's write scope.
    CheckScope,
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

/// `--config`, else `$AGENTCOM_SIDECAR_CONFIG` (set for woken agents), else
/// the one agent installed here.
fn config_path(given: Option<PathBuf>) -> Result<PathBuf, Fatal> {
    if let Some(p) =
        given.or_else(|| std::env::var_os("AGENTCOM_SIDECAR_CONFIG").map(PathBuf::from))
    {
        return Ok(p);
    }
    let all = fleet::installed();
    match all.as_slice() {
        [one] => Ok(one.config.clone()),
        [] => fleet::root()
            .map(|r| r.join("config.toml"))
            .ok_or_else(|| fatal(2, "no config file: pass --config FILE (HOME is not set)")),
        many => Err(fatal(
            2,
            format!(
                "{} agents are installed here ({}): pass --config FILE",
                many.len(),
                many.iter()
                    .map(|i| format!("{} = {}", i.agent_id, i.config.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
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

fn inbox_cmd(
    config: Option<PathBuf>,
    json_lines: bool,
    ack: Option<String>,
    ack_all: bool,
    peek: bool,
) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let dir = inbox::inbox_dir(&cfg.state_dir);
    let io = |e: std::io::Error| fatal(1, format!("cannot use the inbox {}: {e}", dir.display()));
    if let Some(id) = ack {
        return match inbox::mark_read(&dir, |e| e.message.id == id).map_err(io)? {
            0 => Err(fatal(1, format!("no unread message {id}"))),
            _ => Ok(()),
        };
    }
    if ack_all {
        let n = inbox::mark_read(&dir, |_| true).map_err(io)?;
        eprintln!("{n} messages marked read");
        return Ok(());
    }
    let unread = inbox::unread(&dir).map_err(io)?;
    for e in &unread {
        if json_lines {
            let mut line = serde_json::to_value(&e.message).unwrap_or(Value::Null);
            line["received_at_ms"] = json!(e.received_at_ms);
            if let Some(seq) = e.mailbox_seq {
                line["mailbox_seq"] = json!(seq);
            }
            println!("{line}");
        } else {
            let m = &e.message;
            let body = match m.payload.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => m.payload.to_string(),
            };
            let place = m
                .channel
                .as_ref()
                .map(|c| format!(" #{c}"))
                .unwrap_or_default();
            println!(
                "{} {}{} [{}] {}: {}",
                m.timestamp, m.from, place, m.message_type, m.id, body
            );
        }
    }
    if !peek {
        let seen: std::collections::HashSet<u64> = unread.iter().map(|e| e.seq).collect();
        inbox::mark_read(&dir, |e| seen.contains(&e.seq)).map_err(io)?;
    }
    Ok(())
}

fn list(json_out: bool) -> Result<(), Fatal> {
    let rows: Vec<Value> = fleet::installed().iter().map(fleet::describe).collect();
    if json_out {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no agents are installed on this machine (agentcom-sidecar join adds one)");
        return Ok(());
    }
    for r in &rows {
        let held: Vec<String> = r["held_tasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        let id = t["task_id"].as_str().unwrap_or("?");
                        format!("{id} ({})", t["phase"].as_str().unwrap_or("?"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let task = if held.is_empty() {
            "idle".to_string()
        } else {
            held.join(", ")
        };
        println!(
            "{:<24} {:<28} task: {:<36} unread: {:<4} {}",
            r["agent_id"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default(),
            task,
            r["unread_messages"],
            r["config"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

fn remove(agent_id: String, revoke: bool) -> Result<(), Fatal> {
    let done = fleet::remove(&agent_id, revoke).map_err(|e| fatal(1, e))?;
    for line in done {
        println!("{line}");
    }
    if !revoke {
        println!("its hub token is still valid (remove --revoke, or agentcom-hub agent revoke {agent_id})");
    }
    Ok(())
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
        gh: cfg
            .as_ref()
            .map_or_else(|| "gh".to_string(), |c| c.gh_command.clone()),
    };
    let result = match action {
        GitCmd::StartTask {
            task_id,
            description,
            slug,
            write_paths,
        } => git::start_task(&ctx, task_id, description, slug, write_paths),
        GitCmd::CheckScope => scope_hook::check_staged(&ctx.repo),
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

/// A runtime's wake, with the sidecar's config the wake names.
fn runtime_wake(claude: bool) -> Result<(), Fatal> {
    let path = runtimes::config_path().ok_or_else(|| {
        fatal(
            2,
            "AGENTCOM_SIDECAR_CONFIG is not set: the sidecar runs this",
        )
    })?;
    let cfg = Config::load(&path).map_err(|e| fatal(2, e.to_string()))?;
    let outcome = match (&cfg.runtime, claude) {
        (config::Runtime::ClaudeCode { command, args }, true) => {
            runtimes::claude::run(command, args, cfg.repo_dir.as_deref())
        }
        (config::Runtime::OpenClaw { url, token }, false) => {
            runtimes::openclaw::wake(url, token.as_deref())
        }
        _ => Err("the config names another runtime".to_string()),
    };
    outcome.map_err(|e| fatal(1, e))
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
        Cmd::Submit { task, config } => hub_cmds::submit(*task, config),
        Cmd::Progress {
            percent,
            message,
            file,
        } => progress(percent, message, file),
        Cmd::Heartbeat { file } => heartbeat(file),
        Cmd::ClaudeRun => runtime_wake(true),
        Cmd::OpenclawWake => runtime_wake(false),
        Cmd::List { json } => list(json),
        Cmd::Remove { agent_id, revoke } => remove(agent_id, revoke),
        Cmd::Inbox {
            config,
            json,
            ack,
            ack_all,
            peek,
        } => inbox_cmd(config, json, ack, ack_all, peek),
        Cmd::Send {
            to,
            text,
            json,
            message_type,
            reply_to,
            config,
        } => hub_cmds::send(to, text, json, message_type, reply_to, config),
        Cmd::Status { text, config } => hub_cmds::set_status(text, config),
        Cmd::Emit {
            topic,
            payload,
            dedupe_key,
            config,
        } => hub_cmds::emit(topic, payload, dedupe_key, config),
        Cmd::Context { action, config } => hub_cmds::context(action, config),
        Cmd::Scope { action } => reserve_cli::run(action),
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
