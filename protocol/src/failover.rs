//! Several hubs on one database (ext, #22): what a client with several hub
//! URLs (`hub_urls`) needs to know to move to the active one.

use serde_json::Value;

/// The most hub URLs a client takes.
pub const MAX_HUB_URLS: usize = 16;

/// A standby's refusal: 503 with `error` (or `role`) `"standby"`. Nothing was
/// done; the same request may go to another hub.
pub fn is_standby_refusal(status: u16, body: &Value) -> bool {
    status == 503 && (body["error"] == "standby" || body["role"] == "standby")
}

/// `"http://a:4000, http://b:4000"` → each URL, trimmed, without a trailing
/// `/`, empty entries left out, duplicates kept once (first place wins).
pub fn split_hub_urls(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in text.split(',') {
        let url = part.trim().trim_end_matches('/');
        if !url.is_empty() && !out.iter().any(|u| u == url) {
            out.push(url.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_standby_is_told_apart_from_other_refusals() {
        assert!(is_standby_refusal(503, &json!({"error": "standby"})));
        assert!(is_standby_refusal(503, &json!({"role": "standby"})));
        assert!(!is_standby_refusal(503, &json!({"error": "overloaded"})));
        assert!(!is_standby_refusal(409, &json!({"error": "standby"})));
        assert!(!is_standby_refusal(503, &Value::String("standby".into())));
    }

    #[test]
    fn hub_url_lists_are_split_trimmed_and_deduplicated() {
        assert_eq!(
            split_hub_urls(" http://a:1/ ,http://b:2,,http://a:1"),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(split_hub_urls(" , ").is_empty());
    }
}
