//! The operator's commands against a running hub (admin token in
//! `AGENTCOM_ADMIN_TOKEN`): task controls, lane pause and resume, agent drain and
//! disable, standing-order runs and the event log. Each is one HTTP request; the
//! hub checks and records it (actor `admin`) exactly as for the API.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::hub_client::encode;
use crate::{accepted, hub_request, Fatal};

/// Where the running hub is.
#[derive(Args, Clone)]
pub struct Online {
    /// The running hub's URL, or several hubs' URLs separated by commas
    /// (hubs on one Postgres: requests go to the active one).
    #[arg(
        long,
        env = "AGENTCOM_HUB_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    hub: String,
}

#[derive(Subcommand)]
pub enum TaskAction {
    /// Submit a task, or a batch (a list): a JSON or TOML file with every
    /// field of POST /api/tasks (inputs_from, notify, depends_on_correlation...).
    Submit {
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        #[command(flatten)]
        online: Online,
    },
    /// A task's whole result (what inputs and hub events give by reference).
    Result {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Cancel a task (its agent is told).
    Cancel {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Force a retry: a dead-lettered, blocked, cancelled or assigned task goes
    /// back to the queue with fresh budgets.
    Retry {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Force an unfinished task to dead letter.
    DeadLetter {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Move a queued task to another lane (urgent, high, normal, low or 0-3).
    Priority {
        task_id: String,
        priority: String,
        #[command(flatten)]
        online: Online,
    },
    /// Show a task: status, holder, latest progress, run_after, last error.
    Show {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Show a task's attempts (agent, generation, times, outcome).
    Attempts {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Answer the question a task waits on (one of its options, if it has
    /// any); its agent goes on with the answer.
    Answer {
        task_id: String,
        answer: String,
        #[command(flatten)]
        online: Online,
    },
    /// The questions and approvals agents wait on, oldest first.
    Questions {
        #[command(flatten)]
        online: Online,
    },
    /// Approve what a task waits for: before start it is queued; a held
    /// completion completes (or its agent merges the pull request first).
    Approve {
        task_id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Set a task's budget (a task paused over its budget resumes when no
    /// longer over it).
    Budget {
        task_id: String,
        /// Tokens the task may spend in all.
        #[arg(long)]
        tokens: Option<u64>,
        /// Dollars the task may spend in all.
        #[arg(long)]
        usd: Option<f64>,
        #[command(flatten)]
        online: Online,
    },
    /// Reject: before start the task is cancelled; a held completion goes
    /// back to its agent with the reason.
    Reject {
        task_id: String,
        /// Why (the agent works on with it).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        online: Online,
    },
}

#[derive(Subcommand)]
pub enum QueueAction {
    /// Pause lanes (none given: the whole queue). Queued tasks wait; running
    /// ones finish.
    Pause {
        /// A lane to pause (urgent, high, normal, low or 0-3); repeatable.
        #[arg(long = "lane")]
        lanes: Vec<String>,
        #[command(flatten)]
        online: Online,
    },
    /// Resume lanes (none given: the whole queue).
    Resume {
        #[arg(long = "lane")]
        lanes: Vec<String>,
        #[command(flatten)]
        online: Online,
    },
    /// Show the paused lanes.
    Lanes {
        #[command(flatten)]
        online: Online,
    },
}

#[derive(Subcommand)]
pub enum ReservationAction {
    /// Every live claim on repository paths: direct reservations and the
    /// scopes of running tasks.
    List {
        /// Only this repository's.
        #[arg(long)]
        repo: Option<String>,
        #[command(flatten)]
        online: Online,
    },
    /// Reserve paths of a repository (an operator's freeze, or for an agent
    /// with --holder). Answers `granted`, or exits 1 naming the holder.
    Reserve {
        #[arg(long)]
        repo: String,
        /// A gitignore-style glob relative to the repository root; repeatable.
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// Shared (others may read, nobody may write) instead of exclusive.
        #[arg(long)]
        shared: bool,
        /// How long it holds (ms; default 10 minutes, at most a day).
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// The agent it is held for (default: admin).
        #[arg(long)]
        holder: Option<String>,
        #[command(flatten)]
        online: Online,
    },
    /// Move a reservation's expiry to --ttl-ms from now.
    Renew {
        reservation_id: String,
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[command(flatten)]
        online: Online,
    },
    /// Release a reservation (queued tasks waiting for it are offered).
    Release {
        reservation_id: String,
        #[command(flatten)]
        online: Online,
    },
}

#[derive(Subcommand)]
pub enum UsageAction {
    /// Credential groups paused for a usage limit, with until when.
    List {
        #[command(flatten)]
        online: Online,
    },
    /// End a group's pause now (its agents take work again).
    Resume {
        credential_group: String,
        #[command(flatten)]
        online: Online,
    },
}

#[derive(Subcommand)]
pub enum ConcurrencyAction {
    /// Keys with a limit or a running task: limit and running count.
    List {
        #[command(flatten)]
        online: Online,
    },
    /// Cap how many tasks of KEY run at once (0 pauses the key).
    Set {
        key: String,
        #[arg(value_parser = clap::value_parser!(u32).range(0..=10_000))]
        limit: u32,
        #[command(flatten)]
        online: Online,
    },
    /// Remove KEY's cap.
    Remove {
        key: String,
        #[command(flatten)]
        online: Online,
    },
}

#[derive(Subcommand)]
pub enum StandingAction {
    /// List standing orders with their next runs.
    List {
        #[command(flatten)]
        online: Online,
    },
    /// Every occurrence of an order with its status (pending, completed, no_work,
    /// blocked, failed, missed, cancelled).
    Runs {
        name: String,
        /// Only occurrences scheduled at or after this time (ms since the epoch).
        #[arg(long)]
        since: Option<u64>,
        /// Only occurrences scheduled at or before this time (ms since the epoch).
        #[arg(long)]
        until: Option<u64>,
        /// Print the hub's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        online: Online,
    },
    /// Make the hub's orders match a file ([[order]] tables): prints what
    /// changes, then creates and updates (with --prune also deletes orders the
    /// file does not name). Applying the same file again changes nothing.
    Apply {
        /// The orders file (TOML).
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
        /// Also delete orders the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print the changes only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        online: Online,
    },
}

/// Filters of `agentcom-hub events`.
#[derive(Args)]
pub struct EventsArgs {
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// ms since the epoch.
    #[arg(long)]
    since: Option<u64>,
    /// ms since the epoch.
    #[arg(long)]
    until: Option<u64>,
    /// Start after this event sequence (a previous page's next_cursor).
    #[arg(long)]
    cursor: Option<u64>,
    #[arg(long, default_value_t = 100)]
    limit: u64,
    #[command(flatten)]
    online: Online,
}

pub(super) fn call(
    online: &Online,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Fatal> {
    accepted(hub_request(&online.hub, method, path, body)?)
}

pub(super) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

pub fn task(action: TaskAction) -> Result<(), Fatal> {
    let (online, method, path, body) = match action {
        TaskAction::Submit { file, online } => (
            online,
            "POST",
            "/api/tasks".to_string(),
            Some(super::policies::body_file(&file)?),
        ),
        TaskAction::Result { task_id, online } => (
            online,
            "GET",
            format!("/api/tasks/{}/result", encode(&task_id)),
            None,
        ),
        TaskAction::Cancel { task_id, online } => (
            online,
            "POST",
            format!("/api/tasks/{}/cancel", encode(&task_id)),
            Some(json!({})),
        ),
        TaskAction::Retry { task_id, online } => (
            online,
            "POST",
            format!("/api/tasks/{}/retry", encode(&task_id)),
            Some(json!({})),
        ),
        TaskAction::DeadLetter { task_id, online } => (
            online,
            "POST",
            format!("/api/tasks/{}/dead-letter", encode(&task_id)),
            Some(json!({})),
        ),
        TaskAction::Priority {
            task_id,
            priority,
            online,
        } => {
            // Digits go as a number, names as a string: the hub parses both.
            let priority = priority
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(priority));
            (
                online,
                "POST",
                format!("/api/tasks/{}/priority", encode(&task_id)),
                Some(json!({"priority": priority})),
            )
        }
        TaskAction::Show { task_id, online } => (
            online,
            "GET",
            format!("/api/tasks/{}", encode(&task_id)),
            None,
        ),
        TaskAction::Attempts { task_id, online } => (
            online,
            "GET",
            format!("/api/tasks/{}/attempts", encode(&task_id)),
            None,
        ),
        TaskAction::Answer {
            task_id,
            answer,
            online,
        } => (
            online,
            "POST",
            format!("/api/tasks/{}/answer", encode(&task_id)),
            Some(json!({ "answer": answer })),
        ),
        TaskAction::Questions { online } => (online, "GET", "/api/questions".to_string(), None),
        TaskAction::Budget {
            task_id,
            tokens,
            usd,
            online,
        } => {
            let mut body = json!({});
            if let Some(t) = tokens {
                body["budget_tokens"] = t.into();
            }
            if let Some(u) = usd {
                body["budget_usd"] = u.into();
            }
            (
                online,
                "POST",
                format!("/api/tasks/{}/budget", encode(&task_id)),
                Some(body),
            )
        }
        TaskAction::Approve { task_id, online } => (
            online,
            "POST",
            format!("/api/tasks/{}/approve", encode(&task_id)),
            Some(json!({})),
        ),
        TaskAction::Reject {
            task_id,
            reason,
            online,
        } => (
            online,
            "POST",
            format!("/api/tasks/{}/reject", encode(&task_id)),
            Some(json!({ "reason": reason })),
        ),
    };
    print_json(&call(&online, method, &path, body)?);
    Ok(())
}

fn lanes_body(lanes: Vec<String>) -> Value {
    if lanes.is_empty() {
        return json!({});
    }
    let lanes: Vec<Value> = lanes
        .into_iter()
        .map(|l| {
            l.parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(l))
        })
        .collect();
    json!({ "lanes": lanes })
}

pub fn queue(action: QueueAction) -> Result<(), Fatal> {
    let answer = match action {
        QueueAction::Pause { lanes, online } => {
            call(&online, "POST", "/api/queue/pause", Some(lanes_body(lanes)))?
        }
        QueueAction::Resume { lanes, online } => call(
            &online,
            "POST",
            "/api/queue/resume",
            Some(lanes_body(lanes)),
        )?,
        QueueAction::Lanes { online } => call(&online, "GET", "/api/queue/lanes", None)?,
    };
    print_json(&answer);
    Ok(())
}

pub fn reservations(action: ReservationAction) -> Result<(), Fatal> {
    let answer = match action {
        ReservationAction::List { repo, online } => {
            let path = match repo {
                Some(r) => format!("/api/reservations?repo={}", encode(&r)),
                None => "/api/reservations".into(),
            };
            call(&online, "GET", &path, None)?
        }
        ReservationAction::Reserve {
            repo,
            paths,
            shared,
            ttl_ms,
            holder,
            online,
        } => {
            let mut body = json!({
                "repo": repo,
                "paths": paths,
                "mode": if shared { "shared" } else { "exclusive" },
            });
            if let Some(t) = ttl_ms {
                body["ttl_ms"] = t.into();
            }
            if let Some(h) = holder {
                body["holder"] = h.into();
            }
            call(&online, "POST", "/api/reservations", Some(body))?
        }
        ReservationAction::Renew {
            reservation_id,
            ttl_ms,
            online,
        } => {
            let body = match ttl_ms {
                Some(t) => json!({"ttl_ms": t}),
                None => json!({}),
            };
            let path = format!("/api/reservations/{}/renew", encode(&reservation_id));
            call(&online, "POST", &path, Some(body))?
        }
        ReservationAction::Release {
            reservation_id,
            online,
        } => {
            let path = format!("/api/reservations/{}", encode(&reservation_id));
            call(&online, "DELETE", &path, None)?
        }
    };
    print_json(&answer);
    Ok(())
}

pub fn usage(action: UsageAction) -> Result<(), Fatal> {
    let answer = match action {
        UsageAction::List { online } => call(&online, "GET", "/api/usage", None)?,
        UsageAction::Resume {
            credential_group,
            online,
        } => {
            let path = format!("/api/usage/{}/resume", encode(&credential_group));
            call(&online, "POST", &path, Some(json!({})))?
        }
    };
    print_json(&answer);
    Ok(())
}

pub fn concurrency(action: ConcurrencyAction) -> Result<(), Fatal> {
    let answer = match action {
        ConcurrencyAction::List { online } => call(&online, "GET", "/api/admin/concurrency", None)?,
        ConcurrencyAction::Set { key, limit, online } => {
            let path = format!("/api/admin/concurrency/{}", encode(&key));
            call(&online, "PUT", &path, Some(json!({ "limit": limit })))?
        }
        ConcurrencyAction::Remove { key, online } => {
            let path = format!("/api/admin/concurrency/{}", encode(&key));
            call(&online, "DELETE", &path, None)?
        }
    };
    print_json(&answer);
    Ok(())
}

/// `agent drain|undrain|disable|enable NAME`.
pub fn control_agent(name: &str, action: &str, online: &Online) -> Result<(), Fatal> {
    let answer = call(
        online,
        "POST",
        &format!("/api/agents/{}/{action}", encode(name)),
        Some(json!({})),
    )?;
    print_json(&answer);
    Ok(())
}

/// `agent states [NAME]`: each agent's state, slots and running tasks.
pub fn agent_states(name: Option<&str>, online: &Online) -> Result<(), Fatal> {
    let path = match name {
        Some(n) => format!("/api/agents/{}/state", encode(n)),
        None => "/api/agents/states".to_string(),
    };
    print_json(&call(online, "GET", &path, None)?);
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn standing(action: StandingAction) -> Result<(), Fatal> {
    match action {
        StandingAction::List { online } => {
            print_json(&call(&online, "GET", "/api/standing-orders", None)?);
        }
        StandingAction::Apply {
            file,
            prune,
            dry_run,
            online,
        } => return crate::cli::orders_file::apply(&file, prune, dry_run, &online.hub),
        StandingAction::Runs {
            name,
            since,
            until,
            json,
            online,
        } => {
            let mut query = Vec::new();
            if let Some(s) = since {
                query.push(format!("since={s}"));
            }
            if let Some(u) = until {
                query.push(format!("until={u}"));
            }
            let path = format!(
                "/api/standing-orders/{}/runs{}{}",
                encode(&name),
                if query.is_empty() { "" } else { "?" },
                query.join("&")
            );
            let answer = call(&online, "GET", &path, None)?;
            if json {
                print_json(&answer);
                return Ok(());
            }
            println!(
                "{:<22} {:<10} {:<22} evidence",
                "scheduled_for", "status", "task_id"
            );
            for run in answer["runs"].as_array().into_iter().flatten() {
                let evidence = match &run["evidence"] {
                    Value::Null => String::new(),
                    v => {
                        let text = v.to_string();
                        text.chars().take(60).collect()
                    }
                };
                println!(
                    "{:<22} {:<10} {:<22} {evidence}",
                    when(run["scheduled_for"].as_i64()),
                    run["status"].as_str().unwrap_or("?"),
                    run["task_id"].as_str().unwrap_or("-"),
                );
            }
            println!("summary: {}", answer["summary"]);
        }
    }
    Ok(())
}

pub fn events(args: EventsArgs) -> Result<(), Fatal> {
    let mut query = vec![format!("limit={}", args.limit)];
    for (key, value) in [
        ("task_id", args.task),
        ("agent_id", args.agent),
        ("kind", args.kind),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(&v)));
        }
    }
    for (key, value) in [
        ("since", args.since),
        ("until", args.until),
        ("cursor", args.cursor),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={v}"));
        }
    }
    let answer = call(
        &args.online,
        "GET",
        &format!("/api/events?{}", query.join("&")),
        None,
    )?;
    print_json(&answer);
    Ok(())
}
