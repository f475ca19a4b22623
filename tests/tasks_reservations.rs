//! Direct reservations (#19, ext, PROTOCOL.md 6.6): agents and operators
//! reserve repository paths over HTTP or the agent socket, exclusive or shared,
//! for a time; an overlapping request is answered `conflict` naming the holder;
//! scoped tasks wait for a reservation like for a running task; expiry, release
//! and the end of the task a reservation was made for free the paths; a restart
//! keeps them; every decision is in the event log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn reserve_as(hub: &Hub, token: &str, body: Value) -> (u16, Value) {
    hub.post_as("/api/reservations", Some(token), &body)
}

fn listing(hub: &Hub) -> Vec<Value> {
    let (status, body) = hub.get("/api/reservations");
    assert_eq!(status, 200, "{body}");
    body["reservations"].as_array().cloned().unwrap_or_default()
}

fn events(hub: &Hub, kind: &str) -> Vec<Value> {
    let (status, page) = hub.get(&format!("/api/events?kind={kind}"));
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn exclusive_and_shared_reservations_over_http_and_who_may_change_them() {
    let hub = Hub::start();
    let alice = register_agent(&hub, "alice", &[]);
    let bob = register_agent(&hub, "bob", &[]);

    let (status, granted) = reserve_as(
        &hub,
        &alice,
        json!({"repo": "web", "paths": ["src/api/**"], "ttl_ms": 60_000}),
    );
    assert_eq!(status, 201, "{granted}");
    assert_eq!(granted["status"], "granted");
    let r = &granted["reservation"];
    assert_eq!(r["holder"], "alice");
    assert_eq!(r["mode"], "exclusive");
    let id = r["reservation_id"].as_str().expect("id").to_string();
    assert!(
        r["expires_at"].as_i64().unwrap_or(0) >= r["granted_at"].as_i64().unwrap_or(0) + 60_000,
        "{r}"
    );

    // Overlap: refused, naming the holder; nothing reserved.
    let (status, conflict) = reserve_as(
        &hub,
        &bob,
        json!({"repo": "web", "paths": ["src/api/handlers.rs"]}),
    );
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"], "scope_conflict");
    assert_eq!(conflict["holder"]["agent_id"], "alice");
    assert_eq!(conflict["holder"]["reservation_id"], id.as_str());
    assert_eq!(conflict["holder"]["paths"], json!(["src/api/**"]));
    // A shared read of the same paths conflicts with the exclusive one too.
    let (status, _) = reserve_as(
        &hub,
        &bob,
        json!({"repo": "web", "paths": ["src/api/"], "mode": "shared"}),
    );
    assert_eq!(status, 409);
    // Disjoint paths, another repository, and shared reads side by side: granted.
    for (token, body) in [
        (&bob, json!({"repo": "web", "paths": ["docs/**"]})),
        (&bob, json!({"repo": "cli", "paths": ["src/api/**"]})),
        (
            &alice,
            json!({"repo": "web", "paths": ["/README.md"], "mode": "shared"}),
        ),
        (
            &bob,
            json!({"repo": "web", "paths": ["/README.md"], "mode": "shared"}),
        ),
    ] {
        let (status, body) = reserve_as(&hub, token, body);
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(listing(&hub).len(), 5);

    // Only the holder (or an operator) renews or releases.
    let (status, body) = hub.delete_as(&format!("/api/reservations/{id}"), Some(&bob));
    assert_eq!((status, body["error"].clone()), (403, json!("not_holder")));
    let (status, body) = hub.post_as(
        &format!("/api/reservations/{id}/renew"),
        Some(&alice),
        &json!({"ttl_ms": 120_000}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["reservation"]["expires_at"].as_i64() > r["expires_at"].as_i64());
    let (status, body) = hub.delete_as(&format!("/api/reservations/{id}"), Some(&alice));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "released");
    let (status, body) = hub.delete_as(&format!("/api/reservations/{id}"), Some(&alice));
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("reservation_not_found"))
    );
    // Freed: bob gets it now.
    let (status, body) = reserve_as(
        &hub,
        &bob,
        json!({"repo": "web", "paths": ["src/api/handlers.rs"]}),
    );
    assert_eq!(status, 201, "{body}");
    // An operator reserves for anyone and releases anything.
    let (status, body) = hub.post(
        "/api/reservations",
        &json!({"repo": "web", "paths": ["infra/**"], "holder": "release-freeze"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["reservation"]["holder"], "release-freeze");
    let bobs = body["reservation"]["reservation_id"].as_str().expect("id");
    let (status, _) = hub.delete(&format!("/api/reservations/{bobs}"));
    assert_eq!(status, 200);

    // Every decision is in the event log.
    assert!(events(&hub, "scope_granted").len() >= 6);
    let conflicts = events(&hub, "scope_conflict");
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    assert_eq!(conflicts[0]["details"]["holder"]["agent_id"], "alice");
    assert_eq!(events(&hub, "scope_renewed").len(), 1);
    let released = events(&hub, "scope_released");
    assert_eq!(released.len(), 2, "{released:?}");
    assert_eq!(released[0]["details"]["reason"], "released");
}

#[test]
fn bad_requests_are_refused_and_reserve_nothing() {
    let hub = Hub::start();
    let alice = register_agent(&hub, "alice", &[]);
    for (body, field, code) in [
        (json!({"paths": ["src/**"]}), "repo", "required"),
        (json!({"repo": "web"}), "paths", "required"),
        (
            json!({"repo": "web", "paths": []}),
            "paths",
            "invalid_value",
        ),
        (
            json!({"repo": "web", "paths": ["!src/**"]}),
            "paths",
            "invalid_glob",
        ),
        (
            json!({"repo": "web", "paths": ["../x"]}),
            "paths",
            "invalid_glob",
        ),
        (
            json!({"repo": "web", "paths": ["a"], "mode": "loud"}),
            "mode",
            "invalid_value",
        ),
        (
            json!({"repo": "web", "paths": ["a"], "ttl_ms": 10}),
            "ttl_ms",
            "invalid_value",
        ),
        (
            json!({"repo": "web", "paths": ["a"], "holder": "carol"}),
            "holder",
            "invalid_value",
        ),
    ] {
        let (status, resp) = reserve_as(&hub, &alice, body.clone());
        assert_field_error(status, &resp, &body, field, code);
    }
    let (status, resp) = hub.post_raw_as("/api/reservations", Some(&alice), "{not json");
    assert_eq!(
        (status, resp["error"].clone()),
        (400, json!("invalid_json"))
    );
    // A task the caller does not hold.
    let task = submit(&hub, json!({"description": "x"}));
    let (status, resp) = reserve_as(
        &hub,
        &alice,
        json!({"repo": "web", "paths": ["a"], "task_id": task}),
    );
    assert_eq!(
        (status, resp["error"].clone()),
        (409, json!("task_not_held"))
    );
    let (status, resp) = hub.post_as(
        "/api/reservations/res-0/renew",
        Some(&alice),
        &json!({"ttl_ms": "soon"}),
    );
    assert_eq!(status, 422, "{resp}");
    let (status, _) = hub.get_as("/api/reservations", None);
    assert_eq!(status, 401);
    assert!(listing(&hub).is_empty());
}

#[test]
fn agents_reserve_over_their_socket() {
    let hub = Hub::start();
    let ta = register_agent(&hub, "alice", &[]);
    let tb = register_agent(&hub, "bob", &[]);
    let mut alice = Agent::connect(&hub, "alice", &ta);
    let mut bob = Agent::connect(&hub, "bob", &tb);

    let granted = request(
        &mut alice,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["src/**"],
               "ttl_ms": 30_000, "request_id": "r1"}),
    );
    assert_eq!(granted["type"], "scope_granted", "{granted}");
    assert_eq!(granted["request_id"], "r1");
    let id = granted["reservation"]["reservation_id"]
        .as_str()
        .expect("id")
        .to_string();

    let conflict = request(
        &mut bob,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["src/main.rs"],
               "mode": "shared", "request_id": "b1"}),
    );
    assert_eq!(conflict["type"], "scope_conflict", "{conflict}");
    assert_eq!(conflict["holder"]["agent_id"], "alice");
    assert_eq!(conflict["holder"]["reservation_id"], id.as_str());
    assert_eq!(conflict["request_id"], "b1");

    let refused = request(
        &mut bob,
        json!({"type": "scope_release", "reservation_id": id}),
    );
    assert_error(&refused, "not_holder");
    let bad = request(
        &mut bob,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["!x"]}),
    );
    assert_error(&bad, "validation_failed");
    assert_eq!(bad["errors"][0]["error"], "invalid_glob", "{bad}");
    let bad = request(
        &mut bob,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["x"], "ttl_ms": 5}),
    );
    assert_error(&bad, "validation_failed");
    assert_eq!(bad["errors"][0]["field"], "ttl_ms", "{bad}");

    let renewed = request(
        &mut alice,
        json!({"type": "scope_renew", "reservation_id": id, "ttl_ms": 90_000}),
    );
    assert_eq!(renewed["type"], "scope_granted", "{renewed}");
    assert!(
        renewed["reservation"]["expires_at"].as_i64()
            > granted["reservation"]["expires_at"].as_i64()
    );
    let released = request(
        &mut alice,
        json!({"type": "scope_release", "reservation_id": id, "request_id": "r2"}),
    );
    assert_eq!(released["type"], "scope_released", "{released}");
    assert_eq!(released["reservation_id"], id.as_str());
    assert_eq!(released["request_id"], "r2");
    let gone = request(
        &mut alice,
        json!({"type": "scope_renew", "reservation_id": id}),
    );
    assert_error(&gone, "reservation_not_found");
    let now_bobs = request(
        &mut bob,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["src/main.rs"]}),
    );
    assert_eq!(now_bobs["type"], "scope_granted", "{now_bobs}");
    alice.assert_alive();
}

#[test]
fn a_scoped_task_waits_for_a_reservation_until_it_expires() {
    let hub = Hub::start();
    let ta = register_agent(&hub, "alice", &[]);
    let tw = register_agent(&hub, "worker", &[]);
    let mut worker = Agent::connect(&hub, "worker", &tw);
    let (status, body) = reserve_as(
        &hub,
        &ta,
        json!({"repo": "web", "paths": ["src/**"], "ttl_ms": 1_000}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["reservation"]["reservation_id"]
        .as_str()
        .expect("id")
        .to_string();
    let task = submit(
        &hub,
        json!({"description": "edit", "repo": "web", "write_paths": ["src/lib.rs"]}),
    );
    let waiting = get_task(&hub, &task);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(
        waiting["waiting_on_scope"],
        json!({"task_id": null, "agent_id": "alice", "reservation_id": id}),
        "{waiting}"
    );
    // A task in another part of the repository is not held up.
    let free = submit(
        &hub,
        json!({"description": "docs", "repo": "web", "write_paths": ["docs/**"]}),
    );
    let f = worker.take(&free);
    worker.complete(&f);
    // The reservation lapses: the sweep releases it and the task is offered.
    let t = worker.recv_type("task_assign", Duration::from_secs(15));
    assert_eq!(t["task_id"], task.as_str(), "{t}");
    assert!(listing(&hub)
        .iter()
        .all(|c| c["reservation_id"] != id.as_str()));
    let released = events(&hub, "scope_released");
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["details"]["reason"], "expired");
}

#[test]
fn a_reservation_made_for_a_task_ends_with_it_and_reservations_survive_a_restart() {
    let mut hub = Hub::start();
    let ta = register_agent(&hub, "alice", &[]);
    let mut alice = Agent::connect(&hub, "alice", &ta);
    let task = submit(
        &hub,
        json!({"description": "edit", "repo": "web", "write_paths": ["src/**"]}),
    );
    let assign = alice.take(&task);
    assert_eq!(assign["repo"], "web", "the assignment carries the scope");
    assert_eq!(assign["write_paths"], json!(["src/**"]));
    // Extra paths for the running task: no conflict with its own claim.
    let extra = request(
        &mut alice,
        json!({"type": "scope_reserve", "repo": "web", "paths": ["src/**", "/Cargo.lock"],
               "task_id": task}),
    );
    assert_eq!(extra["type"], "scope_granted", "{extra}");
    assert_eq!(extra["reservation"]["task_id"], task.as_str());
    let (status, lone) = hub.post(
        "/api/reservations",
        &json!({"repo": "web", "paths": ["infra/**"], "ttl_ms": 3_600_000}),
    );
    assert_eq!(status, 201, "{lone}");
    let kinds: Vec<Value> = listing(&hub).iter().map(|c| c["kind"].clone()).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(kinds.contains(&json!("task")) && kinds.contains(&json!("reservation")));

    alice.complete(&assign);
    let left = listing(&hub);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0]["reservation_id"],
        lone["reservation"]["reservation_id"]
    );
    let ended: Vec<Value> = events(&hub, "scope_released");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["details"]["reason"], "task_ended");
    assert_eq!(ended[0]["task_id"], task.as_str());

    // Durable: a clean restart and a crash both keep it, and it still blocks.
    hub.restart();
    assert_eq!(listing(&hub).len(), 1);
    hub.kill9();
    hub.start_again();
    assert_eq!(listing(&hub).len(), 1);
    let blocked = submit(
        &hub,
        json!({"description": "tf", "repo": "web", "write_paths": ["infra/main.tf"]}),
    );
    assert_eq!(
        get_task(&hub, &blocked)["waiting_on_scope"]["reservation_id"],
        lone["reservation"]["reservation_id"]
    );
}
