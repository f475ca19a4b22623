//! Roles (#20, ext, PROTOCOL.md 6.25): a coordinator's token steers others'
//! work (priority, cancel, retry, standing orders, limits) under its own name
//! and is an agent too, but mints no tokens and touches no storage; an
//! observer's token reads everything an operator reads and changes nothing, on
//! HTTP, on the dashboard (session and socket) and over MCP; existing agent and
//! admin tokens keep what they had.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn issue(hub: &Hub, agent_id: &str, role: Option<&str>) -> String {
    let (status, body) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": agent_id, "role": role}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], role.unwrap_or("agent"), "{body}");
    body["token"].as_str().expect("token").to_string()
}

fn post_as(hub: &Hub, token: &str, path: &str, body: Value) -> (u16, Value) {
    hub.post_as(path, Some(token), &body)
}

fn actors(hub: &Hub, kind: &str) -> Vec<String> {
    let (_, page) = hub.get(&format!("/api/events?kind={kind}"));
    page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e["actor"].as_str()?.to_string()))
        .collect()
}

#[test]
fn a_coordinator_steers_work_under_its_name_but_mints_no_tokens() {
    let hub = Hub::start();
    let lead = issue(&hub, "lead", Some("coordinator"));
    let who = hub.get_as("/api/whoami", Some(&lead)).1;
    assert_eq!(
        (who["role"].clone(), who["agent_id"].clone()),
        (json!("coordinator"), json!("lead"))
    );
    let task = submit(&hub, json!({"description": "plan", "priority": "low"}));
    let (status, body) = post_as(
        &hub,
        &lead,
        &format!("/api/tasks/{task}/priority"),
        json!({"priority": "urgent"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_as(&hub, &lead, &format!("/api/tasks/{task}/cancel"), json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_as(&hub, &lead, &format!("/api/tasks/{task}/retry"), json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub.put_as(
        "/api/admin/concurrency/repo:web",
        Some(&lead),
        &json!({"limit": 2}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_as(
        &hub,
        &lead,
        "/api/standing-orders",
        json!({"name": "sweep", "cron": "0 9 * * *", "task": {"description": "sweep"}}),
    );
    assert_eq!(status, 201, "{body}");
    // Its name, not "admin", is in the event log.
    assert_eq!(actors(&hub, "cancelled"), ["lead"]);
    assert_eq!(actors(&hub, "concurrency_limit_set"), ["lead"]);
    // Reads of what operators read.
    assert_eq!(hub.get_as("/api/alerts", Some(&lead)).0, 200);
    // No token management, no storage admin.
    for (method, path) in [
        ("POST", "/admin/tokens"),
        ("GET", "/admin/tokens"),
        ("POST", "/admin/invites"),
        ("POST", "/api/admin/backup"),
        ("POST", "/api/admin/compact"),
        ("PUT", "/api/admin/log-level"),
    ] {
        let (status, body) = http(
            method,
            &hub.url(path),
            Some(&lead),
            Body::Json(&json!({"agent_id": "x", "level": "info"})),
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("admin_only")),
            "{method} {path}"
        );
    }
    // It is an agent too: it identifies and takes work (the task it retried).
    let mut agent = Agent::connect(&hub, "lead", &lead);
    let assign = agent.take(&task);
    agent.complete(&assign);
}

#[test]
fn an_agent_token_still_may_not_steer_and_the_admin_still_may_everything() {
    let hub = Hub::start();
    let worker = issue(&hub, "worker", None);
    let task = submit(&hub, json!({"description": "d"}));
    let (status, body) = post_as(
        &hub,
        &worker,
        &format!("/api/tasks/{task}/cancel"),
        json!({}),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_only")),
        "{body}"
    );
    assert_eq!(hub.get_as("/api/alerts", Some(&worker)).0, 403);
    let (status, _) = hub.post(&format!("/api/tasks/{task}/cancel"), &json!({}));
    assert_eq!(status, 200);
    // A role nobody may issue is refused, and nothing is created.
    for role in ["admin", "root", ""] {
        let (status, body) = hub.post("/admin/tokens", &json!({"agent_id": "r", "role": role}));
        assert_eq!(status, 422, "{role}: {body}");
    }
    assert!(!hub.get("/admin/tokens").1.to_string().contains("\"r\""));
}

#[test]
fn an_observer_reads_everything_an_operator_reads_and_changes_nothing() {
    let hub = Hub::start();
    let eye = issue(&hub, "eye", Some("observer"));
    let task = submit(&hub, json!({"description": "watched"}));
    for path in [
        "/api/tasks",
        "/api/alerts",
        "/api/metrics",
        "/api/admin/storage-health",
        "/api/config/alert-thresholds",
        "/api/agents/states",
        "/api/events",
    ] {
        let (status, body) = hub.get_as(path, Some(&eye));
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(hub.get_as(&format!("/api/tasks/{task}"), Some(&eye)).0, 200);
    for (method, path, body) in [
        (
            "POST",
            "/api/tasks".to_string(),
            json!({"description": "no"}),
        ),
        ("POST", format!("/api/tasks/{task}/cancel"), json!({})),
        (
            "POST",
            "/api/message".to_string(),
            json!({"to": "x", "payload": {}}),
        ),
        (
            "PUT",
            "/api/admin/concurrency/k".to_string(),
            json!({"limit": 1}),
        ),
    ] {
        let (status, answer) = http(method, &hub.url(&path), Some(&eye), Body::Json(&body));
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("read_only")),
            "{method} {path}"
        );
    }
    assert_eq!(get_task(&hub, &task)["status"], "queued", "nothing changed");
    assert_eq!(stats_count(&hub, "queued"), 1);
    // Not an agent: it cannot identify.
    let mut ws = Agent::open(&hub);
    assert_error(&ws.identify("eye", &eye, None), "token_agent_mismatch");
}

#[test]
fn observer_and_coordinator_dashboard_sessions_carry_their_rights() {
    let hub = Hub::start();
    let eye = issue(&hub, "eye", Some("observer"));
    let lead = issue(&hub, "lead", Some("coordinator"));
    let task = submit(&hub, json!({"description": "watched"}));
    let session = |token: &str| -> (Value, String) {
        let agent = ureq::AgentBuilder::new().build();
        let resp = agent
            .post(&hub.url("/dashboard/login"))
            .send_json(json!({ "token": token }))
            .expect("login");
        let cookie = resp
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_string();
        (resp.into_json().expect("json"), cookie)
    };
    let call = |cookie: &str, method: &str, path: &str| -> u16 {
        let agent = ureq::AgentBuilder::new().build();
        let req = agent
            .request(method, &hub.url(path))
            .set("Cookie", cookie)
            .set("X-AgentCom-Dashboard", "1");
        let result = if method == "GET" {
            req.call()
        } else {
            req.send_json(json!({}))
        };
        match result {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    };
    let (body, eye_cookie) = session(&eye);
    assert_eq!(body["role"], "observer", "{body}");
    let (body, lead_cookie) = session(&lead);
    assert_eq!(body["role"], "coordinator", "{body}");
    let state = ureq::get(&hub.url("/dashboard/session"))
        .set("Cookie", &eye_cookie)
        .call()
        .expect("session")
        .into_json::<Value>()
        .expect("json");
    assert_eq!(
        (state["authenticated"].clone(), state["role"].clone()),
        (json!(true), json!("observer"))
    );
    assert_eq!(call(&eye_cookie, "GET", "/api/tasks"), 200);
    assert_eq!(
        call(&eye_cookie, "POST", &format!("/api/tasks/{task}/cancel")),
        403
    );
    assert_eq!(call(&lead_cookie, "POST", "/api/admin/backup"), 403);
    assert_eq!(
        call(&lead_cookie, "POST", &format!("/api/tasks/{task}/cancel")),
        200
    );
    // Revoking the token ends its session.
    assert_eq!(hub.delete("/admin/tokens/eye").0, 200);
    assert_eq!(call(&eye_cookie, "GET", "/api/tasks"), 401);

    // The dashboard socket: an observer watches, its actions are refused.
    let lead_ws = format!(
        "{}?token={lead}",
        hub.url("/ws/dashboard").replacen("http", "ws", 1)
    );
    let (mut socket, _) = tungstenite::connect(lead_ws).expect("coordinator socket");
    let _ = socket.read();
    let watcher = issue(&hub, "watcher", Some("observer"));
    let url = format!(
        "{}?token={watcher}",
        hub.url("/ws/dashboard").replacen("http", "ws", 1)
    );
    let (mut socket, _) = tungstenite::connect(url).expect("observer socket");
    socket
        .send(tungstenite::Message::text(
            json!({"type": "retry_task", "task_id": task}).to_string(),
        ))
        .expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut refused = false;
    while std::time::Instant::now() < deadline && !refused {
        if let Ok(tungstenite::Message::Text(t)) = socket.read() {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            refused = v["type"] == "error" && v["error"] == "read_only";
        }
    }
    assert!(refused, "the observer's retry was not refused");
    assert_eq!(get_task(&hub, &task)["status"], "cancelled");
}
