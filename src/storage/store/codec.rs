//! Records and keys as the store writes them: a format byte and
//! MessagePack (format 1, JSON, still read), big-endian sequence keys, and
//! keys scoped by a length-prefixed name.
//!
//! Architecture invariant: bytes only; no tree, no lock, no I/O.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// Leading byte of every stored value; bump it when a record's format changes.
/// Format 1: JSON (stores written before the compact format; still read).
pub(crate) const FORMAT_JSON: u8 = 1;
/// Format 2: MessagePack with field names (compact, and a field added later
/// still reads as its default).
pub(crate) const FORMAT_MSGPACK: u8 = 2;

/// Encodes a record: format byte, then MessagePack with field names.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_MSGPACK);
    // Serializing our own plain structs to a Vec cannot fail.
    let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
    if let Err(e) = value.serialize(&mut ser) {
        tracing::error!(error = %e, "a record could not be encoded");
    }
    out
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_MSGPACK, body)) => {
            rmp_serde::from_slice(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((&FORMAT_JSON, body)) => {
            serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((other, _)) => Err(corrupt(format!("unknown format byte {other}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// Big-endian key for ordered scans.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Prefix of every key scoped to `scope` (length-prefixed, so no scope is a prefix
/// of another's keys).
pub(crate) fn scope_prefix(scope: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + scope.len() + 8);
    key.extend_from_slice(&(scope.len() as u32).to_be_bytes());
    key.extend_from_slice(scope.as_bytes());
    key
}

/// Key of entry `seq` within `scope`; ordered by sequence inside the scope.
pub(crate) fn scoped_key(scope: &str, seq: u64) -> Vec<u8> {
    let mut key = scope_prefix(scope);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The (scope, seq) of a key written by [`scoped_key`].
pub(crate) fn split_scoped_key(key: &[u8]) -> Option<(String, u64)> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let scope = key.get(4..4 + len)?;
    let seq = key_seq(key.get(4 + len..)?)?;
    Some((String::from_utf8_lossy(scope).into_owned(), seq))
}

/// Reads a big-endian u64 key back.
pub(crate) fn key_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption_is_reported() {
        let v = serde_json::json!({"a": 1});
        let bytes = encode(&v);
        let back: serde_json::Value = decode("t", b"k", &bytes).expect("decodes");
        assert_eq!(back, v);
        let e = decode::<serde_json::Value>("t", b"k", &[9, b'{']).unwrap_err();
        assert!(e.to_string().contains("format byte 9"));
    }

    #[test]
    fn scoped_keys_do_not_collide_and_round_trip() {
        assert!(!scoped_key("a", 1).starts_with(&scope_prefix("ab")));
        assert!(!scoped_key("ab", 1).starts_with(&scope_prefix("a")));
        assert!(scoped_key("a", 1) < scoped_key("a", 2));
        assert_eq!(
            split_scoped_key(&scoped_key("x\u{0}y", 7)),
            Some(("x\u{0}y".into(), 7))
        );
        assert_eq!(split_scoped_key(b"\x00"), None);
    }

    #[test]
    fn a_record_of_format_1_still_decodes() {
        let mut old = vec![FORMAT_JSON];
        old.extend(br#"{"a":1}"#);
        let back: serde_json::Value = decode("t", b"k", &old).expect("decodes");
        assert_eq!(back, serde_json::json!({"a": 1}));
        assert_eq!(encode(&back)[0], FORMAT_MSGPACK);
    }
}
