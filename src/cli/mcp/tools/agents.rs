//! The fleet tools: `list_agents` (presence, FSM state, slots and each running
//! task, with `free_slots`) and `broadcast_task` (one pinned copy of a task per
//! matching agent).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse, task_body, HubTools, Outcome, Priority};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListAgentsArgs {
    /// Only agents connected now.
    #[serde(default)]
    online_only: bool,
    /// Only agents that are connected and idle (ready for a task right away).
    #[serde(default)]
    idle_only: bool,
    /// Only agents that have every one of these capabilities.
    #[serde(default)]
    capabilities: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BroadcastTaskArgs {
    /// Complete instructions; every matching agent gets its own copy.
    description: String,
    /// Priority lane (default normal).
    priority: Option<Priority>,
    /// Only agents with all of these capabilities get a copy (empty: every agent).
    #[serde(default)]
    capabilities: Vec<String>,
    /// Structured data handed to each agent with its copy (a JSON object).
    metadata: Option<Map<String, Value>>,
    /// Failed attempts before a copy goes to dead letter (default 3).
    max_retries: Option<u64>,
    /// Also give a copy to busy agents (they take it when they are free). Default true; false: idle agents only.
    include_busy: Option<bool>,
}

#[tool_router(router = agent_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "List the agents the hub knows: online or not, FSM state (idle, assigned, working, offline), capabilities, slots and each running task (an agent with slots runs several at once; free_slots says how many more it takes), flags (draining, disabled, unresponsive, usage_limited).",
        input_schema = schema_for_type::<ListAgentsArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_agents(&self, args: JsonObject) -> Outcome {
        let args: ListAgentsArgs = parse("list_agents", args)?;
        let mut agents = self.agents().await?;
        agents.retain(|a| {
            let state = a["fsm_state"].as_str().unwrap_or("offline");
            (!args.online_only || state != "offline")
                && (!args.idle_only || state == "idle")
                && has_all(a, &args.capabilities)
        });
        let count = |state: Option<&str>| {
            agents
                .iter()
                .filter(|a| match state {
                    Some(s) => a["fsm_state"] == s,
                    None => a["fsm_state"] != "offline",
                })
                .count()
        };
        let summary =
            json!({"count": agents.len(), "online": count(None), "idle": count(Some("idle"))});
        let mut out = summary;
        out["agents"] = Value::Array(agents);
        Ok(CallToolResult::structured(out))
    }

    #[tool(
        description = "Give every matching agent its own copy of a task (one task per agent, pinned to it). Returns the task ids per agent and a correlation_id that list_tasks can filter by. Fails with no_matching_agents when no online agent qualifies.",
        input_schema = schema_for_type::<BroadcastTaskArgs>()
    )]
    async fn broadcast_task(&self, args: JsonObject) -> Outcome {
        let args: BroadcastTaskArgs = parse("broadcast_task", args)?;
        let include_busy = args.include_busy.unwrap_or(true);
        let agents = self.agents().await?;
        let targets: Vec<String> = agents
            .iter()
            .filter(|a| {
                let state = a["fsm_state"].as_str().unwrap_or("offline");
                let flags = a["flags"].as_array().cloned().unwrap_or_default();
                state != "offline"
                    && (include_busy || state == "idle")
                    && !flags.iter().any(|f| f == "disabled" || f == "draining")
                    && has_all(a, &args.capabilities)
            })
            .filter_map(|a| a["agent_id"].as_str().map(str::to_string))
            .collect();
        if targets.is_empty() {
            return Err(CallToolResult::structured_error(json!({
                "error": "no_matching_agents",
                "message": "no online agent that takes work has all the capabilities",
                "capabilities": args.capabilities,
                "include_busy": include_busy,
            })));
        }
        let correlation_id = format!("broadcast-{:016x}", rand::random::<u64>());
        let batch: Vec<Value> = targets
            .iter()
            .map(|agent_id| {
                let mut caps = args.capabilities.clone();
                caps.push(format!("agent:{agent_id}"));
                let mut body = task_body(
                    &args.description,
                    args.priority,
                    &caps,
                    args.metadata.clone(),
                    args.max_retries,
                );
                body["correlation_id"] = json!(correlation_id);
                body
            })
            .collect();
        let created = self
            .hub("POST", "/api/tasks", Some(Value::Array(batch)))
            .await?;
        let ids: Vec<Value> = created["tasks"]
            .as_array()
            .map(|t| t.iter().map(|t| t["task_id"].clone()).collect())
            .unwrap_or_default();
        let tasks: Vec<Value> = targets
            .iter()
            .zip(&ids)
            .map(|(agent, id)| json!({"agent_id": agent, "task_id": id}))
            .collect();
        Ok(CallToolResult::structured(json!({
            "status": "queued",
            "correlation_id": correlation_id,
            "count": tasks.len(),
            "task_ids": ids,
            "tasks": tasks,
        })))
    }
}

impl HubTools {
    /// Every agent, with its presence (`/api/agents`) and FSM state
    /// (`/api/agents/states`) in one record.
    async fn agents(&self) -> Result<Vec<Value>, CallToolResult> {
        let presence = self.hub("GET", "/api/agents", None).await?;
        let states = self.hub("GET", "/api/agents/states", None).await?;
        let named: Map<String, Value> = presence["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["agent_id"].as_str()?.to_string(), a.clone())))
            .collect();
        Ok(states["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let mut agent = s.clone();
                if let Some(p) = s["agent_id"].as_str().and_then(|id| named.get(id)) {
                    agent["name"] = p["name"].clone();
                    agent["status"] = p["status"].clone();
                }
                let online = agent["fsm_state"] != "offline";
                agent["online"] = Value::Bool(online);
                let slots = agent["slots"].as_u64().unwrap_or(1);
                let running = agent["running"].as_array().map_or(0, Vec::len) as u64;
                agent["free_slots"] = json!(if online {
                    slots.saturating_sub(running)
                } else {
                    0
                });
                agent
            })
            .collect())
    }
}

fn has_all(agent: &Value, capabilities: &[String]) -> bool {
    let have = agent["capabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    capabilities.iter().all(|c| have.iter().any(|h| h == c))
}
