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

/// Most subscriptions the hub keeps.
pub const MAX_SUBSCRIPTIONS: usize = 1_000;
/// Most keys of a subscription's filter.
pub const MAX_FILTER_KEYS: usize = 20;

/// What a subscription does with each matching event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    /// Creates one task from the template (a task submission whose
    /// description and metadata strings may hold `{{payload.KEY}}`,
    /// `{{event.id}}`, `{{event.topic}}`).
    Task(Map<String, Value>),
    /// Sends the event as a message to this agent.
    Agent(String),
    /// Publishes the event on this channel.
    Channel(String),
}

/// A checked `POST /api/subscriptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubscription {
    pub topic: String,
    /// Top-level payload fields that must equal these values.
    pub filter: Map<String, Value>,
    pub action: SubscriptionAction,
}

const SUBSCRIPTION_FIELDS: &[Field] = &[
    req("topic", crate::schema::id(MAX_TOPIC)),
    opt("filter", Kind::Object),
    opt("task", Kind::Object),
    opt("deliver", Kind::Object),
];

/// Checks `{topic, filter?, task | deliver: {agent | channel}}`; a task
/// template is checked as a submission (`check_template` runs the task
/// parser on it).
pub fn parse_subscription(
    body: &Map<String, Value>,
    check_template: impl Fn(&Map<String, Value>) -> Vec<FieldError>,
) -> Result<NewSubscription, Vec<FieldError>> {
    let mut errors = check_fields(body, SUBSCRIPTION_FIELDS);
    if !errors.is_empty() {
        return Err(errors);
    }
    let topic = body
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Err(e) = check_topic(topic) {
        errors.push(e);
    }
    let filter = body
        .get("filter")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if filter.len() > MAX_FILTER_KEYS {
        errors.push(FieldError::new(
            "filter",
            "invalid_value",
            format!("at most {MAX_FILTER_KEYS} keys"),
        ));
    }
    let action = match (
        body.get("task").and_then(Value::as_object),
        body.get("deliver"),
    ) {
        (Some(t), None) => {
            errors.extend(check_template(t).into_iter().map(|e| FieldError {
                field: format!("task.{}", e.field),
                ..e
            }));
            Some(SubscriptionAction::Task(t.clone()))
        }
        (None, Some(Value::Object(d))) => {
            let agent = d.get("agent").and_then(Value::as_str);
            let channel = d.get("channel").and_then(Value::as_str);
            match (agent, channel, d.len()) {
                (Some(a), None, 1) if !a.is_empty() && a.len() <= 128 => {
                    Some(SubscriptionAction::Agent(a.to_string()))
                }
                (None, Some(c), 1) if !c.is_empty() && c.len() <= 128 => {
                    Some(SubscriptionAction::Channel(c.to_string()))
                }
                _ => {
                    errors.push(FieldError::new(
                        "deliver",
                        "invalid_value",
                        "expected {\"agent\": id} or {\"channel\": name}",
                    ));
                    None
                }
            }
        }
        _ => {
            errors.push(FieldError::new(
                "task",
                "required",
                "give task (a template) or deliver, not both",
            ));
            None
        }
    };
    match (errors.is_empty(), action) {
        (true, Some(action)) => Ok(NewSubscription {
            topic: topic.to_string(),
            filter,
            action,
        }),
        _ => Err(errors),
    }
}

/// Whether `payload` matches `filter` (every key equal at the top level).
pub fn filter_matches(filter: &Map<String, Value>, payload: &Value) -> bool {
    filter.iter().all(|(k, v)| payload.get(k) == Some(v))
}

/// The template with `{{payload.KEY}}`, `{{event.id}}` and `{{event.topic}}`
/// replaced in its description and in its metadata's string values; the
/// metadata also gets `event_id` and `subscription`.
pub fn render_template(
    template: &Map<String, Value>,
    event: &TopicEvent,
    subscription: &str,
) -> Map<String, Value> {
    let fill = |text: &str| -> String {
        let mut out = text
            .replace("{{event.id}}", &event.id)
            .replace("{{event.topic}}", &event.topic);
        while let Some(start) = out.find("{{payload.") {
            let Some(len) = out[start..].find("}}") else {
                break;
            };
            let key = &out[start + "{{payload.".len()..start + len];
            let value = match event.payload.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            out.replace_range(start..start + len + 2, &value);
        }
        out
    };
    let mut task = template.clone();
    if let Some(Value::String(d)) = task.get("description") {
        let filled = fill(d);
        task.insert("description".into(), Value::String(filled));
    }
    let mut metadata = task
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for v in metadata.values_mut() {
        if let Value::String(s) = v {
            *s = fill(s);
        }
    }
    metadata.insert("event_id".into(), Value::String(event.id.clone()));
    metadata.insert(
        "subscription".into(),
        Value::String(subscription.to_string()),
    );
    task.insert("metadata".into(), Value::Object(metadata));
    task
}

#[cfg(test)]
mod subscription_tests {
    use super::*;
    use serde_json::json;

    fn event(payload: Value) -> TopicEvent {
        TopicEvent {
            id: "evt-7".into(),
            seq: 7,
            topic: "pr_opened".into(),
            payload,
            publisher: "a".into(),
            published_at: 1,
            dedupe_key: None,
        }
    }

    #[test]
    fn subscriptions_are_checked_whole() {
        let ok = |v: Value| parse_subscription(v.as_object().expect("object"), |_| Vec::new());
        assert!(ok(json!({"topic": "pr_opened", "task": {"description": "review"}})).is_ok());
        assert_eq!(
            ok(json!({"topic": "t", "deliver": {"channel": "ops"}})).map(|s| s.action),
            Ok(SubscriptionAction::Channel("ops".into()))
        );
        for bad in [
            json!({"topic": "t"}),
            json!({"topic": "t", "task": {}, "deliver": {"agent": "a"}}),
            json!({"topic": "t", "deliver": {"agent": "a", "channel": "c"}}),
            json!({"topic": "a/b", "deliver": {"agent": "a"}}),
        ] {
            assert!(ok(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_fill_from_the_event() {
        let t = json!({"description": "Review PR {{payload.pr}} by {{payload.author}} ({{event.id}})",
                       "metadata": {"url": "{{payload.url}}", "n": 3}});
        let e = event(json!({"pr": 12, "author": "ann", "url": "https://x/12"}));
        let out = render_template(t.as_object().expect("object"), &e, "sub-1");
        assert_eq!(out["description"], "Review PR 12 by ann (evt-7)");
        assert_eq!(out["metadata"]["url"], "https://x/12");
        assert_eq!(out["metadata"]["n"], 3);
        assert_eq!(out["metadata"]["event_id"], "evt-7");
        assert!(filter_matches(
            json!({"author": "ann"}).as_object().expect("o"),
            &e.payload
        ));
        assert!(!filter_matches(
            json!({"author": "bob"}).as_object().expect("o"),
            &e.payload
        ));
    }
}
