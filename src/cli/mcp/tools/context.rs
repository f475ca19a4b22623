//! The shared context tools: `get_context`, `list_context`, `context_history`
//! (read) and `put_context` (the hub decides by the key's prefix and the
//! token's role who may write).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{invalid, parse, HubTools, Outcome};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    /// The key: letters, digits and . _ - : (e.g. "project.conventions").
    key: String,
    /// An older version instead of the newest.
    version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    key: String,
    /// A JSON value to store (give this or text).
    value: Option<Value>,
    /// Text to store (give this or value).
    text: Option<String>,
    /// Compare-and-set: write only if the key is at this version (0: only if it does not exist). Pass the version you read, so nobody's change is lost.
    if_version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Only keys starting with this.
    prefix: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    key: String,
}

/// A key safe to put in a path (the hub checks it again).
fn key_path(tool: &str, key: &str) -> Result<String, CallToolResult> {
    match agentcom_hub::protocol::check_context_key(key, "key") {
        Ok(()) => Ok(key.to_string()),
        Err(e) => Err(invalid(tool, &format!("key: {}", e.detail))),
    }
}

#[tool_router(router = context_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Read a shared context key (the fleet's versioned documents: conventions, decisions, notes): {key, version, kind, value (JSON) or text, updated_by, updated_at}.",
        input_schema = schema_for_type::<GetArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn get_context(&self, args: JsonObject) -> Outcome {
        let args: GetArgs = parse("get_context", args)?;
        let key = key_path("get_context", &args.key)?;
        let path = match args.version {
            Some(v) => format!("/api/context/{key}?version={v}"),
            None => format!("/api/context/{key}"),
        };
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }

    #[tool(
        description = "Write a shared context key: value (JSON) or text, with if_version for compare-and-set (a stale version is refused with version_conflict and the current version). Who may write which keys is set by the hub (by default the admin and coordinators; configured prefixes may let agents write).",
        input_schema = schema_for_type::<PutArgs>()
    )]
    async fn put_context(&self, args: JsonObject) -> Outcome {
        let args: PutArgs = parse("put_context", args)?;
        let key = key_path("put_context", &args.key)?;
        let mut body = match (args.value, args.text) {
            (Some(v), None) => json!({ "value": v }),
            (None, Some(t)) => json!({ "text": t }),
            _ => return Err(invalid("put_context", "give exactly one of value and text")),
        };
        if let Some(v) = args.if_version {
            body["if_version"] = json!(v);
        }
        let path = format!("/api/context/{key}");
        Ok(CallToolResult::structured(
            self.hub("PUT", &path, Some(body)).await?,
        ))
    }

    #[tool(
        description = "The shared context keys (starting with prefix): version, kind, size, who wrote them and when.",
        input_schema = schema_for_type::<ListArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_context(&self, args: JsonObject) -> Outcome {
        let args: ListArgs = parse("list_context", args)?;
        let path = match args.prefix {
            Some(p) => format!("/api/context?prefix={}", key_path("list_context", &p)?),
            None => "/api/context".to_string(),
        };
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }

    #[tool(
        description = "A shared context key's kept versions, newest first (who wrote each and when).",
        input_schema = schema_for_type::<KeyArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn context_history(&self, args: JsonObject) -> Outcome {
        let args: KeyArgs = parse("context_history", args)?;
        let key = key_path("context_history", &args.key)?;
        let path = format!("/api/context/{key}/history");
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }
}
