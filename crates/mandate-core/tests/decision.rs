//! The decision pipeline of SPEC §3: every reason code, produced by a named
//! case, on a chain of three (`agent:sub` → `agent:buyer` → `user:alice`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use mandate_core::budget::{Budget, Budgets, Period};
use mandate_core::decision::{
    Authority, BudgetCheck, Decision, NoBudgets, Outcome, ReasonCode, Request, Settings, decide,
};
use mandate_core::grant::Grant;
use mandate_core::identity::{Directory, Identity, IdentityId, Kind};
use mandate_core::pattern::{ActionPattern, ResourcePattern};
use mandate_core::policy::PolicySet;
use serde_json::{Map, json};

fn id(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn alice_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn buyer_key() -> SigningKey {
    SigningKey::from_bytes(&[8; 32])
}

fn grant(grantee: &str, grantor: &str, actions: &[&str], resources: &[&str], limit: Option<u64>) -> Grant {
    Grant {
        id: format!("g-{grantee}"),
        grantee: id(grantee),
        grantor: id(grantor),
        actions: actions.iter().map(|a| ActionPattern::parse(a).unwrap()).collect(),
        resources: resources.iter().map(|r| ResourcePattern::parse(r).unwrap()).collect(),
        limits: limit.map(|l| BTreeMap::from([("usd_cents".to_owned(), l)])).unwrap_or_default(),
        not_before: None,
        expires_at: Some(at("2027-01-01T00:00:00Z")),
        signature: None,
        revoked: false,
    }
}

/// alice (human) → buyer (payments.*, merchant://*, 5000/call) → sub
/// (payments.charge, merchant://books/*, 3000/call), both grants signed.
fn authority(policies: &str) -> Authority {
    let mut directory = Directory::new();
    let mut alice = Identity::new(id("user:alice"), Kind::Human, None);
    alice.public_key = Some(alice_key().verifying_key());
    directory.insert(alice).unwrap();
    let mut buyer = Identity::new(id("agent:buyer"), Kind::Agent, Some(id("user:alice")));
    buyer.public_key = Some(buyer_key().verifying_key());
    buyer.attributes.insert("team".into(), json!("books"));
    directory.insert(buyer).unwrap();
    directory.insert(Identity::new(id("agent:sub"), Kind::Agent, Some(id("agent:buyer")))).unwrap();
    let mut to_buyer = grant("agent:buyer", "user:alice", &["payments.*"], &["merchant://*"], Some(5_000));
    to_buyer.sign(&alice_key()).unwrap();
    let mut to_sub = grant("agent:sub", "agent:buyer", &["payments.charge"], &["merchant://books/*"], Some(3_000));
    to_sub.sign(&buyer_key()).unwrap();
    let mut authority = Authority {
        directory,
        grants: BTreeMap::new(),
        policies: PolicySet::new(policies, None).unwrap(),
        settings: Settings { require_signed_grants: true },
    };
    authority.add_grant(to_buyer);
    authority.add_grant(to_sub);
    authority
}

/// Replaces every grant held by `grantee`.
fn regrant(authority: &mut Authority, grantee: &str, grant: Grant) {
    authority.grants.remove(&id(grantee));
    authority.add_grant(grant);
}

const PERMIT_ALL: &str = r#"@id("permit-all") permit(principal, action, resource);"#;

struct Ask<'a> {
    identity: &'a str,
    action: &'a str,
    resource: &'a str,
    usd_cents: u64,
    at: &'a str,
}

const ASK: Ask<'static> = Ask {
    identity: "agent:sub",
    action: "payments.charge",
    resource: "merchant://books/42",
    usd_cents: 1_000,
    at: "2026-11-22T12:00:00Z",
};

fn ask(authority: &Authority, ask: Ask<'_>, budgets: &dyn BudgetCheck) -> Decision {
    let identity = id(ask.identity);
    let amounts = BTreeMap::from([("usd_cents".to_owned(), ask.usd_cents)]);
    let context = Map::new();
    let request = Request {
        identity: &identity,
        action: ask.action,
        resource: ask.resource,
        context: &context,
        amounts: &amounts,
        at: at(ask.at),
    };
    decide(authority, &request, budgets)
}

fn denied_for(decision: &Decision) -> (ReasonCode, Option<&str>) {
    assert_eq!(decision.outcome, Outcome::Deny, "{decision:?}");
    let reason = &decision.reasons[0];
    (reason.code, reason.identity.as_ref().map(IdentityId::as_str))
}

#[test]
fn a_covered_request_is_allowed_with_its_chain_and_policy() {
    let authority = authority(PERMIT_ALL);
    let decision = ask(&authority, ASK, &NoBudgets);
    assert_eq!(decision.outcome, Outcome::Allow, "{decision:?}");
    let chain: Vec<&str> = decision.chain.iter().map(IdentityId::as_str).collect();
    assert_eq!(chain, ["agent:sub", "agent:buyer", "user:alice"]);
    assert_eq!(decision.determining_policies, ["permit-all"]);
    assert_eq!(decision.policy_version, authority.policies.version_hash());
    // A human acts with no grant at all.
    let human = ask(&authority, Ask { identity: "user:alice", action: "anything", ..ASK }, &NoBudgets);
    assert_eq!(human.outcome, Outcome::Allow);
}

#[test]
fn identity_unknown_and_revoked_name_the_identity() {
    let mut authority = authority(PERMIT_ALL);
    let unknown = ask(&authority, Ask { identity: "agent:ghost", ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&unknown), (ReasonCode::IdentityUnknown, Some("agent:ghost")));
    authority.directory.revoke(&id("agent:buyer")).unwrap();
    let revoked = ask(&authority, ASK, &NoBudgets);
    assert_eq!(denied_for(&revoked), (ReasonCode::IdentityRevoked, Some("agent:buyer")));
    assert!(revoked.reasons[0].message.contains("agent:buyer"), "{}", revoked.reasons[0].message);
}

#[test]
fn grant_failures_name_the_hop() {
    let authority = authority(PERMIT_ALL);
    let other_action = ask(&authority, Ask { action: "github.push", ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&other_action), (ReasonCode::NoGrant, Some("agent:sub")));
    let other_resource = ask(&authority, Ask { resource: "repo://acme/x", ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&other_resource), (ReasonCode::NoGrant, Some("agent:sub")));
    let over = ask(&authority, Ask { usd_cents: 3_001, ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&over), (ReasonCode::LimitExceeded, Some("agent:sub")));
    let expired = ask(&authority, Ask { at: "2027-06-01T00:00:00Z", ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&expired), (ReasonCode::GrantExpired, Some("agent:sub")));
}

#[test]
fn a_limit_on_an_upper_hop_binds_the_whole_chain() {
    let mut authority = authority(PERMIT_ALL);
    // Widen sub's own limit beyond buyer's (as a forged grant would).
    let mut wide = grant("agent:sub", "agent:buyer", &["payments.charge"], &["merchant://books/*"], Some(9_000));
    wide.sign(&buyer_key()).unwrap();
    regrant(&mut authority, "agent:sub", wide);
    let over = ask(&authority, Ask { usd_cents: 6_000, ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&over), (ReasonCode::LimitExceeded, Some("agent:buyer")));
}

#[test]
fn unsigned_or_badly_signed_grants_do_not_count_when_signatures_are_required() {
    let mut authority = authority(PERMIT_ALL);
    let unsigned = grant("agent:sub", "agent:buyer", &["payments.charge"], &["merchant://books/*"], Some(3_000));
    regrant(&mut authority, "agent:sub", unsigned.clone());
    let decision = ask(&authority, ASK, &NoBudgets);
    assert_eq!(denied_for(&decision), (ReasonCode::GrantSignatureInvalid, Some("agent:sub")));
    // Signed by a key that is not the grantor's registered key.
    let mut forged = unsigned.clone();
    forged.sign(&SigningKey::from_bytes(&[9; 32])).unwrap();
    regrant(&mut authority, "agent:sub", forged.clone());
    assert_eq!(denied_for(&ask(&authority, ASK, &NoBudgets)).0, ReasonCode::GrantSignatureInvalid);
    // Without the setting an unsigned grant counts, a badly signed one never does.
    authority.settings.require_signed_grants = false;
    regrant(&mut authority, "agent:sub", unsigned);
    assert_eq!(ask(&authority, ASK, &NoBudgets).outcome, Outcome::Allow);
    regrant(&mut authority, "agent:sub", forged);
    assert_eq!(denied_for(&ask(&authority, ASK, &NoBudgets)).0, ReasonCode::GrantSignatureInvalid);
}

#[test]
fn a_changed_grantor_key_is_rechecked() {
    let mut authority = authority(PERMIT_ALL);
    assert_eq!(ask(&authority, ASK, &NoBudgets).outcome, Outcome::Allow);
    // buyer's key rotates: grants it signed with the old key no longer count.
    let mut directory = Directory::new();
    for name in ["user:alice", "agent:buyer", "agent:sub"] {
        let mut identity = authority.directory.get(&id(name)).unwrap().clone();
        if identity.id.as_str() == "agent:buyer" {
            identity.public_key = Some(SigningKey::from_bytes(&[42; 32]).verifying_key());
        }
        directory.insert(identity).unwrap();
    }
    authority.directory = directory;
    authority.recheck_signatures_by(&id("agent:buyer"));
    assert_eq!(denied_for(&ask(&authority, ASK, &NoBudgets)), (ReasonCode::GrantSignatureInvalid, Some("agent:sub")));
}

#[test]
fn a_revoked_grant_is_absent() {
    let mut authority = authority(PERMIT_ALL);
    for held in authority.grants.values_mut().flatten() {
        held.grant.revoked = held.grant.grantee.as_str() == "agent:buyer";
    }
    assert_eq!(denied_for(&ask(&authority, ASK, &NoBudgets)), (ReasonCode::NoGrant, Some("agent:buyer")));
}

#[test]
fn cedar_forbid_no_permit_errors_and_approval() {
    let forbid = format!(
        r#"{PERMIT_ALL}
        @id("no-big-books") forbid(principal, action, resource) when {{ context.amounts.usd_cents > 2000 }};"#
    );
    let forbidding = authority(&forbid);
    let decision = ask(&forbidding, Ask { usd_cents: 2_500, ..ASK }, &NoBudgets);
    assert_eq!(denied_for(&decision).0, ReasonCode::PolicyForbid);
    assert_eq!(decision.reasons[0].policies, ["no-big-books"]);

    let narrow =
        authority(r#"@id("only-refunds") permit(principal, action == Mandate::Action::"payments.refund", resource);"#);
    assert_eq!(denied_for(&ask(&narrow, ASK, &NoBudgets)).0, ReasonCode::PolicyNoPermit);

    // An erroring forbid fails closed, and the error is reported.
    let erroring = authority(&format!(
        r#"{PERMIT_ALL}
        @id("broken") forbid(principal, action, resource) when {{ principal.missing_attribute > 1 }};"#
    ));
    let decision = ask(&erroring, ASK, &NoBudgets);
    assert_eq!(denied_for(&decision).0, ReasonCode::PolicyForbid);
    assert!(decision.policy_errors.iter().any(|error| error.policy == "broken"), "{decision:?}");

    let approval = authority(r#"@id("ask-alice") @approval("required") permit(principal, action, resource);"#);
    let decision = ask(&approval, ASK, &NoBudgets);
    assert_eq!(decision.outcome, Outcome::Pending);
    assert_eq!(decision.determining_policies, ["ask-alice"]);

    // Attributes and ancestry reach Cedar.
    let team = authority(
        r#"@id("books-team") permit(principal in Mandate::Identity::"agent:buyer", action, resource)
           when { context.chain.contains("user:alice") };"#,
    );
    assert_eq!(ask(&team, ASK, &NoBudgets).outcome, Outcome::Allow);
    assert_eq!(
        denied_for(&ask(&team, Ask { identity: "user:alice", ..ASK }, &NoBudgets)).0,
        ReasonCode::PolicyNoPermit
    );
}

/// A budget of 500 usd_cents a day on the human.
fn tight() -> Budgets {
    let mut budgets = Budgets::new();
    let budget = Budget::new(
        "b1".into(),
        IdentityId::parse("user:alice").unwrap(),
        "usd_cents".into(),
        Period::Day,
        500,
        at(ASK.at),
    );
    budgets.create(budget).unwrap();
    budgets
}

#[test]
fn budgets_decide_after_the_policies_and_name_the_budget() {
    let authority = authority(PERMIT_ALL);
    let budgets = tight();
    let decision = ask(&authority, ASK, &budgets);
    assert_eq!(denied_for(&decision), (ReasonCode::BudgetExceeded, Some("user:alice")));
    assert_eq!(decision.determining_policies, ["permit-all"]);
    let shortfall = decision.reasons[0].shortfall.clone().unwrap();
    assert_eq!((shortfall.budget.as_str(), shortfall.remaining, shortfall.limit), ("b1", 500, 500));
    let allowed = ask(&authority, Ask { usd_cents: 400, ..ASK }, &budgets);
    assert_eq!(allowed.outcome, Outcome::Allow);
    assert_eq!(allowed.budgets.len(), 1);
    assert_eq!((allowed.budgets[0].before, allowed.budgets[0].after), (0, 400));
}
