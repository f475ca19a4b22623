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

/// The hub that answered last, as an index into the hub URLs (one sidecar
/// process serves one config).
static ACTIVE_HUB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// With several hubs, how long a request waits for one of them to lead.
const FAILOVER_WAIT: Duration = Duration::from_secs(15);

/// `method` `path` on the active hub of `bases` (ext, #22): it keeps to the
/// hub that answered last and moves on when one answers `standby` or cannot
/// be reached (a write only when it was surely not sent); while every hub is
/// a standby or gone, it tries again for a while.
pub fn to_hub(
    bases: &[String],
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), Unreachable> {
    use std::sync::atomic::Ordering;
    let n = bases.len().max(1);
    let deadline = std::time::Instant::now() + FAILOVER_WAIT;
    loop {
        let start = ACTIVE_HUB.load(Ordering::Relaxed);
        let mut last = Unreachable(format!("{method} {path}: no hub URL"));
        for step in 0..bases.len() {
            let i = (start + step) % n;
            let url = format!("{}{path}", bases[i]);
            let mut req = agent().request(method, &url);
            if let Some(t) = token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let result = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            let answer = match result {
                Ok(resp) => (resp.status(), body_json(resp)),
                Err(ureq::Error::Status(code, resp)) => (code, body_json(resp)),
                Err(e) => {
                    let unsent = matches!(
                        e.kind(),
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                    );
                    last = Unreachable(format!("{method} {url}: {e}"));
                    if unsent || method.eq_ignore_ascii_case("GET") {
                        continue;
                    }
                    return Err(last);
                }
            };
            if bases.len() > 1 && agentcom_protocol::is_standby_refusal(answer.0, &answer.1) {
                last = Unreachable(format!("{url}: a standby hub"));
                continue;
            }
            ACTIVE_HUB.store(i, Ordering::Relaxed);
            return Ok(answer);
        }
        if bases.len() <= 1 || std::time::Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
