//! The decision (SPEC §3): may this identity perform this action on this
//! resource, with these amounts? The first failing step decides and is named.
//!
//! 1. Resolve the chain from the acting identity up to its human
//!    (`identity_unknown`, `identity_revoked`).
//! 2. Every hop below the human holds a live grant covering the action, the
//!    resource and the amounts (`no_grant`, `grant_expired`,
//!    `grant_signature_invalid`, `limit_exceeded`).
//! 3. Cedar: a forbid, or no permit, denies (`policy_forbid`,
//!    `policy_no_permit`); evaluation errors are reported, and an erroring
//!    forbid denies.
//! 4. Budgets: the seam [`BudgetCheck`], filled by the budgets issue
//!    (`budget_exceeded`).
//!
//! [`decide`] is a pure function of the [`Authority`] and the request: the
//! time is part of the request, so a decision replays exactly from the log.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::budget::{Budgets, Shortfall, Touch};
use crate::grant::{Coverage, Grant};
use crate::identity::{ChainError, Directory, IdentityId};
use crate::policy::{ChainEntities, PolicyDecision, PolicyError, PolicyEvaluationError, PolicySet};

/// What a decision answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The action may go ahead.
    Allow,
    /// It may not; the reasons say why.
    Deny,
    /// A permit marked `@approval("required")` decided: a human must approve.
    Pending,
}

impl Outcome {
    /// The wire name: `allow`, `deny`, `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Pending => "pending",
        }
    }
}

/// The stable reason codes of SPEC §3. Clients switch on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The acting identity (or an ancestor) does not exist.
    IdentityUnknown,
    /// The acting identity or an ancestor is revoked.
    IdentityRevoked,
    /// A hop holds no grant covering the action and resource.
    NoGrant,
    /// The only covering grants at a hop are expired or not yet valid.
    GrantExpired,
    /// The only covering grants at a hop have signatures that do not verify
    /// (or are unsigned while the tenant requires signed grants).
    GrantSignatureInvalid,
    /// A covering grant exists but an amount is over its per-call limit.
    LimitExceeded,
    /// A Cedar forbid policy applies (or errored, which fails closed).
    PolicyForbid,
    /// No Cedar permit policy applies.
    PolicyNoPermit,
    /// A budget on the chain has no room for the amounts.
    BudgetExceeded,
    /// The policy set could not evaluate the request (a malformed context).
    InvalidRequest,
}

impl ReasonCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::IdentityUnknown => "identity_unknown",
            ReasonCode::IdentityRevoked => "identity_revoked",
            ReasonCode::NoGrant => "no_grant",
            ReasonCode::GrantExpired => "grant_expired",
            ReasonCode::GrantSignatureInvalid => "grant_signature_invalid",
            ReasonCode::LimitExceeded => "limit_exceeded",
            ReasonCode::PolicyForbid => "policy_forbid",
            ReasonCode::PolicyNoPermit => "policy_no_permit",
            ReasonCode::BudgetExceeded => "budget_exceeded",
            ReasonCode::InvalidRequest => "invalid_request",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason: a code, a sentence, and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The stable code.
    pub code: ReasonCode,
    /// A sentence for people.
    pub message: String,
    /// The identity the reason is about (the revoked ancestor, the hop).
    pub identity: Option<IdentityId>,
    /// The policies the reason is about.
    pub policies: Vec<String>,
    /// The budget without room, for `budget_exceeded`.
    pub shortfall: Option<Box<Shortfall>>,
}

impl Reason {
    fn new(code: ReasonCode, message: impl Into<String>) -> Reason {
        Reason { code, message: message.into(), identity: None, policies: Vec::new(), shortfall: None }
    }

    fn about(mut self, identity: &IdentityId) -> Reason {
        self.identity = Some(identity.clone());
        self
    }
}

/// Tenant settings that change decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// An unsigned or badly signed grant counts as absent.
    pub require_signed_grants: bool,
}

/// Everything a decision reads: the tenant's authority state.
#[derive(Debug, Clone)]
pub struct Authority {
    /// The identities.
    pub directory: Directory,
    /// Grants by grantee, each with its signature checked once.
    pub grants: BTreeMap<IdentityId, Vec<HeldGrant>>,
    /// The current policy set.
    pub policies: PolicySet,
    /// The tenant's settings.
    pub settings: Settings,
}

/// What a grant's signature says, checked against the grantor's registered
/// key when the grant is stored (and again whenever that key changes), not on
/// every decision: an Ed25519 verification costs more than the rest of a
/// decision together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No signature.
    Unsigned,
    /// Signed, and the signature verifies under the grantor's key.
    Valid,
    /// Signed, but it does not verify, or the grantor has no key.
    Invalid,
}

/// A grant as the authority holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGrant {
    /// The grant.
    pub grant: Grant,
    /// Its signature, checked.
    pub signature: SignatureCheck,
}

impl HeldGrant {
    /// Checks `grant`'s signature against its grantor's key in `directory`.
    pub fn new(grant: Grant, directory: &Directory) -> HeldGrant {
        // The server verifies only against the key it holds for the grantor.
        let key = directory.get(&grant.grantor).and_then(|identity| identity.public_key);
        let signature = match (&grant.signature, key) {
            (None, _) => SignatureCheck::Unsigned,
            (Some(_), Some(key)) if grant.verify_signature(&key) => SignatureCheck::Valid,
            (Some(_), _) => SignatureCheck::Invalid,
        };
        HeldGrant { grant, signature }
    }
}

impl Authority {
    /// Stores a grant, checking its signature once.
    pub fn add_grant(&mut self, grant: Grant) {
        let held = HeldGrant::new(grant, &self.directory);
        self.grants.entry(held.grant.grantee.clone()).or_default().push(held);
    }

    /// Checks again the signatures of every grant by `grantor`: call it
    /// whenever the grantor's public key changes.
    ///
    /// INVARIANT (checked-signatures): every [`HeldGrant::signature`] reflects
    /// the grantor's current key.
    pub fn recheck_signatures_by(&mut self, grantor: &IdentityId) {
        for held in self.grants.values_mut().flatten().filter(|held| held.grant.grantor == *grantor) {
            *held = HeldGrant::new(held.grant.clone(), &self.directory);
        }
    }
}

/// A question put to [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The acting identity.
    pub identity: &'a IdentityId,
    /// The action, e.g. `payments.charge`.
    pub action: &'a str,
    /// The resource, e.g. `merchant://books`.
    pub resource: &'a str,
    /// The caller's context object (Cedar's `context`, without the reserved keys).
    pub context: &'a Map<String, Value>,
    /// Amounts in minor units by dimension.
    pub amounts: &'a BTreeMap<String, u64>,
    /// When: the sequencer's clock, read once per batch.
    pub at: Timestamp,
}

/// Budgets, step 4: what every budget on `chain` would take for `amounts`
/// at `at`, or why one has no room.
pub trait BudgetCheck {
    /// Plans the decision's budget touches without changing anything.
    fn check(&self, chain: &[IdentityId], amounts: &BTreeMap<String, u64>, at: Timestamp)
    -> Result<Vec<Touch>, Reason>;
}

/// No budgets: every amount fits.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBudgets;

impl BudgetCheck for NoBudgets {
    fn check(
        &self,
        _chain: &[IdentityId],
        _amounts: &BTreeMap<String, u64>,
        _at: Timestamp,
    ) -> Result<Vec<Touch>, Reason> {
        Ok(Vec::new())
    }
}

impl BudgetCheck for Budgets {
    fn check(
        &self,
        chain: &[IdentityId],
        amounts: &BTreeMap<String, u64>,
        at: Timestamp,
    ) -> Result<Vec<Touch>, Reason> {
        self.plan(chain, amounts, at).map_err(|shortfall| {
            let mut reason = Reason::new(ReasonCode::BudgetExceeded, shortfall.to_string()).about(&shortfall.identity);
            reason.shortfall = Some(Box::new(shortfall));
            reason
        })
    }
}

/// The answer (SPEC §3), before the log and reservations add their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow, deny or pending.
    pub outcome: Outcome,
    /// Why: empty when allowed without remark.
    pub reasons: Vec<Reason>,
    /// Identity ids from the acting identity up to the human (empty when the
    /// chain could not be resolved).
    pub chain: Vec<IdentityId>,
    /// The policies that determined the Cedar step.
    pub determining_policies: Vec<String>,
    /// Every Cedar evaluation error, never silently ignored.
    pub policy_errors: Vec<PolicyEvaluationError>,
    /// The hash of the policy set version that decided.
    pub policy_version: String,
    /// What an allowed or pending decision takes from each budget on the
    /// chain (empty when denied).
    pub budgets: Vec<Touch>,
}

/// Decides a request against the tenant's authority (steps 1–4 of SPEC §3).
pub fn decide(authority: &Authority, request: &Request<'_>, budgets: &dyn BudgetCheck) -> Decision {
    let policy_version = authority.policies.version_hash();
    let deny = |chain: Vec<IdentityId>, reason: Reason| Decision {
        outcome: Outcome::Deny,
        reasons: vec![reason],
        chain,
        determining_policies: Vec::new(),
        policy_errors: Vec::new(),
        policy_version: policy_version.clone(),
        budgets: Vec::new(),
    };

    // 1. The chain.
    let chain = match authority.directory.chain(request.identity) {
        Ok(chain) => chain,
        Err(error) => return deny(Vec::new(), chain_reason(&error)),
    };
    let chain_ids: Vec<IdentityId> = chain.ids().cloned().collect();

    // 2. Grants, on every hop below the human. Each hop's grant must cover the
    // whole request, which is attenuation checked again at decision time.
    for (grantee, grantor) in chain.hops() {
        if let Some(reason) = check_hop(authority, grantee, grantor, request) {
            return deny(chain_ids, reason);
        }
    }

    // 3. Cedar, with the chain's entities the directory built when the
    // acting identity was inserted.
    let built;
    let entities = match authority.directory.chain_entities(request.identity) {
        Some(entities) => entities,
        // Not reached: the chain resolved, so the identity is stored. Built
        // here rather than assumed, so that it stays a decision.
        None => {
            let attributes: Vec<(IdentityId, &Map<String, Value>)> = chain_ids
                .iter()
                .filter_map(|id| authority.directory.get(id).map(|identity| (id.clone(), &identity.attributes)))
                .collect();
            built = ChainEntities::from_chain(&attributes);
            &built
        }
    };
    let evaluated =
        authority.policies.evaluate_chain(entities, request.action, request.resource, request.context, request.amounts);
    let outcome = match evaluated {
        Ok(outcome) => outcome,
        Err(error) => return deny(chain_ids, policy_error_reason(&error)),
    };
    let mut decision = Decision {
        outcome: Outcome::Allow,
        reasons: Vec::new(),
        chain: chain_ids,
        determining_policies: outcome.determining.clone(),
        policy_errors: outcome.errors.clone(),
        policy_version,
        budgets: Vec::new(),
    };
    match outcome.decision {
        PolicyDecision::Forbid => {
            decision.outcome = Outcome::Deny;
            let mut reason = Reason::new(
                ReasonCode::PolicyForbid,
                format!("forbidden by policy {}", quoted_list(&outcome.determining)),
            );
            reason.policies = outcome.determining;
            decision.reasons.push(reason);
            return decision;
        }
        PolicyDecision::NoPermit => {
            decision.outcome = Outcome::Deny;
            decision.reasons.push(Reason::new(ReasonCode::PolicyNoPermit, "no policy permits this request"));
            return decision;
        }
        PolicyDecision::Permit => {}
    }

    // 4. Budgets.
    match budgets.check(&decision.chain, request.amounts, request.at) {
        Ok(touches) => decision.budgets = touches,
        Err(reason) => {
            decision.outcome = Outcome::Deny;
            decision.reasons.push(reason);
            return decision;
        }
    }
    if outcome.approval_required {
        decision.outcome = Outcome::Pending;
    }
    decision
}

fn chain_reason(error: &ChainError) -> Reason {
    match error {
        ChainError::Unknown { id } => {
            Reason::new(ReasonCode::IdentityUnknown, format!("identity `{id}` does not exist")).about(id)
        }
        ChainError::Revoked { id, revoked } => {
            let message = if id == revoked {
                format!("identity `{id}` is revoked")
            } else {
                format!("identity `{id}` has no authority: its ancestor `{revoked}` is revoked")
            };
            Reason::new(ReasonCode::IdentityRevoked, message).about(revoked)
        }
    }
}

fn policy_error_reason(error: &PolicyError) -> Reason {
    Reason::new(ReasonCode::InvalidRequest, error.to_string())
}

fn quoted_list(items: &[String]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}

/// Step 2 at one hop: the first failure, if any.
///
/// Among the hop's grants that cover the action and resource, one that is
/// live, validly signed (when signatures count) and within its limits allows
/// the hop. Otherwise the reason names the most specific failure: over a
/// limit, then a bad signature, then expiry; no covering grant at all is
/// `no_grant`.
fn check_hop(authority: &Authority, hop: &IdentityId, grantor: &IdentityId, request: &Request<'_>) -> Option<Reason> {
    let grants = authority.grants.get(hop).map(Vec::as_slice).unwrap_or_default();
    let (mut over_limit, mut bad_signature, mut expired) = (None, false, false);
    for held in grants.iter().filter(|held| !held.grant.revoked && held.grant.grantor == *grantor) {
        let grant = &held.grant;
        let coverage = grant.covers(request.action, request.resource, request.amounts);
        if matches!(coverage, Coverage::NotCovered) {
            continue;
        }
        let signature_ok = match held.signature {
            SignatureCheck::Valid => true,
            SignatureCheck::Invalid => false,
            SignatureCheck::Unsigned => !authority.settings.require_signed_grants,
        };
        if !signature_ok {
            bad_signature = true;
            continue;
        }
        if !grant.is_live(request.at) {
            expired = true;
            continue;
        }
        match coverage {
            Coverage::Covered => return None,
            over @ Coverage::OverLimit { .. } => over_limit = Some(over),
            Coverage::NotCovered => {}
        }
    }
    let reason = match (over_limit, bad_signature, expired) {
        (Some(Coverage::OverLimit { dimension, limit, amount }), _, _) => Reason::new(
            ReasonCode::LimitExceeded,
            format!("`{hop}` may use at most {limit} {dimension} per call, and {amount} were asked"),
        ),
        (_, true, _) => Reason::new(
            ReasonCode::GrantSignatureInvalid,
            format!("the grant to `{hop}` covering `{}` is not validly signed by its grantor", request.action),
        ),
        (_, _, true) => Reason::new(
            ReasonCode::GrantExpired,
            format!("the grant to `{hop}` covering `{}` is expired or not yet valid", request.action),
        ),
        _ => Reason::new(
            ReasonCode::NoGrant,
            format!("`{hop}` holds no grant for `{}` on `{}`", request.action, request.resource),
        ),
    };
    Some(reason.about(hop))
}
