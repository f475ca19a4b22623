//! The topic tools: `publish_event` (any token that may write),
//! `list_topics` / `topic_events` / `list_subscriptions` (read), and
//! `subscribe` / `unsubscribe` (steering).

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
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    /// The topic: letters, digits and . _ - : (e.g. "pr_opened", "deploy:web").
    topic: String,
    /// Any JSON value (at most 64 KiB).
    payload: Value,
    /// Publishing again with the same key on the topic creates nothing (the first event answers).
    dedupe_key: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PageArgs {
    topic: String,
    /// Only events published at or after this time (ms since the epoch).
    since: Option<u64>,
    /// Only events after this sequence (next_cursor of the previous page).
    cursor: Option<u64>,
    /// At most this many (1-1000, default 100).
    limit: Option<u64>,
}

/// A topic name safe to put in a path (the hub checks it again).
fn topic_path(tool: &str, topic: &str) -> Result<String, rmcp::model::CallToolResult> {
    match agentcom_hub::protocol::check_topic(topic) {
        Ok(()) => Ok(topic.to_string()),
        Err(e) => Err(invalid(tool, &format!("topic: {}", e.detail))),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SubscribeArgs {
    /// The topic to follow.
    topic: String,
    /// Top-level payload fields that must equal these values.
    filter: Option<serde_json::Map<String, Value>>,
    /// A task submission made for each matching event; its description and metadata strings may hold {{payload.KEY}}, {{event.id}}, {{event.topic}}.
    task: Option<serde_json::Map<String, Value>>,
    /// Instead of a task: {"agent": id} or {"channel": name} gets each event as a message.
    deliver: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SubIdArgs {
    /// The subscription (sub-...).
    id: String,
}

#[tool_router(router = topic_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Publish a topic event {topic, payload, dedupe_key?}: whoever subscribed to the topic hears of it, without you naming them. Answers the stored event (durable) and whether its dedupe_key named an earlier one.",
        input_schema = schema_for_type::<PublishArgs>()
    )]
    async fn publish_event(&self, args: JsonObject) -> Outcome {
        let args: PublishArgs = parse("publish_event", args)?;
        let topic = topic_path("publish_event", &args.topic)?;
        let mut body = json!({"payload": args.payload});
        if let Some(k) = args.dedupe_key {
            body["dedupe_key"] = json!(k);
        }
        let path = format!("/api/topics/{topic}/events");
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(body)).await?,
        ))
    }

    #[tool(
        description = "Every topic with its event count and newest event.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_topics(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_topics", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/topics", None).await?,
        ))
    }

    #[tool(
        description = "A topic's events in order (oldest first): {events:[{id, seq, topic, payload, publisher, published_at}], next_cursor}. Pass next_cursor back as cursor for the next page.",
        input_schema = schema_for_type::<PageArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn topic_events(&self, args: JsonObject) -> Outcome {
        let args: PageArgs = parse("topic_events", args)?;
        let topic = topic_path("topic_events", &args.topic)?;
        let mut query = Vec::new();
        for (k, v) in [
            ("since", args.since),
            ("cursor", args.cursor),
            ("limit", args.limit),
        ] {
            if let Some(v) = v {
                query.push(format!("{k}={v}"));
            }
        }
        let mut path = format!("/api/topics/{topic}/events");
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }

    #[tool(
        description = "Subscribe (admin or coordinator token): from now on every event of the topic that matches the filter creates exactly one task from the template, or is delivered as a message to an agent or a channel.",
        input_schema = schema_for_type::<SubscribeArgs>()
    )]
    async fn subscribe(&self, args: JsonObject) -> Outcome {
        let args: SubscribeArgs = parse("subscribe", args)?;
        let mut body = json!({"topic": args.topic});
        for (k, v) in [
            ("filter", args.filter),
            ("task", args.task),
            ("deliver", args.deliver),
        ] {
            if let Some(v) = v {
                body[k] = Value::Object(v);
            }
        }
        Ok(CallToolResult::structured(
            self.hub("POST", "/api/subscriptions", Some(body)).await?,
        ))
    }

    #[tool(
        description = "Every subscription: its topic, filter, action (task template or delivery), cursor and how often it fired.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_subscriptions(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_subscriptions", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/subscriptions", None).await?,
        ))
    }

    #[tool(
        description = "Delete a subscription (admin or coordinator token): its topic's events no longer create tasks or messages.",
        input_schema = schema_for_type::<SubIdArgs>()
    )]
    async fn unsubscribe(&self, args: JsonObject) -> Outcome {
        let args: SubIdArgs = parse("unsubscribe", args)?;
        let path = format!(
            "/api/subscriptions/{}",
            crate::cli::hub_client::encode(&args.id)
        );
        Ok(CallToolResult::structured(
            self.hub("DELETE", &path, None).await?,
        ))
    }
}
