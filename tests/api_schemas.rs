//! `GET /api/schemas` and `GET /api/openapi.json` describe what the hub really
//! validates: every frame's required fields are what a frame without them is refused
//! for, every described body's required fields are what `{}` is refused for, and
//! every described GET route exists.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn refused_fields(reply: &Value) -> BTreeSet<String> {
    reply["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["error"] == "required")
                .filter_map(|x| x["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_frame_schema_matches_what_the_hub_refuses() {
    let hub = Hub::start();
    let (status, schemas) = hub.get_as("/api/schemas", None);
    assert_eq!(status, 200, "{schemas}");
    let frames = schemas["websocket"]["client_frames"]
        .as_object()
        .expect("client_frames");
    for ty in [
        "identify",
        "task_complete",
        "message",
        "channel_publish",
        "status",
    ] {
        assert!(frames.contains_key(ty), "{ty} described");
    }
    let mut checked = 0;
    // A fresh agent every few frames: each refusal is a violation (10 close).
    let mut socket: Option<Agent> = None;
    for (n, (ty, schema)) in frames.iter().enumerate() {
        let mut need = required(schema);
        need.remove("type");
        if need.is_empty() {
            continue;
        }
        if n % 5 == 0 || socket.is_none() {
            let id = format!("schema-{n}");
            let token = register_agent(&hub, &id, &[]);
            socket = Some(Agent::connect(&hub, &id, &token));
        }
        let agent = socket.as_mut().expect("socket");
        agent.send(json!({"type": ty}));
        let reply = agent.recv_reply(REPLY_TIMEOUT);
        assert_eq!(reply["error"], "validation_failed", "{ty}: {reply}");
        assert_eq!(refused_fields(&reply), need, "{ty}: {reply}");
        checked += 1;
    }
    assert!(checked >= 10, "{checked} frame types checked");
}

#[test]
fn every_described_body_and_route_is_what_the_hub_serves() {
    let hub = Hub::start();
    let (_, schemas) = hub.get_as("/api/schemas", None);
    let routes = schemas["http"].as_array().expect("http routes");
    let mut bodies = 0;
    for r in routes {
        let (method, path) = (
            r["method"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
        );
        let concrete = path
            .replace("{agent_id}", "schema-agent")
            .replace("{channel}", "nope");
        let need = required(&r["body"]);
        // Bodies with required fields: `{}` is refused for exactly those. (Routes
        // that check a resource first are skipped: their 404 comes before.)
        if !need.is_empty() && !path.contains("{channel}") && !path.contains("/mailbox/") {
            let (status, reply) = http(
                method,
                &hub.url(&concrete),
                Some(&hub.admin_token),
                Body::Json(&json!({})),
            );
            assert_eq!(status, 422, "{method} {path}: {reply}");
            assert_eq!(refused_fields(&reply), need, "{method} {path}: {reply}");
            bodies += 1;
        }
        // Every described GET without path parameters is a real route.
        if method == "GET" && !path.contains('{') && path != "/ws" {
            let (status, reply) = hub.get(path);
            assert!(
                !(status == 404 && reply == json!({"error": "not_found"})),
                "GET {path} is described but not served"
            );
        }
    }
    assert!(bodies >= 6, "{bodies} bodies checked");

    // The OpenAPI document has the same routes and bodies.
    let (status, doc) = hub.get_as("/api/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for r in routes {
        let op = &doc["paths"][r["path"].as_str().unwrap_or("")]
            [r["method"].as_str().unwrap_or("").to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} in OpenAPI", r["method"], r["path"]);
        if !r["body"].is_null() {
            assert_eq!(
                op["requestBody"]["content"]["application/json"]["schema"], r["body"],
                "{} {}",
                r["method"], r["path"]
            );
        }
    }
    // The event-log kinds of write scopes and reservations are described.
    for kind in [
        "scope_waiting",
        "scope_granted",
        "scope_conflict",
        "scope_released",
    ] {
        assert!(schemas["event_kinds"][kind].is_string(), "{kind}");
        assert!(doc["x-event-kinds"][kind].is_string(), "{kind}");
    }
    let submit = &doc["paths"]["/api/tasks"]["post"];
    assert_eq!(submit["security"], json!([{"bearer": []}]));
    let one = &submit["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0];
    assert_eq!(
        one["properties"]["description"]["maxLength"], 10_000,
        "{one}"
    );
}

#[test]
fn every_described_integer_query_parameter_is_validated_as_one() {
    let hub = Hub::start();
    let (_, schemas) = hub.get_as("/api/schemas", None);
    let routes = schemas["http"].as_array().expect("http routes");
    let mut checked = Vec::new();
    for r in routes {
        let path = r["path"].as_str().unwrap_or("");
        if r["method"] != "GET" || path.contains('{') {
            continue;
        }
        let Some(props) = r["query"]["properties"].as_object() else {
            continue;
        };
        for (name, schema) in props {
            if schema["type"] != "integer" {
                continue;
            }
            let (status, body) = hub.get(&format!("{path}?{name}=not-a-number"));
            assert_eq!(status, 422, "GET {path}?{name}=not-a-number: {body}");
            assert_eq!(body["errors"][0]["field"], name.as_str(), "{path}: {body}");
            checked.push(format!("{path}?{name}"));
        }
    }
    // The listings that page by cursor are among them.
    for expected in [
        "/api/tasks?cursor",
        "/api/messages?cursor",
        "/api/events?cursor",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} in {checked:?}"
        );
    }
}
