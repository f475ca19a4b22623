//! The question tools: `list_questions` (what agents and approvals wait on),
//! `answer_task`, `approve_task` and `reject_task` (the admin's and
//! coordinators' tokens), `approval_rules` (read), and budgets:
//! `set_task_budget` (steering) and `spend` (read); the admin's
//! `set_approval_rules` and `set_daily_budgets`.

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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ApproveArgs {
    /// The task waiting for approval.
    task_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RejectArgs {
    /// The task waiting for approval.
    task_id: String,
    /// Why: the agent works on with it (before start: the task is cancelled).
    reason: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetArgs {
    /// The task.
    task_id: String,
    /// Tokens it may spend in all.
    budget_tokens: Option<u64>,
    /// Dollars it may spend in all.
    budget_usd: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RuleArg {
    /// The rule's name (shown as the reason a completion waits).
    name: String,
    /// Gitignore-style globs: a completion that changed a matching path waits.
    #[serde(default)]
    paths: Vec<String>,
    /// A completion that deletes more lines than this waits.
    max_deleted_lines: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RulesArgs {
    /// The whole table (it replaces the rules in force).
    rules: Vec<RuleArg>,
}

#[derive(Deserialize, JsonSchema, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct LimitArg {
    /// Tokens a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<u64>,
    /// Dollars a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    usd: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DailyArgs {
    /// Daily budgets by agent id.
    #[serde(default)]
    agents: std::collections::BTreeMap<String, LimitArg>,
    /// Daily budgets by credential group.
    #[serde(default)]
    groups: std::collections::BTreeMap<String, LimitArg>,
}

#[tool_router(router = question_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Questions and approvals tasks wait on (status input_required; kind question or approval): task, agent, the question, its options and default, when it times out; an approval shows its stage, reasons and the held result (pr_url). Oldest first.",
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

    #[tool(
        description = "Approve what a task waits for (admin or coordinator token): before start it is queued; a held completion completes, or with merge_on_approval its agent merges the pull request first.",
        input_schema = schema_for_type::<ApproveArgs>()
    )]
    async fn approve_task(&self, args: JsonObject) -> Outcome {
        let args: ApproveArgs = parse("approve_task", args)?;
        let path = format!("/api/tasks/{}/approve", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(json!({}))).await?,
        ))
    }

    #[tool(
        description = "Reject what a task waits for, with the reason (admin or coordinator token): before start it is cancelled; a held completion goes back to its agent, which works on with the reason.",
        input_schema = schema_for_type::<RejectArgs>()
    )]
    async fn reject_task(&self, args: JsonObject) -> Outcome {
        let args: RejectArgs = parse("reject_task", args)?;
        let path = format!("/api/tasks/{}/reject", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(json!({"reason": args.reason})))
                .await?,
        ))
    }

    #[tool(
        description = "The approval rules in force (changed-path globs, deleted-line limits) and whether they come from the API or the config.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn approval_rules(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("approval_rules", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/admin/approval-rules", None).await?,
        ))
    }

    #[tool(
        description = "Set a task's budget (admin or coordinator token): budget_tokens and/or budget_usd. A task paused over its budget resumes at once when no longer over it.",
        input_schema = schema_for_type::<BudgetArgs>()
    )]
    async fn set_task_budget(&self, args: JsonObject) -> Outcome {
        let args: BudgetArgs = parse("set_task_budget", args)?;
        let mut body = json!({});
        if let Some(t) = args.budget_tokens {
            body["budget_tokens"] = json!(t);
        }
        if let Some(u) = args.budget_usd {
            body["budget_usd"] = json!(u);
        }
        let path = format!("/api/tasks/{}/budget", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(body)).await?,
        ))
    }

    #[tool(
        description = "Spend today (UTC) by agent, credential group and capability (tokens and dollars), the daily budgets of agents and groups, and each of the last days' totals.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn spend(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("spend", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/spend", None).await?,
        ))
    }

    #[tool(
        description = "Replace the approval rules (admin token only): a completion whose changed paths match a rule's globs, or that deletes more than its max_deleted_lines, waits for a person's approval.",
        input_schema = schema_for_type::<RulesArgs>()
    )]
    async fn set_approval_rules(&self, args: JsonObject) -> Outcome {
        let args: RulesArgs = parse("set_approval_rules", args)?;
        let rules: Vec<_> = args
            .rules
            .into_iter()
            .map(|r| {
                let mut v = json!({"name": r.name});
                if !r.paths.is_empty() {
                    v["paths"] = json!(r.paths);
                }
                if let Some(m) = r.max_deleted_lines {
                    v["max_deleted_lines"] = json!(m);
                }
                v
            })
            .collect();
        Ok(CallToolResult::structured(
            self.hub(
                "PUT",
                "/api/admin/approval-rules",
                Some(json!({"rules": rules})),
            )
            .await?,
        ))
    }

    #[tool(
        description = "Replace the daily budgets of agents and credential groups (admin token only): {agents: {id: {tokens?, usd?}}, groups: {group: {tokens?, usd?}}}. A task whose agent or group goes over today's budget is paused until it is raised or the day ends.",
        input_schema = schema_for_type::<DailyArgs>()
    )]
    async fn set_daily_budgets(&self, args: JsonObject) -> Outcome {
        let args: DailyArgs = parse("set_daily_budgets", args)?;
        let body = json!({"agents": args.agents, "groups": args.groups});
        Ok(CallToolResult::structured(
            self.hub("PUT", "/api/admin/budgets", Some(body)).await?,
        ))
    }
}
