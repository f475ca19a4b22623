//! Dashboard login sessions: a person logs in once with the admin token, or a
//! coordinator's or observer's token, and the browser holds a random session
//! token in an HttpOnly cookie. The session acts with the rights of the token it
//! began with.
//!
//! Only hashes are stored (in the store's `meta` tree, so a session survives a
//! hub restart: the page reconnects by itself). A session ends at logout, when
//! it expires, or when the token it began with no longer is what it was (a new
//! admin token, a revoked token).
//!
//! Architecture invariant: knows tokens only through `Tokens`; knows nothing of
//! cookies or HTTP.

use serde::{Deserialize, Serialize};

use crate::agents::auth::{hash_token, new_token, Principal, Tokens};
use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};

const PREFIX: &[u8] = b"dashboard_session/";

/// How long a login lasts.
pub(crate) const SESSION_TTL_MS: i64 = 12 * 3_600_000;

#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    created_at: i64,
    expires_at: i64,
    /// Hash of the admin token the operator logged in with (admin sessions).
    #[serde(default)]
    admin_hash: String,
    /// Hash of the coordinator's or observer's token, and its id (their
    /// sessions).
    #[serde(default)]
    token_hash: Option<String>,
    #[serde(default)]
    token_id: Option<String>,
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

    /// Starts a session for `who`, who logged in with `login_token`; returns
    /// its token once the session is durable (it outlives a hub restart).
    /// Sessions no longer valid are forgotten here.
    pub(crate) async fn open(
        &self,
        now: i64,
        who: &Principal,
        login_token: &str,
    ) -> Result<String, StoreError> {
        let mut stale = Vec::new();
        for item in self.store.meta.scan_prefix(PREFIX) {
            let (k, v) = item?;
            let live = decode::<SessionRecord>("meta", &k, &v)
                .map(|r| self.principal_of_record(&r, now))
                .unwrap_or(Ok(None))?;
            if live.is_none() {
                stale.push(k);
            }
        }
        for k in stale {
            self.store.meta.remove(&k)?;
        }
        let token = new_token();
        let (admin_hash, token_hash, token_id) = match who {
            Principal::Admin => (
                self.tokens
                    .admin_hash()?
                    .ok_or_else(|| StoreError::Sled("no admin token is set".into()))?,
                None,
                None,
            ),
            named => (
                String::new(),
                Some(hash_token(login_token)),
                Some(named.id().to_string()),
            ),
        };
        let record = SessionRecord {
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
            admin_hash,
            token_hash,
            token_id,
        };
        self.store.meta.insert(key(&token), encode(&record))?;
        self.store.durable().await?;
        Ok(token)
    }

    /// Whose live session `token` is, if it is one.
    pub(crate) fn principal_of(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let k = key(token);
        let Some(v) = self.store.meta.get(&k)? else {
            return Ok(None);
        };
        let Ok(record) = decode::<SessionRecord>("meta", &k, &v) else {
            return Ok(None);
        };
        self.principal_of_record(&record, now)
    }

    /// Whether `token` is a live session.
    #[cfg(test)]
    pub(crate) fn is_valid(&self, token: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self.principal_of(token, now)?.is_some())
    }

    /// The session's principal while its token still is what it was.
    fn principal_of_record(
        &self,
        r: &SessionRecord,
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        if r.expires_at <= now {
            return Ok(None);
        }
        match (&r.token_hash, &r.token_id) {
            (Some(hash), Some(id)) => Ok(self
                .tokens
                .authenticate_hash(hash)?
                .filter(|p| p.id() == id && p.may_watch())),
            _ => Ok((Some(&r.admin_hash) == self.tokens.admin_hash()?.as_ref())
                .then_some(Principal::Admin)),
        }
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
        let a = sessions
            .open(now, &Principal::Admin, "admin-secret")
            .await
            .expect("open");
        let b = sessions
            .open(now, &Principal::Admin, "admin-secret")
            .await
            .expect("open");
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
            .open(now + SESSION_TTL_MS + 1, &Principal::Admin, "admin-secret")
            .await
            .expect("open later");
        assert_eq!(store.meta.scan_prefix(PREFIX).count(), 1);
    }

    #[actix_rt::test]
    async fn a_named_session_holds_its_tokens_rights_until_the_token_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let tokens = Tokens::new(store.clone());
        tokens.init_admin(Some("admin-secret")).expect("admin");
        let terms = crate::agents::auth::TokenTerms {
            role: crate::agents::auth::Role::Observer,
            ..Default::default()
        };
        let (eye, _) = tokens
            .issue_with_now("eye", Vec::new(), terms)
            .expect("issue");
        let sessions = Sessions::new(store.clone(), tokens.clone());
        let now = 1_000_000;
        let who = Principal::Observer("eye".into());
        let s = sessions.open(now, &who, &eye).await.expect("open");
        assert_eq!(
            sessions.principal_of(&s, now + 1).expect("check"),
            Some(who)
        );
        tokens.revoke_now("eye").expect("revoke");
        assert_eq!(sessions.principal_of(&s, now + 1).expect("check"), None);
    }
}
