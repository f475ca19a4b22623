//! Bad input on the HTTP API (PROTOCOL.md sections 2 and 3): structured errors,
//! nothing changed, no crash.

mod common;

use common::*;
use serde_json::{json, Value};

/// Asserts a 422 `validation_failed` naming `field` with `error`.
fn assert_422(status: u16, body: &Value, field: &str, error: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "validation_failed", "{body}");
    let errors = body["errors"].as_array().expect("errors array");
    let hit = errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error for {field:?}: {body}"));
    assert_eq!(hit["error"], error, "{body}");
    assert!(hit["detail"].is_string(), "{body}");
}

/// Everything observable about the task store, for "nothing changed" checks.
fn snapshot(hub: &Hub) -> (Value, Value) {
    let (s1, tasks) = hub.get("/api/tasks?limit=1000");
    let (s2, stats) = hub.get("/api/tasks/stats");
    assert_eq!((s1, s2), (200, 200), "{tasks} {stats}");
    (tasks, stats)
}

#[test]
fn unknown_priority_is_422_and_stores_nothing() {
    let hub = Hub::start();
    let existing = submit(&hub, json!({"description": "already here"}));
    let before = snapshot(&hub);
    for priority in [
        json!("asap"),
        json!("URGENT"),
        json!("1"),
        json!(4),
        json!(-1),
        json!(1.5),
        json!(true),
        json!([0]),
    ] {
        let (status, body) = hub.post(
            "/api/tasks",
            &json!({"description": "bad priority", "priority": priority}),
        );
        assert_422(status, &body, "priority", "invalid_value");
    }
    // Each accepted spelling maps to its lane.
    for (priority, lane) in [
        (json!("urgent"), 0),
        (json!("critical"), 0),
        (json!("high"), 1),
        (json!("normal"), 2),
        (json!("low"), 3),
        (json!(0), 0),
        (json!(3), 3),
    ] {
        let (status, body) = hub.post(
            "/api/tasks",
            &json!({"description": "good priority", "priority": priority}),
        );
        assert_eq!(status, 201, "{priority}: {body}");
        assert_eq!(body["priority"], lane, "{priority}: {body}");
    }
    let (tasks, _) = snapshot(&hub);
    assert_eq!(tasks["count"], 8, "only the good ones stored: {tasks}");
    assert_eq!(before.0["tasks"][0]["id"], existing.as_str());
}

#[test]
fn invalid_task_fields_are_422_with_field_errors() {
    let hub = Hub::start();
    let before = snapshot(&hub);
    let cases = [
        (json!({}), "description", "required"),
        (json!({"description": null}), "description", "required"),
        (json!({"description": 7}), "description", "wrong_type"),
        (
            json!({"description": "x", "max_retries": "3"}),
            "max_retries",
            "wrong_type",
        ),
        (
            json!({"description": "x", "max_retries": -1}),
            "max_retries",
            "invalid_value",
        ),
        (
            json!({"description": "x", "metadata": [1]}),
            "metadata",
            "wrong_type",
        ),
        (
            json!({"description": "x", "needed_capabilities": "code"}),
            "needed_capabilities",
            "wrong_type",
        ),
        (
            json!({"description": "x", "complete_by": "tomorrow"}),
            "complete_by",
            "wrong_type",
        ),
        (
            json!({"description": "x", "lease_ms": 10}),
            "lease_ms",
            "invalid_value",
        ),
        (
            json!({"description": "x", "stall_ms": 5}),
            "stall_ms",
            "invalid_value",
        ),
        (
            json!({"description": "x", "max_runtime_ms": "an hour"}),
            "max_runtime_ms",
            "wrong_type",
        ),
    ];
    for (body, field, error) in cases {
        let (status, resp) = hub.post("/api/tasks", &body);
        assert_422(status, &resp, field, error);
    }
    let long = "d".repeat(10_001);
    let (status, resp) = hub.post("/api/tasks", &json!({"description": long}));
    assert_422(status, &resp, "description", "too_long");
    let hit = resp["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["field"] == "description")
        .cloned()
        .expect("description error");
    assert_eq!(hit["value"], format!("{}...", "d".repeat(50)), "{resp}");
    assert_eq!(snapshot(&hub), before, "rejected submits changed the store");
}

#[test]
fn batch_with_one_bad_element_is_422_naming_it_and_stores_none() {
    let hub = Hub::start();
    let before = snapshot(&hub);
    let (status, body) = hub.post(
        "/api/tasks",
        &json!([
            {"description": "fine"},
            {"description": "bad", "priority": "whenever"},
            {"description": "also fine"}
        ]),
    );
    assert_422(status, &body, "[1].priority", "invalid_value");
    assert_eq!(snapshot(&hub), before);
}

#[test]
fn invalid_json_body_is_400_invalid_json_and_changes_nothing() {
    let hub = Hub::start();
    let agent_token = register_agent(&hub, "json-agent", &[]);
    let before = snapshot(&hub);
    for raw in [
        "{\"description\": ",
        "not json",
        "{'description': 'single quotes'}",
        "",
    ] {
        let (status, body) = hub.post_raw_as("/api/tasks", Some(&hub.admin_token), raw);
        assert_eq!(status, 400, "POST /api/tasks {raw:?}: {body}");
        assert_eq!(body["error"], "invalid_json", "{raw:?}: {body}");
        let (status, body) = hub.post_raw_as("/api/tasks", Some(&agent_token), raw);
        assert_eq!(status, 400, "{raw:?}: {body}");
        let (status, body) = hub.post_raw_as("/admin/tokens", Some(&hub.admin_token), raw);
        assert_eq!(status, 400, "POST /admin/tokens {raw:?}: {body}");
        assert_eq!(body["error"], "invalid_json", "{raw:?}: {body}");
    }
    assert_eq!(snapshot(&hub), before);
    let (_, tokens) = hub.get("/admin/tokens");
    assert_eq!(
        tokens["tokens"].as_array().map(Vec::len),
        Some(1),
        "{tokens}"
    );
}

#[test]
fn malformed_query_parameters_are_422_never_500() {
    let hub = Hub::start();
    submit(&hub, json!({"description": "listed"}));
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "status=bogus",
        "priority=whenever",
        "priority=9",
    ] {
        let (status, body) = hub.get(&format!("/api/tasks?{query}"));
        assert_eq!(status, 422, "GET /api/tasks?{query}: {body}");
        assert_eq!(body["error"], "validation_failed", "{query}: {body}");
        assert!(body["errors"].is_array(), "{query}: {body}");
    }
    // Well-formed variants work.
    for query in [
        "limit=1",
        "status=queued",
        "priority=normal",
        "priority=2",
        "assigned_to=nobody",
    ] {
        let (status, body) = hub.get(&format!("/api/tasks?{query}"));
        assert_eq!(status, 200, "GET /api/tasks?{query}: {body}");
    }
    assert_eq!(hub.get("/health").1["status"], "ok");
}

#[test]
fn unknown_task_is_404_task_not_found() {
    let hub = Hub::start();
    let (status, body) = hub.get("/api/tasks/task-0123456789abcdef");
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body,
        json!({"error": "task_not_found", "task_id": "task-0123456789abcdef"})
    );
    let (status, body) = hub.post("/api/tasks/task-0123456789abcdef/cancel", &json!({}));
    assert_eq!(status, 404, "{body}");
    let (status, body) = hub.post("/api/tasks/task-0123456789abcdef/retry", &json!({}));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn invalid_token_requests_are_422_and_issue_nothing() {
    let hub = Hub::start();
    for (body, field, error) in [
        (json!({}), "agent_id", "required"),
        (json!({"agent_id": 12}), "agent_id", "wrong_type"),
        (json!({"agent_id": ""}), "agent_id", "invalid_value"),
        (
            json!({"agent_id": "x", "capabilities": "code"}),
            "capabilities",
            "wrong_type",
        ),
    ] {
        let (status, resp) = hub.post("/admin/tokens", &body);
        assert_422(status, &resp, field, error);
    }
    let (_, tokens) = hub.get("/admin/tokens");
    assert_eq!(tokens["tokens"], json!([]), "{tokens}");
}

#[test]
fn oversized_body_and_bad_upgrade_get_json_errors_and_change_nothing() {
    let hub = Hub::start();
    let before = snapshot(&hub);
    // Past the 16 MiB body limit: refused before parsing, in our JSON shape.
    let huge = format!("{{\"description\":\"{}\"}}", "a".repeat(17 * 1024 * 1024));
    let (status, body) = hub.post_raw_as("/api/tasks", Some(&hub.admin_token), &huge);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    // A plain GET on the WebSocket route is not an upgrade.
    let (status, body) = hub.get("/ws");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert_eq!(snapshot(&hub), before);
}
