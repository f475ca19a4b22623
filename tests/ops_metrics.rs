//! Metrics after a known workload: `GET /api/metrics` counters, queue depth,
//! latency sample counts and utilization, and the Prometheus text of `GET /metrics`
//! (admin or scrape token only).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SCRAPE: &str = "scrape-token-0123456789";

fn metrics(hub: &Hub) -> Value {
    let (status, body) = hub.get("/api/metrics?history=true");
    assert_eq!(status, 200, "{body}");
    body
}

fn history_sum(m: &Value, path: &[&str]) -> u64 {
    m["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|s| path.iter().fold(s, |v, k| &v[*k]).as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn metrics_after_a_known_workload() {
    let hub = Hub::start_with_config(&format!(
        "metrics_interval_ms = 100\nmetrics_token = \"{SCRAPE}\"\n"
    ));
    let worker = Worker::spawn(&hub, "w1", Duration::from_millis(1));
    let t_f = register_agent(&hub, "failer", &[]);
    let mut failer = Agent::connect(&hub, "failer", &t_f);

    let done: Vec<String> = (0..5)
        .map(|n| {
            submit(
                &hub,
                json!({"description": format!("ok {n}"), "needed_capabilities": ["agent:w1"]}),
            )
        })
        .collect();
    for n in 0..2 {
        let id = submit(
            &hub,
            json!({"description": format!("fails {n}"), "max_retries": 1,
                   "needed_capabilities": ["agent:failer"]}),
        );
        let assign = failer.recv_type("task_assign", PUSH_TIMEOUT);
        assert_eq!(assign["task_id"], id.as_str());
        failer.send(json!({"type": "task_failed", "task_id": id,
                           "generation": assign["generation"], "error": "no"}));
        let ack = failer.recv_ack(&id, REPLY_TIMEOUT);
        assert_eq!(ack["status"], "dead_letter", "{ack}");
    }
    assert!(wait_for(Duration::from_secs(20), || {
        done.iter()
            .all(|id| get_task(&hub, id)["status"] == "completed")
    }));
    // The next snapshots see it all.
    let expected = json!({
        "submitted": 7, "assigned": 7, "completed": 5, "failed": 2,
        "dead_lettered": 2, "reclaimed": 0, "connected": 2, "disconnected": 0,
        "errors": 0,
    });
    let mut m = Value::Null;
    let settled = wait_for(Duration::from_secs(20), || {
        m = metrics(&hub);
        m["counters"] == expected
            && m["queue_depth"]["dead_letter"] == 2
            && history_sum(&m, &["task_latency", "assign_to_complete_ms", "count"]) == 5
            && history_sum(&m, &["task_latency", "submit_to_assign_ms", "count"]) == 7
    });
    assert!(settled, "metrics: {m}");
    assert_eq!(m["queue_depth"]["now"], 0, "{m}");
    assert_eq!(m["queue_depth"]["by_status"]["completed"], 5, "{m}");
    assert_eq!(m["agent_utilization"]["online"], 2, "{m}");
    assert_eq!(m["agent_utilization"]["busy"], 0, "{m}");
    assert!(
        m["storage"]["size_on_disk_bytes"].as_u64().unwrap_or(0) > 0,
        "{m}"
    );
    // 2 failures and 5 completions over the hour of history.
    let failed: f64 = m["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|s| s["error_rates"]["failed_per_min"].as_f64().unwrap_or(0.0))
                .sum()
        })
        .unwrap_or(0.0);
    assert!(failed > 0.0, "failures show in the rates: {m}");

    // Prometheus text: the scrape token or the admin token, nobody else.
    let scrape = |token: Option<&str>| {
        let mut req = ureq::get(&hub.url("/metrics"));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error: {e}"),
        }
    };
    let (status, text) = scrape(Some(SCRAPE));
    assert_eq!(status, 200, "{text}");
    let role = if on_postgres() {
        "agentcom_hub_role{role=\"leader\"} 1"
    } else {
        "agentcom_hub_role{role=\"single\"} 1"
    };
    for line in [
        role,
        "agentcom_events_total{event=\"completed\"} 5",
        "agentcom_events_total{event=\"failed\"} 2",
        "agentcom_dead_letter_tasks 2",
        "agentcom_queue_depth 0",
        "# TYPE agentcom_assign_to_complete_ms summary",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert_eq!(scrape(Some(&hub.admin_token)).0, 200);
    assert_eq!(scrape(Some(&t_f)).0, 403);
    assert_eq!(scrape(Some("scrape-token-wrong-000000")).0, 401);
    assert_eq!(scrape(None).0, 401);
    let (status, _) = hub.get_as("/api/metrics", Some(&t_f));
    assert_eq!(status, 403);
    let (status, body) = hub.get("/api/metrics?history=maybe");
    assert_eq!(status, 422, "{body}");

    // A disconnect is counted.
    drop(worker.stop());
    assert!(wait_for(Duration::from_secs(10), || metrics(&hub)
        ["counters"]["disconnected"]
        == 1));
}
