//! The commands that talk to the hub's API with the agent's token: `submit`,
//! `status`, `emit`, `send`. Each prints the hub's answer; a refusal of the
//! input exits 2, anything else 1.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::config::Config;
use crate::{fatal, http, load_config, state, Fatal};

/// What `submit` sends.
#[derive(clap::Args)]
pub(crate) struct SubmitArgs {
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
    /// Longest one attempt may run (the agent's sidecar then stops it).
    #[arg(long)]
    max_runtime_ms: Option<u64>,
    /// No sign of life from the agent this long fails the attempt as stalled.
    #[arg(long)]
    stall_ms: Option<u64>,
    /// The repository the write and read paths are relative to.
    #[arg(long)]
    repo: Option<String>,
    /// A glob of files the task writes (repeatable): tasks writing or reading
    /// overlapping paths of the same repo wait for it.
    #[arg(long = "write-path")]
    write_paths: Vec<String>,
    /// A glob of files the task reads (repeatable).
    #[arg(long = "read-path")]
    read_paths: Vec<String>,
    /// Caps how many tasks of the key run at once (an operator's limit) and
    /// shares the queue fairly with other keys.
    #[arg(long)]
    concurrency_key: Option<String>,
    /// While a task with this key is unfinished, submitting again answers it.
    #[arg(long)]
    dedupe_key: Option<String>,
    /// A task that must complete first (repeatable).
    #[arg(long = "depends-on")]
    depends_on: Vec<String>,
    /// Not scheduled before this time (ms since the epoch).
    #[arg(long)]
    run_after: Option<u64>,
    /// Not scheduled for this many ms from now.
    #[arg(long, conflicts_with = "run_after")]
    delay_ms: Option<u64>,
    /// Groups tasks (default: the parent's).
    #[arg(long)]
    correlation_id: Option<String>,
    /// The task this one is handed off from [default: $TASK_ID, the task the
    /// agent works on, when run inside a woken task].
    #[arg(long)]
    parent: Option<String>,
    /// No parent, even inside a woken task.
    #[arg(long, conflicts_with = "parent")]
    no_parent: bool,
    /// Retries after failures (0-100).
    #[arg(long)]
    max_retries: Option<u64>,
    /// Reclaims (lost agents) before dead letter (0-100).
    #[arg(long)]
    max_reclaims: Option<u64>,
    /// The task's lease (ms).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Dead-lettered when not complete by then (ms since the epoch).
    #[arg(long)]
    complete_by: Option<u64>,
    /// requeue, route or wait: what a blocked report does.
    #[arg(long)]
    blocked_policy: Option<String>,
    /// Delay of the requeue policy (ms).
    #[arg(long)]
    blocked_requeue_ms: Option<u64>,
    /// before_start or before_complete: a person approves.
    #[arg(long)]
    approval: Option<String>,
    /// With --approval before_complete: merge the result's pull request once approved.
    #[arg(long)]
    merge_on_approval: bool,
    /// Tokens the task may spend.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Dollars the task may spend.
    #[arg(long)]
    budget_usd: Option<f64>,
    /// A dependency (also given with --depends-on) whose result the task's
    /// assignment carries (repeatable).
    #[arg(long = "input-from")]
    inputs_from: Vec<String>,
    /// message or event: tell this agent when the task ends (a task_finished
    /// message to its mailbox, or a task.finished event).
    #[arg(long)]
    notify: Option<String>,
    /// Fan-in: wait for every task of this correlation id too.
    #[arg(long)]
    depends_on_correlation: Option<String>,
}

pub(crate) fn submit(args: SubmitArgs, config: Option<PathBuf>) -> Result<(), Fatal> {
    let SubmitArgs {
        description,
        priority,
        capabilities,
        metadata,
        max_runtime_ms,
        stall_ms,
        repo,
        write_paths,
        read_paths,
        concurrency_key,
        dedupe_key,
        depends_on,
        run_after,
        delay_ms,
        correlation_id,
        parent,
        no_parent,
        max_retries,
        max_reclaims,
        lease_ms,
        complete_by,
        blocked_policy,
        blocked_requeue_ms,
        approval,
        merge_on_approval,
        budget_tokens,
        budget_usd,
        inputs_from,
        notify,
        depends_on_correlation,
    } = args;
    let cfg = load_config(config)?;
    let mut task = json!({"description": description});
    // Inside a woken task, a submit is a hand-off from it.
    let parent = match no_parent {
        true => None,
        false => parent.or_else(|| std::env::var("TASK_ID").ok().filter(|t| !t.is_empty())),
    };
    let run_after = run_after.or_else(|| delay_ms.map(|d| state::now_ms().saturating_add(d)));
    // Digits go as a number, names as a string: the hub parses both.
    let priority = priority.map(|p| match p.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(p),
    });
    let metadata = match metadata {
        None => None,
        Some(m) => match serde_json::from_str::<Value>(&m) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => return Err(fatal(2, "--metadata must be a JSON object")),
        },
    };
    let list = |l: Vec<String>| (!l.is_empty()).then(|| json!(l));
    let fields: [(&str, Option<Value>); 27] = [
        ("priority", priority),
        ("needed_capabilities", list(capabilities)),
        ("metadata", metadata),
        ("max_runtime_ms", max_runtime_ms.map(Value::from)),
        ("stall_ms", stall_ms.map(Value::from)),
        ("repo", repo.map(Value::from)),
        ("write_paths", list(write_paths)),
        ("read_paths", list(read_paths)),
        ("concurrency_key", concurrency_key.map(Value::from)),
        ("dedupe_key", dedupe_key.map(Value::from)),
        ("depends_on", list(depends_on)),
        ("run_after", run_after.map(Value::from)),
        ("correlation_id", correlation_id.map(Value::from)),
        ("parent_task_id", parent.map(Value::from)),
        ("max_retries", max_retries.map(Value::from)),
        ("max_reclaims", max_reclaims.map(Value::from)),
        ("lease_ms", lease_ms.map(Value::from)),
        ("complete_by", complete_by.map(Value::from)),
        ("blocked_policy", blocked_policy.map(Value::from)),
        ("blocked_requeue_ms", blocked_requeue_ms.map(Value::from)),
        ("approval", approval.map(Value::from)),
        (
            "merge_on_approval",
            merge_on_approval.then_some(Value::Bool(true)),
        ),
        ("budget_tokens", budget_tokens.map(Value::from)),
        ("budget_usd", budget_usd.map(Value::from)),
        ("inputs_from", list(inputs_from)),
        ("notify", notify.map(Value::from)),
        (
            "depends_on_correlation",
            depends_on_correlation.map(Value::from),
        ),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            task[k] = v;
        }
    }
    call(&cfg, ("POST", "/api/tasks"), &task, ("task", &[400, 422]))
}

/// `status TEXT`: this agent's status line on the hub.
pub(crate) fn set_status(text: String, config: Option<PathBuf>) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let path = format!("/api/agents/{}/status", cfg.agent_id);
    let body = json!({ "status": text });
    call(&cfg, ("PUT", &path), &body, ("status", &[400, 422]))
}

/// `emit TOPIC --payload JSON|@file|@-`: a topic event.
pub(crate) fn emit(
    topic: String,
    payload: String,
    dedupe_key: Option<String>,
    config: Option<PathBuf>,
) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let raw = match payload.strip_prefix('@') {
        Some(file) => read_input(file)?,
        None => payload,
    };
    let payload: Value =
        serde_json::from_str(&raw).map_err(|e| fatal(2, format!("--payload is not JSON: {e}")))?;
    let mut body = json!({"payload": payload});
    if let Some(k) = dedupe_key {
        body["dedupe_key"] = json!(k);
    }
    agentcom_protocol::check_topic(&topic).map_err(|e| fatal(2, format!("topic: {}", e.detail)))?;
    let path = format!("/api/topics/{topic}/events");
    call(&cfg, ("POST", &path), &body, ("event", &[400, 413, 422]))
}

/// `send TO TEXT|--json FILE`: a message.
pub(crate) fn send(
    to: String,
    text: Option<String>,
    json_file: Option<PathBuf>,
    message_type: Option<String>,
    reply_to: Option<String>,
    config: Option<PathBuf>,
) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let payload = match (text, json_file) {
        (Some(text), _) => json!({"text": text}),
        (None, Some(path)) => {
            let raw = read_input(&path.to_string_lossy())?;
            match serde_json::from_str::<Value>(&raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(fatal(2, "--json must hold a JSON object")),
            }
        }
        (None, None) => return Err(fatal(2, "give TEXT or --json FILE")),
    };
    let mut body = json!({"to": to, "payload": payload});
    if let Some(t) = message_type {
        body["message_type"] = json!(t);
    }
    if let Some(r) = reply_to {
        body["reply_to"] = json!(r);
    }
    call(
        &cfg,
        ("POST", "/api/message"),
        &body,
        ("message", &[400, 404, 413, 422]),
    )
}

/// `context get|put|list`: the shared context, with this agent's token.
#[derive(clap::Subcommand)]
pub(crate) enum ContextCmd {
    /// A key's newest version (or --version N).
    Get {
        key: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Write a key (when your role may): --text, or --json (JSON, @file or @-).
    Put {
        key: String,
        #[arg(long, conflicts_with = "json")]
        text: Option<String>,
        #[arg(long)]
        json: Option<String>,
        /// Only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// The keys (starting with --prefix).
    List {
        #[arg(long)]
        prefix: Option<String>,
    },
}

pub(crate) fn context(action: ContextCmd, config: Option<PathBuf>) -> Result<(), Fatal> {
    let cfg = load_config(config)?;
    let key_ok = |key: &str| {
        agentcom_protocol::check_context_key(key, "key")
            .map_err(|e| fatal(2, format!("key: {}", e.detail)))
    };
    match action {
        ContextCmd::Get { key, version } => {
            key_ok(&key)?;
            let path = match version {
                Some(v) => format!("/api/context/{key}?version={v}"),
                None => format!("/api/context/{key}"),
            };
            call_with(&cfg, ("GET", &path), None, ("read", &[404, 422]))
        }
        ContextCmd::Put {
            key,
            text,
            json,
            if_version,
        } => {
            key_ok(&key)?;
            let mut body = match (text, json) {
                (Some(t), None) => json!({ "text": t }),
                (None, Some(j)) => {
                    let raw = match j.strip_prefix('@') {
                        Some(file) => read_input(file)?,
                        None => j,
                    };
                    let v: Value = serde_json::from_str(&raw)
                        .map_err(|e| fatal(2, format!("--json is not JSON: {e}")))?;
                    json!({ "value": v })
                }
                _ => return Err(fatal(2, "give --text or --json")),
            };
            if let Some(v) = if_version {
                body["if_version"] = json!(v);
            }
            let path = format!("/api/context/{key}");
            call(&cfg, ("PUT", &path), &body, ("write", &[403, 409, 422]))
        }
        ContextCmd::List { prefix } => {
            let path = match prefix {
                Some(p) => {
                    key_ok(&p)?;
                    format!("/api/context?prefix={p}")
                }
                None => "/api/context".to_string(),
            };
            call_with(&cfg, ("GET", &path), None, ("list", &[422]))
        }
    }
}

/// A file's text, or standard input's for `-`.
fn read_input(path: &str) -> Result<String, Fatal> {
    if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| fatal(2, format!("cannot read standard input: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| fatal(2, format!("cannot read {path}: {e}")))
}

/// One request with the agent's token; prints the answer. A status in
/// `refused_input` (the hub refused what was given) exits 2, any other
/// refusal 1.
fn call(
    cfg: &Config,
    (method, path): (&str, &str),
    body: &Value,
    refusal: (&str, &[u16]),
) -> Result<(), Fatal> {
    call_with(cfg, (method, path), Some(body), refusal)
}

fn call_with(
    cfg: &Config,
    (method, path): (&str, &str),
    body: Option<&Value>,
    (what, refused_input): (&str, &[u16]),
) -> Result<(), Fatal> {
    let (status, resp) = http::to_hub(&cfg.hub_api_urls, method, path, Some(&cfg.token), body)
        .map_err(|e| fatal(1, format!("cannot reach the hub: {e}")))?;
    println!("{resp}");
    match status {
        200 | 201 => Ok(()),
        s => Err(fatal(
            if refused_input.contains(&s) { 2 } else { 1 },
            format!("the hub refused the {what} (HTTP {status})"),
        )),
    }
}
