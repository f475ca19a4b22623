//! `agentcom-hub mcp` driven as an MCP client drives it: the server is a child
//! process speaking JSON-RPC on stdin/stdout, the hub a real hub on loopback, and
//! the agents real WebSocket connections.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// How long a test waits for an answer it expects.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One `agentcom-hub mcp` process and its JSON-RPC conversation.
struct McpClient {
    child: Child,
    /// `None` once closed.
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    /// Answers that arrived while another was awaited, by id.
    early: Vec<Value>,
    /// Notifications from the server, in order of arrival.
    notifications: Vec<Value>,
}

impl McpClient {
    /// Spawns the server for `hub` with `token` and completes the handshake.
    fn start(hub: &Hub, token: &str) -> McpClient {
        McpClient::start_at(&hub.url(""), token)
    }

    /// [`McpClient::start`] with `--hub` as given (several URLs, comma-separated).
    fn start_at(hubs: &str, token: &str) -> McpClient {
        let mut client = McpClient::spawn(hubs, token);
        let init = client.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-test", "version": "1"},
            }),
        );
        let result = &init["result"];
        assert_eq!(result["serverInfo"]["name"], "agentcom-hub", "{init}");
        assert_eq!(result["protocolVersion"], "2025-06-18", "{init}");
        assert!(result["capabilities"]["tools"].is_object(), "{init}");
        assert!(
            result["instructions"]
                .as_str()
                .is_some_and(|i| i.contains("submit_task")),
            "{init}"
        );
        client.notify("notifications/initialized", json!({}));
        client
    }

    fn spawn(hub_url: &str, token: &str) -> McpClient {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
            .args(["mcp", "--hub", hub_url])
            .env("AGENTCOM_TOKEN", token)
            .env_remove("AGENTCOM_HUB_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agentcom-hub mcp");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        McpClient {
            child,
            stdin: Some(stdin),
            lines,
            next_id: 1,
            early: Vec::new(),
            notifications: Vec::new(),
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to the MCP server's stdin");
        stdin.flush().expect("flush stdin");
    }

    fn notify(&mut self, method: &str, params: Value) {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.write_line(&msg.to_string());
    }

    /// Sends a request and returns its id without waiting.
    fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.write_line(&msg.to_string());
        id
    }

    /// The answer to request `id` (other answers are kept for later).
    fn answer(&mut self, id: u64) -> Value {
        if let Some(i) = self.early.iter().position(|m| m["id"] == id) {
            return self.early.remove(i);
        }
        loop {
            match self.try_line(ANSWER_TIMEOUT) {
                Some(msg) if msg["id"] == id => return msg,
                Some(msg) => self.keep(msg),
                None => panic!("no answer to request {id} within {ANSWER_TIMEOUT:?}"),
            }
        }
    }

    /// Whether an answer to `id` arrives within `dur`.
    fn answered_within(&mut self, id: u64, dur: Duration) -> bool {
        if self.early.iter().any(|m| m["id"] == id) {
            return true;
        }
        while let Some(msg) = self.try_line(dur) {
            let hit = msg["id"] == id;
            self.keep(msg);
            if hit {
                return true;
            }
        }
        false
    }

    /// Keeps an answer to another request for later, and a notification.
    fn keep(&mut self, msg: Value) {
        if msg.get("method").is_some() {
            self.notifications.push(msg);
        } else {
            self.early.push(msg);
        }
    }

    fn try_line(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}")),
            ),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the MCP server closed stdout"),
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.answer(id)
    }

    /// `tools/call`, returning the JSON-RPC answer.
    fn call_raw(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// A tool call that must succeed: its structured content.
    fn call(&mut self, name: &str, arguments: Value) -> Value {
        let answer = self.call_raw(name, arguments.clone());
        tool_ok(name, &arguments, &answer)
    }

    /// A tool call that must fail as a tool error: its structured error.
    fn call_err(&mut self, name: &str, arguments: Value) -> Value {
        let answer = self.call_raw(name, arguments.clone());
        tool_err(name, &arguments, &answer)
    }

    /// Closes stdin, as a client going away does, and waits for the server to exit.
    fn close(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the MCP server")
    }

    fn tool_names(&mut self) -> Vec<String> {
        let list = self.request("tools/list", json!({}));
        list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list: {list}"))
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_string())
            .collect()
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool_ok(name: &str, arguments: &Value, answer: &Value) -> Value {
    let result = &answer["result"];
    assert_eq!(result["isError"], false, "{name} {arguments}: {answer}");
    let structured = result["structuredContent"].clone();
    assert!(structured.is_object(), "{name}: {answer}");
    // The text content carries the same JSON for clients without structured output.
    let text = result["content"][0]["text"].as_str().expect("text content");
    assert_eq!(
        serde_json::from_str::<Value>(text).ok(),
        Some(structured.clone())
    );
    structured
}

fn tool_err(name: &str, arguments: &Value, answer: &Value) -> Value {
    let result = &answer["result"];
    assert!(
        answer.get("error").is_none(),
        "{name} {arguments}: a tool error, not a protocol error: {answer}"
    );
    assert_eq!(result["isError"], true, "{name} {arguments}: {answer}");
    let error = result["structuredContent"].clone();
    assert!(error["error"].is_string(), "{name}: {answer}");
    error
}

const ALL_TOOLS: [&str; 40] = [
    "list_agents",
    "submit_task",
    "broadcast_task",
    "get_task",
    "wait_for_task",
    "list_tasks",
    "cancel_task",
    "retry_task",
    "send_message",
    "read_mailbox",
    "queue_stats",
    "reserve_paths",
    "release_paths",
    "list_reservations",
    "set_concurrency_limit",
    "list_concurrency",
    "list_usage_pauses",
    "resume_usage",
    "list_standing_orders",
    "standing_order_runs",
    "put_standing_order",
    "delete_standing_order",
    "query_events",
    "list_questions",
    "answer_task",
    "approve_task",
    "reject_task",
    "approval_rules",
    "set_task_budget",
    "spend",
    "publish_event",
    "list_topics",
    "topic_events",
    "subscribe",
    "list_subscriptions",
    "unsubscribe",
    "get_context",
    "put_context",
    "list_context",
    "context_history",
];
/// The admin's token alone sees these.
const ADMIN_TOOLS: [&str; 2] = ["set_approval_rules", "set_daily_budgets"];
/// The steering tools: the admin's and coordinators' tokens only.
const ADMIN_ONLY: [&str; 12] = [
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

#[test]
fn a_coordinator_submits_waits_and_reads_the_result() {
    let hub = Hub::start();
    let coord_token = register_agent(&hub, "coord", &[]);
    let worker_token = register_agent(&hub, "worker", &["code"]);
    let mut worker = Agent::connect_with_caps(&hub, "worker", &worker_token, &["code"]);
    let mut mcp = McpClient::start(&hub, &coord_token);

    // Every tool has a description and an object schema; an agent's token does
    // not see the admin-only ones.
    let list = mcp.request("tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().expect("tools").clone();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for name in ALL_TOOLS {
        let admin_only = ADMIN_ONLY.contains(&name);
        assert_eq!(names.contains(&name), !admin_only, "{name} in {names:?}");
    }
    assert_eq!(names.len(), ALL_TOOLS.len() - ADMIN_ONLY.len(), "{names:?}");
    for tool in &tools {
        assert!(
            tool["description"].as_str().is_some_and(|d| d.len() > 40),
            "{tool}"
        );
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    let submit = tools
        .iter()
        .find(|t| t["name"] == "submit_task")
        .expect("submit_task");
    let props = &submit["inputSchema"]["properties"];
    for field in [
        "description",
        "priority",
        "capabilities",
        "metadata",
        "dedupe_key",
        "depends_on",
        "run_after",
        "repo",
        "write_paths",
        "read_paths",
    ] {
        assert!(
            props[field].is_object(),
            "submit_task lacks {field}: {submit}"
        );
    }
    assert_eq!(submit["inputSchema"]["required"], json!(["description"]));

    // The worker shows up idle with its capability.
    let agents = mcp.call("list_agents", json!({"idle_only": true}));
    let worker_row = agents["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["agent_id"] == "worker"))
        .unwrap_or_else(|| panic!("worker not idle: {agents}"))
        .clone();
    assert_eq!(worker_row["capabilities"], json!(["code"]));
    assert_eq!(worker_row["online"], true);

    let created = mcp.call(
        "submit_task",
        json!({"description": "add two numbers", "priority": "high",
               "capabilities": ["code"], "metadata": {"a": 40, "b": 2},
               "stall_ms": 60000, "max_runtime_ms": 600000,
               "repo": "calc", "write_paths": ["src/add.rs"], "read_paths": ["src/**"]}),
    );
    assert_eq!(created["status"], "queued", "{created}");
    assert_eq!(created["priority"], 1, "{created}");
    let task_id = created["task_id"].as_str().expect("task_id").to_string();

    let assign = worker.take(&task_id);
    assert_eq!(assign["metadata"], json!({"a": 40, "b": 2}));
    assert_eq!(assign["description"], "add two numbers");
    // The agent's limits travel with the assignment.
    assert_eq!(assign["stall_ms"], 60000, "{assign}");
    assert_eq!(assign["max_runtime_ms"], 600000, "{assign}");
    // Its write scope is on the task.
    let t = mcp.call("get_task", json!({"task_id": task_id}));
    assert_eq!(
        (&t["repo"], &t["write_paths"], &t["read_paths"]),
        (&json!("calc"), &json!(["src/add.rs"]), &json!(["src/**"])),
        "{t}"
    );
    // Its progress shows in get_task.
    worker.send(json!({"type": "task_progress", "task_id": task_id,
                       "generation": assign["generation"], "progress": 30, "message": "adding"}));
    let ok = wait_for(REPLY_TIMEOUT, || {
        mcp.call("get_task", json!({"task_id": task_id}))["progress"]["percent"] == 30
    });
    assert!(ok, "get_task shows no progress");

    // The wait holds while the task is unfinished; other tools are served meanwhile.
    let wait = mcp.send(
        "tools/call",
        json!({"name": "wait_for_task", "arguments": {"task_id": task_id, "timeout_seconds": 120},
               "_meta": {"progressToken": "wait-1"}}),
    );
    let busy = mcp.call("list_agents", json!({"capabilities": ["code"]}));
    let row = &busy["agents"][0];
    assert_eq!(row["agent_id"], "worker", "{busy}");
    assert_eq!(row["current_task_id"], task_id, "{busy}");
    let seen = mcp.call("get_task", json!({"task_id": task_id}));
    assert_eq!(seen["status"], "assigned", "{seen}");
    assert!(!mcp.answered_within(wait, Duration::from_millis(300)));

    worker.send(json!({"type": "task_complete", "task_id": task_id,
                       "generation": assign["generation"], "result": {"sum": 42}}));
    assert_eq!(
        worker.recv_ack(&task_id, REPLY_TIMEOUT)["status"],
        "complete"
    );

    let waited = mcp.answer(wait);
    let waited = tool_ok("wait_for_task", &json!({}), &waited);
    assert_eq!(waited["status"], "completed", "{waited}");
    // The client asked for progress: it heard the status while it waited.
    let progress = mcp
        .notifications
        .iter()
        .find(|n| n["method"] == "notifications/progress")
        .unwrap_or_else(|| panic!("no progress: {:?}", mcp.notifications));
    assert_eq!(progress["params"]["progressToken"], "wait-1", "{progress}");
    assert_eq!(progress["params"]["total"], 120.0, "{progress}");
    assert!(
        progress["params"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("is assigned")),
        "{progress}"
    );
    assert_eq!(waited["terminal"], true, "{waited}");
    assert_eq!(waited["timed_out"], false, "{waited}");
    assert_eq!(waited["result"], json!({"sum": 42}), "{waited}");

    let done = mcp.call(
        "get_task",
        json!({"task_id": task_id, "include_attempts": true}),
    );
    assert_eq!(done["result"], json!({"sum": 42}));
    assert_eq!(
        done["submitted_by"], "coord",
        "the token's rights, the token's name"
    );
    assert!(
        history_events(&done).contains(&"completed".to_string()),
        "{done}"
    );
    assert_eq!(done["attempts"][0]["agent_id"], "worker", "{done}");
    assert_eq!(done["attempts"][0]["outcome"], "completed", "{done}");

    // Waiting on a finished task answers at once.
    let again = mcp.call(
        "wait_for_task",
        json!({"task_id": task_id, "timeout_seconds": 5}),
    );
    assert_eq!(again["status"], "completed");

    let listed = mcp.call("list_tasks", json!({"status": "completed"}));
    assert_eq!(listed["count"], 1, "{listed}");
    let line = &listed["tasks"][0];
    assert_eq!(line["id"], task_id.as_str());
    assert_eq!(line["has_result"], true);
    assert!(line.get("history").is_none(), "summaries only: {line}");

    let stats = mcp.call("queue_stats", json!({}));
    assert_eq!(stats["by_status"]["completed"], 1, "{stats}");
}

#[test]
fn a_wait_that_times_out_returns_the_task_as_it_stands() {
    let hub = Hub::start();
    let mut mcp = McpClient::start(&hub, &hub.admin_token);
    let created = mcp.call(
        "submit_task",
        json!({"description": "nobody can do this", "capabilities": ["unicorn"]}),
    );
    let task_id = created["task_id"].as_str().expect("task_id");
    let waited = mcp.call(
        "wait_for_task",
        json!({"task_id": task_id, "timeout_seconds": 1}),
    );
    assert_eq!(waited["timed_out"], true, "{waited}");
    assert_eq!(waited["terminal"], false, "{waited}");
    assert_eq!(waited["status"], "queued", "{waited}");
    assert_eq!(waited["task"]["id"], task_id);

    // A cancel ends the wait too.
    let wait = mcp.send(
        "tools/call",
        json!({"name": "wait_for_task", "arguments": {"task_id": task_id, "timeout_seconds": 120}}),
    );
    let (status, body) = hub.post(&format!("/api/tasks/{task_id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let waited = tool_ok("wait_for_task", &json!({}), &mcp.answer(wait));
    assert_eq!(waited["status"], "cancelled", "{waited}");
    assert_eq!(waited["terminal"], true, "{waited}");
}

#[test]
fn bad_arguments_are_tool_errors_and_the_server_keeps_serving() {
    let hub = Hub::start();
    let mut mcp = McpClient::start(&hub, &hub.admin_token);

    for (tool, args) in [
        ("submit_task", json!({})),
        ("submit_task", json!({"description": 7})),
        (
            "submit_task",
            json!({"description": "x", "priority": "bogus"}),
        ),
        ("submit_task", json!({"description": "x", "colour": "red"})),
        (
            "submit_task",
            json!({"description": "x", "run_after": 1, "delay_seconds": 1}),
        ),
        ("get_task", json!({"task_id": ["not", "a", "string"]})),
        (
            "wait_for_task",
            json!({"task_id": "task-0", "timeout_seconds": 999999}),
        ),
        ("list_tasks", json!({"limit": -1})),
        ("send_message", json!({"to": "someone"})),
        ("queue_stats", json!({"unexpected": true})),
    ] {
        let error = mcp.call_err(tool, args.clone());
        assert_eq!(
            error["error"], "invalid_arguments",
            "{tool} {args}: {error}"
        );
        assert_eq!(error["tool"], tool);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // What only the hub can judge comes back as the hub's own structured error.
    let long = "x".repeat(10_001);
    let error = mcp.call_err("submit_task", json!({"description": long}));
    assert_eq!(error["error"], "validation_failed", "{error}");
    assert_eq!(error["http_status"], 422);
    assert_eq!(error["errors"][0]["field"], "description", "{error}");
    let error = mcp.call_err(
        "submit_task",
        json!({"description": "x", "depends_on": ["task-00000000000000ff"]}),
    );
    assert_eq!(error["http_status"], 422, "{error}");
    let error = mcp.call_err("get_task", json!({"task_id": "task-00000000000000ff"}));
    assert_eq!(error["error"], "task_not_found", "{error}");
    assert_eq!(error["http_status"], 404);
    let error = mcp.call_err("list_tasks", json!({"status": "sleeping"}));
    assert_eq!(error["http_status"], 422, "{error}");
    let error = mcp.call_err("read_mailbox", json!({}));
    assert_eq!(error["error"], "invalid_arguments", "{error}");

    // Nothing was created by any of it.
    let (_, stats) = hub.get("/api/tasks/stats");
    let total: u64 = stats["by_status"]
        .as_object()
        .expect("by_status")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(total, 0, "{stats}");

    // An unknown tool and a line that is not JSON are protocol errors, not crashes.
    let unknown = mcp.call_raw("launch_rockets", json!({}));
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");
    mcp.write_line("{ this is not json");
    let _ = mcp.try_line(Duration::from_millis(500));

    let created = mcp.call("submit_task", json!({"description": "still serving"}));
    assert_eq!(created["status"], "queued", "{created}");
    assert!(
        mcp.child.try_wait().expect("try_wait").is_none(),
        "server exited"
    );

    // The client going away (stdin closed) ends the server cleanly.
    let status = mcp.close();
    assert!(status.success(), "{status}");
}

#[test]
fn an_agent_token_cannot_use_the_steering_tools() {
    let hub = Hub::start();
    let token = register_agent(&hub, "coord", &[]);
    let mut agent_mcp = McpClient::start(&hub, &token);
    let task_id = agent_mcp.call("submit_task", json!({"description": "keep me"}))["task_id"]
        .as_str()
        .expect("task_id")
        .to_string();

    let names = agent_mcp.tool_names();
    assert!(!names.contains(&"cancel_task".to_string()), "{names:?}");
    assert!(!names.contains(&"retry_task".to_string()), "{names:?}");
    for tool in ["cancel_task", "retry_task"] {
        let error = agent_mcp.call_err(tool, json!({"task_id": task_id}));
        assert_eq!(error["error"], "admin_only", "{tool}: {error}");
        assert_eq!(error["http_status"], 403, "{tool}: {error}");
    }
    assert_eq!(
        get_task(&hub, &task_id)["status"],
        "queued",
        "nothing changed"
    );

    // The admin token sees and uses them.
    let mut admin_mcp = McpClient::start(&hub, &hub.admin_token);
    let names = admin_mcp.tool_names();
    assert!(names.contains(&"cancel_task".to_string()), "{names:?}");
    assert!(names.contains(&"retry_task".to_string()), "{names:?}");
    let cancelled = admin_mcp.call("cancel_task", json!({"task_id": task_id}));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let retried = admin_mcp.call("retry_task", json!({"task_id": task_id}));
    assert_eq!(retried["task_id"], task_id.as_str(), "{retried}");
    assert_eq!(get_task(&hub, &task_id)["status"], "queued");
}

#[test]
fn a_broadcast_gives_each_matching_agent_its_own_task() {
    let hub = Hub::start();
    let mut gpus: Vec<Agent> = ["gpu-1", "gpu-2"]
        .iter()
        .map(|id| {
            let token = register_agent(&hub, id, &["gpu"]);
            Agent::connect_with_caps(&hub, id, &token, &["gpu"])
        })
        .collect();
    let cpu_token = register_agent(&hub, "cpu-1", &["cpu"]);
    let mut cpu = Agent::connect_with_caps(&hub, "cpu-1", &cpu_token, &["cpu"]);
    let mut mcp = McpClient::start(&hub, &hub.admin_token);

    let sent = mcp.call(
        "broadcast_task",
        json!({"description": "report your GPU", "capabilities": ["gpu"]}),
    );
    assert_eq!(sent["count"], 2, "{sent}");
    let correlation = sent["correlation_id"].as_str().expect("correlation_id");
    for agent in gpus.iter_mut() {
        let row = sent["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["agent_id"] == agent.agent_id.as_str()))
            .unwrap_or_else(|| panic!("no task for {}: {sent}", agent.agent_id))
            .clone();
        let task_id = row["task_id"].as_str().expect("task_id");
        let assign = agent.take(task_id);
        agent.complete(&assign);
    }
    cpu.expect_no_type("task_assign", Duration::from_millis(300));

    let listed = mcp.call("list_tasks", json!({"correlation_id": correlation}));
    assert_eq!(listed["count"], 2, "{listed}");
    for (id, waited) in sent["task_ids"]
        .as_array()
        .expect("task_ids")
        .iter()
        .map(|id| {
            (
                id.clone(),
                mcp.call("wait_for_task", json!({"task_id": id})),
            )
        })
    {
        assert_eq!(waited["status"], "completed", "{id}: {waited}");
    }

    let error = mcp.call_err(
        "broadcast_task",
        json!({"description": "x", "capabilities": ["quantum"]}),
    );
    assert_eq!(error["error"], "no_matching_agents", "{error}");
}

#[test]
fn agents_reserve_and_release_paths_through_the_tools() {
    let hub = Hub::start();
    let alice_token = register_agent(&hub, "alice", &[]);
    let bob_token = register_agent(&hub, "bob", &[]);
    let mut alice = McpClient::start(&hub, &alice_token);
    let mut bob = McpClient::start(&hub, &bob_token);

    let granted = alice.call(
        "reserve_paths",
        json!({"repo": "web", "paths": ["src/api/**"], "ttl_ms": 60_000}),
    );
    assert_eq!(granted["status"], "granted", "{granted}");
    assert_eq!(granted["reservation"]["holder"], "alice", "{granted}");
    let id = granted["reservation"]["reservation_id"].clone();

    let conflict = bob.call_err(
        "reserve_paths",
        json!({"repo": "web", "paths": ["src/api/x.rs"], "mode": "shared"}),
    );
    assert_eq!(conflict["error"], "scope_conflict", "{conflict}");
    assert_eq!(conflict["http_status"], 409, "{conflict}");
    assert_eq!(conflict["holder"]["agent_id"], "alice", "{conflict}");
    let bad = bob.call_err("reserve_paths", json!({"repo": "web", "paths": ["!x"]}));
    assert_eq!(bad["http_status"], 422, "{bad}");
    let bad = bob.call_err("reserve_paths", json!({"repo": "web", "mode": "loud"}));
    assert_eq!(bad["error"], "invalid_arguments", "{bad}");

    let listed = bob.call("list_reservations", json!({"repo": "web"}));
    assert_eq!(listed["reservations"][0]["reservation_id"], id, "{listed}");
    let refused = bob.call_err("release_paths", json!({"reservation_id": id}));
    assert_eq!(refused["error"], "not_holder", "{refused}");
    let released = alice.call("release_paths", json!({"reservation_id": id}));
    assert_eq!(released["status"], "released", "{released}");
    let listed = bob.call("list_reservations", json!({}));
    assert_eq!(listed["reservations"], json!([]), "{listed}");

    // Concurrency: the admin caps a key, agents read it and tag their tasks.
    let mut admin = McpClient::start(&hub, &hub.admin_token);
    let set = admin.call(
        "set_concurrency_limit",
        json!({"key": "repo:web", "limit": 2}),
    );
    assert_eq!(set["limit"], 2, "{set}");
    let refused = alice.call_err("set_concurrency_limit", json!({"key": "k", "limit": 1}));
    assert_eq!(refused["http_status"], 403, "{refused}");
    let created = alice.call(
        "submit_task",
        json!({"description": "keyed", "concurrency_key": "repo:web"}),
    );
    let task = get_task(&hub, created["task_id"].as_str().unwrap_or_default());
    assert_eq!(task["concurrency_key"], "repo:web", "{task}");
    let keys = bob.call("list_concurrency", json!({}));
    assert_eq!(
        keys["keys"][0],
        json!({"key": "repo:web", "limit": 2, "running": 0}),
        "{keys}"
    );
    let removed = admin.call(
        "set_concurrency_limit",
        json!({"key": "repo:web", "limit": null}),
    );
    assert!(removed["limit"].is_null(), "{removed}");

    // Usage pauses: listed for anyone, resumed by the admin.
    let mut worker = Agent::connect(&hub, "alice", &alice_token);
    // Alice takes the keyed task: her one slot is busy with it.
    let pushed = worker.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(pushed["task_id"], created["task_id"], "{pushed}");
    let mut listed = Value::Null;
    let shown = wait_for(PUSH_TIMEOUT, || {
        listed = bob.call("list_agents", json!({"online_only": true}));
        listed["agents"][0]["free_slots"] == 0
    });
    assert!(shown, "{listed}");
    let alice_card = &listed["agents"][0];
    assert_eq!(alice_card["slots"], 1, "{listed}");
    assert_eq!(alice_card["free_slots"], 0, "{listed}");
    assert_eq!(
        alice_card["running"][0]["task_id"], created["task_id"],
        "{listed}"
    );
    worker.send(json!({"type": "usage_limited", "resets_at": 9_999_999_999_999u64}));
    let reply = worker.recv_type("usage_paused", Duration::from_secs(5));
    assert_eq!(reply["credential_group"], "agent:alice", "{reply}");
    let pauses = bob.call("list_usage_pauses", json!({}));
    assert_eq!(
        pauses["paused"][0]["credential_group"], "agent:alice",
        "{pauses}"
    );
    let resumed = admin.call("resume_usage", json!({"credential_group": "agent:alice"}));
    assert_eq!(resumed["status"], "resumed", "{resumed}");
    let missing = admin.call_err("resume_usage", json!({"credential_group": "agent:alice"}));
    assert_eq!(missing["http_status"], 404, "{missing}");
}

#[test]
fn messages_go_out_and_the_mailbox_is_read_and_acknowledged() {
    let hub = Hub::start();
    let coord_token = register_agent(&hub, "coord", &[]);
    let worker_token = register_agent(&hub, "worker", &[]);
    let mut worker = Agent::connect(&hub, "worker", &worker_token);
    let mut mcp = McpClient::start(&hub, &coord_token);

    let sent = mcp.call(
        "send_message",
        json!({"to": "worker", "text": "start on the report", "type": "request"}),
    );
    assert_eq!(sent["status"], "sent", "{sent}");
    let pushed = worker.recv_type("message", PUSH_TIMEOUT);
    assert_eq!(pushed["from"], "coord", "{pushed}");
    assert_eq!(pushed["payload"]["text"], "start on the report", "{pushed}");
    assert_eq!(pushed["message_type"], "request", "{pushed}");

    // The coordinator has no socket: replies wait in its mailbox.
    let (status, body) = hub.post_as(
        "/api/message",
        Some(&worker_token),
        &json!({"to": "coord", "payload": {"text": "on it"}, "reply_to": sent["id"]}),
    );
    assert_eq!(status, 200, "{body}");
    let mailbox = mcp.call("read_mailbox", json!({"ack": true}));
    assert_eq!(mailbox["agent_id"], "coord", "{mailbox}");
    assert_eq!(mailbox["count"], 1, "{mailbox}");
    assert_eq!(
        mailbox["messages"][0]["message"]["payload"]["text"], "on it",
        "{mailbox}"
    );
    assert_eq!(mailbox["acked"], mailbox["messages"][0]["seq"], "{mailbox}");
    let after = mcp.call("read_mailbox", json!({}));
    assert_eq!(after["count"], 0, "acknowledged messages are gone: {after}");

    // Another agent's mailbox is not the coordinator's to read.
    let error = mcp.call_err("read_mailbox", json!({"agent_id": "worker"}));
    assert_eq!(error["http_status"], 403, "{error}");
}

#[test]
fn a_refused_token_or_bad_url_stops_start_up_and_an_absent_hub_does_not() {
    let hub = Hub::start();
    let run = |url: &str, token: &str| {
        Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
            .args(["mcp", "--hub", url])
            .env("AGENTCOM_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run agentcom-hub mcp")
    };
    let out = run(&hub.url(""), "not-a-token");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused the token"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing but MCP on stdout: {out:?}");
    let out = run("ftp://example", &hub.admin_token);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // No hub on this port: the server starts, and tools say the hub is unreachable.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let mut mcp = McpClient::spawn(&format!("http://127.0.0.1:{port}"), "some-token");
    let init = mcp.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "mcp-test", "version": "1"}}),
    );
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    mcp.notify("notifications/initialized", json!({}));
    let error = mcp.call_err("queue_stats", json!({}));
    assert_eq!(error["error"], "hub_unreachable", "{error}");
}

#[test]
fn submit_task_forwards_dedupe_key_dependencies_and_start_times() {
    let hub = Hub::start();
    let mut mcp = McpClient::start(&hub, &hub.admin_token);
    let first = mcp.call(
        "submit_task",
        json!({"description": "build", "dedupe_key": "build-42", "correlation_id": "release-7"}),
    );
    let again = mcp.call(
        "submit_task",
        json!({"description": "build", "dedupe_key": "build-42"}),
    );
    assert_eq!(again["task_id"], first["task_id"], "{again}");
    assert_eq!(again["deduplicated"], true, "{again}");

    let build = first["task_id"].as_str().expect("task_id");
    let test = mcp.call(
        "submit_task",
        json!({"description": "test", "depends_on": [build], "max_retries": 1}),
    );
    let test = get_task(&hub, test["task_id"].as_str().expect("task_id"));
    assert_eq!(test["depends_on"], json!([build]), "{test}");
    assert_eq!(test["max_retries"], 1, "{test}");

    let before = now_ms();
    let later = mcp.call(
        "submit_task",
        json!({"description": "later", "delay_seconds": 3600, "metadata": {"k": "v"}}),
    );
    let later = get_task(&hub, later["task_id"].as_str().expect("task_id"));
    let run_after = later["run_after"].as_u64().expect("run_after set");
    assert!(run_after >= before + 3_600_000, "{later}");
    assert_eq!(later["metadata"], json!({"k": "v"}));
    let at = mcp.call(
        "submit_task",
        json!({"description": "at", "run_after": before + 7_200_000}),
    );
    let at = get_task(&hub, at["task_id"].as_str().expect("task_id"));
    assert_eq!(at["run_after"], before + 7_200_000, "{at}");

    let listed = mcp.call("list_tasks", json!({"correlation_id": "release-7"}));
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["tasks"][0]["id"], build, "{listed}");
}

#[test]
fn tools_follow_the_tokens_role() {
    let hub = Hub::start();
    let issue = |id: &str, role: &str| -> String {
        let (status, body) = hub.post("/admin/tokens", &json!({"agent_id": id, "role": role}));
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_string()
    };
    let write_tools = [
        "submit_task",
        "broadcast_task",
        "send_message",
        "reserve_paths",
        "release_paths",
        "publish_event",
        "put_context",
    ];
    // A coordinator sees every tool, the steering ones included, and they work.
    let mut lead = McpClient::start(&hub, &issue("lead", "coordinator"));
    let names = lead.tool_names();
    assert_eq!(names.len(), ALL_TOOLS.len(), "{names:?}");
    let created = lead.call("submit_task", json!({"description": "replan me"}));
    let id = created["task_id"].as_str().expect("task_id").to_string();
    let cancelled = lead.call("cancel_task", json!({"task_id": id}));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // An observer sees only what reads, and a write is refused by the hub.
    let mut eye = McpClient::start(&hub, &issue("eye", "observer"));
    let names = eye.tool_names();
    for name in ALL_TOOLS {
        let hidden = ADMIN_ONLY.contains(&name) || write_tools.contains(&name);
        assert_eq!(
            names.contains(&name.to_string()),
            !hidden,
            "{name} in {names:?}"
        );
    }
    let listed = eye.call("list_tasks", json!({}));
    assert_eq!(listed["tasks"][0]["id"], id.as_str(), "{listed}");
    let refused = eye.call_err("submit_task", json!({"description": "no"}));
    assert_eq!(refused["error"], "read_only", "{refused}");
    assert_eq!(refused["http_status"], 403, "{refused}");
}

#[test]
fn standing_orders_and_the_event_log_through_the_tools() {
    let hub = Hub::start();
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let order = json!({"name": "sweep", "cron": "*/15 * * * *", "capability": "reports",
                       "task": {"description": "Sweep the inbox"}});
    let created = lead.call("put_standing_order", order.clone());
    assert_eq!(created["status"], "created", "{created}");
    let mut changed = order.clone();
    changed["cron"] = json!("0 * * * *");
    let updated = lead.call("put_standing_order", changed);
    assert_eq!(updated["status"], "updated", "{updated}");
    let listed = lead.call("list_standing_orders", json!({}));
    assert_eq!(listed["orders"][0]["cron"], "0 * * * *", "{listed}");
    let runs = lead.call("standing_order_runs", json!({"name": "sweep"}));
    assert!(runs["runs"].is_array(), "{runs}");
    let bad = lead.call_err(
        "put_standing_order",
        json!({"name": "x", "cron": "61 * * * *", "task": {}}),
    );
    assert_eq!(bad["http_status"], 422, "{bad}");
    let deleted = lead.call("delete_standing_order", json!({"name": "sweep"}));
    assert_eq!(deleted["status"], "deleted", "{deleted}");
    // The event log: filtered by kind, with the coordinator as the actor.
    let task = submit(&hub, json!({"description": "logged"}));
    let cancelled = lead.call("cancel_task", json!({"task_id": task}));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let events = lead.call("query_events", json!({"kind": "cancelled"}));
    assert_eq!(events["events"][0]["actor"], "lead", "{events}");
    assert_eq!(events["events"][0]["task_id"], task.as_str(), "{events}");
    let all = lead.call("query_events", json!({"task_id": task, "limit": 1}));
    assert_eq!(all["events"].as_array().map(Vec::len), Some(1), "{all}");
    assert!(all["next_cursor"].is_u64(), "{all}");
    let bad = lead.call_err("query_events", json!({"limit": "many"}));
    assert_eq!(bad["error"], "invalid_arguments", "{bad}");
}

#[test]
fn questions_are_listed_and_answered_through_the_tools() {
    let hub = Hub::start();
    let token = register_agent(&hub, "asker", &[]);
    let mut agent = Agent::connect(&hub, "asker", &token);
    let task = submit(&hub, json!({"description": "needs a decision"}));
    let assign = agent.take(&task);
    let ack = agent.ask(&assign, "Which region?", json!({"options": ["eu", "us"]}));
    assert_eq!(ack["status"], "input_required", "{ack}");
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let waiting = lead.call("list_questions", json!({}));
    assert_eq!(
        waiting["questions"][0]["question"]["question"], "Which region?",
        "{waiting}"
    );
    let wrong = lead.call_err("answer_task", json!({"task_id": task, "answer": "asia"}));
    assert_eq!(wrong["http_status"], 422, "{wrong}");
    let answered = lead.call("answer_task", json!({"task_id": task, "answer": "eu"}));
    assert_eq!(answered["status"], "answered", "{answered}");
    let pushed = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (pushed["answer"].clone(), pushed["answered_by"].clone()),
        (json!("eu"), json!("lead"))
    );
}

#[test]
fn approvals_are_decided_through_the_tools() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let created = lead.call(
        "submit_task",
        json!({"description": "migrate", "approval": "before_complete"}),
    );
    let task = created["task_id"].as_str().unwrap_or_default().to_string();
    let assign = agent.take(&task);
    agent.send(json!({"type": "task_complete", "task_id": task,
                      "generation": assign["generation"], "result": {"summary": "v1"}}));
    assert_eq!(
        agent.recv_ack(&task, PUSH_TIMEOUT)["status"],
        "input_required"
    );
    let waiting = lead.call("list_questions", json!({}));
    assert_eq!(waiting["questions"][0]["kind"], "approval", "{waiting}");
    let rejected = lead.call(
        "reject_task",
        json!({"task_id": task, "reason": "too broad"}),
    );
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    let back = agent.recv_type("task_answer", PUSH_TIMEOUT);
    assert_eq!(
        (back["answer"].clone(), back["note"].clone()),
        (json!("reject"), json!("too broad"))
    );
    agent.send(json!({"type": "task_complete", "task_id": task,
                      "generation": assign["generation"], "result": {"summary": "v2"}}));
    assert_eq!(
        agent.recv_ack(&task, PUSH_TIMEOUT)["status"],
        "input_required"
    );
    let approved = lead.call("approve_task", json!({"task_id": task}));
    assert_eq!(approved["task"]["status"], "completed", "{approved}");
    let rules = lead.call("approval_rules", json!({}));
    assert_eq!(rules["source"], "config", "{rules}");
}

#[test]
fn budgets_are_set_and_spend_read_through_the_tools() {
    let hub = Hub::start();
    let token = register_agent(&hub, "worker", &[]);
    let mut agent = Agent::connect(&hub, "worker", &token);
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let created = lead.call(
        "submit_task",
        json!({"description": "bounded", "budget_tokens": 100}),
    );
    let task = created["task_id"].as_str().unwrap_or_default().to_string();
    let assign = agent.take(&task);
    assert_eq!(assign["budget_tokens"], 100, "{assign}");
    agent.send(json!({"type": "task_progress", "task_id": task,
                      "generation": assign["generation"], "tokens_used": 250}));
    agent.recv_type("task_paused", PUSH_TIMEOUT);
    let bad = lead.call_err(
        "set_task_budget",
        json!({"task_id": task, "budget_tokens": "lots"}),
    );
    assert_eq!(bad["error"], "invalid_arguments", "{bad}");
    let set = lead.call(
        "set_task_budget",
        json!({"task_id": task, "budget_tokens": 1000}),
    );
    assert_eq!(set["task"]["status"], "assigned", "{set}");
    agent.recv_type("task_answer", PUSH_TIMEOUT);
    let spend = lead.call("spend", json!({}));
    assert_eq!(spend["today"]["agents"]["worker"]["tokens"], 250, "{spend}");
}

#[test]
fn the_admin_sets_policies_through_the_tools_and_a_coordinator_does_not_see_them() {
    let hub = Hub::start();
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let names = lead.tool_names();
    for tool in ADMIN_TOOLS {
        assert!(!names.contains(&tool.to_string()), "{tool} in {names:?}");
    }
    let mut admin = McpClient::start(&hub, &hub.admin_token);
    let names = admin.tool_names();
    assert_eq!(
        names.len(),
        ALL_TOOLS.len() + ADMIN_TOOLS.len(),
        "{names:?}"
    );
    let set = admin.call(
        "set_approval_rules",
        json!({"rules": [{"name": "infra", "paths": ["infra/**"]}]}),
    );
    assert_eq!(set["rules"][0]["name"], "infra", "{set}");
    let bad = admin.call_err("set_approval_rules", json!({"rules": [{"name": "x"}]}));
    assert_eq!(bad["http_status"], 422, "{bad}");
    let budgets = admin.call(
        "set_daily_budgets",
        json!({"agents": {"w": {"tokens": 1000}}, "groups": {"team": {"usd": 5.0}}}),
    );
    assert_eq!(
        budgets["budgets"]["agents"]["w"]["tokens"], 1000,
        "{budgets}"
    );
    assert_eq!(hub.get("/api/admin/approval-rules").1["source"], "api");
}

#[test]
fn topic_events_are_published_and_read_through_the_tools() {
    let hub = Hub::start();
    let token = register_agent(&hub, "reviewer", &[]);
    let mut mcp = McpClient::start(&hub, &token);
    let published = mcp.call(
        "publish_event",
        json!({"topic": "pr_opened", "payload": {"pr": 12}, "dedupe_key": "pr-12"}),
    );
    assert_eq!(published["event"]["publisher"], "reviewer", "{published}");
    let again = mcp.call(
        "publish_event",
        json!({"topic": "pr_opened", "payload": {"pr": 13}, "dedupe_key": "pr-12"}),
    );
    assert_eq!(again["existing"], true, "{again}");
    mcp.call(
        "publish_event",
        json!({"topic": "pr_opened", "payload": {"pr": 14}}),
    );
    let page = mcp.call("topic_events", json!({"topic": "pr_opened", "limit": 1}));
    assert_eq!(page["events"][0]["payload"]["pr"], 12, "{page}");
    let rest = mcp.call(
        "topic_events",
        json!({"topic": "pr_opened", "cursor": page["next_cursor"]}),
    );
    assert_eq!(rest["events"][0]["payload"]["pr"], 14, "{rest}");
    let topics = mcp.call("list_topics", json!({}));
    assert_eq!(topics["topics"][0]["count"], 2, "{topics}");
    let bad = mcp.call_err("publish_event", json!({"topic": "a/b", "payload": 1}));
    assert_eq!(bad["error"], "invalid_arguments", "{bad}");
    // A coordinator subscribes; the next event makes a task.
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let mut lead = McpClient::start(&hub, made["token"].as_str().unwrap_or_default());
    let sub = lead.call(
        "subscribe",
        json!({"topic": "pr_opened", "task": {"description": "Review {{payload.pr}}"}}),
    );
    let id = sub["id"].as_str().unwrap_or_default().to_string();
    mcp.call(
        "publish_event",
        json!({"topic": "pr_opened", "payload": {"pr": 15}}),
    );
    let made = wait_for(SOON, || {
        list_all_tasks(&hub, "", 100)
            .iter()
            .any(|t| t["description"] == "Review 15")
    });
    assert!(made);
    let listed = lead.call("list_subscriptions", json!({}));
    assert_eq!(listed["subscriptions"][0]["id"], id.as_str(), "{listed}");
    let gone = lead.call("unsubscribe", json!({"id": id}));
    assert_eq!(gone["status"], "deleted", "{gone}");
    // Results flow on: a fan-in that carries an input and tells its submitter.
    let part = mcp.call(
        "submit_task",
        json!({"description": "part", "correlation_id": "batch-3"}),
    );
    let part = part["task_id"].as_str().unwrap_or_default().to_string();
    let sum = mcp.call(
        "submit_task",
        json!({"description": "sum", "depends_on": [part], "inputs_from": [part],
               "depends_on_correlation": "batch-3", "notify": "message"}),
    );
    let t = get_task(&hub, sum["task_id"].as_str().unwrap_or_default());
    assert_eq!(t["inputs_from"], json!([part]), "{t}");
    assert_eq!(t["notify"], "message", "{t}");
    assert_eq!(t["depends_on_correlation"], "batch-3", "{t}");
    assert_eq!(t["submitted_by"], "reviewer", "{t}");
    let bad = mcp.call_err("submit_task", json!({"description": "x", "notify": "fax"}));
    assert_eq!(bad["error"], "validation_failed", "{bad}");
    // Shared context: the coordinator writes, compare-and-set refuses a stale
    // version, an agent reads (and may not write outside its prefixes).
    let put = lead.call(
        "put_context",
        json!({"key": "project.conventions", "text": "rust 2021", "if_version": 0}),
    );
    assert_eq!(put["version"], 1, "{put}");
    let stale = lead.call_err(
        "put_context",
        json!({"key": "project.conventions", "text": "x", "if_version": 0}),
    );
    assert_eq!(stale["error"], "version_conflict", "{stale}");
    let read = mcp.call("get_context", json!({"key": "project.conventions"}));
    assert_eq!(read["text"], "rust 2021", "{read}");
    let refused = mcp.call_err(
        "put_context",
        json!({"key": "project.conventions", "text": "y"}),
    );
    assert_eq!(refused["error"], "forbidden", "{refused}");
    let listed = mcp.call("list_context", json!({"prefix": "project."}));
    assert_eq!(listed["count"], 1, "{listed}");
    let history = mcp.call("context_history", json!({"key": "project.conventions"}));
    assert_eq!(history["versions"][0]["updated_by"], "lead", "{history}");
    let bad = mcp.call_err("get_context", json!({"key": "a/b"}));
    assert_eq!(bad["error"], "invalid_arguments", "{bad}");
}

#[test]
fn with_several_hub_urls_the_tools_reach_the_active_hub_across_a_failover() {
    let Some((mut active, mut standby, hubs)) = active_and_standby() else {
        return;
    };
    let mut mcp = McpClient::start_at(&hubs, &active.admin_token);
    let before = mcp.call("submit_task", json!({"description": "before the failover"}));
    let before = before["task_id"].as_str().expect("task_id").to_string();
    active.kill9();
    standby.wait_serving();
    let after = mcp.call("submit_task", json!({"description": "after the failover"}));
    let after = after["task_id"].as_str().expect("task_id").to_string();
    for id in [&before, &after] {
        let t = get_task(&standby, id);
        assert_eq!(t["status"], "queued", "{t}");
    }
    let listed = mcp.call("get_task", json!({"task_id": before}));
    assert_eq!(listed["description"], "before the failover", "{listed}");
    mcp.close();
}
