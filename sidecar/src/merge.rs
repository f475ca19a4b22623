//! Merge on approval (ext, PROTOCOL.md 6.27): once a person approves a held
//! completion whose task asked for `merge_on_approval`, the sidecar merges
//! the result's pull request with `gh pr merge` (`gh_command`, method
//! `merge_method`). A merge that `gh` refuses (a conflict, a failing required
//! check) is reported with gh's words; the hub sends the task back to the
//! agent with them. A pull request already merged (a merge re-run after a
//! restart) counts as merged.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long one `gh` call may take.
const GH_TIMEOUT: Duration = Duration::from_secs(300);
/// Most characters of gh's output kept in a failure.
const MAX_ERROR: usize = 1_000;

/// What to merge, and how.
#[derive(Debug, Clone)]
pub struct MergeJob {
    pub gh: String,
    pub repo_dir: Option<PathBuf>,
    pub pr_url: String,
    pub method: String,
}

/// What the merge did: `Ok(())` merged, `Err(why)` not.
pub async fn merge(job: &MergeJob) -> Result<(), String> {
    let flag = format!("--{}", job.method);
    let first = run(job, &["pr", "merge", &job.pr_url, &flag]).await;
    let refused = match first {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    // Merged already (by us before a restart, or by a person)?
    match run(
        job,
        &[
            "pr",
            "view",
            &job.pr_url,
            "--json",
            "state",
            "--jq",
            ".state",
        ],
    )
    .await
    {
        Ok(state) if state.trim() == "MERGED" => Ok(()),
        _ => Err(refused),
    }
}

async fn run(job: &MergeJob, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(&job.gh);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GH_PROMPT_DISABLED", "1")
        .kill_on_drop(true);
    if let Some(dir) = &job.repo_dir {
        cmd.current_dir(dir);
    }
    let out = match tokio::time::timeout(GH_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(format!("{} timed out after {GH_TIMEOUT:?}", job.gh)),
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", job.gh)),
        Ok(Ok(out)) => out,
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        return Ok(text(&out.stdout));
    }
    let mut why = text(&out.stderr);
    if why.is_empty() {
        why = text(&out.stdout);
    }
    if why.is_empty() {
        why = format!("{} exited with {}", job.gh, out.status);
    }
    Err(why.chars().take(MAX_ERROR).collect())
}
