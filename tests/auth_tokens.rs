//! Auth: admin-only routes, unknown tokens, token management, hashed storage.

mod common;

use common::*;
use serde_json::json;

const ADMIN_ONLY: [(&str, &str); 5] = [
    ("POST", "/admin/tokens"),
    ("GET", "/admin/tokens"),
    ("DELETE", "/admin/tokens/someone"),
    ("POST", "/api/tasks/task-0123456789abcdef/retry"),
    ("POST", "/api/tasks/task-0123456789abcdef/cancel"),
];

fn call(hub: &Hub, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    match method {
        "GET" => hub.get_as(path, token),
        "DELETE" => hub.delete_as(path, token),
        _ => hub.post_as(path, token, &json!({"agent_id": "someone-else"})),
    }
}

/// Issue 2, test 9 (first two parts).
#[test]
fn agent_token_on_admin_route_is_403_and_unknown_or_missing_token_is_401() {
    let hub = Hub::start();
    let agent_token = register_agent(&hub, "plain-agent", &[]);
    for (method, path) in ADMIN_ONLY {
        let (status, body) = call(&hub, method, path, Some(&agent_token));
        assert_eq!(status, 403, "{method} {path} with an agent token: {body}");
        assert_eq!(body, json!({"error": "admin_only"}), "{method} {path}");
    }
    let unauthorized =
        json!({"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"});
    for (method, path) in ADMIN_ONLY
        .iter()
        .copied()
        .chain([("GET", "/api/tasks"), ("POST", "/api/tasks")])
    {
        for token in [Some("not-a-real-token"), None] {
            let (status, body) = call(&hub, method, path, token);
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body, unauthorized, "{method} {path} with {token:?}");
        }
    }
    // Nothing was created by the refused calls.
    let (_, tokens) = hub.get("/admin/tokens");
    let ids: Vec<&str> = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["agent_id"].as_str())
        .collect();
    assert_eq!(ids, ["plain-agent"], "{tokens}");
    let (_, page) = hub.get("/api/tasks");
    assert_eq!(page["count"], 0, "{page}");

    // The agent token does work where agents are allowed.
    let (status, body) = hub.get_as("/api/tasks", Some(&agent_token));
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub.post_as(
        "/api/tasks",
        Some(&agent_token),
        &json!({"description": "by agent"}),
    );
    assert_eq!(status, 201, "{body}");
    let task = get_task(&hub, body["task_id"].as_str().expect("task_id"));
    assert_eq!(
        task["submitted_by"], "plain-agent",
        "submitted_by from the token: {task}"
    );
    // Public routes need no token.
    assert_eq!(hub.get_as("/health", None).0, 200);
    assert_eq!(hub.get_as("/api/agents", None).0, 200);
}

/// Issue 2, test 9 (storage part).
#[test]
fn tokens_are_not_stored_in_plain_text_anywhere_in_the_data_dir() {
    if skip_on_postgres("sled's own files") {
        return;
    }
    let mut hub = Hub::start();
    let tokens: Vec<String> = (0..3)
        .map(|i| register_agent(&hub, &format!("secret-agent-{i}"), &["code"]))
        .collect();
    // Use them, so any cache or session record would be written too.
    for (i, token) in tokens.iter().enumerate() {
        let agent = Agent::connect(&hub, &format!("secret-agent-{i}"), token);
        agent.close();
        assert_eq!(hub.get_as("/api/tasks", Some(token)).0, 200);
    }
    let (_, listed) = hub.get("/admin/tokens");
    for token in &tokens {
        assert!(
            !listed.to_string().contains(token.as_str()),
            "GET /admin/tokens shows a full token: {listed}"
        );
    }
    hub.stop();

    let files = files_under(&hub.data_dir());
    assert!(!files.is_empty(), "data dir is empty: {:?}", hub.data_dir());
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(&hub.admin_token);
    for file in &files {
        let bytes = std::fs::read(file).expect("read data file");
        for secret in &secrets {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "token stored in plain text in {}",
                file.display()
            );
        }
    }
}

#[test]
fn tokens_never_appear_in_the_hub_logs() {
    let mut hub = Hub::start_with_config("log_level = \"debug\"\n");
    let token = register_agent(&hub, "logged-agent", &[]);
    let agent = Agent::connect(&hub, "logged-agent", &token);
    agent.close();
    let mut bad = Agent::open(&hub);
    assert_error(
        &bad.identify("logged-agent", "wrong-token-value-123", None),
        "invalid_token",
    );
    let _ = hub.get_as("/api/tasks", Some(&token));
    // An open agent socket holds up the hub's graceful shutdown; close it first.
    drop(bad);
    hub.stop();
    for path in hub.log_paths() {
        let text = std::fs::read(&path).expect("read hub log");
        for secret in [token.as_str(), hub.admin_token.as_str()] {
            assert!(
                !contains_bytes(&text, secret.as_bytes()),
                "token in log {}",
                path.display()
            );
        }
    }
}

#[test]
fn token_issue_list_conflict_and_revoke_follow_the_contract() {
    let hub = Hub::start();
    let (status, issued) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "tok-agent", "capabilities": ["code", "docs"]}),
    );
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["agent_id"], "tok-agent", "{issued}");
    let token = issued["token"].as_str().expect("token").to_string();
    let prefix = issued["token_prefix"].as_str().expect("token_prefix");
    assert!(
        token.starts_with(prefix) && prefix.len() < token.len(),
        "{issued}"
    );
    assert!(issued["created_at"].is_u64(), "{issued}");

    let (status, dup) = hub.post("/admin/tokens", &json!({"agent_id": "tok-agent"}));
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["error"], "already_exists", "{dup}");
    assert_eq!(dup["agent_id"], "tok-agent", "{dup}");

    let (status, list) = hub.get("/admin/tokens");
    assert_eq!(status, 200, "{list}");
    let entry = &list["tokens"][0];
    assert_eq!(entry["agent_id"], "tok-agent", "{list}");
    assert_eq!(entry["token_prefix"], prefix, "{list}");
    assert_eq!(entry["capabilities"], json!(["code", "docs"]), "{list}");
    assert!(entry.get("token").is_none(), "{list}");

    // Revocation: HTTP refuses the token, identify refuses it, the socket stays open.
    let (status, revoked) = hub.delete("/admin/tokens/tok-agent");
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        revoked,
        json!({"status": "revoked", "agent_id": "tok-agent"})
    );
    assert_eq!(hub.get_as("/api/tasks", Some(&token)).0, 401);
    let mut agent = Agent::open(&hub);
    assert_error(&agent.identify("tok-agent", &token, None), "invalid_token");
    agent.send(json!({"type": "ping"}));
    assert_error(&agent.recv_reply(REPLY_TIMEOUT), "not_identified");
    let (status, body) = hub.delete("/admin/tokens/tok-agent");
    assert_eq!(status, 404, "{body}");
    let (_, list) = hub.get("/admin/tokens");
    assert_eq!(list["tokens"], json!([]), "{list}");
}

#[test]
fn admin_token_from_the_environment_is_kept_hashed_and_works_after_a_restart_without_it() {
    let mut hub = Hub::start();
    let token = register_agent(&hub, "persistent", &[]);
    hub.restart_without_admin_env();
    assert_eq!(hub.get("/admin/tokens").0, 200, "admin token after restart");
    assert_eq!(hub.get_as("/api/tasks", Some(&token)).0, 200);
    assert_eq!(hub.get_as("/api/tasks", Some("adm_wrong")).0, 401);
}

/// `GET /api/whoami` (ext) names the token's principal; the MCP server reads it.
#[test]
fn whoami_names_the_tokens_principal() {
    let hub = Hub::start();
    let token = register_agent(&hub, "who-agent", &[]);
    let (status, me) = hub.get_as("/api/whoami", Some(&token));
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me,
        json!({"principal": "agent", "role": "agent", "agent_id": "who-agent"})
    );
    let (status, me) = hub.get("/api/whoami");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me, json!({"principal": "admin", "role": "admin"}));
    let (status, body) = hub.get_as("/api/whoami", None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = hub.get_as("/api/whoami", Some("tok_not_issued"));
    assert_eq!(status, 401, "{body}");
}
