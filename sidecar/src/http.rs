//! Blocking HTTP to the hub's API (ureq), for the command-line subcommands.
//! Never used from async code.

use std::time::Duration;

use serde_json::Value;

/// A request that did not produce an HTTP response.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
}

/// `(status, body)`; a body that is not JSON comes back as a JSON string.
pub fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), Unreachable> {
    let mut req = agent().request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match result {
        Ok(resp) => Ok((resp.status(), body_json(resp))),
        Err(ureq::Error::Status(code, resp)) => Ok((code, body_json(resp))),
        Err(e) => Err(Unreachable(format!("{method} {url}: {e}"))),
    }
}

fn body_json(resp: ureq::Response) -> Value {
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
