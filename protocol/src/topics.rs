//! Topic events (ext, PROTOCOL.md 6.30): what an agent (or the hub) tells
//! whoever cares, without naming them. An event is `{topic, payload,
//! dedupe_key?}`; the hub keeps it durably, in order per topic.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{check_fields, opt, req, Field, FieldError, Kind};

/// Longest topic name.
pub const MAX_TOPIC: usize = 128;
/// Largest payload (bytes of its JSON).
pub const MAX_EVENT_PAYLOAD: usize = 64 * 1024;
/// Longest dedupe key.
pub const MAX_EVENT_DEDUPE_KEY: usize = 256;
/// Most events one page returns.
pub const MAX_EVENT_PAGE: usize = 1000;

/// Fields of a publish (HTTP body; the WS frame adds `topic` and
/// `request_id`).
pub const PUBLISH_FIELDS: &[Field] = &[
    req("payload", Kind::Any),
    opt(
        "dedupe_key",
        Kind::Str {
            max: MAX_EVENT_DEDUPE_KEY,
            non_empty: true,
        },
    ),
];

/// A checked publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub topic: String,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
}

/// A topic name: 1 to [`MAX_TOPIC`] letters, digits and `. _ - :`
/// (`task.completed`, `deploy:web`).
pub fn check_topic(topic: &str) -> Result<(), FieldError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    match ok {
        true => Ok(()),
        false => Err(FieldError::new(
            "topic",
            "invalid_value",
            format!("1 to {MAX_TOPIC} letters, digits and . _ - :"),
        )),
    }
}

/// Checks a publish body for `topic`: the payload is any JSON up to
/// [`MAX_EVENT_PAYLOAD`] bytes.
pub fn parse_publish(topic: &str, body: &Map<String, Value>) -> Result<Publish, Vec<FieldError>> {
    let mut errors = check_fields(body, PUBLISH_FIELDS);
    if let Err(e) = check_topic(topic) {
        errors.push(e);
    }
    let payload = body.get("payload").cloned().unwrap_or(Value::Null);
    let size = serde_json::to_vec(&payload)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_EVENT_PAYLOAD {
        errors.push(FieldError::new(
            "payload",
            "too_large",
            format!("at most {MAX_EVENT_PAYLOAD} bytes of JSON"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Publish {
        topic: topic.to_string(),
        payload,
        dedupe_key: body
            .get("dedupe_key")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// A stored event as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicEvent {
    /// `evt-<seq>`.
    pub id: String,
    /// Rises with every event of the hub (so also within a topic).
    pub seq: u64,
    pub topic: String,
    pub payload: Value,
    /// The agent (or `hub`, `admin`) that published it.
    pub publisher: String,
    pub published_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topics_and_payloads_are_checked() {
        assert!(check_topic("task.completed").is_ok());
        assert!(check_topic("deploy:web-prod").is_ok());
        for bad in ["", "a/b", "a b", "é", &"t".repeat(129)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
        let ok = parse_publish(
            "pr_opened",
            json!({"payload": {"n": 1}, "dedupe_key": "pr-1"})
                .as_object()
                .expect("object"),
        )
        .expect("valid");
        assert_eq!(ok.dedupe_key.as_deref(), Some("pr-1"));
        let big = json!({"payload": "x".repeat(MAX_EVENT_PAYLOAD)});
        let errors = parse_publish("t", big.as_object().expect("object")).expect_err("too large");
        assert_eq!(errors[0].field, "payload");
        let missing = parse_publish("t", &Map::new()).expect_err("no payload");
        assert_eq!(missing[0].field, "payload");
    }
}
