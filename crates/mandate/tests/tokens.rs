//! Agent tokens and roles, driven through the real `mandate serve` (see
//! `common/mod.rs`): a token acts as its identity and nothing else, stops at
//! once when it expires, is revoked, or its identity or an ancestor is
//! revoked; it may only ask what its scopes allow, touch its identity's
//! reservations and approvals, and introspect itself; another tenant's
//! objects are not found; and its secret reaches neither the log nor the
//! server's output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::*;

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "user:alice";
const BUYER: &str = "agent:buyer";
const SUB: &str = "agent:buyer-sub";
const OTHER: &str = "agent:other";

/// `user:alice` → `agent:buyer` → `agent:buyer-sub`, and `user:alice` →
/// `agent:other`; every agent may do `payments.*` and `github.*` anywhere,
/// and alice has a total budget of 1,000,000 cents (so amounts are held).
fn family(server: &Server) {
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    server.identity(SUB, "agent", Some(BUYER));
    server.identity(OTHER, "agent", Some(ALICE));
    for (grantee, grantor) in [(BUYER, ALICE), (SUB, BUYER), (OTHER, ALICE)] {
        server.grant(json!({
            "grantee": grantee, "grantor": grantor, "actions": ["payments.*", "github.*"], "resources": ["*"],
        }));
    }
    let budget =
        json!({"id": "alice-usd", "identity": ALICE, "dimension": "usd_cents", "period": "total", "limit": 1_000_000});
    server.post("/v1/budgets", budget).expect(201);
}

/// Issues a token with the admin key; asserts 201 and returns the answer.
fn issue(server: &Server, body: Value) -> Value {
    server.post("/v1/tokens", body).expect(201)
}

/// Issues a token for `identity` for an hour; returns `(token, id)`.
fn token_for(server: &Server, identity: &str) -> (String, String) {
    let issued = issue(server, json!({"identity": identity, "ttl_s": 3_600}));
    (issued["token"].as_str().unwrap().to_owned(), issued["id"].as_str().unwrap().to_owned())
}

/// A charge without `identity`: the token's identity asks.
fn charge_as_token(cents: u64) -> Value {
    json!({"action": "payments.charge", "resource": "merchant://books", "amounts": {"usd_cents": cents}})
}

fn introspect(server: &Server, caller: &str, token: &str) -> Value {
    server.post_as(caller, "/v1/tokens/introspect", json!({ "token": token })).expect(200)
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------- issue and act

#[test]
fn a_token_is_shown_once_and_acts_as_its_identity() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let before = server.log_size();
    let issued = issue(&server, json!({"identity": SUB, "ttl_s": 600}));
    let token = issued["token"].as_str().unwrap();
    let id = issued["id"].as_str().unwrap();
    assert!(token.starts_with("mt_") && token.len() == 83, "{issued}");
    assert_eq!(&token[3..19], id, "the token starts with its id");
    assert!(is_lower_hex(id, 16), "{issued}");
    assert_eq!(issued["identity"], SUB);
    assert_eq!(issued["scopes"], Value::Null);
    assert_eq!(issued["revoked"], false);
    assert_eq!(issued["log_index"], before);
    assert_eq!(issued["created_log_index"], before);
    let issued_at: jiff::Timestamp = issued["issued_at"].as_str().unwrap().parse().unwrap();
    let expires_at: jiff::Timestamp = issued["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at.duration_since(issued_at), jiff::SignedDuration::from_secs(600), "{issued}");

    // Its entry holds the id, the identity, the expiry, the scopes and the
    // hash of the secret, never the secret.
    let entry = server.entry(before);
    assert_eq!(entry["type"], "token.created");
    let body = &entry["body"];
    assert_eq!(body["id"], id);
    assert_eq!(body["identity"], SUB);
    assert_eq!(body["expires_at"], issued["expires_at"]);
    assert_eq!(body["scopes"], Value::Null);
    let hash = body["secret_sha256"].as_str().unwrap();
    let hash = mandate_server::state::hex32(hash).unwrap();
    assert!(mandate_server::registry::secret_matches(&token[19..], &hash), "the log holds SHA-256 of the secret");
    assert_eq!(entry["time"], issued["issued_at"]);

    // Without `identity`, the token's identity asks; with its own, too.
    let answer = server.post_as(token, "/v1/authorize", charge_as_token(100)).expect(200);
    let index = assert_allowed(&answer);
    assert_eq!(answer["chain"], strings(&[SUB, BUYER, ALICE]));
    let decision = server.entry(index);
    assert_eq!(decision["body"]["request"]["identity"], SUB);
    assert_eq!(decision["body"]["request"]["token_id"], id, "the decision names the token that asked");
    let mut own = charge_as_token(200);
    own["identity"] = json!(SUB);
    assert_allowed(&server.post_as(token, "/v1/authorize", own).expect(200));
    // The search by identity finds the token's issue and its decisions.
    let found = server.search_all(&format!("identity={SUB}&type=token.created"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["body"]["id"], id);

    // A batch, also as itself.
    let batch = server
        .post_as(token, "/v1/authorize/batch", json!({"requests": [charge_as_token(1), charge_as_token(2)]}))
        .expect(200);
    for result in batch["results"].as_array().unwrap() {
        assert_allowed(result);
        assert_eq!(result["chain"][0], SUB);
    }

    // A request_id retried with another token of the same identity is the
    // same request: the first answer, nothing reserved again.
    let (second, _) = token_for(&server, SUB);
    let mut first = charge_as_token(300);
    first["request_id"] = json!("run-1");
    let answered = server.post_as(token, "/v1/authorize", first.clone()).expect(200);
    let again = server.post_as(&second, "/v1/authorize", first).expect(200);
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(again["decision_id"], answered["decision_id"]);

    // The admin key still must name the identity.
    let missing = server.post("/v1/authorize", charge_as_token(1)).problem(400, "invalid_field");
    assert_eq!(missing["field"], "identity");
}

#[test]
fn issuing_checks_every_field() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let before = server.log_size();
    let cases = [
        (json!({"identity": "agent:ghost", "ttl_s": 60}), "identity"),
        (json!({"identity": "not an id", "ttl_s": 60}), "identity"),
        (json!({"identity": SUB, "ttl_s": 0}), "ttl_s"),
        (json!({"identity": SUB, "ttl_s": 30 * 86_400 + 1}), "ttl_s"),
        (json!({"identity": SUB, "ttl_s": -1}), "ttl_s"),
        (json!({"identity": SUB}), "ttl_s"),
        (json!({"ttl_s": 60}), "identity"),
        (json!({"identity": SUB, "ttl_s": 60, "scopes": []}), "scopes"),
        (json!({"identity": SUB, "ttl_s": 60, "scopes": ["payments.charge", "pay*"]}), "scopes[1]"),
        (json!({"identity": SUB, "ttl_s": 60, "scopes": "payments.*"}), "scopes"),
        (json!({"identity": SUB, "ttl_s": 60, "role": "admin"}), "role"),
    ];
    for (body, field) in cases {
        let problem = server.post("/v1/tokens", body.clone()).problem(400, "invalid_field");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    // A revoked identity (or one under a revoked ancestor) gets no token.
    server.post(&format!("/v1/identities/{OTHER}/revoke"), json!({})).expect(200);
    let revoked = server.post("/v1/tokens", json!({"identity": OTHER, "ttl_s": 60})).problem(400, "invalid_field");
    assert_eq!(revoked["field"], "identity");
    assert_eq!(server.log_size(), before + 1, "only the revocation was logged");
    // The longest TTL and the most scopes are fine.
    let scopes: Vec<String> = (0..32).map(|i| format!("tool{i}.*")).collect();
    let issued = issue(&server, json!({"identity": SUB, "ttl_s": 30 * 86_400, "scopes": scopes}));
    assert_eq!(issued["scopes"].as_array().unwrap().len(), 32);
    let too_many: Vec<String> = (0..33).map(|i| format!("tool{i}.*")).collect();
    let problem = server
        .post("/v1/tokens", json!({"identity": SUB, "ttl_s": 60, "scopes": too_many}))
        .problem(400, "invalid_field");
    assert_eq!(problem["field"], "scopes");
}

// ---------------------------------------------------------------- impersonation and roles

#[test]
fn a_token_naming_another_identity_is_refused_and_nothing_is_logged() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (token, _) = token_for(&server, SUB);
    let before = server.log_size();
    // Its parent, its human, a sibling family, an unknown id, a malformed one.
    for identity in [BUYER, ALICE, OTHER, "agent:ghost", "not an id", ""] {
        let mut request = charge_as_token(1);
        request["identity"] = json!(identity);
        let problem = server.post_as(&token, "/v1/authorize", request).problem(403, "forbidden");
        assert_eq!(problem["field"], "identity", "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(SUB), "{problem}");
    }
    // One impersonating request refuses the whole batch.
    let mut other = charge_as_token(1);
    other["identity"] = json!(BUYER);
    let batch = json!({"requests": [charge_as_token(1), other]});
    let problem = server.post_as(&token, "/v1/authorize/batch", batch).problem(403, "forbidden");
    assert_eq!(problem["field"], "requests[1].identity");
    assert_eq!(server.log_size(), before, "nothing was decided or logged");
}

#[test]
fn a_token_may_call_only_what_an_agent_does() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (token, token_id) = token_for(&server, SUB);
    let reservation = server.authorize(charge(SUB, "merchant://books", 10));
    let reservation = reservation["reservation"]["id"].as_str().unwrap().to_owned();
    let grants = server.get(&format!("/v1/grants?grantee={SUB}")).expect(200);
    let grant = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let before = server.log_size();
    let forbidden: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/v1/identities".into(), Some(json!({"id": "agent:new", "kind": "agent", "parent": SUB}))),
        ("GET", "/v1/identities".into(), None),
        ("GET", format!("/v1/identities/{SUB}"), None),
        ("POST", format!("/v1/identities/{SUB}/revoke"), Some(json!({}))),
        (
            "POST",
            "/v1/grants".into(),
            Some(json!({"grantee": SUB, "grantor": BUYER, "actions": ["*"], "resources": ["*"]})),
        ),
        ("GET", format!("/v1/grants?grantee={SUB}"), None),
        ("GET", format!("/v1/grants/{grant}"), None),
        ("POST", format!("/v1/grants/{grant}/revoke"), Some(json!({}))),
        ("PUT", "/v1/policies".into(), Some(json!({"policies": "@id(\"p\") permit(principal, action, resource);"}))),
        ("GET", "/v1/policies".into(), None),
        ("GET", "/v1/policies/versions".into(), None),
        ("GET", "/v1/settings".into(), None),
        ("PATCH", "/v1/settings".into(), Some(json!({"record_inputs": "full"}))),
        ("POST", "/v1/admin-keys".into(), Some(json!({"role": "admin"}))),
        ("POST", "/v1/admin-keys/0000000000000000/revoke".into(), Some(json!({}))),
        (
            "POST",
            "/v1/budgets".into(),
            Some(json!({"identity": SUB, "dimension": "calls", "period": "day", "limit": 1})),
        ),
        ("GET", "/v1/budgets".into(), None),
        ("GET", "/v1/budgets/alice-usd".into(), None),
        ("PATCH", "/v1/budgets/alice-usd".into(), Some(json!({"limit": 1}))),
        ("GET", format!("/v1/reservations/{reservation}"), None),
        ("GET", "/v1/approvals".into(), None),
        ("POST", "/v1/approvals/x/approve".into(), Some(json!({}))),
        ("POST", "/v1/approvals/x/deny".into(), Some(json!({}))),
        ("POST", "/v1/tokens".into(), Some(json!({"identity": SUB, "ttl_s": 60}))),
        ("POST", "/v1/tokens/revoke".into(), Some(json!({"id": token_id}))),
        ("POST", "/v1/tokens/revoke".into(), Some(json!({"token": token}))),
        ("GET", "/v1/log/checkpoint".into(), None),
        ("GET", "/v1/log/entries?start=0&end=1".into(), None),
        ("GET", "/v1/log/proof/inclusion?index=0&size=1".into(), None),
        ("GET", "/v1/log/proof/consistency?from=1&to=2".into(), None),
        ("GET", "/v1/log/receipt?index=0".into(), None),
        ("GET", "/v1/log/public-key".into(), None),
        ("GET", "/v1/log/search?type=decision".into(), None),
    ];
    for (method, path, body) in &forbidden {
        let response = server.call(method, path, Some(&token), body.as_ref());
        response.problem(403, "forbidden");
    }
    assert_eq!(server.log_size(), before, "nothing changed");
    // The token still works for what it may do.
    assert_allowed(&server.post_as(&token, "/v1/authorize", charge_as_token(1)).expect(200));

    // An auditor may not act as an agent either.
    let auditor = server.post("/v1/admin-keys", json!({"role": "auditor"})).expect(201);
    let auditor = auditor["key"].as_str().unwrap();
    server.post_as(auditor, "/v1/authorize", charge(SUB, "merchant://books", 1)).problem(403, "forbidden");
    server.post_as(auditor, &format!("/v1/reservations/{reservation}/void"), json!({})).problem(403, "forbidden");
    server.post_as(auditor, "/v1/tokens/introspect", json!({ "token": token })).problem(403, "forbidden");
    server.post_as(auditor, "/v1/tokens", json!({"identity": SUB, "ttl_s": 60})).problem(403, "forbidden");
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn an_expired_token_is_refused() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let issued = issue(&server, json!({"identity": SUB, "ttl_s": 1}));
    let token = issued["token"].as_str().unwrap();
    let expires_at: jiff::Timestamp = issued["expires_at"].as_str().unwrap().parse().unwrap();
    // Wait until the expiry has passed by the wall clock.
    while jiff::Timestamp::now() <= expires_at {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = server.log_size();
    let refused = server.post_as(token, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    assert!(refused["detail"].as_str().unwrap().contains("expired"), "{refused}");
    server.post_as(token, "/v1/tokens/introspect", json!({ "token": token })).problem(401, "unauthorized");
    assert_eq!(introspect(&server, &server.key, token), json!({"active": false}));
    assert_eq!(server.log_size(), before);
    // An expired token can still be revoked by its id (it is remembered for a day).
    let revoked = server.post("/v1/tokens/revoke", json!({"id": issued["id"]})).expect(200);
    assert_eq!(revoked["revoked"], true);
}

#[test]
fn a_revoked_token_is_refused_at_once_and_revoking_again_changes_nothing() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (token, id) = token_for(&server, SUB);
    let (other, other_id) = token_for(&server, SUB);
    assert_allowed(&server.post_as(&token, "/v1/authorize", charge_as_token(1)).expect(200));

    // RFC 7009: by the token itself.
    let revoked = server.post("/v1/tokens/revoke", json!({ "token": token })).expect(200);
    assert_eq!(revoked["id"], id.as_str());
    assert_eq!(revoked["revoked"], true);
    let index = revoked["log_index"].as_u64().unwrap();
    assert_eq!(revoked["revoked_log_index"], index);
    let entry = server.entry(index);
    assert_eq!(entry["type"], "token.revoked");
    assert_eq!(entry["body"], json!({ "id": id }));
    let refused = server.post_as(&token, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    assert!(refused["detail"].as_str().unwrap().contains("revoked"), "{refused}");
    assert_eq!(introspect(&server, &server.key, &token), json!({"active": false}));
    // The other token of the same identity still works.
    assert_allowed(&server.post_as(&other, "/v1/authorize", charge_as_token(1)).expect(200));

    // Again, by token or by id: the same answer, naming the first entry, and no new entry.
    let size = server.log_size();
    let again = server.post("/v1/tokens/revoke", json!({ "token": token })).expect(200);
    assert_eq!(again, revoked);
    let by_id = server.post("/v1/tokens/revoke", json!({ "id": id })).expect(200);
    assert_eq!(by_id, revoked);
    assert_eq!(server.log_size(), size);

    // By id.
    let revoked = server.post("/v1/tokens/revoke", json!({ "id": other_id })).expect(200);
    assert_eq!(revoked["revoked"], true);
    server.post_as(&other, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");

    // A token that is not one of this tenant's: 200, as RFC 7009 says; an unknown id: 404.
    let wrong_secret = format!("{}{}", &token[..19], "0".repeat(64));
    for unknown in ["mt_nonsense", "mk_0000", wrong_secret.as_str(), ""] {
        let answer = server.post("/v1/tokens/revoke", json!({ "token": unknown })).expect(200);
        assert_eq!(answer, json!({"revoked": false}), "{unknown}");
    }
    server.post("/v1/tokens/revoke", json!({"id": "0123456789abcdef"})).problem(404, "not_found");
    let neither = server.post("/v1/tokens/revoke", json!({})).problem(400, "invalid_field");
    assert_eq!(neither["field"], "token");
    let both = server.post("/v1/tokens/revoke", json!({ "token": token, "id": id })).problem(400, "invalid_field");
    assert_eq!(both["field"], "id");
    assert_eq!(server.log_size(), size + 1, "only the second token's revocation was logged");
}

#[test]
fn revoking_the_identity_or_an_ancestor_stops_its_tokens_at_once() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (sub_token, _) = token_for(&server, SUB);
    let (buyer_token, _) = token_for(&server, BUYER);
    let (other_token, _) = token_for(&server, OTHER);
    assert_eq!(introspect(&server, &server.key, &sub_token)["active"], true);

    // Revoking the sub-agent's parent stops the sub-agent's token and the parent's.
    server.post(&format!("/v1/identities/{BUYER}/revoke"), json!({})).expect(200);
    let before = server.log_size();
    assert_eq!(introspect(&server, &server.key, &sub_token), json!({"active": false}));
    assert_eq!(introspect(&server, &server.key, &buyer_token), json!({"active": false}));
    let refused = server.post_as(&sub_token, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains(SUB) && detail.contains(BUYER), "names the identity and the revoked ancestor: {detail}");
    server.post_as(&buyer_token, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    assert_eq!(server.log_size(), before, "a refused token decides nothing");
    // A sibling family is untouched, until its human goes.
    assert_allowed(&server.post_as(&other_token, "/v1/authorize", charge_as_token(1)).expect(200));
    server.post(&format!("/v1/identities/{ALICE}/revoke"), json!({})).expect(200);
    server.post_as(&other_token, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    assert_eq!(introspect(&server, &server.key, &other_token), json!({"active": false}));
}

#[test]
fn tokens_and_their_revocations_survive_a_restart() {
    let (_dir, mut server) = Server::fresh();
    family(&server);
    let (live, _) = token_for(&server, SUB);
    let (dead, _) = token_for(&server, SUB);
    server.post("/v1/tokens/revoke", json!({ "token": dead })).expect(200);
    let stopped = server.stop();
    assert!(stopped.status.success());
    let server = Server::start(&server.data.clone());
    assert_allowed(&server.post_as(&live, "/v1/authorize", charge_as_token(1)).expect(200));
    server.post_as(&dead, "/v1/authorize", charge_as_token(1)).problem(401, "unauthorized");
    assert_eq!(introspect(&server, &server.key, &live)["active"], true);
}

// ---------------------------------------------------------------- introspection

#[test]
fn introspection_answers_in_the_shape_of_rfc_7662() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let issued = issue(&server, json!({"identity": SUB, "ttl_s": 900, "scopes": ["payments.*", "github.push"]}));
    let token = issued["token"].as_str().unwrap();
    let active = introspect(&server, &server.key, token);
    let expires_at: jiff::Timestamp = issued["expires_at"].as_str().unwrap().parse().unwrap();
    let issued_at: jiff::Timestamp = issued["issued_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        active,
        json!({
            "active": true,
            "sub": SUB,
            "exp": expires_at.as_second(),
            "iat": issued_at.as_second(),
            "expires_at": issued["expires_at"],
            "scope": "payments.* github.push",
            "token_type": "Bearer",
            "token_id": issued["id"],
            "chain": [SUB, BUYER, ALICE],
        })
    );
    // A token without scopes may ask about every action: `*`.
    let (plain, _) = token_for(&server, BUYER);
    let plain_view = introspect(&server, &server.key, &plain);
    assert_eq!(plain_view["scope"], "*");
    assert_eq!(plain_view["chain"], strings(&[BUYER, ALICE]));

    // A token introspects itself (RFC 7662's hint is accepted), and nothing else.
    let itself =
        server.post_as(token, "/v1/tokens/introspect", json!({"token": token, "token_type_hint": "access_token"}));
    assert_eq!(itself.expect(200), active);
    let problem = server.post_as(token, "/v1/tokens/introspect", json!({ "token": plain })).problem(403, "forbidden");
    assert_eq!(problem["field"], "token");
    server.post_as(token, "/v1/tokens/introspect", json!({"token": "mt_x"})).problem(403, "forbidden");

    // Anything that is not an active token of this tenant is just inactive.
    let wrong_secret = format!("{}{}", &token[..19], "f".repeat(64));
    for other in ["", "mt_", "mk_x", server.key.as_str(), wrong_secret.as_str(), &token[..82]] {
        assert_eq!(introspect(&server, &server.key, other), json!({"active": false}), "{other}");
    }
    // The body is checked like every other.
    let missing = server.post("/v1/tokens/introspect", json!({})).problem(400, "invalid_field");
    assert_eq!(missing["field"], "token");
    let unknown = server.post("/v1/tokens/introspect", json!({"token": token, "x": 1})).problem(400, "invalid_field");
    assert_eq!(unknown["field"], "x");
}

// ---------------------------------------------------------------- scopes

#[test]
fn scopes_limit_what_a_token_may_ask_about() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let issued = issue(&server, json!({"identity": SUB, "ttl_s": 600, "scopes": ["payments.charge", "github.*"]}));
    let token = issued["token"].as_str().unwrap();
    assert_eq!(issued["scopes"], json!(["payments.charge", "github.*"]));
    assert_eq!(server.entry(issued["log_index"].as_u64().unwrap())["body"]["scopes"], issued["scopes"]);
    assert_allowed(&server.post_as(token, "/v1/authorize", charge_as_token(1)).expect(200));
    let push = json!({"action": "github.push", "resource": "repo://acme/x"});
    assert_allowed(&server.post_as(token, "/v1/authorize", push.clone()).expect(200));

    // The identity holds `payments.*`, but the token asks only about charges.
    let before = server.log_size();
    let refund = json!({"action": "payments.refund", "resource": "merchant://books"});
    let problem = server.post_as(token, "/v1/authorize", refund.clone()).problem(403, "forbidden");
    assert_eq!(problem["field"], "action");
    assert_eq!(problem["scopes"], json!(["payments.charge", "github.*"]));
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("payments.refund") && detail.contains("payments.charge github.*"), "{detail}");
    let batch = json!({"requests": [push, refund]});
    let problem = server.post_as(token, "/v1/authorize/batch", batch).problem(403, "forbidden");
    assert_eq!(problem["field"], "requests[1].action");
    assert_eq!(server.log_size(), before, "nothing outside the scopes was decided");

    // Scopes bind tokens, not admins.
    let admin = json!({"identity": SUB, "action": "payments.refund", "resource": "merchant://books"});
    assert_allowed(&server.authorize(admin));
}

// ---------------------------------------------------------------- reservations and approvals

const APPROVAL_POLICIES: &str = r#"
@id("big-needs-a-human")
@approval("required")
permit(principal, action, resource) when { context.amounts.usd_cents >= 1000 };

@id("small-goes")
permit(principal, action, resource) when { context.amounts.usd_cents < 1000 };
"#;

#[test]
fn a_token_settles_and_voids_only_its_identitys_reservations() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (sub_token, _) = token_for(&server, SUB);
    let (buyer_token, _) = token_for(&server, BUYER);
    let reservation_of = |answer: &Value| answer["reservation"]["id"].as_str().unwrap().to_owned();

    let own = reservation_of(&server.post_as(&sub_token, "/v1/authorize", charge_as_token(500)).expect(200));
    let own_void = reservation_of(&server.post_as(&sub_token, "/v1/authorize", charge_as_token(50)).expect(200));
    let buyers = reservation_of(&server.authorize(charge(BUYER, "merchant://books", 700)));
    let others = reservation_of(&server.authorize(charge(OTHER, "merchant://books", 700)));

    // Another identity's reservation is not found, even the parent's or the child's.
    let before = server.log_size();
    for (token, reservation) in [(&sub_token, &buyers), (&sub_token, &others), (&buyer_token, &own)] {
        let settle = json!({"amounts": {"usd_cents": 1}});
        server.post_as(token, &format!("/v1/reservations/{reservation}/settle"), settle).problem(404, "not_found");
        server.post_as(token, &format!("/v1/reservations/{reservation}/void"), json!({})).problem(404, "not_found");
    }
    server.post_as(&sub_token, "/v1/reservations/nope/void", json!({})).problem(404, "not_found");
    assert_eq!(server.log_size(), before, "nothing was resolved");
    assert_eq!(server.get(&format!("/v1/reservations/{buyers}")).expect(200)["status"], "held");

    // Its own: settled and voided, repeatable, each answered with its entry.
    let settle = json!({"amounts": {"usd_cents": 400}});
    let settled = server.post_as(&sub_token, &format!("/v1/reservations/{own}/settle"), settle.clone()).expect(200);
    assert_eq!(settled["status"], "settled");
    assert_eq!(settled["identity"], SUB);
    let again = server.post_as(&sub_token, &format!("/v1/reservations/{own}/settle"), settle).expect(200);
    assert_eq!(again["log_index"], settled["log_index"]);
    let voided = server.post_as(&sub_token, &format!("/v1/reservations/{own_void}/void"), json!({})).expect(200);
    assert_eq!(voided["status"], "voided");
    // A settled reservation stays another's: still 404 for the buyer's token.
    server.post_as(&buyer_token, &format!("/v1/reservations/{own}/void"), json!({})).problem(404, "not_found");
    // The buyer's own, by its token.
    let buyer_void = server.post_as(&buyer_token, &format!("/v1/reservations/{buyers}/void"), json!({})).expect(200);
    assert_eq!(buyer_void["status"], "voided");
}

#[test]
fn a_token_waits_on_its_own_approvals_only() {
    let (_dir, server) = Server::fresh();
    family(&server);
    server.put_policies(APPROVAL_POLICIES);
    let (sub_token, _) = token_for(&server, SUB);
    let (other_token, _) = token_for(&server, OTHER);
    let (buyer_token, _) = token_for(&server, BUYER);

    let big = server.post_as(&sub_token, "/v1/authorize", charge_as_token(5_000)).expect(200);
    assert_eq!(big["decision"], "pending", "{big}");
    let approval = big["approval"]["id"].as_str().unwrap().to_owned();
    let reservation = big["reservation"]["id"].as_str().unwrap().to_owned();
    let seen = server.get_as(&sub_token, &format!("/v1/approvals/{approval}")).expect(200);
    assert_eq!(seen["status"], "pending");
    assert_eq!(seen["chain"], strings(&[SUB, BUYER, ALICE]));
    // Not another identity's, not even its parent's.
    for token in [&other_token, &buyer_token] {
        server.get_as(token, &format!("/v1/approvals/{approval}?wait_s=1")).problem(404, "not_found");
    }
    server.get_as(&sub_token, "/v1/approvals/nope").problem(404, "not_found");
    // It may not answer its own approval, nor list approvals.
    server.post_as(&sub_token, &format!("/v1/approvals/{approval}/approve"), json!({})).problem(403, "forbidden");
    server.get_as(&sub_token, "/v1/approvals").problem(403, "forbidden");

    // A long poll by the token answers when a human approves.
    let waiter = {
        let (addr, token, approval) = (server.addr.clone(), sub_token.clone(), approval.clone());
        std::thread::spawn(move || {
            http(&addr, "GET", &format!("/v1/approvals/{approval}?wait_s=30"), Some(&token), None).expect(200)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    server.post(&format!("/v1/approvals/{approval}/approve"), json!({"approver": ALICE})).expect(200);
    let answered = waiter.join().unwrap();
    assert_eq!(answered["status"], "approved", "{answered}");
    assert_eq!(answered["resolved_by"], ALICE);
    // Then the agent settles.
    let settled = server
        .post_as(
            &sub_token,
            &format!("/v1/reservations/{reservation}/settle"),
            json!({"amounts": {"usd_cents": 5_000}}),
        )
        .expect(200);
    assert_eq!(settled["status"], "settled");
}

// ---------------------------------------------------------------- tenants

#[test]
fn a_token_of_one_tenant_finds_nothing_of_another() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let (default_token, default_id) = token_for(&server, SUB);
    let held = server.post_as(&default_token, "/v1/authorize", charge_as_token(10)).expect(200);
    let reservation = held["reservation"]["id"].as_str().unwrap().to_owned();
    server.put_policies(APPROVAL_POLICIES);
    let pending = server.post_as(&default_token, "/v1/authorize", charge_as_token(5_000)).expect(200);
    let approval = pending["approval"]["id"].as_str().unwrap().to_owned();

    // Acme has an identity of the same name, and a token for it.
    let acme = server.create_tenant("acme");
    let acme_post = |path: &str, body: Value| server.post_as(&acme, path, body);
    acme_post("/v1/identities", json!({"id": ALICE, "kind": "human"})).expect(201);
    acme_post("/v1/identities", json!({"id": BUYER, "kind": "agent", "parent": ALICE})).expect(201);
    acme_post("/v1/identities", json!({"id": SUB, "kind": "agent", "parent": BUYER})).expect(201);
    let issued = acme_post("/v1/tokens", json!({"identity": SUB, "ttl_s": 600})).expect(201);
    let acme_token = issued["token"].as_str().unwrap().to_owned();
    let acme_size = checkpoint_size(&server.get_as(&acme, "/v1/log/checkpoint").expect_text(200));

    // Default's reservation and approval are not found from acme's token.
    let settle = json!({"amounts": {"usd_cents": 1}});
    server.post_as(&acme_token, &format!("/v1/reservations/{reservation}/settle"), settle).problem(404, "not_found");
    server.post_as(&acme_token, &format!("/v1/reservations/{reservation}/void"), json!({})).problem(404, "not_found");
    server.get_as(&acme_token, &format!("/v1/approvals/{approval}")).problem(404, "not_found");
    // Nor from acme's admin key.
    server.post_as(&acme, &format!("/v1/reservations/{reservation}/void"), json!({})).problem(404, "not_found");
    server.get_as(&acme, &format!("/v1/approvals/{approval}")).problem(404, "not_found");
    // Default's token is not one of acme's: inactive there, not revocable there.
    assert_eq!(introspect(&server, &acme, &default_token), json!({"active": false}));
    assert_eq!(
        acme_post("/v1/tokens/revoke", json!({ "token": default_token })).expect(200),
        json!({"revoked": false})
    );
    acme_post("/v1/tokens/revoke", json!({ "id": default_id })).problem(404, "not_found");
    // And the other way round.
    assert_eq!(introspect(&server, &server.key, &acme_token), json!({"active": false}));
    server.post("/v1/tokens/revoke", json!({ "token": acme_token })).expect(200);
    assert_eq!(introspect(&server, &acme, &acme_token)["active"], true);
    assert_eq!(checkpoint_size(&server.get_as(&acme, "/v1/log/checkpoint").expect_text(200)), acme_size);
    // Each token decides in its own tenant only.
    let acme_answer = server.post_as(&acme_token, "/v1/authorize", charge_as_token(1)).expect(200);
    assert_denied(&acme_answer, "no_grant", Some(SUB));
    assert_allowed(&server.post_as(&default_token, "/v1/authorize", charge_as_token(1)).expect(200));
    assert_eq!(server.get(&format!("/v1/reservations/{reservation}")).expect(200)["status"], "held");
}

// ---------------------------------------------------------------- secrets

#[test]
fn token_secrets_reach_neither_the_log_nor_the_servers_output() {
    let (_dir, mut server) = Server::fresh();
    family(&server);
    let mut tokens = Vec::new();
    for identity in [SUB, BUYER, OTHER] {
        let issued = issue(&server, json!({"identity": identity, "ttl_s": 600, "scopes": ["payments.*"]}));
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    // A session: decisions, introspection, refusals (bad secret, bad scope,
    // impersonation), a revocation by token.
    for token in &tokens {
        server.post_as(token, "/v1/authorize", charge_as_token(5)).expect(200);
        introspect(&server, token, token);
        introspect(&server, &server.key, token);
        let wrong = format!("{}{}", &token[..19], "0".repeat(64));
        let refused = server.post_as(&wrong, "/v1/authorize", charge_as_token(5)).problem(401, "unauthorized");
        assert!(!refused.to_string().contains(&token[19..]));
        let scope = server.post_as(token, "/v1/authorize", json!({"action": "github.push", "resource": "r"}));
        assert!(!scope.text().contains(&token[19..]));
        let mut other = charge_as_token(1);
        other["identity"] = json!(ALICE);
        let impersonation = server.post_as(token, "/v1/authorize", other);
        assert!(!impersonation.text().contains(&token[19..]));
    }
    server.post("/v1/tokens/revoke", json!({ "token": tokens[0] })).expect(200);
    server.post_as(&tokens[0], "/v1/authorize", charge_as_token(5)).problem(401, "unauthorized");

    let size = server.log_size();
    let exported = server.entries(0, size).join("\n");
    assert!(exported.contains("token.created") && exported.contains("token.revoked"));
    let stopped = server.stop();
    for token in &tokens {
        let secret = &token[19..];
        assert!(!exported.contains(secret), "a token's secret is in the log");
        assert!(!stopped.stdout.contains(secret), "a token's secret is on stdout");
        assert!(!stopped.stderr.contains(secret), "a token's secret is on stderr");
    }
}
