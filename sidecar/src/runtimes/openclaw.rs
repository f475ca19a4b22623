//! `runtime = "openclaw"`: the wake is OpenClaw's hook, `POST
//! <openclaw_url>/hooks/agent` (bearer `openclaw_token`) with the task as the
//! agent's message, a session key per task, and where to write its files. The
//! agent runs detached: it shows life through the heartbeat file and finishes
//! with the result file, as any detached agent. A hook that does not answer
//! 2xx fails the wake (the sidecar retries it).

use serde_json::json;

use super::{env, AgentFiles};

/// Sends the hook; `Err` names why the wake failed.
pub fn wake(url: &str, token: Option<&str>) -> Result<(), String> {
    let files = AgentFiles::from_env()?;
    let task_id = files.task_id.clone();
    let mut message = format!(
        "AgentCom task {task_id}:\n\n{}\n",
        env("TASK_DESCRIPTION").unwrap_or_default()
    );
    if let Some(answer) = env("TASK_ANSWER") {
        message.push_str(&format!("\nThe operator answered: {answer}\n"));
    }
    if let Some(review) = env("TASK_REVIEW") {
        message.push_str(&format!("\nA reviewer sent the work back: {review}\n"));
    }
    message.push_str(&format!(
        "\nWhen you start, create the started file. While you work, touch the heartbeat file at least every few minutes. \
         When you are done, write the result file as JSON: {{\"status\":\"success\",\"summary\":\"...\"}} \
         (or \"failed\" with \"error\", or \"input_required\" with \"question\"). The task itself: {}.\n{}\n",
        env("TASK_JSON_FILE").unwrap_or_default(),
        files.describe()
    ));
    let body = json!({
        "message": message,
        "name": "AgentCom",
        "sessionKey": format!("agentcom:{task_id}"),
        "wakeMode": "now",
        "deliver": false,
    });
    let endpoint = format!("{url}/hooks/agent");
    match crate::http::request("POST", &endpoint, token, Some(&body)) {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, answer)) => Err(format!("{endpoint} answered {status}: {answer}")),
        Err(e) => Err(e.to_string()),
    }
}
