//! Drives the real server: each test starts the built `mandate serve` on a
//! fresh data directory and port 0, reads the admin key and the address from
//! what it prints, and talks to it over real HTTP/1.1 sockets, as any client
//! would. Nothing here reaches into the server's memory: what is checked is
//! what a client sees (answers, problems, the exported log, the files on
//! disk, the process's exit).
//!
//! The harness (the server process and an HTTP client over
//! `std::net::TcpStream`) is in `common/mod.rs`, shared with `budgets.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

mod common;
use common::*;

#[path = "../../../interop/go/harness.rs"]
mod go;

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "user:alice";
const BUYER: &str = "agent:buyer";
const SUB: &str = "agent:buyer-sub";

/// `user:alice` → `agent:buyer` (payments on any merchant, up to 10,000
/// cents a call) → `agent:buyer-sub` (charges on books, up to 5,000).
fn chain(server: &Server) {
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    server.identity(SUB, "agent", Some(BUYER));
    server.grant(json!({
        "grantee": BUYER, "grantor": ALICE, "actions": ["payments.*"], "resources": ["merchant://*"],
        "limits": {"usd_cents": 10_000},
    }));
    server.grant(json!({
        "grantee": SUB, "grantor": BUYER, "actions": ["payments.charge"], "resources": ["merchant://books/*"],
        "limits": {"usd_cents": 5_000},
    }));
}

// ---------------------------------------------------------------- 1. first start

#[test]
fn first_start_writes_an_owner_only_key_and_serves_operations() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_dir, server) = Server::fresh();
    let printed = server.printed_key.clone().expect("the first start prints the admin key");
    assert!(printed.starts_with("mk_") && printed.len() == 83, "{printed}");
    assert!(server.stdout.lock().unwrap().contains(&format!("(also in {})", server.data.join("admin.key").display())));

    let key_file = server.data.join("admin.key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), format!("{printed}\n"));
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&server.data).unwrap().permissions().mode() & 0o777, 0o700);

    let health = http(&server.addr, "GET", "/healthz", None, None);
    assert_eq!(health.expect_text(200), "ok\n");
    let ready = http(&server.addr, "GET", "/readyz", None, None).expect(200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["tenants"], 1);

    let openapi = http(&server.addr, "GET", "/openapi.json", None, None);
    assert_eq!(openapi.content_type(), "application/json");
    let openapi = openapi.expect(200);
    assert!(openapi["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{}", openapi["openapi"]);
    let paths = openapi["paths"].as_object().unwrap();
    for path in ["/v1/authorize", "/v1/authorize/batch", "/v1/identities", "/v1/grants", "/v1/log/entries"] {
        assert!(paths.contains_key(path), "{path} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert!(paths["/v1/authorize"].get("post").is_some());

    // The key works, and the log holds the tenant's first three entries.
    assert_eq!(server.log_size(), 3);
    let types: Vec<String> = server
        .entries(0, 3)
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["tenant.created", "policy.updated", "admin_key.created"]);
    assert!(!server.entries(0, 3).concat().contains(&printed[19..]), "the key's secret never enters the log");
}

// ---------------------------------------------------------------- 2. auth

#[test]
fn keys_are_checked_and_roles_enforced() {
    let (_dir, server) = Server::fresh();
    let identity = json!({"id": "user:zoe", "kind": "human"});

    // No token, a malformed header, a token that is not a key.
    let none = server.call("POST", "/v1/identities", None, Some(&identity));
    none.problem(401, "unauthorized");
    let basic = http(&server.addr, "GET", "/v1/identities", None, None);
    basic.problem(401, "unauthorized");
    server.post_as("not-a-key", "/v1/identities", identity.clone()).problem(401, "unauthorized");

    // The right key id with a wrong secret.
    let last = server.key.chars().last().unwrap();
    let wrong = format!("{}{}", &server.key[..server.key.len() - 1], if last == '0' { '1' } else { '0' });
    server.post_as(&wrong, "/v1/identities", identity.clone()).problem(401, "unauthorized");
    server.get_as(&wrong, "/v1/log/checkpoint").problem(401, "unauthorized");
    // Nothing was created by those.
    server.get("/v1/identities/user:zoe").problem(404, "not_found");

    // An auditor reads the log and changes nothing.
    let auditor = server.post("/v1/admin-keys", json!({"role": "auditor"})).expect(201);
    assert_eq!(auditor["role"], "auditor");
    let auditor_key = auditor["key"].as_str().unwrap().to_owned();
    assert!(auditor_key.starts_with("mk_"));
    server.post_as(&auditor_key, "/v1/identities", identity.clone()).problem(403, "forbidden");
    server.get_as(&auditor_key, "/v1/identities").problem(403, "forbidden");
    server.post_as(&auditor_key, "/v1/admin-keys", json!({"role": "admin"})).problem(403, "forbidden");
    server.post_as(&auditor_key, "/v1/authorize", charge("user:zoe", "merchant://x", 1)).problem(403, "forbidden");
    let note = server.get_as(&auditor_key, "/v1/log/checkpoint").expect_text(200);
    assert_eq!(checkpoint_size(&note), server.log_size());
    assert_eq!(server.entries_as(&auditor_key, 0, 3), server.entries(0, 3));
    server.get_as(&auditor_key, "/v1/log/public-key").expect_text(200);
    server.get_as(&auditor_key, "/v1/log/search?type=decision").expect(200);

    // An admin key works until it is revoked, then never again.
    let second = server.post("/v1/admin-keys", json!({"role": "admin"})).expect(201);
    let (second_id, second_key) = (second["id"].as_str().unwrap(), second["key"].as_str().unwrap());
    server.post_as(second_key, "/v1/identities", identity.clone()).expect(201);
    let revoked = server.post(&format!("/v1/admin-keys/{second_id}/revoke"), json!({})).expect(200);
    assert_eq!(revoked["revoked"], true);
    server
        .post_as(second_key, "/v1/identities", json!({"id": "user:yan", "kind": "human"}))
        .problem(401, "unauthorized");
    server.get_as(second_key, "/v1/log/checkpoint").problem(401, "unauthorized");
    // The first key still works.
    server.get("/v1/identities/user:zoe").expect(200);
}

// ---------------------------------------------------------------- 3. decisions

#[test]
fn identity_and_grant_failures_are_named_at_the_hop() {
    let (_dir, server) = Server::fresh();
    chain(&server);

    // identity_unknown names the unknown identity; the chain is empty.
    let unknown = server.authorize(charge("agent:ghost", "merchant://books/1", 1));
    assert_denied(&unknown, "identity_unknown", Some("agent:ghost"));
    assert_eq!(unknown["chain"], json!([]));

    // no_grant names the hop that lacks it: the buyer for an action nobody
    // granted, the sub-agent for one only its parent holds.
    let github = server.authorize(json!({"identity": SUB, "action": "github.push", "resource": "repo://x"}));
    assert_denied(&github, "no_grant", Some(SUB));
    assert_eq!(github["chain"], strings(&[SUB, BUYER, ALICE]));
    let refund =
        server.authorize(json!({"identity": SUB, "action": "payments.refund", "resource": "merchant://books/1"}));
    assert_denied(&refund, "no_grant", Some(SUB));
    let buyer_github = server.authorize(json!({"identity": BUYER, "action": "github.push", "resource": "repo://x"}));
    assert_denied(&buyer_github, "no_grant", Some(BUYER));
    let toys = server.authorize(charge(SUB, "merchant://toys/1", 1));
    assert_denied(&toys, "no_grant", Some(SUB));

    // limit_exceeded names the hop whose per-call limit is passed.
    let over_sub = server.authorize(charge(SUB, "merchant://books/1", 5_001));
    assert_denied(&over_sub, "limit_exceeded", Some(SUB));
    let over_buyer = server.authorize(charge(BUYER, "merchant://books/1", 10_001));
    assert_denied(&over_buyer, "limit_exceeded", Some(BUYER));
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 5_000)));
    assert_allowed(&server.authorize(charge(BUYER, "merchant://books/1", 10_000)));

    // grant_expired: a grant not yet valid, and one expired already.
    server.identity("agent:early", "agent", Some(ALICE));
    server.grant(json!({
        "grantee": "agent:early", "grantor": ALICE, "actions": ["*"], "resources": ["*"], "not_before": from_now(3_600),
    }));
    assert_denied(&server.authorize(charge("agent:early", "merchant://a", 1)), "grant_expired", Some("agent:early"));
    server.identity("agent:late", "agent", Some(ALICE));
    server.grant(json!({
        "grantee": "agent:late", "grantor": ALICE, "actions": ["*"], "resources": ["*"],
        "not_before": from_now(-7_200), "expires_at": from_now(-3_600),
    }));
    assert_denied(&server.authorize(charge("agent:late", "merchant://a", 1)), "grant_expired", Some("agent:late"));
    // Hops are checked from the acting identity up: a sub-agent holding no
    // grant under an expired one is refused for its own hop.
    server.identity("agent:late-sub", "agent", Some("agent:late"));
    let late_sub = server.authorize(charge("agent:late-sub", "merchant://a", 1));
    assert_denied(&late_sub, "no_grant", Some("agent:late-sub"));

    // identity_revoked names the revoked ancestor, for it and its descendants.
    server.identity("agent:fired", "agent", Some(ALICE));
    server.identity("agent:fired-sub", "agent", Some("agent:fired"));
    server.post("/v1/identities/agent:fired/revoke", json!({})).expect(200);
    let fired = server.authorize(charge("agent:fired", "merchant://a", 1));
    assert_denied(&fired, "identity_revoked", Some("agent:fired"));
    let fired_sub = server.authorize(charge("agent:fired-sub", "merchant://a", 1));
    assert_denied(&fired_sub, "identity_revoked", Some("agent:fired"));

    // A revoked grant is no grant.
    let grants = server.get(&format!("/v1/grants?grantee={SUB}")).expect(200);
    let grant_id = grants["grants"][0]["id"].as_str().unwrap();
    server.post(&format!("/v1/grants/{grant_id}/revoke"), json!({})).expect(200);
    assert_denied(&server.authorize(charge(SUB, "merchant://books/1", 1)), "no_grant", Some(SUB));
}

#[test]
fn unsigned_grants_count_as_absent_once_signatures_are_required() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 100)));
    let settings = server.patch_settings(json!({"require_signed_grants": true}));
    assert_eq!(settings["require_signed_grants"], true);
    assert_eq!(server.get("/v1/settings").expect(200)["require_signed_grants"], true);
    // The first unsigned hop from the acting identity up is named.
    let sub = server.authorize(charge(SUB, "merchant://books/1", 100));
    assert_denied(&sub, "grant_signature_invalid", Some(SUB));
    let buyer = server.authorize(charge(BUYER, "merchant://books/1", 100));
    assert_denied(&buyer, "grant_signature_invalid", Some(BUYER));
    // A human acts without grants.
    assert_allowed(&server.authorize(charge(ALICE, "merchant://books/1", 100)));
    // Back off, and the same grants count again.
    server.patch_settings(json!({"require_signed_grants": false}));
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 100)));
}

#[test]
fn policies_forbid_or_fail_to_permit_and_are_named() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    let put = server.put_policies(concat!(
        "@id(\"permit-all\")\npermit(principal, action, resource);\n",
        "@id(\"no-casino\")\nforbid(principal, action, resource == Mandate::Resource::\"merchant://casino\");\n",
    ));
    assert_eq!(put["version"], 2);
    assert!(put["log_index"].is_u64());

    let casino = server.authorize(charge(BUYER, "merchant://casino", 100));
    let reason = assert_denied(&casino, "policy_forbid", None);
    assert_eq!(reason["policies"], json!(["no-casino"]));
    assert_eq!(casino["policies"]["determining"], json!(["no-casino"]));
    assert_eq!(casino["policy_version"], put["policy_hash"]);

    let books = server.authorize(charge(BUYER, "merchant://books/1", 100));
    assert_allowed(&books);
    assert_eq!(books["policies"]["determining"], json!(["permit-all"]));
    assert_eq!(books["policies"]["errors"], json!([]));

    // Grants come first: the casino is refused to the sub-agent for its grant.
    assert_denied(&server.authorize(charge(SUB, "merchant://casino", 1)), "no_grant", Some(SUB));

    // A set whose only permit does not match.
    let reads = server
        .put_policies("@id(\"reads-only\")\npermit(principal, action == Mandate::Action::\"files.read\", resource);\n");
    assert_eq!(reads["version"], 3);
    let charge_answer = server.authorize(charge(BUYER, "merchant://books/1", 100));
    assert_denied(&charge_answer, "policy_no_permit", None);
    assert_eq!(charge_answer["policies"]["determining"], json!([]));
    let read = server.authorize(json!({"identity": ALICE, "action": "files.read", "resource": "file://a"}));
    assert_allowed(&read);
    assert_eq!(read["policies"]["determining"], json!(["reads-only"]));

    // Three versions are kept.
    let versions = server.get("/v1/policies/versions").expect(200);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
    assert_eq!(server.get("/v1/policies").expect(200)["version"], 3);

    // A policy without @id is refused, and the set stays as it was.
    let bad = server.call(
        "PUT",
        "/v1/policies",
        Some(&server.key),
        Some(&json!({"policies": "permit(principal, action, resource);"})),
    );
    bad.problem(422, "invalid_policy");
    assert_eq!(server.get("/v1/policies").expect(200)["version"], 3);
}

#[test]
fn a_context_cedar_cannot_hold_is_an_invalid_request() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    let answer = server.authorize(json!({
        "identity": SUB, "action": "payments.charge", "resource": "merchant://books/1", "context": {"note": null},
    }));
    let reason = assert_denied(&answer, "invalid_request", None);
    assert!(reason["message"].as_str().unwrap().contains("note"), "{reason}");
    let floats = server.authorize(json!({
        "identity": SUB, "action": "payments.charge", "resource": "merchant://books/1", "context": {"rate": 1.5},
    }));
    assert_denied(&floats, "invalid_request", None);
    // The same request with a context Cedar can hold is allowed.
    let fine = server.authorize(json!({
        "identity": SUB, "action": "payments.charge", "resource": "merchant://books/1", "context": {"note": "hi", "n": 2},
    }));
    assert_allowed(&fine);
}

#[test]
fn an_allowed_decision_is_its_log_entry() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    let request = json!({
        "identity": SUB, "action": "payments.charge", "resource": "merchant://books/42",
        "amounts": {"usd_cents": 4_723}, "context": {"merchant": "books"}, "input": {"q": "dune"},
        "request_id": "req-1", "session_id": "run-7", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    });
    let answer = server.authorize(request.clone());
    let index = assert_allowed(&answer);
    assert_eq!(answer["chain"], strings(&[SUB, BUYER, ALICE]));
    assert_eq!(answer["policies"]["determining"], json!(["default-permit"]));
    assert_eq!(answer["policies"]["errors"], json!([]));
    assert_eq!(index + 1, server.log_size(), "the decision is the newest entry");

    let entry = server.entry(index);
    assert_eq!(entry["type"], "decision");
    assert_eq!(entry["index"], index);
    assert_eq!(entry["tenant"], "default");
    let mut body = entry["body"].as_object().unwrap().clone();
    let recorded = body.remove("request").unwrap();
    let mut expected: Map<String, Value> = answer.as_object().unwrap().clone();
    expected.remove("log_index");
    assert_eq!(body, expected, "the entry's body is the answer");
    assert_eq!(recorded["identity"], SUB);
    assert_eq!(recorded["action"], "payments.charge");
    assert_eq!(recorded["resource"], "merchant://books/42");
    assert_eq!(recorded["amounts"], json!({"usd_cents": 4_723}));
    assert_eq!(recorded["context"], json!({"merchant": "books"}));
    assert_eq!(recorded["session_id"], "run-7");
    assert_eq!(recorded["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // Only the input's digest is kept by default.
    assert!(recorded.get("input").is_none(), "{recorded}");
    let digest = recorded["input_sha256"].as_str().unwrap();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");

    // Search finds it by identity and outcome.
    let found = server.get(&format!("/v1/log/search?identity={SUB}&type=decision&decision=allow")).expect(200);
    let indexes: Vec<u64> = found["entries"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [index]);
}

// ---------------------------------------------------------------- 4. signed grants

#[test]
fn a_grant_signed_offline_is_accepted_and_a_bad_signature_is_refused() {
    let (dir, server) = Server::fresh();
    let key_file = dir.path().join("alice.key");
    let generated = mandate(&["key", "generate", "--out", path_str(&key_file)]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let public_key = String::from_utf8(generated.stdout).unwrap().trim().to_owned();

    server.post("/v1/identities", json!({"id": ALICE, "kind": "human", "public_key": public_key})).expect(201);
    server.identity(BUYER, "agent", Some(ALICE));
    server.identity("agent:unsigned", "agent", Some(ALICE));
    server.patch_settings(json!({"require_signed_grants": true}));

    let grant = json!({
        "grantee": BUYER, "grantor": ALICE, "actions": ["payments.charge"], "resources": ["merchant://books/*"],
        "limits": {"usd_cents": 5_000}, "expires_at": from_now(3_600),
    });
    let grant_file = dir.path().join("grant.json");
    std::fs::write(&grant_file, serde_json::to_vec(&grant).unwrap()).unwrap();
    let signed = mandate(&["grant", "sign", "--key", path_str(&key_file), path_str(&grant_file)]);
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let signed: Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert!(signed["signature"].is_string());

    let stored = server.grant(signed.clone());
    assert_eq!(stored["signature_status"], "valid");
    assert_eq!(stored["signed"], true);
    assert_allowed(&server.authorize(charge(BUYER, "merchant://books/1", 100)));

    // An unsigned grant is stored but counts as absent.
    let unsigned = server.grant(json!({
        "grantee": "agent:unsigned", "grantor": ALICE, "actions": ["*"], "resources": ["*"],
    }));
    assert_eq!(unsigned["signature_status"], "unsigned");
    let denied = server.authorize(charge("agent:unsigned", "merchant://books/1", 100));
    assert_denied(&denied, "grant_signature_invalid", Some("agent:unsigned"));

    // A signature over something else is refused at creation, and nothing is logged.
    let size = server.log_size();
    let mut widened = signed.clone();
    widened["resources"] = json!(["merchant://*"]);
    let problem = server.post("/v1/grants", widened).problem(422, "grant_signature_invalid");
    assert_eq!(problem["field"], "signature");
    let mut forged = signed.clone();
    // Well-formed (64 bytes of standard base64), but not a signature of this grant.
    forged["signature"] = Value::from(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 64]));
    server.post("/v1/grants", forged).problem(422, "grant_signature_invalid");
    // A signed grant from a grantor with no registered key.
    server.identity("user:bob", "human", None);
    server.identity("agent:bobs", "agent", Some("user:bob"));
    let mut bobs = signed.clone();
    bobs["grantee"] = Value::from("agent:bobs");
    bobs["grantor"] = Value::from("user:bob");
    let size_before_bob = server.log_size();
    server.post("/v1/grants", bobs).problem(422, "grant_signature_invalid");
    assert_eq!(server.log_size(), size_before_bob);
    assert_eq!(size_before_bob, size + 2, "only the two identities were logged");

    // Revoked, the same signed grant cannot be posted again: a signature is
    // good for one grant.
    let id = stored["id"].as_str().unwrap();
    server.post(&format!("/v1/grants/{id}/revoke"), json!({})).expect(200);
    let size = server.log_size();
    let again = server.post("/v1/grants", signed.clone()).problem(409, "conflict");
    assert_eq!(again["field"], "signature", "{again}");
    assert_eq!(server.log_size(), size);
    assert_denied(&server.authorize(charge(BUYER, "merchant://books/1", 100)), "no_grant", Some(BUYER));
}

// ---------------------------------------------------------------- 5. attenuation

#[test]
fn a_grant_wider_than_its_grantors_is_refused_naming_the_field() {
    let (_dir, server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    server.identity(SUB, "agent", Some(BUYER));
    let expires = from_now(3_600);
    server.grant(json!({
        "grantee": BUYER, "grantor": ALICE, "actions": ["payments.charge"], "resources": ["merchant://books/*"],
        "limits": {"usd_cents": 5_000}, "expires_at": expires,
    }));
    let narrow = json!({
        "grantee": SUB, "grantor": BUYER, "actions": ["payments.charge"], "resources": ["merchant://books/scifi/*"],
        "limits": {"usd_cents": 1_000}, "expires_at": from_now(1_800),
    });
    let size = server.log_size();
    let refused = |change: &dyn Fn(&mut Value), field: &str| {
        let mut grant = narrow.clone();
        change(&mut grant);
        let problem = server.post("/v1/grants", grant.clone()).problem(422, "grant_exceeds_grantor");
        assert_eq!(problem["field"], field, "{grant}: {problem}");
        problem
    };
    let action = refused(&|g| g["actions"] = json!(["payments.*"]), "actions");
    assert!(action["detail"].as_str().unwrap().contains("payments.*"), "{action}");
    refused(&|g| g["limits"] = json!({"usd_cents": 5_001}), "limits");
    refused(&|g| g["limits"] = json!({}), "limits");
    refused(&|g| g["expires_at"] = Value::from(from_now(7_200)), "expires_at");
    refused(&|g| g["expires_at"] = Value::Null, "expires_at");
    // A wider resource is refused too, its detail naming the resource.
    let mut wider = narrow.clone();
    wider["resources"] = json!(["merchant://*"]);
    let resource = server.post("/v1/grants", wider).problem(422, "grant_exceeds_grantor");
    assert!(resource["detail"].as_str().unwrap().contains("merchant://*"), "{resource}");

    // Only the grantee's parent may grant.
    let mut skipping = narrow.clone();
    skipping["grantor"] = Value::from(ALICE);
    let problem = server.post("/v1/grants", skipping).problem(422, "grantor_not_parent");
    assert_eq!(problem["field"], "grantor");
    assert_eq!(server.log_size(), size, "no refused grant was logged");

    // The narrower one is accepted, and its limits hold at decision time.
    server.grant(narrow);
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/scifi/1", 1_000)));
    assert_denied(&server.authorize(charge(SUB, "merchant://books/scifi/1", 1_001)), "limit_exceeded", Some(SUB));
}

/// Pins what the field of a resource-widening refusal should be.
#[test]
fn a_wider_resource_is_named_as_the_resources_field() {
    let (_dir, server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    server.identity(SUB, "agent", Some(BUYER));
    server.grant(json!({"grantee": BUYER, "grantor": ALICE, "actions": ["payments.charge"], "resources": ["merchant://books/*"]}));
    let wider =
        json!({"grantee": SUB, "grantor": BUYER, "actions": ["payments.charge"], "resources": ["merchant://*"]});
    let problem = server.post("/v1/grants", wider).problem(422, "grant_exceeds_grantor");
    assert_eq!(problem["field"], "resources", "{problem}");
}

// ---------------------------------------------------------------- 6. revocation

#[test]
fn revoking_the_human_cuts_off_the_whole_chain_at_the_next_decision() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 100)));

    let revoked = server.post(&format!("/v1/identities/{ALICE}/revoke"), json!({})).expect(200);
    assert_eq!(revoked["status"], "revoked");
    let mut descendants: Vec<&str> =
        revoked["revoked_descendants"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    descendants.sort_unstable();
    assert_eq!(descendants, [BUYER, SUB]);
    let revoke_index = revoked["log_index"].as_u64().unwrap();

    let answer = server.authorize(charge(SUB, "merchant://books/1", 100));
    assert_denied(&answer, "identity_revoked", Some(ALICE));
    assert_eq!(answer["log_index"], revoke_index + 1, "the very next entry");

    let sub = server.get(&format!("/v1/identities/{SUB}")).expect(200);
    assert_eq!(sub["effective"], false, "{sub}");
    assert_eq!(sub["revoked_by"], ALICE, "{sub}");
    let alice = server.get(&format!("/v1/identities/{ALICE}")).expect(200);
    assert_eq!(alice["status"], "revoked");
    assert_eq!(alice["revoked_log_index"], revoke_index);

    // The log says so.
    let entry = server.entry(revoke_index);
    assert_eq!(entry["type"], "identity.revoked");
    assert_eq!(entry["body"]["id"], ALICE);

    // Revoking again changes nothing; an agent cannot be placed under a revoked parent.
    let again = server.post(&format!("/v1/identities/{ALICE}/revoke"), json!({})).expect(200);
    assert!(again.get("log_index").is_none(), "{again}");
    let size = server.log_size();
    server
        .post("/v1/identities", json!({"id": "agent:new", "kind": "agent", "parent": ALICE}))
        .problem(422, "invalid_identity");
    assert_eq!(server.log_size(), size);
}

// ---------------------------------------------------------------- 7. restart

#[test]
fn a_restart_keeps_everything_and_continues_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let key = server.key.clone();
    chain(&server);
    server.put_policies(concat!(
        "@id(\"permit-all\")\npermit(principal, action, resource);\n",
        "@id(\"no-casino\")\nforbid(principal, action, resource == Mandate::Resource::\"merchant://casino\");\n",
    ));
    server.patch_settings(json!({"record_inputs": "full"}));
    let allowed = server.authorize(charge(SUB, "merchant://books/1", 100));
    assert_allowed(&allowed);
    assert_denied(&server.authorize(charge(BUYER, "merchant://casino", 1)), "policy_forbid", None);
    let auditor =
        server.post("/v1/admin-keys", json!({"role": "auditor"})).expect(201)["key"].as_str().unwrap().to_owned();
    let note = server.checkpoint();
    let size = checkpoint_size(&note);
    let log = server.entries(0, size);
    let grants = server.get(&format!("/v1/grants?grantee={SUB}")).expect(200);

    let stopped = server.stop();
    assert!(stopped.status.success(), "{:?}; stderr: {}", stopped.status, stopped.stderr);
    assert!(stopped.stderr.contains("mandate: stopped"), "stdout: {}; stderr: {}", stopped.stdout, stopped.stderr);
    drop(server);

    let server = Server::start(&data);
    assert_eq!(server.printed_key, None, "no new key on a second start");
    assert!(!server.stdout.lock().unwrap().contains("Created tenant"));
    assert_eq!(server.key, key);
    // Same log, same root, and both keys still work.
    let restarted_note = server.checkpoint();
    assert_eq!(checkpoint_size(&restarted_note), size);
    assert_eq!(restarted_note.lines().take(3).collect::<Vec<_>>(), note.lines().take(3).collect::<Vec<_>>());
    assert_eq!(server.entries(0, size), log);
    server.get_as(&auditor, "/v1/log/checkpoint").expect_text(200);

    // State survives: identities, grants, policies, settings.
    let sub = server.get(&format!("/v1/identities/{SUB}")).expect(200);
    assert_eq!(sub["effective"], true);
    assert_eq!(sub["chain"], strings(&[SUB, BUYER, ALICE]));
    assert_eq!(server.get(&format!("/v1/grants?grantee={SUB}")).expect(200), grants);
    let policies = server.get("/v1/policies").expect(200);
    assert_eq!(policies["version"], 2);
    assert!(policies["policies"].as_str().unwrap().contains("no-casino"));
    assert_eq!(server.get("/v1/settings").expect(200)["record_inputs"], "full");
    // The earlier decision is in the log where it was answered.
    let decision = server.entry(allowed["log_index"].as_u64().unwrap());
    assert_eq!(decision["body"]["decision_id"], allowed["decision_id"]);

    // The next decision continues the log and decides as before.
    let next = server.authorize(charge(SUB, "merchant://books/1", 100));
    assert_eq!(assert_allowed(&next), size);
    assert_eq!(server.log_size(), size + 1);
    assert_denied(&server.authorize(charge(BUYER, "merchant://casino", 1)), "policy_forbid", None);
    let line = &server.entries(size, size + 1)[0];
    let entry: Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["prev"], Value::from(mandate_log::leaf_hash(log[size as usize - 1].as_bytes()).to_string()));
}

// ---------------------------------------------------------------- 8. tenants

#[test]
fn a_tenant_created_beside_the_running_server_is_served_and_isolated() {
    let (_dir, server) = Server::fresh();
    server.identity("user:dora", "human", None);
    server.identity("agent:dora-bot", "agent", Some("user:dora"));
    let grant = server
        .grant(json!({"grantee": "agent:dora-bot", "grantor": "user:dora", "actions": ["*"], "resources": ["*"]}));
    let decision = server.authorize(charge("agent:dora-bot", "merchant://a", 1));
    assert_allowed(&decision);

    let created = mandate(&["tenant", "create", "acme", "--data", path_str(&server.data)]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let acme = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(acme.starts_with("mk_") && acme.len() == 83, "{acme}");

    // The running server picks the tenant up by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = server.get_as(&acme, "/v1/log/checkpoint");
        if response.status == 200 {
            break;
        }
        response.problem(401, "unauthorized");
        assert!(Instant::now() < deadline, "the new tenant's key never worked");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Default's objects are not found from acme, and acme has its own namespace.
    server.get_as(&acme, "/v1/identities/user:dora").problem(404, "not_found");
    server.get_as(&acme, &format!("/v1/grants/{}", grant["id"].as_str().unwrap())).problem(404, "not_found");
    assert_eq!(server.get_as(&acme, "/v1/grants?grantee=agent:dora-bot").expect(200)["grants"], json!([]));
    assert_eq!(server.get_as(&acme, "/v1/identities").expect(200)["identities"], json!([]));
    let acme_decision = server.post_as(&acme, "/v1/authorize", charge("agent:dora-bot", "merchant://a", 1)).expect(200);
    assert_denied(&acme_decision, "identity_unknown", Some("agent:dora-bot"));
    server.post_as(&acme, "/v1/identities", json!({"id": "user:dora", "kind": "human"})).expect(201);
    // …which does not touch default's.
    assert_eq!(server.get("/v1/identities/user:dora").expect(200)["created_log_index"], 3);

    // Acme's log is its own: its entries name acme, start at 0, and hold nothing of default's.
    let note = server.get_as(&acme, "/v1/log/checkpoint").expect_text(200);
    assert!(note.starts_with("localhost/acme\n"), "{note}");
    let size = checkpoint_size(&note);
    assert_eq!(size, 5, "tenant, policy, key, the identity and the decision");
    let lines = server.entries_as(&acme, 0, size);
    for (index, line) in lines.iter().enumerate() {
        let entry: Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["tenant"], "acme", "{line}");
        assert_eq!(entry["index"], index as u64);
        assert!(!line.contains(decision["decision_id"].as_str().unwrap()));
        assert!(!line.contains(grant["id"].as_str().unwrap()));
    }
    assert!(server.get("/v1/log/checkpoint").expect_text(200).starts_with("localhost/default\n"));
    assert_ne!(
        server.get_as(&acme, "/v1/log/public-key").expect_text(200),
        server.get("/v1/log/public-key").expect_text(200)
    );
    server.get_as(&acme, &format!("/v1/log/entries?start=0&end={}", server.log_size())).problem(400, "invalid_field");

    // A second tenant of the same name is refused.
    let again = mandate(&["tenant", "create", "acme", "--data", path_str(&server.data)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(again.stdout.is_empty());
}

// ---------------------------------------------------------------- 9. bad input

#[test]
fn bad_input_is_a_problem_never_a_500_and_changes_nothing() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    let size = server.log_size();

    let bodies: [&[u8]; 9] = [
        b"{\"id\": ",
        b"not json",
        b"",
        b"[]",
        b"\"user:x\"",
        b"{\"id\":\"user:a\",\"id\":\"user:b\",\"kind\":\"human\"}",
        b"{\"id\":\"user:\\ud800\",\"kind\":\"human\"}",
        b"{\"id\":\"user:n\",\"kind\":\"human\",\"attributes\":{\"n\":9007199254740993}}",
        b"\xff\xfe",
    ];
    for body in bodies {
        server.raw("POST", "/v1/identities", body).problem(400, "invalid_json");
    }
    server
        .raw("POST", "/v1/authorize", b"{\"identity\":\"user:a\",\"identity\":\"user:b\"}")
        .problem(400, "invalid_json");
    server.get("/v1/identities/user:a").problem(404, "not_found");
    server.get("/v1/identities/user:b").problem(404, "not_found");

    // Unknown fields are named.
    let colour = server.post("/v1/identities", json!({"id": "user:c", "kind": "human", "colour": "red"}));
    assert_eq!(colour.problem(400, "invalid_field")["field"], "colour");
    let mut request = charge(SUB, "merchant://books/1", 1);
    request["colour"] = Value::from("red");
    assert_eq!(server.post("/v1/authorize", request).problem(400, "invalid_field")["field"], "colour");
    let grant_field = server.post(
        "/v1/grants",
        json!({"grantee": SUB, "grantor": BUYER, "actions": ["*"], "resources": ["*"], "scope": 1}),
    );
    assert_eq!(grant_field.problem(400, "invalid_field")["field"], "scope");
    let server_set = server.post(
        "/v1/grants",
        json!({"grantee": SUB, "grantor": BUYER, "actions": ["*"], "resources": ["*"], "id": "mine"}),
    );
    assert_eq!(server_set.problem(400, "invalid_field")["field"], "id");
    // Wrong types and values are named too.
    let missing = server.post("/v1/authorize", json!({"identity": SUB, "action": "payments.charge"}));
    assert_eq!(missing.problem(400, "invalid_field")["field"], "resource");
    let amounts = server
        .post("/v1/authorize", json!({"identity": SUB, "action": "a", "resource": "r", "amounts": {"usd_cents": -1}}));
    assert_eq!(amounts.problem(400, "invalid_field")["field"], "amounts.usd_cents");
    let reserved =
        server.post("/v1/authorize", json!({"identity": SUB, "action": "a", "resource": "r", "context": {"chain": 1}}));
    assert_eq!(reserved.problem(400, "invalid_field")["field"], "context.chain");
    let bad_id = server.post("/v1/authorize", json!({"identity": "no spaces", "action": "a", "resource": "r"}));
    assert_eq!(bad_id.problem(400, "invalid_field")["field"], "identity");
    let kind = server.post("/v1/identities", json!({"id": "user:k", "kind": "robot"}));
    assert_eq!(kind.problem(400, "invalid_field")["field"], "kind");
    let setting =
        server.call("PATCH", "/v1/settings", Some(&server.key), Some(&json!({"require_signed_grants": "yes"})));
    setting.problem(400, "invalid_field");
    server.post("/v1/admin-keys", json!({"role": "root"})).problem(400, "invalid_field");

    // Bodies over 256 KiB.
    let pad = "x".repeat(BODY_BYTES_MAX);
    let big = json!({"id": "user:big", "kind": "human", "attributes": {"pad": pad}});
    server.post("/v1/identities", big).problem(413, "payload_too_large");
    let big_decision =
        json!({"identity": SUB, "action": "payments.charge", "resource": "merchant://books/1", "input": pad});
    server.post("/v1/authorize", big_decision).problem(413, "payload_too_large");

    // Unknown routes and objects.
    http(&server.addr, "GET", "/v2/nothing", None, None).problem(404, "not_found");
    server.get("/v1/nothing").problem(404, "not_found");
    server.get("/v1/identities/agent:ghost").problem(404, "not_found");
    server.get("/v1/grants/no-such-grant").problem(404, "not_found");
    server.post("/v1/grants/no-such-grant/revoke", json!({})).problem(404, "not_found");
    server.post("/v1/identities/agent:ghost/revoke", json!({})).problem(404, "not_found");
    server.post("/v1/admin-keys/0000000000000000/revoke", json!({})).problem(404, "not_found");
    server.get("/v1/log/entries?start=0&end=100000000").problem(400, "invalid_field");
    server.get("/v1/log/entries?start=5&end=2").problem(400, "invalid_field");
    server.get("/v1/log/receipt?index=100000").problem(400, "invalid_field");

    // Odd but well-formed HTTP: never a 5xx.
    for (method, path) in [
        ("GET", "/v1/log/entries?start=x&end=y"),
        ("GET", "/v1/log/entries"),
        ("GET", "/v1/grants"),
        ("GET", "/v1/log/proof/inclusion?index=99999&size=3"),
        ("GET", "/v1/log/proof/consistency?from=9&to=3"),
        ("GET", "/v1/log/search?since=yesterday"),
        ("GET", "/v1/log/search?cursor=abc"),
        ("DELETE", "/v1/identities"),
        ("POST", "/v1/log/checkpoint"),
        ("GET", "/v1/identities/%FF%FE"),
        ("GET", "/v1/identities?limit=-1"),
    ] {
        let response = server.call(method, path, Some(&server.key), None);
        assert!((400..500).contains(&response.status), "{method} {path}: {} {}", response.status, response.text());
    }

    // Nothing above wrote an entry, and the server still answers.
    assert_eq!(server.log_size(), size);
    http(&server.addr, "GET", "/healthz", None, None).expect_text(200);
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 1)));
}

/// SPEC §4: "Errors are RFC 9457 application/problem+json with a stable code."
#[test]
fn every_error_is_a_problem() {
    let (_dir, server) = Server::fresh();
    for (method, path) in [
        ("GET", "/v1/log/entries?start=x&end=y"),
        ("GET", "/v1/log/entries"),
        ("GET", "/v1/grants"),
        ("GET", "/v1/identities?limit=-1"),
        ("DELETE", "/v1/identities"),
        ("POST", "/v1/log/checkpoint"),
        ("GET", "/v1/identities/%FF%FE"),
    ] {
        let response = server.call(method, path, Some(&server.key), None);
        assert_eq!(
            response.content_type(),
            "application/problem+json",
            "{method} {path}: {} {:?}",
            response.status,
            response.text()
        );
    }
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive.
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let (_dir, server) = Server::fresh();
    for scheme in ["bearer", "BEARER"] {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        let head = format!(
            "GET /v1/log/checkpoint HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: {scheme} {}\r\n\r\n",
            server.addr, server.key
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let response = parse_response(format!("GET /v1/log/checkpoint ({scheme})"), &raw);
        response.expect_text(200);
    }
}

// ---------------------------------------------------------------- 10. export and verify

#[test]
fn the_exported_log_and_a_receipt_verify_offline_and_tampering_is_named() {
    let (dir, server) = Server::fresh();
    chain(&server);
    let previous_note = server.checkpoint();
    let previous_size = checkpoint_size(&previous_note);
    assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", 100)));
    let denied = server.authorize(charge(SUB, "merchant://books/1", 9_999));
    assert_denied(&denied, "limit_exceeded", Some(SUB));
    assert_allowed(&server.authorize(charge(BUYER, "merchant://toys/1", 100)));
    server.post(&format!("/v1/identities/{SUB}/revoke"), json!({})).expect(200);

    let note = server.checkpoint();
    let size = checkpoint_size(&note);
    let lines = server.entries(0, size);
    assert_eq!(lines.len() as u64, size);
    let public_key = server.get("/v1/log/public-key");
    assert!(public_key.content_type().starts_with("text/plain"));
    let public_key = public_key.expect_text(200);
    assert!(public_key.starts_with("localhost/default+"), "{public_key}");

    let file = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let log = file("log.jsonl", &(lines.join("\n") + "\n"));
    let checkpoint = file("checkpoint", &note);
    let key = file("log.pub", &public_key);
    let verified = mandate(&["verify", "--log", &log, "--checkpoint", &checkpoint, "--key", &key]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let summary = String::from_utf8_lossy(&verified.stdout);
    assert!(summary.starts_with(&format!("ok: {size} entries of tenant `default`")), "{summary}");
    // Go's sumdb/tlog and sumdb/note, an independent implementation, agree:
    // the entries hash to the root the checkpoint signs.
    let go = go::run(&["log", public_key.trim(), &checkpoint, &log]);
    assert!(go.status.success(), "Go refused the export: {}", String::from_utf8_lossy(&go.stderr));
    assert!(String::from_utf8_lossy(&go.stdout).starts_with(&format!("{size} ")));
    // The log extends the checkpoint published before the decisions.
    let previous = file("previous", &previous_note);
    let extends = mandate(&[
        "verify",
        "--log",
        &log,
        "--checkpoint",
        &checkpoint,
        "--previous-checkpoint",
        &previous,
        "--key",
        &key,
    ]);
    assert!(extends.status.success(), "{}", String::from_utf8_lossy(&extends.stderr));
    assert!(
        String::from_utf8_lossy(&extends.stdout)
            .contains(&format!("extends the previous checkpoint of size {previous_size}"))
    );

    // One byte of the denied decision, altered.
    let target = denied["log_index"].as_u64().unwrap() as usize;
    let mut tampered = lines.clone();
    assert!(tampered[target].contains("\"deny\""));
    tampered[target] = tampered[target].replacen("\"deny\"", "\"denx\"", 1);
    let tampered_log = file("tampered.jsonl", &(tampered.join("\n") + "\n"));
    let go = go::run(&["log", public_key.trim(), &checkpoint, &tampered_log]);
    assert!(!go.status.success(), "Go accepted a tampered log");
    assert!(String::from_utf8_lossy(&go.stderr).contains("is not the checkpoint's root"));
    let failed = mandate(&["verify", "--log", &tampered_log, "--checkpoint", &checkpoint, "--key", &key]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("index {target}:")), "{stderr}");
    // A truncated log fails against the checkpoint too.
    let truncated = file("truncated.jsonl", &(lines[..lines.len() - 1].join("\n") + "\n"));
    let short = mandate(&["verify", "--log", &truncated, "--checkpoint", &checkpoint, "--key", &key]);
    assert_eq!(short.status.code(), Some(1));

    // A receipt for the denied decision, checked by the CLI and by the library.
    let receipt = server.get(&format!("/v1/log/receipt?index={target}")).expect_text(200);
    assert!(receipt.starts_with("c2sp.org/tlog-proof@v1\n"), "{receipt}");
    let receipt_file = file("receipt", &receipt);
    let entry_file = file("entry", &format!("{}\n", lines[target]));
    let checked = mandate(&["verify", "--receipt", &receipt_file, "--entry", &entry_file, "--key", &key]);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains(&format!("entry {target} is in the log")));
    let changed_file = file("changed", &tampered[target]);
    let changed = mandate(&["verify", "--receipt", &receipt_file, "--entry", &changed_file, "--key", &key]);
    assert_eq!(changed.status.code(), Some(1));

    let parsed = mandate_log::Receipt::parse(receipt.as_bytes()).unwrap();
    assert_eq!(parsed.index, target as u64);
    let verifier = mandate_log::VerifierKey::parse(public_key.trim()).unwrap();
    let signed = parsed.verify(lines[target].as_bytes(), std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(signed.checkpoint.size, size);
    assert!(parsed.verify(tampered[target].as_bytes(), std::slice::from_ref(&verifier)).is_err());
    assert!(parsed.verify(lines[target - 1].as_bytes(), std::slice::from_ref(&verifier)).is_err());

    // The proofs the API serves hold against the signed roots.
    let open = |note: &str| {
        mandate_log::SignedCheckpoint::open(note.as_bytes(), std::slice::from_ref(&verifier)).unwrap().checkpoint
    };
    let (old_head, head) = (open(&previous_note), open(&note));
    let hashes = |proof: &Value| -> Vec<mandate_log::Hash> {
        proof["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| mandate_log::Hash::from_base64(h.as_str().unwrap()).unwrap())
            .collect()
    };
    let inclusion = server.get(&format!("/v1/log/proof/inclusion?index={target}&size={size}")).expect(200);
    let leaf = mandate_log::leaf_hash(lines[target].as_bytes());
    let path = hashes(&inclusion);
    assert!(mandate_log::tree::verify_inclusion(target as u64, size, &leaf, &path, &head.root));
    let other_leaf = mandate_log::leaf_hash(tampered[target].as_bytes());
    assert!(!mandate_log::tree::verify_inclusion(target as u64, size, &other_leaf, &path, &head.root));
    let consistency = server.get(&format!("/v1/log/proof/consistency?from={previous_size}&to={size}")).expect(200);
    let proof = hashes(&consistency);
    assert!(mandate_log::tree::verify_consistency(previous_size, size, &old_head.root, &head.root, &proof));
}

// ---------------------------------------------------------------- 11. metrics

/// `name{labels}` → value, from the Prometheus text format.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(name, value)| (name.to_owned(), value.parse().unwrap())))
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(key, _)| key == name).map(|(_, value)| *value)
}

#[test]
fn metrics_count_decisions_by_outcome_and_time_them() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    for cents in [1, 2, 3] {
        assert_allowed(&server.authorize(charge(SUB, "merchant://books/1", cents)));
    }
    assert_denied(&server.authorize(charge(SUB, "merchant://books/1", 9_999)), "limit_exceeded", Some(SUB));
    let size = server.log_size();

    let response = http(&server.addr, "GET", "/metrics", None, None);
    assert!(response.content_type().starts_with("text/plain"), "{}", response.content_type());
    let text = response.expect_text(200);
    let samples = samples(&text);
    assert_eq!(sample(&samples, "mandate_decisions_total{outcome=\"allow\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&samples, "mandate_decisions_total{outcome=\"deny\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&samples, "mandate_decision_seconds_count"), Some(4.0), "{text}");
    assert!(sample(&samples, "mandate_decision_seconds_sum").is_some_and(|sum| sum > 0.0), "{text}");
    assert_eq!(sample(&samples, "mandate_decision_seconds_bucket{le=\"+Inf\"}"), Some(4.0), "{text}");
    assert!(
        samples.iter().filter(|(name, _)| name.starts_with("mandate_decision_seconds_bucket{")).count() > 5,
        "{text}"
    );
    assert_eq!(sample(&samples, "mandate_log_entries{tenant=\"default\"}"), Some(size as f64), "{text}");

    // A batch counts each of its decisions.
    let batch = json!({"requests": [charge(SUB, "merchant://books/1", 1), charge("agent:ghost", "merchant://x", 1)]});
    server.post("/v1/authorize/batch", batch).expect(200);
    let samples = self::samples(&http(&server.addr, "GET", "/metrics", None, None).expect_text(200));
    assert_eq!(sample(&samples, "mandate_decisions_total{outcome=\"allow\"}"), Some(4.0));
    assert_eq!(sample(&samples, "mandate_decisions_total{outcome=\"deny\"}"), Some(2.0));
    assert_eq!(sample(&samples, "mandate_log_entries{tenant=\"default\"}"), Some(size as f64 + 2.0));
}

// ---------------------------------------------------------------- 12. batch

#[test]
fn a_batch_decides_in_order_each_with_its_own_entry() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    let start = server.log_size();
    let requests = json!([
        charge(SUB, "merchant://books/1", 100),
        charge(SUB, "merchant://books/1", 5_001),
        charge(BUYER, "merchant://toys/1", 100),
        charge("agent:ghost", "merchant://books/1", 1),
        {"identity": SUB, "action": "payments.refund", "resource": "merchant://books/1"},
        charge(ALICE, "merchant://anything", 1_000_000),
    ]);
    let answer = server.post("/v1/authorize/batch", json!({"requests": requests})).expect(200);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_allowed(&results[0]);
    assert_denied(&results[1], "limit_exceeded", Some(SUB));
    assert_allowed(&results[2]);
    assert_denied(&results[3], "identity_unknown", Some("agent:ghost"));
    assert_denied(&results[4], "no_grant", Some(SUB));
    assert_allowed(&results[5]);
    let indexes: Vec<u64> = results.iter().map(|result| result["log_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (start..start + 6).collect::<Vec<_>>());
    let ids: std::collections::HashSet<&str> = results.iter().map(|r| r["decision_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "each decision has its own id");

    // Each entry is its answer.
    for (result, line) in results.iter().zip(server.entries(start, start + 6)) {
        let entry: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["type"], "decision");
        assert_eq!(entry["body"]["decision_id"], result["decision_id"]);
        assert_eq!(entry["body"]["decision"], result["decision"]);
        assert_eq!(entry["body"]["reasons"], result["reasons"]);
    }

    // A malformed request refuses the whole batch, naming it, and logs nothing.
    let bad = json!({"requests": [charge(SUB, "merchant://books/1", 1), {"identity": "bad id", "action": "a", "resource": "r"}]});
    let problem = server.post("/v1/authorize/batch", bad).problem(400, "invalid_field");
    assert_eq!(problem["field"], "requests[1].identity");
    server.post("/v1/authorize/batch", json!({"requests": []})).problem(400, "invalid_field");
    let too_many: Vec<Value> = (0..31).map(|_| charge(SUB, "merchant://books/1", 1)).collect();
    server.post("/v1/authorize/batch", json!({"requests": too_many})).problem(400, "invalid_field");
    assert_eq!(server.log_size(), start + 6);
}

/// `GET /v1/log/entries` reads the store a page at a time (1,000 entries)
/// and streams each as it comes: a range across pages arrives whole, in
/// order, with no entry twice.
#[test]
fn a_range_across_the_stores_pages_streams_whole_and_in_order() {
    let (_dir, server) = Server::fresh();
    chain(&server);
    while server.log_size() < 2_100 {
        let requests: Vec<Value> = (0..30).map(|n| charge(ALICE, &format!("merchant://books/{n}"), 1)).collect();
        server.post("/v1/authorize/batch", json!({"requests": requests})).expect(200);
    }
    let size = server.log_size();
    for (start, end) in [(0, size), (999, 2_001), (1_000, 1_001)] {
        let lines = server.entries(start, end);
        assert_eq!(lines.len() as u64, end - start, "[{start}, {end})");
        for (index, line) in (start..).zip(&lines) {
            let entry: Value = serde_json::from_str(line).unwrap();
            assert_eq!(entry["index"], index, "[{start}, {end})");
        }
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let (_dir, server) = Server::fresh();
    let before = server.log_size();
    let second = mandate(&["serve", "--data", path_str(&server.data), "--addr", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another `mandate serve` is using"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // The first one serves on, its log untouched.
    assert_eq!(server.log_size(), before);
    server.get("/healthz").expect_text(200);
}

#[test]
fn a_log_edited_in_the_database_is_not_served() {
    let (_dir, mut server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    let index = server.log_size() - 1;
    let text = server.get(&format!("/v1/log/entries?start={index}&end={}", index + 1)).expect_text(200);
    let text = text.trim_end();
    let stopped = server.stop();
    assert!(stopped.status.success());
    // The operator rewrites the last entry: `agent:buyer` becomes a human.
    // Its `prev` still holds, so only the leaf hash the tree keeps shows it.
    // The row was packed; the store reads a plain row as well, so the
    // operator writes the edited entry back plain.
    let database = rusqlite::Connection::open(server.data.join("mandate.db")).unwrap();
    let kept: Vec<u8> =
        database.query_row("SELECT bytes FROM entries ORDER BY key DESC LIMIT 1", [], |row| row.get(0)).unwrap();
    assert_eq!(kept[0], 2, "the entry is kept packed, with dictionary 2");
    assert!(text.contains(r#""kind":"agent""#), "{text}");
    let edited = text.replace(r#""kind":"agent""#, r#""kind":"human""#).replace(r#","parent":"user:alice""#, "");
    database
        .execute("UPDATE entries SET bytes = ?1 WHERE key = (SELECT max(key) FROM entries)", [edited.as_bytes()])
        .unwrap();
    drop(database);

    let output = mandate(&["serve", "--data", path_str(&server.data), "--addr", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a tampered log was served: {stderr}");
    assert!(stderr.contains(&format!("entry {index}")) && stderr.contains("altered"), "{stderr}");
}

/// A packed row changed in place (one byte of its compressed body) is not
/// served either: it unpacks into other bytes or into none, and the refusal
/// names the entry.
#[test]
fn a_packed_entry_damaged_in_the_database_is_not_served() {
    let (_dir, mut server) = Server::fresh();
    server.identity(ALICE, "human", None);
    server.identity(BUYER, "agent", Some(ALICE));
    let index = server.log_size() - 1;
    assert!(server.stop().status.success());
    let database = rusqlite::Connection::open(server.data.join("mandate.db")).unwrap();
    let mut kept: Vec<u8> =
        database.query_row("SELECT bytes FROM entries ORDER BY key DESC LIMIT 1", [], |row| row.get(0)).unwrap();
    let last = kept.len() - 3;
    kept[last] ^= 0x20;
    database.execute("UPDATE entries SET bytes = ?1 WHERE key = (SELECT max(key) FROM entries)", [&kept]).unwrap();
    drop(database);

    let output = mandate(&["serve", "--data", path_str(&server.data), "--addr", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a damaged log was served: {stderr}");
    // Said once, on one line.
    assert_eq!(stderr.matches(&format!("entry {index}")).count(), 1, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
