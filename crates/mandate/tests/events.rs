//! `POST /v1/events`, driven through the real `mandate serve` (see
//! `common/mod.rs`): a tool's outcome after a decision of the last 24 h is
//! an `event.recorded` entry at the answer's `log_index`, searchable by the
//! decision's acting identity; bad fields are named and write nothing; an
//! unknown decision, or (to an agent token) another identity's, is not
//! found; an auditor may not record; and after a restart the fold knows the
//! decisions made before it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};

mod common;
use common::*;

const ALICE: &str = "user:alice";
const BUYER: &str = "agent:buyer";
const OTHER: &str = "agent:other";

/// `user:alice` → `agent:buyer`, `agent:other`, both granted `payments.*`.
fn family(server: &Server) {
    server.identity(ALICE, "human", None);
    for agent in [BUYER, OTHER] {
        server.identity(agent, "agent", Some(ALICE));
        server.grant(json!({"grantee": agent, "grantor": ALICE, "actions": ["payments.*"], "resources": ["*"]}));
    }
}

fn token_for(server: &Server, identity: &str) -> String {
    let issued = server.post("/v1/tokens", json!({"identity": identity, "ttl_s": 3_600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

fn decision_id(answer: &Value) -> String {
    answer["decision_id"].as_str().unwrap().to_owned()
}

/// Checks an event's answer against its entry in the log, and returns the entry's body.
fn check_logged(server: &Server, answer: &Value) -> Value {
    let index = answer["log_index"].as_u64().unwrap_or_else(|| panic!("no log_index: {answer}"));
    let entry = server.entry(index);
    assert_eq!(entry["type"], "event.recorded", "{entry}");
    let body = entry["body"].clone();
    for field in ["id", "decision_id", "identity", "outcome"] {
        assert_eq!(body[field], answer[field], "{field}: {entry} vs {answer}");
    }
    for field in ["duration_ms", "output_digest", "attributes"] {
        // Absent from the entry when not given; null in the answer.
        assert_eq!(body.get(field).unwrap_or(&Value::Null), &answer[field], "{field}: {entry} vs {answer}");
    }
    let id = answer["id"].as_str().unwrap();
    // A UUID v7: 8-4-4-4-12 hex digits, version 7.
    assert!(id.len() == 36 && id.as_bytes()[14] == b'7', "{id}");
    body
}

#[test]
fn events_follow_decisions_as_entries_of_their_own() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let token = token_for(&server, BUYER);

    // With the admin key, for an allowed decision: every field.
    let allowed = server.authorize(charge(BUYER, "merchant://books", 10));
    assert_allowed(&allowed);
    let decision = decision_id(&allowed);
    let full = json!({"decision_id": decision, "outcome": "success", "duration_ms": 1_234,
        "output_digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "attributes": {"tool": "stripe.charge", "retries": 0, "nested": {"ok": true}}});
    let answer = server.post("/v1/events", full.clone()).expect(201);
    assert_eq!(answer["identity"], BUYER, "{answer}");
    assert_eq!(answer["decision_id"], decision.as_str());
    assert_eq!(answer["outcome"], "success");
    assert_eq!(answer["duration_ms"], 1_234);
    assert_eq!(answer["output_digest"], full["output_digest"]);
    assert_eq!(answer["attributes"], full["attributes"]);
    let body = check_logged(&server, &answer);
    assert_eq!(body["attributes"], full["attributes"]);

    // With the agent token, for its own decision: only the required fields;
    // several events for one decision, each its own entry.
    let own =
        server.post_as(&token, "/v1/authorize", json!({"action": "payments.charge", "resource": "r"})).expect(200);
    assert_allowed(&own);
    let mut indexes = Vec::new();
    for outcome in ["failure", "error", "success"] {
        let answer = server
            .post_as(&token, "/v1/events", json!({"decision_id": decision_id(&own), "outcome": outcome}))
            .expect(201);
        assert_eq!(answer["identity"], BUYER, "{answer}");
        assert_eq!(answer["outcome"], outcome);
        for field in ["duration_ms", "output_digest", "attributes"] {
            assert_eq!(answer[field], Value::Null, "{answer}");
        }
        let body = check_logged(&server, &answer);
        assert!(body.get("attributes").is_none() && body.get("duration_ms").is_none(), "{body}");
        indexes.push(answer["log_index"].as_u64().unwrap());
    }
    assert!(indexes.windows(2).all(|pair| pair[0] < pair[1]), "{indexes:?}");

    // A denied decision takes events too (an `error` after a refusal, say).
    let denied = server.authorize(json!({"identity": BUYER, "action": "github.push", "resource": "repo"}));
    assert_eq!(denied["decision"], "deny", "{denied}");
    let answer =
        server.post("/v1/events", json!({"decision_id": decision_id(&denied), "outcome": "error"})).expect(201);
    check_logged(&server, &answer);

    // Searchable by the acting identity.
    let found = server.search_all(&format!("identity={BUYER}&type=event.recorded"));
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(found.iter().all(|entry| entry["type"] == "event.recorded" && entry["body"]["identity"] == BUYER));
    assert!(server.search_all(&format!("identity={OTHER}&type=event.recorded")).is_empty());

    // The log still verifies with the events in it.
    let size = server.log_size();
    assert!(server.entries(0, size).iter().any(|line| line.contains("\"event.recorded\"")));
}

#[test]
fn bad_fields_are_named_and_write_nothing() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let decision = decision_id(&server.authorize(charge(BUYER, "merchant://books", 10)));
    let with = |field: &str, value: Value| {
        let mut body = json!({"decision_id": decision, "outcome": "success"});
        body[field] = value;
        body
    };
    let size = server.log_size();
    let cases = [
        (json!({"outcome": "success"}), "decision_id"),
        (json!({"decision_id": decision}), "outcome"),
        (with("decision_id", json!("")), "decision_id"),
        (with("decision_id", json!("d".repeat(257))), "decision_id"),
        (with("decision_id", json!(7)), "decision_id"),
        (with("outcome", json!("ok")), "outcome"),
        (with("outcome", json!("SUCCESS")), "outcome"),
        (with("outcome", json!(null)), "outcome"),
        (with("duration_ms", json!(-1)), "duration_ms"),
        (with("duration_ms", json!(1.5)), "duration_ms"),
        (with("duration_ms", json!("12")), "duration_ms"),
        (with("output_digest", json!("")), "output_digest"),
        (with("output_digest", json!("x".repeat(129))), "output_digest"),
        (with("output_digest", json!("sha256:\n00")), "output_digest"),
        (with("output_digest", json!(12)), "output_digest"),
        (with("attributes", json!([1, 2])), "attributes"),
        (with("attributes", json!("text")), "attributes"),
        (with("attributes", json!({"big": "x".repeat(4_096)})), "attributes"),
        (with("surprise", json!(1)), "surprise"),
    ];
    for (body, field) in cases {
        let problem = server.post("/v1/events", body.clone()).problem(400, "invalid_field");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let response = server.raw("POST", "/v1/events", b"[1]");
    response.problem(400, "invalid_json");
    assert_eq!(server.log_size(), size, "a refused event wrote something");

    // The limits themselves are accepted.
    let edge = json!({"decision_id": decision, "outcome": "failure", "duration_ms": 9_007_199_254_740_991_u64,
        "output_digest": "x".repeat(128), "attributes": {"a": "x".repeat(4_096 - 8)}});
    let answer = server.post("/v1/events", edge).expect(201);
    check_logged(&server, &answer);
    assert_eq!(server.post("/v1/events", with("duration_ms", json!(0))).expect(201)["duration_ms"], 0);
}

#[test]
fn unknown_or_foreign_decisions_are_not_found_and_auditors_are_refused() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let buyer_token = token_for(&server, BUYER);
    let others = decision_id(&server.authorize(charge(OTHER, "merchant://books", 10)));
    let size = server.log_size();

    let unknown = json!({"decision_id": "0190b8a2-0000-7000-8000-000000000000", "outcome": "success"});
    let problem = server.post("/v1/events", unknown.clone()).problem(404, "not_found");
    assert!(problem["detail"].as_str().unwrap().contains("last 24 h"), "{problem}");
    let as_token = server.post_as(&buyer_token, "/v1/events", unknown).problem(404, "not_found");
    // Another identity's decision looks exactly like an unknown one.
    let foreign = json!({"decision_id": others, "outcome": "success"});
    let problem = server.post_as(&buyer_token, "/v1/events", foreign.clone()).problem(404, "not_found");
    assert_eq!(
        problem["detail"].as_str().unwrap().replace(&others, "ID"),
        as_token["detail"].as_str().unwrap().replace("0190b8a2-0000-7000-8000-000000000000", "ID")
    );
    assert!(!problem.to_string().contains(OTHER), "{problem}");

    let auditor = server.post("/v1/admin-keys", json!({"role": "auditor"})).expect(201);
    let auditor = auditor["key"].as_str().unwrap();
    let size = size + 1;
    server.post_as(auditor, "/v1/events", foreign.clone()).problem(403, "forbidden");
    server.call("POST", "/v1/events", None, Some(&foreign)).problem(401, "unauthorized");
    assert_eq!(server.log_size(), size, "a refused event wrote something");

    // The admin key may record it.
    let answer = server.post("/v1/events", foreign).expect(201);
    assert_eq!(answer["identity"], OTHER, "{answer}");
}

#[test]
fn decisions_made_before_a_restart_still_take_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    family(&server);
    let before = decision_id(&server.authorize(charge(BUYER, "merchant://books", 10)));
    let first = server.post("/v1/events", json!({"decision_id": before, "outcome": "success"})).expect(201);
    let stopped = server.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let server = Server::start(&data);
    let token = token_for(&server, BUYER);
    let answer = server
        .post_as(&token, "/v1/events", json!({"decision_id": before, "outcome": "failure", "duration_ms": 5}))
        .expect(201);
    assert_eq!(answer["identity"], BUYER, "{answer}");
    assert!(answer["log_index"].as_u64().unwrap() > first["log_index"].as_u64().unwrap());
    check_logged(&server, &answer);
    check_logged(&server, &first);
    let other_token = token_for(&server, OTHER);
    server
        .post_as(&other_token, "/v1/events", json!({"decision_id": before, "outcome": "success"}))
        .problem(404, "not_found");
}
