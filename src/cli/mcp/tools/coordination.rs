//! The coordination tools: `reserve_paths`, `release_paths`,
//! `list_reservations` (direct reservations of repository paths, PROTOCOL.md
//! 6.21; an agent's token reserves for that agent, the admin token for
//! `holder`, default `admin`), `set_concurrency_limit` (admin or coordinator) and
//! `list_concurrency` (PROTOCOL.md 6.22).

use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::tool;
use rmcp::tool_router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse, put, HubTools, Outcome};
use crate::cli::hub_client::encode;

/// Exclusive writes the paths (nobody else may write or read them); shared
/// reads them (others may read too, nobody may write).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Exclusive,
    Shared,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReservePathsArgs {
    /// The repository the paths are in (the name tasks use in `repo`).
    repo: String,
    /// Gitignore-style globs relative to the repository root, e.g. "src/api/**".
    paths: Vec<String>,
    /// exclusive (default) or shared.
    mode: Option<Mode>,
    /// How long the reservation holds, in ms (default 10 minutes, at most a day).
    ttl_ms: Option<u64>,
    /// The running task it is for: released with the task.
    task_id: Option<String>,
    /// Admin token only: the agent it is held for.
    holder: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReleasePathsArgs {
    /// The reservation's id (from reserve_paths or list_reservations).
    reservation_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetConcurrencyLimitArgs {
    /// The concurrency key tasks carry (e.g. "repo:web").
    key: String,
    /// How many of its tasks may run at once (0 pauses the key); null removes the cap.
    limit: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ResumeUsageArgs {
    /// The paused credential group (from list_usage_pauses).
    credential_group: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListReservationsArgs {
    /// Only this repository's claims.
    repo: Option<String>,
}

#[tool_router(router = coordination_tools, vis = "pub(super)")]
impl HubTools {
    #[tool(
        description = "Reserve paths of a repository so no other agent's task or reservation writes them meanwhile (scoped tasks that overlap wait). Answers status granted with the reservation, or a scope_conflict error naming the holder (agent, task or reservation, and its paths). Release it with release_paths when done; it also lapses after ttl_ms.",
        input_schema = schema_for_type::<ReservePathsArgs>()
    )]
    async fn reserve_paths(&self, args: JsonObject) -> Outcome {
        let args: ReservePathsArgs = parse("reserve_paths", args)?;
        let mut body = json!({"repo": args.repo, "paths": args.paths});
        let mode = args.mode.map(|m| match m {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        });
        put(&mut body, "mode", mode.map(Value::from));
        put(&mut body, "ttl_ms", args.ttl_ms.map(Value::from));
        put(&mut body, "task_id", args.task_id.map(Value::from));
        put(&mut body, "holder", args.holder.map(Value::from));
        Ok(CallToolResult::structured(
            self.hub("POST", "/api/reservations", Some(body)).await?,
        ))
    }

    #[tool(
        description = "Release a reservation made with reserve_paths (your own; the admin token may release any). Tasks waiting for those paths are offered at once.",
        input_schema = schema_for_type::<ReleasePathsArgs>(),
        annotations(destructive_hint = true)
    )]
    async fn release_paths(&self, args: JsonObject) -> Outcome {
        let args: ReleasePathsArgs = parse("release_paths", args)?;
        let path = format!("/api/reservations/{}", encode(&args.reservation_id));
        Ok(CallToolResult::structured(
            self.hub("DELETE", &path, None).await?,
        ))
    }

    #[tool(
        description = "Cap how many tasks of a concurrency key run at once (admin or coordinator token); limit null removes the cap. Tasks of a key at its cap stay queued and start as running ones finish.",
        input_schema = schema_for_type::<SetConcurrencyLimitArgs>()
    )]
    async fn set_concurrency_limit(&self, args: JsonObject) -> Outcome {
        let args: SetConcurrencyLimitArgs = parse("set_concurrency_limit", args)?;
        let path = format!("/api/admin/concurrency/{}", encode(&args.key));
        let answer = match args.limit {
            Some(limit) => {
                self.hub("PUT", &path, Some(json!({"limit": limit})))
                    .await?
            }
            None => self.hub("DELETE", &path, None).await?,
        };
        Ok(CallToolResult::structured(answer))
    }

    #[tool(
        description = "Concurrency keys with a cap or a running task: key, limit (null: none) and how many of its tasks run now.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_concurrency(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_concurrency", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/admin/concurrency", None).await?,
        ))
    }

    #[tool(
        description = "Credential groups paused because one of their agents reported its provider's usage limit: group, until when (ms), who reported it. Their agents get no work until then.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_usage_pauses(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("list_usage_pauses", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/usage", None).await?,
        ))
    }

    #[tool(
        description = "End a credential group's usage-limit pause now (admin or coordinator token), e.g. after switching the account's plan.",
        input_schema = schema_for_type::<ResumeUsageArgs>()
    )]
    async fn resume_usage(&self, args: JsonObject) -> Outcome {
        let args: ResumeUsageArgs = parse("resume_usage", args)?;
        let path = format!("/api/usage/{}/resume", encode(&args.credential_group));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, Some(json!({}))).await?,
        ))
    }

    #[tool(
        description = "List every live claim on repository paths: direct reservations (kind reservation: holder, paths, mode, expiry, task) and the write scopes of running tasks (kind task).",
        input_schema = schema_for_type::<ListReservationsArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_reservations(&self, args: JsonObject) -> Outcome {
        let args: ListReservationsArgs = parse("list_reservations", args)?;
        let path = match args.repo {
            Some(r) => format!("/api/reservations?repo={}", encode(&r)),
            None => "/api/reservations".into(),
        };
        Ok(CallToolResult::structured(
            self.hub("GET", &path, None).await?,
        ))
    }
}
