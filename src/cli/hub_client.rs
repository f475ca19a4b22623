//! A blocking client of a running hub's HTTP API, holding one bearer token: the
//! operator CLI and the MCP server speak to the hub through it.
//!
//! With several hub URLs (ext, #22: hubs on one Postgres, one active) it keeps
//! to the one that last answered and moves on when that one answers
//! `standby` or cannot be reached; while every hub is a standby or gone (a
//! failover under way) it tries again for a while.
//!
//! Architecture invariant: knows URLs, bearer tokens and status codes only;
//! nothing of the hub's insides (it is the hub as any remote client sees it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use agentcom_hub::protocol::{is_standby_refusal, split_hub_urls};

/// What a running hub answered: its JSON body, or its refusal (status, body).
pub type HubAnswer = Result<Value, (u16, String)>;

/// Requests that answer at once give up after this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// With several hubs, how long a request waits for one of them to lead.
const FAILOVER_WAIT: Duration = Duration::from_secs(15);
const FAILOVER_PAUSE: Duration = Duration::from_millis(250);

pub struct HubClient {
    bases: Vec<String>,
    /// Index into `bases` of the hub that answered last.
    active: AtomicUsize,
    token: String,
    agent: ureq::Agent,
}

/// One try at one hub.
enum Try {
    Answer(HubAnswer),
    /// Refused by a standby, or not delivered: another hub may take it.
    Elsewhere(String),
    /// No answer, and the request may have reached the hub.
    Lost(String),
}

impl HubClient {
    /// `hubs`: one hub URL (`http://host:port`, a trailing `/` is ignored) or
    /// several, comma-separated.
    pub fn new(hubs: &str, token: &str) -> HubClient {
        let mut bases = split_hub_urls(hubs);
        if bases.is_empty() {
            bases.push(hubs.trim().to_string());
        }
        HubClient {
            bases,
            active: AtomicUsize::new(0),
            token: token.to_string(),
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    /// The hub in use.
    pub fn base(&self) -> &str {
        let i = self.active.load(Ordering::Relaxed) % self.bases.len();
        &self.bases[i]
    }

    /// Every hub URL it was given.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// One request. `Err` only when no answer came (no hub reachable, the
    /// answer not JSON); a refusal is `Ok(Err((status, body)))`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<HubAnswer, String> {
        let n = self.bases.len();
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            let start = self.active.load(Ordering::Relaxed);
            let mut why = String::new();
            for step in 0..n {
                let i = (start + step) % n;
                match self.try_one(&self.bases[i], method, path, body, timeout) {
                    Try::Answer(a) => {
                        self.active.store(i, Ordering::Relaxed);
                        return Ok(a);
                    }
                    Try::Lost(e) => return Err(e),
                    Try::Elsewhere(e) => why = e,
                }
            }
            // One hub: its answer as it came (no failover to wait for).
            if n == 1 || Instant::now() >= deadline {
                return Err(why);
            }
            std::thread::sleep(FAILOVER_PAUSE);
        }
    }

    fn try_one(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Try {
        let url = format!("{base}{path}");
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
            Ok(r) => match r.into_json() {
                Ok(v) => Try::Answer(Ok(v)),
                Err(e) => Try::Lost(format!("unreadable answer from {url}: {e}")),
            },
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if self.bases.len() > 1 && is_standby_refusal(code, &json) {
                    return Try::Elsewhere(format!(
                        "the hub at {base} is a standby (leader: {})",
                        json["leader"].as_str().unwrap_or("unknown")
                    ));
                }
                Try::Answer(Err((code, text)))
            }
            Err(e) => {
                let message = format!("cannot reach the hub at {url}: {e}");
                // Not connected: nothing was sent. A read (GET) may be asked
                // again anywhere; a write that may have arrived is not resent.
                let unsent = matches!(
                    e.kind(),
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                );
                if unsent || method.eq_ignore_ascii_case("GET") {
                    Try::Elsewhere(message)
                } else {
                    Try::Lost(format!(
                        "{message} (the request may or may not have been applied: check before repeating it)"
                    ))
                }
            }
        }
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
