//! `agentcom-hub`: the command line. `serve` runs the hub; `agent` manages agents'
//! tokens directly in the data directory (while the hub is stopped; with the hub
//! running use `POST /admin/tokens`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use agentcom_hub::auth::{IssueError, Tokens};
use agentcom_hub::config::{Config, Overrides};
use agentcom_hub::error::StoreError;
use agentcom_hub::server;
use agentcom_hub::store::Store;

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
    /// Manage agents and their tokens (works on a stopped hub's data directory).
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Data directory [default: ./agentcom-data].
    #[arg(long, env = "AGENTCOM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (see README for the keys).
    #[arg(long)]
    config: Option<PathBuf>,
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
        #[command(flatten)]
        common: Common,
    },
    /// List registered agents (token prefixes only).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Revoke an agent's token.
    Revoke {
        /// The agent's id.
        name: String,
        #[command(flatten)]
        common: Common,
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

fn load_config(common: &Common, bind: Option<String>) -> Result<Config, Fatal> {
    let overrides = Overrides {
        bind,
        data_dir: common.data_dir.clone(),
    };
    Config::load(common.config.as_deref(), &overrides).map_err(|e| Fatal {
        code: 2,
        message: e.to_string(),
    })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(common: Common, bind: Option<String>) -> Result<(), Fatal> {
    let config = load_config(&common, bind)?;
    init_logging(&config.log_level);
    let store = Store::open(&config.data_dir)?;
    let tokens = Tokens::new(store.clone());
    let supplied = std::env::var("AGENTCOM_ADMIN_TOKEN").ok();
    if let Some(token) = tokens.init_admin(supplied.as_deref())? {
        println!("admin token (shown once; store it now): {token}");
    }
    tracing::info!(data_dir = %config.data_dir.display(), "starting hub");
    actix_web::rt::System::new()
        .block_on(server::serve(config, store, |addr| {
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

fn agent(action: AgentAction) -> Result<(), Fatal> {
    match action {
        AgentAction::Add {
            name,
            capabilities,
            common,
        } => {
            valid_agent_id(&name)?;
            let config = load_config(&common, None)?;
            let tokens = Tokens::new(Store::open(&config.data_dir)?);
            let caps = capabilities
                .into_iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            match tokens.issue_now(&name, caps) {
                Ok((token, _)) => {
                    println!("{token}");
                    Ok(())
                }
                Err(IssueError::AlreadyExists) => Err(Fatal {
                    code: 1,
                    message: format!("agent {name} already exists (revoke it first)"),
                }),
                Err(IssueError::Store(e)) => Err(e.into()),
            }
        }
        AgentAction::List { common } => {
            let config = load_config(&common, None)?;
            let tokens = Tokens::new(Store::open(&config.data_dir)?);
            for r in tokens.list()? {
                println!(
                    "{}\t{}…\t{}",
                    r.agent_id,
                    r.token_prefix,
                    r.capabilities.join(",")
                );
            }
            Ok(())
        }
        AgentAction::Revoke { name, common } => {
            let config = load_config(&common, None)?;
            let tokens = Tokens::new(Store::open(&config.data_dir)?);
            if tokens.revoke_now(&name)? {
                println!("revoked {name}");
                Ok(())
            } else {
                Err(Fatal {
                    code: 1,
                    message: format!("no agent named {name}"),
                })
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { common, bind } => serve(common, bind),
        Command::Agent { action } => agent(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("agentcom-hub: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
