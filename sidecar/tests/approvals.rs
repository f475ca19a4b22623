//! Approvals through the sidecar (#20, PROTOCOL.md 6.27): the hub holds the
//! agent's completion for review; a rejection wakes the agent again with the
//! reason (`TASK_REVIEW`); an approval with `merge_on_approval` makes the
//! sidecar merge the pull request with `gh` (a fake `gh` here): a conflict
//! sends the task back to the agent with gh's words, a clean merge completes
//! it with the merge on its result. A kill -9 while the completion waits
//! loses nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

const PR: &str = "https://github.example/acme/app/pull/42";

/// An agent that reports a pull request, and on a rework says what it fixed
/// (and resolves the conflict the fake gh reports).
fn reviewing_agent(dir: &std::path::Path) -> String {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
echo "$TASK_ID ${{TASK_ANSWER:-first}} ${{TASK_REVIEW:-}}" >> '{d}/wakes.log'
touch "$AGENTCOM_STARTED_FILE"
if [ "${{TASK_ANSWER:-}}" = merge_failed ]; then rm -f '{d}/conflict'; fi
printf '{{"status":"success","summary":"done %s","pr_url":"{PR}"}}' "${{TASK_REVIEW:-first}}" > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
exit 0
"#
    );
    let path = dir.join("agent.sh");
    fs::write(&path, script).expect("write agent.sh");
    format!("sh '{}'", path.display())
}

/// A fake `gh`: records its arguments; `pr merge` fails with a conflict while
/// `<dir>/conflict` exists; `pr view` says the pull request is open.
fn fake_gh(dir: &std::path::Path) -> String {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> '{d}/gh-args.txt'
if [ "$1 $2" = "pr merge" ]; then
  if [ -e '{d}/conflict' ]; then echo "Pull request is not mergeable: the merge commit cannot be cleanly created." >&2; exit 1; fi
  echo "Merged pull request #42"; exit 0
fi
if [ "$1 $2" = "pr view" ]; then echo OPEN; exit 0; fi
if [ "$1 $2" = "pr create" ]; then echo "{PR}"; exit 0; fi
exit 2
"#
    );
    let path = dir.join("gh");
    fs::write(&path, script).expect("write gh");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod gh");
    path.display().to_string()
}

#[test]
fn a_held_completion_is_reworked_then_merged_on_approval() {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, "dev", "merge_method = \"rebase\"\n");
    let gh = fake_gh(sc.dir.path());
    let mut cfg = fs::read_to_string(sc.config_path()).expect("config");
    cfg.push_str(&format!("gh_command = {}\n", toml_str(&gh)));
    fs::write(sc.config_path(), cfg).expect("config");
    let wake = reviewing_agent(sc.dir.path());
    sc.set_wake(&wake);
    fs::write(sc.path("conflict"), "").expect("conflict flag");
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for(
        "dev",
        json!({"description": "feature", "approval": "before_complete",
               "merge_on_approval": true}),
    );
    let held = hub.wait_status(&task, "input_required", SOON);
    assert_eq!(
        held["question"]["approval"]["result"]["pr_url"], PR,
        "{held}"
    );
    let waiting = |sc: &Sidecar| {
        sc.held()
            .first()
            .is_some_and(|r| r["phase"] == "awaiting_approval")
    };
    assert!(
        wait_for(SOON, || waiting(&sc)),
        "{:?}\n{}",
        sc.held(),
        sc.log_tail()
    );
    // Killed while the completion waits: reported again after the restart.
    sc.kill9();
    hub.wait_status(&task, "queued", SOON);
    sc.spawn();
    hub.wait_status(&task, "input_required", SOON);
    assert!(wait_for(SOON, || waiting(&sc)), "{}", sc.log_tail());

    let (status, body) = hub.post(
        &format!("/api/tasks/{task}/reject"),
        &json!({"reason": "add tests"}),
    );
    assert_eq!(status, 200, "{body}");
    let reheld = wait_for(SOON, || {
        let t = hub.task(&task);
        t["status"] == "input_required" && t["question"]["id"] == 2
    });
    assert!(reheld, "{}\n{}", hub.task(&task), sc.log_tail());
    assert_eq!(
        hub.task(&task)["question"]["approval"]["result"]["summary"],
        "done add tests"
    );
    assert!(wait_for(SOON, || waiting(&sc)), "{}", sc.log_tail());

    // Approved: the merge conflicts; the agent is told and works on.
    let (status, body) = hub.post(&format!("/api/tasks/{task}/approve"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let reworked = wait_for(SOON, || {
        let t = hub.task(&task);
        t["status"] == "input_required" && t["question"]["id"] == 3
    });
    assert!(reworked, "{}\n{}", hub.task(&task), sc.log_tail());
    let t = hub.task(&task);
    assert_eq!(t["merge"]["merged"], false, "{t}");
    assert!(
        t["merge"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not mergeable")),
        "{t}"
    );
    assert!(wait_for(SOON, || waiting(&sc)), "{}", sc.log_tail());

    // Approved again: merged, completed with the merge on its result.
    hub.post(&format!("/api/tasks/{task}/approve"), &json!({}));
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    let t = hub.task(&task);
    assert_eq!(t["result"]["merge"]["merged"], true, "{t}");
    assert_eq!(t["result"]["merge"]["method"], "rebase", "{t}");
    assert_eq!(count_events(&t, "merged"), 1, "{t}");
    assert_eq!(count_events(&t, "merge_failed"), 1, "{t}");
    assert_eq!(count_events(&t, "completed"), 1, "{t}");
    let gh_args = fs::read_to_string(sc.path("gh-args.txt")).expect("gh ran");
    assert_eq!(
        gh_args.matches(&format!("pr merge {PR} --rebase")).count(),
        2,
        "{gh_args}"
    );
    sc.wait_idle();
    let woken: Vec<String> = wakes(sc.dir.path())
        .into_iter()
        .map(|w| {
            w.split_once(' ')
                .map(|(_, rest)| rest.trim().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        woken.first().map(String::as_str),
        Some("first"),
        "{woken:?}"
    );
    assert_eq!(
        woken.get(woken.len() - 2).map(String::as_str),
        Some("reject add tests"),
        "{woken:?}"
    );
    assert!(
        woken
            .last()
            .is_some_and(|w| w.starts_with("merge_failed ") && w.contains("not mergeable")),
        "{woken:?}"
    );
}

/// Runs a shell script in `dir` (set -e); panics with its output on failure.
fn sh(dir: &std::path::Path, script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("set -e\n{script}"))
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_rule_on_infra_holds_a_completion_whose_submit_touched_it() {
    let hub = Hub::start();
    let (status, body) = hub.put(
        "/api/admin/approval-rules",
        &json!({"rules": [{"name": "infra", "paths": ["infra/**"]}]}),
    );
    assert_eq!(status, 200, "{body}");
    // An origin, and the agent's working tree cloned from it.
    let git_dir = tempfile::tempdir().expect("git dir");
    sh(
        git_dir.path(),
        "git init -q --bare -b main origin.git\n\
         git clone -q origin.git seed 2>/dev/null\n\
         cd seed && git config user.name T && git config user.email t@example.invalid\n\
         git checkout -q -b main && echo hi > README.md && git add README.md\n\
         git commit -q -m init && git push -q origin main && cd ..\n\
         git clone -q origin.git work\n\
         cd work && git config user.name T && git config user.email t@example.invalid",
    );
    let work = git_dir.path().join("work");
    let mut sc = Sidecar::prepare(&hub, "infra-dev", "");
    let gh = fake_gh(sc.dir.path());
    let sidecar = sidecar_bin().display().to_string();
    let script = format!(
        r#"#!/bin/sh
set -e
touch "$AGENTCOM_STARTED_FILE"
cd "$AGENTCOM_REPO_DIR"
'{sidecar}' git start-task > /dev/null
mkdir -p infra && echo 'resource "null" "x" {{}}' > infra/main.tf
git add infra/main.tf && git commit -q -m "add infra"
'{sidecar}' git submit > '{d}/submit.json'
printf '{{"status":"success","summary":"infra added"}}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#,
        d = sc.dir.path().display()
    );
    let agent = sc.path("agent.sh");
    fs::write(&agent, script).expect("agent script");
    let mut cfg = fs::read_to_string(sc.config_path()).expect("config");
    cfg.push_str(&format!(
        "gh_command = {}\nrepo_dir = {}\n",
        toml_str(&gh),
        toml_str(&work.display().to_string())
    ));
    fs::write(sc.config_path(), cfg).expect("config");
    sc.set_wake(&format!("sh '{}'", agent.display()));
    sc.spawn();
    sc.wait_online(&hub);
    let task = hub.submit_for("infra-dev", json!({"description": "Add the infra module"}));
    let held = hub.wait_status(&task, "input_required", SOON);
    let approval = &held["question"]["approval"];
    assert_eq!(
        approval["reasons"],
        json!(["rule infra: changes infra/main.tf"]),
        "{held}\n{}",
        sc.log_tail()
    );
    assert_eq!(approval["result"]["pr_url"], PR, "{held}");
    assert_eq!(
        approval["result"]["changes"]["paths"],
        json!(["infra/main.tf"]),
        "{held}"
    );
    assert_eq!(approval["result"]["changes"]["lines_added"], 1, "{held}");
    let (status, body) = hub.post(&format!("/api/tasks/{task}/approve"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let done = wait_for(SOON, || hub.task(&task)["status"] == "completed");
    assert!(done, "{}\n{}", hub.task(&task), sc.log_tail());
    sc.wait_idle();
}
