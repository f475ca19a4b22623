//! `SharedContext`: the fleet's small versioned document store (ext,
//! PROTOCOL.md 6.33). A key holds JSON or text; every write (and a delete) is
//! a new version, kept up to `context_history` versions per key; `if_version`
//! makes a write compare-and-set. Writes are answered after the flush and
//! recorded in the event log. Who may write a key is decided by the caller's
//! role and the configured prefixes (`ContextRights`).
//!
//! Layout of the `context` tree:
//! - `h/<key>`: the head (newest version, kind, size, who and when, deleted);
//! - `v/<key>\0<version>`: each kept version with its value.
//!
//! The queue reads the heads and values a task names through `ContextReader`
//! (reads only), to carry them in the assignment.
//!
//! Architecture invariant: knows no task, agent or socket; the only writer of
//! the `context` tree.

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::agents::auth::{Principal, Role};
use crate::error::StoreError;
use crate::protocol::{ContextPut, ContextValue};
use crate::storage::eventlog::{EventLog, NewEvent};
use crate::storage::store::{decode, encode, Store};
use crate::util::now_ms;

/// Most keys the store holds (deleted ones count until their history is gone).
pub(crate) const MAX_CONTEXT_KEYS: usize = 10_000;

/// The newest version of a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Head {
    pub key: String,
    pub version: u64,
    pub kind: String,
    pub size: u64,
    pub updated_at: i64,
    pub updated_by: String,
    #[serde(default)]
    pub deleted: bool,
}

/// One kept version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Version {
    pub head: Head,
    /// `None` for a delete.
    pub value: Option<ContextValue>,
}

impl Version {
    /// As the API shows it: the head, and `value` (JSON) or `text`.
    pub(crate) fn view(&self) -> Value {
        let mut v = json!(self.head);
        match &self.value {
            Some(ContextValue::Json(j)) => v["value"] = j.clone(),
            Some(ContextValue::Text(t)) => v["text"] = json!(t),
            None => {}
        }
        v
    }
}

fn head_key(key: &str) -> Vec<u8> {
    let mut k = b"h/".to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

fn version_key(key: &str, version: u64) -> Vec<u8> {
    let mut k = b"v/".to_vec();
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Reads of the `context` tree, for `SharedContext` and the queue.
#[derive(Clone)]
pub(crate) struct ContextReader {
    store: Store,
}

impl ContextReader {
    pub(crate) fn new(store: Store) -> ContextReader {
        ContextReader { store }
    }

    pub(crate) fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        let k = head_key(key);
        match self.store.context.get(&k)? {
            Some(v) => Ok(Some(decode("context", &k, &v)?)),
            None => Ok(None),
        }
    }

    /// A version of `key` (the newest when `None`); a deleted key has none.
    pub(crate) fn get(
        &self,
        key: &str,
        version: Option<u64>,
    ) -> Result<Option<Version>, StoreError> {
        let version = match version {
            Some(v) => v,
            None => match self.head(key)? {
                Some(h) if !h.deleted => h.version,
                _ => return Ok(None),
            },
        };
        let k = version_key(key, version);
        match self.store.context.get(&k)? {
            Some(v) => Ok(Some(decode("context", &k, &v)?)),
            None => Ok(None),
        }
    }

    /// Kept versions of `key`, newest first, at most `limit`.
    fn history(&self, key: &str, limit: usize) -> Result<Vec<Head>, StoreError> {
        let from = version_key(key, 0);
        let to = version_key(key, u64::MAX);
        let mut out = Vec::new();
        for item in self.store.context.range(from..=to).rev().take(limit) {
            let (k, v) = item?;
            out.push(decode::<Version>("context", &k, &v)?.head);
        }
        Ok(out)
    }

    /// Heads of keys starting with `prefix`, in key order.
    fn list(&self, prefix: &str, deleted: bool) -> Result<Vec<Head>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.context.scan_prefix(head_key(prefix)) {
            let (k, v) = item?;
            let head: Head = decode("context", &k, &v)?;
            if deleted || !head.deleted {
                out.push(head);
            }
        }
        Ok(out)
    }
}

/// Who may write which keys: by the longest configured prefix a key starts
/// with, else the admin and coordinators.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextRights {
    rules: Vec<(String, Vec<Role>)>,
}

impl ContextRights {
    pub(crate) fn new(rules: &[crate::config::ContextWriters]) -> ContextRights {
        ContextRights {
            rules: rules
                .iter()
                .map(|r| {
                    let roles = r
                        .roles
                        .iter()
                        .filter_map(|n| Role::parse_issuable(n))
                        .collect();
                    (r.prefix.clone(), roles)
                })
                .collect(),
        }
    }

    pub(crate) fn may_write(&self, key: &str, who: &Principal) -> bool {
        let role = who.role();
        if role == Role::Admin {
            return true;
        }
        let rule = self
            .rules
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len());
        match rule {
            Some((_, roles)) => roles.contains(&role),
            None => role == Role::Coordinator,
        }
    }
}

/// Why a write was refused.
#[derive(Debug)]
pub(crate) enum ContextError {
    NotFound,
    Conflict(u64),
    Full,
    Store(StoreError),
}

impl From<StoreError> for ContextError {
    fn from(e: StoreError) -> Self {
        ContextError::Store(e)
    }
}

/// See the module documentation.
pub(crate) struct SharedContext {
    reader: ContextReader,
    log: EventLog,
    /// Versions kept per key.
    history: u64,
}

impl SharedContext {
    pub(crate) fn new(store: Store, log: EventLog, history: u64) -> SharedContext {
        SharedContext {
            reader: ContextReader::new(store),
            log,
            history: history.max(1),
        }
    }

    fn store(&self) -> &Store {
        &self.reader.store
    }

    /// Writes version `head.version` (a value, or a delete's `None`) and
    /// drops the versions past the history kept.
    fn write(&self, head: &Head, value: Option<ContextValue>) -> Result<(), StoreError> {
        let t = &self.store().context;
        let version = Version {
            head: head.clone(),
            value,
        };
        t.insert(version_key(&head.key, head.version), encode(&version))?;
        t.insert(head_key(&head.key), encode(head))?;
        if let Some(oldest_kept) = head.version.checked_sub(self.history) {
            let from = version_key(&head.key, 0);
            let to = version_key(&head.key, oldest_kept);
            let old: Vec<_> = t.range(from..=to).keys().collect::<Result<_, _>>()?;
            for k in old {
                t.remove(k)?;
            }
        }
        Ok(())
    }

    fn check_version(current: Option<&Head>, if_version: Option<u64>) -> Result<u64, ContextError> {
        let live = current.filter(|h| !h.deleted).map_or(0, |h| h.version);
        match if_version {
            Some(v) if v != live => Err(ContextError::Conflict(live)),
            _ => Ok(current.map_or(0, |h| h.version)),
        }
    }

    fn put(&self, key: &str, put: ContextPut, by: &str) -> Result<Head, ContextError> {
        let current = self.reader.head(key)?;
        if current.is_none() && self.store().context.scan_prefix(b"h/").count() >= MAX_CONTEXT_KEYS
        {
            return Err(ContextError::Full);
        }
        let last = Self::check_version(current.as_ref(), put.if_version)?;
        let head = Head {
            key: key.to_string(),
            version: last + 1,
            kind: put.value.kind().to_string(),
            size: put.value.size() as u64,
            updated_at: now_ms(),
            updated_by: by.to_string(),
            deleted: false,
        };
        self.write(&head, Some(put.value))?;
        let details =
            json!({"key": key, "version": head.version, "kind": head.kind, "size": head.size});
        self.log
            .append(vec![NewEvent::untasked("context_put", None, by, details)])?;
        Ok(head)
    }

    fn delete(&self, key: &str, if_version: Option<u64>, by: &str) -> Result<Head, ContextError> {
        let current = match self.reader.head(key)? {
            Some(h) if !h.deleted => h,
            _ => return Err(ContextError::NotFound),
        };
        Self::check_version(Some(&current), if_version)?;
        let head = Head {
            version: current.version + 1,
            size: 0,
            updated_at: now_ms(),
            updated_by: by.to_string(),
            deleted: true,
            ..current
        };
        self.write(&head, None)?;
        let details = json!({"key": key, "version": head.version});
        self.log.append(vec![NewEvent::untasked(
            "context_deleted",
            None,
            by,
            details,
        )])?;
        Ok(head)
    }
}

impl Actor for SharedContext {
    type Context = Context<Self>;
}

/// A write of a key: a new value, or a delete (a version of its own).
pub(crate) enum Change {
    Put(ContextPut),
    Delete { if_version: Option<u64> },
}

/// Change a key (answered once durable).
#[derive(Message)]
#[rtype(result = "Result<Head, ContextError>")]
pub(crate) struct WriteContext {
    pub key: String,
    pub change: Change,
    pub by: String,
}

impl Handler<WriteContext> for SharedContext {
    type Result = ResponseFuture<Result<Head, ContextError>>;

    fn handle(&mut self, msg: WriteContext, _: &mut Context<Self>) -> Self::Result {
        let written = match msg.change {
            Change::Put(put) => self.put(&msg.key, put, &msg.by),
            Change::Delete { if_version } => self.delete(&msg.key, if_version, &msg.by),
        };
        let durable = self.store().durable();
        Box::pin(async move {
            let head = written?;
            durable.await?;
            Ok(head)
        })
    }
}

/// What readers ask.
#[derive(Message)]
#[rtype(result = "Result<Value, ContextError>")]
pub(crate) enum ReadContext {
    /// A version (the newest when `None`).
    Get { key: String, version: Option<u64> },
    /// Kept versions, newest first.
    History { key: String, limit: usize },
    /// Keys with a prefix (deleted ones too when asked).
    List { prefix: String, deleted: bool },
}

impl Handler<ReadContext> for SharedContext {
    type Result = Result<Value, ContextError>;

    fn handle(&mut self, msg: ReadContext, _: &mut Context<Self>) -> Self::Result {
        match msg {
            ReadContext::Get { key, version } => match self.reader.get(&key, version)? {
                Some(v) => Ok(v.view()),
                None => Err(ContextError::NotFound),
            },
            ReadContext::History { key, limit } => {
                let versions = self.reader.history(&key, limit)?;
                if versions.is_empty() {
                    return Err(ContextError::NotFound);
                }
                Ok(json!({"key": key, "count": versions.len(), "versions": versions}))
            }
            ReadContext::List { prefix, deleted } => {
                let keys = self.reader.list(&prefix, deleted)?;
                Ok(json!({"count": keys.len(), "keys": keys}))
            }
        }
    }
}

/// The context a task names, as its assignment carries it: each key's newest
/// version, inline while the total stays under `room` bytes, else by
/// reference; a missing key says so.
pub(crate) fn for_assignment(
    reader: &ContextReader,
    keys: &[String],
    mut room: usize,
) -> Result<Map<String, Value>, StoreError> {
    let mut out = Map::new();
    for key in keys {
        let entry = match reader.get(key, None)? {
            None => json!({"missing": true}),
            Some(v) => {
                let size = v.head.size as usize;
                if size <= room {
                    room -= size;
                    v.view()
                } else {
                    let mut e = json!(v.head);
                    e["context_ref"] =
                        json!(format!("/api/context/{key}?version={}", v.head.version));
                    e
                }
            }
        };
        out.insert(key.clone(), entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(text: &str, if_version: Option<u64>) -> ContextPut {
        ContextPut {
            value: ContextValue::Text(text.into()),
            if_version,
        }
    }

    #[test]
    fn compare_and_set_refuses_a_stale_version_and_keeps_history() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let log = EventLog::open(store.clone()).expect("log");
        let ctx = SharedContext::new(store, log, 3);
        assert!(matches!(
            ctx.put("k", put("a", Some(1)), "x"),
            Err(ContextError::Conflict(0))
        ));
        assert_eq!(
            ctx.put("k", put("a", Some(0)), "x")
                .expect("create")
                .version,
            1
        );
        assert_eq!(
            ctx.put("k", put("b", Some(1)), "y").expect("cas").version,
            2
        );
        assert!(matches!(
            ctx.put("k", put("c", Some(1)), "z"),
            Err(ContextError::Conflict(2))
        ));
        ctx.put("k", put("c", None), "z").expect("blind");
        ctx.put("k", put("d", None), "z").expect("blind");
        let history = ctx.reader.history("k", 10).expect("history");
        assert_eq!(
            history.iter().map(|h| h.version).collect::<Vec<_>>(),
            [4, 3, 2],
            "three versions kept"
        );
        let old = ctx.reader.get("k", Some(2)).expect("read").expect("kept");
        assert_eq!(old.value, Some(ContextValue::Text("b".into())));
        let gone = ctx.delete("k", Some(4), "admin").expect("delete");
        assert!(gone.deleted);
        assert!(ctx.reader.get("k", None).expect("read").is_none());
        assert!(matches!(
            ctx.delete("k", None, "admin"),
            Err(ContextError::NotFound)
        ));
        // Written again after a delete: the versions go on.
        assert_eq!(
            ctx.put("k", put("e", Some(0)), "x").expect("again").version,
            6
        );
    }

    #[test]
    fn rights_follow_the_longest_prefix() {
        let rights = ContextRights::new(&[
            crate::config::ContextWriters {
                prefix: "notes.".into(),
                roles: vec!["agent".into(), "coordinator".into()],
            },
            crate::config::ContextWriters {
                prefix: "notes.frozen.".into(),
                roles: vec![],
            },
        ]);
        let agent = Principal::Agent("a".into());
        let lead = Principal::Coordinator("c".into());
        assert!(rights.may_write("notes.today", &agent));
        assert!(!rights.may_write("notes.frozen.x", &agent));
        assert!(!rights.may_write("notes.frozen.x", &lead));
        assert!(rights.may_write("notes.frozen.x", &Principal::Admin));
        assert!(!rights.may_write("style", &agent));
        assert!(rights.may_write("style", &lead));
        assert!(!rights.may_write("style", &Principal::Observer("o".into())));
    }
}
