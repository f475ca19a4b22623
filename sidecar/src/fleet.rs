//! The agents installed on this machine: one directory and one systemd user
//! unit instance per agent, so a machine runs a whole fleet.
//!
//! ```text
//! ~/.agentcom/sidecar/<agent>/           config.toml, state/, results/, logs
//! $XDG_CONFIG_HOME/systemd/user/
//!   agentcom-sidecar@.service            the template: `agentcom-sidecar run`
//!   agentcom-sidecar@<agent>.service.d/agentcom.conf
//!                                        AGENTCOM_SIDECAR_CONFIG for this agent
//! ```
//!
//! `list` finds the agents (per-agent directories, the single-agent layout of
//! older joins, and unit drop-ins pointing elsewhere); `remove` stops and
//! forgets one, revoking its token only when asked.
//!
//! Architecture invariant: this module manages installations; it never runs
//! the relay and never changes a running sidecar's state directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::config::{self, Config};
use crate::http;
use crate::inbox;
use crate::state;

pub const TEMPLATE: &str = "agentcom-sidecar@.service";
/// The unit of the single-agent layout (joins before units were per agent).
pub const LEGACY_UNIT: &str = "agentcom-sidecar.service";
const DROP_IN: &str = "agentcom.conf";

/// `~/.agentcom/sidecar`: where joined agents live.
pub fn root() -> Option<PathBuf> {
    config::home_dir().map(|h| h.join(".agentcom").join("sidecar"))
}

/// `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`).
pub fn unit_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config::home_dir().map(|h| h.join(".config")))?;
    Some(base.join("systemd").join("user"))
}

/// The unit instance name of an agent: characters systemd does not take in an
/// instance name are escaped the way `systemd-escape` does (`\xNN`).
pub fn unit_name(agent_id: &str) -> String {
    let mut inst = String::new();
    for (i, b) in agent_id.bytes().enumerate() {
        let plain =
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':') || (b == b'.' && i > 0);
        if plain {
            inst.push(b as char);
        } else {
            inst.push_str(&format!("\\x{b:02x}"));
        }
    }
    format!("agentcom-sidecar@{inst}.service")
}

/// `%` is a specifier in unit files.
fn unit_escape(text: &str) -> String {
    text.replace('%', "%%")
}

pub fn template_text(exe: &Path) -> String {
    format!(
        "[Unit]\nDescription=AgentCom sidecar for agent %I\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\n# The agent's config comes from its drop-in (AGENTCOM_SIDECAR_CONFIG).\n\
         ExecStart=\"{exe}\" run\nRestart=always\nRestartSec=5\n\
         # Stopping or restarting the sidecar must not kill the agent it woke; the\n\
         # sidecar recovers the task when it comes back.\nKillMode=process\n\n\
         [Install]\nWantedBy=default.target\n",
        exe = unit_escape(&exe.display().to_string()),
    )
}

pub fn drop_in_text(cfg: &Config) -> String {
    format!(
        "[Service]\nEnvironment=\"AGENTCOM_SIDECAR_CONFIG={}\"\n",
        unit_escape(&cfg.path.display().to_string())
    )
}

fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("systemctl --user {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "systemctl --user {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes the template (shared) and this agent's drop-in, then enables and
/// (re)starts this agent's instance. Other agents' units are not touched.
pub fn install_unit(exe: &Path, cfg: &Config) -> Result<String, String> {
    let dir = unit_dir().ok_or("neither XDG_CONFIG_HOME nor HOME is set")?;
    let unit = unit_name(&cfg.agent_id);
    let drop_dir = dir.join(format!("{unit}.d"));
    fs::create_dir_all(&drop_dir)
        .map_err(|e| format!("cannot create {}: {e}", drop_dir.display()))?;
    state::write_atomic(&dir.join(TEMPLATE), template_text(exe).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", dir.join(TEMPLATE).display()))?;
    state::write_atomic(&drop_dir.join(DROP_IN), drop_in_text(cfg).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", drop_dir.display()))?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", &unit])?;
    systemctl(&["restart", &unit])?;
    Ok(unit)
}

/// The per-agent steps for a machine without a usable systemd user manager.
pub fn print_manual_steps(exe: &Path, cfg: &Config, why: &str) {
    let unit = unit_name(&cfg.agent_id);
    println!("no systemd user service was installed ({why}).");
    println!("to run this agent's sidecar permanently, start this command under your process supervisor:");
    println!(
        "    AGENTCOM_SIDECAR_CONFIG=\"{}\" \"{}\" run     (or: run --config \"{}\")",
        cfg.path.display(),
        exe.display(),
        cfg.path.display()
    );
    println!("or, where systemd user services are available, install the template ~/.config/systemd/user/{TEMPLATE} (once per machine):");
    for line in template_text(exe).lines() {
        println!("    {line}");
    }
    println!("and this agent's drop-in ~/.config/systemd/user/{unit}.d/{DROP_IN}:");
    for line in drop_in_text(cfg).lines() {
        println!("    {line}");
    }
    println!("then: systemctl --user daemon-reload && systemctl --user enable --now '{unit}'");
}

/// One agent installed on this machine.
#[derive(Debug, Clone)]
pub struct Installed {
    pub agent_id: String,
    pub config: PathBuf,
    /// Its unit, when one was installed.
    pub unit: Option<String>,
}

/// Every agent installed here, by agent id.
pub fn installed() -> Vec<Installed> {
    let mut found: Vec<Installed> = Vec::new();
    let mut add = |config: PathBuf, unit: Option<String>| {
        let Ok(cfg) = Config::load(&config) else {
            return;
        };
        if let Some(i) = found.iter_mut().find(|i| i.config == config) {
            if unit.is_some() {
                i.unit = unit;
            }
        } else {
            found.push(Installed {
                agent_id: cfg.agent_id,
                config,
                unit,
            });
        }
    };
    let units = unit_dir();
    if let Some(root) = root() {
        let legacy = root.join("config.toml");
        if legacy.exists() {
            let unit = units
                .as_ref()
                .filter(|d| d.join(LEGACY_UNIT).exists())
                .map(|_| LEGACY_UNIT.to_string());
            add(legacy, unit);
        }
        let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.sort();
        for dir in dirs {
            let hidden = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if dir.join("config.toml").is_file() && !hidden {
                add(dir.join("config.toml"), None);
            }
        }
    }
    if let Some(units) = units {
        let mut drop_ins: Vec<PathBuf> = fs::read_dir(&units)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        drop_ins.sort();
        for d in drop_ins {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(unit) = name.as_deref().and_then(|n| n.strip_suffix(".d")) else {
                continue;
            };
            if !unit.starts_with("agentcom-sidecar@") {
                continue;
            }
            if let Some(config) = fs::read_to_string(d.join(DROP_IN))
                .ok()
                .as_deref()
                .and_then(config_of_drop_in)
            {
                add(config, Some(unit.to_string()));
            }
        }
    }
    // A per-agent directory and its unit are one installation.
    for i in &mut found {
        if i.unit.is_none() {
            let unit = unit_name(&i.agent_id);
            if unit_dir().is_some_and(|d| d.join(format!("{unit}.d")).exists()) {
                i.unit = Some(unit);
            }
        }
    }
    found.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    found
}

fn config_of_drop_in(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("Environment=")?;
        let v = v
            .trim_matches('"')
            .strip_prefix("AGENTCOM_SIDECAR_CONFIG=")?;
        Some(PathBuf::from(v.replace("%%", "%")))
    })
}

/// What `list` shows of one agent.
pub fn describe(i: &Installed) -> Value {
    let service = match &i.unit {
        Some(unit) => match Command::new("systemctl")
            .args(["--user", "is-active", unit])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(_) => "unknown (no systemctl)".into(),
        },
        None => background_state(i.config.parent().unwrap_or(Path::new("."))),
    };
    let cfg = Config::load(&i.config).ok();
    let held: Vec<Value> = cfg
        .as_ref()
        .map(|c| state::held_records(&c.state_dir))
        .unwrap_or_default()
        .iter()
        .map(|r| json!({"task_id": r.task_id(), "phase": r.phase}))
        .collect();
    let unread = cfg
        .as_ref()
        .and_then(|c| inbox::unread(&inbox::inbox_dir(&c.state_dir)).ok())
        .map_or(0, |u| u.len());
    json!({
        "agent_id": i.agent_id,
        "config": i.config.display().to_string(),
        "unit": i.unit,
        "state": service,
        "hub": cfg.as_ref().map(|c| c.hub_api_url.clone()),
        "current_task": held.first(),
        "held_tasks": held,
        "slots": cfg.as_ref().map(|c| c.slots),
        "unread_messages": unread,
    })
}

/// A sidecar join started in the background (`sidecar.pid` in its directory).
pub fn background_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(dir.join("sidecar.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 1 {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("agentcom-sidecar")
        .then_some(pid)
}

fn background_state(dir: &Path) -> String {
    match background_pid(dir) {
        Some(pid) => format!("running in the background (pid {pid})"),
        None => "not running (no service)".into(),
    }
}

/// `remove NAME [--revoke]`: stop the agent's sidecar, remove its unit, move
/// its directory aside (under `~/.agentcom/sidecar/.removed/`, when it lives in
/// the usual place), and revoke its hub token only with `revoke`.
pub fn remove(agent_id: &str, revoke: bool) -> Result<Vec<String>, String> {
    let all = installed();
    let Some(i) = all.iter().find(|i| i.agent_id == agent_id) else {
        let names: Vec<&str> = all.iter().map(|i| i.agent_id.as_str()).collect();
        return Err(format!(
            "no agent {agent_id:?} is installed here (installed: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let mut done = Vec::new();
    let cfg = Config::load(&i.config).map_err(|e| e.to_string())?;
    for r in state::held_records(&cfg.state_dir) {
        done.push(format!(
            "warning: it held task {:?}; the hub takes it back when the sidecar disconnects",
            r.task_id()
        ));
    }
    if let Some(unit) = &i.unit {
        systemctl(&["disable", "--now", unit])?;
        if let Some(dir) = unit_dir() {
            let drop_dir = dir.join(format!("{unit}.d"));
            if drop_dir.exists() {
                fs::remove_dir_all(&drop_dir)
                    .map_err(|e| format!("cannot remove {}: {e}", drop_dir.display()))?;
            }
            if unit == LEGACY_UNIT {
                let _ = fs::remove_file(dir.join(LEGACY_UNIT));
            }
        }
        let _ = systemctl(&["daemon-reload"]);
        done.push(format!("stopped and removed {unit}"));
    }
    let dir = i.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    if let Some(pid) = background_pid(&dir) {
        // SAFETY: kill only sends a signal to the pid the sidecar wrote.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        done.push(format!("stopped the background sidecar (pid {pid})"));
    }
    if revoke {
        let path = format!("/api/agents/{}/token", cfg.agent_id);
        match http::to_hub(&cfg.hub_api_urls, "DELETE", &path, Some(&cfg.token), None) {
            Ok((200, _)) => done.push(format!("revoked its token on {}", cfg.hub_api_url)),
            Ok((status, body)) => {
                return Err(format!(
                    "the hub did not revoke the token (HTTP {status}: {body}); the sidecar is already stopped"
                ))
            }
            Err(e) => return Err(format!("cannot reach the hub to revoke the token: {e}")),
        }
    }
    let usual = root().filter(|r| dir.parent() == Some(r.as_path()) && dir != *r);
    match usual {
        Some(root) => {
            let aside = root
                .join(".removed")
                .join(format!("{}-{}", agent_id, state::now_ms()));
            fs::create_dir_all(root.join(".removed"))
                .and_then(|()| fs::rename(&dir, &aside))
                .map_err(|e| format!("cannot move {} aside: {e}", dir.display()))?;
            done.push(format!("moved its directory to {}", aside.display()));
        }
        None => done.push(format!("its files stay in {}", dir.display())),
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_escape_what_systemd_does_not_take() {
        assert_eq!(unit_name("builder-1"), "agentcom-sidecar@builder-1.service");
        assert_eq!(unit_name("a.b_c:d"), "agentcom-sidecar@a.b_c:d.service");
        assert_eq!(unit_name(".x y"), "agentcom-sidecar@\\x2ex\\x20y.service");
    }

    #[test]
    fn a_drop_in_names_its_config() {
        let text = "[Service]\nEnvironment=\"AGENTCOM_SIDECAR_CONFIG=/a/100%%/config.toml\"\n";
        assert_eq!(
            config_of_drop_in(text),
            Some(PathBuf::from("/a/100%/config.toml"))
        );
        assert_eq!(config_of_drop_in("[Service]\n"), None);
    }
}
