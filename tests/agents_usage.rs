//! Usage-limit pauses (#19, ext, PROTOCOL.md 6.23): agents sharing a provider
//! account (a credential group) stop getting work together when one reports
//! the limit; the task it held goes back to the queue spending no retry and no
//! reclaim; the group resumes at `resets_at` by itself, or earlier when an
//! operator says so; the pause survives a restart; an info alert says so.
//! (The clock-driven rules are unit-tested in `domain::usage` with an injected
//! clock; here real time passes only for the automatic resume.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn member(hub: &Hub, agent_id: &str, group: Option<&str>) -> Agent {
    let (status, body) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": agent_id, "credential_group": group}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credential_group"], json!(group));
    let token = body["token"].as_str().expect("token").to_string();
    Agent::connect(hub, agent_id, &token)
}

fn paused(hub: &Hub) -> Vec<Value> {
    let (status, body) = hub.get("/api/usage");
    assert_eq!(status, 200, "{body}");
    body["paused"].as_array().cloned().unwrap_or_default()
}

fn kinds(hub: &Hub, kind: &str) -> Vec<Value> {
    let (_, page) = hub.get(&format!("/api/events?kind={kind}"));
    page["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn one_agents_report_pauses_its_group_and_the_task_goes_back_unspent() {
    let hub = Hub::start_with_config(
        "metrics_interval_ms = 100\nalert_check_interval_ms = 100\nalert_startup_grace_ms = 0\n",
    );
    let mut a1 = member(&hub, "a1", Some("team"));
    let task = submit(&hub, json!({"description": "long job"}));
    let assign = a1.take(&task);
    let mut a2 = member(&hub, "a2", Some("team"));
    let resets_at = now_ms() + 3_600_000;
    a1.send(
        json!({"type": "usage_limited", "task_id": task, "generation": assign["generation"],
                   "resets_at": resets_at, "reason": "5-hour window used up"}),
    );
    let ack = a1.recv_ack(&task, Duration::from_secs(5));
    assert_eq!(ack["status"], "usage_limited", "{ack}");

    let t = get_task(&hub, &task);
    assert_eq!(t["status"], "queued", "{t}");
    assert_eq!(
        (t["retry_count"].clone(), t["reclaim_count"].clone()),
        (json!(0), json!(0)),
        "{t}"
    );
    assert!(
        history_events(&t).contains(&"usage_limited".to_string()),
        "{t}"
    );
    // The idle member of the group gets nothing; an agent outside it does.
    assert_no_assignment(&hub, &mut a2);
    let p = paused(&hub);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["credential_group"], "team");
    assert_eq!(p[0]["until"], resets_at);
    assert_eq!(p[0]["reported_by"], "a1");
    let state = agent_state(&hub, "a2");
    assert!(
        state["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("usage_limited"))),
        "{state}"
    );
    let mut outsider = member(&hub, "outsider", None);
    let again = outsider.take(&task);
    outsider.complete(&again);
    outsider.close();
    let recorded = kinds(&hub, "usage_paused");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["details"]["credential_group"], "team");

    // An info alert says so (not a health problem).
    let info = wait_for(Duration::from_secs(20), || {
        let (_, alerts) = hub.get("/api/alerts");
        alerts["active"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["rule_id"] == "usage_limited" && x["severity"] == "info")
        })
    });
    assert!(info, "the usage_limited info alert fires");

    // The operator resumes early: the group takes work again.
    let next = submit(&hub, json!({"description": "next"}));
    let (status, body) = http(
        "POST",
        &hub.url("/api/usage/team/resume"),
        Some(&hub.admin_token),
        Body::Json(&json!({})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pause"]["early"], true, "{body}");
    let got = match a1.try_recv_type("task_assign", Duration::from_secs(5)) {
        Some(a) => a,
        None => a2.recv_type("task_assign", Duration::from_secs(5)),
    };
    assert_eq!(got["task_id"], next.as_str());
    assert!(paused(&hub).is_empty());
    let resumed = kinds(&hub, "usage_resumed");
    assert_eq!(resumed[0]["actor"], "admin", "{resumed:?}");
    let (status, body) = http(
        "POST",
        &hub.url("/api/usage/team/resume"),
        Some(&hub.admin_token),
        Body::Json(&json!({})),
    );
    assert_eq!((status, body["error"].clone()), (404, json!("not_paused")));
}

#[test]
fn a_pause_ends_by_itself_at_resets_at_and_survives_a_restart() {
    let mut hub = Hub::start();
    let mut solo = member(&hub, "solo", None);
    // Reported while idle: the answer names the group (the agent alone).
    let until = now_ms() + 1_500;
    let reply = request(
        &mut solo,
        json!({"type": "usage_limited", "resets_at": until}),
    );
    assert_eq!(reply["type"], "usage_paused", "{reply}");
    assert_eq!(reply["credential_group"], "agent:solo");
    let task = submit(&hub, json!({"description": "after the window"}));
    assert_no_assignment(&hub, &mut solo);
    // No sleep: the hub's own timer ends the pause; the task arrives then.
    let got = solo.recv_type("task_assign", Duration::from_secs(15));
    assert_eq!(got["task_id"], task.as_str());
    assert!(now_ms() >= until, "not before resets_at");
    let resumed = kinds(&hub, "usage_resumed");
    assert_eq!(resumed[0]["actor"], "hub", "{resumed:?}");
    solo.complete(&got);

    // A long pause is kept across a restart (and the agent stays paused).
    let token_group = "crew";
    let mut m = member(&hub, "m1", Some(token_group));
    let reply = request(
        &mut m,
        json!({"type": "usage_limited", "resets_at": now_ms() + 3_600_000}),
    );
    assert_eq!(reply["credential_group"], token_group, "{reply}");
    drop(m);
    drop(solo);
    hub.restart();
    assert_eq!(paused(&hub).len(), 1);
    let (_, tokens) = hub.get("/admin/tokens");
    let row = tokens["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|r| r["agent_id"] == "m1").cloned())
        .unwrap_or_default();
    assert_eq!(row["credential_group"], token_group, "{tokens}");
    // Another member of the group, joining after the restart, is paused too.
    let mut m2 = member(&hub, "m2", Some(token_group));
    submit(&hub, json!({"description": "waits for the crew"}));
    assert_no_assignment(&hub, &mut m2);
    let state = agent_state(&hub, "m2");
    assert!(
        state["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("usage_limited"))),
        "{state}"
    );
}

#[test]
fn a_bad_usage_report_is_refused_and_pauses_nothing() {
    let hub = Hub::start();
    let mut a = member(&hub, "a", None);
    let reply = request(&mut a, json!({"type": "usage_limited"}));
    assert_error(&reply, "validation_failed");
    assert_eq!(reply["errors"][0]["field"], "resets_at", "{reply}");
    let reply = request(
        &mut a,
        json!({"type": "usage_limited", "resets_at": "soon"}),
    );
    assert_error(&reply, "validation_failed");
    // A reset in the past pauses nothing.
    let reply = request(&mut a, json!({"type": "usage_limited", "resets_at": 1}));
    assert_eq!(reply["type"], "usage_paused", "{reply}");
    assert!(paused(&hub).is_empty());
    let (status, body) = hub.post(
        "/admin/tokens",
        &json!({"agent_id": "b", "credential_group": ""}),
    );
    assert_eq!(status, 422, "{body}");
    let task = submit(&hub, json!({"description": "still served"}));
    let got = a.take(&task);
    a.complete(&got);
}
