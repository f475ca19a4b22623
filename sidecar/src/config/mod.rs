//! The sidecar's configuration: a TOML file, or the v1.1 `config.json`.
//!
//! Every field is read by name from the parsed document, so a missing or bad
//! value is reported with the field's name (exit code 2). Relative paths are
//! taken relative to the directory of the config file, so a service started from
//! any working directory finds the same state.
//!
//! Architecture invariant: this module reads and validates; it starts nothing and
//! creates no directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentcom_protocol::{check_slot_count, MAX_SLOTS};
use serde_json::{Map, Value};

mod hubs;
pub use hubs::{api_url_from_ws, ws_url_from_api};

/// A configuration problem, naming the field it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The field (`agent_id`, `wake_command[1]`, ...) or `""` for the file itself.
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid configuration: {}", self.problem)
        } else {
            write!(
                f,
                "invalid configuration: field `{}`: {}",
                self.field, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// How the agent is woken.
#[derive(Debug, Clone, PartialEq)]
pub enum WakeCommand {
    /// Run through `sh -c`; task values reach it only as environment variables.
    Shell(String),
    /// Run directly (no shell); `${TASK_ID}`, `${TASK_DESCRIPTION}` and
    /// `${TASK_JSON}` inside an argument are replaced by the value, as one argument.
    Argv(Vec<String>),
}

/// What the sidecar wakes (ext, #20).
#[derive(Debug, Clone, PartialEq)]
pub enum Runtime {
    /// `wake_command`, as configured.
    Command,
    /// `claude -p` with the task on stdin and `--output-format stream-json`,
    /// in `repo_dir`; the sidecar turns the stream into the agent's files.
    ClaudeCode { command: String, args: Vec<String> },
    /// OpenClaw's hook wake: `POST <url>/hooks/agent` with the task; the agent
    /// runs detached and writes the heartbeat and result files.
    OpenClaw { url: String, token: Option<String> },
}

/// How the sidecar knows the woken agent is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeMode {
    /// The woken process group is the agent: when it is empty and no result
    /// appeared within `agent_exit_grace_ms`, the attempt failed `agent_exited`.
    Process,
    /// The wake returns at once (a webhook, a daemon's client): the agent shows
    /// it is alive by writing `results/<id>.heartbeat` or the progress file.
    Detached,
}

/// Validated sidecar configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub agent_id: String,
    pub token: String,
    /// Display name sent with `identify` (default: agent_id).
    pub name: Option<String>,
    /// `http://host:port` (derived from hub_url when absent): the first of
    /// `hub_api_urls`.
    pub hub_api_url: String,
    /// Every hub's WebSocket URL (ext, #22: hubs on one Postgres, one active):
    /// `hub_urls`, else `[hub_url]`.
    pub hub_urls: Vec<String>,
    /// Every hub's HTTP API URL, in the order of `hub_urls`.
    pub hub_api_urls: Vec<String>,
    pub capabilities: Vec<String>,
    /// How many tasks it asks to run at once, each with its own worker (not
    /// set: what its token says, else 1).
    pub slots: Option<u32>,
    /// One of the slots is kept for standing-order runs.
    pub reserve_slot_for_standing: bool,
    pub wake_command: Option<WakeCommand>,
    /// Run for each new inbox message (values only through the environment).
    pub message_command: Option<WakeCommand>,
    pub wake_mode: WakeMode,
    pub state_dir: PathBuf,
    pub results_dir: PathBuf,
    pub repo_dir: Option<PathBuf>,
    pub reviewer: Option<String>,
    /// `gh pr merge --<method>` of an approved pull request: merge, squash
    /// (the default) or rebase.
    pub merge_method: String,
    /// The GitHub CLI (default `gh` on PATH).
    pub gh_command: String,
    /// What wakes the agent: a command (default), Claude Code, or OpenClaw.
    pub runtime: Runtime,
    pub log_file: Option<PathBuf>,
    pub log_level: String,
    pub timings: Timings,
}

/// Every wait the sidecar makes; all configurable so tests can shorten them.
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    /// After a successful wake, how long to wait for `results/<id>.started`.
    pub confirmation_timeout: Duration,
    /// Longest a wake command may run.
    pub wake_timeout: Duration,
    /// Waits between wake attempts; attempts = 1 + len.
    pub wake_retry_delays: Vec<Duration>,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// How often `task_progress` renews the lease while the agent works
    /// (`None`: a third of the task's lease, at most 60 s).
    pub progress_interval: Option<Duration>,
    /// Poll fallback for the results directory (file events are the fast path).
    pub results_poll: Duration,
    /// How long an unparseable result file may stay unparseable (being written).
    pub result_settle: Duration,
    /// After `task_reassign`, how long the woken processes are left running in
    /// case the hub gives the same task straight back.
    pub release_grace: Duration,
    /// SIGTERM → SIGKILL grace when stopping a woken process group.
    pub kill_grace: Duration,
    /// Re-send delay for a report the hub could not take (`hub_unavailable`).
    pub outbox_retry: Duration,
    /// `process` mode: how long a result may take to appear after the woken
    /// process group is empty.
    pub agent_exit_grace: Duration,
    /// No agent activity (output, heartbeat or progress write) for this long:
    /// the attempt failed `stalled` (`None`: never; a task's `stall_ms` wins).
    pub stall: Option<Duration>,
    /// Longest one attempt may run: `timeout` (`None`: no limit; a task's
    /// `max_runtime_ms` wins).
    pub max_runtime: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            confirmation_timeout: Duration::from_secs(120),
            wake_timeout: Duration::from_secs(60),
            wake_retry_delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(30),
            ],
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            progress_interval: None,
            results_poll: Duration::from_secs(2),
            result_settle: Duration::from_secs(10),
            release_grace: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            outbox_retry: Duration::from_secs(5),
            agent_exit_grace: Duration::from_secs(10),
            stall: Some(Duration::from_secs(15 * 60)),
            max_runtime: None,
        }
    }
}

/// Every key a TOML config may contain (unknown keys are refused there; the v1.1
/// JSON config may carry extra keys and they are ignored).
const KNOWN_KEYS: &[&str] = &[
    "agent_id",
    "token",
    "name",
    "hub_url",
    "hub_urls",
    "hub_api_url",
    "hub_api_urls",
    "capabilities",
    "wake_command",
    "confirmation_timeout_ms",
    "results_dir",
    "state_dir",
    "repo_dir",
    "reviewer",
    "merge_method",
    "gh_command",
    "runtime",
    "claude_command",
    "claude_args",
    "openclaw_url",
    "openclaw_token",
    "log_file",
    "log_level",
    "wake_timeout_ms",
    "wake_retry_delays_ms",
    "ping_interval_ms",
    "pong_timeout_ms",
    "reconnect_initial_ms",
    "reconnect_max_ms",
    "progress_interval_ms",
    "results_poll_ms",
    "result_settle_ms",
    "release_grace_ms",
    "kill_grace_ms",
    "outbox_retry_ms",
    "wake_mode",
    "message_command",
    "agent_exit_grace_ms",
    "stall_ms",
    "max_runtime_ms",
    "slots",
    "reserve_slot_for_standing",
];

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

impl Config {
    /// Reads and validates `path` (TOML, or JSON when it ends in `.json` or starts
    /// with `{`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let is_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let doc: Value = if is_json {
            serde_json::from_str(text).map_err(|e| {
                ConfigError::new("", format!("{} is not valid JSON: {e}", path.display()))
            })?
        } else {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                ConfigError::new("", format!("{} is not valid TOML: {e}", path.display()))
            })?;
            serde_json::to_value(table)
                .map_err(|e| ConfigError::new("", format!("unreadable TOML: {e}")))?
        };
        let Value::Object(map) = doc else {
            return Err(ConfigError::new("", "the file must hold a table / object"));
        };
        if !is_json {
            if let Some(unknown) = map.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
                return Err(ConfigError::new(unknown, "unknown key"));
            }
        }
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let f = Fields { map: &map };

        let agent_id = f.req_str("agent_id", 128)?;
        let token = f.req_str("token", 256)?;
        let name = f.opt_str("name", 256)?;
        let (hub_urls, hub_api_urls) = hubs::hub_lists(&f)?;
        let hub_api_url = hub_api_urls[0].clone();
        let capabilities = f.opt_str_list("capabilities")?.unwrap_or_default();
        let slots = match f.get("slots") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if check_slot_count("slots", n).is_none() => Some(n as u32),
                _ => {
                    return Err(ConfigError::new(
                        "slots",
                        format!("expected a whole number from 1 to {MAX_SLOTS}"),
                    ))
                }
            },
        };
        let reserve_slot_for_standing = match f.get("reserve_slot_for_standing") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ConfigError::new(
                    "reserve_slot_for_standing",
                    "expected true or false",
                ))
            }
        };
        if reserve_slot_for_standing && slots.unwrap_or(1) < 2 {
            return Err(ConfigError::new(
                "reserve_slot_for_standing",
                "needs slots = 2 or more (one slot is kept for standing orders)",
            ));
        }
        let mut wake_command = command(&f, "wake_command")?;
        let message_command = command(&f, "message_command")?;
        let mut wake_mode = match f.opt_str("wake_mode", 16)?.as_deref() {
            None | Some("process") => WakeMode::Process,
            Some("detached") => WakeMode::Detached,
            Some(_) => {
                return Err(ConfigError::new(
                    "wake_mode",
                    "expected \"process\" (the woken processes are the agent) or \"detached\" (the agent writes a heartbeat)",
                ))
            }
        };
        let runtime = runtime(&f)?;
        if runtime != Runtime::Command {
            if wake_command.is_some() {
                return Err(ConfigError::new(
                    "wake_command",
                    "a runtime wakes the agent itself: remove wake_command, or set runtime = \"command\"",
                ));
            }
            // The sidecar's own binary does the runtime's wake.
            let exe = std::env::current_exe()
                .map_err(|e| ConfigError::new("runtime", format!("cannot find this program: {e}")))?
                .display()
                .to_string();
            let (sub, mode) = match runtime {
                Runtime::ClaudeCode { .. } => ("claude-run", WakeMode::Process),
                _ => ("openclaw-wake", WakeMode::Detached),
            };
            wake_command = Some(WakeCommand::Argv(vec![exe, sub.to_string()]));
            wake_mode = mode;
        }
        let state_dir = f
            .opt_path("state_dir", &base)?
            .unwrap_or_else(|| base.join("state"));
        let results_dir = f
            .opt_path("results_dir", &base)?
            .unwrap_or_else(|| base.join("results"));
        let repo_dir = f.opt_path("repo_dir", &base)?;
        let reviewer = f.opt_str("reviewer", 256)?;
        let merge_method = f
            .opt_str("merge_method", 16)?
            .unwrap_or_else(|| "squash".to_string());
        if !["merge", "squash", "rebase"].contains(&merge_method.as_str()) {
            return Err(ConfigError::new(
                "merge_method",
                "expected merge, squash or rebase",
            ));
        }
        let gh_command = f
            .opt_str("gh_command", 4096)?
            .unwrap_or_else(|| "gh".to_string());
        let log_file = f.opt_path("log_file", &base)?;
        let log_level = f
            .opt_str("log_level", 16)?
            .unwrap_or_else(|| "info".to_string());
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(ConfigError::new(
                "log_level",
                format!("expected one of {}", LOG_LEVELS.join(", ")),
            ));
        }

        let d = Timings::default();
        let ms = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(f.opt_ms(key)?.unwrap_or(default))
        };
        let wake_retry_delays = match map.get("wake_retry_delays_ms") {
            None | Some(Value::Null) => d.wake_retry_delays.clone(),
            Some(Value::Array(items)) => {
                if items.len() > 10 {
                    return Err(ConfigError::new(
                        "wake_retry_delays_ms",
                        "at most 10 delays",
                    ));
                }
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_u64() {
                        Some(n) if n <= 3_600_000 => out.push(Duration::from_millis(n)),
                        _ => {
                            return Err(ConfigError::new(
                                &format!("wake_retry_delays_ms[{i}]"),
                                "expected milliseconds (an integer 0..=3600000)",
                            ))
                        }
                    }
                }
                out
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "wake_retry_delays_ms",
                    "expected a list of milliseconds",
                ))
            }
        };
        let timings = Timings {
            confirmation_timeout: ms("confirmation_timeout_ms", d.confirmation_timeout)?,
            wake_timeout: ms("wake_timeout_ms", d.wake_timeout)?,
            wake_retry_delays,
            ping_interval: ms("ping_interval_ms", d.ping_interval)?,
            pong_timeout: ms("pong_timeout_ms", d.pong_timeout)?,
            reconnect_initial: ms("reconnect_initial_ms", d.reconnect_initial)?,
            reconnect_max: ms("reconnect_max_ms", d.reconnect_max)?,
            progress_interval: f.opt_ms("progress_interval_ms")?,
            results_poll: ms("results_poll_ms", d.results_poll)?,
            result_settle: ms("result_settle_ms", d.result_settle)?,
            release_grace: ms("release_grace_ms", d.release_grace)?,
            kill_grace: ms("kill_grace_ms", d.kill_grace)?,
            outbox_retry: ms("outbox_retry_ms", d.outbox_retry)?,
            agent_exit_grace: ms("agent_exit_grace_ms", d.agent_exit_grace)?,
            // 0 turns either limit off.
            stall: match f.opt_ms("stall_ms")? {
                None => d.stall,
                Some(v) => Some(v).filter(|v| !v.is_zero()),
            },
            max_runtime: f.opt_ms("max_runtime_ms")?.filter(|v| !v.is_zero()),
        };
        for (key, v) in [
            ("wake_timeout_ms", timings.wake_timeout),
            ("ping_interval_ms", timings.ping_interval),
            ("pong_timeout_ms", timings.pong_timeout),
            ("reconnect_initial_ms", timings.reconnect_initial),
            ("results_poll_ms", timings.results_poll),
        ] {
            if v.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if timings.reconnect_max < timings.reconnect_initial {
            return Err(ConfigError::new(
                "reconnect_max_ms",
                "must not be smaller than reconnect_initial_ms",
            ));
        }
        if timings.progress_interval.is_some_and(|p| p.is_zero()) {
            return Err(ConfigError::new(
                "progress_interval_ms",
                "must be greater than 0",
            ));
        }

        Ok(Config {
            path: path.to_path_buf(),
            agent_id,
            token,
            name,
            hub_api_url,
            hub_urls,
            hub_api_urls,
            capabilities,
            slots,
            reserve_slot_for_standing,
            wake_command,
            message_command,
            wake_mode,
            state_dir,
            results_dir,
            repo_dir,
            reviewer,
            merge_method,
            gh_command,
            runtime,
            log_file,
            log_level,
            timings,
        })
    }
}

/// `runtime` and its keys.
fn runtime(f: &Fields<'_>) -> Result<Runtime, ConfigError> {
    let name = f.opt_str("runtime", 32)?;
    let claude_keys = ["claude_command", "claude_args"];
    let openclaw_keys = ["openclaw_url", "openclaw_token"];
    let stray = |keys: &[&'static str], needs: &str| -> Result<(), ConfigError> {
        match keys.iter().find(|k| f.get(k).is_some()) {
            Some(k) => Err(ConfigError::new(
                k,
                format!("only with runtime = \"{needs}\""),
            )),
            None => Ok(()),
        }
    };
    match name.as_deref() {
        None | Some("command") => {
            stray(&claude_keys, "claude-code")?;
            stray(&openclaw_keys, "openclaw")?;
            Ok(Runtime::Command)
        }
        Some("claude-code") => {
            stray(&openclaw_keys, "openclaw")?;
            Ok(Runtime::ClaudeCode {
                command: f
                    .opt_str("claude_command", 4096)?
                    .unwrap_or_else(|| "claude".to_string()),
                args: f.opt_str_list("claude_args")?.unwrap_or_default(),
            })
        }
        Some("openclaw") => {
            stray(&claude_keys, "claude-code")?;
            let url = f
                .opt_str("openclaw_url", 2048)?
                .unwrap_or_else(|| "http://127.0.0.1:18789".to_string());
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "openclaw_url",
                    "must be an http:// or https:// URL (the OpenClaw gateway)",
                ));
            }
            Ok(Runtime::OpenClaw {
                url: url.trim_end_matches('/').to_string(),
                token: f.opt_str("openclaw_token", 1024)?,
            })
        }
        Some(_) => Err(ConfigError::new(
            "runtime",
            "expected \"command\" (wake_command), \"claude-code\" or \"openclaw\"",
        )),
    }
}

/// A command field: a string (run with `sh -c`) or a list (argv).
fn command(f: &Fields<'_>, key: &str) -> Result<Option<WakeCommand>, ConfigError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(ConfigError::new(key, "must not be empty"))
        }
        Some(Value::String(s)) => Ok(Some(WakeCommand::Shell(s.clone()))),
        Some(Value::Array(_)) => {
            let argv = f.opt_str_list(key)?.unwrap_or_default();
            if argv.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
            Ok(Some(WakeCommand::Argv(argv)))
        }
        Some(_) => Err(ConfigError::new(
            key,
            "expected a string (run with sh -c) or a list of strings (argv)",
        )),
    }
}

/// Typed, named access to the config document.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn req_str(&self, key: &str, max: usize) -> Result<String, ConfigError> {
        self.opt_str(key, max)?
            .ok_or_else(|| ConfigError::new(key, "is required"))
    }

    fn opt_str(&self, key: &str, max: usize) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(ConfigError::new(key, "must not be empty"))
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(ConfigError::new(key, format!("at most {max} characters")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(key, "expected a string")),
        }
    }

    fn opt_str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Some(items) = v.as_array() else {
            return Err(ConfigError::new(key, "expected a list of strings"));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.is_empty() => out.push(s.to_string()),
                _ => {
                    return Err(ConfigError::new(
                        &format!("{key}[{i}]"),
                        "expected a non-empty string",
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    fn opt_path(&self, key: &str, base: &Path) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.opt_str(key, 4096)?.map(|s| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        }))
    }

    fn opt_ms(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= 7 * 24 * 3_600_000 => Ok(Some(Duration::from_millis(n))),
                Some(_) => Err(ConfigError::new(key, "at most one week")),
                None => Err(ConfigError::new(
                    key,
                    "expected milliseconds (a non-negative integer)",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_checked() {
        assert_eq!(parse(MINIMAL).expect("minimal").slots, None);
        let c = parse(&format!(
            "{MINIMAL}slots = 3\nreserve_slot_for_standing = true\n"
        ))
        .expect("three slots");
        assert_eq!((c.slots, c.reserve_slot_for_standing), (Some(3), true));
        for bad in ["slots = 0", "slots = 33", "slots = \"2\""] {
            let e = parse(&format!("{MINIMAL}{bad}\n")).unwrap_err();
            assert_eq!(e.field, "slots", "{bad}");
        }
        let e = parse(&format!("{MINIMAL}reserve_slot_for_standing = true\n")).unwrap_err();
        assert_eq!(e.field, "reserve_slot_for_standing");
    }

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/agentcom/config.toml"))
    }

    const MINIMAL: &str = "agent_id = \"a1\"\ntoken = \"t\"\nhub_url = \"ws://h:4000/ws\"\n";

    #[test]
    fn minimal_toml_gets_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.hub_api_url, "http://h:4000");
        assert_eq!(c.state_dir, PathBuf::from("/etc/agentcom/state"));
        assert_eq!(c.results_dir, PathBuf::from("/etc/agentcom/results"));
        assert_eq!(c.timings, Timings::default());
        assert_eq!(c.wake_command, None);
        assert_eq!(c.wake_mode, WakeMode::Process);
        assert_eq!(c.timings.stall, Some(Duration::from_secs(900)));
        let c = parse(&format!(
            "{MINIMAL}wake_mode = \"detached\"\nstall_ms = 0\nmax_runtime_ms = 60000\n"
        ))
        .expect("valid");
        assert_eq!(c.wake_mode, WakeMode::Detached);
        assert_eq!(c.timings.stall, None);
        assert_eq!(c.timings.max_runtime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse("agent_id = \"a1\"\nhub_url = \"ws://h/ws\"\n").unwrap_err();
        assert_eq!(e.field, "token");
        assert!(e.to_string().contains("`token`"), "{e}");
    }

    #[test]
    fn wrong_types_are_named() {
        let e = parse(&format!("{MINIMAL}ping_interval_ms = \"30\"\n")).unwrap_err();
        assert_eq!(e.field, "ping_interval_ms");
        let e = parse(&format!("{MINIMAL}wake_command = 3\n")).unwrap_err();
        assert_eq!(e.field, "wake_command");
        let e = parse(&format!("{MINIMAL}capabilities = [\"a\", 1]\n")).unwrap_err();
        assert_eq!(e.field, "capabilities[1]");
        let e = parse(&format!("{MINIMAL}wake_retry_delays_ms = [1, -2]\n")).unwrap_err();
        assert_eq!(e.field, "wake_retry_delays_ms[1]");
        let e = parse(&format!("{MINIMAL}log_level = \"loud\"\n")).unwrap_err();
        assert_eq!(e.field, "log_level");
        let e = parse(&format!("{MINIMAL}wake_mode = \"webhook\"\n")).unwrap_err();
        assert_eq!(e.field, "wake_mode");
        let e = parse(&format!("{MINIMAL}stall_ms = -1\n")).unwrap_err();
        assert_eq!(e.field, "stall_ms");
        let e = parse("agent_id = \"a\"\ntoken = \"t\"\nhub_url = \"http://h\"\n").unwrap_err();
        assert_eq!(e.field, "hub_url");
    }

    #[test]
    fn unknown_toml_key_is_refused() {
        let e = parse(&format!("{MINIMAL}wake_comand = \"x\"\n")).unwrap_err();
        assert_eq!(e.field, "wake_comand");
    }

    #[test]
    fn v1_json_config_is_read_and_extra_keys_ignored() {
        let text = r#"{"agent_id":"a1","token":"t","hub_url":"wss://hub.example/ws",
            "hub_api_url":"https://hub.example","capabilities":["code"],
            "wake_command":"openclaw wake","confirmation_timeout_ms":5000,
            "results_dir":"./results","repo_dir":"/src/repo","reviewer":"bob",
            "log_file":"sidecar.log","log_level":"debug","protocol_version":"1.1"}"#;
        let c = Config::parse(text, Path::new("/opt/sc/config.json")).expect("valid");
        assert_eq!(c.hub_api_url, "https://hub.example");
        assert_eq!(
            c.wake_command,
            Some(WakeCommand::Shell("openclaw wake".into()))
        );
        assert_eq!(c.results_dir, PathBuf::from("/opt/sc/./results"));
        assert_eq!(c.log_file, Some(PathBuf::from("/opt/sc/sidecar.log")));
        assert_eq!(c.timings.confirmation_timeout, Duration::from_millis(5000));
    }
}
