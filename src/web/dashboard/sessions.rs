//! Dashboard login sessions: the operator logs in once with the admin token and
//! the browser holds a random session token in an HttpOnly cookie.
//!
//! Only the session token's hash is stored (in the store's `meta` tree, so a
//! session survives a hub restart: the page reconnects by itself). A session ends
//! at logout, when it expires, or when the admin token it began with is no longer
//! the admin token.
//!
//! Architecture invariant: knows the admin token only through `Tokens`; knows
//! nothing of cookies or HTTP.

use serde::{Deserialize, Serialize};

use crate::agents::auth::{hash_token, new_token, Tokens};
use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};

const PREFIX: &[u8] = b"dashboard_session/";

/// How long a login lasts.
pub(crate) const SESSION_TTL_MS: i64 = 12 * 3_600_000;

#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    created_at: i64,
    expires_at: i64,
    /// Hash of the admin token the operator logged in with.
    admin_hash: String,
}

#[derive(Clone)]
pub(crate) struct Sessions {
    store: Store,
    tokens: Tokens,
}

fn key(token: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(hash_token(token).as_bytes());
    k
}

impl Sessions {
    pub(crate) fn new(store: Store, tokens: Tokens) -> Sessions {
        Sessions { store, tokens }
    }

    /// Starts a session for the holder of the admin token; returns its token once
    /// the session is durable (it outlives a hub restart). Expired sessions are
    /// forgotten here.
    pub(crate) async fn open(&self, now: i64) -> Result<String, StoreError> {
        let admin_hash = self
            .tokens
            .admin_hash()?
            .ok_or_else(|| StoreError::Sled("no admin token is set".into()))?;
        for item in self.store.meta.scan_prefix(PREFIX) {
            let (k, v) = item?;
            let stale = decode::<SessionRecord>("meta", &k, &v)
                .map(|r| r.expires_at <= now || r.admin_hash != admin_hash)
                .unwrap_or(true);
            if stale {
                self.store.meta.remove(&k)?;
            }
        }
        let token = new_token();
        let record = SessionRecord {
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
            admin_hash,
        };
        self.store.meta.insert(key(&token), encode(&record))?;
        self.store.durable().await?;
        Ok(token)
    }

    /// Whether `token` is a live session of the current admin token.
    pub(crate) fn is_valid(&self, token: &str, now: i64) -> Result<bool, StoreError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(false);
        }
        let k = key(token);
        let Some(v) = self.store.meta.get(&k)? else {
            return Ok(false);
        };
        let Ok(record) = decode::<SessionRecord>("meta", &k, &v) else {
            return Ok(false);
        };
        Ok(record.expires_at > now && Some(record.admin_hash) == self.tokens.admin_hash()?)
    }

    /// Ends a session (unknown tokens are ignored), durably.
    pub(crate) async fn close(&self, token: &str) -> Result<(), StoreError> {
        self.store.meta.remove(key(token))?;
        self.store.durable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn sessions_live_until_logout_or_expiry_and_only_for_the_admin_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let tokens = Tokens::new(store.clone());
        tokens.init_admin(Some("admin-secret")).expect("admin");
        let sessions = Sessions::new(store.clone(), tokens);
        let now = 1_000_000;
        let a = sessions.open(now).await.expect("open");
        let b = sessions.open(now).await.expect("open");
        assert_ne!(a, b);
        assert!(sessions.is_valid(&a, now + 1).expect("check"));
        assert!(!sessions.is_valid("ac_unknown", now).expect("check"));
        assert!(!sessions.is_valid("", now).expect("check"));
        assert!(!sessions
            .is_valid(&a, now + SESSION_TTL_MS)
            .expect("check expired"));
        sessions.close(&a).await.expect("close");
        assert!(!sessions.is_valid(&a, now + 1).expect("check closed"));
        assert!(sessions.is_valid(&b, now + 1).expect("other session stays"));
        // The token is not stored, only its hash.
        let stored: Vec<_> = store
            .meta
            .scan_prefix(PREFIX)
            .filter_map(Result::ok)
            .collect();
        assert_eq!(stored.len(), 1);
        assert!(!String::from_utf8_lossy(&stored[0].0).contains(&b));
        // An expired session is forgotten at the next login.
        sessions
            .open(now + SESSION_TTL_MS + 1)
            .await
            .expect("open later");
        assert_eq!(store.meta.scan_prefix(PREFIX).count(), 1);
    }
}
