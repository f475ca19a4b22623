//! The commands of a running hub's policies and events: approval rules and
//! daily budgets (each shown, or replaced by a file's), and topic events and
//! subscriptions.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::cli::hub_client::encode;
use crate::cli::ops::{call, print_json, Online};
use crate::Fatal;

/// `approval-rules` and `budgets`: what is in force, or a file's instead.
#[derive(Subcommand)]
pub enum PolicyAction {
    /// What is in force (and, for budgets, today's spend).
    Show {
        #[command(flatten)]
        online: Online,
    },
    /// Replace it with a file's: TOML or JSON (by the file's extension).
    /// Approval rules: `[[rules]]` with `name`, and `paths` globs or
    /// `max_deleted_lines`. Budgets: `[agents.NAME]` / `[groups.NAME]` with
    /// `tokens` and/or `usd`.
    Set {
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        #[command(flatten)]
        online: Online,
    },
}

/// `approval-rules show|set`.
pub fn approval_rules(action: PolicyAction) -> Result<(), Fatal> {
    policy(
        action,
        "/api/admin/approval-rules",
        "/api/admin/approval-rules",
    )
}

/// `budgets show|set`.
pub fn budgets(action: PolicyAction) -> Result<(), Fatal> {
    policy(action, "/api/spend", "/api/admin/budgets")
}

fn policy(action: PolicyAction, show: &str, set: &str) -> Result<(), Fatal> {
    let answer = match action {
        PolicyAction::Show { online } => call(&online, "GET", show, None)?,
        PolicyAction::Set { file, online } => {
            let body = body_file(&file)?;
            call(&online, "PUT", set, Some(body))?
        }
    };
    print_json(&answer);
    Ok(())
}

#[derive(Subcommand)]
pub enum TopicsAction {
    /// Every topic with its event count and newest event.
    List {
        #[command(flatten)]
        online: Online,
    },
    /// A topic's events, oldest first (one page; --cursor for the next).
    Events {
        topic: String,
        /// Only events published at or after this time (ms).
        #[arg(long)]
        since: Option<u64>,
        /// Only events after this sequence (the page's next_cursor).
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        online: Online,
    },
    /// The subscriptions: topic, filter, action, cursor, how often fired.
    Subscriptions {
        #[command(flatten)]
        online: Online,
    },
    /// Subscribe: a TOML or JSON file with {topic, filter?, task | deliver}.
    Subscribe {
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        #[command(flatten)]
        online: Online,
    },
    /// Delete a subscription.
    Unsubscribe {
        id: String,
        #[command(flatten)]
        online: Online,
    },
    /// Publish an event (as admin).
    Publish {
        topic: String,
        /// The payload, as JSON.
        #[arg(long)]
        payload: String,
        #[arg(long)]
        dedupe_key: Option<String>,
        #[command(flatten)]
        online: Online,
    },
}

pub fn topics(action: TopicsAction) -> Result<(), Fatal> {
    let answer = match action {
        TopicsAction::List { online } => call(&online, "GET", "/api/topics", None)?,
        TopicsAction::Subscriptions { online } => call(&online, "GET", "/api/subscriptions", None)?,
        TopicsAction::Subscribe { file, online } => {
            let body = body_file(&file)?;
            call(&online, "POST", "/api/subscriptions", Some(body))?
        }
        TopicsAction::Unsubscribe { id, online } => {
            let path = format!("/api/subscriptions/{}", encode(&id));
            call(&online, "DELETE", &path, None)?
        }
        TopicsAction::Events {
            topic,
            since,
            cursor,
            limit,
            online,
        } => {
            let query: Vec<String> = [("since", since), ("cursor", cursor), ("limit", limit)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                .collect();
            let mut path = format!("/api/topics/{}/events", encode(&topic));
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            call(&online, "GET", &path, None)?
        }
        TopicsAction::Publish {
            topic,
            payload,
            dedupe_key,
            online,
        } => {
            let payload: Value = serde_json::from_str(&payload).map_err(|e| Fatal {
                code: 2,
                message: format!("--payload is not JSON: {e}"),
            })?;
            let mut body = json!({ "payload": payload });
            if let Some(k) = dedupe_key {
                body["dedupe_key"] = k.into();
            }
            let path = format!("/api/topics/{}/events", encode(&topic));
            call(&online, "POST", &path, Some(body))?
        }
    };
    print_json(&answer);
    Ok(())
}

/// A TOML or JSON file as a request body (the hub checks it).
pub(super) fn body_file(path: &std::path::Path) -> Result<Value, Fatal> {
    let bad = |message: String| Fatal { code: 2, message };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(format!("{}: not JSON: {e}", path.display())))
    } else {
        toml::from_str(&text).map_err(|e| bad(format!("{}: not TOML: {e}", path.display())))
    }
}
