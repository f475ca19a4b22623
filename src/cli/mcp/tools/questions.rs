//! The question tools: `list_questions` (what agents wait on) and
//! `answer_task` (the admin's and coordinators' tokens).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{parse, HubTools, Outcome};
use crate::cli::hub_client::encode;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AnswerArgs {
    /// The task whose agent asked.
    task_id: String,
    /// The answer (one of the question's options when it has options).
    answer: String,
}

#[tool_router(router = question_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Questions agents wait on (their tasks are input_required): task, agent, the question, its options and default, when it times out. Oldest first.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_questions(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_questions", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/questions", None).await?,
        ))
    }

    #[tool(
        description = "Answer the question a task waits on (admin or coordinator token); the agent goes on with the answer at once.",
        input_schema = schema_for_type::<AnswerArgs>()
    )]
    async fn answer_task(&self, args: JsonObject) -> Outcome {
        let args: AnswerArgs = parse("answer_task", args)?;
        let path = format!("/api/tasks/{}/answer", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(json!({"answer": args.answer})))
                .await?,
        ))
    }
}
