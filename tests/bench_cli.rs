//! `agentcom-hub bench` end to end: it starts its own hub, drives real sockets and
//! reports every task completed exactly once, as one JSON object on the last line.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_json_reports_every_task_completed_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args([
            "bench",
            "--agents",
            "3",
            "--tasks",
            "300",
            "--batch",
            "20",
            "--capabilities",
            "2",
            "--mixed-priorities",
            "--scopes",
            "5",
            "--concurrency-keys",
            "4",
            "--subscriptions",
            "2",
            "--timeout-secs",
            "120",
            "--json",
        ])
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a report line");
    let report: Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(report["submitted"], 300, "{report}");
    assert_eq!(
        (report["scopes"].clone(), report["concurrency_keys"].clone()),
        (Value::from(5), Value::from(4))
    );
    assert_eq!(report["completed"], 300, "{report}");
    // Every completion was published for the subscriptions.
    assert_eq!(report["subscriptions"], 2, "{report}");
    assert_eq!(report["hub_events"], 300, "{report}");
    assert!(report["events_elapsed_s"].is_number(), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert!(
        report["throughput_per_s"].as_f64().is_some_and(|t| t > 0.0),
        "{report}"
    );
    for key in ["p50", "p90", "p99", "max"] {
        assert!(report["assign_latency_ms"][key].is_number(), "{report}");
    }
    assert!(
        report["hub_peak_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{report}"
    );
}

#[test]
fn bench_refuses_impossible_shapes() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["bench", "--agents", "2", "--capabilities", "3", "--json"])
        .output()
        .expect("run bench");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("capabilities"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["bench", "--batch", "0"])
        .output()
        .expect("run bench");
    assert_eq!(out.status.code(), Some(2), "clap refuses --batch 0");
}

/// Runs `agentcom-hub bench --json ARGS`; answers its report (the last line).
fn bench_report(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args(["bench", "--json"])
        .args(args)
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a report line")).expect("JSON report")
}

#[test]
fn scale_idle_agents_reports_memory_per_connection() {
    let report = bench_report(&["--scale", "idle-agents", "--agents", "50"]);
    assert_eq!(report["mode"], "idle-agents", "{report}");
    assert_eq!(report["agents"], 50, "{report}");
    assert!(report["hub_rss_after_bytes"].as_u64() > Some(0), "{report}");
    assert!(report["bytes_per_idle_agent"].is_number(), "{report}");
}

#[test]
fn scale_queued_reports_restart_and_per_assignment_cost() {
    let report = bench_report(&["--scale", "queued", "--tasks", "3000"]);
    assert_eq!(report["queued"], 3000, "{report}");
    for key in [
        "restart_to_serving_ms",
        "per_assignment_ms_1k",
        "per_assignment_ms_full",
        "per_assignment_ratio",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn bench_runs_its_own_hub_on_postgres_and_drops_its_database_after() {
    let Some(server) = std::env::var("AGENTCOM_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
    else {
        eprintln!("skipped on sled: AGENTCOM_TEST_POSTGRES names no server");
        return;
    };
    let report = bench_report(&[
        "--agents",
        "2",
        "--tasks",
        "100",
        "--batch",
        "10",
        "--timeout-secs",
        "120",
        "--postgres",
        &server,
    ]);
    assert_eq!(
        (
            report["completed"].as_u64(),
            report["lost"].as_u64(),
            report["duplicated"].as_u64()
        ),
        (Some(100), Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(report["storage"], "postgres", "{report}");
    // Its database is gone again.
    let mut client =
        postgres::Client::connect(&format!("{server} dbname=postgres"), postgres::NoTls)
            .expect("connect");
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'agentcom_bench_%'",
            &[],
        )
        .expect("query")
        .get(0);
    assert_eq!(left, 0, "bench databases left behind");
}
