//! A blocking client of a running hub's HTTP API, holding one bearer token: the
//! operator CLI and the MCP server speak to the hub through it.
//!
//! Architecture invariant: knows URLs, bearer tokens and status codes only;
//! nothing of the hub's insides (it is the hub as any remote client sees it).

use std::time::Duration;

use serde_json::Value;

/// What a running hub answered: its JSON body, or its refusal (status, body).
pub type HubAnswer = Result<Value, (u16, String)>;

/// Requests that answer at once give up after this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HubClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl HubClient {
    /// `base` is the hub's URL (`http://host:port`, a trailing `/` is ignored).
    pub fn new(base: &str, token: &str) -> HubClient {
        HubClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request. `Err` only when no answer came (the hub unreachable, the
    /// answer not JSON); a refusal is `Ok(Err((status, body)))`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<HubAnswer, String> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .request(method, &url)
            .timeout(timeout)
            .set("Authorization", &format!("Bearer {}", self.token));
        let response = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        match response {
            Ok(r) => r
                .into_json()
                .map(Ok)
                .map_err(|e| format!("unreadable answer from {url}: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                Ok(Err((code, r.into_string().unwrap_or_default())))
            }
            Err(e) => Err(format!("cannot reach the hub at {url}: {e}")),
        }
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
