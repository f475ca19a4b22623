//! HTTP transport (ureq): one request as `(status, json body)`, failing loudly
//! (`http`) or reporting transport errors (`try_http`).

use std::time::Duration;

use serde_json::Value;

use crate::support::HTTP_TIMEOUT;

pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str),
}

/// One HTTP request. 4xx/5xx are returned, not raised: `(status, json body)`. A body
/// that is not JSON comes back as a JSON string.
pub fn http(method: &str, url: &str, token: Option<&str>, body: Body) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Body::None => req.call(),
        Body::Json(v) => req.send_json(v),
        Body::Raw(s) => req.set("Content-Type", "application/json").send_string(s),
    };
    match result {
        Ok(resp) => (resp.status(), body_json(resp)),
        Err(ureq::Error::Status(code, resp)) => (code, body_json(resp)),
        Err(e) => panic!("{method} {url}: transport error: {e}"),
    }
}

fn body_json(resp: ureq::Response) -> Value {
    let text = resp.into_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// One HTTP request that reports transport failures instead of panicking:
/// `Ok((status, json body))`, or `Err` when no answer came (refused, reset,
/// timed out).
pub fn try_http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(v) => req.send_json(v),
        None => req.call(),
    };
    match result {
        Ok(resp) => Ok((resp.status(), body_json(resp))),
        Err(ureq::Error::Status(code, resp)) => Ok((code, body_json(resp))),
        Err(e) => Err(e.to_string()),
    }
}
