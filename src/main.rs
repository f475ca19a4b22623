//! `agentcom-hub`: the command line. `serve` runs the hub; `agent` manages agents'
//! tokens directly in the data directory (while the hub is stopped; with the hub
//! running use `POST /admin/tokens`); `backup`, `verify-backup`, `restore` and
//! `compact` look after the store (see README, "Backup and recovery").

mod cli;
mod store_cmds;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use agentcom_hub::backup;
use agentcom_hub::config::{Config, Overrides};
use agentcom_hub::error::{BackupError, StoreError};
use agentcom_hub::logging;
use agentcom_hub::{
    join_command, IssueError, PostgresSettings, Role, Standby, Store, TokenTerms, Tokens,
    DEFAULT_CACHE_BYTES,
};

use cli::hub_client::{self, HubAnswer, HubClient};
use cli::{bench, context as context_cli, mcp, ops as ops_cli, policies};
use store_cmds::{
    backup_cmd, compact_cmd, migrate_cmd, restore_cmd, verify_archive_cmd, verify_backup_cmd,
};

// The hub allocates many small, short-lived objects across threads (frames, actor
// messages); mimalloc handles that pattern far better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agentcom-hub",
    version,
    about = "AgentCom hub: durable task queue and scheduler for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub in the foreground.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on [default: 127.0.0.1:4000].
        #[arg(long, env = "AGENTCOM_BIND")]
        bind: Option<String>,
    },
    /// Measure the hub: simulated agents complete tasks over real sockets.
    Bench(bench::BenchArgs),
    /// Manage agents and their tokens (works on a stopped hub's data directory).
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Write a backup file of a stopped hub's store into the backup directory
    /// (with --hub, ask the running hub to write one).
    Backup {
        #[command(flatten)]
        target: Target,
        /// Write the file into this directory instead of the configured
        /// backup_dir (no pruning there). Not with --hub.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Check a backup file: format, checksum and that every record decodes.
    VerifyBackup {
        /// The backup file.
        file: PathBuf,
    },
    /// Copy a whole store from sled to Postgres or back (hubs stopped), then
    /// verify the copy record by record: --from sled:DIR --to
    /// postgres:"host=… dbname=…" (or the other way). The target must be empty.
    Migrate {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// The Postgres lease this command holds while it copies (ms).
        #[arg(long, default_value_t = 5000)]
        failover_ms: u64,
    },
    /// Check an archive of finished work (agentcom-archive-*.acar in the
    /// backup directory) whole: its checksum and record count; --id prints
    /// that task's record.
    VerifyArchive {
        file: PathBuf,
        #[arg(long)]
        id: Option<String>,
    },
    /// Replace a stopped hub's store with a backup. The current data directory is
    /// moved aside (<data_dir>.before-restore-<time>), never deleted.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Rewrite a stopped hub's store compactly (with --hub, compact the running
    /// hub's store in place).
    Compact {
        #[command(flatten)]
        target: Target,
    },
    /// Operator controls of one task on a running hub.
    Task {
        #[command(subcommand)]
        action: ops_cli::TaskAction,
    },
    /// Pause and resume priority lanes of a running hub.
    Queue {
        #[command(subcommand)]
        action: ops_cli::QueueAction,
    },
    /// Reservations of repository paths on a running hub: list, reserve, renew,
    /// release.
    Reservations {
        #[command(subcommand)]
        action: ops_cli::ReservationAction,
    },
    /// Usage-limit pauses of a running hub: list, resume GROUP.
    Usage {
        #[command(subcommand)]
        action: ops_cli::UsageAction,
    },
    /// Topic events and subscriptions of a running hub: list, events TOPIC,
    /// publish TOPIC, subscriptions, subscribe -f FILE, unsubscribe ID.
    Topics {
        #[command(subcommand)]
        action: policies::TopicsAction,
    },
    /// The shared context of a running hub: list, get KEY, history KEY, put
    /// KEY (--text | --json | -f FILE) [--if-version N], delete KEY.
    Context {
        #[command(subcommand)]
        action: context_cli::ContextAction,
    },
    /// Spend and daily budgets of a running hub: show, set -f FILE.
    Budgets {
        #[command(subcommand)]
        action: policies::PolicyAction,
    },
    /// Approval rules of a running hub: show, set -f FILE.
    ApprovalRules {
        #[command(subcommand)]
        action: policies::PolicyAction,
    },
    /// Concurrency limits of a running hub: list, set KEY LIMIT, remove KEY.
    Concurrency {
        #[command(subcommand)]
        action: ops_cli::ConcurrencyAction,
    },
    /// Standing orders of a running hub and the runs of each.
    StandingOrders {
        #[command(subcommand)]
        action: ops_cli::StandingAction,
    },
    /// Read a running hub's event log (oldest first, paged by --cursor).
    Events(ops_cli::EventsArgs),
    /// Serve the Model Context Protocol on stdin/stdout: tools for a coordinating
    /// model to drive a running hub with one token's rights (see README, "MCP").
    Mcp(mcp::McpArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Data directory [default: ./agentcom-data].
    #[arg(long, env = "AGENTCOM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (see README for the keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The Postgres connection string (with storage = "postgres").
    #[arg(long, env = "AGENTCOM_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
}

#[derive(Args, Clone)]
struct Target {
    #[command(flatten)]
    common: Common,
    /// Talk to a running hub at this URL (needs AGENTCOM_ADMIN_TOKEN) instead of
    /// opening the data directory; several hubs' URLs separated by commas go
    /// to the active one.
    #[arg(long, env = "AGENTCOM_HUB_URL")]
    hub: Option<String>,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Register an agent and print its token (shown once).
    Add {
        /// The agent's id.
        name: String,
        /// Comma-separated capabilities, e.g. code,review.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// Agents sharing one provider account: a usage limit one of them
        /// reports pauses them all.
        #[arg(long)]
        credential_group: Option<String>,
        /// The most tasks the agent may run at once (1-32) [default: what its
        /// sidecar asks for, else 1].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
        slots: Option<u32>,
        /// What the token may do: agent (default), coordinator (an agent that
        /// may also steer others' work) or observer (reads only).
        #[arg(long, value_parser = ["agent", "coordinator", "observer"])]
        role: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print the one command that joins a new agent machine (one-time invite).
    Invite {
        /// The agent's id.
        name: String,
        /// Comma-separated capabilities, e.g. code,review.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// How long the invite stays valid [default: config invite_ttl_hours].
        #[arg(long)]
        ttl_hours: Option<u64>,
        /// The credential group of the token the invite redeems for.
        #[arg(long)]
        credential_group: Option<String>,
        /// The most tasks the agent may run at once (1-32).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32))]
        slots: Option<u32>,
        /// What the token may do: agent (default), coordinator (an agent that
        /// may also steer others' work) or observer (reads only).
        #[arg(long, value_parser = ["agent", "coordinator", "observer"])]
        role: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List registered agents (token prefixes only).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke an agent's token.
    Revoke {
        /// The agent's id.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Drain an agent on a running hub: it finishes its task, takes no new one.
    Drain {
        name: String,
        #[command(flatten)]
        online: ops_cli::Online,
    },
    /// End a drain.
    Undrain {
        name: String,
        #[command(flatten)]
        online: ops_cli::Online,
    },
    /// Disable an agent on a running hub: its task goes back to the queue and it
    /// takes none until enabled.
    Disable {
        name: String,
        #[command(flatten)]
        online: ops_cli::Online,
    },
    /// Enable a disabled agent.
    Enable {
        name: String,
        #[command(flatten)]
        online: ops_cli::Online,
    },
    /// What agents do now on a running hub: state, slots, each running task.
    States {
        /// Only this agent.
        name: Option<String>,
        #[command(flatten)]
        online: ops_cli::Online,
    },
}

/// A failure that ends the program, with its exit code.
struct Fatal {
    code: u8,
    message: String,
}

impl From<StoreError> for Fatal {
    fn from(e: StoreError) -> Self {
        Fatal {
            code: 1,
            message: e.to_string(),
        }
    }
}

impl From<BackupError> for Fatal {
    fn from(e: BackupError) -> Self {
        Fatal {
            code: 1,
            message: e.to_string(),
        }
    }
}

fn load_config(common: &Common, bind: Option<String>) -> Result<Config, Fatal> {
    let overrides = Overrides {
        bind,
        data_dir: common.data_dir.clone(),
        postgres_url: common.postgres_url.clone(),
    };
    Config::load(common.config.as_deref(), &overrides).map_err(|e| Fatal {
        code: 2,
        message: e.to_string(),
    })
}

fn init_logging(config: &Config) -> Result<(), Fatal> {
    let file = config.log_file.as_ref().map(|path| logging::LogFile {
        path: path.clone(),
        rotation: config.log_rotation.clone(),
        keep: usize::try_from(config.log_keep).unwrap_or(usize::MAX),
    });
    logging::init(&config.log_level, file.as_ref()).map_err(|e| Fatal {
        code: 2,
        message: e.to_string(),
    })
}

fn serve(common: Common, bind: Option<String>) -> Result<(), Fatal> {
    // Per-connection state is many small allocations spread over the heap:
    // transparent huge pages would make each touched 4 KiB cost 2 MiB of RSS.
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let mut config = load_config(&common, bind)?;
    init_logging(&config)?;
    // A store that does not open or fails its check is moved aside and the newest
    // good backup restored (see `backup::open_or_recover`).
    let (store, recoveries) = match config.storage.as_str() {
        "postgres" => {
            // A standby answers on the hub's address until it holds the lease,
            // then the hub binds the same address.
            let standby =
                Standby::start(&config.bind, config.hub_urls.clone()).map_err(|e| Fatal {
                    code: 1,
                    message: format!("cannot bind {}: {e}", config.bind),
                })?;
            let addr = standby.addr();
            let name = config
                .public_url
                .clone()
                .unwrap_or_else(|| addr.to_string());
            let settings = postgres_settings(&config, &name);
            let mut announced = false;
            let store = Store::open_postgres(
                &config.postgres_cache_dir(),
                DEFAULT_CACHE_BYTES,
                &settings,
                None,
                &mut |leader| {
                    standby.set_leader(leader);
                    if !announced {
                        announced = true;
                        println!("agentcom-hub standby on http://{addr} (leader: {leader})");
                        let _ = std::io::stdout().flush();
                    }
                },
            );
            standby.stop();
            config.bind = addr.to_string();
            (store?, Vec::new())
        }
        _ => backup::open_or_recover(&config.data_dir, &config.backup_dir(), DEFAULT_CACHE_BYTES)
            .map_err(|e| match e {
            // The wording `agent` commands use too.
            BackupError::HubRunning(dir) => Fatal::from(StoreError::Locked(dir)),
            other => Fatal::from(other),
        })?,
    };
    let tokens = Tokens::new(store.clone());
    let supplied = std::env::var("AGENTCOM_ADMIN_TOKEN").ok();
    if let Some(token) = tokens.init_admin(supplied.as_deref())? {
        println!("admin token (shown once; store it now): {token}");
    }
    tracing::info!(data_dir = %config.data_dir.display(), "starting hub");
    actix_web::rt::System::new()
        .block_on(agentcom_hub::serve(config, store, recoveries, |addr| {
            println!("agentcom-hub listening on http://{addr}");
            let _ = std::io::stdout().flush();
        }))
        .map_err(|e| Fatal {
            code: 1,
            message: format!("cannot serve: {e}"),
        })
}

fn valid_agent_id(name: &str) -> Result<(), Fatal> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(Fatal {
            code: 2,
            message: "agent name must be 1 to 128 characters".into(),
        });
    }
    Ok(())
}

fn clean_caps(capabilities: Vec<String>) -> Vec<String> {
    capabilities
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

fn refused(e: IssueError, name: &str) -> Fatal {
    let message = match e {
        IssueError::AlreadyExists => format!("agent {name} already exists (revoke it first)"),
        IssueError::InvalidInvite => "invalid invite".into(),
        IssueError::Store(e) => e.to_string(),
    };
    Fatal { code: 1, message }
}

/// Who this process is to the Postgres backend, and its lease.
fn postgres_settings(config: &Config, name: &str) -> PostgresSettings {
    PostgresSettings {
        url: config.postgres_url.clone().unwrap_or_default(),
        holder: format!("{name}#{}", std::process::id()),
        lease: std::time::Duration::from_millis(config.failover_ms),
    }
}

/// Offline: work on the store of a stopped hub (its data directory, or with
/// Postgres the database, while no hub holds its lease).
fn open_tokens(common: &Common) -> Result<(Config, Tokens, Released), Fatal> {
    let config = load_config(common, None)?;
    let store = match config.storage.as_str() {
        "postgres" => {
            let mut cache = config.postgres_cache_dir().into_os_string();
            cache.push("-cli");
            let settings = postgres_settings(&config, "agentcom-hub agent");
            // A lease left by a hub that died expires within one lease.
            let give_up = Some(settings.lease + std::time::Duration::from_millis(500));
            Store::open_postgres(
                &PathBuf::from(cache),
                DEFAULT_CACHE_BYTES,
                &settings,
                give_up,
                &mut |_| {},
            )?
        }
        _ => Store::open(&config.data_dir)?,
    };
    Ok((config, Tokens::new(store.clone()), Released(store)))
}

/// Gives the Postgres leader lease up when an offline command ends, so a hub
/// starting next need not wait for it to expire.
struct Released(Store);

impl Drop for Released {
    fn drop(&mut self) {
        if let Err(e) = self.0.release_lease_now() {
            eprintln!("agentcom-hub: the store's last flush failed: {e}");
        }
    }
}

/// Online: one admin request to a running hub.
fn hub_request(
    hub: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<HubAnswer, Fatal> {
    let admin = std::env::var("AGENTCOM_ADMIN_TOKEN").map_err(|_| Fatal {
        code: 2,
        message: "--hub needs the admin token in AGENTCOM_ADMIN_TOKEN".into(),
    })?;
    HubClient::new(hub, &admin)
        .request(method, path, body.as_ref(), hub_client::DEFAULT_TIMEOUT)
        .map_err(|message| Fatal { code: 1, message })
}

/// A credential group: 1 to 128 characters.
fn valid_group(group: Option<&str>) -> Result<(), Fatal> {
    match group {
        Some(g) if g.is_empty() || g.chars().count() > 128 => Err(Fatal {
            code: 2,
            message: "--credential-group must be 1 to 128 characters".into(),
        }),
        _ => Ok(()),
    }
}

/// The role `--role` names (clap checked it).
fn role_of(role: Option<&str>) -> Role {
    role.and_then(Role::parse_issuable).unwrap_or_default()
}

fn agent(action: AgentAction) -> Result<(), Fatal> {
    match action {
        AgentAction::Add {
            name,
            capabilities,
            credential_group,
            slots,
            role,
            target,
        } => {
            valid_agent_id(&name)?;
            valid_group(credential_group.as_deref())?;
            let caps = clean_caps(capabilities);
            let token = match &target.hub {
                Some(hub) => {
                    let body = serde_json::json!({"agent_id": name, "capabilities": caps,
                                                  "credential_group": credential_group, "slots": slots,
                                                  "role": role});
                    let answer = accepted(hub_request(hub, "POST", "/admin/tokens", Some(body))?)?;
                    answer["token"].as_str().unwrap_or_default().to_string()
                }
                None => {
                    let (_, tokens, _lease) = open_tokens(&target.common)?;
                    let terms = TokenTerms {
                        credential_group,
                        slots,
                        role: role_of(role.as_deref()),
                    };
                    tokens
                        .issue_with_now(&name, caps, terms)
                        .map_err(|e| refused(e, &name))?
                        .0
                }
            };
            println!("{token}");
            Ok(())
        }
        AgentAction::Invite {
            name,
            capabilities,
            ttl_hours,
            credential_group,
            slots,
            role,
            target,
        } => {
            valid_agent_id(&name)?;
            valid_group(credential_group.as_deref())?;
            let caps = clean_caps(capabilities);
            if ttl_hours.is_some_and(|h| h == 0 || h > 24 * 365) {
                return Err(Fatal {
                    code: 2,
                    message: "--ttl-hours must be between 1 and 8760".into(),
                });
            }
            let command = match &target.hub {
                Some(hub) => {
                    let mut body = serde_json::json!({"agent_id": name, "capabilities": caps,
                                                      "credential_group": credential_group, "slots": slots,
                                                      "role": role});
                    if let Some(h) = ttl_hours {
                        body["ttl_hours"] = h.into();
                    }
                    let answer = accepted(hub_request(hub, "POST", "/admin/invites", Some(body))?)?;
                    answer["command"].as_str().unwrap_or_default().to_string()
                }
                None => {
                    let (config, tokens, _lease) = open_tokens(&target.common)?;
                    let hours = ttl_hours.unwrap_or(config.invite_ttl_hours);
                    let ttl = (hours as i64).saturating_mul(3_600_000);
                    let terms = TokenTerms {
                        credential_group,
                        slots,
                        role: role_of(role.as_deref()),
                    };
                    let (code, record) = tokens.invite_with_now(&name, caps, terms, ttl)?;
                    join_command(&config.hub_url(), &name, &code, &record.capabilities)
                }
            };
            println!("{command}");
            Ok(())
        }
        AgentAction::List { target } => {
            let rows: Vec<serde_json::Value> = match &target.hub {
                Some(hub) => {
                    let answer = accepted(hub_request(hub, "GET", "/admin/tokens", None)?)?;
                    answer["tokens"].as_array().cloned().unwrap_or_default()
                }
                None => {
                    let (_, tokens, _lease) = open_tokens(&target.common)?;
                    let records = tokens.list()?.into_iter();
                    records
                        .filter_map(|r| serde_json::to_value(r).ok())
                        .collect()
                }
            };
            for r in rows {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                let caps: Vec<String> = r["capabilities"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut line = format!(
                    "{}\t{}…\t{}",
                    text("agent_id"),
                    text("token_prefix"),
                    caps.join(",")
                );
                if let Some(g) = r["credential_group"].as_str() {
                    line.push_str(&format!("\tgroup {g}"));
                }
                if let Some(role) = r["role"].as_str().filter(|r| *r != "agent") {
                    line.push_str(&format!("\trole {role}"));
                }
                if let Some(n) = r["slots"].as_u64() {
                    line.push_str(&format!("\tslots {n}"));
                }
                println!("{line}");
            }
            Ok(())
        }
        AgentAction::Revoke { name, target } => {
            let revoked = match &target.hub {
                Some(hub) => {
                    let segment = hub_client::encode(&name);
                    match hub_request(hub, "DELETE", &format!("/admin/tokens/{segment}"), None)? {
                        Ok(_) => true,
                        Err((404, _)) => false,
                        Err(refusal) => return accepted(Err(refusal)).map(|_| ()),
                    }
                }
                None => {
                    let (_, tokens, _lease) = open_tokens(&target.common)?;
                    tokens.revoke_now(&name)?
                }
            };
            if !revoked {
                return Err(Fatal {
                    code: 1,
                    message: format!("no agent named {name}"),
                });
            }
            println!("revoked {name}");
            Ok(())
        }
        AgentAction::Drain { name, online } => ops_cli::control_agent(&name, "drain", &online),
        AgentAction::Undrain { name, online } => ops_cli::control_agent(&name, "undrain", &online),
        AgentAction::Disable { name, online } => ops_cli::control_agent(&name, "disable", &online),
        AgentAction::Enable { name, online } => ops_cli::control_agent(&name, "enable", &online),
        AgentAction::States { name, online } => ops_cli::agent_states(name.as_deref(), &online),
    }
}

/// The body of a successful answer, or the hub's refusal as a failure.
fn accepted(answer: HubAnswer) -> Result<serde_json::Value, Fatal> {
    answer.map_err(|(status, body)| Fatal {
        code: 1,
        message: format!("hub refused ({status}): {body}"),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { common, bind } => serve(common, bind),
        Command::Agent { action } => agent(action),
        Command::Bench(args) => bench::command(args),
        Command::Backup { target, out_dir } => backup_cmd(target, out_dir),
        Command::VerifyBackup { file } => verify_backup_cmd(file),
        Command::VerifyArchive { file, id } => verify_archive_cmd(file, id),
        Command::Migrate {
            from,
            to,
            failover_ms,
        } => migrate_cmd(&from, &to, failover_ms),
        Command::Restore { file, common } => restore_cmd(file, common),
        Command::Compact { target } => compact_cmd(target),
        Command::Task { action } => ops_cli::task(action),
        Command::Queue { action } => ops_cli::queue(action),
        Command::Reservations { action } => ops_cli::reservations(action),
        Command::Concurrency { action } => ops_cli::concurrency(action),
        Command::ApprovalRules { action } => policies::approval_rules(action),
        Command::Budgets { action } => policies::budgets(action),
        Command::Topics { action } => policies::topics(action),
        Command::Context { action } => context_cli::context(action),
        Command::Usage { action } => ops_cli::usage(action),
        Command::StandingOrders { action } => ops_cli::standing(action),
        Command::Events(args) => ops_cli::events(args),
        Command::Mcp(args) => mcp::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("agentcom-hub: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
