//! The messaging tools: `send_message` (to one agent or every registered one)
//! and `read_mailbox` (read, and acknowledge what was read).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{invalid, parse, put, HubTools, Outcome};
use crate::cli::hub_client::encode;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SendMessageArgs {
    /// The receiving agent's id; omit to send to every agent.
    to: Option<String>,
    /// The message text (sent as payload.text).
    text: Option<String>,
    /// Structured message content (a JSON object); text, if given, is added as its "text".
    payload: Option<Map<String, Value>>,
    /// Message type, e.g. "request" or "status" (default chat).
    #[serde(rename = "type")]
    message_type: Option<String>,
    /// Id of the message this answers (threads).
    reply_to: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadMailboxArgs {
    /// Whose mailbox (default: the token's own agent; the admin token must name one).
    agent_id: Option<String>,
    /// Only messages after this sequence number (last_seq of a previous read).
    since: Option<u64>,
    /// Acknowledge what was read, so the mailbox stops holding it.
    #[serde(default)]
    ack: bool,
}

#[tool_router(router = message_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Send a message to one agent (to) or to every registered agent. It waits in each recipient's mailbox until that agent acknowledges it (an agent's sidecar does so once the message is safe in its inbox); an online agent is also told at once.",
        input_schema = schema_for_type::<SendMessageArgs>()
    )]
    async fn send_message(&self, args: JsonObject) -> Outcome {
        let args: SendMessageArgs = parse("send_message", args)?;
        let mut payload = args.payload.unwrap_or_default();
        if let Some(text) = args.text {
            payload.insert("text".into(), Value::String(text));
        }
        if payload.is_empty() {
            return Err(invalid("send_message", "give text or payload"));
        }
        let mut body = json!({"payload": payload});
        put(&mut body, "to", args.to.map(Value::from));
        put(&mut body, "type", args.message_type.map(Value::from));
        put(&mut body, "reply_to", args.reply_to.map(Value::from));
        Ok(CallToolResult::structured(
            self.hub("POST", "/api/message", Some(body)).await?,
        ))
    }

    #[tool(
        description = "Read messages waiting in a mailbox (default: the token's own agent), oldest first, with last_seq for the next read. ack: true acknowledges them.",
        input_schema = schema_for_type::<ReadMailboxArgs>()
    )]
    async fn read_mailbox(&self, args: JsonObject) -> Outcome {
        let args: ReadMailboxArgs = parse("read_mailbox", args)?;
        let agent_id = match args.agent_id {
            Some(id) => id,
            None => match self.principal().await {
                Some(p) => match p.agent_id() {
                    Some(id) => id.to_string(),
                    None => {
                        return Err(invalid(
                            "read_mailbox",
                            "this token has no mailbox of its own: give agent_id",
                        ))
                    }
                },
                None => return Err(invalid("read_mailbox", "give agent_id")),
            },
        };
        let id = encode(&agent_id);
        let mut path = format!("/api/mailbox/{id}");
        if let Some(since) = args.since {
            path.push_str(&format!("?since={since}"));
        }
        let mut mailbox = self.hub("GET", &path, None).await?;
        if args.ack {
            let last = mailbox["messages"]
                .as_array()
                .and_then(|m| m.iter().filter_map(|m| m["seq"].as_u64()).max());
            if let Some(seq) = last {
                let acked = self
                    .hub(
                        "POST",
                        &format!("/api/mailbox/{id}/ack"),
                        Some(json!({"seq": seq})),
                    )
                    .await?;
                mailbox["acked"] = acked["up_to"].clone();
            }
        }
        Ok(CallToolResult::structured(mailbox))
    }
}
