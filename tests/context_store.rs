//! Shared context (#21, ext, PROTOCOL.md 6.33): a versioned document store
//! for the fleet. Compare-and-set refuses a stale version and keeps history;
//! every token reads, writes follow the role and the configured prefixes; a
//! value is size-capped; a task's assignment carries the keys it names.

mod common;

use common::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"
context_max_bytes = 200
context_history = 3
[[context_writers]]
prefix = "notes."
roles = ["agent", "coordinator"]
"#;

/// `PUT /api/context/KEY` with `token`, or the admin's.
fn put(hub: &Hub, key: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let path = format!("/api/context/{key}");
    match token {
        Some(t) => hub.put_as(&path, Some(t), &body),
        None => hub.put(&path, &body),
    }
}

#[test]
fn compare_and_set_refuses_a_stale_version_and_keeps_history() {
    let mut hub = Hub::start_with_config(CONFIG);
    let (status, v1) = put(
        &hub,
        "style",
        None,
        json!({"text": "tabs", "if_version": 0}),
    );
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["version"].as_u64(), v1["kind"].as_str()),
        (Some(1), Some("text"))
    );
    // Created only once.
    let (status, again) = put(
        &hub,
        "style",
        None,
        json!({"text": "spaces", "if_version": 0}),
    );
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"], "version_conflict");
    let (status, v2) = put(
        &hub,
        "style",
        None,
        json!({"value": {"indent": 4}, "if_version": 1}),
    );
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["version"], 2);
    // A writer that read version 1 is refused, and told the current one.
    let (status, stale) = put(
        &hub,
        "style",
        None,
        json!({"text": "tabs!", "if_version": 1}),
    );
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale["current_version"], 2, "{stale}");
    let (_, now) = hub.get("/api/context/style");
    assert_eq!(now["value"]["indent"], 4, "{now}");
    assert_eq!(now["kind"], "json");
    let (_, old) = hub.get("/api/context/style?version=1");
    assert_eq!(old["text"], "tabs", "{old}");
    let (_, history) = hub.get("/api/context/style/history");
    let versions: Vec<u64> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(versions, [2, 1], "{history}");
    // History is capped (3 kept here).
    for n in 0..3 {
        put(&hub, "style", None, json!({"text": format!("v{n}")}));
    }
    let (_, history) = hub.get("/api/context/style/history");
    assert_eq!(history["count"], 3, "{history}");
    assert_eq!(history["versions"][0]["version"], 5, "{history}");
    let (status, _) = hub.get("/api/context/style?version=1");
    assert_eq!(status, 404);

    // Deleted: gone for readers, history kept, and written again later.
    let (status, stale) = hub.delete("/api/context/style?if_version=4");
    assert_eq!(status, 409, "{stale}");
    let (status, gone) = hub.delete("/api/context/style?if_version=5");
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["deleted"], true);
    let (status, body) = hub.get("/api/context/style");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("context_not_found"))
    );
    let (_, listed) = hub.get("/api/context");
    assert_eq!(listed["count"], 0, "{listed}");
    let (_, listed) = hub.get("/api/context?deleted=true");
    assert_eq!(listed["keys"][0]["key"], "style", "{listed}");
    let (status, _) = put(
        &hub,
        "style",
        None,
        json!({"text": "back", "if_version": 0}),
    );
    assert_eq!(status, 200);

    // Every write is in the event log; everything survives a kill.
    let (_, events) = hub.get("/api/events?kind=context_put&limit=100");
    assert_eq!(events["count"], 6, "{events}");
    let (_, deletes) = hub.get("/api/events?kind=context_deleted");
    assert_eq!(deletes["count"], 1, "{deletes}");
    hub.kill9();
    hub.restart();
    let (_, after) = hub.get("/api/context/style");
    assert_eq!(
        (after["text"].as_str(), after["version"].as_u64()),
        (Some("back"), Some(7))
    );
}

#[test]
fn agents_read_everything_and_write_what_their_prefix_allows() {
    let hub = Hub::start_with_config(CONFIG);
    let agent = register_agent(&hub, "dev", &[]);
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "lead", "role": "coordinator"}),
    );
    let lead = made["token"].as_str().expect("token").to_string();
    let (_, made) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "eye", "role": "observer"}),
    );
    let eye = made["token"].as_str().expect("token").to_string();

    let (status, body) = put(&hub, "conventions", Some(&agent), json!({"text": "x"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "an agent by default reads only"
    );
    let (status, _) = put(
        &hub,
        "conventions",
        Some(&lead),
        json!({"text": "rust 2021"}),
    );
    assert_eq!(status, 201, "a coordinator writes");
    let (status, _) = put(
        &hub,
        "notes.dev",
        Some(&agent),
        json!({"value": ["found a bug"]}),
    );
    assert_eq!(status, 201, "the notes. prefix lets agents write");
    let (status, _) = put(&hub, "notes.dev", Some(&eye), json!({"value": []}));
    assert_eq!(status, 403, "an observer writes nothing");
    let (status, _) = hub.delete_as("/api/context/conventions", Some(&agent));
    assert_eq!(status, 403);
    for token in [&agent, &eye] {
        let (status, body) = hub.get_as("/api/context/conventions", Some(token));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["text"], "rust 2021");
    }
    let (_, listed) = hub.get_as("/api/context?prefix=notes.", Some(&eye));
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["keys"][0]["updated_by"], "dev", "{listed}");

    // Bad input changes nothing.
    let big = "x".repeat(201);
    for (key, body) in [
        ("conventions", json!({"text": big})),
        ("conventions", json!({"text": "a", "value": 1})),
        ("conventions", json!({})),
        ("conventions", json!({"text": "a", "if_version": "two"})),
        ("bad%20key", json!({"text": "a"})),
    ] {
        let (status, out) = put(&hub, key, None, body.clone());
        assert_eq!(status, 422, "{key} {body}: {out}");
    }
    let (status, _) = hub.post_raw_as("/api/context/conventions", Some(&lead), "[1]");
    assert!(status == 404 || status == 405, "no POST route: {status}");
    let (status, _) = hub.get("/api/context/conventions?versoin=1");
    assert_eq!(status, 422);
    let (_, now) = hub.get("/api/context/conventions");
    assert_eq!(now["version"], 1, "{now}");
}

#[test]
fn an_assignment_carries_the_context_keys_its_task_names() {
    let hub = Hub::start_with_config(CONFIG);
    put(&hub, "conventions", None, json!({"text": "rust 2021"}));
    put(&hub, "notes.api", None, json!({"value": {"base": "/v2"}}));
    let token = register_agent(&hub, "dev", &[]);
    let mut dev = Agent::connect(&hub, "dev", &token);
    let (status, body) = hub.post(
        "/api/tasks",
        &json!({"description": "x", "context_keys": ["bad key"]}),
    );
    assert_field_error(status, &body, &json!({}), "context_keys", "invalid_value");
    let task = submit(
        &hub,
        json!({"description": "use the conventions",
               "context_keys": ["conventions", "notes.api", "nobody.wrote.this"]}),
    );
    assert_eq!(
        get_task(&hub, &task)["context_keys"],
        json!(["conventions", "notes.api", "nobody.wrote.this"])
    );
    let assign = dev.take(&task);
    let ctx = &assign["context"];
    assert_eq!(ctx["conventions"]["text"], "rust 2021", "{assign}");
    assert_eq!(ctx["conventions"]["version"], 1, "{assign}");
    assert_eq!(ctx["notes.api"]["value"]["base"], "/v2", "{assign}");
    assert_eq!(ctx["nobody.wrote.this"]["missing"], true, "{assign}");
}
