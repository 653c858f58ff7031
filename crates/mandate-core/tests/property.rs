//! Properties of delegation over random identity trees, grants, revocations
//! and requests (issue 3):
//!
//! - (a) a decision never allows what some hop's grant does not cover, nor
//!   anything for a chain with a revoked identity; and with the default
//!   permit-all policies it allows everything the grants do cover;
//! - (b) no grant wider than its grantor's can be created;
//! - (c) a grant that `check_attenuation` refuses is really wider, or the
//!   refusal is one of the documented conservative cases.
//!
//! Every check is made by an oracle written here from SPEC §2–3, over the
//! patterns as strings: it never calls `Grant::covers`, `Grant::is_live` or
//! the pattern types' `matches` and `covers`. The library's own coverage is
//! used only to generate grants likely to be accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cell::Cell;
use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use mandate_core::decision::{Authority, NoBudgets, Outcome, ReasonCode, Request, Settings, decide};
use mandate_core::grant::{AttenuationError, Grant, GrantorError, check_attenuation, check_grantor};
use mandate_core::identity::{Directory, Identity, IdentityId, Kind};
use mandate_core::pattern::{ActionPattern, ResourcePattern};
use mandate_core::policy::PolicySet;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Map;

/// Cases per property: enough to meet every verdict many times, few enough
/// to run in seconds.
const CASES: u32 = 256;

const ACTION_PATTERNS: [&str; 6] = ["a.x", "a.y", "a.*", "b.y", "b.*", "*"];
const RESOURCE_PATTERNS: [&str; 6] = ["r://1/*", "r://1/2", "r://1/3", "r://2/*", "r://*", "*"];
/// Concrete actions: every exact pattern, a fresh action under every prefix
/// pattern that no narrower pattern matches (`a.z`, `b.x`, `c`), and `a`,
/// which `a.*` does not match.
const ACTIONS: [&str; 7] = ["a.x", "a.y", "a.z", "b.y", "b.x", "c", "a"];
/// Concrete resources, chosen the same way; `r://1/` is the empty suffix.
const RESOURCES: [&str; 7] = ["r://1/2", "r://1/3", "r://1/4", "r://1/", "r://2/1", "r://3", "s://x"];
const DIMENSIONS: [&str; 2] = ["usd_cents", "tokens"];
const LIMITS: [u64; 5] = [0, 100, 101, 500, 1000];
/// Above every limit in [`LIMITS`].
const ABOVE_ALL_LIMITS: u64 = 10_000;
const AMOUNTS: [u64; 8] = [0, 1, 100, 499, 500, 501, 1000, ABOVE_ALL_LIMITS];
/// Grant windows start and end on the hour, hours 0 to 12; requests come
/// every half hour up to 13 h, so every instant between two boundaries, and
/// every boundary, is sampled.
const HALF_HOURS_MAX: i64 = 26;
const CHAIN_LEN_MAX: usize = 5;

fn at_minutes(minutes: i64) -> Timestamp {
    "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minutes)
}

fn id(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

// The oracle

/// SPEC §2 pattern matching, for actions and resources alike: `*` matches
/// everything, a trailing `*` makes the rest a prefix, anything else must be
/// equal.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => text == pattern,
    }
}

/// An action the pattern matches that no pattern of the alphabet matches
/// unless it covers this one (see [`ACTIONS`]).
fn fresh_action(pattern: &str) -> &'static str {
    match pattern {
        "*" => "c",
        "a.*" => "a.z",
        "b.*" => "b.x",
        exact => ACTIONS.iter().find(|action| **action == exact).unwrap(),
    }
}

/// The same for resources (see [`RESOURCES`]).
fn fresh_resource(pattern: &str) -> &'static str {
    match pattern {
        "*" => "s://x",
        "r://*" => "r://3",
        "r://1/*" => "r://1/4",
        "r://2/*" => "r://2/1",
        exact => RESOURCES.iter().find(|resource| **resource == exact).unwrap(),
    }
}

/// The model's grant: patterns as text, times in minutes.
#[derive(Debug, Clone)]
struct ModelGrant {
    grantee: usize,
    grantor: usize,
    actions: Vec<String>,
    resources: Vec<String>,
    limits: BTreeMap<String, u64>,
    not_before: Option<i64>,
    expires_at: Option<i64>,
    revoked: bool,
}

/// One concrete request as the oracle sees it.
#[derive(Debug, Clone)]
struct Ask {
    action: String,
    resource: String,
    amounts: BTreeMap<String, u64>,
    minutes: i64,
}

impl ModelGrant {
    fn live(&self, minutes: i64) -> bool {
        !self.revoked
            && self.not_before.is_none_or(|not_before| not_before <= minutes)
            && self.expires_at.is_none_or(|expires_at| minutes < expires_at)
    }

    /// Whether the grant allows `ask`: live, some action pattern and some
    /// resource pattern match, and every limited amount (absent is 0) is
    /// within its limit.
    fn allows(&self, ask: &Ask) -> bool {
        self.live(ask.minutes)
            && self.actions.iter().any(|pattern| pattern_matches(pattern, &ask.action))
            && self.resources.iter().any(|pattern| pattern_matches(pattern, &ask.resource))
            && self.limits.iter().all(|(dimension, limit)| ask.amounts.get(dimension).copied().unwrap_or(0) <= *limit)
    }

    /// The largest amounts the grant allows: its limit, or above every limit.
    fn corner_amounts(&self) -> BTreeMap<String, u64> {
        DIMENSIONS
            .iter()
            .map(|dimension| {
                ((*dimension).to_owned(), self.limits.get(*dimension).copied().unwrap_or(ABOVE_ALL_LIMITS))
            })
            .collect()
    }

    fn to_grant(&self, number: usize, names: &[IdentityId]) -> Grant {
        Grant {
            id: format!("g{number}"),
            grantee: names[self.grantee].clone(),
            grantor: names[self.grantor].clone(),
            actions: self.actions.iter().map(|pattern| ActionPattern::parse(pattern).unwrap()).collect(),
            resources: self.resources.iter().map(|pattern| ResourcePattern::parse(pattern).unwrap()).collect(),
            limits: self.limits.clone(),
            not_before: self.not_before.map(at_minutes),
            expires_at: self.expires_at.map(at_minutes),
            signature: None,
            revoked: self.revoked,
        }
    }
}

/// Every request of the sampled domain at or after `from`: each action and
/// resource, at the grant's corner amounts and at none, every half hour.
fn domain(from: i64, corner: &BTreeMap<String, u64>) -> impl Iterator<Item = Ask> + '_ {
    let times = (0..=HALF_HOURS_MAX).map(|half_hours| half_hours * 30).filter(move |minutes| *minutes >= from);
    times.flat_map(move |minutes| {
        ACTIONS.iter().flat_map(move |action| {
            RESOURCES.iter().flat_map(move |resource| {
                [corner.clone(), BTreeMap::new()].into_iter().map(move |amounts| Ask {
                    action: (*action).to_owned(),
                    resource: (*resource).to_owned(),
                    amounts,
                    minutes,
                })
            })
        })
    })
}

// Random scenarios

/// A grant to make: who, what, and how.
#[derive(Debug, Clone)]
struct GrantPlan {
    grantee: usize,
    /// Name a grantor other than the parent (usually wrong).
    other_grantor: Option<usize>,
    actions: Vec<usize>,
    resources: Vec<usize>,
    limits: Vec<Option<usize>>,
    not_before_hours: Option<i64>,
    expires_hours: Option<i64>,
    created_hours: i64,
    /// Derive it from one of the grantor's grants, so that deep chains hold
    /// accepted grants too.
    narrow_from: Option<usize>,
    /// Store it whatever attenuation says, as a store may hold a grant whose
    /// grantor's authority shrank since: the decision must not rely on
    /// attenuation.
    bypass_attenuation: bool,
}

#[derive(Debug, Clone)]
struct AskPlan {
    identity: usize,
    action: usize,
    resource: usize,
    amounts: Vec<Option<usize>>,
    half_hours: i64,
    /// Aim at one of the acting identity's grants: a fresh action and
    /// resource under its patterns, amounts capped at its limits, so that
    /// deep chains are allowed often enough to test.
    aim: Option<usize>,
}

#[derive(Debug, Clone)]
enum Op {
    Grant(GrantPlan),
    RevokeIdentity(usize),
    RevokeGrant(usize),
    Ask(AskPlan),
}

#[derive(Debug, Clone)]
struct Scenario {
    humans: usize,
    /// Agents and services: (is a service, which eligible parent).
    nodes: Vec<(bool, usize)>,
    ops: Vec<Op>,
    final_asks: Vec<AskPlan>,
}

fn grant_plan() -> impl Strategy<Value = GrantPlan> {
    (
        (any::<usize>(), prop::option::weighted(0.1, any::<usize>())),
        prop::collection::vec(0..ACTION_PATTERNS.len(), 1..=2),
        prop::collection::vec(0..RESOURCE_PATTERNS.len(), 1..=2),
        prop::collection::vec(prop::option::of(0..LIMITS.len()), DIMENSIONS.len()),
        (prop::option::of(0..=10i64), prop::option::of(1..=12i64), 0..=10i64),
        prop::option::weighted(0.6, any::<usize>()),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (grantee, other_grantor),
                actions,
                resources,
                limits,
                (not_before_hours, expires_hours, created_hours),
                narrow_from,
                bypass_attenuation,
            )| GrantPlan {
                grantee,
                other_grantor,
                actions,
                resources,
                limits,
                not_before_hours,
                expires_hours,
                created_hours,
                narrow_from,
                bypass_attenuation,
            },
        )
}

fn ask_plan() -> impl Strategy<Value = AskPlan> {
    (
        any::<usize>(),
        0..ACTIONS.len(),
        0..RESOURCES.len(),
        prop::collection::vec(prop::option::of(0..AMOUNTS.len()), DIMENSIONS.len()),
        0..=HALF_HOURS_MAX,
        prop::option::weighted(0.5, any::<usize>()),
    )
        .prop_map(|(identity, action, resource, amounts, half_hours, aim)| AskPlan {
            identity,
            action,
            resource,
            amounts,
            half_hours,
            aim,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => grant_plan().prop_map(Op::Grant),
        1 => any::<usize>().prop_map(Op::RevokeIdentity),
        2 => any::<usize>().prop_map(Op::RevokeGrant),
        8 => ask_plan().prop_map(Op::Ask),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    // Mostly under one of the newest identities, so that chains grow deep.
    let parent = prop_oneof![3 => 0..3usize, 1 => 0..32usize];
    (
        1..=3usize,
        prop::collection::vec((prop::bool::weighted(0.3), parent), 0..=10),
        prop::collection::vec(op(), 0..48),
        prop::collection::vec(ask_plan(), 32),
    )
        .prop_map(|(humans, nodes, ops, final_asks)| Scenario { humans, nodes, ops, final_asks })
}

// Running a scenario

/// Totals over all cases, to show that no property holds vacuously.
#[derive(Default)]
struct Totals {
    allowed: Cell<usize>,
    allowed_deep: Cell<usize>,
    denied_for_a_hop: Cell<usize>,
    denied_revoked: Cell<usize>,
    accepted_attenuated: Cell<usize>,
    refused_with_witness: Cell<usize>,
    refused_conservatively: Cell<usize>,
    grantor_refusals: Cell<usize>,
}

fn bump(cell: &Cell<usize>) {
    cell.set(cell.get() + 1);
}

/// The authority and its model, kept in step.
struct World {
    authority: Authority,
    names: Vec<IdentityId>,
    parents: Vec<Option<usize>>,
    revoked: Vec<bool>,
    grants: Vec<ModelGrant>,
    /// Where each model grant sits in `authority.grants`.
    places: Vec<(IdentityId, usize)>,
}

impl World {
    fn new(scenario: &Scenario) -> World {
        let mut directory = Directory::new();
        let (mut names, mut parents, mut depths) = (Vec::new(), Vec::new(), Vec::new());
        for human in 0..scenario.humans {
            let name = id(&format!("user:h{human}"));
            directory.insert(Identity::new(name.clone(), Kind::Human, None)).unwrap();
            names.push(name);
            parents.push(None);
            depths.push(1);
        }
        for (index, (is_service, seed)) in scenario.nodes.iter().enumerate() {
            let eligible: Vec<usize> = (0..names.len()).rev().filter(|&n| depths[n] < CHAIN_LEN_MAX).collect();
            let parent = eligible[seed % eligible.len()];
            let (kind, prefix) = if *is_service { (Kind::Service, "svc") } else { (Kind::Agent, "agent") };
            let name = id(&format!("{prefix}:n{index}"));
            let mut identity = Identity::new(name.clone(), kind, Some(names[parent].clone()));
            identity.attributes.insert("depth".to_owned(), (depths[parent] + 1).into());
            directory.insert(identity).unwrap();
            names.push(name);
            parents.push(Some(parent));
            depths.push(depths[parent] + 1);
        }
        let authority = Authority {
            directory,
            grants: BTreeMap::new(),
            policies: PolicySet::default_for_new_tenant().unwrap(),
            settings: Settings::default(),
        };
        let revoked = vec![false; names.len()];
        World { authority, names, parents, revoked, grants: Vec::new(), places: Vec::new() }
    }

    fn is_human(&self, index: usize) -> bool {
        self.parents[index].is_none()
    }

    /// The model's grant for a plan, before any check.
    fn plan_grant(&self, plan: &GrantPlan) -> ModelGrant {
        // Mostly an agent or service; sometimes anyone, humans included.
        let others: Vec<usize> = (0..self.names.len()).filter(|&index| !self.is_human(index)).collect();
        let grantee = match (plan.other_grantor, others.is_empty()) {
            (None, false) => others[plan.grantee % others.len()],
            _ => plan.grantee % self.names.len(),
        };
        let grantor = match (plan.other_grantor, self.parents[grantee]) {
            (Some(other), _) => other % self.names.len(),
            (None, Some(parent)) => parent,
            (None, None) => grantee,
        };
        let mut grant = ModelGrant {
            grantee,
            grantor,
            actions: plan.actions.iter().map(|&a| ACTION_PATTERNS[a].to_owned()).collect(),
            resources: plan.resources.iter().map(|&r| RESOURCE_PATTERNS[r].to_owned()).collect(),
            limits: DIMENSIONS
                .iter()
                .zip(&plan.limits)
                .filter_map(|(dimension, limit)| Some(((*dimension).to_owned(), LIMITS[(*limit)?])))
                .collect(),
            not_before: plan.not_before_hours.map(|hours| hours * 60),
            expires_at: plan.expires_hours.map(|hours| hours * 60),
            revoked: false,
        };
        let bases: Vec<&ModelGrant> = self.grants.iter().filter(|g| g.grantee == grantor && !g.revoked).collect();
        if let (Some(seed), false) = (plan.narrow_from, bases.is_empty()) {
            let base = bases[seed % bases.len()];
            let narrower = |alphabet: &[&str], covered: &dyn Fn(&str) -> bool, seeds: &[usize]| {
                let allowed: Vec<&str> = alphabet.iter().copied().filter(|pattern| covered(pattern)).collect();
                seeds
                    .iter()
                    .filter_map(|seed| allowed.get(seed % allowed.len().max(1)).map(|p| (*p).to_owned()))
                    .collect::<Vec<String>>()
            };
            let action_covered = |pattern: &str| {
                let pattern = ActionPattern::parse(pattern).unwrap();
                base.actions.iter().any(|b| ActionPattern::parse(b).unwrap().covers(&pattern))
            };
            let resource_covered = |pattern: &str| {
                let pattern = ResourcePattern::parse(pattern).unwrap();
                base.resources.iter().any(|b| ResourcePattern::parse(b).unwrap().covers(&pattern))
            };
            grant.actions = narrower(&ACTION_PATTERNS, &action_covered, &plan.actions);
            grant.resources = narrower(&RESOURCE_PATTERNS, &resource_covered, &plan.resources);
            for (dimension, &limit) in &base.limits {
                let mine = grant.limits.get(dimension).copied().unwrap_or(limit);
                grant.limits.insert(dimension.clone(), mine.min(limit));
            }
            grant.not_before = match (grant.not_before, base.not_before) {
                (Some(mine), Some(theirs)) => Some(mine.max(theirs)),
                (mine, theirs) => mine.or(theirs),
            };
            grant.expires_at = match (grant.expires_at, base.expires_at) {
                (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
                (mine, theirs) => theirs.or(mine),
            };
        }
        grant
    }

    fn grant(&mut self, plan: &GrantPlan, totals: &Totals) -> Result<(), TestCaseError> {
        let model = self.plan_grant(plan);
        let grant = model.to_grant(self.grants.len(), &self.names);
        let created = plan.created_hours * 60;

        // Grantor = parent (SPEC §2), checked against the model.
        let checked = check_grantor(&grant, &self.authority.directory);
        match self.parents[model.grantee] {
            None => prop_assert_eq!(&checked, &Err(GrantorError::GranteeIsHuman { grantee: grant.grantee.clone() })),
            Some(parent) if parent != model.grantor => {
                prop_assert!(matches!(checked, Err(GrantorError::NotParent { .. })), "{:?}", checked);
            }
            Some(_) => prop_assert_eq!(&checked, &Ok(())),
        }
        if checked.is_err() {
            bump(&totals.grantor_refusals);
            return Ok(());
        }

        let grantor_is_human = self.is_human(model.grantor);
        let held: Vec<Grant> =
            self.authority.grants.get(&grant.grantor).into_iter().flatten().map(|held| held.grant.clone()).collect();
        let held: Vec<&Grant> = held.iter().collect();
        let verdict = check_attenuation(&grant, &held, grantor_is_human, at_minutes(created));
        // The grantor's grants as the model holds them when the grant is made.
        let grantor_grants: Vec<&ModelGrant> = self.grants.iter().filter(|g| g.grantee == model.grantor).collect();
        match &verdict {
            Ok(()) if grantor_is_human => {}
            Ok(()) => {
                bump(&totals.accepted_attenuated);
                check_within(&model, &grantor_grants, created)?;
            }
            Err(error) => {
                prop_assert!(!grantor_is_human, "a human's grant refused: {error}");
                if check_really_wider(&model, &grant.grantor, &grantor_grants, created, error)? {
                    bump(&totals.refused_with_witness);
                } else {
                    bump(&totals.refused_conservatively);
                }
            }
        }
        if verdict.is_ok() || plan.bypass_attenuation {
            let slot = self.authority.grants.get(&grant.grantee).map_or(0, Vec::len);
            self.places.push((grant.grantee.clone(), slot));
            self.authority.add_grant(grant);
            self.grants.push(model);
        }
        Ok(())
    }

    fn revoke_identity(&mut self, seed: usize) {
        let index = seed % self.names.len();
        self.authority.directory.revoke(&self.names[index]).unwrap();
        self.revoked[index] = true;
    }

    fn revoke_grant(&mut self, seed: usize) {
        if self.grants.is_empty() {
            return;
        }
        let index = seed % self.grants.len();
        self.grants[index].revoked = true;
        let (grantee, slot) = &self.places[index];
        self.authority.grants.get_mut(grantee).unwrap()[*slot].grant.revoked = true;
    }

    /// (a): the decision against the oracle.
    fn ask(&self, plan: &AskPlan, totals: &Totals) -> Result<(), TestCaseError> {
        // One index past the identities is an id nobody has.
        let index = plan.identity % (self.names.len() + 1);
        let ghost = id("agent:ghost");
        let identity = self.names.get(index).unwrap_or(&ghost);
        let mut ask = Ask {
            action: ACTIONS[plan.action].to_owned(),
            resource: RESOURCES[plan.resource].to_owned(),
            amounts: DIMENSIONS
                .iter()
                .zip(&plan.amounts)
                .filter_map(|(dimension, amount)| Some(((*dimension).to_owned(), AMOUNTS[(*amount)?])))
                .collect(),
            minutes: plan.half_hours * 30,
        };
        let own: Vec<&ModelGrant> = self.grants.iter().filter(|g| g.grantee == index).collect();
        if let (Some(seed), false) = (plan.aim, own.is_empty()) {
            let grant = own[seed % own.len()];
            ask.action = fresh_action(&grant.actions[seed % grant.actions.len()]).to_owned();
            ask.resource = fresh_resource(&grant.resources[plan.action % grant.resources.len()]).to_owned();
            for (dimension, limit) in &grant.limits {
                if let Some(amount) = ask.amounts.get_mut(dimension) {
                    *amount = (*amount).min(*limit);
                }
            }
            if !grant.live(ask.minutes) {
                ask.minutes = grant.not_before.unwrap_or(0);
            }
        }
        let context = Map::new();
        let request = Request {
            identity,
            action: &ask.action,
            resource: &ask.resource,
            context: &context,
            amounts: &ask.amounts,
            at: at_minutes(ask.minutes),
        };
        let decision = decide(&self.authority, &request, &NoBudgets);
        let reason = decision.reasons.first().map(|reason| reason.code);

        if index == self.names.len() {
            prop_assert_eq!(decision.outcome, Outcome::Deny);
            prop_assert_eq!(reason, Some(ReasonCode::IdentityUnknown));
            return Ok(());
        }
        let mut chain = vec![index];
        while let Some(parent) = self.parents[*chain.last().unwrap()] {
            chain.push(parent);
        }
        // The first hop from the bottom whose grantee holds no grant from its
        // parent allowing the request.
        let failing_hop = chain
            .windows(2)
            .find(|hop| !self.grants.iter().any(|g| g.grantee == hop[0] && g.grantor == hop[1] && g.allows(&ask)));
        let revoked = chain.iter().any(|&member| self.revoked[member]);
        let allowed = decision.outcome == Outcome::Allow;

        if allowed {
            // The property: every hop holds a live, unrevoked grant from its
            // parent matching the action and resource, within its limits, and
            // nobody on the chain is revoked.
            prop_assert!(!revoked, "allowed {:?} for {} with a revoked identity on the chain", ask, identity);
            prop_assert!(
                failing_hop.is_none(),
                "allowed {:?} for {} beyond the grant at {:?}",
                ask,
                identity,
                failing_hop
            );
            let ids: Vec<IdentityId> = chain.iter().map(|&member| self.names[member].clone()).collect();
            prop_assert_eq!(&decision.chain, &ids);
            bump(&totals.allowed);
            if chain.len() > 2 {
                bump(&totals.allowed_deep);
            }
        } else if revoked {
            prop_assert_eq!(reason, Some(ReasonCode::IdentityRevoked));
            bump(&totals.denied_revoked);
        } else if let Some(hop) = failing_hop {
            let hop_reasons = [ReasonCode::NoGrant, ReasonCode::GrantExpired, ReasonCode::LimitExceeded];
            prop_assert!(reason.is_some_and(|code| hop_reasons.contains(&code)), "{:?}", decision.reasons);
            // The reason names the first failing hop from the bottom.
            prop_assert_eq!(decision.reasons[0].identity.as_ref(), Some(&self.names[hop[0]]));
            bump(&totals.denied_for_a_hop);
        } else {
            // Completeness: with permit-all policies and no budgets, grants
            // alone decide.
            prop_assert!(false, "denied {:?} for {}, which every hop allows: {:?}", ask, identity, decision.reasons);
        }
        Ok(())
    }
}

/// (b): everything the accepted grant allows from its creation on, some
/// grant of its grantor (as it was then) allows too.
fn check_within(new: &ModelGrant, grantor_grants: &[&ModelGrant], created: i64) -> Result<(), TestCaseError> {
    let corner = new.corner_amounts();
    for ask in domain(created, &corner) {
        if new.allows(&ask) {
            prop_assert!(
                grantor_grants.iter().any(|g| g.allows(&ask)),
                "accepted {:?} allows {:?}, which none of the grantor's grants {:?} allows",
                new,
                ask,
                grantor_grants
            );
        }
    }
    Ok(())
}

/// (c): a refused grant names a pair of its own patterns, and is wider than
/// its grantor's grants: a request it allows and none of theirs does. Without
/// such a request, the refusal must be one of the conservative cases
/// `check_attenuation` documents: the new grant allows nothing after its
/// creation, or no single grant of the grantor covers the named pair over
/// the new grant's whole window, though several do together. Returns whether
/// a witness was found.
fn check_really_wider(
    new: &ModelGrant,
    grantor_name: &IdentityId,
    grantor_grants: &[&ModelGrant],
    created: i64,
    error: &AttenuationError,
) -> Result<bool, TestCaseError> {
    let (action, resource) = match error {
        AttenuationError::NotCovered { action, resource, grantor } => {
            prop_assert_eq!(grantor, grantor_name);
            (action, resource)
        }
        AttenuationError::StartsEarlier { action, resource, .. }
        | AttenuationError::ExpiresLater { action, resource, .. }
        | AttenuationError::ExpiryMissing { action, resource, .. }
        | AttenuationError::LimitExceeded { action, resource, .. }
        | AttenuationError::LimitMissing { action, resource, .. } => (action, resource),
    };
    let (action, resource) = (action.to_string(), resource.to_string());
    prop_assert!(new.actions.contains(&action), "{error} names an action pattern {:?} does not hold", new);
    prop_assert!(new.resources.contains(&resource), "{error} names a resource pattern {:?} does not hold", new);

    let corner = new.corner_amounts();
    let witness = domain(created, &corner).find(|ask| new.allows(ask) && !grantor_grants.iter().any(|g| g.allows(ask)));
    if witness.is_some() {
        return Ok(true);
    }
    let starts = new.not_before.map_or(created, |not_before| not_before.max(created));
    let window: Vec<i64> = (0..=HALF_HOURS_MAX)
        .map(|half_hours| half_hours * 30)
        .filter(|minutes| *minutes >= starts && new.expires_at.is_none_or(|expires_at| *minutes < expires_at))
        .collect();
    if window.is_empty() {
        return Ok(false);
    }
    // The named pair at its corner, at every instant of the window.
    let at_corner = |minutes: i64| Ask {
        action: fresh_action(&action).to_owned(),
        resource: fresh_resource(&resource).to_owned(),
        amounts: corner.clone(),
        minutes,
    };
    for grant in grantor_grants {
        // Candidates are the grants usable at creation.
        let candidate = !grant.revoked && grant.expires_at.is_none_or(|expires_at| created < expires_at);
        let throughout = window.iter().all(|&minutes| grant.allows(&at_corner(minutes)))
            && (new.expires_at.is_some() || grant.expires_at.is_none());
        prop_assert!(
            !(candidate && throughout),
            "refused {:?} ({error}), though {:?} alone covers it throughout",
            new,
            grant
        );
    }
    Ok(false)
}

fn run(scenario: &Scenario, totals: &Totals) -> Result<(), TestCaseError> {
    let mut world = World::new(scenario);
    for op in &scenario.ops {
        match op {
            Op::Grant(plan) => world.grant(plan, totals)?,
            Op::RevokeIdentity(seed) => world.revoke_identity(*seed),
            Op::RevokeGrant(seed) => world.revoke_grant(*seed),
            Op::Ask(plan) => world.ask(plan, totals)?,
        }
    }
    for plan in &scenario.final_asks {
        world.ask(plan, totals)?;
    }
    Ok(())
}

#[test]
fn decisions_stay_within_every_hop_and_grants_within_their_grantors() {
    let totals = Totals::default();
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    runner.run(&scenario(), |scenario| run(&scenario, &totals)).unwrap();
    // No property holds vacuously: every verdict happens.
    let counts = [
        ("allowed", totals.allowed.get(), 300),
        ("allowed below the human's child", totals.allowed_deep.get(), 50),
        ("denied for a hop", totals.denied_for_a_hop.get(), 300),
        ("denied for a revocation", totals.denied_revoked.get(), 100),
        ("attenuated grants accepted", totals.accepted_attenuated.get(), 100),
        ("refusals with a witness", totals.refused_with_witness.get(), 100),
        ("grantor refusals", totals.grantor_refusals.get(), 20),
    ];
    // Refusals without a witness have so far all been of grants that allow
    // nothing after their creation (an expiry before their start).
    eprintln!("{counts:?}, refused without a witness: {}", totals.refused_conservatively.get());
    for (what, count, least) in counts {
        assert!(count >= least, "{what}: {count}, expected at least {least}");
    }
}

#[test]
fn directories_and_authorities_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Directory>();
    shareable::<Authority>();
}
