//! The tenants this server serves, tenant creation, and admin-key
//! authentication.
//!
//! An admin key is `mk_` + 16 hex digits of key id + 64 hex digits of secret.
//! The tenant's log records the key id, its role and the SHA-256 of the
//! secret; the key itself is shown once to whoever created it. A request's
//! key is found by its id and its secret's hash compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mandate_core::policy::PolicySet;
use mandate_log::SignerKey;
use mandate_store::{EntryDraft, Ledger, StoreError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::{Code, Problem};
use crate::state::{Role, TenantSettings, hex, types};
use crate::tenant::{self, Tenant};

/// The prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "mk_";

/// How often an unknown key id may trigger a look for new tenants.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

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

impl NewAdminKey {
    /// Makes a key from the operating system's randomness.
    pub fn generate() -> Result<NewAdminKey, Problem> {
        let key_id = hex(&random::<8>()?);
        let secret = hex(&random::<32>()?);
        let secret_sha256 = Sha256::digest(secret.as_bytes()).into();
        Ok(NewAdminKey { token: format!("{ADMIN_KEY_PREFIX}{key_id}{secret}"), key_id, secret_sha256 })
    }
}

/// Splits `mk_<16 hex id><64 hex secret>` into id and secret.
fn split_admin_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(ADMIN_KEY_PREFIX)?;
    if rest.len() != 80 || !rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    Some(rest.split_at(16))
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
/// this again with the same name.
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
    ledger.append(name, drafts).wait()?;
    Ok(key)
}

/// Every tenant this server serves, and where each admin key belongs.
pub struct Registry {
    ledger: Arc<dyn Ledger>,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    key_owners: RwLock<HashMap<String, String>>,
    last_refresh: Mutex<Option<Instant>>,
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
    /// Its role.
    pub role: Role,
    /// Its key's id.
    pub key_id: String,
}

impl Registry {
    /// Loads every tenant in the ledger and starts their sequencers.
    pub fn load(ledger: Arc<dyn Ledger>) -> Result<Registry, tenant::LoadError> {
        let registry = Registry {
            ledger,
            tenants: RwLock::new(HashMap::new()),
            key_owners: RwLock::new(HashMap::new()),
            last_refresh: Mutex::new(None),
        };
        registry.refresh()?;
        Ok(registry)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Starts serving tenants created since the last look (by `mandate
    /// tenant create` in another process, for instance).
    pub fn refresh(&self) -> Result<(), tenant::LoadError> {
        *self.last_refresh.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        for name in self.ledger.tenants()? {
            if self.tenant(&name).is_some() || self.ledger.size(&name)? == 0 {
                continue;
            }
            let tenant = Tenant::start(self.ledger.clone(), &name)?;
            let key_ids: Vec<String> = tenant.peek(|state| state.admin_keys.keys().cloned().collect());
            self.tenants.write().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), tenant);
            let mut owners = self.key_owners.write().unwrap_or_else(PoisonError::into_inner);
            for key_id in key_ids {
                owners.insert(key_id, name.clone());
            }
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

    /// Authenticates a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Caller, Problem> {
        let unauthorized = || Problem::new(Code::Unauthorized, "the bearer token is not a valid key");
        let (key_id, secret) = split_admin_key(token).ok_or_else(unauthorized)?;
        let owner = |registry: &Registry| {
            registry.key_owners.read().unwrap_or_else(PoisonError::into_inner).get(key_id).cloned()
        };
        let tenant_name = match owner(self) {
            Some(name) => name,
            None => {
                let due = self
                    .last_refresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none_or(|last| last.elapsed() >= REFRESH_INTERVAL);
                if due && let Err(error) = self.refresh() {
                    tracing::error!(%error, "looking for new tenants");
                }
                owner(self).ok_or_else(unauthorized)?
            }
        };
        let tenant = self.tenant(&tenant_name).ok_or_else(unauthorized)?;
        let key = tenant.peek(|state| state.admin_keys.get(key_id).cloned()).ok_or_else(unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // INVARIANT (constant-time-keys): the comparison takes the same time
        // wherever the hashes differ.
        let matches: bool = presented.ct_eq(&key.secret_sha256).into();
        if !matches || key.revoked {
            return Err(unauthorized());
        }
        Ok(Caller { tenant, role: key.role, key_id: key_id.to_owned() })
    }
}
