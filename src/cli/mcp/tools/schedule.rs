//! The standing-order and event-log tools: `list_standing_orders`,
//! `standing_order_runs`, `query_events` (reads), `put_standing_order` and
//! `delete_standing_order` (the admin's and coordinators' tokens).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse, put, HubTools, Outcome};
use agentcom_hub::standing_defaults::DEFAULT_TIMEZONE;

use crate::cli::hub_client::encode;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OrderNameArgs {
    /// The order's name.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunsArgs {
    /// The order's name.
    name: String,
    /// Only occurrences scheduled at or after this time (ms since the epoch).
    since: Option<u64>,
    /// Only occurrences scheduled at or before this time (ms since the epoch).
    until: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutOrderArgs {
    /// The order's name (created when new, else updated).
    name: String,
    /// Five-field cron, e.g. "*/15 * * * *".
    cron: String,
    /// IANA time zone of the cron (default UTC).
    timezone: Option<String>,
    /// Runs go to agents with this capability...
    capability: Option<String>,
    /// ...or to this agent.
    agent: Option<String>,
    /// Each run's task, as submit_task takes it (description, priority, metadata...).
    task: Map<String, Value>,
    /// How long after its time a run may take to report before it is missed (ms; default 15 minutes).
    window_ms: Option<u64>,
    /// Default true.
    enabled: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsArgs {
    /// One task's events.
    task_id: Option<String>,
    /// One agent's events.
    agent_id: Option<String>,
    /// One kind (queued, assigned, completed, cancelled, agent_connected, scope_granted, usage_paused, standing_run_missed, ...).
    kind: Option<String>,
    /// From this time (ms since the epoch).
    since: Option<u64>,
    /// Until this time (ms since the epoch).
    until: Option<u64>,
    /// A previous page's next_cursor.
    cursor: Option<u64>,
    /// Page size (default 100, at most 1000).
    limit: Option<u64>,
}

#[tool_router(router = schedule_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "The standing orders (recurring work on a cron): schedule, time zone, target capability or agent, the run's task template, window, enabled, next runs.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_standing_orders(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_standing_orders", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/standing-orders", None).await?,
        ))
    }

    #[tool(
        description = "Every occurrence of a standing order with its status (pending, completed, no_work, blocked, failed, missed, cancelled), its task and the evidence the run reported.",
        input_schema = schema_for_type::<RunsArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn standing_order_runs(&self, args: JsonObject) -> Outcome {
        let args: RunsArgs = parse("standing_order_runs", args)?;
        let mut query = Vec::new();
        if let Some(s) = args.since {
            query.push(format!("since={s}"));
        }
        if let Some(u) = args.until {
            query.push(format!("until={u}"));
        }
        let path = format!(
            "/api/standing-orders/{}/runs{}{}",
            encode(&args.name),
            if query.is_empty() { "" } else { "?" },
            query.join("&")
        );
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }

    #[tool(
        description = "Create a standing order, or replace every field of an existing one of that name (admin or coordinator token). Each occurrence of the cron gets exactly one run task.",
        input_schema = schema_for_type::<PutOrderArgs>()
    )]
    async fn put_standing_order(&self, args: JsonObject) -> Outcome {
        let args: PutOrderArgs = parse("put_standing_order", args)?;
        let listed = self.hub("GET", "/api/standing-orders", None).await?;
        let exists = listed["orders"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["name"] == args.name.as_str()));
        let mut body = json!({
            "cron": args.cron,
            "task": args.task,
            "timezone": args.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.into()),
            "capability": args.capability,
            "agent": args.agent,
        });
        put(&mut body, "window_ms", args.window_ms.map(Value::from));
        body["enabled"] = json!(args.enabled.unwrap_or(true));
        let answer = if exists {
            let path = format!("/api/standing-orders/{}", encode(&args.name));
            self.hub("PUT", &path, Some(body)).await?
        } else {
            body["name"] = json!(args.name);
            self.hub("POST", "/api/standing-orders", Some(body)).await?
        };
        Ok(CallToolResult::structured(json!({
            "status": if exists { "updated" } else { "created" },
            "order": answer,
        })))
    }

    #[tool(
        description = "Delete a standing order (admin or coordinator token); runs already queued stay.",
        input_schema = schema_for_type::<OrderNameArgs>(),
        annotations(destructive_hint = true)
    )]
    async fn delete_standing_order(&self, args: JsonObject) -> Outcome {
        let args: OrderNameArgs = parse("delete_standing_order", args)?;
        let path = format!("/api/standing-orders/{}", encode(&args.name));
        Ok(CallToolResult::structured(
            self.hub("DELETE", &path, None).await?,
        ))
    }

    #[tool(
        description = "The hub's event log, oldest first: every decision with its actor (task transitions, assignments, agents connecting, reservations, usage pauses, standing-order runs, operator actions). Filter by task, agent, kind or time; page with cursor.",
        input_schema = schema_for_type::<EventsArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn query_events(&self, args: JsonObject) -> Outcome {
        let args: EventsArgs = parse("query_events", args)?;
        let mut query: Vec<String> = Vec::new();
        for (k, v) in [
            ("task_id", args.task_id),
            ("agent_id", args.agent_id),
            ("kind", args.kind),
        ] {
            if let Some(v) = v {
                query.push(format!("{k}={}", encode(&v)));
            }
        }
        for (k, v) in [
            ("since", args.since),
            ("until", args.until),
            ("cursor", args.cursor),
            ("limit", args.limit),
        ] {
            if let Some(v) = v {
                query.push(format!("{k}={v}"));
            }
        }
        let path = if query.is_empty() {
            "/api/events".to_string()
        } else {
            format!("/api/events?{}", query.join("&"))
        };
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }
}
