//! Issue test 8: the git workflow subcommands against a temporary bare repo used
//! as origin. A fake `gh` on PATH stands in for GitHub.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn identity(dir: &Path) {
    git(dir, &["config", "user.name", "Test Agent"]);
    git(dir, &["config", "user.email", "agent@example.invalid"]);
}

fn commit_file(dir: &Path, name: &str, content: &str, msg: &str) {
    fs::write(dir.join(name), content).expect("write file");
    git(dir, &["add", name]);
    git(dir, &["commit", "-q", "-m", msg]);
}

struct Setup {
    tmp: tempfile::TempDir,
    origin: PathBuf,
    seed: PathBuf,
    work: PathBuf,
    config: PathBuf,
    bin: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let origin = tmp.path().join("origin.git");
    let seed = tmp.path().join("seed");
    let work = tmp.path().join("work");
    let t = tmp.path();
    git(
        t,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().expect("utf8"),
        ],
    );
    git(
        t,
        &[
            "clone",
            "-q",
            origin.to_str().expect("utf8"),
            seed.to_str().expect("utf8"),
        ],
    );
    identity(&seed);
    git(&seed, &["checkout", "-q", "-b", "main"]);
    commit_file(&seed, "README.md", "hello\n", "initial");
    git(&seed, &["push", "-q", "origin", "main"]);
    git(
        t,
        &[
            "clone",
            "-q",
            origin.to_str().expect("utf8"),
            work.to_str().expect("utf8"),
        ],
    );
    identity(&work);
    let config = t.join("sidecar.toml");
    fs::write(
        &config,
        format!(
            "agent_id = \"coder\"\ntoken = \"unused\"\nhub_url = \"ws://127.0.0.1:9/ws\"\nrepo_dir = {}\nreviewer = \"lead\"\n",
            toml_str(work.to_str().expect("utf8"))
        ),
    )
    .expect("config");
    // A fake gh: records its arguments, prints a PR URL.
    let bin = t.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    let gh = bin.join("gh");
    fs::write(
        &gh,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}/gh-args.txt'\nif [ \"$2\" = create ]; then echo 'https://github.example/acme/app/pull/7'; fi\n",
            t.display()
        ),
    )
    .expect("gh");
    fs::set_permissions(&gh, fs::Permissions::from_mode(0o755)).expect("chmod gh");
    Setup {
        tmp,
        origin,
        seed,
        work,
        config,
        bin,
    }
}

/// Runs `agentcom-sidecar git ...`; returns (exit code, the one JSON object).
fn sc_git(s: &Setup, args: &[&str], envs: &[(&str, &str)]) -> (i32, Value) {
    let path = format!(
        "{}:{}",
        s.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(sidecar_bin());
    cmd.arg("git")
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .env("PATH", path);
    cmd.env_remove("TASK_ID").env_remove("TASK_DESCRIPTION");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run agentcom-sidecar git");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON object on stdout, got {stdout:?} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn start_task_submit_and_status_against_a_bare_origin() {
    let s = setup();
    let task_id = "task-0123456789abcdef";

    let (code, st) = sc_git(&s, &["status"], &[]);
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["branch"], "main");
    assert_eq!(st["commits_ahead"], 0);
    assert_eq!(st["dirty"], false);

    // Dirty trees are refused.
    fs::write(s.work.join("scratch.txt"), "wip").expect("scratch");
    let (code, v) = sc_git(
        &s,
        &["start-task", "--task-id", task_id, "--description", "x"],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "dirty_tree");
    assert_eq!(v["dirty_files"][0], "scratch.txt");
    fs::remove_file(s.work.join("scratch.txt")).expect("rm scratch");

    // origin/main moves on meanwhile: start-task must branch from the fresh one.
    commit_file(&s.seed, "CHANGELOG.md", "v2\n", "upstream change");
    git(&s.seed, &["push", "-q", "origin", "main"]);
    let upstream_head = git(&s.seed, &["rev-parse", "HEAD"]);

    // Task values come from the wake environment when no flags are given.
    let (code, v) = sc_git(
        &s,
        &["start-task"],
        &[
            ("TASK_ID", task_id),
            ("TASK_DESCRIPTION", "Fix the flaky login test; `rm -rf /`"),
        ],
    );
    assert_eq!(code, 0, "{v}");
    let branch = "coder/fix-the-flaky-login-test-rm-rf-89abcdef";
    assert_eq!(v["branch"], branch, "{v}");
    assert_eq!(v["base_commit"], upstream_head.as_str(), "{v}");
    assert_eq!(git(&s.work, &["rev-parse", "--abbrev-ref", "HEAD"]), branch);
    assert_eq!(git(&s.work, &["rev-parse", "HEAD"]), upstream_head);

    // Nothing to submit yet.
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(
        (code, v["error"].as_str()),
        (1, Some("nothing_to_submit")),
        "{v}"
    );

    commit_file(&s.work, "login.rs", "fn login() {}\n", "Fix login flake");
    let (code, st) = sc_git(&s, &["status"], &[]);
    assert_eq!(code, 0);
    assert_eq!(st["branch"], branch);
    assert_eq!(st["commits_ahead"], 1);
    assert_eq!(st["commits_behind"], 0);
    assert_eq!(st["task_id"], task_id);

    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["pushed"], true);
    assert_eq!(v["commits_ahead"], 1);
    assert_eq!(v["task_id"], task_id);
    assert_eq!(v["pr_url"], "https://github.example/acme/app/pull/7", "{v}");
    let head = git(&s.work, &["rev-parse", "HEAD"]);
    assert_eq!(
        git(&s.origin, &["rev-parse", &format!("refs/heads/{branch}")]),
        head
    );
    let gh_args = fs::read_to_string(s.tmp.path().join("gh-args.txt")).expect("gh was called");
    assert!(
        gh_args.contains("--base\nmain\n") && gh_args.contains(&format!("--head\n{branch}\n")),
        "{gh_args}"
    );
    assert!(gh_args.contains("--reviewer\nlead\n"), "{gh_args}");
    assert!(
        gh_args.contains(task_id) && gh_args.contains("Fix the flaky login test"),
        "task metadata in the PR body: {gh_args}"
    );
    // The relay adds this pr_url to the task's result.
    let record: Value = serde_json::from_slice(
        &fs::read(
            s.tmp
                .path()
                .join("state")
                .join("git")
                .join(format!("{task_id}.json")),
        )
        .expect("git record"),
    )
    .expect("json");
    assert_eq!(record["pr_url"], "https://github.example/acme/app/pull/7");
    // What the hub's approval rules read: the changed paths and line counts.
    assert_eq!(
        v["changes"],
        json!({"paths": ["login.rs"], "lines_added": 1, "lines_deleted": 0}),
        "{v}"
    );
    assert_eq!(record["changes"], v["changes"]);

    // A rewritten branch is pushed again (force-with-lease over our own push).
    git(
        &s.work,
        &["commit", "-q", "--amend", "-m", "Fix login flake (amended)"],
    );
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(code, 0, "{v}");
    let amended = git(&s.work, &["rev-parse", "HEAD"]);
    assert_eq!(
        git(&s.origin, &["rev-parse", &format!("refs/heads/{branch}")]),
        amended
    );

    // But never over someone else's push.
    git(&s.seed, &["fetch", "-q", "origin", branch]);
    git(&s.seed, &["checkout", "-q", "-b", "theirs", "FETCH_HEAD"]);
    commit_file(&s.seed, "other.rs", "x\n", "someone else");
    git(
        &s.seed,
        &["push", "-q", "origin", &format!("theirs:{branch}")],
    );
    let theirs = git(&s.seed, &["rev-parse", "HEAD"]);
    git(&s.work, &["commit", "-q", "--amend", "-m", "again"]);
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!((code, v["error"].as_str()), (1, Some("push_failed")), "{v}");
    assert_eq!(
        git(&s.origin, &["rev-parse", &format!("refs/heads/{branch}")]),
        theirs
    );

    // Submitting from main is refused.
    git(&s.work, &["checkout", "-q", "main"]);
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(
        (code, v["error"].as_str()),
        (1, Some("not_on_task_branch")),
        "{v}"
    );
}

#[test]
fn submit_without_gh_pushes_and_says_so() {
    let s = setup();
    fs::remove_file(s.bin.join("gh")).expect("remove fake gh");
    let (code, v) = sc_git(&s, &["start-task", "--description", "Add docs"], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["branch"], "coder/add-docs");
    commit_file(&s.work, "docs.md", "docs\n", "docs");
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["pushed"], true);
    assert!(v["pr_url"].is_null(), "{v}");
    assert!(
        v["pr"]
            .as_str()
            .is_some_and(|p| p.contains("gh is not installed")),
        "{v}"
    );
    assert!(git(&s.origin, &["branch", "--list"]).contains("coder/add-docs"));
}

/// `git commit` in the work tree; (success, stderr).
fn try_commit(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("commit")
        .args(args)
        .output()
        .expect("run git commit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_scope_hook_refuses_out_of_scope_commits_and_submit_reports_them() {
    let s = setup();
    // Someone's own pre-commit hook: kept, and still run after ours.
    let hooks = s.work.join(".git/hooks");
    fs::create_dir_all(&hooks).expect("hooks dir");
    let mark = s.tmp.path().join("theirs-ran");
    fs::write(
        hooks.join("pre-commit"),
        format!("#!/bin/sh\ntouch '{}'\nexit 0\n", mark.display()),
    )
    .expect("their hook");
    fs::set_permissions(hooks.join("pre-commit"), fs::Permissions::from_mode(0o755))
        .expect("chmod");

    let (code, v) = sc_git(
        &s,
        &["start-task", "--description", "Rework the API"],
        &[
            ("TASK_ID", "task-00000000scope001"),
            ("TASK_WRITE_PATHS", "src/api/**\n/CHANGELOG.md\n"),
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["write_paths"],
        serde_json::json!(["src/api/**", "/CHANGELOG.md"])
    );
    assert!(
        v["scope_hook"]
            .as_str()
            .is_some_and(|h| h.ends_with("pre-commit")),
        "{v}"
    );

    // In scope: committed, and their hook ran too.
    fs::create_dir_all(s.work.join("src/api")).expect("mkdir");
    fs::write(s.work.join("src/api/handlers.rs"), "fn h() {}\n").expect("write");
    fs::write(s.work.join("CHANGELOG.md"), "- api\n").expect("write");
    git(&s.work, &["add", "-A"]);
    let (ok, stderr) = try_commit(&s.work, &["-q", "-m", "api"]);
    assert!(ok, "{stderr}");
    assert!(mark.exists(), "the earlier hook still runs");

    // Out of scope: refused, naming the file and the scope; nothing committed.
    fs::write(s.work.join("README.md"), "changed\n").expect("write");
    fs::write(s.work.join("src/api/more.rs"), "fn m() {}\n").expect("write");
    git(&s.work, &["add", "-A"]);
    let before = git(&s.work, &["rev-parse", "HEAD"]);
    let (ok, stderr) = try_commit(&s.work, &["-q", "-m", "readme"]);
    assert!(!ok, "an out-of-scope commit must be refused");
    assert!(
        stderr.contains("README.md")
            && stderr.contains("src/api/**")
            && !stderr.contains("more.rs"),
        "{stderr}"
    );
    assert_eq!(git(&s.work, &["rev-parse", "HEAD"]), before);
    let (code, v) = sc_git(&s, &["check-scope"], &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"], "out_of_scope");
    assert_eq!(v["files"], serde_json::json!(["README.md"]));

    // The explicit escape works, and submit reports what it let through.
    let (ok, stderr) = try_commit(&s.work, &["-q", "--no-verify", "-m", "readme anyway"]);
    assert!(ok, "{stderr}");
    let (code, v) = sc_git(&s, &["submit"], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["out_of_scope_files"], serde_json::json!(["README.md"]));
    let gh_args = fs::read_to_string(s.tmp.path().join("gh-args.txt")).expect("gh args");
    assert!(
        gh_args.contains("Outside the task's write scope") && gh_args.contains("- `README.md`"),
        "{gh_args}"
    );
}
