//! The dashboard's server side over real sockets: login sessions (cookie flags,
//! refusals, CSRF header, logout, restart), the page's files, and the dashboard
//! socket (PROTOCOL.md section 4: auth, snapshot, batched events, actions, bad
//! frames).

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// One request with optional cookie and extra headers: (status, headers, body).
fn call(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let mut req = agent.request(method, url);
    if let Some(c) = cookie {
        req = req.set("Cookie", &format!("agentcom_session={c}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut hs = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            hs.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    (status, hs, resp.into_string().unwrap_or_default())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Logs in with `token`; returns (status, body, session cookie value).
fn login(hub: &Hub, token: &str) -> (u16, Value, Option<String>, Option<String>) {
    let (status, headers, body) = call(
        "POST",
        &hub.url("/dashboard/login"),
        None,
        &[("X-AgentCom-Dashboard", "1")],
        Some(&json!({ "token": token }).to_string()),
    );
    let set_cookie = header(&headers, "set-cookie").map(str::to_string);
    let value = set_cookie.as_deref().and_then(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.trim().strip_prefix("agentcom_session="))
            .map(str::to_string)
    });
    (status, json_of(&body), value, set_cookie)
}

fn session_ok(hub: &Hub, cookie: Option<&str>) -> bool {
    let (status, _, body) = call("GET", &hub.url("/dashboard/session"), cookie, &[], None);
    assert_eq!(status, 200);
    json_of(&body)["authenticated"] == true
}

#[test]
fn login_gives_a_strict_http_only_session_that_acts_as_admin_until_logout() {
    let mut hub = Hub::start();
    let agent_token = register_agent(&hub, "worker-1", &[]);

    let (status, body, cookie, _) = login(&hub, "ac_wrong");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(cookie.is_none());
    let (status, body, cookie, _) = login(&hub, &agent_token);
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_only")));
    assert!(cookie.is_none(), "an agent token gets no session");
    for bad in ["{", "[]", r#"{"token": 5}"#, r#"{"token": ""}"#, "{}"] {
        let (status, _, body) = call("POST", &hub.url("/dashboard/login"), None, &[], Some(bad));
        assert!(status == 400 || status == 422, "{bad}: {status} {body}");
        assert!(json_of(&body)["error"].is_string(), "{bad}: {body}");
    }

    let (status, _, cookie, set_cookie) = login(&hub, &hub.admin_token);
    assert_eq!(status, 200);
    let cookie = cookie.expect("session cookie");
    let flags = set_cookie.unwrap_or_default().to_ascii_lowercase();
    assert!(flags.contains("httponly"), "{flags}");
    assert!(flags.contains("samesite=strict"), "{flags}");
    assert!(flags.contains("path=/"), "{flags}");
    assert!(
        !cookie.contains(&hub.admin_token),
        "the cookie is not the token"
    );
    assert!(session_ok(&hub, Some(&cookie)));
    assert!(!session_ok(&hub, None));
    assert!(!session_ok(&hub, Some("ac_forged")));

    // The cookie reads like the admin token.
    let (status, _, body) = call("GET", &hub.url("/api/alerts"), Some(&cookie), &[], None);
    assert_eq!(status, 200, "{body}");
    // A state change by cookie needs the page's header: without it nothing happens.
    let task = json!({"description": "from the dashboard"}).to_string();
    let (status, _, body) = call(
        "POST",
        &hub.url("/api/tasks"),
        Some(&cookie),
        &[],
        Some(&task),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(json_of(&body)["error"], "dashboard_header_missing");
    assert_eq!(stats_count(&hub, "queued"), 0, "refused: nothing queued");
    let (status, _, body) = call(
        "POST",
        &hub.url("/api/tasks"),
        Some(&cookie),
        &[("X-AgentCom-Dashboard", "1")],
        Some(&task),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        get_task(&hub, json_of(&body)["task_id"].as_str().unwrap_or_default())["submitted_by"],
        "admin"
    );

    // The session outlives a restart (the page reconnects by itself).
    hub.restart();
    assert!(
        session_ok(&hub, Some(&cookie)),
        "session survives a restart"
    );

    // Logout ends it and clears the cookie.
    let (status, headers, _) = call(
        "POST",
        &hub.url("/dashboard/logout"),
        Some(&cookie),
        &[("X-AgentCom-Dashboard", "1")],
        None,
    );
    assert_eq!(status, 200);
    let cleared = header(&headers, "set-cookie")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(cleared.contains("max-age=0"), "{cleared}");
    assert!(!session_ok(&hub, Some(&cookie)));
    let (status, _, _) = call("GET", &hub.url("/api/alerts"), Some(&cookie), &[], None);
    assert_eq!(status, 401, "a closed session is no longer admin");
}

#[test]
fn the_page_is_served_from_the_binary_with_a_strict_policy() {
    let hub = Hub::start();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/charts.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let (status, headers, body) = call("GET", &hub.url(path), None, &[], None);
        assert_eq!(status, 200, "{path}");
        assert!(
            header(&headers, "content-type")
                .unwrap_or_default()
                .starts_with(kind),
            "{path}"
        );
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!body.is_empty());
    }
    let (status, _, body) = call("GET", &hub.url("/dashboard/../Cargo.toml"), None, &[], None);
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = call("GET", &hub.url("/dashboard/secrets.txt"), None, &[], None);
    assert_eq!(
        (status, json_of(&body)["error"].clone()),
        (404, json!("not_found"))
    );
}

// ---------------------------------------------------------------------------
// The dashboard socket
// ---------------------------------------------------------------------------

struct Dash {
    ws: WebSocket<TcpStream>,
    /// Events read but not yet wanted, in arrival order.
    backlog: Vec<Value>,
}

/// Opens `/ws/dashboard<query>` with extra headers; `Err(status)` if refused.
fn open(hub: &Hub, query: &str, headers: &[(&str, &str)]) -> Result<Dash, u16> {
    let url = format!("ws://127.0.0.1:{}/ws/dashboard{query}", hub.port);
    let mut request = url.into_client_request().expect("request");
    for (k, v) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", hub.port)).expect("connect");
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    match tungstenite::client(request, stream) {
        Ok((ws, _)) => Ok(Dash {
            ws,
            backlog: Vec::new(),
        }),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("dashboard handshake: {e}"),
    }
}

impl Dash {
    fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// The next frame (text, JSON), within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(json_of(&t)),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("dashboard socket: {e}"),
            }
        }
        None
    }

    /// The next frame of `ty`; others are dropped.
    fn frame(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + PUSH_TIMEOUT;
        while let Some(f) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if f["type"] == ty {
                return f;
            }
        }
        panic!("no {ty} frame within {PUSH_TIMEOUT:?}");
    }

    /// The first event (from `events` frames, earlier ones kept aside included)
    /// that `want` matches; other events stay for later calls.
    fn event(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&want) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + PUSH_TIMEOUT;
        while let Some(f) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if f["type"] != "events" {
                continue;
            }
            let batch = f["data"].as_array().cloned().unwrap_or_default();
            assert!(!batch.is_empty(), "an events frame is never empty");
            let found = batch.iter().position(&want);
            for (i, e) in batch.into_iter().enumerate() {
                if Some(i) != found && self.backlog.len() < 10_000 {
                    self.backlog.push(e);
                }
            }
            if let Some(i) = found {
                return f["data"][i].clone();
            }
        }
        let seen: Vec<String> = self
            .backlog
            .iter()
            .map(|e| format!("{}/{}", e["type"], e["event"]))
            .collect();
        panic!("wanted event not seen within {PUSH_TIMEOUT:?}; saw {seen:?}");
    }
}

#[test]
fn the_socket_is_for_the_admin_only() {
    let hub = Hub::start();
    let agent_token = register_agent(&hub, "worker-1", &[]);
    assert_eq!(open(&hub, "", &[]).err(), Some(401));
    assert_eq!(open(&hub, "?token=ac_nope", &[]).err(), Some(401));
    assert_eq!(
        open(&hub, &format!("?token={agent_token}"), &[]).err(),
        Some(403)
    );
    let (_, _, cookie, _) = login(&hub, &hub.admin_token);
    let cookie = format!("agentcom_session={}", cookie.expect("cookie"));
    // A page of another site cannot ride on the operator's cookie.
    assert_eq!(
        open(
            &hub,
            "",
            &[("Cookie", &cookie), ("Origin", "http://evil.example")]
        )
        .err(),
        Some(403)
    );
    let origin = format!("http://127.0.0.1:{}", hub.port);
    let mut dash =
        open(&hub, "", &[("Cookie", &cookie), ("Origin", &origin)]).expect("cookie socket");
    assert_eq!(dash.frame("snapshot")["type"], "snapshot");
}

#[test]
fn snapshot_then_batched_events_and_actions_with_results() {
    let hub = Hub::start_with_config("metrics_interval_ms = 300\n");
    let token = register_agent(&hub, "worker-1", &["rust"]);
    let mut dash = open(&hub, &format!("?token={}", hub.admin_token), &[]).expect("socket");

    let snap = dash.frame("snapshot");
    let data = &snap["data"];
    for key in [
        "uptime_ms",
        "timestamp",
        "health",
        "agents",
        "queue",
        "dead_letter_tasks",
        "recent_completions",
        "throughput",
        "storage",
        "active_alerts",
        "rate_limits",
    ] {
        assert!(!data[key].is_null(), "snapshot lacks {key}: {data}");
    }
    assert!(snap["alerts"].is_array(), "{snap}");
    assert_eq!(data["health"]["status"], "ok", "{data}");
    assert_eq!(data["agents"][0]["agent_id"], "worker-1");
    assert_eq!(data["agents"][0]["fsm_state"], "offline");
    for key in ["by_status", "by_priority", "dead_letter"] {
        assert!(!data["queue"][key].is_null(), "{key}");
    }
    for key in [
        "completed_last_hour",
        "avg_completion_ms",
        "total_tokens_hour",
    ] {
        assert!(data["throughput"][key].is_u64(), "{key}");
    }

    // A submitted task shows up as a task_event with its description.
    let id = submit(
        &hub,
        json!({"description": "build it", "max_retries": 0, "needed_capabilities": ["rust"]}),
    );
    let queued = dash.event(|e| e["type"] == "task_event" && e["task_id"] == id.as_str());
    assert_eq!(queued["event"], "queued");
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["description"], "build it");
    let first_seq = queued["seq"].as_u64().expect("seq");

    // The agent joins, takes the task, fails it: dead letter.
    let mut agent = Agent::connect_with_caps(&hub, "worker-1", &token, &["rust"]);
    dash.event(|e| e["type"] == "agent_joined" && e["agent"]["agent_id"] == "worker-1");
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    let assigned = dash.event(|e| e["type"] == "task_event" && e["event"] == "assigned");
    assert_eq!(assigned["agent_id"], "worker-1");
    assert!(assigned["seq"].as_u64() > Some(first_seq), "seq rises");
    dash.event(|e| e["type"] == "status_changed" && e["agent"]["current_task_id"] == id.as_str());
    agent.send(json!({"type": "task_failed", "task_id": id, "generation": assign["generation"], "error": "boom"}));
    agent.recv_ack(&id, REPLY_TIMEOUT);
    let dead = dash.event(|e| e["type"] == "task_event" && e["status"] == "dead_letter");
    assert_eq!(dead["task_id"], id.as_str());

    // Retry from the dashboard: requeued, and the agent gets it again.
    dash.send(json!({"type": "retry_task", "task_id": id}));
    let result = dash.frame("retry_result");
    assert_eq!(
        (result["task_id"].as_str(), result["status"].as_str()),
        (Some(id.as_str()), Some("requeued"))
    );
    let again = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(again["task_id"], id.as_str());
    agent.accept(&id, again["generation"].clone());
    agent.send(json!({"type": "task_complete", "task_id": id, "generation": again["generation"], "result": {"pr_url": "https://example.invalid/pr/1"}, "tokens_used": 42}));
    agent.recv_ack(&id, REPLY_TIMEOUT);
    let done = dash.event(|e| e["type"] == "task_event" && e["event"] == "completed");
    assert_eq!(done["completion"]["tokens_used"], 42);
    assert_eq!(done["completion"]["pr_url"], "https://example.invalid/pr/1");
    // Retrying what is not dead letter, cancelling what does not exist, and
    // acknowledging an alert that is not active each get a result, not silence.
    dash.send(json!({"type": "retry_task", "task_id": id}));
    assert_eq!(dash.frame("retry_result")["status"], "invalid_state");
    dash.send(json!({"type": "cancel_task", "task_id": "task-nope"}));
    assert_eq!(dash.frame("cancel_result")["status"], "not_found");
    dash.send(json!({"type": "acknowledge_alert", "rule_id": "queue_growing"}));
    assert_eq!(dash.frame("alert_ack_result")["status"], "not_found");
    // A queued task cancelled from the dashboard.
    let other = submit(
        &hub,
        json!({"description": "nobody can", "needed_capabilities": ["cobol"]}),
    );
    dash.send(json!({"type": "cancel_task", "task_id": other}));
    let cancelled = dash.frame("cancel_result");
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["previous_status"].as_str()
        ),
        (Some("cancelled"), Some("queued"))
    );
    assert_eq!(get_task(&hub, &other)["status"], "cancelled");
    // A dead-lettered task can be cancelled too: it leaves dead letter for good.
    let doomed = submit(
        &hub,
        json!({"description": "give up", "max_retries": 0, "needed_capabilities": ["rust"]}),
    );
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], doomed.as_str());
    agent.send(json!({"type": "task_failed", "task_id": doomed, "generation": assign["generation"], "error": "no"}));
    agent.recv_ack(&doomed, REPLY_TIMEOUT);
    assert_eq!(get_task(&hub, &doomed)["status"], "dead_letter");
    dash.send(json!({"type": "cancel_task", "task_id": doomed}));
    let cancelled = dash.frame("cancel_result");
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["previous_status"].as_str()
        ),
        (Some("cancelled"), Some("dead_letter"))
    );

    // Bad frames: a structured error each, the socket stays.
    for (bad, error) in [
        ("not json", "invalid_json"),
        ("[1]", "validation_failed"),
        (r#"{"type":"retry_task"}"#, "validation_failed"),
        (r#"{"type":"format_disk"}"#, "unknown_message_type"),
    ] {
        dash.ws.send(Message::text(bad)).expect("send");
        let e = dash.frame("error");
        assert_eq!(e["error"], error, "{bad}: {e}");
    }

    // Metrics snapshots and storage events flow; a fresh snapshot on request
    // shows the completion and its throughput.
    dash.event(|e| e["type"] == "metrics_snapshot" && e["data"]["queue_depth"].is_object());
    let (status, body) = hub.post("/api/admin/backup", &json!({}));
    assert_eq!(status, 201, "{body}");
    dash.event(|e| e["type"] == "backup_complete");
    dash.send(json!({"type": "request_snapshot"}));
    let snap = dash.frame("snapshot");
    let recent = &snap["data"]["recent_completions"];
    assert_eq!(recent[0]["task_id"], id.as_str(), "{recent}");
    assert_eq!(snap["data"]["throughput"]["completed_last_hour"], 1);
    assert_eq!(snap["data"]["throughput"]["total_tokens_hour"], 42);
    assert_eq!(snap["data"]["queue"]["by_status"]["cancelled"], 2);
    assert_eq!(snap["data"]["queue"]["dead_letter"], 0);
    assert_eq!(snap["data"]["dead_letter_tasks"], json!([]));
}

#[test]
fn recent_completions_are_rebuilt_from_storage_after_a_restart() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "worker-1", &[]);
    let id = submit(&hub, json!({"description": "persisted"}));
    let mut agent = Agent::connect(&hub, "worker-1", &token);
    let assign = agent.recv_type("task_assign", PUSH_TIMEOUT);
    agent.accept(&id, assign["generation"].clone());
    agent.send(json!({"type": "task_complete", "task_id": id, "generation": assign["generation"], "tokens_used": 7}));
    agent.recv_ack(&id, REPLY_TIMEOUT);
    agent.close();
    hub.restart();
    let mut dash = open(&hub, &format!("?token={}", hub.admin_token), &[]).expect("socket");
    let snap = dash.frame("snapshot");
    assert_eq!(
        snap["data"]["recent_completions"][0]["task_id"],
        id.as_str()
    );
    assert_eq!(snap["data"]["recent_completions"][0]["tokens_used"], 7);
    assert_eq!(snap["data"]["throughput"]["completed_last_hour"], 1);
}
