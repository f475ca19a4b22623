//! One-command onboarding, hub side: invites (CLI offline and online, HTTP),
//! `POST /api/onboard/register`, and the implicit `agent:<id>` capability the
//! sidecar's verification task relies on.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The invite code from a printed `agentcom-sidecar join ...` command.
fn invite_code(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--invite")
        .unwrap_or_else(|| panic!("no --invite in {command:?}"));
    words
        .get(at + 1)
        .unwrap_or_else(|| panic!("no code after --invite in {command:?}"))
        .to_string()
}

fn register(hub: &Hub, token: Option<&str>, body: Value) -> (u16, Value) {
    hub.post_as("/api/onboard/register", token, &body)
}

#[test]
fn offline_invite_registers_once_for_its_agent_only() {
    let mut hub = Hub::start();
    hub.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["agent", "invite", "newbie", "--capabilities", "code,docs"])
        .args(hub.offline_args())
        .env_remove("AGENTCOM_HUB_URL")
        .output()
        .expect("run agent invite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let command = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        command.starts_with("agentcom-sidecar join --hub http://")
            && command.contains("--agent-id newbie")
            && command.contains("--capabilities")
            && command.contains("code,docs"),
        "{command}"
    );
    let code = invite_code(&command);
    hub.start_again();

    let (status, body) = register(&hub, None, json!({"agent_id": "impostor", "invite": code}));
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("invalid_invite")),
        "{body}"
    );
    let (status, body) = register(
        &hub,
        None,
        json!({"agent_id": "newbie", "invite": "inv_nope"}),
    );
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("invalid_invite")),
        "{body}"
    );

    let (status, body) = register(&hub, None, json!({"agent_id": "newbie", "invite": code}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["agent_id"], "newbie");
    assert_eq!(body["capabilities"], json!(["code", "docs"]));
    let port = hub.port;
    assert_eq!(
        body["hub_api_url"],
        format!("http://127.0.0.1:{port}"),
        "{body}"
    );
    assert_eq!(
        body["hub_ws_url"],
        format!("ws://127.0.0.1:{port}/ws"),
        "{body}"
    );
    assert!(body.get("default_repo").is_some(), "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    let agent = Agent::connect(&hub, "newbie", &token);

    // Single use: the same code again changes nothing.
    let (status, body) = register(&hub, None, json!({"agent_id": "newbie", "invite": code}));
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("invalid_invite")),
        "{body}"
    );
    let (_, tokens) = hub.get("/admin/tokens");
    assert_eq!(
        tokens["tokens"].as_array().map(Vec::len),
        Some(1),
        "{tokens}"
    );
    agent.close();
}

#[test]
fn online_invites_and_registration_rules() {
    let hub = Hub::start();
    // CLI against the running hub.
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["agent", "invite", "remote-1", "--hub", &hub.url("")])
        .env("AGENTCOM_ADMIN_TOKEN", &hub.admin_token)
        .output()
        .expect("run agent invite --hub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let command = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        command.contains(&format!("--hub {}", hub.url(""))),
        "{command}"
    );
    let (status, body) = register(
        &hub,
        None,
        json!({"agent_id": "remote-1", "invite": invite_code(&command)}),
    );
    assert_eq!(status, 201, "{body}");

    // HTTP invite: admin only.
    let agent_token = body["token"].as_str().expect("token").to_string();
    let (status, body) = hub.post_as(
        "/admin/invites",
        Some(&agent_token),
        &json!({"agent_id": "x"}),
    );
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("admin_only")),
        "{body}"
    );
    let (status, body) = hub.post(
        "/admin/invites",
        &json!({"agent_id": "remote-2", "ttl_hours": 0}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = hub.post("/admin/invites", &json!({"agent_id": "remote-2"}));
    assert_eq!(status, 201, "{body}");
    let code = body["invite"].as_str().expect("invite").to_string();
    assert!(
        body["command"].as_str().is_some_and(|c| c.contains(&code)),
        "{body}"
    );

    // Without an invite: refused unless admin; open registration is off.
    let (status, body) = register(&hub, None, json!({"agent_id": "gatecrasher"}));
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("invalid_invite")),
        "{body}"
    );
    let (status, body) = register(
        &hub,
        Some(&hub.admin_token),
        json!({"agent_id": "by-admin"}),
    );
    assert_eq!(status, 201, "{body}");
    // Taken ids are 409, and the invite stays usable for when the id is free.
    let (status, body) = register(
        &hub,
        Some(&hub.admin_token),
        json!({"agent_id": "by-admin"}),
    );
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("already_exists")),
        "{body}"
    );
    let (status, body) = register(&hub, None, json!({"agent_id": 7, "invite": code}));
    assert_eq!(status, 422, "{body}");
    let (status, body) = register(&hub, None, json!({"agent_id": "remote-2", "invite": code}));
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_task_needing_agent_capability_goes_only_to_that_agent() {
    let hub = Hub::start();
    let t1 = register_agent(&hub, "first", &[]);
    let t2 = register_agent(&hub, "second", &[]);
    let mut first = Agent::connect(&hub, "first", &t1);
    let mut second = Agent::connect(&hub, "second", &t2);
    // "first" is idle longest, so it would win any task it can take.
    let task_id = submit(
        &hub,
        json!({"description": "just for second", "needed_capabilities": ["agent:second"]}),
    );
    let assign = second.recv_type("task_assign", PUSH_TIMEOUT);
    assert_eq!(assign["task_id"], task_id.as_str(), "{assign}");
    first.expect_no_type("task_assign", std::time::Duration::from_millis(300));
    let (_, agents) = hub.get("/api/agents");
    assert!(
        !agents.to_string().contains("agent:"),
        "the implicit capability is not listed: {agents}"
    );
}
