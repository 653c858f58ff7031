//! Delegation grants (SPEC §2): what a parent delegates to a child.
//!
//! A grant *allows* a request `(action, resource, amounts)` at time `t` when
//! it is live at `t` ([`Grant::is_live`]), some action pattern matches the
//! action, some resource pattern matches the resource, and every dimension
//! the grant limits has an amount within the limit ([`Grant::covers`]; an
//! amount not given counts as 0, a dimension not limited is unbounded). So a
//! grant allows the product `actions × resources`, capped per call.
//!
//! Two checks keep delegation honest. At creation, [`check_grantor`] holds
//! the grantor to the grantee's parent and [`check_attenuation`] refuses a
//! grant that would allow anything its grantor's own grants do not. At
//! decision time every hop of the chain must hold a live covering grant
//! (SPEC §3, step 2), so a grant whose grantor later loses authority stops
//! working too: attenuation is a guard for clear errors, the hop walk is the
//! enforcement.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::identity::{Directory, IdentityId};
use crate::pattern::{ActionPattern, ResourcePattern};

/// A delegation from a grantor to its child, the grantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The server's id for the grant; not signed.
    pub id: String,
    /// Who receives the authority.
    pub grantee: IdentityId,
    /// Who delegates it: always the grantee's parent ([`check_grantor`]).
    pub grantor: IdentityId,
    /// The actions allowed; an empty list allows nothing.
    pub actions: Vec<ActionPattern>,
    /// The resources allowed; an empty list allows nothing.
    pub resources: Vec<ResourcePattern>,
    /// Per-call caps by dimension (`usd_cents` → 5000), in minor units.
    pub limits: BTreeMap<String, u64>,
    /// The first instant the grant is live, if not from the start.
    pub not_before: Option<Timestamp>,
    /// The first instant the grant is no longer live, if ever.
    pub expires_at: Option<Timestamp>,
    /// Ed25519 over [`Grant::signing_bytes`] by the grantor's key, if signed.
    pub signature: Option<[u8; 64]>,
    /// Whether the grant was revoked; server state, not signed.
    pub revoked: bool,
}

/// Whether a grant can be used at an instant, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Usable.
    Live,
    /// Revoked, whatever the time.
    Revoked,
    /// Before its `not_before`.
    NotYetValid,
    /// At or after its `expires_at`.
    Expired,
}

/// Whether one grant covers a request at one hop ([`Grant::covers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// The action and resource match and every amount is within its limit.
    Covered,
    /// No action pattern matches the action, or no resource pattern the
    /// resource.
    NotCovered,
    /// The action and resource match, but one amount exceeds the grant's
    /// per-call limit (the first such dimension in name order).
    OverLimit {
        /// The dimension, such as `usd_cents`.
        dimension: String,
        /// The grant's per-call limit for it.
        limit: u64,
        /// The amount requested.
        amount: u64,
    },
}

/// Why a grant has no signing bytes: a value RFC 8785 JSON cannot carry
/// exactly, so no signer in another language could produce the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A limit beyond ±(2^53 − 1), which I-JSON refuses.
    #[error("limit {limit} on `{dimension}` is beyond 2^53 - 1")]
    LimitOutOfRange {
        /// The dimension.
        dimension: String,
        /// The limit.
        limit: u64,
    },
    /// A time outside years 0000–9999, which RFC 3339 cannot spell.
    #[error("{field} `{time}` is outside years 0000-9999")]
    TimeOutOfRange {
        /// `not_before` or `expires_at`.
        field: &'static str,
        /// The time.
        time: Timestamp,
    },
    /// The JSON writer refused the signing form.
    #[error("grant cannot be canonicalized: {0}")]
    Canonical(#[from] mandate_log::json::JsonError),
}

/// Why a grant was refused as wider than its grantor's authority. Each names
/// the pair of the new grant's patterns that is not covered, and for the
/// grantor's grant that came closest, what exceeds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttenuationError {
    /// No unrevoked, unexpired grant of the grantor covers this pair of
    /// patterns at all.
    #[error("`{grantor}` holds no live grant covering action `{action}` on resource `{resource}`")]
    NotCovered {
        /// The grantor.
        grantor: IdentityId,
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
    },
    /// The new grant becomes usable before the grantor's covering grant.
    #[error(
        "grant usable from `{starts_at}` starts before `{grantor_not_before}`, when grant `{grant}` covering action `{action}` on resource `{resource}` becomes valid"
    )]
    StartsEarlier {
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
        /// The grantor's grant.
        grant: String,
        /// When the new grant becomes usable: its `not_before`, or the
        /// creation time if later.
        starts_at: Timestamp,
        /// The grantor's grant's `not_before`.
        grantor_not_before: Timestamp,
    },
    /// The new grant expires after the grantor's covering grant.
    #[error(
        "expiry `{expires_at}` is after `{grantor_expires_at}`, when grant `{grant}` covering action `{action}` on resource `{resource}` expires"
    )]
    ExpiresLater {
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
        /// The grantor's grant.
        grant: String,
        /// The new grant's expiry.
        expires_at: Timestamp,
        /// The grantor's grant's expiry.
        grantor_expires_at: Timestamp,
    },
    /// The new grant never expires, but the grantor's covering grant does.
    #[error(
        "a grant without expiry outlives grant `{grant}` covering action `{action}` on resource `{resource}`, which expires at `{grantor_expires_at}`"
    )]
    ExpiryMissing {
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
        /// The grantor's grant.
        grant: String,
        /// The grantor's grant's expiry.
        grantor_expires_at: Timestamp,
    },
    /// A per-call limit above the grantor's covering grant's.
    #[error(
        "limit {limit} on `{dimension}` exceeds the {grantor_limit} of grant `{grant}` covering action `{action}` on resource `{resource}`"
    )]
    LimitExceeded {
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
        /// The grantor's grant.
        grant: String,
        /// The dimension.
        dimension: String,
        /// The new grant's limit.
        limit: u64,
        /// The grantor's grant's limit.
        grantor_limit: u64,
    },
    /// No limit on a dimension the grantor's covering grant limits.
    #[error(
        "no limit on `{dimension}` exceeds the {grantor_limit} of grant `{grant}` covering action `{action}` on resource `{resource}`"
    )]
    LimitMissing {
        /// The new grant's action pattern.
        action: ActionPattern,
        /// The new grant's resource pattern.
        resource: ResourcePattern,
        /// The grantor's grant.
        grant: String,
        /// The dimension.
        dimension: String,
        /// The grantor's grant's limit.
        grantor_limit: u64,
    },
}

/// Why a grant's grantor is not the grantee's parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantorError {
    /// The grantee does not exist.
    #[error("grantee `{grantee}` does not exist")]
    GranteeUnknown {
        /// The grantee.
        grantee: IdentityId,
    },
    /// The grantee is a human: humans hold all authority and have no parent
    /// to receive it from.
    #[error("grantee `{grantee}` is a human and cannot receive grants")]
    GranteeIsHuman {
        /// The grantee.
        grantee: IdentityId,
    },
    /// Someone other than the grantee's parent delegates.
    #[error("grantor `{grantor}` is not the parent of `{grantee}`; its parent is `{parent}`")]
    NotParent {
        /// The grant's grantor.
        grantor: IdentityId,
        /// The grantee.
        grantee: IdentityId,
        /// The grantee's actual parent.
        parent: IdentityId,
    },
}

impl Grant {
    /// The bytes a grantor signs: the RFC 8785 canonical JSON of the object
    ///
    /// ```text
    /// {"actions":[…],"expires_at":"…","grantee":"…","grantor":"…",
    ///  "limits":{…},"not_before":"…","resources":[…]}
    /// ```
    ///
    /// with the patterns as written, in the grant's order; `limits` omitted
    /// when empty; `not_before` and `expires_at` omitted when absent, else
    /// RFC 3339 in UTC with `Z` and the shortest exact fraction of a second
    /// (none when whole: `2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.5Z`).
    /// `id`, `signature` and `revoked` are not signed: the server assigns the
    /// first and third, and the second is the output.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, SigningError> {
        // Keys go in in sorted order. `mandate_log::json` sorts nothing when
        // serde_json's `preserve_order` is on (cedar-policy turns it on), so
        // insertion order is what makes these bytes canonical either way.
        let texts = |patterns: Vec<String>| Value::Array(patterns.into_iter().map(Value::String).collect());
        let time = |field: &'static str, time: Timestamp| {
            let text = time.to_string();
            match mandate_log::entry::check_time(&text) {
                Ok(()) => Ok(Value::String(text)),
                Err(_) => Err(SigningError::TimeOutOfRange { field, time }),
            }
        };
        let mut object = Map::new();
        object.insert("actions".into(), texts(self.actions.iter().map(ToString::to_string).collect()));
        if let Some(expires_at) = self.expires_at {
            object.insert("expires_at".into(), time("expires_at", expires_at)?);
        }
        object.insert("grantee".into(), Value::String(self.grantee.to_string()));
        object.insert("grantor".into(), Value::String(self.grantor.to_string()));
        if !self.limits.is_empty() {
            // A BTreeMap iterates in UTF-8 order, which the writer turns into
            // RFC 8785's UTF-16 order where they differ.
            let mut limits = Map::new();
            for (dimension, &limit) in &self.limits {
                if limit > mandate_log::json::SAFE_INTEGER_MAX {
                    return Err(SigningError::LimitOutOfRange { dimension: dimension.clone(), limit });
                }
                limits.insert(dimension.clone(), Value::from(limit));
            }
            object.insert("limits".into(), Value::Object(limits));
        }
        if let Some(not_before) = self.not_before {
            object.insert("not_before".into(), time("not_before", not_before)?);
        }
        object.insert("resources".into(), texts(self.resources.iter().map(ToString::to_string).collect()));
        // The checks above leave nothing canonicalization could refuse; its
        // error is passed on anyway rather than assumed away.
        Ok(mandate_log::json::canonicalize_object(&object)?)
    }

    /// Signs the grant with the grantor's key, replacing any signature. For
    /// tools and tests: the server never holds grantors' private keys.
    pub fn sign(&mut self, key: &SigningKey) -> Result<(), SigningError> {
        let bytes = self.signing_bytes()?;
        self.signature = Some(key.sign(&bytes).to_bytes());
        Ok(())
    }

    /// Whether the grant carries a signature that verifies under the
    /// grantor's registered key, by `verify_strict` (no malleable or
    /// small-order signatures). False when unsigned.
    pub fn verify_signature(&self, grantor_key: &VerifyingKey) -> bool {
        let (Some(signature), Ok(bytes)) = (&self.signature, self.signing_bytes()) else { return false };
        grantor_key.verify_strict(&bytes, &Signature::from_bytes(signature)).is_ok()
    }

    /// Whether the grant can be used at `at`, and if not, why (revocation
    /// first, then the window).
    pub fn liveness(&self, at: Timestamp) -> Liveness {
        if self.revoked {
            Liveness::Revoked
        } else if self.not_before.is_some_and(|not_before| at < not_before) {
            Liveness::NotYetValid
        } else if self.expires_at.is_some_and(|expires_at| at >= expires_at) {
            Liveness::Expired
        } else {
            Liveness::Live
        }
    }

    /// Whether the grant is usable at `at`: not revoked and
    /// `not_before ≤ at < expires_at`.
    pub fn is_live(&self, at: Timestamp) -> bool {
        self.liveness(at) == Liveness::Live
    }

    /// Whether the grant covers one request, ignoring time: see the module
    /// documentation. Pair it with [`Grant::liveness`].
    pub fn covers(&self, action: &str, resource: &str, amounts: &BTreeMap<String, u64>) -> Coverage {
        let action_matches = self.actions.iter().any(|pattern| pattern.matches(action));
        if !action_matches || !self.resources.iter().any(|pattern| pattern.matches(resource)) {
            return Coverage::NotCovered;
        }
        for (dimension, &limit) in &self.limits {
            let amount = amounts.get(dimension).copied().unwrap_or(0);
            if amount > limit {
                return Coverage::OverLimit { dimension: dimension.clone(), limit, amount };
            }
        }
        Coverage::Covered
    }
}

/// Checks, when `new` is created at `at`, that it allows nothing its
/// grantor's grants do not. Nothing is checked when the grantor is a human:
/// humans hold all authority.
///
/// The rule: for every pair `(a, r)` of `new.actions × new.resources`, one
/// grant `g` of the grantor (unrevoked, unexpired at `at`) must on its own
///
/// 1. have an action pattern covering `a` and a resource pattern covering `r`;
/// 2. be valid over the new grant's whole usable window: `g.not_before ≤
///    max(new.not_before, at)` and `new.expires_at ≤ g.expires_at` (no expiry
///    only under no expiry);
/// 3. for every dimension `g` limits, have `new` limit it no higher (no limit
///    is higher than any).
///
/// Sound: every request `new` allows at a time `t ≥ at` matches some such
/// pair, and that pair's `g` allows it at `t` too (its patterns cover the
/// new ones, its limits are no tighter, its window holds `t`). Exact for
/// patterns and limits: if no single `g` covers the pair, a request at the
/// pair's corner (a fresh action and resource under the patterns, every
/// amount at the new limit, the last instant) is allowed by `new` and by no
/// `g`. It is conservative only at the edges: over time, a window covered
/// by two successive grantor grants together, but by neither alone, is
/// refused; and no limit counts as wider than a limit of `u64::MAX`.
///
/// `grantor_grants` may hold other identities' grants; only those whose
/// grantee is `new.grantor` count. The first uncovered pair is reported,
/// with the first candidate grant's shortfall.
pub fn check_attenuation(
    new: &Grant,
    grantor_grants: &[&Grant],
    grantor_is_human: bool,
    at: Timestamp,
) -> Result<(), AttenuationError> {
    if grantor_is_human {
        return Ok(());
    }
    let starts_at = new.not_before.map_or(at, |not_before| not_before.max(at));
    let candidates: Vec<&Grant> = grantor_grants
        .iter()
        .copied()
        .filter(|g| g.grantee == new.grantor && !g.revoked && g.expires_at.is_none_or(|expires_at| at < expires_at))
        .collect();
    let pairs = new.actions.iter().flat_map(|action| new.resources.iter().map(move |resource| (action, resource)));
    'pairs: for (action, resource) in pairs {
        let covering = candidates.iter().filter(|grant| {
            grant.actions.iter().any(|pattern| pattern.covers(action))
                && grant.resources.iter().any(|pattern| pattern.covers(resource))
        });
        let mut first_shortfall = None;
        for grant in covering {
            match shortfall_of(new, grant, action, resource, starts_at) {
                None => continue 'pairs,
                Some(shortfall) => {
                    first_shortfall.get_or_insert(shortfall);
                }
            }
        }
        return Err(first_shortfall.unwrap_or_else(|| AttenuationError::NotCovered {
            grantor: new.grantor.clone(),
            action: action.clone(),
            resource: resource.clone(),
        }));
    }
    Ok(())
}

/// What of `new` exceeds `grant` for one pair of patterns `grant` covers, if
/// anything: the window first, then the limits in dimension order.
fn shortfall_of(
    new: &Grant,
    grant: &Grant,
    action: &ActionPattern,
    resource: &ResourcePattern,
    starts_at: Timestamp,
) -> Option<AttenuationError> {
    let (action, resource, id) = (action.clone(), resource.clone(), grant.id.clone());
    if let Some(grantor_not_before) = grant.not_before
        && grantor_not_before > starts_at
    {
        return Some(AttenuationError::StartsEarlier { action, resource, grant: id, starts_at, grantor_not_before });
    }
    if let Some(grantor_expires_at) = grant.expires_at {
        match new.expires_at {
            None => return Some(AttenuationError::ExpiryMissing { action, resource, grant: id, grantor_expires_at }),
            Some(expires_at) if expires_at > grantor_expires_at => {
                let grant = id;
                return Some(AttenuationError::ExpiresLater {
                    action,
                    resource,
                    grant,
                    expires_at,
                    grantor_expires_at,
                });
            }
            Some(_) => {}
        }
    }
    for (dimension, &grantor_limit) in &grant.limits {
        let dimension = dimension.clone();
        match new.limits.get(&dimension) {
            None => {
                return Some(AttenuationError::LimitMissing { action, resource, grant: id, dimension, grantor_limit });
            }
            Some(&limit) if limit > grantor_limit => {
                let grant = id;
                return Some(AttenuationError::LimitExceeded {
                    action,
                    resource,
                    grant,
                    dimension,
                    limit,
                    grantor_limit,
                });
            }
            Some(_) => {}
        }
    }
    None
}

/// Checks that `grant.grantor` is the grantee's parent (SPEC §2: a grant is
/// always from parent to child). Whether the grantor is still effective is
/// [`Directory::chain`]'s question.
pub fn check_grantor(grant: &Grant, directory: &Directory) -> Result<(), GrantorError> {
    let grantee =
        directory.get(&grant.grantee).ok_or_else(|| GrantorError::GranteeUnknown { grantee: grant.grantee.clone() })?;
    match &grantee.parent {
        None => Err(GrantorError::GranteeIsHuman { grantee: grant.grantee.clone() }),
        Some(parent) if *parent != grant.grantor => Err(GrantorError::NotParent {
            grantor: grant.grantor.clone(),
            grantee: grant.grantee.clone(),
            parent: parent.clone(),
        }),
        Some(_) => Ok(()),
    }
}
