//! `runtime = "claude-code"` (#20): the sidecar runs `claude -p` with the
//! task on stdin and turns its stream-json into progress, spend, the result,
//! a usage-limit pause, and a permission question. A fake `claude` replays
//! recorded streams (`tests/fixtures/claude/*.jsonl`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// A fake `claude`: logs its arguments, working directory and stdin, then
/// replays `<dir>/scenario` (or `resumed` when a tool was allowed), with
/// `@RESET@` replaced by an hour from now (written to `<dir>/reset.txt`).
fn fake_claude(dir: &Path) -> String {
    let d = dir.display();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude");
    let f = fixtures.display();
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> '{d}/claude-args.log'
pwd >> '{d}/claude-cwd.log'
cat >> '{d}/claude-stdin.log'
echo '---' >> '{d}/claude-stdin.log'
case " $* " in
  *" --allowedTools "*) scenario=resumed ;;
  *) scenario=$(cat '{d}/scenario') ;;
esac
reset=$(( $(date +%s) + 3600 ))
echo "$reset" > '{d}/reset.txt'
sed "s/@RESET@/$reset/" '{f}/'"$scenario"'.jsonl'
"#
    );
    let path = dir.join("claude");
    fs::write(&path, script).expect("write fake claude");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn claude_sidecar(hub: &Hub, agent: &str, scenario: &str) -> (Sidecar, tempfile::TempDir) {
    let repo = tempfile::tempdir().expect("repo dir");
    let sc = Sidecar::prepare(hub, agent, "runtime = \"claude-code\"\n");
    let claude = fake_claude(sc.dir.path());
    fs::write(sc.path("scenario"), scenario).expect("scenario");
    let mut cfg = fs::read_to_string(sc.config_path()).expect("config");
    cfg.push_str(&format!(
        "claude_command = {}\nclaude_args = [\"--model\", \"sonnet\"]\nrepo_dir = {}\n",
        toml_str(&claude),
        toml_str(&repo.path().display().to_string())
    ));
    fs::write(sc.config_path(), cfg).expect("config");
    (sc, repo)
}

fn archived(sc: &Sidecar, suffix: &str) -> Option<Value> {
    let dir = sc.state_dir().join("archive");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .and_then(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
}

#[test]
fn a_stream_becomes_progress_spend_and_the_result() {
    let hub = Hub::start();
    let (mut sc, repo) = claude_sidecar(&hub, "claude1", "success_tool_use");
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for(
        "claude1",
        json!({"description": "Fix the flaky login test"}),
    );
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    let t = hub.task(&task);
    assert_eq!(
        t["result"]["summary"], "Fixed the flaky login test: the retry now waits for the session.",
        "{t}"
    );
    assert_eq!(t["result"]["session_id"], "sess-1", "{t}");
    assert_eq!(t["spent"]["tokens"], 2025, "{t}");
    assert!(
        (t["spent"]["cost_usd"].as_f64().unwrap_or(0.0) - 0.0421).abs() < 1e-9,
        "{t}"
    );
    let args = fs::read_to_string(sc.path("claude-args.log")).expect("claude ran");
    assert_eq!(
        args.trim(),
        "-p --output-format stream-json --verbose --model sonnet",
        "{args}"
    );
    let cwd = fs::read_to_string(sc.path("claude-cwd.log")).expect("cwd");
    let repo_dir = fs::canonicalize(repo.path()).expect("canonical");
    assert_eq!(Path::new(cwd.trim()), repo_dir, "runs in the working tree");
    let stdin = fs::read_to_string(sc.path("claude-stdin.log")).expect("stdin");
    assert!(stdin.starts_with("Fix the flaky login test"), "{stdin}");
    // The progress the stream gave: what it was doing, and the tokens.
    sc.wait_idle();
    let progress = archived(&sc, ".progress").expect("a progress file");
    assert_eq!(progress["tokens_used"], 2025, "{progress}");
    assert_eq!(progress["message"], "using Edit", "{progress}");
}

#[test]
fn a_usage_limit_pauses_the_group_until_the_reset() {
    let hub = Hub::start();
    let (mut sc, _repo) = claude_sidecar(&hub, "claude2", "usage_limit");
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for("claude2", json!({"description": "Anything"}));
    let paused = wait_for(SOON, || {
        hub.get("/api/usage").1["paused"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert!(paused, "{}\n{}", hub.task(&task), sc.log_tail());
    let reset: u64 = fs::read_to_string(sc.path("reset.txt"))
        .expect("reset")
        .trim()
        .parse()
        .expect("a number");
    let (_, usage) = hub.get("/api/usage");
    assert_eq!(
        usage["paused"][0]["credential_group"], "agent:claude2",
        "{usage}"
    );
    assert_eq!(usage["paused"][0]["until"], reset * 1000, "{usage}");
    let t = hub.wait_status(&task, "queued", SOON);
    assert_eq!(t["retry_count"], 0, "a usage limit spends no retry: {t}");
}

#[test]
fn a_refused_tool_is_a_question_and_allowing_it_resumes_the_session() {
    let hub = Hub::start();
    let (mut sc, _repo) = claude_sidecar(&hub, "claude3", "permission");
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for("claude3", json!({"description": "Run the tests"}));
    let asked = hub.wait_status(&task, "input_required", SOON);
    assert_eq!(
        asked["question"]["options"],
        json!(["allow", "deny"]),
        "{asked}"
    );
    assert!(
        asked["question"]["question"]
            .as_str()
            .is_some_and(|q| q.contains("Bash") && q.contains("cargo test")),
        "{asked}"
    );
    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/answer"),
        &json!({"answer": "allow"}),
    );
    assert_eq!(status, 200, "{body}");
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    assert_eq!(hub.task(&task)["result"]["summary"], "All 12 tests pass.");
    let args = fs::read_to_string(sc.path("claude-args.log")).expect("args");
    let second = args.lines().nth(1).unwrap_or_default();
    assert!(
        second.contains("--resume sess-3") && second.contains("--allowedTools Bash"),
        "{args}"
    );
    let stdin = fs::read_to_string(sc.path("claude-stdin.log")).expect("stdin");
    assert!(stdin.contains("The operator allowed Bash"), "{stdin}");
    // Both runs' spend, in all.
    let t = hub.task(&task);
    assert_eq!(t["spent"]["tokens"], 615 + 730, "{t}");
}
