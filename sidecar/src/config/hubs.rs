//! Which hubs the sidecar talks to: `hub_url` (one) or `hub_urls` (several
//! on one database, ext #22), with their HTTP API URLs, and the derivations
//! between a hub's WebSocket and API URLs.

use agentcom_protocol::MAX_HUB_URLS;

use super::{ConfigError, Fields};

/// `(hub_urls, hub_api_urls)`: the WebSocket URLs and, in the same order,
/// the API URLs (given, else derived).
pub(super) fn hub_lists(f: &Fields<'_>) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let hub_urls = match (f.opt_str("hub_url", 2048)?, f.opt_str_list("hub_urls")?) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "hub_urls",
                "give hub_url (one hub) or hub_urls (several), not both",
            ))
        }
        (Some(one), None) => vec![one],
        (None, Some(list)) if !list.is_empty() && list.len() <= MAX_HUB_URLS => list,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "hub_urls",
                format!("expected 1 to {MAX_HUB_URLS} URLs"),
            ))
        }
        (None, None) => return Err(ConfigError::new("hub_url", "is required")),
    };
    let key = if hub_urls.len() > 1 {
        "hub_urls"
    } else {
        "hub_url"
    };
    for url in &hub_urls {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ConfigError::new(
                key,
                "must be a ws:// or wss:// URL, e.g. ws://hub:4000/ws",
            ));
        }
    }
    let check_api = |key: &str, u: String| {
        if u.starts_with("http://") || u.starts_with("https://") {
            Ok(u.trim_end_matches('/').to_string())
        } else {
            Err(ConfigError::new(key, "must be an http:// or https:// URL"))
        }
    };
    let hub_api_urls = match (
        f.opt_str("hub_api_url", 2048)?,
        f.opt_str_list("hub_api_urls")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "hub_api_urls",
                "give hub_api_url or hub_api_urls, not both",
            ))
        }
        (Some(one), None) if hub_urls.len() == 1 => vec![check_api("hub_api_url", one)?],
        (Some(_), None) => {
            return Err(ConfigError::new(
                "hub_api_url",
                "with several hub_urls, give hub_api_urls (one per hub) or leave it out",
            ))
        }
        (None, Some(list)) if list.len() == hub_urls.len() => list
            .into_iter()
            .map(|u| check_api("hub_api_urls", u))
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "hub_api_urls",
                "expected one URL for each of hub_urls, in the same order",
            ))
        }
        (None, None) => hub_urls.iter().map(|u| api_url_from_ws(u)).collect(),
    };
    Ok((hub_urls, hub_api_urls))
}

/// `ws://host:4000/ws` → `http://host:4000`.
pub fn api_url_from_ws(ws: &str) -> String {
    let (scheme, rest) = if let Some(r) = ws.strip_prefix("wss://") {
        ("https://", r)
    } else if let Some(r) = ws.strip_prefix("ws://") {
        ("http://", r)
    } else {
        ("http://", ws)
    };
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}{host}")
}

/// `http://host:4000[/]` → `ws://host:4000/ws`.
pub fn ws_url_from_api(api: &str) -> String {
    let (scheme, rest) = if let Some(r) = api.strip_prefix("https://") {
        ("wss://", r)
    } else if let Some(r) = api.strip_prefix("http://") {
        ("ws://", r)
    } else {
        ("ws://", api)
    };
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}{host}/ws")
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn several_hubs_each_with_its_api_url() {
        let head = "agent_id = \"a\"\ntoken = \"t\"\n";
        let c = parse(&format!(
            "{head}hub_urls = [\"ws://a:1/ws\", \"wss://b/ws\"]\n"
        ))
        .expect("valid");
        assert_eq!(c.hub_urls, vec!["ws://a:1/ws", "wss://b/ws"]);
        assert_eq!(c.hub_api_urls, vec!["http://a:1", "https://b"]);
        assert_eq!(c.hub_api_url, "http://a:1");
        for (bad, field) in [
            (
                "hub_url = \"ws://a/ws\"\nhub_urls = [\"ws://b/ws\"]",
                "hub_urls",
            ),
            (
                "hub_urls = [\"ws://a/ws\", \"ws://b/ws\"]\nhub_api_urls = [\"http://a\"]",
                "hub_api_urls",
            ),
            (
                "hub_urls = [\"ws://a/ws\", \"ws://b/ws\"]\nhub_api_url = \"http://a\"",
                "hub_api_url",
            ),
            ("hub_urls = [\"ws://a/ws\", \"http://b\"]", "hub_urls"),
            ("hub_urls = []", "hub_urls"),
        ] {
            let e = parse(&format!("{head}{bad}\n")).unwrap_err();
            assert_eq!(e.field, field, "{bad}");
        }
    }

    #[test]
    fn url_derivations() {
        assert_eq!(api_url_from_ws("wss://h:1/ws"), "https://h:1");
        assert_eq!(ws_url_from_api("http://h:1/"), "ws://h:1/ws");
    }
}
