//! The task's write scope in the working tree (#19).
//!
//! `git start-task` keeps the task's `write_paths` on its branch
//! (`branch.<name>.agentcomWritePaths`, one value per glob) and installs a
//! pre-commit hook that runs `agentcom-sidecar git check-scope`: a commit whose
//! staged files (a rename counts as both its paths) fall outside the scope is
//! refused, naming the files and the scope. `git commit --no-verify` stays the
//! agent's explicit escape; `git submit` then reports every file outside the
//! scope in the pull request's body and in the task's result.
//!
//! Globs are read exactly as the hub reads them (`agentcom-scopes`). A
//! pre-commit hook that was there before ours is kept and run after it.

use std::path::{Path, PathBuf};

use agentcom_scopes::Scope;
use serde_json::{json, Value};

use crate::git::{fail, git, GitFailure};

/// The first line after the shebang of the hook we write.
const MARK: &str = "# agentcom-sidecar scope hook";
/// Where a pre-commit hook that was there before ours is kept.
const PREVIOUS: &str = "pre-commit.agentcom-previous";
/// The branch configuration key holding the scope.
const KEY: &str = "agentcomWritePaths";

/// The write scope of the woken task (`TASK_WRITE_PATHS`, one glob per line).
pub fn write_paths_from_env() -> Vec<String> {
    std::env::var("TASK_WRITE_PATHS")
        .map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Compiles `globs`; a glob the hub would refuse is refused here too.
fn compile(globs: &[String]) -> Result<Scope, GitFailure> {
    Scope::parse(globs).map_err(|e| {
        fail(
            "invalid_scope",
            json!({"detail": e.to_string(), "write_paths": globs}),
        )
    })
}

/// Keeps `globs` as `branch`'s scope and installs the hook; answers the hook's
/// path.
pub fn protect(repo: &Path, branch: &str, globs: &[String]) -> Result<PathBuf, GitFailure> {
    compile(globs)?;
    let key = format!("branch.{branch}.{KEY}");
    // Nothing to unset is not an error (exit code 5).
    let _ = git(repo, &["config", "--unset-all", &key]);
    for g in globs {
        git(repo, &["config", "--add", &key, g])?;
    }
    install_hook(repo)
}

/// The scope kept on `branch` (empty: none).
pub fn scope_of(repo: &Path, branch: &str) -> Vec<String> {
    git(
        repo,
        &["config", "--get-all", &format!("branch.{branch}.{KEY}")],
    )
    .map(|out| out.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

fn hooks_dir(repo: &Path) -> Result<PathBuf, GitFailure> {
    let configured = git(repo, &["config", "--get", "core.hooksPath"]).ok();
    let dir = match configured.filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(git(repo, &["rev-parse", "--git-path", "hooks"])?),
    };
    Ok(if dir.is_absolute() {
        dir
    } else {
        repo.join(dir)
    })
}

/// `'text'` for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn io_failure(action: &str, path: &Path, e: std::io::Error) -> GitFailure {
    fail(
        "hook_not_installed",
        json!({"detail": format!("cannot {action} {}: {e}", path.display())}),
    )
}

/// Writes the pre-commit hook (once; an earlier hook of someone else's is
/// moved aside and run after ours).
fn install_hook(repo: &Path) -> Result<PathBuf, GitFailure> {
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).map_err(|e| io_failure("create", &dir, e))?;
    let hook = dir.join("pre-commit");
    if let Ok(existing) = std::fs::read_to_string(&hook) {
        if !existing.contains(MARK) {
            let previous = dir.join(PREVIOUS);
            std::fs::rename(&hook, &previous).map_err(|e| io_failure("move", &hook, e))?;
        }
    }
    let exe = std::env::current_exe().map_err(|e| io_failure("find", Path::new("self"), e))?;
    let script = format!(
        "#!/bin/sh\n{MARK}: refuses commits outside the task's write_paths.\n\
         # `git commit --no-verify` skips it (the agent's explicit escape).\n\
         {exe} git --agent-id hook check-scope >/dev/null || exit 1\n\
         previous=\"$(dirname \"$0\")/{PREVIOUS}\"\n\
         if [ -x \"$previous\" ]; then exec \"$previous\" \"$@\"; fi\n\
         exit 0\n",
        exe = quoted(&exe.display().to_string()),
    );
    std::fs::write(&hook, script).map_err(|e| io_failure("write", &hook, e))?;
    make_executable(&hook)?;
    Ok(hook)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), GitFailure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_failure("chmod", path, e))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), GitFailure> {
    Ok(())
}

/// The files of `files` that `globs` does not cover.
fn outside(globs: &[String], files: &[String]) -> Result<Vec<String>, GitFailure> {
    let scope = compile(globs)?;
    Ok(files.iter().filter(|f| !scope.covers(f)).cloned().collect())
}

fn names(out: &str) -> Vec<String> {
    out.split('\0')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// `git check-scope` (the hook): refuses when a staged file is outside the
/// current branch's scope.
pub fn check_staged(repo: &Path) -> Result<Value, GitFailure> {
    let branch = git(repo, &["rev-parse", "--abbrev-ref", "HEAD"])?;
    let globs = scope_of(repo, &branch);
    if globs.is_empty() {
        return Ok(json!({"ok": true, "command": "check-scope", "scoped": false}));
    }
    let staged = names(&git(
        repo,
        &["diff", "--cached", "--name-only", "--no-renames", "-z"],
    )?);
    let out = outside(&globs, &staged)?;
    if out.is_empty() {
        return Ok(json!({
            "ok": true, "command": "check-scope", "scoped": true, "files": staged.len(),
        }));
    }
    eprintln!(
        "agentcom: commit refused: {} outside the task's write scope [{}]:\n{}\n\
         (the task may write only these paths; `git commit --no-verify` commits anyway, \
         and `git submit` will report the files)",
        if out.len() == 1 {
            "a file is"
        } else {
            "files are"
        },
        globs.join(", "),
        out.iter()
            .map(|f| format!("  {f}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    Err(fail(
        "out_of_scope",
        json!({"files": out, "write_paths": globs}),
    ))
}

/// The files the branch changes since `origin/main` that are outside its
/// scope (`None`: the branch has no scope).
pub fn changed_outside(repo: &Path, branch: &str) -> Option<Vec<String>> {
    let globs = scope_of(repo, branch);
    if globs.is_empty() {
        return None;
    }
    let changed = git(
        repo,
        &[
            "diff",
            "--name-only",
            "--no-renames",
            "-z",
            "origin/main...HEAD",
        ],
    )
    .map(|o| names(&o))
    .unwrap_or_default();
    // A scope that no longer compiles reports every change.
    Some(outside(&globs, &changed).unwrap_or(changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_a_scope_are_the_ones_its_globs_miss() {
        let globs = vec!["src/api/**".to_string(), "/Cargo.toml".to_string()];
        let files: Vec<String> = [
            "src/api/x.rs",
            "Cargo.toml",
            "src/main.rs",
            "api/Cargo.toml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            outside(&globs, &files).expect("valid"),
            ["src/main.rs", "api/Cargo.toml"]
        );
        assert!(outside(&["!x".to_string()], &files).is_err());
        assert_eq!(quoted("/a b/it's"), r"'/a b/it'\''s'");
    }
}
