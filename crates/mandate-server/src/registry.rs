//! The tenants this server serves, tenant creation, and admin-key
//! authentication.
//!
//! An admin key is `mk_` + 16 hex digits of key id + 64 hex digits of secret.
//! The tenant's log records the key id, its role and the SHA-256 of the
//! secret; the key itself is shown once to whoever created it. A request's
//! key is found by its id and its secret's hash compared in constant time.
//!
//! An agent token is the same shape with the prefix `mt_`: issued for one
//! identity with an expiry and optional scopes, its log entry holds only the
//! hash. It authenticates while it is active: not revoked, not expired at the
//! request's time, and its identity effective (it and every ancestor active),
//! so revoking the identity or an ancestor stops its tokens at once.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use jiff::Timestamp;
use mandate_core::policy::PolicySet;
use mandate_log::SignerKey;
use mandate_store::{EntryDraft, Ledger, StoreError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::{Code, Problem};
use crate::state::{AgentToken, Role, TenantSettings, TokenInactive, hex, types};
use crate::tenant::{self, Tenant};

/// The prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "mk_";

/// The prefix of agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "mt_";

/// The fewest token owners remembered before expired ones are swept.
const TOKEN_SWEEP_MIN: usize = 1_024;

/// A freshly made admin key: the text to hand out once, and what the log keeps.
#[derive(Debug, Clone)]
pub struct NewAdminKey {
    /// The whole key, `mk_…`: shown once, never stored.
    pub token: String,
    /// Its public id.
    pub key_id: String,
    /// SHA-256 of its secret half.
    pub secret_sha256: [u8; 32],
}

fn random<const N: usize>() -> Result<[u8; N], Problem> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| Problem::new(Code::Internal, format!("no randomness: {error}")))?;
    Ok(bytes)
}

/// `prefix` + 16 hex digits of id + 64 hex digits of secret: the whole
/// credential, its id, and the SHA-256 of its secret.
fn new_credential(prefix: &str) -> Result<(String, String, [u8; 32]), Problem> {
    let id = hex(&random::<8>()?);
    let secret = hex(&random::<32>()?);
    let secret_sha256 = Sha256::digest(secret.as_bytes()).into();
    Ok((format!("{prefix}{id}{secret}"), id, secret_sha256))
}

impl NewAdminKey {
    /// Makes a key from the operating system's randomness.
    pub fn generate() -> Result<NewAdminKey, Problem> {
        let (token, key_id, secret_sha256) = new_credential(ADMIN_KEY_PREFIX)?;
        Ok(NewAdminKey { token, key_id, secret_sha256 })
    }
}

/// A freshly made agent token: the text to hand out once, and what the log keeps.
#[derive(Debug, Clone)]
pub struct NewAgentToken {
    /// The whole token, `mt_…`: shown once, never stored.
    pub token: String,
    /// Its public id.
    pub token_id: String,
    /// SHA-256 of its secret half.
    pub secret_sha256: [u8; 32],
}

impl NewAgentToken {
    /// Makes a token from the operating system's randomness.
    pub fn generate() -> Result<NewAgentToken, Problem> {
        let (token, token_id, secret_sha256) = new_credential(AGENT_TOKEN_PREFIX)?;
        Ok(NewAgentToken { token, token_id, secret_sha256 })
    }
}

/// Splits `<prefix><16 hex id><64 hex secret>` into id and secret.
fn split_credential<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?;
    if rest.len() != 80 || !rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    Some(rest.split_at(16))
}

/// Splits `mk_<16 hex id><64 hex secret>` into id and secret.
fn split_admin_key(token: &str) -> Option<(&str, &str)> {
    split_credential(ADMIN_KEY_PREFIX, token)
}

/// Splits `mt_<16 hex id><64 hex secret>` into id and secret.
pub fn split_agent_token(token: &str) -> Option<(&str, &str)> {
    split_credential(AGENT_TOKEN_PREFIX, token)
}

/// Whether `secret` hashes to `secret_sha256`.
pub fn secret_matches(secret: &str, secret_sha256: &[u8; 32]) -> bool {
    let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    // INVARIANT (constant-time-keys): the comparison takes the same time
    // wherever the hashes differ.
    presented.ct_eq(secret_sha256).into()
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTenantError {
    /// The name is taken.
    #[error("tenant `{0}` already exists")]
    Exists(String),
    /// The name is not a valid tenant name.
    #[error("invalid tenant name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Creates a tenant: its log with a fresh signing key named
/// `<origin_host>/<tenant>`, then the log's first entries (the tenant, the
/// default policy set, the first admin key). Returns the admin key, to be
/// shown once. Blocks until committed: call it outside async code.
///
/// A log left empty by a crash between the two steps is completed by calling
/// this again with the same name (by one caller only, when several try).
pub fn create_tenant(ledger: &dyn Ledger, name: &str, origin_host: &str) -> Result<NewAdminKey, CreateTenantError> {
    mandate_log::entry::check_tenant(name)
        .map_err(|error| CreateTenantError::InvalidName { name: name.to_owned(), reason: error.to_string() })?;
    let seed = random::<32>().map_err(|problem| CreateTenantError::Other(problem.detail().to_owned()))?;
    let signer = SignerKey::from_seed(&format!("{origin_host}/{name}"), seed)
        .map_err(|error| CreateTenantError::InvalidName { name: name.to_owned(), reason: error.to_string() })?;
    match ledger.create_log(name, &signer) {
        Ok(()) => {}
        // A log with no entries is a creation that did not finish.
        Err(StoreError::TenantExists { .. }) if ledger.size(name)? == 0 => {}
        Err(StoreError::TenantExists { .. }) => return Err(CreateTenantError::Exists(name.to_owned())),
        Err(error) => return Err(error.into()),
    }
    let signer = ledger.signer(name)?;
    let key = NewAdminKey::generate().map_err(|problem| CreateTenantError::Other(problem.detail().to_owned()))?;
    let time = tenant::entry_time(jiff::Timestamp::now());
    let policies = PolicySet::default_for_new_tenant().map_err(|error| CreateTenantError::Other(error.to_string()))?;

    let mut tenant_body = Map::new();
    tenant_body.insert("log_key".into(), Value::from(signer.verifier().to_string()));
    tenant_body.insert("settings".into(), Value::Object(TenantSettings::default().to_json()));
    tenant_body.insert("tenant".into(), Value::from(name));
    let mut policy_body = Map::new();
    policy_body.insert("policies".into(), Value::from(policies.policies_text()));
    policy_body.insert("policy_hash".into(), Value::from(policies.version_hash()));
    policy_body.insert("schema".into(), Value::Null);
    policy_body.insert("version".into(), Value::from(1));
    let mut key_body = Map::new();
    key_body.insert("key_id".into(), Value::from(key.key_id.as_str()));
    key_body.insert("role".into(), Value::from(Role::Admin.as_str()));
    key_body.insert("secret_sha256".into(), Value::from(hex(&key.secret_sha256)));
    let draft = |entry_type: &str, body: &Map<String, Value>| {
        EntryDraft::new(entry_type, time.as_str(), body).map_err(|error| CreateTenantError::Other(error.to_string()))
    };
    let drafts = vec![
        draft(types::TENANT_CREATED, &tenant_body)?,
        draft(types::POLICY_UPDATED, &policy_body)?,
        draft(types::ADMIN_KEY_CREATED, &key_body)?,
    ];
    // Holding the log, so that two processes completing one creation at
    // once (two servers starting on one fresh database) write it once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CreateTenantError::Other(format!("starting a runtime: {error}")))?;
    runtime.block_on(async {
        let hold = ledger.hold(name, 0).await?;
        if hold.size() != 0 {
            return Err(CreateTenantError::Exists(name.to_owned()));
        }
        hold.commit(drafts, Vec::new()).await?;
        Ok(())
    })?;
    Ok(key)
}

/// Every tenant this server serves, and where each admin key and agent
/// token belongs.
pub struct Registry {
    ledger: Arc<dyn Ledger>,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    key_owners: RwLock<HashMap<String, String>>,
    token_owners: RwLock<TokenOwners>,
    /// When the last look for new tenants and credentials began: one look
    /// at a time, and a caller that missed skips the look when one began
    /// after its miss.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

/// Token id → (tenant, expiry). Expired tokens are swept whenever the map
/// has doubled since the last sweep, so short-lived tokens do not pile up.
#[derive(Debug, Default)]
struct TokenOwners {
    owners: HashMap<String, (String, Timestamp)>,
    sweep_at: usize,
}

impl TokenOwners {
    fn insert(&mut self, token_id: &str, tenant: &str, expires_at: Timestamp) {
        self.owners.insert(token_id.to_owned(), (tenant.to_owned(), expires_at));
        if self.owners.len() >= self.sweep_at {
            let now = Timestamp::now();
            self.owners.retain(|_, (_, expires_at)| *expires_at > now);
            self.sweep_at = (2 * self.owners.len()).max(TOKEN_SWEEP_MIN);
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Who a request is.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant it acts in.
    pub tenant: Arc<Tenant>,
    /// The key or token it presented.
    pub principal: Principal,
}

/// What authenticated a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An admin key.
    Key {
        /// Its id.
        key_id: String,
        /// Its role.
        role: Role,
    },
    /// An agent token, which acts as its identity and nothing else.
    Agent {
        /// Its id.
        token_id: String,
        /// The token as the tenant holds it (identity, expiry, scopes).
        token: AgentToken,
    },
}

impl Caller {
    /// The role's name, for messages: `admin`, `auditor` or `agent`.
    pub fn role_name(&self) -> &'static str {
        match &self.principal {
            Principal::Key { role, .. } => role.as_str(),
            Principal::Agent { .. } => "agent",
        }
    }

    /// The agent token, when one authenticated the request.
    pub fn agent(&self) -> Option<(&str, &AgentToken)> {
        match &self.principal {
            Principal::Agent { token_id, token } => Some((token_id, token)),
            Principal::Key { .. } => None,
        }
    }
}

impl Registry {
    /// Loads every tenant in the ledger and starts their sequencers.
    pub fn load(ledger: Arc<dyn Ledger>) -> Result<Registry, tenant::LoadError> {
        let registry = Registry {
            ledger,
            tenants: RwLock::new(HashMap::new()),
            key_owners: RwLock::new(HashMap::new()),
            token_owners: RwLock::new(TokenOwners::default()),
            last_refresh: tokio::sync::Mutex::new(None),
        };
        registry.refresh()?;
        Ok(registry)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Starts serving tenants created since the last look (by `mandate
    /// tenant create` in another process, for instance). Blocks: call it
    /// outside async code.
    pub fn refresh(&self) -> Result<(), tenant::LoadError> {
        for name in self.ledger.tenants()? {
            if self.tenant(&name).is_some() || self.ledger.size(&name)? == 0 {
                continue;
            }
            let tenant = Tenant::start(self.ledger.clone(), &name)?;
            self.register_credentials(&tenant);
            self.tenants.write().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), tenant);
        }
        Ok(())
    }

    /// The tenant with this name.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// All tenants.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Records that `key_id` belongs to `tenant` (after the key's creation
    /// committed).
    pub fn add_key(&self, key_id: &str, tenant: &str) {
        self.key_owners.write().unwrap_or_else(PoisonError::into_inner).insert(key_id.to_owned(), tenant.to_owned());
    }

    /// Records that agent token `token_id` belongs to `tenant` (after its
    /// creation committed).
    pub fn add_token(&self, token_id: &str, tenant: &str, expires_at: Timestamp) {
        self.token_owners.write().unwrap_or_else(PoisonError::into_inner).insert(token_id, tenant, expires_at);
    }

    /// The owner `look` finds; if none, looks for new tenants and (on a
    /// shared store) for credentials other servers created, and asks again.
    async fn owner(self: &Arc<Self>, look: impl Fn(&Registry) -> Option<String>) -> Option<String> {
        if let Some(name) = look(self) {
            return Some(name);
        }
        let missed_at = Instant::now();
        let mut last = self.last_refresh.lock().await;
        if last.is_none_or(|started| started < missed_at) {
            let started = Instant::now();
            let registry = self.clone();
            let refreshed = tokio::task::spawn_blocking(move || registry.refresh()).await;
            match refreshed {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "looking for new tenants"),
                Err(_) => tracing::error!("looking for new tenants failed"),
            }
            if self.ledger.shared() {
                for tenant in self.tenants() {
                    if let Err(problem) = tenant.sync().await {
                        tracing::warn!(tenant = %tenant.name(), detail = %problem.detail(), "catching up");
                    }
                    self.register_credentials(&tenant);
                }
            }
            *last = Some(started);
        }
        drop(last);
        look(self)
    }

    /// Records where every admin key and agent token of `tenant` belongs.
    fn register_credentials(&self, tenant: &Tenant) {
        let name = tenant.name();
        let key_ids: Vec<String> = tenant.peek(|state| state.admin_keys.keys().cloned().collect());
        let token_ids: Vec<(String, Timestamp)> =
            tenant.peek(|state| state.tokens.iter().map(|(id, token)| (id.clone(), token.expires_at)).collect());
        let mut owners = self.key_owners.write().unwrap_or_else(PoisonError::into_inner);
        for key_id in key_ids {
            owners.insert(key_id, name.to_owned());
        }
        drop(owners);
        let mut token_owners = self.token_owners.write().unwrap_or_else(PoisonError::into_inner);
        for (token_id, expires_at) in token_ids {
            token_owners.insert(&token_id, name, expires_at);
        }
    }

    /// Authenticates a bearer token: an admin key (`mk_…`) or an agent token
    /// (`mt_…`) active now.
    ///
    /// With `fresh`, on a shared store, its tenant first folds in what other
    /// servers appended ([`Tenant::sync`]), so a key or token revoked through
    /// any server fails here, and what the request reads next is up to date.
    /// Without it, the check is against this server's state as it is: for
    /// operations the sequencer checks again after it has caught up (those
    /// wrapped in `Op::AsAgent` or `Op::AsAdmin`), which saves a query on
    /// the hot path.
    pub async fn authenticate(self: &Arc<Self>, token: &str, fresh: bool) -> Result<Caller, Problem> {
        if token.starts_with(AGENT_TOKEN_PREFIX) {
            return self.authenticate_agent(token, fresh).await;
        }
        let unauthorized = || Problem::new(Code::Unauthorized, "the bearer token is not a valid key");
        let (key_id, secret) = split_admin_key(token).ok_or_else(unauthorized)?;
        let tenant_name = self
            .owner(|registry| registry.key_owners.read().unwrap_or_else(PoisonError::into_inner).get(key_id).cloned())
            .await
            .ok_or_else(unauthorized)?;
        let tenant = self.tenant(&tenant_name).ok_or_else(unauthorized)?;
        if fresh {
            tenant.sync().await?;
        }
        let key = tenant.peek(|state| state.admin_keys.get(key_id).cloned()).ok_or_else(unauthorized)?;
        if !secret_matches(secret, &key.secret_sha256) || key.revoked {
            return Err(unauthorized());
        }
        Ok(Caller { tenant, principal: Principal::Key { key_id: key_id.to_owned(), role: key.role } })
    }

    async fn authenticate_agent(self: &Arc<Self>, token: &str, fresh: bool) -> Result<Caller, Problem> {
        let unauthorized = || Problem::new(Code::Unauthorized, "the bearer token is not a valid agent token");
        let (token_id, secret) = split_agent_token(token).ok_or_else(unauthorized)?;
        let tenant_name = self
            .owner(|registry| {
                let owners = registry.token_owners.read().unwrap_or_else(PoisonError::into_inner);
                owners.owners.get(token_id).map(|(tenant, _)| tenant.clone())
            })
            .await
            .ok_or_else(unauthorized)?;
        let tenant = self.tenant(&tenant_name).ok_or_else(unauthorized)?;
        if fresh {
            tenant.sync().await?;
        }
        let now = Timestamp::now();
        let (held, inactive) = tenant
            .peek(|state| {
                let held = state.token(token_id, now)?;
                Some((held.clone(), state.token_inactive(held, now)))
            })
            .ok_or_else(unauthorized)?;
        if !secret_matches(secret, &held.secret_sha256) {
            return Err(unauthorized());
        }
        // Past this point the caller holds the secret: it may know why.
        if let Some(inactive) = inactive {
            return Err(Problem::new(Code::Unauthorized, inactive_detail(&held, &inactive)));
        }
        Ok(Caller { tenant, principal: Principal::Agent { token_id: token_id.to_owned(), token: held } })
    }
}

/// Why an agent token does not authenticate, for its holder.
pub fn inactive_detail(token: &AgentToken, inactive: &TokenInactive) -> String {
    match inactive {
        TokenInactive::Revoked => "the agent token was revoked".to_owned(),
        TokenInactive::Expired => {
            format!("the agent token expired at {}", tenant::entry_time(token.expires_at))
        }
        TokenInactive::Ineffective(revoked) => {
            format!("the agent token's identity `{}` is not effective: `{revoked}` is revoked", token.identity)
        }
    }
}
