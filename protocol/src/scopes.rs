//! Direct reservations of repository paths (ext, PROTOCOL.md 6.21): what the
//! `scope_reserve` / `scope_renew` / `scope_release` frames and the
//! `/api/reservations` routes carry, the two modes, and the limits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{check_fields, id, opt, req, str_list, Field, FieldError, Kind};
use crate::task_spec::MAX_REPO;

/// A reservation's lifetime when the request names none (ms): ten minutes.
pub const DEFAULT_RESERVATION_TTL_MS: u64 = 600_000;
/// Shortest `ttl_ms` accepted (ms).
pub const MIN_RESERVATION_TTL_MS: u64 = 1_000;
/// Longest `ttl_ms` accepted (ms): a day.
pub const MAX_RESERVATION_TTL_MS: u64 = 86_400_000;
/// Most live reservations one holder may have at once.
pub const MAX_RESERVATIONS_PER_HOLDER: usize = 64;

/// The fields of a reservation request (a `scope_reserve` frame also takes
/// `request_id`, an HTTP body also `holder`).
pub const RESERVE_FIELDS: &[Field] = &[
    req("repo", id(MAX_REPO)),
    req("paths", Kind::StrList),
    opt("mode", id(16)),
    opt("ttl_ms", Kind::UInt),
    opt("task_id", id(128)),
];

/// The fields of a renewal (the reservation is named by the frame or the route).
pub const RENEW_FIELDS: &[Field] = &[opt("ttl_ms", Kind::UInt)];

/// `exclusive` writes the paths (nobody else may write or read them); `shared`
/// reads them (others may read, nobody may write).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReserveMode {
    #[default]
    Exclusive,
    Shared,
}

impl ReserveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReserveMode::Exclusive => "exclusive",
            ReserveMode::Shared => "shared",
        }
    }
}

/// A checked reservation request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReserveRequest {
    pub repo: String,
    /// Gitignore-style globs relative to the repository root (compiled by the hub).
    pub paths: Vec<String>,
    pub mode: ReserveMode,
    pub ttl_ms: u64,
    /// The running task it belongs to: released with the task.
    pub task_id: Option<String>,
}

/// Checks `obj` against [`RESERVE_FIELDS`] and the rules the schema cannot say
/// (a known mode, a ttl in range, at least one path).
pub fn parse_reserve(obj: &Map<String, Value>) -> Result<ReserveRequest, Vec<FieldError>> {
    let mut errors = check_fields(obj, RESERVE_FIELDS);
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let checked = reserve_request(
        text("repo").unwrap_or_default(),
        str_list(obj, "paths"),
        text("mode").as_deref(),
        obj.get("ttl_ms").and_then(Value::as_u64),
        text("task_id"),
    );
    match checked {
        Ok(request) if errors.is_empty() => Ok(request),
        Ok(_) => Err(errors),
        Err(more) => {
            // One error per field: the schema's first.
            let more: Vec<FieldError> = more
                .into_iter()
                .filter(|e| !errors.iter().any(|x| x.field == e.field))
                .collect();
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The rules of a reservation request whose fields have their types (a
/// `scope_reserve` frame, or a checked body): a known mode, a ttl in range, at
/// least one path.
pub fn reserve_request(
    repo: String,
    paths: Vec<String>,
    mode: Option<&str>,
    ttl_ms: Option<u64>,
    task_id: Option<String>,
) -> Result<ReserveRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mode = match mode {
        None | Some("exclusive") => ReserveMode::Exclusive,
        Some("shared") => ReserveMode::Shared,
        Some(_) => {
            errors.push(FieldError::new(
                "mode",
                "invalid_value",
                "expected exclusive or shared",
            ));
            ReserveMode::Exclusive
        }
    };
    let ttl_ms = match renew_ttl(ttl_ms) {
        Ok(t) => t,
        Err(e) => {
            errors.extend(e);
            DEFAULT_RESERVATION_TTL_MS
        }
    };
    if paths.is_empty() {
        errors.push(FieldError::new(
            "paths",
            "invalid_value",
            "name at least one path or glob",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ReserveRequest {
        repo,
        paths,
        mode,
        ttl_ms,
        task_id,
    })
}

/// The `ttl_ms` of a renewal.
pub fn parse_renew(obj: &Map<String, Value>) -> Result<u64, Vec<FieldError>> {
    let errors = check_fields(obj, RENEW_FIELDS);
    if !errors.is_empty() {
        return Err(errors);
    }
    renew_ttl(obj.get("ttl_ms").and_then(Value::as_u64))
}

/// A reservation's lifetime: `ttl_ms` in range, or the default when absent.
pub fn renew_ttl(ttl_ms: Option<u64>) -> Result<u64, Vec<FieldError>> {
    match ttl_ms {
        None => Ok(DEFAULT_RESERVATION_TTL_MS),
        Some(t) if (MIN_RESERVATION_TTL_MS..=MAX_RESERVATION_TTL_MS).contains(&t) => Ok(t),
        Some(_) => Err(vec![FieldError::new(
            "ttl_ms",
            "invalid_value",
            format!("must be between {MIN_RESERVATION_TTL_MS} and {MAX_RESERVATION_TTL_MS}"),
        )]),
    }
}

/// A live reservation, as answered and listed (also a running task's claim in
/// listings: `kind` `task`, no expiry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reservation {
    pub reservation_id: String,
    pub repo: String,
    pub paths: Vec<String>,
    pub mode: ReserveMode,
    /// The agent holding it (`admin` for an operator's).
    pub holder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub granted_at: i64,
    pub expires_at: i64,
}

/// Who holds what a refused request overlaps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScopeHolderInfo {
    pub agent_id: String,
    /// Set when the holder is a running task (its claim, or a reservation made
    /// for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Set when the holder is a direct reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    pub repo: String,
    /// The holder's globs (writes, then reads).
    pub paths: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_request_gets_defaults_and_every_bad_field_is_named() {
        let r = parse_reserve(&obj(json!({"repo": "web", "paths": ["src/**"]})));
        assert_eq!(
            r,
            Ok(ReserveRequest {
                repo: "web".into(),
                paths: vec!["src/**".into()],
                mode: ReserveMode::Exclusive,
                ttl_ms: DEFAULT_RESERVATION_TTL_MS,
                task_id: None,
            })
        );
        let errors = parse_reserve(&obj(json!({"paths": [], "mode": "loud", "ttl_ms": 5})))
            .expect_err("bad");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["repo", "mode", "ttl_ms", "paths"], "{errors:?}");
        assert_eq!(parse_renew(&obj(json!({"ttl_ms": 2_000}))), Ok(2_000));
        assert!(parse_renew(&obj(json!({"ttl_ms": "soon"}))).is_err());
    }
}
