//! `runtime = "claude-code"`: the wake runs `agentcom-sidecar claude-run`,
//! which runs `claude -p --output-format stream-json --verbose` (plus
//! `claude_args`) in `repo_dir` with the task's prompt on stdin, and turns the
//! stream into the agent's files:
//!
//! - every line: the heartbeat; assistant turns: progress (what it does, and
//!   the tokens so far);
//! - the final `result`: `success` (summary, tokens, cost), `usage_limited`
//!   (Claude's usage limit, with its reset time), `input_required` (a tool use
//!   the permission mode refused: the operator allows or denies it), `failed`.
//!
//! Woken again (an answer, a rejection, a failed merge), it resumes the same
//! Claude session (`--resume`), allowing the tool when the answer was
//! `allow`. The session is kept in `results/<id>.claude.json`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use super::{env, write_file, AgentFiles};

/// Longest summary passed on (characters).
const MAX_SUMMARY: usize = 4_000;
/// A usage limit without a reset time: try again in an hour.
const DEFAULT_RESET_MS: u64 = 3_600_000;

/// What the run keeps between wakes of one task.
#[derive(Debug, Default)]
struct Session {
    id: Option<String>,
    /// The tool the last run was refused, waiting for the operator.
    pending_tool: Option<String>,
}

impl Session {
    fn load(path: &Path) -> Session {
        let v: Value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        Session {
            id: v["session_id"].as_str().map(str::to_string),
            pending_tool: v["pending_tool"].as_str().map(str::to_string),
        }
    }

    fn save(&self, path: &Path) {
        let v = json!({"session_id": self.id, "pending_tool": self.pending_tool});
        write_file(path, &v.to_string());
    }
}

/// What the stream said.
#[derive(Debug, Default)]
struct Stream {
    session_id: Option<String>,
    tokens: u64,
    result: Option<Value>,
}

/// Runs one wake of the task (see the module documentation); the outcome is
/// in the result file, so this fails only when it cannot even start.
pub fn run(command: &str, args: &[String], repo_dir: Option<&Path>) -> Result<(), String> {
    let files = AgentFiles::from_env()?;
    files.started();
    let session_path = files
        .results_dir
        .join(format!("{}.claude.json", files.task_id));
    let mut session = Session::load(&session_path);
    let (prompt, allow) = prompt_for(&session);
    let mut cmd = Command::new(command);
    cmd.args(["-p", "--output-format", "stream-json", "--verbose"])
        .args(args);
    if let (Some(id), true) = (&session.id, env("TASK_ANSWER").is_some()) {
        cmd.args(["--resume", id]);
    }
    if let Some(tool) = &allow {
        cmd.args(["--allowedTools", tool]);
    }
    if let Some(dir) = repo_dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A claude that exits early closes its stdin: nothing to do about it.
        let _ = stdin.write_all(prompt.as_bytes());
    }
    let mut stream = Stream::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            files.heartbeat();
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                on_line(&v, &mut stream, &files);
            }
        }
    }
    let stderr = child
        .stderr
        .take()
        .map(|e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(e), &mut s);
            s
        })
        .unwrap_or_default();
    let status = child.wait().map_err(|e| e.to_string())?;
    if stream.session_id.is_some() {
        session.id = stream.session_id.clone();
    }
    let result = outcome(&stream, &mut session, status.code(), &stderr);
    session.save(&session_path);
    files.result(&result);
    Ok(())
}

/// The prompt, and the tool to allow: the task's description the first
/// time; after an answer, what the operator said.
fn prompt_for(session: &Session) -> (String, Option<String>) {
    let description = env("TASK_DESCRIPTION").unwrap_or_default();
    let review = env("TASK_REVIEW");
    match (env("TASK_ANSWER").as_deref(), &session.pending_tool) {
        (Some("allow"), Some(tool)) => (
            format!("The operator allowed {tool}. Go on with the task."),
            Some(tool.clone()),
        ),
        (Some("deny"), Some(tool)) => (
            format!(
                "The operator did not allow {tool}. Go on without it, or finish and say what is missing."
            ),
            None,
        ),
        (Some(answer), _) => match review {
            Some(note) => (
                format!(
                    "A reviewer sent your work back ({answer}): {note}\nFix it on the same branch and submit again."
                ),
                None,
            ),
            None => (format!("The operator answered: {answer}\nGo on with the task."), None),
        },
        (None, _) => {
            let mut prompt = with_inputs(description, env("TASK_JSON").as_deref());
            if let Some(dir) = env("TASK_CONTEXT_DIR") {
                prompt.push_str(&format!(
                    "\n\nThe shared context this task names is in the files of {dir}."
                ));
            }
            (prompt, None)
        }
    }
}

/// The first prompt: the description, then the results of the tasks this one
/// names in `inputs_from` (the assignment's `inputs`), when there are any.
fn with_inputs(description: String, task_json: Option<&str>) -> String {
    let inputs = task_json
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|t| t.get("inputs").cloned())
        .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()));
    match inputs {
        None => description,
        Some(inputs) => format!(
            "{description}\n\nResults of the tasks this one builds on (JSON; a result_ref is read with GET $AGENTCOM_HUB_API_URL<result_ref>):\n{inputs}"
        ),
    }
}

fn on_line(v: &Value, stream: &mut Stream, files: &AgentFiles) {
    if let Some(id) = v["session_id"].as_str() {
        stream.session_id = Some(id.to_string());
    }
    match v["type"].as_str() {
        Some("assistant") => {
            let usage = &v["message"]["usage"];
            stream.tokens += usage["input_tokens"].as_u64().unwrap_or(0)
                + usage["output_tokens"].as_u64().unwrap_or(0);
            let doing = v["message"]["content"].as_array().and_then(|parts| {
                parts.iter().find_map(|p| match p["type"].as_str() {
                    Some("tool_use") => {
                        Some(format!("using {}", p["name"].as_str().unwrap_or("a tool")))
                    }
                    Some("text") => p["text"].as_str().map(|t| t.chars().take(200).collect()),
                    _ => None,
                })
            });
            let mut progress = json!({"tokens_used": stream.tokens});
            if let Some(d) = doing {
                progress["message"] = json!(d);
            }
            files.progress(&progress);
        }
        Some("result") => stream.result = Some(v.clone()),
        _ => {}
    }
}

/// The result file of the run.
fn outcome(stream: &Stream, session: &mut Session, code: Option<i32>, stderr: &str) -> Value {
    let Some(r) = &stream.result else {
        let tail: String = stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return json!({"status": "failed", "reason": "claude_failed",
                      "error": format!("claude ended without a result (exit code {code:?}): {tail}")});
    };
    let tokens = r["usage"]["input_tokens"].as_u64().unwrap_or(0)
        + r["usage"]["output_tokens"].as_u64().unwrap_or(0);
    let tokens = tokens.max(stream.tokens);
    let cost = r["total_cost_usd"].as_f64().unwrap_or(0.0);
    let text = r["result"].as_str().unwrap_or_default();
    let mut out = Map::new();
    out.insert("tokens_used".into(), json!(tokens));
    out.insert("cost_usd".into(), json!(cost));
    if let Some(id) = &session.id {
        out.insert("session_id".into(), json!(id));
    }
    if let Some(reset) = usage_limit(text) {
        session.pending_tool = None;
        out.insert("status".into(), json!("usage_limited"));
        out.insert("resets_at".into(), json!(reset));
        out.insert("reason".into(), json!("Claude usage limit reached"));
        return Value::Object(out);
    }
    let denied = r["permission_denials"]
        .as_array()
        .and_then(|d| d.first())
        .cloned();
    if let Some(d) = denied {
        let tool = d["tool_name"].as_str().unwrap_or("a tool").to_string();
        let input: String = d["tool_input"].to_string().chars().take(300).collect();
        session.pending_tool = Some(tool.clone());
        out.insert("status".into(), json!("input_required"));
        out.insert(
            "question".into(),
            json!(format!("Claude asks to use {tool}: {input}. Allow it?")),
        );
        out.insert("options".into(), json!(["allow", "deny"]));
        return Value::Object(out);
    }
    session.pending_tool = None;
    if r["is_error"].as_bool() == Some(true) {
        out.insert("status".into(), json!("failed"));
        out.insert("reason".into(), json!("claude_error"));
        let why = if text.is_empty() {
            r["subtype"].as_str().unwrap_or("error").to_string()
        } else {
            text.chars().take(MAX_SUMMARY).collect()
        };
        out.insert("error".into(), json!(why));
        return Value::Object(out);
    }
    out.insert("status".into(), json!("success"));
    out.insert(
        "summary".into(),
        json!(text.chars().take(MAX_SUMMARY).collect::<String>()),
    );
    if let Some(turns) = r["num_turns"].as_u64() {
        out.insert("num_turns".into(), json!(turns));
    }
    Value::Object(out)
}

/// Claude's usage-limit message, `Claude AI usage limit reached|<epoch s>`:
/// its reset time (ms).
fn usage_limit(text: &str) -> Option<u64> {
    if !text.to_ascii_lowercase().contains("usage limit reached") {
        return None;
    }
    let reset = text
        .rsplit_once('|')
        .and_then(|(_, t)| t.trim().parse::<u64>().ok())
        .map(|s| if s < 100_000_000_000 { s * 1000 } else { s });
    Some(reset.unwrap_or_else(|| crate::state::now_ms() + DEFAULT_RESET_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_prompt_carries_the_inputs() {
        let plain = with_inputs("Write it up".into(), Some(r#"{"task_id": "t"}"#));
        assert_eq!(plain, "Write it up");
        let json = r#"{"task_id": "t", "inputs": {"a": {"result": {"summary": "3 sources"}}}}"#;
        let with = with_inputs("Write it up".into(), Some(json));
        assert!(
            with.starts_with("Write it up\n\nResults of the tasks"),
            "{with}"
        );
        assert!(with.contains("3 sources"), "{with}");
        assert_eq!(with_inputs("x".into(), None), "x");
    }

    #[test]
    fn usage_limit_messages_carry_their_reset() {
        assert_eq!(
            usage_limit("Claude AI usage limit reached|1767225600"),
            Some(1_767_225_600_000)
        );
        assert!(usage_limit("all done").is_none());
        assert!(usage_limit("Claude AI usage limit reached").is_some());
    }

    #[test]
    fn a_refused_tool_becomes_a_question() {
        let stream = Stream {
            session_id: Some("s1".into()),
            tokens: 10,
            result: Some(
                json!({"type": "result", "is_error": false, "result": "I need Bash",
                                "permission_denials": [{"tool_name": "Bash",
                                                        "tool_input": {"command": "rm -rf build"}}]}),
            ),
        };
        let mut session = Session {
            id: Some("s1".into()),
            pending_tool: None,
        };
        let out = outcome(&stream, &mut session, Some(0), "");
        assert_eq!(out["status"], "input_required");
        assert_eq!(out["options"], json!(["allow", "deny"]));
        assert_eq!(session.pending_tool.as_deref(), Some("Bash"));
    }
}
