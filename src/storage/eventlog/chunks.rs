//! How events are kept in the `events` tree: in chunks. One sled record holds the
//! events appended in one commit window (at most `CHUNK_EVENTS` of them, or about
//! `CHUNK_BYTES`), keyed by the sequence of its first event. A new key costs sled
//! a B-tree insert several times dearer than an overwrite; one per window instead
//! of one per event is most of what the log used to cost.
//!
//! A chunk value: format byte `CHUNK`, then per event a u32 (big-endian) length
//! and the event encoded with the store's record encoding. A record of the
//! previous format (a single event, format byte 1) reads as a chunk of one.

use crate::error::StoreError;
use crate::storage::store::{decode, encode, key_seq, seq_key, Store, FORMAT_JSON};

use super::EventRecord;

/// The format byte of a chunk.
const CHUNK: u8 = 3;
/// A chunk is closed at this many events...
pub(super) const CHUNK_EVENTS: usize = 256;
/// ...or once it holds this many bytes (well below sled's blob threshold).
pub(super) const CHUNK_BYTES: usize = 32 * 1024;

/// The chunk being filled.
#[derive(Default)]
pub(super) struct OpenChunk {
    first: u64,
    count: usize,
    bytes: Vec<u8>,
}

impl OpenChunk {
    pub(super) fn push(&mut self, record: &EventRecord) {
        self.push_encoded(record.seq, &encode(record));
    }

    /// Adds event `seq`, already encoded.
    pub(super) fn push_encoded(&mut self, seq: u64, body: &[u8]) {
        if self.count == 0 {
            self.first = seq;
            self.bytes.clear();
            self.bytes.push(CHUNK);
        }
        self.bytes
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(body);
        self.count += 1;
    }

    pub(super) fn is_full(&self) -> bool {
        self.count >= CHUNK_EVENTS || self.bytes.len() >= CHUNK_BYTES
    }

    /// The (key, value) of the chunk, leaving it empty; `None` when it was.
    pub(super) fn take(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.count == 0 {
            return None;
        }
        self.count = 0;
        Some((
            seq_key(self.first).to_vec(),
            std::mem::take(&mut self.bytes),
        ))
    }
}

/// The events of one `events` record (a chunk, or one event of format 1).
pub(super) fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<EventRecord>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        tree: "events",
        key: format!("{:?}", key_seq(key)),
        reason: reason.to_string(),
    };
    match value.split_first() {
        Some((&CHUNK, mut rest)) => {
            let mut out = Vec::new();
            while !rest.is_empty() {
                let (len, body) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| corrupt("truncated chunk entry length"))?;
                let len = u32::from_be_bytes(*len) as usize;
                let entry = body
                    .get(..len)
                    .ok_or_else(|| corrupt("truncated chunk entry"))?;
                out.push(decode("events", key, entry)?);
                rest = &body[len..];
            }
            Ok(out)
        }
        Some((&FORMAT_JSON, _)) => Ok(vec![decode("events", key, value)?]),
        Some((other, _)) => Err(corrupt(&format!("unknown format byte {other}"))),
        None => Err(corrupt("empty value")),
    }
}

/// Reads events by sequence, keeping the last chunk it decoded (the events a
/// query wants are mostly near each other).
#[derive(Default)]
pub(super) struct Reader {
    cached: Option<(u64, Vec<EventRecord>)>,
}

impl Reader {
    /// The event `seq`; `None` when retention dropped it (or it never was).
    pub(super) fn get(
        &mut self,
        store: &Store,
        seq: u64,
    ) -> Result<Option<EventRecord>, StoreError> {
        if let Some(found) = self.cached_event(seq) {
            return Ok(found);
        }
        // The chunk holding `seq` is the last one starting at or before it.
        let Some(item) = store.events.range(..=seq_key(seq)).next_back() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let first = key_seq(&key).unwrap_or(0);
        self.cached = Some((first, decode_chunk(&key, &value)?));
        Ok(self.cached_event(seq).flatten())
    }

    /// `Some(found)` when the cached chunk covers `seq`.
    fn cached_event(&self, seq: u64) -> Option<Option<EventRecord>> {
        let (first, events) = self.cached.as_ref()?;
        let last = events.last().map_or(*first, |e| e.seq);
        if seq < *first || seq > last {
            return None;
        }
        Some(events.iter().find(|e| e.seq == seq).cloned())
    }
}

/// The sequence of the newest event (0 for an empty log).
pub(super) fn last_seq(store: &Store) -> Result<u64, StoreError> {
    let Some((key, value)) = store.events.last()? else {
        return Ok(0);
    };
    let events = decode_chunk(&key, &value)?;
    Ok(events
        .last()
        .map(|e| e.seq)
        .or_else(|| key_seq(&key))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            ts: seq as i64,
            kind: "progress".into(),
            task_id: None,
            agent_id: None,
            actor: "hub".into(),
            details: json!({"n": seq}),
        }
    }

    #[test]
    fn a_chunk_round_trips_and_a_format_1_record_reads_as_one_event() {
        let mut open = OpenChunk::default();
        for seq in 5..8 {
            open.push(&record(seq));
        }
        let (key, value) = open.take().expect("a chunk");
        assert_eq!(key_seq(&key), Some(5));
        let back = decode_chunk(&key, &value).expect("decodes");
        assert_eq!(back, vec![record(5), record(6), record(7)]);
        assert!(open.take().is_none(), "taken");

        let mut old = vec![FORMAT_JSON];
        old.extend(serde_json::to_vec(&record(9)).expect("json"));
        assert_eq!(
            decode_chunk(&seq_key(9), &old).expect("v1"),
            vec![record(9)]
        );
        let cut = &value[..value.len() - 3];
        assert!(
            decode_chunk(&key, cut).is_err(),
            "a truncated chunk is reported"
        );
    }
}
