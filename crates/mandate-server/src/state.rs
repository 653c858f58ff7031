//! A tenant's state: the fold of its log.
//!
//! Every change to a tenant is an entry, and [`TenantState::apply`] is the
//! only way the state changes, both when the sequencer commits a new entry and
//! when the server starts and reads the log from 0. So the state after `n`
//! entries is `fold(apply, log[0..n])`, and `applied` is its version.
//!
//! Entry types and bodies (all bodies are JSON objects):
//!
//! | type | body |
//! |---|---|
//! | `tenant.created` | `tenant`, `log_key` (verifier key text), `settings` |
//! | `settings.updated` | `settings` |
//! | `admin_key.created` | `key_id`, `role`, `secret_sha256` (hex of SHA-256 of the secret half of the key; the key itself never enters the log) |
//! | `admin_key.revoked` | `key_id` |
//! | `policy.updated` | `version`, `policy_hash`, `policies`, `schema` (or null) |
//! | `identity.created` | the identity (see `mandate_core::wire`) |
//! | `identity.revoked` | `id`, `descendants` (whom the revocation cut off, for readers of the log) |
//! | `grant.created` | the grant, with its `id` (see `mandate_core::wire`) |
//! | `grant.revoked` | `id` |
//! | `token.created` | `id`, `identity`, `expires_at`, `scopes` (action patterns, or null for every action), `secret_sha256` (hex of SHA-256 of the token's secret half; the token itself never enters the log); issued at the entry's time |
//! | `token.revoked` | `id` |
//! | `decision` | the answer (SPEC §3) and the `request` it answers (with `token_id` when an agent token asked) |
//! | `budget.*`, `reservation.*`, `approval.*` | see `spend.rs` |
//! | `event.recorded` | `id` (UUID v7), `decision_id`, `identity` (the decision's acting identity), `outcome` (`success`, `failure` or `error`), and if given `duration_ms`, `output_digest`, `attributes`: a tool's outcome after a decision of the last 24 h (any decision, a deny included); changes nothing in the state |

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use mandate_core::budget::Resolution;
use mandate_core::decision::{Authority, Settings};
use mandate_core::identity::IdentityId;
use mandate_core::pattern::ActionPattern;
use mandate_core::policy::PolicySet;
use mandate_core::wire;
use serde_json::{Map, Value};

use crate::spend::{self, ApprovalStatus, Spending};

/// Entry type names, in one place.
pub mod types {
    /// The first entry of every log.
    pub const TENANT_CREATED: &str = "tenant.created";
    /// Tenant settings replaced.
    pub const SETTINGS_UPDATED: &str = "settings.updated";
    /// An admin key issued.
    pub const ADMIN_KEY_CREATED: &str = "admin_key.created";
    /// An admin key revoked.
    pub const ADMIN_KEY_REVOKED: &str = "admin_key.revoked";
    /// A new policy set version.
    pub const POLICY_UPDATED: &str = "policy.updated";
    /// An identity registered.
    pub const IDENTITY_CREATED: &str = "identity.created";
    /// An identity revoked.
    pub const IDENTITY_REVOKED: &str = "identity.revoked";
    /// A grant stored.
    pub const GRANT_CREATED: &str = "grant.created";
    /// A grant revoked.
    pub const GRANT_REVOKED: &str = "grant.revoked";
    /// An agent token issued.
    pub const TOKEN_CREATED: &str = "token.created";
    /// An agent token revoked.
    pub const TOKEN_REVOKED: &str = "token.revoked";
    /// A decision answered.
    pub const DECISION: &str = "decision";
    /// A budget set.
    pub const BUDGET_CREATED: &str = "budget.created";
    /// A budget's limit changed.
    pub const BUDGET_UPDATED: &str = "budget.updated";
    /// A reservation settled with its actual amounts.
    pub const RESERVATION_SETTLED: &str = "reservation.settled";
    /// A reservation voided.
    pub const RESERVATION_VOIDED: &str = "reservation.voided";
    /// A reservation expired unresolved.
    pub const RESERVATION_EXPIRED: &str = "reservation.expired";
    /// A pending decision approved.
    pub const APPROVAL_APPROVED: &str = "approval.approved";
    /// A pending decision denied (its reservation voided).
    pub const APPROVAL_DENIED: &str = "approval.denied";
    /// A pending decision unanswered in time.
    pub const APPROVAL_EXPIRED: &str = "approval.expired";
    /// A tool's outcome after a decision.
    pub const EVENT_RECORDED: &str = "event.recorded";
    /// A tool call read from a coding agent's transcript (`mandate import`).
    pub const EVENT_IMPORTED: &str = "event.imported";
}

/// The outcomes an event may record.
pub const EVENT_OUTCOMES: [&str; 3] = ["success", "failure", "error"];

/// The outcomes of an imported tool call: what the transcript shows
/// (`denied`: a hook or the client's permissions refused it; `unknown`: the
/// transcript ends before its result).
pub const IMPORT_OUTCOMES: [&str; 4] = ["success", "failure", "denied", "unknown"];

/// The parts of imported transcripts by `(identity, transcript_sha256,
/// part)`, kept for the log's lifetime (a few bytes per imported call), so
/// that importing a transcript again as the same identity writes nothing.
/// (Another identity importing the same file gets entries of its own, and
/// learns nothing of the first import.)
pub type Imports = HashMap<(IdentityId, String, u64), ImportedPart>;

/// One imported part of a transcript.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedPart {
    /// How many calls the part holds.
    pub calls: u64,
    /// The entries of those written so far, in the part's order.
    pub indexes: Vec<u64>,
}

/// What an admin key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything in the tenant.
    Admin,
    /// Read the log, search and export; change nothing.
    Auditor,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// An admin key as the tenant holds it: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// Its role.
    pub role: Role,
    /// SHA-256 of the secret half.
    pub secret_sha256: [u8; 32],
    /// Whether it was revoked.
    pub revoked: bool,
}

/// How long an expired agent token is remembered (for introspection, which
/// then says `active: false`, and revocation by id); after that the fold
/// forgets it, so that short-lived tokens do not pile up in memory.
pub const TOKEN_RETENTION: SignedDuration = SignedDuration::from_hours(24);

/// An agent token as the tenant holds it: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentToken {
    /// The identity it acts as, and only as.
    pub identity: IdentityId,
    /// When it was issued (its entry's time).
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The actions it may ask about; `None`: every action.
    pub scopes: Option<Vec<ActionPattern>>,
    /// SHA-256 of the secret half.
    pub secret_sha256: [u8; 32],
    /// The `token.created` entry.
    pub log_index: u64,
    /// The `token.revoked` entry, once revoked.
    pub revoked_log_index: Option<u64>,
}

/// Why an agent token does not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenInactive {
    /// It was revoked.
    Revoked,
    /// Its time is up.
    Expired,
    /// Its identity or an ancestor is revoked (the first one walking up).
    Ineffective(IdentityId),
}

impl AgentToken {
    /// Whether the token may ask about `action`.
    pub fn allows(&self, action: &str) -> bool {
        self.scopes.as_ref().is_none_or(|scopes| scopes.iter().any(|scope| scope.matches(action)))
    }

    /// The scopes as RFC 7662's `scope`: space-separated, `*` when unrestricted.
    pub fn scope_text(&self) -> String {
        match &self.scopes {
            None => "*".to_owned(),
            Some(scopes) => scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        }
    }
}

/// One version of the policy set, as listed by `GET /v1/policies/versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// 1, 2, …
    pub version: u64,
    /// The set's hash, recorded by every decision it decided.
    pub policy_hash: String,
    /// When it was installed.
    pub time: String,
    /// Its entry.
    pub log_index: u64,
}

/// How much of each request's `input` the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordInputs {
    /// Only the SHA-256 digest (the default).
    Digest,
    /// The whole input.
    Full,
}

/// Tenant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    /// Unsigned or badly signed grants count as absent.
    pub require_signed_grants: bool,
    /// Whether decisions record the tool input itself or only its digest.
    pub record_inputs: RecordInputs,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings { require_signed_grants: false, record_inputs: RecordInputs::Digest }
    }
}

impl TenantSettings {
    /// The wire form.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("record_inputs".into(), Value::from(self.record_inputs.as_str()));
        object.insert("require_signed_grants".into(), Value::Bool(self.require_signed_grants));
        object
    }

    /// Parses the wire form; every field is optional and defaults to the
    /// current value in `base`.
    pub fn from_json(object: &Map<String, Value>, base: &TenantSettings) -> Result<TenantSettings, wire::FieldError> {
        let mut settings = base.clone();
        for (key, value) in object {
            match (key.as_str(), value) {
                ("require_signed_grants", Value::Bool(flag)) => settings.require_signed_grants = *flag,
                ("record_inputs", Value::String(text)) if text == "digest" => {
                    settings.record_inputs = RecordInputs::Digest;
                }
                ("record_inputs", Value::String(text)) if text == "full" => settings.record_inputs = RecordInputs::Full,
                ("require_signed_grants", _) => return Err(field_error(key, "must be true or false")),
                ("record_inputs", _) => return Err(field_error(key, "must be \"digest\" or \"full\"")),
                _ => return Err(field_error(key, "is not a setting")),
            }
        }
        Ok(settings)
    }
}

impl RecordInputs {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordInputs::Digest => "digest",
            RecordInputs::Full => "full",
        }
    }
}

fn field_error(field: &str, message: &str) -> wire::FieldError {
    wire::FieldError { field: field.to_owned(), message: message.to_owned() }
}

/// Why an entry could not be applied. Applying is all or nothing per entry,
/// so a failed apply leaves the state as it was. For a new change this is the
/// client's error; for an entry read back from the log it means the log holds
/// something this server does not understand, and the tenant is not served
/// rather than served wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("entry {index} ({entry_type}): {cause}")]
pub struct ApplyError {
    /// The entry's index.
    pub index: u64,
    /// Its type.
    pub entry_type: String,
    /// What is wrong.
    pub cause: Cause,
}

/// What made an entry inapplicable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Cause {
    /// The identity cannot join the directory.
    #[error(transparent)]
    Identity(#[from] mandate_core::identity::IdentityError),
    /// The policy set does not compile.
    #[error(transparent)]
    Policy(#[from] mandate_core::policy::PolicyError),
    /// A field of the body is invalid.
    #[error(transparent)]
    Field(#[from] wire::FieldError),
    /// Anything else.
    #[error("{0}")]
    Malformed(String),
}

/// One tenant's state, the fold of its log.
#[derive(Debug, Clone)]
pub struct TenantState {
    /// The tenant's name.
    pub name: String,
    /// Identities, grants, the policy set: what decisions read.
    pub authority: Authority,
    /// Grant id → grantee, to find a grant by id.
    pub grant_owners: HashMap<String, IdentityId>,
    /// The grant each signature was first stored with: a signature is good
    /// for one grant, so that a revoked signed grant cannot be posted again.
    pub grant_signatures: HashMap<[u8; 64], String>,
    /// Every policy set version, oldest first.
    pub policy_versions: Vec<PolicyVersion>,
    /// Admin keys by key id.
    pub admin_keys: BTreeMap<String, AdminKey>,
    /// Agent tokens by id (expired ones forgotten after [`TOKEN_RETENTION`]).
    pub tokens: HashMap<String, AgentToken>,
    token_expiries: BTreeSet<(Timestamp, String)>,
    /// Settings.
    pub settings: TenantSettings,
    /// Where each identity was created and revoked: `(created index, revoked index)`.
    pub identity_entries: HashMap<IdentityId, (u64, Option<u64>)>,
    /// Budgets, reservations, approvals, request ids.
    pub spending: Spending,
    /// The transcript parts imported.
    pub imports: Imports,
    /// The time of the last entry folded in (entry times never go back).
    pub last_time: Option<Timestamp>,
    /// How many entries are folded in: the state's version.
    pub applied: u64,
    /// The leaf hash of the last entry folded in from the log, which the
    /// next entry's `prev` must name (kept by the tenant's fold, not by
    /// [`TenantState::apply`], which sees bodies, not bytes).
    pub last_leaf: mandate_log::Hash,
}

impl TenantState {
    /// The state of an empty log.
    pub fn new(name: &str) -> Result<TenantState, mandate_core::policy::PolicyError> {
        // Replaced by the log's first `policy.updated`, before any decision.
        let policies = PolicySet::default_for_new_tenant()?;
        Ok(TenantState {
            name: name.to_owned(),
            authority: Authority {
                directory: Default::default(),
                grants: BTreeMap::new(),
                policies,
                settings: Settings::default(),
            },
            grant_owners: HashMap::new(),
            grant_signatures: HashMap::new(),
            policy_versions: Vec::new(),
            admin_keys: BTreeMap::new(),
            tokens: HashMap::new(),
            token_expiries: BTreeSet::new(),
            settings: TenantSettings::default(),
            identity_entries: HashMap::new(),
            spending: Spending::default(),
            imports: Imports::new(),
            last_time: None,
            applied: 0,
            last_leaf: mandate_log::Hash::ZERO,
        })
    }

    /// Folds one entry in. `index` must be `self.applied`.
    pub fn apply(
        &mut self,
        index: u64,
        time: &str,
        entry_type: &str,
        body: &Map<String, Value>,
    ) -> Result<(), ApplyError> {
        let fail = |cause: Cause| ApplyError { index, entry_type: entry_type.to_owned(), cause };
        let malformed = |reason: String| fail(Cause::Malformed(reason));
        if index != self.applied {
            return Err(malformed(format!("expected entry {}", self.applied)));
        }
        let now: Timestamp = time.parse().map_err(|e| malformed(format!("time `{time}`: {e}")))?;
        self.advance(now);
        match entry_type {
            types::TENANT_CREATED => {
                let settings = object(body, "settings").map_err(malformed)?;
                self.set_settings(
                    TenantSettings::from_json(settings, &TenantSettings::default()).map_err(|e| fail(e.into()))?,
                );
            }
            types::SETTINGS_UPDATED => {
                let settings = object(body, "settings").map_err(malformed)?;
                self.set_settings(TenantSettings::from_json(settings, &self.settings).map_err(|e| fail(e.into()))?);
            }
            types::ADMIN_KEY_CREATED => {
                let key_id = string(body, "key_id").map_err(malformed)?;
                let role = Role::parse(string(body, "role").map_err(malformed)?)
                    .ok_or_else(|| malformed("unknown role".into()))?;
                let secret_sha256 = hex32(string(body, "secret_sha256").map_err(malformed)?)
                    .ok_or_else(|| malformed("bad secret_sha256".into()))?;
                self.admin_keys.insert(key_id.to_owned(), AdminKey { role, secret_sha256, revoked: false });
            }
            types::ADMIN_KEY_REVOKED => {
                let key_id = string(body, "key_id").map_err(malformed)?;
                let key =
                    self.admin_keys.get_mut(key_id).ok_or_else(|| malformed(format!("no admin key `{key_id}`")))?;
                key.revoked = true;
            }
            types::POLICY_UPDATED => {
                let policies = string(body, "policies").map_err(malformed)?;
                let schema = match body.get("schema") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(schema)) => Some(schema.as_str()),
                    Some(_) => return Err(malformed("`schema` is not a string".into())),
                };
                let set = PolicySet::new(policies, schema).map_err(|e| fail(e.into()))?;
                self.install_policies(index, time, set);
                return Ok(());
            }
            types::IDENTITY_CREATED => {
                let identity = wire::identity_from_json(body).map_err(|e| fail(e.into()))?;
                let id = identity.id.clone();
                self.authority.directory.insert(identity).map_err(|e| fail(e.into()))?;
                self.identity_entries.insert(id, (index, None));
            }
            types::IDENTITY_REVOKED => {
                let id =
                    IdentityId::parse(string(body, "id").map_err(malformed)?).map_err(|e| malformed(e.to_string()))?;
                self.authority.directory.revoke(&id).map_err(|e| fail(e.into()))?;
                if let Some(entries) = self.identity_entries.get_mut(&id) {
                    entries.1.get_or_insert(index);
                }
            }
            types::GRANT_CREATED => {
                let mut fields = body.clone();
                let id = match fields.remove("id") {
                    Some(Value::String(id)) => id,
                    _ => return Err(malformed("`id` is missing".into())),
                };
                let grant = wire::grant_from_json(&fields, id.clone()).map_err(|e| fail(e.into()))?;
                if let Some(signature) = grant.signature {
                    self.grant_signatures.entry(signature).or_insert_with(|| id.clone());
                }
                self.grant_owners.insert(id, grant.grantee.clone());
                self.authority.add_grant(grant);
            }
            types::GRANT_REVOKED => {
                let id = string(body, "id").map_err(malformed)?;
                let held = self.grant_mut(id).ok_or_else(|| malformed(format!("no grant `{id}`")))?;
                held.grant.revoked = true;
            }
            types::TOKEN_CREATED => {
                let id = string(body, "id").map_err(malformed)?;
                if self.tokens.contains_key(id) {
                    return Err(malformed(format!("token `{id}` exists")));
                }
                let identity = string(body, "identity").map_err(malformed)?;
                let identity = IdentityId::parse(identity)
                    .ok()
                    .filter(|identity| self.authority.directory.get(identity).is_some())
                    .ok_or_else(|| malformed(format!("no identity `{identity}`")))?;
                let expires_at: Timestamp = string(body, "expires_at")
                    .map_err(malformed)?
                    .parse()
                    .map_err(|e| malformed(format!("`expires_at`: {e}")))?;
                let scopes = match body.get("scopes") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(scopes)) => Some(
                        scopes
                            .iter()
                            .map(|scope| scope.as_str().and_then(|scope| ActionPattern::parse(scope).ok()))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| malformed("a scope is not an action pattern".into()))?,
                    ),
                    Some(_) => return Err(malformed("`scopes` is not an array".into())),
                };
                let secret_sha256 = hex32(string(body, "secret_sha256").map_err(malformed)?)
                    .ok_or_else(|| malformed("bad secret_sha256".into()))?;
                let token = AgentToken {
                    identity,
                    issued_at: now,
                    expires_at,
                    scopes,
                    secret_sha256,
                    log_index: index,
                    revoked_log_index: None,
                };
                self.token_expiries.insert((forgotten_at(expires_at), id.to_owned()));
                self.tokens.insert(id.to_owned(), token);
            }
            types::TOKEN_REVOKED => {
                let id = string(body, "id").map_err(malformed)?;
                let token = self.tokens.get_mut(id).ok_or_else(|| malformed(format!("no token `{id}`")))?;
                token.revoked_log_index.get_or_insert(index);
            }
            types::DECISION => self.spending.apply_decision(index, body, now).map_err(malformed)?,
            types::BUDGET_CREATED => {
                let identity = string(body, "identity").map_err(malformed)?;
                let known =
                    IdentityId::parse(identity).ok().is_some_and(|id| self.authority.directory.get(&id).is_some());
                if !known {
                    return Err(malformed(format!("no identity `{identity}`")));
                }
                self.spending.apply_budget_created(body, now).map_err(malformed)?;
            }
            types::BUDGET_UPDATED => self.spending.apply_budget_updated(body, now).map_err(malformed)?,
            types::RESERVATION_SETTLED => {
                let id = string(body, "id").map_err(malformed)?;
                let actual =
                    spend::amounts(body.get("amounts").unwrap_or(&Value::Null), "amounts").map_err(malformed)?;
                self.spending.apply_resolution(id, Resolution::Settle(actual), now).map_err(malformed)?;
            }
            types::RESERVATION_VOIDED | types::RESERVATION_EXPIRED => {
                let id = string(body, "id").map_err(malformed)?;
                let resolution =
                    if entry_type == types::RESERVATION_VOIDED { Resolution::Void } else { Resolution::Expire };
                self.spending.apply_resolution(id, resolution, now).map_err(malformed)?;
            }
            types::APPROVAL_APPROVED | types::APPROVAL_DENIED | types::APPROVAL_EXPIRED => {
                let id = string(body, "id").map_err(malformed)?;
                let by = body.get("by").and_then(Value::as_str);
                let status = match entry_type {
                    types::APPROVAL_APPROVED => ApprovalStatus::Approved,
                    types::APPROVAL_DENIED => ApprovalStatus::Denied,
                    _ => ApprovalStatus::Expired,
                };
                self.spending.apply_approval(index, id, status, by, now).map_err(malformed)?;
            }
            types::EVENT_RECORDED => {
                for field in ["id", "decision_id", "identity"] {
                    string(body, field).map_err(malformed)?;
                }
                let outcome = string(body, "outcome").map_err(malformed)?;
                if !EVENT_OUTCOMES.contains(&outcome) {
                    return Err(malformed(format!("unknown outcome `{outcome}`")));
                }
            }
            types::EVENT_IMPORTED => {
                for field in ["source", "tool", "action", "input_digest"] {
                    string(body, field).map_err(malformed)?;
                }
                let identity = IdentityId::parse(string(body, "identity").map_err(malformed)?)
                    .map_err(|e| malformed(e.to_string()))?;
                let outcome = string(body, "outcome").map_err(malformed)?;
                if !IMPORT_OUTCOMES.contains(&outcome) {
                    return Err(malformed(format!("unknown outcome `{outcome}`")));
                }
                let transcript = string(body, "transcript_sha256").map_err(malformed)?;
                let number = |field: &str| {
                    body.get(field).and_then(Value::as_u64).ok_or_else(|| malformed(format!("`{field}` is missing")))
                };
                let (part, position, calls) = (number("part")?, number("position")?, number("calls_in_part")?);
                let imported = self.imports.entry((identity, transcript.to_owned(), part)).or_default();
                if imported.indexes.is_empty() {
                    imported.calls = calls;
                }
                // A part's calls are appended together, in order, once.
                if position != imported.indexes.len() as u64 || position >= calls || calls != imported.calls {
                    return Err(malformed(format!("call {position} of part {part} is out of order")));
                }
                imported.indexes.push(index);
            }
            other => return Err(malformed(format!("unknown entry type `{other}`"))),
        }
        self.applied += 1;
        Ok(())
    }

    /// Folds in a `policy.updated` entry whose set the caller has compiled
    /// already (the sequencer does, so that Cedar's compiler does not run
    /// while it holds the state).
    pub fn install_policies(&mut self, index: u64, time: &str, set: PolicySet) {
        if let Ok(now) = time.parse::<Timestamp>() {
            self.advance(now);
        }
        let version = self.policy_versions.len() as u64 + 1;
        self.policy_versions.push(PolicyVersion {
            version,
            policy_hash: set.version_hash(),
            time: time.to_owned(),
            log_index: index,
        });
        self.authority.policies = set;
        self.applied += 1;
    }

    /// Moves the state's clock to an entry's time: forgets what is due to be
    /// forgotten at `now`.
    fn advance(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.token_expiries.first()
            && *at <= now
        {
            if let Some((_, id)) = self.token_expiries.pop_first() {
                self.tokens.remove(&id);
            }
        }
        self.last_time = Some(now);
    }

    /// The agent token with this id, as the state holds it at `now` (an
    /// expired one until the fold forgets it).
    pub fn token(&self, id: &str, now: Timestamp) -> Option<&AgentToken> {
        self.tokens.get(id).filter(|token| forgotten_at(token.expires_at) > now)
    }

    /// Why the token is inactive at `now`, or `None` when it is active: not
    /// revoked, not expired, and its identity effective (it and every
    /// ancestor active).
    pub fn token_inactive(&self, token: &AgentToken, now: Timestamp) -> Option<TokenInactive> {
        if token.revoked_log_index.is_some() {
            return Some(TokenInactive::Revoked);
        }
        if token.expires_at <= now {
            return Some(TokenInactive::Expired);
        }
        match self.authority.directory.chain(&token.identity) {
            Ok(_) => None,
            Err(mandate_core::identity::ChainError::Revoked { revoked, .. }) => {
                Some(TokenInactive::Ineffective(revoked))
            }
            Err(mandate_core::identity::ChainError::Unknown { id }) => Some(TokenInactive::Ineffective(id)),
        }
    }

    fn set_settings(&mut self, settings: TenantSettings) {
        self.authority.settings.require_signed_grants = settings.require_signed_grants;
        self.settings = settings;
    }

    /// The grant with this id.
    pub fn grant(&self, id: &str) -> Option<&mandate_core::decision::HeldGrant> {
        let grantee = self.grant_owners.get(id)?;
        self.authority.grants.get(grantee)?.iter().find(|held| held.grant.id == id)
    }

    fn grant_mut(&mut self, id: &str) -> Option<&mut mandate_core::decision::HeldGrant> {
        let grantee = self.grant_owners.get(id)?;
        self.authority.grants.get_mut(grantee)?.iter_mut().find(|held| held.grant.id == id)
    }
}

/// When the fold forgets a token that expires at `expires_at`.
fn forgotten_at(expires_at: Timestamp) -> Timestamp {
    expires_at.checked_add(TOKEN_RETENTION).unwrap_or(Timestamp::MAX)
}

fn string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    body.get(field).and_then(Value::as_str).ok_or_else(|| format!("`{field}` is missing or not a string"))
}

fn object<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a Map<String, Value>, String> {
    body.get(field).and_then(Value::as_object).ok_or_else(|| format!("`{field}` is missing or not an object"))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses 64 lowercase hex digits.
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let (Some(high), Some(low)) = (pair.first().copied().and_then(digit), pair.get(1).copied().and_then(digit))
        else {
            return None;
        };
        *slot = high << 4 | low;
    }
    Some(out)
}
