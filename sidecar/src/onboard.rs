//! `agentcom-sidecar join`: one command from invite to a verified agent.
//!
//! 1. Register with the one-time invite (`POST /api/onboard/register`). Nothing
//!    is written before the hub says yes, so a bad invite leaves no trace.
//! 2. Write the config atomically (mode 0600: it holds the token).
//! 3. Run the sidecar: as this agent's instance of the systemd user unit
//!    template (`agentcom-sidecar@<agent>.service`) when `systemctl --user` works;
//!    otherwise print the manual steps and start it as a detached background
//!    process (own session, pid file `sidecar.pid`, output in `sidecar.log`).
//! 4. Verify the whole path: submit an onboarding task routed to this agent only
//!    (`agent:<id>`), which the sidecar completes itself, and wait for it.
//!
//! Re-running resumes: an existing config for the same agent is kept (the invite
//! is not used again), a running background sidecar is reused, and the
//! verification runs again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{self, Config};
use crate::fleet;
use crate::http;
use crate::state;

/// What `join` was asked to do.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub hub: String,
    pub agent_id: String,
    pub invite: String,
    pub capabilities: Vec<String>,
    pub dir: Option<PathBuf>,
    pub wake_command: Option<String>,
    pub no_service: bool,
    pub verify_timeout: Duration,
}

/// A failure of `join`, with its exit code.
#[derive(Debug)]
pub struct JoinError {
    pub code: u8,
    pub message: String,
}

fn err(code: u8, message: impl Into<String>) -> JoinError {
    JoinError {
        code,
        message: message.into(),
    }
}

/// The agent's home: `--dir`, else `$HOME/.agentcom/sidecar/<agent>` (or the
/// single-agent `$HOME/.agentcom/sidecar` of an older join of the same agent).
fn sidecar_dir(args: &JoinArgs) -> Result<PathBuf, JoinError> {
    if let Some(d) = &args.dir {
        return Ok(d.clone());
    }
    let root = fleet::root().ok_or_else(|| err(2, "HOME is not set; pass --dir"))?;
    let legacy = Config::load(&root.join("config.toml")).ok();
    if legacy.is_some_and(|c| c.agent_id == args.agent_id) {
        return Ok(root);
    }
    Ok(root.join(&args.agent_id))
}

fn api_base(hub: &str) -> String {
    let hub = hub.trim_end_matches('/');
    if hub.starts_with("ws://") || hub.starts_with("wss://") {
        config::api_url_from_ws(hub)
    } else {
        hub.to_string()
    }
}

pub fn join(args: &JoinArgs) -> Result<(), JoinError> {
    if args.agent_id.is_empty() || args.agent_id.chars().count() > 128 {
        return Err(err(2, "--agent-id must be 1 to 128 characters"));
    }
    // One hub, or several on one database (comma-separated): registration
    // goes to the active one.
    let bases: Vec<String> = agentcom_protocol::split_hub_urls(&args.hub)
        .iter()
        .map(|h| api_base(h))
        .collect();
    if bases.is_empty()
        || bases.len() > agentcom_protocol::MAX_HUB_URLS
        || !bases
            .iter()
            .all(|b| b.starts_with("http://") || b.starts_with("https://"))
    {
        return Err(err(
            2,
            "--hub must be an http(s):// or ws(s):// URL, or several separated by commas",
        ));
    }
    let base = bases[0].clone();
    let dir = sidecar_dir(args)?;
    let config_path = dir.join("config.toml");

    // 1 + 2: register and write the config, or resume with the existing one.
    let cfg = if config_path.exists() {
        let cfg = Config::load(&config_path).map_err(|e| {
            err(
                1,
                format!(
                    "{} exists but is not usable ({e}); move it away and run join again",
                    config_path.display()
                ),
            )
        })?;
        if cfg.agent_id != args.agent_id {
            return Err(err(
                1,
                format!(
                    "{} already configures agent {:?}; use --dir for a second agent on this machine",
                    config_path.display(),
                    cfg.agent_id
                ),
            ));
        }
        println!(
            "config for agent {} already exists at {}; registration skipped (the invite was not used)",
            cfg.agent_id,
            config_path.display()
        );
        cfg
    } else {
        let reg = register(&bases, args)?;
        write_config(&dir, &config_path, args, &bases, &reg)?;
        println!(
            "registered agent {} with {}; config written to {}",
            args.agent_id,
            base,
            config_path.display()
        );
        Config::load(&config_path)
            .map_err(|e| err(1, format!("the written config does not load: {e}")))?
    };

    // 3: run it.
    let exe = std::env::current_exe()
        .map_err(|e| err(1, format!("cannot locate this executable: {e}")))?;
    let mut started: Option<std::process::Child> = None;
    match systemd_user(args) {
        Ok(()) => install_service(&exe, &cfg)?,
        Err(why) => {
            fleet::print_manual_steps(&exe, &cfg, &why);
            started = start_detached(&exe, &cfg, &dir)?;
        }
    }

    // 4: verify.
    verify(&cfg, args.verify_timeout, &dir, started.as_mut())
}

/// The hub's answer to a registration.
struct Registration {
    token: String,
    capabilities: Vec<String>,
    hub_ws_url: Option<String>,
    hub_api_url: Option<String>,
    default_repo: Option<String>,
    /// Every hub of the database, when the hub's config names them.
    hub_urls: Vec<String>,
}

fn register(bases: &[String], args: &JoinArgs) -> Result<Registration, JoinError> {
    let body = json!({"agent_id": args.agent_id, "invite": args.invite});
    let (status, resp) = http::to_hub(bases, "POST", "/api/onboard/register", None, Some(&body))
        .map_err(|e| err(1, format!("cannot reach the hub: {e}")))?;
    match status {
        200 | 201 => {
            let token = resp["token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err(1, format!("the hub's registration reply has no token: {resp}")))?;
            let text = |k: &str| resp[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            Ok(Registration {
                token: token.to_string(),
                capabilities: resp["capabilities"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                hub_ws_url: text("hub_ws_url"),
                hub_api_url: text("hub_api_url"),
                default_repo: text("default_repo"),
                hub_urls: resp["hub_urls"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                            .map(|u| u.trim_end_matches('/').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        }
        403 => Err(err(
            1,
            "the hub refused the invite: it is invalid, expired, already used, or for another agent name. Ask the hub operator for a new one (agentcom-hub agent invite NAME). Nothing was written.",
        )),
        409 => Err(err(
            1,
            format!(
                "agent {:?} already exists on the hub. Choose another name, or ask the operator to revoke it. Nothing was written.",
                args.agent_id
            ),
        )),
        _ => Err(err(
            1,
            format!("registration failed with HTTP {status}: {resp}. Nothing was written."),
        )),
    }
}

fn write_config(
    dir: &Path,
    path: &Path,
    args: &JoinArgs,
    bases: &[String],
    reg: &Registration,
) -> Result<(), JoinError> {
    let mut table = toml::Table::new();
    table.insert("agent_id".into(), args.agent_id.clone().into());
    table.insert("token".into(), reg.token.clone().into());
    // Several hubs (the hub's config names them, or --hub did): the sidecar
    // follows the active one.
    let several = match (reg.hub_urls.len() > 1, bases.len() > 1) {
        (true, _) => Some(reg.hub_urls.clone()),
        (false, true) => Some(bases.to_vec()),
        (false, false) => None,
    };
    if let Some(apis) = several.filter(|a| a.len() <= agentcom_protocol::MAX_HUB_URLS) {
        let list =
            |urls: Vec<String>| toml::Value::Array(urls.into_iter().map(Into::into).collect());
        table.insert(
            "hub_urls".into(),
            list(apis.iter().map(|a| config::ws_url_from_api(a)).collect()),
        );
        table.insert("hub_api_urls".into(), list(apis));
    } else {
        let api = reg.hub_api_url.clone().unwrap_or_else(|| bases[0].clone());
        let ws = reg
            .hub_ws_url
            .clone()
            .unwrap_or_else(|| config::ws_url_from_api(&api));
        table.insert("hub_url".into(), ws.into());
        table.insert("hub_api_url".into(), api.trim_end_matches('/').into());
    }
    // The invite's capabilities (as the hub recorded them) unless given here.
    let caps = if args.capabilities.is_empty() {
        &reg.capabilities
    } else {
        &args.capabilities
    };
    table.insert(
        "capabilities".into(),
        toml::Value::Array(caps.iter().map(|c| c.clone().into()).collect()),
    );
    if let Some(w) = &args.wake_command {
        table.insert("wake_command".into(), w.clone().into());
    }
    table.insert("results_dir".into(), "results".into());
    table.insert("state_dir".into(), "state".into());
    table.insert("log_file".into(), "sidecar.log".into());
    let body =
        toml::to_string(&table).map_err(|e| err(1, format!("cannot encode the config: {e}")))?;
    let mut text = String::from(
        "# AgentCom sidecar configuration, written by `agentcom-sidecar join`.\n# Holds the agent's token: keep it private (mode 0600).\n",
    );
    if args.wake_command.is_none() {
        text.push_str("# Set how the agent is woken, e.g.:\n# wake_command = \"my-agent --task-file \\\"$TASK_JSON_FILE\\\"\"\n");
    }
    if let Some(repo) = &reg.default_repo {
        text.push_str(&format!(
            "# The hub's default repository: {repo}\n# repo_dir = \"/path/to/your/checkout\"\n"
        ));
    }
    text.push_str(&body);
    // Validate before anything touches the disk.
    Config::parse(&text, path)
        .map_err(|e| err(1, format!("the generated config is invalid: {e}")))?;
    create_private_dir(dir)?;
    if let Err(e) = state::write_atomic_private(path, text.as_bytes()) {
        eprintln!(
            "agentcom-sidecar: registration succeeded but the config could not be written; the agent token is:\n{}",
            reg.token
        );
        return Err(err(1, format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), JoinError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(1, format!("cannot create {}: {e}", dir.display())))
}

/// `Ok` when a systemd user manager is reachable.
fn systemd_user(args: &JoinArgs) -> Result<(), String> {
    if args.no_service {
        return Err("--no-service was given".into());
    }
    match Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "systemctl --user is not usable: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("systemctl is not available: {e}")),
    }
}

/// Installs this agent's unit instance; other agents' units stay as they are.
/// An older join's single unit for this same agent is retired first, so one
/// agent never runs twice.
fn install_service(exe: &Path, cfg: &Config) -> Result<(), JoinError> {
    let legacy = fleet::unit_dir().map(|d| d.join(fleet::LEGACY_UNIT));
    let legacy_is_ours = legacy.as_ref().is_some_and(|l| l.exists())
        && fleet::root().is_some_and(|r| cfg.path == r.join("config.toml"));
    if legacy_is_ours {
        let _ = Command::new("systemctl")
            .args(["--user", "disable", "--now", fleet::LEGACY_UNIT])
            .output();
        if let Some(l) = &legacy {
            let _ = fs::remove_file(l);
        }
        println!("retired the single-agent unit {}", fleet::LEGACY_UNIT);
    }
    let unit = fleet::install_unit(exe, cfg).map_err(|e| err(1, e))?;
    println!("installed and started the systemd user service {unit}");
    println!("to keep it running after you log out: loginctl enable-linger $USER");
    Ok(())
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("sidecar.pid")
}

/// Starts `agentcom-sidecar run` detached (own session); reuses a running one.
fn start_detached(
    exe: &Path,
    cfg: &Config,
    dir: &Path,
) -> Result<Option<std::process::Child>, JoinError> {
    if let Some(pid) = fleet::background_pid(dir) {
        println!("a background sidecar started earlier is running (pid {pid}); reusing it");
        return Ok(None);
    }
    use std::os::unix::process::CommandExt;
    let log_path = dir.join("sidecar.out");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| err(1, format!("cannot open {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(1, format!("cannot open {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg.path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| err(1, format!("cannot start the sidecar: {e}")))?;
    let pid = child.id();
    state::write_atomic(&pid_file(dir), format!("{pid}\n").as_bytes())
        .map_err(|e| err(1, format!("cannot write the pid file: {e}")))?;
    println!(
        "started the sidecar in the background for now: pid {pid} (pid file {}, output {}); stop it with: kill $(cat {})",
        pid_file(dir).display(),
        log_path.display(),
        pid_file(dir).display()
    );
    Ok(Some(child))
}

/// Submits the onboarding task and waits until the sidecar completed it.
fn verify(
    cfg: &Config,
    timeout: Duration,
    dir: &Path,
    mut child: Option<&mut std::process::Child>,
) -> Result<(), JoinError> {
    let task = json!({
        "description": "AgentCom onboarding check",
        "priority": "urgent",
        "metadata": {"onboarding": true},
        "needed_capabilities": [format!("agent:{}", cfg.agent_id)],
    });
    let (status, resp) = http::to_hub(
        &cfg.hub_api_urls,
        "POST",
        "/api/tasks",
        Some(&cfg.token),
        Some(&task),
    )
    .map_err(|e| err(1, format!("cannot reach the hub to verify: {e}")))?;
    if status != 201 && status != 200 {
        return Err(err(
            1,
            format!("the hub refused the onboarding task (HTTP {status}): {resp}"),
        ));
    }
    let task_id = resp["task_id"]
        .as_str()
        .ok_or_else(|| err(1, format!("no task_id in the hub's reply: {resp}")))?
        .to_string();
    println!(
        "verifying: onboarding task {task_id} submitted; waiting for the sidecar to complete it"
    );
    let deadline = Instant::now() + timeout;
    let task_path = format!("/api/tasks/{task_id}");
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(err(
                    1,
                    format!(
                        "the sidecar exited ({status}) before verification; see {}",
                        dir.join("sidecar.out").display()
                    ),
                ));
            }
        }
        if let Ok((200, t)) =
            http::to_hub(&cfg.hub_api_urls, "GET", &task_path, Some(&cfg.token), None)
        {
            match t["status"].as_str() {
                Some("completed") => {
                    println!(
                        "verified: agent {} is connected to {} and completed onboarding task {task_id}",
                        cfg.agent_id, cfg.hub_api_url
                    );
                    return Ok(());
                }
                Some("dead_letter") | Some("cancelled") => {
                    return Err(err(
                        1,
                        format!("the onboarding task ended as {}: {t}", t["status"]),
                    ))
                }
                _ => last = t,
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(err(
        1,
        format!(
            "not verified: onboarding task {task_id} was not completed within {} s (last state: {}). Is the sidecar running? Its log: {}",
            timeout.as_secs(),
            last["status"],
            cfg.log_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "stderr".into())
        ),
    ))
}
