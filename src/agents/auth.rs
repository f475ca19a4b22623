//! Tokens: issuing, revoking and checking agent tokens and the admin token.
//!
//! Tokens are 192-bit random strings; only their SHA-256 hash is stored (tokens
//! are high-entropy, so a fast hash is enough), plus an 8-character prefix so an
//! operator can tell them apart in listings.
//!
//! Architecture invariant: this module knows tokens and who they belong to. It
//! does not know routes, sessions or what an agent may do.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};
use crate::util::now_ms;

const ADMIN_HASH_KEY: &[u8] = b"admin_token_hash";
const PREFIX_LEN: usize = 8;

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The hub's admin token.
    Admin,
    /// An agent's token (role `agent`).
    Agent(String),
    /// A coordinator's token: an agent that may also steer others' work.
    Coordinator(String),
    /// An observer's token: reads, changes nothing.
    Observer(String),
}

impl Principal {
    /// The name it acts under (event-log actor): `admin`, or the token's id.
    pub fn id(&self) -> &str {
        match self {
            Principal::Admin => "admin",
            Principal::Agent(id) | Principal::Coordinator(id) | Principal::Observer(id) => id,
        }
    }

    /// The agent it may act as (identify, its mailbox, its reservations):
    /// an agent's or a coordinator's token.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Principal::Agent(id) | Principal::Coordinator(id) => Some(id),
            Principal::Admin | Principal::Observer(_) => None,
        }
    }

    /// May steer others' work: task controls, lanes, agent controls, standing
    /// orders, concurrency limits, usage pauses, alert acknowledgements.
    pub fn may_steer(&self) -> bool {
        matches!(self, Principal::Admin | Principal::Coordinator(_))
    }

    /// May read what operators read (metrics, alerts, storage health, the
    /// dashboard): the admin, coordinators and observers.
    pub fn may_watch(&self) -> bool {
        !matches!(self, Principal::Agent(_))
    }

    /// Reads only.
    pub fn read_only(&self) -> bool {
        matches!(self, Principal::Observer(_))
    }

    /// Its role's name.
    pub fn role(&self) -> Role {
        match self {
            Principal::Admin => Role::Admin,
            Principal::Agent(_) => Role::Agent,
            Principal::Coordinator(_) => Role::Coordinator,
            Principal::Observer(_) => Role::Observer,
        }
    }
}

/// What a token may do (ext, PROTOCOL.md 6.25). Tokens the admin issues are
/// `agent` (the default), `coordinator` or `observer`; `admin` is the hub's
/// admin token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Coordinator,
    Observer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Coordinator => "coordinator",
            Role::Observer => "observer",
            Role::Admin => "admin",
        }
    }

    /// A role a token may be issued with (`admin` is the hub's own token).
    pub fn parse_issuable(text: &str) -> Option<Role> {
        match text {
            "agent" => Some(Role::Agent),
            "coordinator" => Some(Role::Coordinator),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }

    fn is_agent(&self) -> bool {
        *self == Role::Agent
    }
}

/// What is stored for an agent's token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub agent_id: String,
    pub token_prefix: String,
    pub created_at: i64,
    pub capabilities: Vec<String>,
    pub token_hash: String,
    /// Agents sharing a provider account: a usage limit one reports pauses
    /// them all (ext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_group: Option<String>,
    /// How many tasks the agent may run at once (ext; none: one, or what its
    /// sidecar asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// What the token may do (ext; `agent` when absent).
    #[serde(default, skip_serializing_if = "Role::is_agent")]
    pub role: Role,
}

/// What an operator sets on a token besides its capabilities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenTerms {
    /// Agents sharing one provider account (usage-limit pauses).
    pub credential_group: Option<String>,
    /// The most tasks the agent may run at once.
    pub slots: Option<u32>,
    /// What the token may do (default `agent`).
    pub role: Role,
}

/// Why an `identify` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifyRefusal {
    /// The token is unknown.
    InvalidToken,
    /// The token belongs to another agent (or is the admin token).
    TokenAgentMismatch,
}

/// Why an agent token could not be issued.
#[derive(Debug, Clone)]
pub enum IssueError {
    /// The agent has a token already (revoke it first).
    AlreadyExists,
    /// The invite is unknown, expired, used, or for another agent.
    InvalidInvite,
    Store(StoreError),
}

/// A one-time invite for one agent id; stored under the hash of its code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InviteRecord {
    pub agent_id: String,
    pub capabilities: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Role::is_agent")]
    pub role: Role,
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        IssueError::Store(e)
    }
}

/// Token storage over the store's `tokens`, `token_hashes` and `meta` trees.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
}

/// SHA-256 of a token, hex.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The one command that joins a new agent machine to the hub.
pub fn join_command(hub_url: &str, agent_id: &str, code: &str, capabilities: &[String]) -> String {
    // Quoted, so an odd agent id or URL can never turn into extra shell commands.
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| "''".to_string())
    };
    let mut cmd = format!(
        "agentcom-sidecar join --hub {} --agent-id {} --invite {}",
        quote(hub_url),
        quote(agent_id),
        quote(code)
    );
    if !capabilities.is_empty() {
        cmd.push_str(&format!(
            " --capabilities {}",
            quote(&capabilities.join(","))
        ));
    }
    cmd
}

/// A fresh random token.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("ac_{}", hex::encode(bytes))
}

impl Tokens {
    pub fn new(store: Store) -> Self {
        Tokens { store }
    }

    /// Creates the admin token if the store has none. Returns the token when it was
    /// generated here (so it can be shown once); `None` when one existed or the
    /// caller supplied it.
    pub fn init_admin(&self, supplied: Option<&str>) -> Result<Option<String>, StoreError> {
        if self.store.meta.get(ADMIN_HASH_KEY)?.is_some() {
            return Ok(None);
        }
        let (token, generated) = match supplied.filter(|t| !t.is_empty()) {
            Some(t) => (t.to_string(), false),
            None => (new_token(), true),
        };
        self.store
            .meta
            .insert(ADMIN_HASH_KEY, hash_token(&token).as_bytes())?;
        self.store.flush_now()?;
        Ok(generated.then_some(token))
    }

    /// The admin token's hash (to tie dashboard sessions to the token they began
    /// with).
    pub fn admin_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .meta
            .get(ADMIN_HASH_KEY)?
            .map(|h| String::from_utf8_lossy(&h).into_owned()))
    }

    /// Whose token this is, if anyone's.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        self.authenticate_hash(&hash_token(token))
    }

    /// [`Tokens::authenticate`] by the token's hash (a dashboard session keeps
    /// only the hash).
    pub fn authenticate_hash(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        if let Some(admin) = self.store.meta.get(ADMIN_HASH_KEY)? {
            if admin.as_ref() == hash.as_bytes() {
                return Ok(Some(Principal::Admin));
            }
        }
        let Some(id) = self.store.token_hashes.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let role = self.get(&id)?.map(|r| r.role).unwrap_or_default();
        Ok(Some(match role {
            Role::Coordinator => Principal::Coordinator(id),
            Role::Observer => Principal::Observer(id),
            Role::Agent | Role::Admin => Principal::Agent(id),
        }))
    }

    /// Checks an `identify`: the token must be this agent's.
    pub fn check_identify(&self, agent_id: &str, token: &str) -> Result<(), IdentifyRefusal> {
        match self.authenticate(token) {
            Ok(Some(p)) if p.agent_id() == Some(agent_id) => Ok(()),
            Ok(Some(_)) => Err(IdentifyRefusal::TokenAgentMismatch),
            Ok(None) | Err(_) => Err(IdentifyRefusal::InvalidToken),
        }
    }

    /// Issues a token for a new agent. The change is durable when this returns.
    pub async fn issue(
        &self,
        agent_id: &str,
        capabilities: Vec<String>,
        terms: TokenTerms,
    ) -> Result<(String, TokenRecord), IssueError> {
        let (token, record) = self.insert(agent_id, capabilities, terms)?;
        self.store.durable().await?;
        Ok((token, record))
    }

    /// Issues a token and flushes synchronously (command-line use).
    pub fn issue_now(
        &self,
        agent_id: &str,
        capabilities: Vec<String>,
    ) -> Result<(String, TokenRecord), IssueError> {
        self.issue_with_now(agent_id, capabilities, TokenTerms::default())
    }

    /// [`Tokens::issue_now`] with a credential group and slots.
    pub fn issue_with_now(
        &self,
        agent_id: &str,
        capabilities: Vec<String>,
        terms: TokenTerms,
    ) -> Result<(String, TokenRecord), IssueError> {
        let out = self.insert(agent_id, capabilities, terms)?;
        self.store.flush_now()?;
        Ok(out)
    }

    fn insert(
        &self,
        agent_id: &str,
        mut capabilities: Vec<String>,
        terms: TokenTerms,
    ) -> Result<(String, TokenRecord), IssueError> {
        capabilities.sort();
        capabilities.dedup();
        let token = new_token();
        let record = TokenRecord {
            agent_id: agent_id.to_string(),
            token_prefix: token.chars().take(PREFIX_LEN).collect(),
            created_at: now_ms(),
            capabilities,
            token_hash: hash_token(&token),
            credential_group: terms.credential_group,
            slots: terms.slots,
            role: terms.role,
        };
        let value = encode(&record);
        // compare_and_swap makes two concurrent issues for one agent create one token.
        let swapped = self
            .store
            .tokens
            .compare_and_swap(agent_id.as_bytes(), None as Option<&[u8]>, Some(value))
            .map_err(StoreError::from)?;
        if swapped.is_err() {
            return Err(IssueError::AlreadyExists);
        }
        self.store
            .token_hashes
            .insert(record.token_hash.as_bytes(), agent_id.as_bytes())
            .map_err(StoreError::from)?;
        Ok((token, record))
    }

    /// Creates a one-time invite for `agent_id`, valid for `ttl_ms`; returns its code.
    /// Durable when this returns.
    pub fn invite_now(
        &self,
        agent_id: &str,
        capabilities: Vec<String>,
        ttl_ms: i64,
    ) -> Result<(String, InviteRecord), StoreError> {
        self.invite_with_now(agent_id, capabilities, TokenTerms::default(), ttl_ms)
    }

    /// [`Tokens::invite_now`]; the token it redeems for has `terms`.
    pub fn invite_with_now(
        &self,
        agent_id: &str,
        mut capabilities: Vec<String>,
        terms: TokenTerms,
        ttl_ms: i64,
    ) -> Result<(String, InviteRecord), StoreError> {
        capabilities.sort();
        capabilities.dedup();
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let code = format!("inv_{}", hex::encode(bytes));
        let now = now_ms();
        let record = InviteRecord {
            agent_id: agent_id.to_string(),
            capabilities,
            created_at: now,
            expires_at: now.saturating_add(ttl_ms),
            used_at: None,
            credential_group: terms.credential_group,
            slots: terms.slots,
            role: terms.role,
        };
        self.store
            .invites
            .insert(hash_token(&code).as_bytes(), encode(&record))?;
        self.store.flush_now()?;
        Ok((code, record))
    }

    /// Redeems an invite: issues the agent's token with the invite's capabilities
    /// and marks the invite used, or changes nothing. Durable when this returns.
    pub async fn redeem(
        &self,
        agent_id: &str,
        code: &str,
    ) -> Result<(String, TokenRecord), IssueError> {
        let key = hash_token(code);
        let Some(old) = self
            .store
            .invites
            .get(key.as_bytes())
            .map_err(StoreError::from)?
        else {
            return Err(IssueError::InvalidInvite);
        };
        let invite: InviteRecord = decode("invites", key.as_bytes(), &old)?;
        if invite.used_at.is_some() || invite.expires_at < now_ms() || invite.agent_id != agent_id {
            return Err(IssueError::InvalidInvite);
        }
        let used = InviteRecord {
            used_at: Some(now_ms()),
            ..invite.clone()
        };
        // The swap makes a concurrent second use of the same code fail.
        let swapped = self
            .store
            .invites
            .compare_and_swap(key.as_bytes(), Some(&old), Some(encode(&used)))
            .map_err(StoreError::from)?;
        if swapped.is_err() {
            return Err(IssueError::InvalidInvite);
        }
        let terms = TokenTerms {
            credential_group: invite.credential_group,
            slots: invite.slots,
            role: invite.role,
        };
        match self.insert(agent_id, invite.capabilities, terms) {
            Ok(issued) => {
                self.store.durable().await?;
                Ok(issued)
            }
            Err(e) => {
                // Nothing was issued: the invite stays usable.
                let _ = self.store.invites.compare_and_swap(
                    key.as_bytes(),
                    Some(encode(&used)),
                    Some(old),
                );
                Err(e)
            }
        }
    }

    /// Revokes an agent's token; `false` when the agent had none.
    pub async fn revoke(&self, agent_id: &str) -> Result<bool, StoreError> {
        let removed = self.remove(agent_id)?;
        self.store.durable().await?;
        Ok(removed)
    }

    /// Revokes and flushes synchronously (command-line use).
    pub fn revoke_now(&self, agent_id: &str) -> Result<bool, StoreError> {
        let removed = self.remove(agent_id)?;
        self.store.flush_now()?;
        Ok(removed)
    }

    fn remove(&self, agent_id: &str) -> Result<bool, StoreError> {
        let Some(old) = self.store.tokens.take(agent_id.as_bytes())? else {
            return Ok(false);
        };
        if let Ok(record) = decode::<TokenRecord>("tokens", agent_id.as_bytes(), &old) {
            self.store
                .token_hashes
                .remove(record.token_hash.as_bytes())?;
        }
        Ok(true)
    }

    /// One agent's record.
    pub fn get(&self, agent_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.store.tokens.get(agent_id.as_bytes())? {
            None => Ok(None),
            Some(v) => decode("tokens", agent_id.as_bytes(), &v).map(Some),
        }
    }

    /// How many agents are registered (no record is decoded).
    pub fn count(&self) -> usize {
        self.store.tokens.len()
    }

    /// Every agent's record, by agent id.
    pub fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store
            .tokens
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode("tokens", &k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::new(Store::open(dir.path()).expect("open"));
        let admin = tokens.init_admin(None).expect("init").expect("generated");
        assert_eq!(tokens.init_admin(None).expect("init"), None);
        let (tok, rec) = tokens.issue_now("a1", vec!["x".into()]).expect("issue");
        assert_eq!(rec.token_prefix, &tok[..PREFIX_LEN]);
        assert!(matches!(
            tokens.issue_now("a1", vec![]),
            Err(IssueError::AlreadyExists)
        ));
        assert_eq!(tokens.check_identify("a1", &tok), Ok(()));
        assert_eq!(
            tokens.check_identify("a2", &tok),
            Err(IdentifyRefusal::TokenAgentMismatch)
        );
        assert_eq!(
            tokens.check_identify("a1", &admin),
            Err(IdentifyRefusal::TokenAgentMismatch)
        );
        assert_eq!(
            tokens.authenticate(&admin).expect("auth"),
            Some(Principal::Admin)
        );
        assert!(tokens.revoke_now("a1").expect("revoke"));
        assert_eq!(
            tokens.check_identify("a1", &tok),
            Err(IdentifyRefusal::InvalidToken)
        );
    }

    #[actix_rt::test]
    async fn invites_are_single_use_and_bound_to_their_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::new(Store::open(dir.path()).expect("open"));
        let (code, _) = tokens
            .invite_now("new", vec!["b".into(), "a".into()], 60_000)
            .expect("invite");
        assert!(matches!(
            tokens.redeem("other", &code).await,
            Err(IssueError::InvalidInvite)
        ));
        let (token, record) = tokens.redeem("new", &code).await.expect("redeem");
        assert_eq!(record.capabilities, vec!["a", "b"]);
        assert_eq!(tokens.check_identify("new", &token), Ok(()));
        assert!(matches!(
            tokens.redeem("new", &code).await,
            Err(IssueError::InvalidInvite)
        ));
        let (expired, _) = tokens.invite_now("late", vec![], -1).expect("invite");
        assert!(matches!(
            tokens.redeem("late", &expired).await,
            Err(IssueError::InvalidInvite)
        ));
        // An invite for an agent that exists already is refused and stays usable.
        let (again, _) = tokens.invite_now("new", vec![], 60_000).expect("invite");
        assert!(matches!(
            tokens.redeem("new", &again).await,
            Err(IssueError::AlreadyExists)
        ));
        assert!(tokens.revoke_now("new").expect("revoke"));
        assert!(tokens.redeem("new", &again).await.is_ok());
    }

    #[test]
    fn revoked_token_no_longer_identifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::new(Store::open(dir.path()).expect("open"));
        let (tok, _) = tokens.issue_now("a1", vec![]).expect("issue");
        assert!(tokens.revoke_now("a1").expect("revoke"));
        assert_eq!(
            tokens.check_identify("a1", &tok),
            Err(IdentifyRefusal::InvalidToken)
        );
    }
}
