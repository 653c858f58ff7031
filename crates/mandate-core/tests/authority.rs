//! Identities, chains, grants and attenuation, through the crate's public API:
//! named cases for each rule of SPEC §2 and §3 steps 1–2, then property tests
//! over random identity trees and grants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cell::Cell;
use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use jiff::{SignedDuration, Timestamp};
use mandate_core::grant::{
    AttenuationError, Coverage, Grant, GrantorError, Liveness, SigningError, check_attenuation, check_grantor,
};
use mandate_core::identity::{
    CHAIN_DEPTH_MAX, ChainError, Directory, Identity, IdentityError, IdentityId, Kind, Status,
};
use mandate_core::pattern::{ActionPattern, ResourcePattern};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------------------
// Helpers

fn id(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

/// The creation time of every grant below, and `hours` from it.
fn at(hours: i64) -> Timestamp {
    "2026-03-01T12:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_hours(hours)
}

fn human(name: &str) -> Identity {
    Identity::new(id(name), Kind::Human, None)
}

fn agent(name: &str, parent: &str) -> Identity {
    Identity::new(id(name), Kind::Agent, Some(id(parent)))
}

/// alice (human) → buyer (agent) → sub (agent) → tool (service); bob (human).
fn directory() -> Directory {
    let mut directory = Directory::new();
    directory.insert(human("user:alice")).unwrap();
    directory.insert(human("user:bob")).unwrap();
    directory.insert(agent("agent:buyer", "user:alice")).unwrap();
    directory.insert(agent("agent:sub", "agent:buyer")).unwrap();
    directory.insert(Identity::new(id("service:tool"), Kind::Service, Some(id("agent:sub")))).unwrap();
    directory
}

fn grant(grant_id: &str, grantee: &str, grantor: &str, actions: &[&str], resources: &[&str]) -> Grant {
    Grant {
        id: grant_id.into(),
        grantee: id(grantee),
        grantor: id(grantor),
        actions: actions.iter().map(|a| ActionPattern::parse(a).unwrap()).collect(),
        resources: resources.iter().map(|r| ResourcePattern::parse(r).unwrap()).collect(),
        limits: BTreeMap::new(),
        not_before: None,
        expires_at: None,
        signature: None,
        revoked: false,
    }
}

fn amounts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(dimension, amount)| ((*dimension).to_owned(), *amount)).collect()
}

/// The grant `buyer` holds from alice: payments on accounts, 5000 cents a
/// call, for ten hours.
fn buyer_grant() -> Grant {
    Grant {
        limits: amounts(&[("usd_cents", 5000)]),
        expires_at: Some(at(10)),
        ..grant("g-buyer", "agent:buyer", "user:alice", &["payments.*"], &["acct://*"])
    }
}

/// A sub-grant from buyer to sub, within [`buyer_grant`].
fn sub_grant() -> Grant {
    Grant {
        limits: amounts(&[("usd_cents", 1000)]),
        expires_at: Some(at(5)),
        ..grant("g-sub", "agent:sub", "agent:buyer", &["payments.charge"], &["acct://42"])
    }
}

fn attenuate(new: &Grant, grantor_grants: &[Grant]) -> Result<(), AttenuationError> {
    check_attenuation(new, &grantor_grants.iter().collect::<Vec<_>>(), false, at(0))
}

// ---------------------------------------------------------------------------
// Identities and chains (SPEC §2, §3 step 1)

#[test]
fn human_with_a_parent_is_refused() {
    let mut directory = directory();
    let error = directory.insert(Identity::new(id("user:carol"), Kind::Human, Some(id("user:alice")))).unwrap_err();
    assert_eq!(error, IdentityError::HumanWithParent { id: id("user:carol") });
    assert_eq!(error.to_string(), "human `user:carol` cannot have a parent");
}

#[test]
fn agent_and_service_without_a_parent_are_refused() {
    let mut directory = directory();
    for kind in [Kind::Agent, Kind::Service] {
        let error = directory.insert(Identity::new(id("x:orphan"), kind, None)).unwrap_err();
        assert_eq!(error, IdentityError::ParentMissing { id: id("x:orphan"), kind });
    }
    assert_eq!(
        directory.insert(Identity::new(id("x:orphan"), Kind::Service, None)).unwrap_err().to_string(),
        "service `x:orphan` must have a parent"
    );
}

#[test]
fn unknown_parent_is_refused() {
    let mut directory = directory();
    let error = directory.insert(agent("agent:x", "user:nobody")).unwrap_err();
    assert_eq!(error, IdentityError::ParentUnknown { id: id("agent:x"), parent: id("user:nobody") });
    assert_eq!(error.to_string(), "parent `user:nobody` of `agent:x` does not exist");
}

#[test]
fn duplicate_id_is_refused_even_with_another_kind() {
    let mut directory = directory();
    assert_eq!(directory.insert(human("agent:buyer")), Err(IdentityError::Duplicate { id: id("agent:buyer") }));
    assert_eq!(directory.get(&id("agent:buyer")).unwrap().kind, Kind::Agent, "the original is untouched");
}

#[test]
fn child_of_an_ineffective_parent_is_refused() {
    let mut directory = directory();
    directory.revoke(&id("agent:buyer")).unwrap();
    let error = directory.insert(agent("agent:late", "agent:sub")).unwrap_err();
    assert_eq!(
        error,
        IdentityError::ParentRevoked { id: id("agent:late"), parent: id("agent:sub"), revoked: id("agent:buyer") }
    );
    assert_eq!(error.to_string(), "parent `agent:sub` of `agent:late` is not effective: `agent:buyer` is revoked");
}

#[test]
fn chains_are_at_most_chain_depth_max_long() {
    let mut directory = Directory::new();
    directory.insert(human("h")).unwrap();
    let mut parent = "h".to_owned();
    for n in 1..CHAIN_DEPTH_MAX {
        let name = format!("a{n}");
        directory.insert(agent(&name, &parent)).unwrap();
        parent = name;
    }
    let deepest = directory.chain(&id(&parent)).unwrap();
    assert_eq!(deepest.len(), CHAIN_DEPTH_MAX);
    assert_eq!(deepest.human(), &id("h"));

    let error = directory.insert(agent("too-deep", &parent)).unwrap_err();
    assert_eq!(error, IdentityError::TooDeep { id: id("too-deep") });
    assert_eq!(error.to_string(), "identity `too-deep` would make a chain longer than 32");
    assert!(directory.get(&id("too-deep")).is_none());
    assert!(directory.descendants(&id(&parent)).is_empty(), "a refused child is not indexed");
}

#[test]
fn chain_runs_from_the_acting_identity_to_the_human() {
    let directory = directory();
    let chain = directory.chain(&id("service:tool")).unwrap();
    let ids: Vec<&str> = chain.ids().map(IdentityId::as_str).collect();
    assert_eq!(ids, ["service:tool", "agent:sub", "agent:buyer", "user:alice"]);
    assert_eq!((chain.acting(), chain.human(), chain.len()), (&id("service:tool"), &id("user:alice"), 4));
    let hops: Vec<(&str, &str)> = chain.hops().map(|(grantee, grantor)| (grantee.as_str(), grantor.as_str())).collect();
    assert_eq!(hops, [("service:tool", "agent:sub"), ("agent:sub", "agent:buyer"), ("agent:buyer", "user:alice")]);
}

#[test]
fn a_human_alone_is_a_chain_without_hops() {
    let chain = directory().chain(&id("user:bob")).unwrap();
    assert_eq!((chain.acting(), chain.human(), chain.len()), (&id("user:bob"), &id("user:bob"), 1));
    assert_eq!(chain.hops().count(), 0);
    assert!(!chain.is_empty());
}

#[test]
fn chain_of_an_unknown_identity_is_identity_unknown() {
    let error = directory().chain(&id("agent:ghost")).unwrap_err();
    assert_eq!(error, ChainError::Unknown { id: id("agent:ghost") });
    assert_eq!(error.to_string(), "identity `agent:ghost` does not exist");
}

#[test]
fn revoking_an_ancestor_makes_every_descendant_ineffective() {
    let mut directory = directory();
    assert!(directory.revoke(&id("agent:buyer")).unwrap());
    for below in ["agent:buyer", "agent:sub", "service:tool"] {
        let error = directory.chain(&id(below)).unwrap_err();
        assert_eq!(error, ChainError::Revoked { id: id(below), revoked: id("agent:buyer") });
    }
    assert!(directory.chain(&id("user:alice")).is_ok(), "revocation does not go up");
    assert_eq!(directory.get(&id("agent:sub")).unwrap().status, Status::Active, "descendants keep their own status");
    assert_eq!(
        directory.chain(&id("service:tool")).unwrap_err().to_string(),
        "identity `service:tool` is not effective: `agent:buyer` is revoked"
    );
}

#[test]
fn chain_names_the_first_revoked_identity_walking_up() {
    let mut directory = directory();
    directory.revoke(&id("user:alice")).unwrap();
    directory.revoke(&id("agent:sub")).unwrap();
    let revoked = |who: &str| match directory.chain(&id(who)) {
        Err(ChainError::Revoked { revoked, .. }) => revoked,
        other => panic!("{other:?}"),
    };
    assert_eq!(revoked("service:tool"), id("agent:sub"));
    assert_eq!(revoked("agent:sub"), id("agent:sub"), "an identity revoked itself names itself");
    assert_eq!(revoked("agent:buyer"), id("user:alice"));
}

#[test]
fn revoke_is_idempotent_and_refuses_unknown_ids() {
    let mut directory = directory();
    assert_eq!(directory.revoke(&id("agent:sub")), Ok(true));
    assert_eq!(directory.revoke(&id("agent:sub")), Ok(false));
    assert_eq!(directory.revoke(&id("agent:ghost")), Err(IdentityError::Unknown { id: id("agent:ghost") }));
}

#[test]
fn descendants_list_the_whole_subtree_nearest_first() {
    let mut directory = directory();
    directory.insert(agent("agent:second", "user:alice")).unwrap();
    directory.insert(agent("agent:sub2", "agent:buyer")).unwrap();
    let names = |who: &str| directory.descendants(&id(who)).iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(names("user:alice"), ["agent:buyer", "agent:second", "agent:sub", "agent:sub2", "service:tool"]);
    assert_eq!(names("agent:buyer"), ["agent:sub", "agent:sub2", "service:tool"]);
    assert!(names("service:tool").is_empty() && names("user:bob").is_empty() && names("agent:ghost").is_empty());
    assert_eq!(directory.len(), 7);
    assert_eq!(directory.iter().filter(|identity| identity.kind == Kind::Human).count(), 2);
}

// ---------------------------------------------------------------------------
// Grants at one hop (SPEC §3 step 2)

#[test]
fn grantor_must_be_the_grantees_parent() {
    let directory = directory();
    assert_eq!(check_grantor(&sub_grant(), &directory), Ok(()));
    let from_alice = grant("g", "agent:sub", "user:alice", &["*"], &["*"]);
    let error = check_grantor(&from_alice, &directory).unwrap_err();
    assert_eq!(
        error,
        GrantorError::NotParent { grantor: id("user:alice"), grantee: id("agent:sub"), parent: id("agent:buyer") }
    );
    assert_eq!(error.to_string(), "grantor `user:alice` is not the parent of `agent:sub`; its parent is `agent:buyer`");
    let to_human = grant("g", "user:bob", "user:alice", &["*"], &["*"]);
    assert_eq!(check_grantor(&to_human, &directory), Err(GrantorError::GranteeIsHuman { grantee: id("user:bob") }));
    let to_ghost = grant("g", "agent:ghost", "user:alice", &["*"], &["*"]);
    assert_eq!(check_grantor(&to_ghost, &directory), Err(GrantorError::GranteeUnknown { grantee: id("agent:ghost") }));
}

#[test]
fn liveness_window_is_not_before_inclusive_expiry_exclusive() {
    let mut g = Grant { not_before: Some(at(1)), ..buyer_grant() };
    let nanosecond = SignedDuration::from_nanos(1);
    assert_eq!(g.liveness(at(1) - nanosecond), Liveness::NotYetValid);
    assert_eq!(g.liveness(at(1)), Liveness::Live);
    assert_eq!(g.liveness(at(10) - nanosecond), Liveness::Live);
    assert_eq!(g.liveness(at(10)), Liveness::Expired);
    assert!(g.is_live(at(5)) && !g.is_live(at(10)));
    g.revoked = true;
    assert_eq!(g.liveness(at(5)), Liveness::Revoked);
    let forever = grant("g", "agent:buyer", "user:alice", &["*"], &["*"]);
    assert!(forever.is_live(at(-100_000)) && forever.is_live(at(100_000)));
}

#[test]
fn coverage_needs_a_matching_action_and_resource() {
    let g = Grant { actions: vec![ActionPattern::parse("github.push").unwrap()], ..buyer_grant() };
    let g = Grant { resources: vec![ResourcePattern::parse("repo://acme/*").unwrap()], ..g };
    let none = BTreeMap::new();
    assert_eq!(g.covers("github.push", "repo://acme/api", &none), Coverage::Covered);
    assert_eq!(g.covers("github.pull", "repo://acme/api", &none), Coverage::NotCovered);
    assert_eq!(g.covers("github.push", "repo://other/api", &none), Coverage::NotCovered);

    let two = grant("g", "agent:buyer", "user:alice", &["payments.*", "github.*"], &["acct://1", "repo://*"]);
    assert_eq!(two.covers("github.push", "acct://1", &none), Coverage::Covered, "a grant allows the product");
    assert_eq!(grant("g", "a", "b", &[], &["*"]).covers("x", "y", &none), Coverage::NotCovered);
}

#[test]
fn coverage_names_the_first_limit_exceeded() {
    let g = Grant { limits: amounts(&[("tokens", 100), ("usd_cents", 5000)]), ..buyer_grant() };
    let within = amounts(&[("usd_cents", 5000), ("tokens", 100), ("calls", 7)]);
    assert_eq!(g.covers("payments.charge", "acct://1", &within), Coverage::Covered, "unlimited dimensions pass");
    assert_eq!(g.covers("payments.charge", "acct://1", &BTreeMap::new()), Coverage::Covered, "absent counts as 0");
    assert_eq!(
        g.covers("payments.charge", "acct://1", &amounts(&[("usd_cents", 5001), ("tokens", 101)])),
        Coverage::OverLimit { dimension: "tokens".into(), limit: 100, amount: 101 }
    );
    assert_eq!(
        g.covers("payments.charge", "acct://1", &amounts(&[("usd_cents", 5001)])),
        Coverage::OverLimit { dimension: "usd_cents".into(), limit: 5000, amount: 5001 }
    );
    assert_eq!(g.covers("github.push", "acct://1", &amounts(&[("usd_cents", 9999)])), Coverage::NotCovered);
}

// ---------------------------------------------------------------------------
// Signatures

#[test]
fn signing_bytes_are_the_canonical_wire_form_without_server_fields() {
    let g = Grant {
        actions: vec![ActionPattern::parse("payments.*").unwrap(), ActionPattern::parse("github.push").unwrap()],
        not_before: Some("2026-03-01T12:00:00.250Z".parse().unwrap()),
        limits: amounts(&[("usd_cents", 5000), ("calls", 3)]),
        signature: Some([7; 64]),
        revoked: true,
        ..buyer_grant()
    };
    let expected = concat!(
        r#"{"actions":["payments.*","github.push"],"expires_at":"2026-03-01T22:00:00Z","#,
        r#""grantee":"agent:buyer","grantor":"user:alice","limits":{"calls":3,"usd_cents":5000},"#,
        r#""not_before":"2026-03-01T12:00:00.25Z","resources":["acct://*"]}"#
    );
    assert_eq!(String::from_utf8(g.signing_bytes().unwrap()).unwrap(), expected);

    let bare = grant("other-id", "agent:buyer", "user:alice", &["*"], &["*"]);
    let expected = r#"{"actions":["*"],"grantee":"agent:buyer","grantor":"user:alice","resources":["*"]}"#;
    assert_eq!(String::from_utf8(bare.signing_bytes().unwrap()).unwrap(), expected, "empty and absent fields omitted");
}

#[test]
fn signing_bytes_sort_limit_names_by_utf16_as_rfc_8785_says() {
    // U+FF61 sorts before U+1F600 in UTF-8 but after it in UTF-16, whose
    // surrogate pair starts with 0xD83D.
    let g = Grant { limits: amounts(&[("\u{ff61}", 1), ("\u{1f600}", 2)]), ..sub_grant() };
    let text = String::from_utf8(g.signing_bytes().unwrap()).unwrap();
    assert!(text.contains("\"limits\":{\"\u{1f600}\":2,\"\u{ff61}\":1}"), "{text}");
}

#[test]
fn signing_bytes_refuse_values_json_cannot_carry() {
    let huge = Grant { limits: amounts(&[("usd_cents", 1 << 53)]), ..buyer_grant() };
    assert_eq!(
        huge.signing_bytes(),
        Err(SigningError::LimitOutOfRange { dimension: "usd_cents".into(), limit: 1 << 53 })
    );
    let safe = Grant { limits: amounts(&[("usd_cents", (1 << 53) - 1)]), ..buyer_grant() };
    assert!(safe.signing_bytes().is_ok());
    let ancient = Grant { not_before: Some("-000001-01-01T00:00:00Z".parse().unwrap()), ..buyer_grant() };
    assert!(matches!(ancient.signing_bytes(), Err(SigningError::TimeOutOfRange { field: "not_before", .. })));
}

#[test]
fn signature_verifies_under_the_grantors_key_only() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let other = SigningKey::from_bytes(&[2; 32]);
    let mut g = sub_grant();
    assert!(!g.verify_signature(&key.verifying_key()), "unsigned");
    g.sign(&key).unwrap();
    assert!(g.verify_signature(&key.verifying_key()));
    assert!(!g.verify_signature(&other.verifying_key()));

    // Server-side fields are outside the signature.
    let server_side = Grant { id: "g-renamed".into(), revoked: true, ..g.clone() };
    assert!(server_side.verify_signature(&key.verifying_key()));

    // Every signed field is inside it.
    let tampered = [
        Grant { grantee: id("service:tool"), ..g.clone() },
        Grant { grantor: id("user:alice"), ..g.clone() },
        Grant { actions: vec![ActionPattern::ANY], ..g.clone() },
        Grant { resources: vec![ResourcePattern::ANY], ..g.clone() },
        Grant { limits: amounts(&[("usd_cents", 1001)]), ..g.clone() },
        Grant { limits: BTreeMap::new(), ..g.clone() },
        Grant { expires_at: Some(at(6)), ..g.clone() },
        Grant { expires_at: None, ..g.clone() },
        Grant { not_before: Some(at(0)), ..g.clone() },
    ];
    for t in &tampered {
        assert!(!t.verify_signature(&key.verifying_key()), "{t:?}");
    }
    let mut flipped = g.clone();
    flipped.signature.as_mut().unwrap()[0] ^= 1;
    assert!(!flipped.verify_signature(&key.verifying_key()));
}

#[test]
fn weak_key_forgery_is_refused_by_strict_verification() {
    // The identity point as a public key and the signature (R = identity,
    // s = 0) satisfy the plain Ed25519 equation for every message;
    // `verify_strict` refuses small-order keys, so this must not verify.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let weak = VerifyingKey::from_bytes(&identity_point).unwrap();
    assert!(weak.is_weak());
    let mut signature = [0u8; 64];
    signature[0] = 1;
    let forged = Grant { signature: Some(signature), ..sub_grant() };
    assert!(!forged.verify_signature(&weak));
}

// ---------------------------------------------------------------------------
// Attenuation at creation (SPEC §2)

#[test]
fn a_human_grantor_may_grant_anything() {
    let anything = grant("g", "agent:buyer", "user:alice", &["*"], &["*"]);
    assert_eq!(check_attenuation(&anything, &[], true, at(0)), Ok(()));
}

#[test]
fn narrower_grant_is_accepted() {
    assert_eq!(attenuate(&sub_grant(), &[buyer_grant()]), Ok(()));
    let with_extra_limit = Grant { limits: amounts(&[("usd_cents", 5000), ("tokens", 1)]), ..sub_grant() };
    assert_eq!(attenuate(&with_extra_limit, &[buyer_grant()]), Ok(()), "limiting more dimensions is narrower");
    let prefix_under_prefix = Grant {
        actions: vec![ActionPattern::parse("payments.card.*").unwrap()],
        resources: vec![ResourcePattern::parse("acct://eu/*").unwrap()],
        ..sub_grant()
    };
    assert_eq!(attenuate(&prefix_under_prefix, &[buyer_grant()]), Ok(()));
}

#[test]
fn wider_action_is_refused() {
    let wider =
        Grant { actions: vec![ActionPattern::parse("payments.charge").unwrap(), ActionPattern::ANY], ..sub_grant() };
    let error = attenuate(&wider, &[buyer_grant()]).unwrap_err();
    assert_eq!(
        error,
        AttenuationError::NotCovered {
            grantor: id("agent:buyer"),
            action: ActionPattern::ANY,
            resource: ResourcePattern::parse("acct://42").unwrap()
        }
    );
    assert_eq!(error.to_string(), "`agent:buyer` holds no live grant covering action `*` on resource `acct://42`");
}

#[test]
fn wider_resource_is_refused() {
    let wider = Grant { resources: vec![ResourcePattern::parse("acct*").unwrap()], ..sub_grant() };
    let error = attenuate(&wider, &[buyer_grant()]).unwrap_err();
    assert!(matches!(&error, AttenuationError::NotCovered { resource, .. } if resource.to_string() == "acct*"));
}

#[test]
fn patterns_from_two_grants_do_not_combine_into_a_pair_neither_allows() {
    // buyer may charge accounts and push to repos, but not push to accounts.
    let payments = grant("g-pay", "agent:buyer", "user:alice", &["payments.*"], &["acct://*"]);
    let github = grant("g-gh", "agent:buyer", "user:alice", &["github.*"], &["repo://*"]);
    let mixed = grant("g", "agent:sub", "agent:buyer", &["payments.charge", "github.push"], &["acct://1"]);
    let error = attenuate(&mixed, &[payments.clone(), github.clone()]).unwrap_err();
    assert!(matches!(&error, AttenuationError::NotCovered { action, .. } if action.to_string() == "github.push"));

    // Each pair may be covered by a different grant: pairs are checked alone.
    let both = grant("g", "agent:sub", "agent:buyer", &["payments.charge"], &["acct://1", "repo://acme/api"]);
    let repo_payments = grant("g-repo", "agent:buyer", "user:alice", &["payments.*"], &["repo://*"]);
    assert_eq!(attenuate(&both, &[payments.clone(), repo_payments]), Ok(()));
    assert!(attenuate(&both, &[payments, github]).is_err(), "payments.charge on repo://acme/api");
}

#[test]
fn higher_or_missing_limit_is_refused() {
    let higher = Grant { limits: amounts(&[("usd_cents", 5001)]), ..sub_grant() };
    let error = attenuate(&higher, &[buyer_grant()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "limit 5001 on `usd_cents` exceeds the 5000 of grant `g-buyer` covering action `payments.charge` on resource `acct://42`"
    );
    assert!(matches!(error, AttenuationError::LimitExceeded { limit: 5001, grantor_limit: 5000, .. }));

    let unlimited = Grant { limits: amounts(&[("tokens", 5)]), ..sub_grant() };
    let error = attenuate(&unlimited, &[buyer_grant()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "no limit on `usd_cents` exceeds the 5000 of grant `g-buyer` covering action `payments.charge` on resource `acct://42`"
    );
    let equal = Grant { limits: amounts(&[("usd_cents", 5000)]), ..sub_grant() };
    assert_eq!(attenuate(&equal, &[buyer_grant()]), Ok(()));
}

#[test]
fn later_or_missing_expiry_is_refused() {
    let later = Grant { expires_at: Some(at(11)), ..sub_grant() };
    let error = attenuate(&later, &[buyer_grant()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "expiry `2026-03-01T23:00:00Z` is after `2026-03-01T22:00:00Z`, when grant `g-buyer` covering action `payments.charge` on resource `acct://42` expires"
    );
    let forever = Grant { expires_at: None, ..sub_grant() };
    let error = attenuate(&forever, &[buyer_grant()]).unwrap_err();
    assert!(
        matches!(error, AttenuationError::ExpiryMissing { grantor_expires_at, .. } if grantor_expires_at == at(10))
    );
    assert!(error.to_string().starts_with("a grant without expiry outlives grant `g-buyer`"));
    let same = Grant { expires_at: Some(at(10)), ..sub_grant() };
    assert_eq!(attenuate(&same, &[buyer_grant()]), Ok(()));
}

#[test]
fn revoked_expired_and_foreign_grants_give_no_authority() {
    let revoked = Grant { revoked: true, ..buyer_grant() };
    let expired = Grant { expires_at: Some(at(0)), ..buyer_grant() };
    let someone_elses = Grant { grantee: id("agent:other"), ..buyer_grant() };
    for grants in [vec![revoked], vec![expired], vec![someone_elses], vec![]] {
        let error = attenuate(&sub_grant(), &grants).unwrap_err();
        assert!(matches!(error, AttenuationError::NotCovered { .. }), "{grants:?}");
    }
}

#[test]
fn a_grantor_grant_not_yet_valid_covers_only_what_starts_after_it() {
    let future = Grant { not_before: Some(at(2)), ..buyer_grant() };
    let error = attenuate(&sub_grant(), std::slice::from_ref(&future)).unwrap_err();
    assert_eq!(
        error,
        AttenuationError::StartsEarlier {
            action: ActionPattern::parse("payments.charge").unwrap(),
            resource: ResourcePattern::parse("acct://42").unwrap(),
            grant: "g-buyer".into(),
            starts_at: at(0),
            grantor_not_before: at(2),
        }
    );
    let later_start = Grant { not_before: Some(at(2)), ..sub_grant() };
    assert_eq!(attenuate(&later_start, &[future]), Ok(()));
    let past_start = Grant { not_before: Some(at(-5)), ..buyer_grant() };
    assert_eq!(attenuate(&sub_grant(), &[past_start]), Ok(()), "a new grant exists only from its creation");
}

#[test]
fn one_covering_grant_suffices_and_the_first_shortfall_is_reported() {
    let tight = Grant { id: "g-tight".into(), limits: amounts(&[("usd_cents", 10)]), ..buyer_grant() };
    let wide = Grant { id: "g-wide".into(), limits: BTreeMap::new(), expires_at: None, ..buyer_grant() };
    let new = Grant { limits: amounts(&[("usd_cents", 20)]), expires_at: None, ..sub_grant() };
    assert_eq!(attenuate(&new, &[tight.clone(), wide]), Ok(()));
    let error = attenuate(&new, &[tight]).unwrap_err();
    assert!(matches!(error, AttenuationError::ExpiryMissing { ref grant, .. } if grant == "g-tight"), "{error}");
}

#[test]
fn attenuation_errors_stay_small_enough_to_return_by_value() {
    // Patterns are one `String` each so that this error, which callers wrap
    // in their own, stays under clippy's `result_large_err` threshold.
    assert!(size_of::<AttenuationError>() < 128, "{}", size_of::<AttenuationError>());
}

#[test]
fn a_grant_with_no_patterns_allows_nothing_and_is_accepted() {
    let empty = Grant { actions: vec![], ..sub_grant() };
    assert_eq!(attenuate(&empty, &[]), Ok(()));
}

// ---------------------------------------------------------------------------
// Properties over random trees and grants

const ACTION_PATTERNS: [&str; 6] = ["*", "payments.*", "payments.charge", "payments.refund", "github.*", "github.push"];
const RESOURCE_PATTERNS: [&str; 6] = ["*", "acct://*", "acct://1", "acct://2", "repo://acme/*", "repo://acme/api"];
const ACTIONS: [&str; 7] =
    ["payments.charge", "payments.refund", "payments.x", "github.push", "github.pull", "other", "payments"];
const RESOURCES: [&str; 6] = ["acct://1", "acct://2", "acct://3", "repo://acme/api", "repo://acme/web", "other://x"];
const DIMENSIONS: [&str; 2] = ["usd_cents", "tokens"];
const LIMITS: [u64; 4] = [0, 100, 101, 500];
/// Above every limit in [`LIMITS`]: the amount that stands for "unlimited".
const UNLIMITED: u64 = 1_000_000;
const NOT_BEFORE_HOURS: [Option<i64>; 4] = [None, Some(-5), Some(0), Some(5)];
const EXPIRES_HOURS: [Option<i64>; 4] = [None, Some(5), Some(10), Some(20)];

/// One random grant, before it is placed in a tree: indexes into the
/// alphabets above, and whether to derive it from a grant of the grantor.
#[derive(Debug, Clone)]
struct Draft {
    actions: Vec<usize>,
    resources: Vec<usize>,
    limits: Vec<Option<usize>>,
    not_before: usize,
    expires_at: usize,
    narrow_from: Option<usize>,
}

fn draft() -> impl Strategy<Value = Draft> {
    (
        prop::collection::vec(0..ACTION_PATTERNS.len(), 1..=2),
        prop::collection::vec(0..RESOURCE_PATTERNS.len(), 1..=2),
        prop::collection::vec(prop::option::of(0..LIMITS.len()), DIMENSIONS.len()),
        0..NOT_BEFORE_HOURS.len(),
        0..EXPIRES_HOURS.len(),
        prop::option::weighted(0.75, 0..8usize),
    )
        .prop_map(|(actions, resources, limits, not_before, expires_at, narrow_from)| Draft {
            actions,
            resources,
            limits,
            not_before,
            expires_at,
            narrow_from,
        })
}

/// A random request: a sampled action, resource, amounts and time ≥ `at(0)`.
#[derive(Debug, Clone)]
struct Request {
    action: String,
    resource: String,
    amounts: BTreeMap<String, u64>,
    time: Timestamp,
}

fn request() -> impl Strategy<Value = Request> {
    let amount = prop::option::of(prop::sample::select(vec![0u64, 100, 101, 500, 501, UNLIMITED]));
    let minutes = prop::sample::select(vec![0i64, 60, 299, 300, 301, 599, 600, 601, 1199, 1200, 1800]);
    (
        prop::sample::select(ACTIONS.to_vec()),
        prop::sample::select(RESOURCES.to_vec()),
        prop::collection::vec(amount, DIMENSIONS.len()),
        minutes,
    )
        .prop_map(|(action, resource, amounts, minutes)| Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            amounts: DIMENSIONS
                .iter()
                .zip(amounts)
                .filter_map(|(dimension, amount)| Some(((*dimension).to_owned(), amount?)))
                .collect(),
            time: at(0) + SignedDuration::from_mins(minutes),
        })
}

fn allows(grant: &Grant, request: &Request) -> bool {
    grant.is_live(request.time)
        && grant.covers(&request.action, &request.resource, &request.amounts) == Coverage::Covered
}

/// A string a pattern matches that no pattern of the alphabets matches
/// unless it covers the pattern: the exact text, or the prefix and `~`.
fn fresh(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some(prefix) => format!("{prefix}~"),
        None => pattern.to_owned(),
    }
}

/// The requests at the corners of `new`: for each pair of its patterns, a
/// fresh action and resource, every amount at the new limit (or above all
/// limits), at the last instant of its window. If `new` is wider than its
/// grantor's grants, one of these shows it (see `check_attenuation`).
fn corners(new: &Grant) -> Vec<Request> {
    let last = new.expires_at.unwrap_or(at(100_000)) - SignedDuration::from_nanos(1);
    let amounts: BTreeMap<String, u64> = DIMENSIONS
        .iter()
        .map(|dimension| ((*dimension).to_owned(), new.limits.get(*dimension).copied().unwrap_or(UNLIMITED)))
        .collect();
    let mut requests = Vec::new();
    for action in &new.actions {
        for resource in &new.resources {
            for time in [last, new.not_before.map_or(at(0), |not_before| not_before.max(at(0)))] {
                let (action, resource) = (fresh(&action.to_string()), fresh(&resource.to_string()));
                requests.push(Request { action, resource, amounts: amounts.clone(), time });
            }
        }
    }
    requests
}

/// Builds a grant from a draft: from the alphabets, or, when the draft says
/// so and the grantor holds grants, narrowed from one of them (patterns it
/// covers, limits no higher, expiry no later), so that deep trees hold
/// accepted grants too.
fn realize(draft: &Draft, n: usize, grantee: &IdentityId, grantor: &IdentityId, grantor_grants: &[Grant]) -> Grant {
    let pick = |alphabet: &[&str], index: usize| alphabet[index % alphabet.len()].to_owned();
    let mut actions: Vec<String> = draft.actions.iter().map(|&i| pick(&ACTION_PATTERNS, i)).collect();
    let mut resources: Vec<String> = draft.resources.iter().map(|&i| pick(&RESOURCE_PATTERNS, i)).collect();
    let mut limits: BTreeMap<String, u64> = DIMENSIONS
        .iter()
        .zip(&draft.limits)
        .filter_map(|(dimension, limit)| Some(((*dimension).to_owned(), LIMITS[(*limit)?])))
        .collect();
    let not_before = NOT_BEFORE_HOURS[draft.not_before].map(at);
    let mut expires_at = EXPIRES_HOURS[draft.expires_at].map(at);
    if let (Some(base), false) = (draft.narrow_from, grantor_grants.is_empty()) {
        let base = &grantor_grants[base % grantor_grants.len()];
        let within = |alphabet: &[&str], covers: &dyn Fn(&str) -> bool, seeds: &[usize]| -> Vec<String> {
            let allowed: Vec<&str> = alphabet.iter().copied().filter(|p| covers(p)).collect();
            seeds.iter().filter_map(|seed| allowed.get(seed % allowed.len().max(1)).map(|p| (*p).to_owned())).collect()
        };
        let action_covered = |p: &str| base.actions.iter().any(|b| b.covers(&ActionPattern::parse(p).unwrap()));
        let resource_covered = |p: &str| base.resources.iter().any(|b| b.covers(&ResourcePattern::parse(p).unwrap()));
        actions = within(&ACTION_PATTERNS, &action_covered, &draft.actions);
        resources = within(&RESOURCE_PATTERNS, &resource_covered, &draft.resources);
        for (dimension, &limit) in &base.limits {
            let mine = limits.get(dimension).copied().unwrap_or(limit);
            limits.insert(dimension.clone(), mine.min(limit));
        }
        expires_at = match (expires_at, base.expires_at) {
            (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
            (mine, theirs) => theirs.or(mine),
        };
    }
    Grant {
        id: format!("g{n}"),
        grantee: grantee.clone(),
        grantor: grantor.clone(),
        actions: actions.iter().map(|a| ActionPattern::parse(a).unwrap()).collect(),
        resources: resources.iter().map(|r| ResourcePattern::parse(r).unwrap()).collect(),
        limits,
        not_before,
        expires_at,
        signature: None,
        revoked: false,
    }
}

/// A random tree: node 0 is a human; each further node is a human or hangs
/// under an earlier node whose chain is shorter than 4 (so chains are at most
/// 4 long).
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<(Kind, usize)>,
    drafts: Vec<Vec<Draft>>,
    requests: Vec<Request>,
}

fn tree() -> impl Strategy<Value = Tree> {
    let kind = prop::sample::select(vec![Kind::Human, Kind::Agent, Kind::Agent, Kind::Service]);
    (
        prop::collection::vec((kind, 0..64usize), 1..8),
        prop::collection::vec(prop::collection::vec(draft(), 1..=3), 8),
        prop::collection::vec(request(), 48),
    )
        .prop_map(|(nodes, drafts, requests)| Tree { nodes, drafts, requests })
}

/// The tree built: its directory and, for each identity, the grants it holds
/// that attenuation accepted; plus every candidate with its grantor's grants
/// and the verdict.
struct Built {
    directory: Directory,
    held: BTreeMap<IdentityId, Vec<Grant>>,
    candidates: Vec<(Grant, Vec<Grant>, bool)>,
}

fn build(tree: &Tree) -> Built {
    let mut directory = Directory::new();
    let mut names: Vec<IdentityId> = vec![id("h0")];
    let mut depths = vec![1usize];
    directory.insert(human("h0")).unwrap();
    for (i, (kind, seed)) in tree.nodes.iter().enumerate() {
        let name = id(&format!("n{}", i + 1));
        let eligible: Vec<usize> = (0..names.len()).filter(|&n| depths[n] < 4).collect();
        // Mostly under one of the last few nodes, so that trees grow deep.
        let parent = eligible[eligible.len() - 1 - seed % eligible.len().min(3)];
        let (identity, depth) = match kind {
            Kind::Human => (Identity::new(name.clone(), Kind::Human, None), 1),
            kind => (Identity::new(name.clone(), *kind, Some(names[parent].clone())), depths[parent] + 1),
        };
        directory.insert(identity).unwrap();
        names.push(name);
        depths.push(depth);
    }
    let mut held: BTreeMap<IdentityId, Vec<Grant>> = BTreeMap::new();
    let mut candidates = Vec::new();
    let mut n = 0;
    // Parents come before children in `names`, so a grantor's grants are
    // settled before its children's are drafted.
    for (name, drafts) in names.iter().zip(&tree.drafts) {
        let identity = directory.get(name).unwrap();
        let Some(parent) = identity.parent.clone() else { continue };
        let grantor_is_human = directory.get(&parent).unwrap().kind == Kind::Human;
        for draft in drafts {
            n += 1;
            let grantor_grants = held.get(&parent).cloned().unwrap_or_default();
            let new = realize(draft, n, name, &parent, &grantor_grants);
            assert_eq!(check_grantor(&new, &directory), Ok(()));
            let refs: Vec<&Grant> = grantor_grants.iter().collect();
            let accepted = check_attenuation(&new, &refs, grantor_is_human, at(0)).is_ok();
            if !grantor_is_human {
                candidates.push((new.clone(), grantor_grants, accepted));
            }
            if accepted {
                held.entry(name.clone()).or_default().push(new);
            }
        }
    }
    Built { directory, held, candidates }
}

/// (a) Attenuation is sound: an accepted grant allows no sampled request (nor
/// any of its corners) that no grant of its grantor allows. And exact for
/// patterns and limits: a refused grant, when every grant of its grantor was
/// valid from the start, has a corner that shows it wider.
#[test]
fn attenuation_never_accepts_a_wider_grant() {
    let accepted_total = Cell::new(0usize);
    let refused_total = Cell::new(0usize);
    let mut runner = TestRunner::new(Config { cases: 512, ..Config::default() });
    runner
        .run(&tree(), |tree| {
            let built = build(&tree);
            for (new, grantor_grants, accepted) in &built.candidates {
                let grantor_allows = |request: &Request| grantor_grants.iter().any(|g| allows(g, request));
                if *accepted {
                    accepted_total.set(accepted_total.get() + 1);
                    for request in tree.requests.iter().chain(&corners(new)) {
                        prop_assert!(
                            !allows(new, request) || grantor_allows(request),
                            "accepted {new:?}\nallows {request:?}\nbeyond {grantor_grants:?}"
                        );
                    }
                } else {
                    refused_total.set(refused_total.get() + 1);
                    let window_open = new.expires_at.is_none_or(|expires_at| {
                        new.not_before.map_or(at(0), |not_before| not_before.max(at(0))) < expires_at
                    });
                    let all_started = grantor_grants.iter().all(|g| g.not_before.is_none_or(|nb| nb <= at(0)));
                    if window_open && all_started {
                        let shown = corners(new).iter().any(|request| allows(new, request) && !grantor_allows(request));
                        prop_assert!(shown, "refused {new:?}\nthough within {grantor_grants:?}");
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    // The property is not vacuous: both verdicts happen often.
    let (accepted, refused) = (accepted_total.get(), refused_total.get());
    assert!(accepted > 200 && refused > 200, "accepted {accepted}, refused {refused}");
}

/// (b) Authority narrows monotonically down a chain: a request the acting
/// identity's grants cover (live, within limits) is covered at every hop
/// above it, up to the human's child.
#[test]
fn coverage_at_the_bottom_implies_coverage_at_every_hop() {
    let deep_covered = Cell::new(0usize);
    let mut runner = TestRunner::new(Config { cases: 512, ..Config::default() });
    runner
        .run(&tree(), |tree| {
            let built = build(&tree);
            let covered_at = |grantee: &IdentityId, request: &Request| {
                built.held.get(grantee).is_some_and(|grants| grants.iter().any(|g| allows(g, request)))
            };
            for identity in built.directory.iter() {
                let chain = built.directory.chain(&identity.id).unwrap();
                // The corners of the identity's own grants are requests they
                // allow at the very edge of every pattern, limit and window.
                let own = built.held.get(&identity.id).into_iter().flatten().flat_map(corners);
                for request in tree.requests.iter().cloned().chain(own) {
                    let request = &request;
                    if chain.hops().next().is_some_and(|(acting, _)| covered_at(acting, request)) {
                        if chain.len() > 2 {
                            deep_covered.set(deep_covered.get() + 1);
                        }
                        for (grantee, grantor) in chain.hops() {
                            prop_assert!(
                                covered_at(grantee, request),
                                "{request:?} covered at {} but not at the hop {grantee} ← {grantor}",
                                identity.id
                            );
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(deep_covered.get() > 1000, "covered below the human's child {} times", deep_covered.get());
}
