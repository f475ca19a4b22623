//! `agentcom-sidecar git start-task | submit | status`: the agent's git workflow.
//!
//! Each command prints exactly one JSON object on stdout: `{"ok":true,...}` on
//! success, `{"ok":false,"error":<code>,...}` (exit code 1) when it refuses or git
//! fails. Branches are `<agent>/<slug>`, created from a freshly fetched
//! `origin/main`; dirty trees are refused; submit pushes with
//! `--force-with-lease` and opens a pull request with `gh` when it is installed.
//!
//! The task a branch belongs to is remembered in the repository's own config
//! (`branch.<name>.agentcomTaskId` / `agentcomDescription`), so `submit` finds it
//! without any other state. What `submit` did is also written to
//! `<state_dir>/git/<task_id>.json`, from where the relay adds `pr_url` to the
//! task's result.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::scope_hook;
use crate::state::{self, now_ms, safe_task_id};

/// What the git commands need to know.
#[derive(Debug, Clone)]
pub struct GitContext {
    pub repo: PathBuf,
    pub agent_id: String,
    pub reviewer: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// The GitHub CLI (`gh_command`).
    pub gh: String,
}

/// A refusal or failure: printed as `{"ok":false,...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GitFailure(pub Value);

pub(crate) fn fail(error: &str, detail: Value) -> GitFailure {
    let mut v = json!({"ok": false, "error": error});
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), detail) {
        obj.extend(extra);
    }
    GitFailure(v)
}

/// Runs git in the repository; trimmed stdout, or a `git_failed` failure.
pub(crate) fn git(repo: &Path, args: &[&str]) -> Result<String, GitFailure> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| {
            fail(
                "git_unavailable",
                json!({"detail": format!("cannot run git: {e}")}),
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(fail(
            "git_failed",
            json!({
                "command": format!("git {}", args.join(" ")),
                "exit_code": out.status.code(),
                "stderr": String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        ))
    }
}

fn git_ok(repo: &Path, args: &[&str]) -> bool {
    git(repo, args).is_ok()
}

/// `[a-z0-9-]`, words joined by single dashes, at most 48 characters.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_matches('-').to_string();
    if slug.is_empty() {
        "task".into()
    } else {
        slug
    }
}

/// The agent id as a branch path component.
fn branch_prefix(agent_id: &str) -> String {
    let p: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if p.is_empty() {
        "agent".into()
    } else {
        p
    }
}

fn dirty_files(repo: &Path) -> Result<Vec<String>, GitFailure> {
    let out = git(repo, &["status", "--porcelain", "--untracked-files=all"])?;
    Ok(out
        .lines()
        .filter(|l| l.len() > 3)
        .map(|l| l[3..].to_string())
        .collect())
}

fn refuse_dirty(repo: &Path) -> Result<(), GitFailure> {
    let dirty = dirty_files(repo)?;
    if dirty.is_empty() {
        Ok(())
    } else {
        Err(fail(
            "dirty_tree",
            json!({"detail": "commit or stash your changes first", "dirty_files": dirty}),
        ))
    }
}

fn check_repo(repo: &Path) -> Result<(), GitFailure> {
    match git(repo, &["rev-parse", "--is-inside-work-tree"]) {
        Ok(s) if s == "true" => Ok(()),
        _ => Err(fail(
            "not_a_repository",
            json!({"repo": repo.display().to_string()}),
        )),
    }
}

fn current_branch(repo: &Path) -> Result<String, GitFailure> {
    git(repo, &["rev-parse", "--abbrev-ref", "HEAD"])
}

fn count(repo: &Path, range: &str) -> Option<u64> {
    git(repo, &["rev-list", "--count", range])
        .ok()
        .and_then(|s| s.parse().ok())
}

fn branch_config(repo: &Path, branch: &str, key: &str) -> Option<String> {
    git(
        repo,
        &["config", "--get", &format!("branch.{branch}.{key}")],
    )
    .ok()
    .filter(|s| !s.is_empty())
}

fn fetch(repo: &Path) -> Result<(), GitFailure> {
    git(repo, &["fetch", "--prune", "origin"]).map(|_| ())
}

/// Task id and description: flags first, then the wake environment.
fn task_from_env(
    task_id: Option<String>,
    description: Option<String>,
) -> (Option<String>, Option<String>) {
    let task_id = task_id.or_else(|| std::env::var("TASK_ID").ok().filter(|s| !s.is_empty()));
    let description = description.or_else(|| {
        std::env::var("TASK_DESCRIPTION")
            .ok()
            .filter(|s| !s.is_empty())
    });
    (task_id, description)
}

/// `start-task`: a branch `<agent>/<slug>` from a freshly fetched `origin/main`;
/// with a write scope (`write_paths`, else `$TASK_WRITE_PATHS`), the scope is
/// kept on the branch and the pre-commit hook installed (see `scope_hook`).
pub fn start_task(
    ctx: &GitContext,
    task_id: Option<String>,
    description: Option<String>,
    slug: Option<String>,
    write_paths: Vec<String>,
) -> Result<Value, GitFailure> {
    let repo = &ctx.repo;
    check_repo(repo)?;
    refuse_dirty(repo)?;
    fetch(repo)?;
    let base_commit =
        git(repo, &["rev-parse", "--verify", "origin/main^{commit}"]).map_err(|_| {
            fail(
                "no_origin_main",
                json!({"detail": "origin has no main branch"}),
            )
        })?;
    let (task_id, description) = task_from_env(task_id, description);
    let mut slug = slugify(slug.as_deref().or(description.as_deref()).unwrap_or("task"));
    if let Some(id) = &task_id {
        let tail: String = id
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let tail = slugify(&tail);
        if !slug.ends_with(&tail) {
            slug = format!("{slug}-{tail}");
        }
    }
    let branch = format!("{}/{slug}", branch_prefix(&ctx.agent_id));
    git(repo, &["check-ref-format", "--branch", &branch])
        .map_err(|_| fail("invalid_branch_name", json!({"branch": branch})))?;
    let existing = git_ok(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    );
    if existing {
        git(repo, &["checkout", "--quiet", &branch])?;
    } else {
        git(
            repo,
            &[
                "checkout",
                "--quiet",
                "--no-track",
                "-b",
                &branch,
                "origin/main",
            ],
        )?;
    }
    if let Some(id) = &task_id {
        git(
            repo,
            &["config", &format!("branch.{branch}.agentcomTaskId"), id],
        )?;
    }
    if let Some(d) = &description {
        git(
            repo,
            &["config", &format!("branch.{branch}.agentcomDescription"), d],
        )?;
    }
    let write_paths = if write_paths.is_empty() {
        scope_hook::write_paths_from_env()
    } else {
        write_paths
    };
    let hook = if write_paths.is_empty() {
        None
    } else {
        Some(
            scope_hook::protect(repo, &branch, &write_paths)?
                .display()
                .to_string(),
        )
    };
    Ok(json!({
        "ok": true,
        "command": "start-task",
        "write_paths": write_paths,
        "scope_hook": hook,
        "branch": branch,
        "base": "origin/main",
        "base_commit": base_commit,
        "existing_branch": existing,
        "task_id": task_id,
    }))
}

/// `submit`: push the task branch with `--force-with-lease`, open a PR with `gh`.
pub fn submit(
    ctx: &GitContext,
    task_id: Option<String>,
    title: Option<String>,
) -> Result<Value, GitFailure> {
    let repo = &ctx.repo;
    check_repo(repo)?;
    let branch = current_branch(repo)?;
    if branch == "HEAD" || branch == "main" || branch == "master" {
        return Err(fail(
            "not_on_task_branch",
            json!({"branch": branch, "detail": "run `agentcom-sidecar git start-task` first"}),
        ));
    }
    refuse_dirty(repo)?;
    // Only main: fetching the task branch would move its remote-tracking ref to
    // whatever is on origin now, and --force-with-lease would then overwrite a
    // push someone else made.
    git(repo, &["fetch", "origin", "main"])?;
    let ahead = count(repo, "origin/main..HEAD").unwrap_or(0);
    if ahead == 0 {
        return Err(fail(
            "nothing_to_submit",
            json!({"branch": branch, "detail": "no commits ahead of origin/main"}),
        ));
    }
    // --force-with-lease: a rebased branch replaces our own earlier push, but never
    // a push someone else made meanwhile.
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["push", "--force-with-lease", "--set-upstream", "origin"])
        .arg(format!("{branch}:refs/heads/{branch}"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| fail("git_unavailable", json!({"detail": e.to_string()})))?;
    if !out.status.success() {
        return Err(fail(
            "push_failed",
            json!({"branch": branch, "stderr": String::from_utf8_lossy(&out.stderr).trim().to_string()}),
        ));
    }
    let head = git(repo, &["rev-parse", "HEAD"])?;
    let (task_id, _) = task_from_env(
        task_id.or_else(|| branch_config(repo, &branch, "agentcomTaskId")),
        None,
    );
    let description = branch_config(repo, &branch, "agentcomDescription").or_else(|| {
        std::env::var("TASK_DESCRIPTION")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let log = git(repo, &["log", "--format=- %h %s", "origin/main..HEAD"]).unwrap_or_default();
    let changes = changes(repo);
    // Files committed past the scope's hook (`--no-verify`): reported, not hidden.
    let out_of_scope = scope_hook::changed_outside(repo, &branch);
    let scope_note = match &out_of_scope {
        Some(files) if !files.is_empty() => format!(
            "\n### Outside the task's write scope\n\nThese files are not in the task's `write_paths` ({}):\n\n{}\n",
            scope_hook::scope_of(repo, &branch).join(", "),
            files
                .iter()
                .map(|f| format!("- `{f}`"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        _ => String::new(),
    };
    let title = title.unwrap_or_else(|| {
        description
            .as_deref()
            .and_then(|d| d.lines().next())
            .map(|l| l.chars().take(72).collect())
            .unwrap_or_else(|| branch.clone())
    });
    let body = format!(
        "Opened by AgentCom agent `{agent}`.\n\n- Task: `{task}`\n- Branch: `{branch}`\n\n### Task\n\n{desc}\n\n### Commits\n\n{log}\n{scope_note}",
        agent = ctx.agent_id,
        task = task_id.as_deref().unwrap_or("(none)"),
        desc = description.as_deref().unwrap_or("(no description)"),
    );
    let (pr_url, pr_note) = open_pr(ctx, &branch, &title, &body);
    if let (Some(id), Some(state_dir)) = (&task_id, &ctx.state_dir) {
        if safe_task_id(id) {
            let record = json!({
                "task_id": id, "branch": branch, "head": head,
                "pr_url": pr_url, "submitted_at": now_ms(),
                "out_of_scope_files": out_of_scope, "changes": changes,
            });
            let path = state::git_record_path(state_dir, id);
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| state::write_atomic(&path, record.to_string().as_bytes()));
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot record the submit in the state directory");
            }
        }
    }
    Ok(json!({
        "ok": true,
        "command": "submit",
        "branch": branch,
        "head": head,
        "commits_ahead": ahead,
        "pushed": true,
        "pr_url": pr_url,
        "pr": pr_note,
        "task_id": task_id,
        "out_of_scope_files": out_of_scope,
        "changes": changes,
    }))
}

/// Most changed paths reported (more are counted, not listed).
const MAX_CHANGED_PATHS: usize = 2_000;

/// What the branch changes against `origin/main`: the paths, and the lines
/// added and deleted (`git diff --numstat`; binary files count no lines).
/// The hub's approval rules read it from the task's result.
fn changes(repo: &Path) -> Value {
    let numstat = git(
        repo,
        &["diff", "--numstat", "--no-renames", "origin/main...HEAD"],
    )
    .unwrap_or_default();
    let (mut paths, mut added, mut deleted) = (Vec::new(), 0u64, 0u64);
    let mut total = 0usize;
    for line in numstat.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(a), Some(d), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        added += a.parse::<u64>().unwrap_or(0);
        deleted += d.parse::<u64>().unwrap_or(0);
        total += 1;
        if paths.len() < MAX_CHANGED_PATHS {
            paths.push(path.to_string());
        }
    }
    let mut v = json!({"paths": paths, "lines_added": added, "lines_deleted": deleted});
    if total > MAX_CHANGED_PATHS {
        v["paths_total"] = json!(total);
    }
    v
}

/// Opens (or finds) the pull request; `(url, note)`.
fn open_pr(ctx: &GitContext, branch: &str, title: &str, body: &str) -> (Option<String>, String) {
    let mut create = Command::new(&ctx.gh);
    create.current_dir(&ctx.repo).args([
        "pr", "create", "--base", "main", "--head", branch, "--title", title, "--body", body,
    ]);
    if let Some(r) = &ctx.reviewer {
        create.args(["--reviewer", r]);
    }
    let out = match create.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (None, "skipped: gh is not installed".into())
        }
        Err(e) => return (None, format!("failed: cannot run gh: {e}")),
    };
    let url_in = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .rfind(|l| l.starts_with("https://") || l.starts_with("http://"))
            .map(str::to_string)
    };
    if out.status.success() {
        if let Some(url) = url_in(&out.stdout) {
            return (Some(url), "created".into());
        }
    }
    // Already open (a re-submit after a rebase): look it up.
    let view = Command::new(&ctx.gh)
        .current_dir(&ctx.repo)
        .args(["pr", "view", branch, "--json", "url", "--jq", ".url"])
        .output();
    if let Ok(v) = view {
        if v.status.success() {
            if let Some(url) = url_in(&v.stdout) {
                return (Some(url), "existing".into());
            }
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (
        None,
        format!("failed: {}", stderr.chars().take(500).collect::<String>()),
    )
}

/// `status`: branch, commits ahead of / behind `origin/main`, dirty files.
pub fn status(ctx: &GitContext, do_fetch: bool) -> Result<Value, GitFailure> {
    let repo = &ctx.repo;
    check_repo(repo)?;
    if do_fetch {
        fetch(repo)?;
    }
    let branch = current_branch(repo)?;
    let has_base = git_ok(repo, &["rev-parse", "--verify", "--quiet", "origin/main"]);
    let (ahead, behind) = if has_base {
        (
            count(repo, "origin/main..HEAD"),
            count(repo, "HEAD..origin/main"),
        )
    } else {
        (None, None)
    };
    let dirty = dirty_files(repo)?;
    Ok(json!({
        "ok": true,
        "command": "status",
        "branch": branch,
        "base": if has_base { Some("origin/main") } else { None },
        "commits_ahead": ahead,
        "commits_behind": behind,
        "dirty": !dirty.is_empty(),
        "dirty_files": dirty,
        "task_id": branch_config(repo, &branch, "agentcomTaskId"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_branch_safe() {
        assert_eq!(slugify("Fix the flaky test!"), "fix-the-flaky-test");
        assert_eq!(slugify("  $(rm -rf /) `x` \"q\"\n"), "rm-rf-x-q");
        assert_eq!(slugify("!!!"), "task");
        assert!(slugify(&"word ".repeat(40)).len() <= 48);
        assert_eq!(branch_prefix("bot 1/x"), "bot-1-x");
    }
}
