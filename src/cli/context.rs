//! `agentcom-hub context`: the shared context of a running hub (ext,
//! PROTOCOL.md 6.33): list, get, history, put, delete.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::cli::hub_client::encode;
use crate::cli::ops::{call, print_json, Online};
use crate::Fatal;

#[derive(Subcommand)]
pub enum ContextAction {
    /// The keys (starting with --prefix), with version, kind, size, who and when.
    List {
        #[arg(long)]
        prefix: Option<String>,
        /// Deleted keys too.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        online: Online,
    },
    /// A key's newest version (or --version N).
    Get {
        key: String,
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        online: Online,
    },
    /// A key's kept versions, newest first.
    History {
        key: String,
        #[command(flatten)]
        online: Online,
    },
    /// Write a key: --text TEXT, --json JSON, or -f FILE (its text; a .json
    /// file as JSON).
    Put {
        key: String,
        #[arg(long, conflicts_with_all = ["json", "file"])]
        text: Option<String>,
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        #[arg(short = 'f', long = "file")]
        file: Option<std::path::PathBuf>,
        /// Only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        if_version: Option<u64>,
        #[command(flatten)]
        online: Online,
    },
    /// Delete a key (its history stays).
    Delete {
        key: String,
        #[arg(long)]
        if_version: Option<u64>,
        #[command(flatten)]
        online: Online,
    },
}

fn bad(message: String) -> Fatal {
    Fatal { code: 2, message }
}

/// The body of a `put`: exactly one of text, JSON, or a file.
fn put_body(
    text: Option<String>,
    json_text: Option<String>,
    file: Option<std::path::PathBuf>,
) -> Result<Value, Fatal> {
    match (text, json_text, file) {
        (Some(t), None, None) => Ok(json!({ "text": t })),
        (None, Some(j), None) => {
            let v: Value =
                serde_json::from_str(&j).map_err(|e| bad(format!("--json is not JSON: {e}")))?;
            Ok(json!({ "value": v }))
        }
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            if path.extension().is_some_and(|e| e == "json") {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| bad(format!("{}: not JSON: {e}", path.display())))?;
                Ok(json!({ "value": v }))
            } else {
                Ok(json!({ "text": text }))
            }
        }
        _ => Err(bad("give one of --text, --json and -f FILE".into())),
    }
}

pub fn context(action: ContextAction) -> Result<(), Fatal> {
    let answer = match action {
        ContextAction::List {
            prefix,
            deleted,
            online,
        } => {
            let mut query = Vec::new();
            if let Some(p) = prefix {
                query.push(format!("prefix={}", encode(&p)));
            }
            if deleted {
                query.push("deleted=true".into());
            }
            let path = match query.is_empty() {
                true => "/api/context".to_string(),
                false => format!("/api/context?{}", query.join("&")),
            };
            call(&online, "GET", &path, None)?
        }
        ContextAction::Get {
            key,
            version,
            online,
        } => {
            let mut path = format!("/api/context/{}", encode(&key));
            if let Some(v) = version {
                path = format!("{path}?version={v}");
            }
            call(&online, "GET", &path, None)?
        }
        ContextAction::History { key, online } => {
            let path = format!("/api/context/{}/history", encode(&key));
            call(&online, "GET", &path, None)?
        }
        ContextAction::Put {
            key,
            text,
            json,
            file,
            if_version,
            online,
        } => {
            let mut body = put_body(text, json, file)?;
            if let Some(v) = if_version {
                body["if_version"] = v.into();
            }
            let path = format!("/api/context/{}", encode(&key));
            call(&online, "PUT", &path, Some(body))?
        }
        ContextAction::Delete {
            key,
            if_version,
            online,
        } => {
            let mut path = format!("/api/context/{}", encode(&key));
            if let Some(v) = if_version {
                path = format!("{path}?if_version={v}");
            }
            call(&online, "DELETE", &path, None)?
        }
    };
    print_json(&answer);
    Ok(())
}
