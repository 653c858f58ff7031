//! The in-process decision: a chain of 3, 20 Cedar policies, signed grants;
//! without budgets, and with one usd_cents budget per identity on the chain.
//!
//! ```sh
//! cargo bench -p mandate-core --bench decision
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use mandate_core::budget::{Budget, Budgets, NewReservation, Period};
use mandate_core::decision::{Authority, NoBudgets, Outcome, Request, Settings, decide};
use mandate_core::grant::Grant;
use mandate_core::identity::{Directory, Identity, IdentityId, Kind};
use mandate_core::pattern::{ActionPattern, ResourcePattern};
use mandate_core::policy::PolicySet;
use serde_json::{Map, json};

fn id(text: &str) -> IdentityId {
    IdentityId::parse(text).unwrap()
}

fn grant(grantee: &str, grantor: &str, action: &str, resource: &str, key: &SigningKey) -> Grant {
    let mut grant = Grant {
        id: format!("g-{grantee}"),
        grantee: id(grantee),
        grantor: id(grantor),
        actions: vec![ActionPattern::parse(action).unwrap()],
        resources: vec![ResourcePattern::parse(resource).unwrap()],
        limits: BTreeMap::from([("usd_cents".to_owned(), 10_000)]),
        not_before: None,
        expires_at: Some("2030-01-01T00:00:00Z".parse().unwrap()),
        signature: None,
        revoked: false,
    };
    grant.sign(key).unwrap();
    grant
}

/// Twenty policies: one broad permit, the rest forbids and permits that a
/// real tenant might hold, none of which decides this request.
fn twenty_policies() -> String {
    let mut text =
        String::from(r#"@id("permit-team") permit(principal in Mandate::Identity::"user:alice", action, resource);"#);
    for i in 0..19 {
        text.push_str(&format!(
            r#"
@id("rule-{i}") forbid(principal, action == Mandate::Action::"payments.charge", resource)
  when {{ context.amounts has usd_cents && context.amounts.usd_cents > {} && context has merchant && context.merchant == "blocked-{i}" }};"#,
            50_000 + i
        ));
    }
    text
}

fn decisions(c: &mut Criterion) {
    let (alice_key, buyer_key) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let mut directory = Directory::new();
    let mut alice = Identity::new(id("user:alice"), Kind::Human, None);
    alice.public_key = Some(alice_key.verifying_key());
    directory.insert(alice).unwrap();
    let mut buyer = Identity::new(id("agent:buyer"), Kind::Agent, Some(id("user:alice")));
    buyer.public_key = Some(buyer_key.verifying_key());
    buyer.attributes.insert("team".into(), json!("books"));
    directory.insert(buyer).unwrap();
    directory.insert(Identity::new(id("agent:sub"), Kind::Agent, Some(id("agent:buyer")))).unwrap();
    let mut authority = Authority {
        directory,
        grants: BTreeMap::new(),
        policies: PolicySet::new(&twenty_policies(), None).unwrap(),
        settings: Settings { require_signed_grants: true },
    };
    authority.add_grant(grant("agent:buyer", "user:alice", "payments.*", "merchant://*", &alice_key));
    authority.add_grant(grant("agent:sub", "agent:buyer", "payments.charge", "merchant://books/*", &buyer_key));
    assert_eq!(authority.policies.len(), 20);
    let identity = id("agent:sub");
    let amounts = BTreeMap::from([("usd_cents".to_owned(), 4_723)]);
    let mut context = Map::new();
    context.insert("merchant".into(), json!("books-r-us"));
    let request = Request {
        identity: &identity,
        action: "payments.charge",
        resource: "merchant://books/42",
        context: &context,
        amounts: &amounts,
        at: "2026-11-22T12:00:00Z".parse().unwrap(),
    };
    assert_eq!(decide(&authority, &request, &NoBudgets).outcome, Outcome::Allow);
    c.bench_function("decide/chain_3_policies_20_signed_grants", |b| {
        b.iter(|| decide(black_box(&authority), black_box(&request), &NoBudgets))
    });

    // The same request with three usd_cents budgets on the chain, one per
    // identity and each of another period, already holding and having spent
    // something, so that step 4 plans three touches.
    let budgets = three_budgets(request.at);
    let decision = decide(&authority, &request, &budgets);
    assert_eq!(decision.outcome, Outcome::Allow);
    assert_eq!(decision.budgets.len(), 3);
    c.bench_function("decide/chain_3_policies_20_signed_grants_3_budgets", |b| {
        b.iter(|| decide(black_box(&authority), black_box(&request), black_box(&budgets)))
    });
    // Step 4 alone: what the budgets add to a decision.
    let chain = decision.chain.clone();
    c.bench_function("budget/plan_chain_3_budgets_3", |b| {
        b.iter(|| black_box(&budgets).plan(black_box(&chain), black_box(&amounts), request.at))
    });
}

/// `agent:sub` per day, `agent:buyer` per month, `user:alice` per year, with
/// ten settled and ten held reservations among them.
fn three_budgets(now: jiff::Timestamp) -> Budgets {
    let mut budgets = Budgets::new();
    for (budget, identity, period, limit) in [
        ("b-sub-day", "agent:sub", Period::Day, 100_000),
        ("b-buyer-month", "agent:buyer", Period::Month, 1_000_000),
        ("b-alice-year", "user:alice", Period::Year, 10_000_000),
    ] {
        let budget = Budget::new(budget.into(), id(identity), "usd_cents".into(), period, limit, now);
        budgets.create(budget).unwrap();
    }
    let chain = [id("agent:sub"), id("agent:buyer"), id("user:alice")];
    let amounts = BTreeMap::from([("usd_cents".to_owned(), 1_000)]);
    for n in 0..20 {
        let touches = budgets.plan(&chain, &amounts, now).unwrap();
        let reservation = NewReservation {
            id: format!("r{n}"),
            decision_id: format!("d{n}"),
            identity: chain[0].clone(),
            amounts: amounts.clone(),
            expires_at: now + jiff::SignedDuration::from_secs(300),
        };
        budgets.take(&touches, Some(reservation), now).unwrap();
        if n % 2 == 0 {
            let actual = mandate_core::budget::Resolution::Settle(amounts.clone());
            budgets.resolve(&format!("r{n}"), actual, now).unwrap();
        }
    }
    budgets
}

criterion_group!(benches, decisions);
criterion_main!(benches);
