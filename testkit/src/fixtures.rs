//! What most tests do against a running hub with the admin token: register
//! agents, submit and read tasks, page through listings.

use std::time::Duration;

use serde_json::{json, Value};

use crate::hub::Hub;
use crate::support::wait_for;

/// Issues an agent token over HTTP (`POST /admin/tokens`) and returns it.
pub fn register_agent(hub: &Hub, agent_id: &str, capabilities: &[&str]) -> String {
    let body = if capabilities.is_empty() {
        json!({ "agent_id": agent_id })
    } else {
        json!({ "agent_id": agent_id, "capabilities": capabilities })
    };
    let (status, resp) = hub.post("/admin/tokens", &body);
    assert_eq!(status, 201, "POST /admin/tokens for {agent_id}: {resp}");
    resp["token"]
        .as_str()
        .expect("token in POST /admin/tokens response")
        .to_string()
}

/// Submits one task with the admin token; asserts 201 and returns its id.
pub fn submit(hub: &Hub, task: Value) -> String {
    let (status, resp) = hub.post("/api/tasks", &task);
    assert_eq!(status, 201, "POST /api/tasks {task}: {resp}");
    assert_eq!(resp["status"], "queued", "{resp}");
    resp["task_id"]
        .as_str()
        .expect("task_id in POST /api/tasks response")
        .to_string()
}

/// Submits a batch as admin; asserts 201 and returns the task ids in order.
pub fn submit_batch(hub: &Hub, batch: Value) -> Vec<String> {
    let (status, body) = hub.post("/api/tasks", &batch);
    assert_eq!(status, 201, "POST /api/tasks {batch}: {body}");
    body["tasks"]
        .as_array()
        .expect("tasks in a batch reply")
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect()
}

pub fn get_task(hub: &Hub, task_id: &str) -> Value {
    let (status, task) = hub.get(&format!("/api/tasks/{task_id}"));
    assert_eq!(status, 200, "GET /api/tasks/{task_id}: {task}");
    task
}

/// `GET /api/agents/:id/state` (admin); asserts 200.
pub fn agent_state(hub: &Hub, agent_id: &str) -> Value {
    let (status, state) = hub.get(&format!("/api/agents/{agent_id}/state"));
    assert_eq!(status, 200, "GET /api/agents/{agent_id}/state: {state}");
    state
}

/// The `event` names of a task's history, oldest first.
pub fn history_events(task: &Value) -> Vec<String> {
    task["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["event"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A task's history entries named `event` (`{event, ts, details}`), oldest first.
pub fn history_entries(task: &Value, event: &str) -> Vec<Value> {
    task["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["event"] == event).cloned().collect())
        .unwrap_or_default()
}

/// How many history entries of a task are `event`.
pub fn count_events(task: &Value, event: &str) -> usize {
    history_events(task).iter().filter(|e| *e == event).count()
}

/// Pages through `GET /api/tasks?<query>` with `limit` per page, following
/// `next_cursor` until it is null. At most 1000 pages.
pub fn list_all_tasks(hub: &Hub, query: &str, limit: usize) -> Vec<Value> {
    page_through(hub, "/api/tasks", query, limit, "tasks", "next_cursor")
}

/// Every item of a paged listing: `GET <route>?limit=<limit>&<query>`, the page's
/// `items` array, followed by `cursor_key` until it is null (at most 1000
/// pages). Asserts each page's shape (`count`, at most `limit` items).
pub fn page_through(
    hub: &Hub,
    route: &str,
    query: &str,
    limit: usize,
    items: &str,
    cursor_key: &str,
) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("{route}?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(c);
        }
        let (status, page) = hub.get(&path);
        assert_eq!(status, 200, "GET {path}: {page}");
        let list = page[items]
            .as_array()
            .unwrap_or_else(|| panic!("{items} array in {page}"));
        assert!(list.len() <= limit, "page larger than limit: {page}");
        assert_eq!(page["count"].as_u64(), Some(list.len() as u64), "{page}");
        all.extend(list.iter().cloned());
        // The cursor is opaque: a string or a number, passed back as given.
        match &page[cursor_key] {
            Value::Null => return all,
            Value::String(c) => cursor = Some(c.clone()),
            other => cursor = Some(other.to_string()),
        }
    }
    panic!("GET {route} did not finish paging within 1000 pages");
}

/// `by_status[status]` from `GET /api/tasks/stats` (0 when absent).
pub fn stats_count(hub: &Hub, status: &str) -> u64 {
    let (code, stats) = hub.get("/api/tasks/stats");
    assert_eq!(code, 200, "GET /api/tasks/stats: {stats}");
    stats["by_status"][status].as_u64().unwrap_or(0)
}

impl Hub {
    /// Issues an agent token without capabilities (`POST /admin/tokens`).
    pub fn register_agent(&self, agent_id: &str) -> String {
        let (status, resp) = self.post("/admin/tokens", &json!({"agent_id": agent_id}));
        assert_eq!(status, 201, "POST /admin/tokens: {resp}");
        resp["token"].as_str().expect("token").to_string()
    }

    /// Submits a task for `agent_id` only; returns its id.
    pub fn submit_for(&self, agent_id: &str, mut task: Value) -> String {
        task["needed_capabilities"] = json!([format!("agent:{agent_id}")]);
        let (status, resp) = self.post("/api/tasks", &task);
        assert_eq!(status, 201, "POST /api/tasks {task}: {resp}");
        resp["task_id"].as_str().expect("task_id").to_string()
    }

    /// `GET /api/tasks/:id`; asserts 200.
    pub fn task(&self, task_id: &str) -> Value {
        let (status, t) = self.get(&format!("/api/tasks/{task_id}"));
        assert_eq!(status, 200, "GET /api/tasks/{task_id}: {t}");
        t
    }

    /// Waits until the task has `status`; panics with the task otherwise.
    pub fn wait_status(&self, task_id: &str, status: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_for(timeout, || {
            last = self.task(task_id);
            last["status"] == status
        });
        assert!(ok, "task {task_id} not {status} within {timeout:?}: {last}");
        last
    }

    /// The agent's entry in `GET /api/agents`, if listed.
    pub fn agent(&self, agent_id: &str) -> Option<Value> {
        let (_, v) = self.get("/api/agents");
        v["agents"]
            .as_array()?
            .iter()
            .find(|a| a["agent_id"] == agent_id)
            .cloned()
    }

    /// Every task, paging through `GET /api/tasks` (`limit` per page).
    pub fn all_tasks(&self, limit: usize) -> Vec<Value> {
        list_all_tasks(self, "", limit)
    }
}

/// Asserts `resp` (the answer to `body`) is a 422 with an error `code` on `field`.
pub fn assert_field_error(status: u16, resp: &Value, body: &Value, field: &str, code: &str) {
    assert_eq!(status, 422, "{body} → {resp}");
    assert_eq!(resp["error"], "validation_failed", "{resp}");
    let errors = resp["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["error"] == code),
        "{body} → {resp}"
    );
}
