//! The MCP tools: each checks its arguments, asks the hub over HTTP, and answers
//! with the hub's JSON as structured content. Every failure is a tool error
//! (`isError: true`) carrying a structured body: the hub's own error with its
//! `http_status`, `invalid_arguments` for arguments that do not fit the tool's
//! schema, or `hub_unreachable`. A failure never ends the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{
    CallToolResult, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, RequestMetaObject, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    tool, tool_handler, tool_router, ErrorData, Peer, RoleServer, ServerHandler, ServiceExt,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use crate::cli::hub_client::{encode, HubClient, DEFAULT_TIMEOUT};
use crate::Fatal;

mod agents;
mod context;
mod coordination;
mod messages;
mod questions;
mod schedule;
mod topics;

/// Tools that steer others' work: the admin's and coordinators' tokens only;
/// not listed for an agent's or observer's token (the hub refuses them anyway,
/// and the tool error says so).
const STEER_TOOLS: &[&str] = &[
    "cancel_task",
    "retry_task",
    "set_concurrency_limit",
    "resume_usage",
    "put_standing_order",
    "delete_standing_order",
    "answer_task",
    "approve_task",
    "reject_task",
    "set_task_budget",
    "subscribe",
    "unsubscribe",
];
/// Tools of the admin's token alone (policies a coordinator may not lift).
const ADMIN_TOOLS: &[&str] = &["set_approval_rules", "set_daily_budgets"];
/// Tools that change something: not listed for an observer's token.
const WRITE_TOOLS: &[&str] = &[
    "submit_task",
    "broadcast_task",
    "send_message",
    "reserve_paths",
    "release_paths",
    "publish_event",
    "put_context",
];
/// `wait_for_task`: default and longest wait (s), and the longest single hub
/// long poll (ms; the hub holds one at most 60 s).
const DEFAULT_WAIT_SECS: u64 = 300;
const MAX_WAIT_SECS: u64 = 3600;
const POLL_MS: u64 = 20_000;
/// A long poll that came back this much early without an end is followed by a
/// pause, so a misbehaving hub never turns waiting into a request storm.
const EARLY: Duration = Duration::from_millis(500);
/// `list_tasks`: default page size, and the description length in summaries.
const DEFAULT_LIST_LIMIT: u64 = 50;
const SUMMARY_CHARS: usize = 200;

const INSTRUCTIONS: &str = "AgentCom coordinates a fleet of AI agents through a durable \
priority queue. Hand work out with submit_task (or broadcast_task for one copy per agent); \
the hub pushes each task to an idle agent that has every capability it needs. Then \
wait_for_task blocks until the task ends and returns its result; get_task shows status, \
result and history at any time. list_agents shows who is online, idle or busy; \
send_message and read_mailbox carry messages between agents. Failed tools return the \
hub's structured error (field `error`, HTTP status in `http_status`).";

/// Whose rights the token carries (`GET /api/whoami`).
#[derive(Debug, Clone, PartialEq)]
enum Principal {
    Admin,
    Agent(String),
    Coordinator(String),
    Observer(String),
}

impl Principal {
    /// The agent whose mailbox is its own (agents and coordinators).
    fn agent_id(&self) -> Option<&str> {
        match self {
            Principal::Agent(id) | Principal::Coordinator(id) => Some(id),
            Principal::Admin | Principal::Observer(_) => None,
        }
    }

    /// Whether the token may use `tool`.
    fn may_use(&self, tool: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Coordinator(_) => !ADMIN_TOOLS.contains(&tool),
            Principal::Agent(_) => !STEER_TOOLS.contains(&tool) && !ADMIN_TOOLS.contains(&tool),
            Principal::Observer(_) => {
                !STEER_TOOLS.contains(&tool)
                    && !WRITE_TOOLS.contains(&tool)
                    && !ADMIN_TOOLS.contains(&tool)
            }
        }
    }
}

type Outcome = Result<CallToolResult, CallToolResult>;

struct Inner {
    client: HubClient,
    principal: OnceCell<Principal>,
}

#[derive(Clone)]
pub struct HubTools {
    inner: Arc<Inner>,
    tool_router: ToolRouter<HubTools>,
}

// ---- arguments (their doc comments are the schema descriptions a model reads) ----

/// Priority lane; work is taken lane by lane, oldest first within a lane.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// No arguments.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SubmitTaskArgs {
    /// Complete instructions for the agent (at most 10000 characters); the agent sees nothing else but metadata.
    description: String,
    /// Priority lane (default normal).
    priority: Option<Priority>,
    /// Capabilities the agent must have, all of them (e.g. ["code", "rust"]). "agent:<id>" sends the task to that one agent. Empty: any agent.
    #[serde(default)]
    capabilities: Vec<String>,
    /// Structured data handed to the agent with the task (a JSON object).
    metadata: Option<Map<String, Value>>,
    /// Idempotency key: while an unfinished task has this key, submitting again returns that task (deduplicated: true) instead of a new one.
    dedupe_key: Option<String>,
    /// Ids of tasks that must complete first; the task waits until they have. If one of them dead-letters or is cancelled, this task is blocked.
    #[serde(default)]
    depends_on: Vec<String>,
    /// Not before this time, in Unix milliseconds.
    run_after: Option<u64>,
    /// Not before this many seconds from now (instead of run_after).
    delay_seconds: Option<u64>,
    /// Failed attempts before the task goes to dead letter (default 3).
    max_retries: Option<u64>,
    /// Label shared by related tasks; list_tasks can filter by it.
    correlation_id: Option<String>,
    /// Milliseconds without any sign of life from the agent (output, heartbeat, progress) before its sidecar fails the attempt as stalled (default: the sidecar's, 15 minutes).
    stall_ms: Option<u64>,
    /// Longest one attempt may run, in milliseconds; the sidecar then stops the agent and fails the attempt as timeout (default: no limit).
    max_runtime_ms: Option<u64>,
    /// The repository write_paths and read_paths are relative to (required with them).
    repo: Option<String>,
    /// Gitignore-style globs of the files the task writes (e.g. ["src/api/**"]): no other task writing or reading overlapping paths of the same repo runs at the same time; the later one waits.
    #[serde(default)]
    write_paths: Vec<String>,
    /// Globs of the files the task reads: only tasks writing them wait for it.
    #[serde(default)]
    read_paths: Vec<String>,
    /// Concurrency key (e.g. "repo:web"): an operator may cap how many tasks of the key run at once, and keys share the queue round-robin within a priority.
    concurrency_key: Option<String>,
    /// A person approves the task: "before_start" (it waits unscheduled) or "before_complete" (its result waits for review).
    approval: Option<String>,
    /// With approval before_complete: once approved, the agent's sidecar merges the pull request of the result.
    #[serde(default)]
    merge_on_approval: bool,
    /// Tokens the task may spend; over it, the task is paused (not killed) until the budget is raised.
    budget_tokens: Option<u64>,
    /// Dollars the task may spend; over it, the task is paused until the budget is raised.
    budget_usd: Option<f64>,
    /// The task this one is handed off from: it joins that task's correlation (unless correlation_id is given).
    parent_task_id: Option<String>,
    /// Dependencies (from depends_on) whose results the agent receives with the task (small ones inline, large ones by reference: GET /api/tasks/ID/result).
    #[serde(default)]
    inputs_from: Vec<String>,
    /// Be told when the task ends: "message" (a task_finished message to your mailbox; needs an agent token) or "event" (a task.finished topic event).
    notify: Option<String>,
    /// Fan-in: also wait for every task of this correlation id (at most 1000), e.g. all tasks of one batch.
    depends_on_correlation: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetTaskArgs {
    /// The task's id ("task-" and 16 hex digits).
    task_id: String,
    /// Also list every attempt: agent, times, outcome, error.
    #[serde(default)]
    include_attempts: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitForTaskArgs {
    /// The task's id.
    task_id: String,
    /// Give up after this many seconds (default 300, at most 3600) and return the task as it stands, with timed_out: true.
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListTasksArgs {
    /// Only tasks in this status: queued, assigned, blocked, completed, dead_letter or cancelled.
    status: Option<String>,
    /// Only tasks in this lane.
    priority: Option<Priority>,
    /// Only tasks held by this agent.
    assigned_to: Option<String>,
    /// Only tasks with this correlation id (e.g. one broadcast, or a task and its follow-ups).
    correlation_id: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u64>,
    /// Next page: the next_cursor of the previous answer.
    cursor: Option<u64>,
    /// Full task records instead of one-line summaries.
    #[serde(default)]
    full: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskIdArgs {
    /// The task's id.
    task_id: String,
}

// ---- the tools ----

#[tool_router]
impl HubTools {
    pub fn new(client: HubClient) -> HubTools {
        HubTools {
            inner: Arc::new(Inner {
                client,
                principal: OnceCell::new(),
            }),
            tool_router: Self::tool_router()
                + Self::agent_tools()
                + Self::coordination_tools()
                + Self::message_tools()
                + Self::schedule_tools()
                + Self::question_tools()
                + Self::topic_tools()
                + Self::context_tools(),
        }
    }

    #[tool(
        description = "Put one task on the hub's durable queue. The hub gives it to an idle agent that has every listed capability; it is done at most once. Returns task_id; follow it with wait_for_task or get_task.",
        input_schema = schema_for_type::<SubmitTaskArgs>()
    )]
    async fn submit_task(&self, args: JsonObject) -> Outcome {
        let args: SubmitTaskArgs = parse("submit_task", args)?;
        let mut body = task_body(
            &args.description,
            args.priority,
            &args.capabilities,
            args.metadata,
            args.max_retries,
        );
        let run_after = match (args.run_after, args.delay_seconds) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "submit_task",
                    "give run_after or delay_seconds, not both",
                ))
            }
            (Some(at), None) => Some(at),
            (None, Some(secs)) => Some(now_ms().saturating_add(secs.saturating_mul(1000))),
            (None, None) => None,
        };
        put(&mut body, "run_after", run_after.map(Value::from));
        put(&mut body, "dedupe_key", args.dedupe_key.map(Value::from));
        put(&mut body, "stall_ms", args.stall_ms.map(Value::from));
        put(
            &mut body,
            "max_runtime_ms",
            args.max_runtime_ms.map(Value::from),
        );
        put(
            &mut body,
            "correlation_id",
            args.correlation_id.map(Value::from),
        );
        if !args.depends_on.is_empty() {
            body["depends_on"] = json!(args.depends_on);
        }
        put(&mut body, "repo", args.repo.map(Value::from));
        if !args.write_paths.is_empty() {
            body["write_paths"] = json!(args.write_paths);
        }
        if !args.read_paths.is_empty() {
            body["read_paths"] = json!(args.read_paths);
        }
        put(
            &mut body,
            "concurrency_key",
            args.concurrency_key.map(Value::from),
        );
        put(&mut body, "approval", args.approval.map(Value::from));
        if args.merge_on_approval {
            body["merge_on_approval"] = json!(true);
        }
        put(
            &mut body,
            "budget_tokens",
            args.budget_tokens.map(Value::from),
        );
        put(&mut body, "budget_usd", args.budget_usd.map(Value::from));
        put(
            &mut body,
            "parent_task_id",
            args.parent_task_id.map(Value::from),
        );
        if !args.inputs_from.is_empty() {
            body["inputs_from"] = json!(args.inputs_from);
        }
        put(&mut body, "notify", args.notify.map(Value::from));
        put(
            &mut body,
            "depends_on_correlation",
            args.depends_on_correlation.map(Value::from),
        );
        let created = self.hub("POST", "/api/tasks", Some(body)).await?;
        Ok(CallToolResult::structured(created))
    }

    #[tool(
        description = "One task: status (queued, assigned, blocked, completed, dead_letter, cancelled), the agent holding it, its latest progress ({percent, message}), run_after when a retry waits out its backoff, its result or last error, and its history (newest 50 events).",
        input_schema = schema_for_type::<GetTaskArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn get_task(&self, args: JsonObject) -> Outcome {
        let args: GetTaskArgs = parse("get_task", args)?;
        let id = encode(&args.task_id);
        let mut task = self.hub("GET", &format!("/api/tasks/{id}"), None).await?;
        if args.include_attempts {
            let attempts = self
                .hub("GET", &format!("/api/tasks/{id}/attempts"), None)
                .await?;
            task["attempts"] = attempts.get("attempts").cloned().unwrap_or(attempts);
        }
        Ok(CallToolResult::structured(task))
    }

    #[tool(
        description = "Block until a task ends (completed, dead_letter or cancelled) or the timeout passes, then return it with its result. The hub notifies this server of the end (long poll), so waiting long is cheap. On timeout, timed_out is true and the task is returned as it stands; call again to keep waiting.",
        input_schema = schema_for_type::<WaitForTaskArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn wait_for_task(
        &self,
        peer: Peer<RoleServer>,
        meta: RequestMetaObject,
        args: JsonObject,
    ) -> Outcome {
        let args: WaitForTaskArgs = parse("wait_for_task", args)?;
        let secs = args.timeout_seconds.unwrap_or(DEFAULT_WAIT_SECS);
        if secs > MAX_WAIT_SECS {
            return Err(invalid(
                "wait_for_task",
                &format!("timeout_seconds must be at most {MAX_WAIT_SECS}"),
            ));
        }
        let progress = meta.get_progress_token();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let path = format!("/api/tasks/{}/wait", encode(&args.task_id));
        // The first look answers at once (so the client hears the status at
        // once); then long polls of up to POLL_MS each.
        let mut first = true;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = if first {
                Duration::ZERO
            } else {
                left.min(Duration::from_millis(POLL_MS))
            };
            let asked = Instant::now();
            let task = self
                .hub_timed(
                    "GET",
                    &format!("{path}?timeout_ms={}", poll.as_millis()),
                    None,
                    poll + DEFAULT_TIMEOUT,
                )
                .await?;
            let status = task["status"].as_str().unwrap_or_default().to_string();
            let terminal = matches!(status.as_str(), "completed" | "dead_letter" | "cancelled");
            if terminal || Instant::now() >= deadline {
                return Ok(CallToolResult::structured(json!({
                    "task_id": args.task_id,
                    "status": status,
                    "terminal": terminal,
                    "timed_out": !terminal,
                    "waited_ms": started.elapsed().as_millis() as u64,
                    "result": task["result"],
                    "last_error": task["last_error"],
                    "task": task,
                })));
            }
            // Progress keeps a client that asked for it (and its request
            // timeout) informed while the wait goes on.
            if let Some(token) = &progress {
                let waited = started.elapsed().as_secs_f64();
                let note = ProgressNotificationParam::new(token.clone(), waited)
                    .with_total(secs as f64)
                    .with_message(format!("task {} is {status}", args.task_id));
                if let Err(e) = peer.notify_progress(note).await {
                    tracing::debug!(error = %e, "progress notification not sent");
                }
            }
            if !first && asked.elapsed() + EARLY < poll {
                tokio::time::sleep(EARLY.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
            first = false;
        }
    }

    #[tool(
        description = "List tasks in creation order, filtered by status, priority, agent or correlation id, one summary line each (full: true for whole records). Page with cursor = next_cursor.",
        input_schema = schema_for_type::<ListTasksArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn list_tasks(&self, args: JsonObject) -> Outcome {
        let args: ListTasksArgs = parse("list_tasks", args)?;
        let mut query = vec![format!(
            "limit={}",
            args.limit.unwrap_or(DEFAULT_LIST_LIMIT)
        )];
        let filters = [
            ("status", args.status),
            ("priority", args.priority.map(|p| p.as_str().to_string())),
            ("assigned_to", args.assigned_to),
            ("correlation_id", args.correlation_id),
            ("cursor", args.cursor.map(|c| c.to_string())),
        ];
        for (name, value) in filters {
            if let Some(v) = value {
                query.push(format!("{name}={}", encode(&v)));
            }
        }
        let mut page = self
            .hub("GET", &format!("/api/tasks?{}", query.join("&")), None)
            .await?;
        if !args.full {
            if let Some(tasks) = page.get_mut("tasks").and_then(Value::as_array_mut) {
                for task in tasks.iter_mut() {
                    *task = summary(task);
                }
            }
        }
        Ok(CallToolResult::structured(page))
    }

    #[tool(
        description = "Cancel a task that has not finished (admin or coordinator token). An agent working on it is told to stop.",
        input_schema = schema_for_type::<TaskIdArgs>(),
        annotations(destructive_hint = true)
    )]
    async fn cancel_task(&self, args: JsonObject) -> Outcome {
        let args: TaskIdArgs = parse("cancel_task", args)?;
        let path = format!("/api/tasks/{}/cancel", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, None).await?,
        ))
    }

    #[tool(
        description = "Put a dead-lettered, blocked, cancelled or stuck task back on the queue for another attempt (admin or coordinator token).",
        input_schema = schema_for_type::<TaskIdArgs>()
    )]
    async fn retry_task(&self, args: JsonObject) -> Outcome {
        let args: TaskIdArgs = parse("retry_task", args)?;
        let path = format!("/api/tasks/{}/retry", encode(&args.task_id));
        Ok(CallToolResult::structured(
            self.hub("POST", &path, None).await?,
        ))
    }

    #[tool(
        description = "Queue counts: tasks by status and by priority lane, dead letters, paused lanes, tasks waiting on dependencies.",
        input_schema = schema_for_type::<NoArgs>(),
        annotations(read_only_hint = true)
    )]
    async fn queue_stats(&self, args: JsonObject) -> Outcome {
        let _: NoArgs = parse("queue_stats", args)?;
        Ok(CallToolResult::structured(
            self.hub("GET", "/api/tasks/stats", None).await?,
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HubTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agentcom-hub",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = self.principal().await;
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| who.as_ref().is_none_or(|p| p.may_use(t.name.as_ref())))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }
}

impl HubTools {
    /// Serves MCP on stdin/stdout until the client goes away.
    pub async fn serve_stdio(self) -> Result<(), Fatal> {
        let service = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Fatal {
                code: 1,
                message: format!("MCP session did not start: {e}"),
            })?;
        service.waiting().await.map_err(|e| Fatal {
            code: 1,
            message: format!("MCP session ended: {e}"),
        })?;
        Ok(())
    }

    /// Start-up check of the token: a token the hub refuses is a configuration
    /// error (exit 2); an unreachable hub only a warning (it may start later).
    pub async fn check_token(&self, timeout: Duration) -> Result<(), Fatal> {
        match self.whoami(timeout).await {
            Ok(_) => Ok(()),
            Err(Some((status @ (401 | 403), body))) => Err(Fatal {
                code: 2,
                message: format!(
                    "the hub at {} refused the token ({status}): {body}",
                    self.inner.client.base()
                ),
            }),
            Err(other) => {
                tracing::warn!(hub = self.inner.client.base(), answer = ?other, "cannot check the token now; serving anyway");
                Ok(())
            }
        }
    }

    /// The token's principal, asked once and remembered; `None` while the hub
    /// cannot tell (unreachable).
    async fn principal(&self) -> Option<Principal> {
        if let Some(p) = self.inner.principal.get() {
            return Some(p.clone());
        }
        self.whoami(Duration::from_secs(5)).await.ok()
    }

    async fn whoami(&self, timeout: Duration) -> Result<Principal, Option<(u16, String)>> {
        let inner = self.inner.clone();
        let answer = tokio::task::spawn_blocking(move || {
            inner.client.request("GET", "/api/whoami", None, timeout)
        })
        .await
        .map_err(|_| None)?
        .map_err(|_| None)?
        .map_err(Some)?;
        let principal = match (answer["principal"].as_str(), answer["agent_id"].as_str()) {
            (Some("admin"), _) => Principal::Admin,
            (Some("agent"), Some(id)) => Principal::Agent(id.to_string()),
            (Some("coordinator"), Some(id)) => Principal::Coordinator(id.to_string()),
            (Some("observer"), Some(id)) => Principal::Observer(id.to_string()),
            _ => return Err(None),
        };
        let _ = self.inner.principal.set(principal.clone());
        Ok(principal)
    }

    async fn hub(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CallToolResult> {
        self.hub_timed(method, path, body, DEFAULT_TIMEOUT).await
    }

    /// One request to the hub, off the async threads (the client blocks).
    async fn hub_timed(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, CallToolResult> {
        let inner = self.inner.clone();
        let (method, path) = (method.to_string(), path.to_string());
        let answer = tokio::task::spawn_blocking(move || {
            inner.client.request(&method, &path, body.as_ref(), timeout)
        })
        .await
        .map_err(|e| {
            CallToolResult::structured_error(json!({"error": "internal", "message": e.to_string()}))
        })?;
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((status, body))) => Err(refusal(status, &body)),
            Err(message) => Err(CallToolResult::structured_error(json!({
                "error": "hub_unreachable",
                "message": message,
                "hub": self.inner.client.base(),
                "hubs": self.inner.client.bases(),
            }))),
        }
    }
}

/// The hub's structured error as a tool error, with its HTTP status.
fn refusal(status: u16, body: &str) -> CallToolResult {
    let mut error = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({"error": "hub_error", "body": body}),
    };
    error["http_status"] = json!(status);
    CallToolResult::structured_error(error)
}

fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, CallToolResult> {
    serde_json::from_value(Value::Object(args)).map_err(|e| invalid(tool, &e.to_string()))
}

fn invalid(tool: &str, message: &str) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "error": "invalid_arguments",
        "tool": tool,
        "message": message,
    }))
}

/// `POST /api/tasks` body of the fields submit and broadcast share.
fn task_body(
    description: &str,
    priority: Option<Priority>,
    capabilities: &[String],
    metadata: Option<Map<String, Value>>,
    max_retries: Option<u64>,
) -> Value {
    let mut body = json!({"description": description});
    put(
        &mut body,
        "priority",
        priority.map(|p| Value::from(p.as_str())),
    );
    if !capabilities.is_empty() {
        body["needed_capabilities"] = json!(capabilities);
    }
    put(&mut body, "metadata", metadata.map(Value::Object));
    put(&mut body, "max_retries", max_retries.map(Value::from));
    body
}

fn put(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        body[key] = v;
    }
}

/// One line of `list_tasks`.
fn summary(task: &Value) -> Value {
    let description = task["description"].as_str().unwrap_or_default();
    let short: String = if description.chars().count() > SUMMARY_CHARS {
        description
            .chars()
            .take(SUMMARY_CHARS)
            .chain(['…'])
            .collect()
    } else {
        description.to_string()
    };
    let mut line = json!({"description": short, "has_result": !task["result"].is_null()});
    for key in [
        "id",
        "status",
        "priority",
        "assigned_to",
        "created_at",
        "updated_at",
        "completed_at",
        "last_error",
        "correlation_id",
        "parent_task_id",
    ] {
        if !task[key].is_null() {
            line[key] = task[key].clone();
        }
    }
    line
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
