//! Hostile input against the real `mandate serve` (see `common/mod.rs`):
//! every limit of `mandate_server::limits` is answered with its RFC 9457
//! problem (naming the field for a 400) and changes nothing; a key with too
//! many requests in flight gets 429 with `Retry-After`; a request past the
//! time limit gets 503; I-JSON violations `server.rs` does not try are
//! refused; and no key, token or signing key reaches the server's output,
//! even with every diagnostic on (`MANDATE_LOG=trace`).
//!
//! On SIGTERM, long polls answer at once and a stalled request is cut off
//! after the shutdown grace. Slow clients (slowloris) are otherwise out of
//! scope: they are the HTTP layer's and the deployment's concern (see
//! docs/threat-model.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::Command;
use std::time::{Duration, Instant};

use mandate_server::limits::{
    ACTION_BYTES_MAX, ACTION_PATTERN_BYTES_MAX, APPROVAL_WAIT_MAX_S, AUTHORIZE_BATCH_MAX, BODY_BYTES_MAX,
    BUDGET_ID_BYTES_MAX, CHAIN_DEPTH_MAX, DIMENSION_BYTES_MAX, ENTRIES_RESPONSE_MAX, ENTRY_BYTES_MAX, GRANT_LIMITS_MAX,
    GRANT_PATTERNS_MAX, IDENTITIES_PAGE_MAX, IDENTITY_ID_BYTES_MAX, IN_FLIGHT_METRIC, IN_FLIGHT_PER_KEY_MAX,
    JSON_DEPTH_MAX, POLICIES_MAX, REQUEST_TIMEOUT_ENV, RESERVATION_TTL_MAX_S, RESOURCE_BYTES_MAX,
    RESOURCE_PATTERN_BYTES_MAX, RETRY_AFTER_S, SEARCH_PAGE_MAX, SHORT_TEXT_BYTES_MAX, SHUTDOWN_GRACE,
};
use serde_json::{Value, json};

mod common;
use common::{Response, Server, assert_allowed, http, path_str};

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "user:alice";
const AGENT: &str = "agent:buyer";

/// Small charges go; 1,000 cents or more wait for a human.
const APPROVAL_POLICIES: &str = r#"
@id("big-needs-a-human")
@approval("required")
permit(principal, action, resource) when { context has amounts && context.amounts has usd_cents && context.amounts.usd_cents >= 1000 };

@id("small-goes")
permit(principal, action, resource) when { !(context has amounts && context.amounts has usd_cents && context.amounts.usd_cents >= 1000) };
"#;

/// `user:alice` → `agent:buyer`, which may do anything anywhere.
fn family(server: &Server) {
    server.identity(ALICE, "human", None);
    server.identity(AGENT, "agent", Some(ALICE));
    server.grant(json!({"grantee": AGENT, "grantor": ALICE, "actions": ["*"], "resources": ["*"]}));
}

fn ask(cents: u64) -> Value {
    json!({"identity": AGENT, "action": "payments.charge", "resource": "merchant://books", "amounts": {"usd_cents": cents}})
}

/// A decision waiting for a human; returns its approval's id.
fn pending_approval(server: &Server) -> String {
    server.put_policies(APPROVAL_POLICIES);
    let answer = server.authorize(ask(5_000));
    assert_eq!(answer["decision"], "pending", "{answer}");
    answer["approval"]["id"].as_str().unwrap().to_owned()
}

/// Issues an agent token for `identity`; returns it.
fn token_for(server: &Server, identity: &str) -> String {
    let issued = server.post("/v1/tokens", json!({"identity": identity, "ttl_s": 3_600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

/// A second admin key with `role`; returns it.
fn admin_key(server: &Server, role: &str) -> String {
    let created = server.post("/v1/admin-keys", json!({ "role": role })).expect(201);
    created["key"].as_str().unwrap().to_owned()
}

/// Asserts a 400 problem with this code naming `field`.
fn refused(response: Response, code: &str, field: &str) {
    let problem = response.problem(400, code);
    assert_eq!(problem["field"], field, "{}: {problem}", response.request);
}

/// A fresh data directory with its tenant made by a first start, then the
/// server started again on it with `env`.
fn restarted_with(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let (dir, mut first) = Server::fresh();
    first.stop();
    let server = Server::start_with(&dir.path().join("data"), env);
    (dir, server)
}

/// `[[[…]]]`, `depth` deep.
fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

// ---------------------------------------------------------------- bodies

/// Every route that takes a body refuses one over `BODY_BYTES_MAX` with 413
/// before anything else, and takes one of exactly that size.
#[test]
fn every_body_over_the_limit_is_a_413_and_one_at_the_limit_is_read() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let token = token_for(&server, AGENT);
    let size = server.log_size();

    // Valid JSON, one byte over.
    let pad = "x".repeat(BODY_BYTES_MAX);
    let over = serde_json::to_vec(&json!({ "pad": pad })).unwrap();
    let over = &over[over.len() - BODY_BYTES_MAX - 1..];
    assert_eq!(over.len(), BODY_BYTES_MAX + 1);
    for (method, path) in [
        ("POST", "/v1/identities"),
        ("POST", "/v1/grants"),
        ("PUT", "/v1/policies"),
        ("PATCH", "/v1/settings"),
        ("POST", "/v1/admin-keys"),
        ("POST", "/v1/authorize"),
        ("POST", "/v1/authorize/batch"),
        ("POST", "/v1/budgets"),
        ("PATCH", "/v1/budgets/some-budget"),
        ("POST", "/v1/reservations/some-reservation/settle"),
        ("POST", "/v1/approvals/some-approval/approve"),
        ("POST", "/v1/approvals/some-approval/deny"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/tokens/introspect"),
        ("POST", "/v1/tokens/revoke"),
    ] {
        http(&server.addr, method, path, Some(&server.key), Some(over)).problem(413, "payload_too_large");
    }
    // An agent token's routes too.
    http(&server.addr, "POST", "/v1/authorize", Some(&token), Some(over)).problem(413, "payload_too_large");
    assert_eq!(server.log_size(), size, "nothing was written");

    // Exactly at the limit: read and decided (`input` is only hashed).
    let mut request = ask(1);
    request["input"] = json!("");
    let frame = serde_json::to_vec(&request).unwrap().len();
    request["input"] = json!("y".repeat(BODY_BYTES_MAX - frame));
    let body = serde_json::to_vec(&request).unwrap();
    assert_eq!(body.len(), BODY_BYTES_MAX);
    let answer = server.raw("POST", "/v1/authorize", &body).expect(200);
    assert_allowed(&answer);
    assert_eq!(server.log_size(), size + 1);
}

/// A change whose log entry would be over `ENTRY_BYTES_MAX` is refused whole,
/// though its body is under `BODY_BYTES_MAX`.
#[test]
fn a_change_whose_entry_would_be_too_large_is_a_413_and_changes_nothing() {
    let (_dir, server) = Server::fresh();
    let size = server.log_size();
    let big = json!({"id": "user:big", "kind": "human", "attributes": {"note": "z".repeat(ENTRY_BYTES_MAX)}});
    assert!(serde_json::to_vec(&big).unwrap().len() < BODY_BYTES_MAX);
    server.post("/v1/identities", big).problem(413, "payload_too_large");
    server.get("/v1/identities/user:big").problem(404, "not_found");
    assert_eq!(server.log_size(), size);
    // The same identity with a small attribute is fine.
    server.post("/v1/identities", json!({"id": "user:big", "kind": "human", "attributes": {"note": "z"}})).expect(201);
}

// ---------------------------------------------------------------- JSON

#[test]
fn json_nested_past_the_depth_limit_is_a_400_never_a_crash() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let size = server.log_size();

    // Far past the limit, as the whole body and inside fields.
    // (100,000 arrays and 40,000 objects fit in a body.)
    for (depth, object_depth) in [(JSON_DEPTH_MAX + 1, JSON_DEPTH_MAX + 1), (10_000, 10_000), (100_000, 40_000)] {
        let arrays = nested_arrays(depth);
        let objects = "{\"a\":".repeat(object_depth) + "1" + &"}".repeat(object_depth);
        assert!(objects.len() < BODY_BYTES_MAX);
        for body in [
            arrays.clone(),
            objects.clone(),
            format!(r#"{{"identity":"{AGENT}","action":"a","resource":"r","input":{arrays}}}"#),
            format!(r#"{{"identity":"{AGENT}","action":"a","resource":"r","context":{objects}}}"#),
        ] {
            server.raw("POST", "/v1/authorize", body.as_bytes()).problem(400, "invalid_json");
        }
        let batch =
            format!(r#"{{"requests":[{{"identity":"{AGENT}","action":"a","resource":"r","input":{arrays}}}]}}"#);
        server.raw("POST", "/v1/authorize/batch", batch.as_bytes()).problem(400, "invalid_json");
        let identity = format!(r#"{{"id":"user:deep","kind":"human","attributes":{{"x":{objects}}}}}"#);
        server.raw("POST", "/v1/identities", identity.as_bytes()).problem(400, "invalid_json");
        server.raw("PATCH", "/v1/settings", objects.as_bytes()).problem(400, "invalid_json");
    }
    assert_eq!(server.log_size(), size, "nothing was written");
    http(&server.addr, "GET", "/healthz", None, None).expect_text(200);

    // The body's object is one level: `input` may nest JSON_DEPTH_MAX - 1 deep.
    let at_limit = nested_arrays(JSON_DEPTH_MAX - 1);
    let body = format!(r#"{{"identity":"{AGENT}","action":"a","resource":"r","input":{at_limit}}}"#);
    assert_allowed(&server.raw("POST", "/v1/authorize", body.as_bytes()).expect(200));
    let over = nested_arrays(JSON_DEPTH_MAX);
    let body = format!(r#"{{"identity":"{AGENT}","action":"a","resource":"r","input":{over}}}"#);
    let problem = server.raw("POST", "/v1/authorize", body.as_bytes()).problem(400, "invalid_json");
    assert!(problem["detail"].as_str().unwrap().contains(&JSON_DEPTH_MAX.to_string()), "{problem}");
    assert_eq!(server.log_size(), size + 1);
}

/// I-JSON (RFC 7493) refusals beyond those of `server.rs` (a repeated
/// top-level key, `\ud800`, 2^53 + 1, bytes that are not UTF-8): keys
/// repeated through escapes or deep inside, every kind of lone surrogate,
/// numbers past ±(2^53 − 1) in every form, and bytes around the document.
#[test]
fn i_json_violations_are_refused_wherever_they_hide() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let size = server.log_size();
    let head = format!(r#""identity":"{AGENT}","action":"payments.charge","resource":"r""#);
    let authorize: Vec<String> = [
        // Duplicate keys: spelled differently, nested, in a batch element.
        r#"{HEAD,"\u0061ction":"other"}"#,
        r#"{HEAD,"context":{"k":1,"\u006b":2}}"#,
        r#"{HEAD,"context":{"list":[{"k":1,"k":1}]}}"#,
        r#"{HEAD,"amounts":{"usd_cents":1,"usd_cents":2}}"#,
        r#"{HEAD,"input":{"":1,"":1}}"#,
        // Lone surrogates: high at the end, high before a non-surrogate,
        // low alone, a reversed pair, in a key.
        r#"{HEAD,"context":{"k":"x\ud800"}}"#,
        r#"{HEAD,"context":{"k":"\ud800\u0041"}}"#,
        r#"{HEAD,"context":{"k":"\udc00"}}"#,
        r#"{HEAD,"context":{"k":"\ude00\ud83d"}}"#,
        r#"{HEAD,"context":{"\udfff":1}}"#,
        r#"{HEAD,"input":"\ud83d"}"#,
        // Numbers past the doubles' exact integers, as integers, with an
        // exponent, negative, past u64, past f64.
        r#"{HEAD,"amounts":{"usd_cents":9007199254740992}}"#,
        r#"{HEAD,"context":{"n":-9007199254740992}}"#,
        r#"{HEAD,"context":{"n":1e16}}"#,
        r#"{HEAD,"context":{"n":-1E+300}}"#,
        r#"{HEAD,"input":18446744073709551616}"#,
        r#"{HEAD,"input":[1e400]}"#,
        r#"{HEAD,"input":-1e999}"#,
        // Around the document: trailing values and bytes.
        r#"{HEAD} {}"#,
        r#"{HEAD}x"#,
        r#"{HEAD},"#,
    ]
    .iter()
    .map(|template| template.replace("HEAD", head.trim_matches(|c| c == '{' || c == '}')))
    .collect();
    for body in &authorize {
        let problem = server.raw("POST", "/v1/authorize", body.as_bytes()).problem(400, "invalid_json");
        assert!(problem.get("field").is_none(), "{body}: {problem}");
    }
    let batch = format!(r#"{{"requests":[{{{head}}},{{{head},"resource":"again"}}]}}"#);
    server.raw("POST", "/v1/authorize/batch", batch.as_bytes()).problem(400, "invalid_json");
    // Bytes that are not I-JSON text: a byte-order mark, NUL, an overlong
    // `/`, a surrogate encoded in UTF-8 (CESU-8), a raw control character.
    let bytes: [&[u8]; 5] = [
        b"\xef\xbb\xbf{\"id\":\"user:bom\",\"kind\":\"human\"}",
        b"{\"id\":\"user:nul\",\"kind\":\"human\"}\x00",
        b"{\"id\":\"user:\xc0\xaf\",\"kind\":\"human\"}",
        b"{\"id\":\"user:\xed\xa0\x80\",\"kind\":\"human\"}",
        b"{\"id\":\"user:\x01\",\"kind\":\"human\"}",
    ];
    for body in bytes {
        server.raw("POST", "/v1/identities", body).problem(400, "invalid_json");
    }
    assert_eq!(server.log_size(), size, "nothing was written");

    // The edges that are I-JSON are accepted.
    let edges = format!(
        r#"{{{head},"amounts":{{"usd_cents":0}},"context":{{"max":9007199254740991,"min":-9007199254740991,"pair":"\ud83d\ude00"}},"input":[1e-400,-0,0.5,9007199254740991.0]}}"#
    );
    assert_allowed(&server.raw("POST", "/v1/authorize", edges.as_bytes()).expect(200));
}

// ---------------------------------------------------------------- strings, counts, batches, pages

#[test]
fn strings_and_counts_over_their_limits_are_refused_naming_the_field() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let approval = pending_approval(&server);
    let size = server.log_size();
    let long = |n: usize| "a".repeat(n);
    let with = |field: &str, value: Value| {
        let mut request = ask(1);
        request[field] = value;
        request
    };

    // One decision.
    let too_long_id = format!("agent:{}", long(IDENTITY_ID_BYTES_MAX));
    for (request, field) in [
        (with("action", json!("")), "action"),
        (with("action", json!(long(ACTION_BYTES_MAX + 1))), "action"),
        (with("resource", json!(long(RESOURCE_BYTES_MAX + 1))), "resource"),
        (with("request_id", json!(long(SHORT_TEXT_BYTES_MAX + 1))), "request_id"),
        (with("session_id", json!(long(SHORT_TEXT_BYTES_MAX + 1))), "session_id"),
        (with("identity", json!(too_long_id)), "identity"),
        (with("amounts", json!({ long(DIMENSION_BYTES_MAX + 1): 1 })), "amounts"),
        (with("reservation_ttl_s", json!(RESERVATION_TTL_MAX_S + 1)), "reservation_ttl_s"),
    ] {
        refused(server.post("/v1/authorize", request), "invalid_field", field);
    }
    // A batch: its size, and its requests' fields by position.
    let batch = |n: usize| json!({ "requests": vec![ask(1); n] });
    refused(server.post("/v1/authorize/batch", batch(0)), "invalid_field", "requests");
    refused(server.post("/v1/authorize/batch", batch(AUTHORIZE_BATCH_MAX + 1)), "invalid_field", "requests");
    let mut third_too_long = batch(3);
    third_too_long["requests"][2]["action"] = json!(long(ACTION_BYTES_MAX + 1));
    refused(server.post("/v1/authorize/batch", third_too_long), "invalid_field", "requests[2].action");

    // Identities and grants.
    let identity = json!({"id": too_long_id, "kind": "agent", "parent": ALICE});
    refused(server.post("/v1/identities", identity), "invalid_field", "id");
    let identity = json!({"id": "agent:x", "kind": "agent", "parent": too_long_id});
    refused(server.post("/v1/identities", identity), "invalid_field", "parent");
    let grant = |actions: Value, resources: Value, limits: Value| json!({"grantee": AGENT, "grantor": ALICE, "actions": actions, "resources": resources, "limits": limits});
    let many: Vec<String> = (0..=GRANT_PATTERNS_MAX).map(|i| format!("tool{i}.call")).collect();
    let dimensions: serde_json::Map<String, Value> =
        (0..=GRANT_LIMITS_MAX).map(|i| (format!("d{i}"), json!(1))).collect();
    for (body, field) in [
        (grant(json!(many), json!(["*"]), json!({})), "actions"),
        (grant(json!(["*"]), json!(many), json!({})), "resources"),
        (grant(json!([long(ACTION_PATTERN_BYTES_MAX + 1)]), json!(["*"]), json!({})), "actions[0]"),
        (grant(json!(["*"]), json!([long(RESOURCE_PATTERN_BYTES_MAX + 1)]), json!({})), "resources[0]"),
        (grant(json!(["*"]), json!(["*"]), Value::Object(dimensions)), "limits"),
    ] {
        refused(server.post("/v1/grants", body), "invalid_field", field);
    }

    // Budgets, approvals.
    let budget = |id: &str, dimension: &str| json!({"id": id, "identity": AGENT, "dimension": dimension, "period": "day", "limit": 1});
    refused(server.post("/v1/budgets", budget(&long(BUDGET_ID_BYTES_MAX + 1), "usd")), "invalid_field", "id");
    refused(server.post("/v1/budgets", budget("", "usd")), "invalid_field", "id");
    refused(server.post("/v1/budgets", budget("b", &long(DIMENSION_BYTES_MAX + 1))), "invalid_field", "dimension");
    let answer = json!({ "approver": format!("user:{}", long(IDENTITY_ID_BYTES_MAX)) });
    refused(server.post(&format!("/v1/approvals/{approval}/approve"), answer), "invalid_field", "approver");

    // Policy sets over POLICIES_MAX, and chains deeper than CHAIN_DEPTH_MAX.
    let policies: String =
        (0..=POLICIES_MAX).map(|i| format!("@id(\"p{i}\") permit(principal, action, resource);\n")).collect();
    let problem = server
        .call("PUT", "/v1/policies", Some(&server.key), Some(&json!({ "policies": policies })))
        .problem(422, "invalid_policy");
    assert_eq!(problem["field"], "policies", "{problem}");
    assert_eq!(server.log_size(), size, "nothing was written");

    // At the limits, the same things are accepted.
    let written = [
        server.post("/v1/authorize", with("action", json!(long(ACTION_BYTES_MAX)))).status,
        server.post("/v1/authorize", with("request_id", json!(long(SHORT_TEXT_BYTES_MAX)))).status,
        server.post("/v1/authorize/batch", batch(AUTHORIZE_BATCH_MAX)).status,
        server.post("/v1/budgets", budget(&long(BUDGET_ID_BYTES_MAX), &long(DIMENSION_BYTES_MAX))).status,
    ];
    assert_eq!(written, [200, 200, 200, 201]);
    assert_eq!(server.log_size(), size + 1 + 1 + AUTHORIZE_BATCH_MAX as u64 + 1);
    let mut parent = AGENT.to_owned();
    let mut depth = 2; // alice → agent:buyer
    let refused_at = loop {
        let child = format!("agent:d{depth}");
        let response = server.post("/v1/identities", json!({"id": child, "kind": "agent", "parent": parent}));
        if response.status != 201 {
            response.problem(422, "invalid_identity");
            break depth;
        }
        parent = child;
        depth += 1;
        assert!(depth <= CHAIN_DEPTH_MAX + 1, "a chain deeper than {CHAIN_DEPTH_MAX} was accepted");
    };
    assert_eq!(refused_at, CHAIN_DEPTH_MAX);
}

#[test]
fn pages_ranges_and_waits_over_their_maximum_are_refused_naming_the_parameter() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let approval = pending_approval(&server);
    let size = server.log_size();
    let auditor = admin_key(&server, "auditor");
    let size = size + 1;
    for (path, field) in [
        (format!("/v1/identities?limit={}", IDENTITIES_PAGE_MAX + 1), "limit"),
        ("/v1/identities?limit=0".to_owned(), "limit"),
        ("/v1/identities?limit=99999999999999999999999".to_owned(), "limit"),
        (format!("/v1/log/search?limit={}", SEARCH_PAGE_MAX + 1), "limit"),
        ("/v1/log/search?limit=0".to_owned(), "limit"),
        (format!("/v1/log/entries?start=0&end={}", ENTRIES_RESPONSE_MAX + 1), "end"),
        (format!("/v1/log/entries?start=7&end={}", ENTRIES_RESPONSE_MAX + 8), "end"),
        (format!("/v1/approvals/{approval}?wait_s={}", APPROVAL_WAIT_MAX_S + 1), "wait_s"),
        (format!("/v1/approvals/{approval}?wait_s=-1"), "wait_s"),
    ] {
        refused(server.get(&path), "invalid_field", field);
    }
    // The auditor's routes answer the same.
    refused(
        server.get_as(&auditor, &format!("/v1/log/search?limit={}", SEARCH_PAGE_MAX + 1)),
        "invalid_field",
        "limit",
    );

    // At the maximum, answered.
    let identities = server.get(&format!("/v1/identities?limit={IDENTITIES_PAGE_MAX}")).expect(200);
    assert_eq!(identities["identities"].as_array().unwrap().len(), 2);
    server.get(&format!("/v1/log/search?limit={SEARCH_PAGE_MAX}")).expect(200);
    server.get(&format!("/v1/approvals/{approval}?wait_s=0")).expect(200);
    assert_eq!(server.log_size(), size, "nothing was written");
}

// ---------------------------------------------------------------- requests in flight

/// The authenticated requests in flight, all keys together, from `/metrics`.
fn in_flight(server: &Server) -> u64 {
    let text = http(&server.addr, "GET", "/metrics", None, None).expect_text(200);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{IN_FLIGHT_METRIC} ")))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

/// `IN_FLIGHT_PER_KEY_MAX` long polls hold one key's whole share: its next
/// request, read or change, gets 429 with `Retry-After` and changes nothing,
/// while other keys and tokens are served; once the polls end, the key is
/// served again.
#[test]
fn a_key_with_too_many_requests_in_flight_gets_429_with_retry_after() {
    let (_dir, server) = Server::fresh();
    family(&server);
    let approval = pending_approval(&server);
    let busy = admin_key(&server, "admin");
    let token = token_for(&server, AGENT);
    let wait_s = APPROVAL_WAIT_MAX_S.min(45);

    let poll = format!("/v1/approvals/{approval}?wait_s={wait_s}");
    let polls = std::thread::scope(|scope| {
        let polls: Vec<_> = (0..IN_FLIGHT_PER_KEY_MAX)
            .map(|_| scope.spawn(|| http(&server.addr, "GET", &poll, Some(&busy), None)))
            .collect();
        // Every poll is inside its handler (nothing else is in flight).
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_flight(&server) < IN_FLIGHT_PER_KEY_MAX as u64 {
            assert!(Instant::now() < deadline, "the polls did not all start: {}", in_flight(&server));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(in_flight(&server), IN_FLIGHT_PER_KEY_MAX as u64);

        let size = server.log_size();
        for response in [
            server.get_as(&busy, &format!("/v1/approvals/{approval}")),
            server.get_as(&busy, "/v1/log/checkpoint"),
            server.post_as(&busy, "/v1/authorize", ask(1)),
            server.post_as(&busy, "/v1/identities", json!({"id": "user:blocked", "kind": "human"})),
        ] {
            let problem = response.problem(429, "too_many_requests");
            assert_eq!(response.header("retry-after"), Some(RETRY_AFTER_S.to_string().as_str()), "{problem}");
        }
        assert_eq!(server.log_size(), size, "a 429 writes nothing");
        server.get("/v1/identities/user:blocked").problem(404, "not_found");
        // A wrong secret under the busy key's id is a 401, as always.
        let wrong = format!("{}{}", &busy[..19], "0".repeat(64));
        server.get_as(&wrong, "/v1/log/checkpoint").problem(401, "unauthorized");
        // Other credentials are served.
        assert_allowed(&server.post_as(&token, "/v1/authorize", json!({"action": "a", "resource": "r"})).expect(200));
        assert_allowed(&server.authorize(ask(1)));
        // The human answers: every poll returns at once.
        server.post(&format!("/v1/approvals/{approval}/approve"), json!({"approver": ALICE})).expect(200);
        polls.into_iter().map(|poll| poll.join().unwrap()).collect::<Vec<_>>()
    });
    assert_eq!(polls.len(), IN_FLIGHT_PER_KEY_MAX);
    for poll in polls {
        assert_eq!(poll.expect(200)["status"], "approved");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight(&server) > 0 {
        assert!(Instant::now() < deadline, "requests still counted: {}", in_flight(&server));
        std::thread::sleep(Duration::from_millis(20));
    }
    server.get_as(&busy, &format!("/v1/approvals/{approval}")).expect(200);
}

// ---------------------------------------------------------------- shutdown

/// On SIGTERM a long poll answers at once with the approval as it stands,
/// and a request whose body never comes is cut off after the shutdown
/// grace: the server stops long before the poll's 60 s or the request time
/// limit, and what it had committed is still there on the next start.
#[test]
fn sigterm_answers_long_polls_and_cuts_off_a_stalled_request_after_the_grace() {
    use std::io::{Read as _, Write as _};
    let (dir, mut server) = Server::fresh();
    family(&server);
    let approval = pending_approval(&server);
    let size = server.log_size();
    let poll = format!("/v1/approvals/{approval}?wait_s={APPROVAL_WAIT_MAX_S}");
    let (addr, key) = (server.addr.clone(), server.key.clone());
    let (answer, answered_after, stopped, stopped_after) = std::thread::scope(|scope| {
        let polling = scope.spawn(|| {
            let started = Instant::now();
            let answer = http(&addr, "GET", &poll, Some(&key), None);
            (answer, started.elapsed())
        });
        // A request whose head arrives but whose body never does. The server
        // answers `100 Continue` once its handler reads the body, so the
        // request is known to be in flight before the signal.
        let mut stalled = std::net::TcpStream::connect(&server.addr).unwrap();
        let head = format!(
            "POST /v1/authorize HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 1000\r\n\r\n{{",
            server.key
        );
        stalled.write_all(head.as_bytes()).unwrap();
        stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut continued = [0_u8; 25];
        stalled.read_exact(&mut continued).unwrap();
        assert!(continued.starts_with(b"HTTP/1.1 100 Continue"), "{}", String::from_utf8_lossy(&continued));
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_flight(&server) < 1 {
            assert!(Instant::now() < deadline, "the poll did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        let stopped = server.stop();
        let stopped_after = started.elapsed();
        let (answer, answered_after) = polling.join().unwrap();
        drop(stalled);
        (answer, answered_after, stopped, stopped_after)
    });
    assert_eq!(answer.expect(200)["status"], "pending");
    assert!(answered_after < Duration::from_secs(30), "the poll held on for {answered_after:?}");
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let limit = SHUTDOWN_GRACE + Duration::from_secs(20);
    assert!(stopped_after < limit, "stopping took {stopped_after:?}, not within the grace");
    assert!(stopped.stderr.contains("cut off"), "the stalled request held the shutdown: {}", stopped.stderr);
    let again = Server::start(&dir.path().join("data"));
    assert_eq!(again.log_size(), size);
}

// ---------------------------------------------------------------- request time

/// With the time limit lowered to 1 s (`MANDATE_REQUEST_TIMEOUT_S`), a long
/// poll of 10 s is cut off with 503 `unavailable`; the server goes on.
#[test]
fn a_request_past_the_time_limit_is_a_503_problem() {
    let (_dir, server) = restarted_with(&[(REQUEST_TIMEOUT_ENV, "1")]);
    family(&server);
    let approval = pending_approval(&server);
    let size = server.log_size();
    let started = Instant::now();
    let problem = server.get(&format!("/v1/approvals/{approval}?wait_s=10")).problem(503, "unavailable");
    assert!(problem["detail"].as_str().unwrap().contains("took longer than 1 s"), "{problem}");
    assert!(started.elapsed() < Duration::from_secs(10), "cut off before the poll ended");
    assert_eq!(server.get(&format!("/v1/approvals/{approval}")).expect(200)["status"], "pending");
    assert_eq!(server.log_size(), size);
    assert_allowed(&server.authorize(ask(1)));

    // A value that is not whole seconds stops the server at start.
    let (dir, mut first) = Server::fresh();
    first.stop();
    let output = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["serve", "--data", path_str(&dir.path().join("data")), "--addr", "127.0.0.1:0"])
        .env(REQUEST_TIMEOUT_ENV, "soon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(REQUEST_TIMEOUT_ENV), "{output:?}");
}

// ---------------------------------------------------------------- secrets

/// The secret part of a credential: everything after `mk_`/`mt_` and the
/// 16 hex digits of its id.
fn secret(credential: &str) -> &str {
    &credential[19..]
}

/// A session of requests with `MANDATE_LOG=trace` (every diagnostic of every
/// crate): successes and failures with two admin keys, an auditor key and
/// agent tokens, wrong and truncated secrets under their ids, credentials in
/// bodies, paths and queries, a revoked token, an oversize body. No secret
/// reaches stdout, stderr, the log or any answer (other than the answer that
/// created it, which is not checked), and neither does the tenant's log
/// signing key. (`tokens.rs` checks tokens at the default level.)
#[test]
fn no_secret_reaches_the_output_even_at_trace_level() {
    let (_dir, mut server) = restarted_with(&[("MANDATE_LOG", "trace")]);
    family(&server);
    let mut answers: Vec<Response> = Vec::new();
    let second = admin_key(&server, "admin");
    let auditor = admin_key(&server, "auditor");
    let token = token_for(&server, AGENT);
    let scoped = server
        .post("/v1/tokens", json!({"identity": AGENT, "ttl_s": 600, "scopes": ["payments.*"]}))
        .expect(201)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let credentials = [server.key.clone(), second.clone(), auditor.clone(), token.clone(), scoped.clone()];

    for credential in &credentials {
        let wrong = format!("{}{}", &credential[..19], "f".repeat(64));
        let truncated = &credential[..credential.len() - 1];
        for bearer in [credential.as_str(), wrong.as_str(), truncated] {
            answers.push(server.post_as(bearer, "/v1/authorize", ask(1)));
            answers.push(server.post_as(bearer, "/v1/authorize", json!({"action": "github.push", "resource": "r"})));
            answers.push(server.get_as(bearer, "/v1/log/checkpoint"));
            answers.push(server.get_as(bearer, "/v1/log/search?limit=5"));
            answers.push(server.post_as(bearer, "/v1/tokens/introspect", json!({ "token": token })));
            answers.push(server.get_as(bearer, &format!("/v1/identities/{AGENT}")));
            answers.push(server.raw("POST", "/v1/authorize", b"{\"identity\": ["));
        }
        // The credential where it does not belong: a body, a path, a query.
        answers.push(server.post("/v1/tokens/introspect", json!({ "token": credential })));
        answers.push(server.get(&format!("/v1/identities/{credential}")));
        answers.push(server.get(&format!("/v1/log/search?cursor={credential}")));
        // And after a stray word in the header.
        answers.push(http(&server.addr, "GET", "/v1/log/checkpoint", Some(&format!("Basic {credential}")), None));
    }
    let answer = server.authorize(ask(5));
    let reservation = answer["reservation"]["id"].as_str().map(str::to_owned);
    if let Some(reservation) = reservation {
        answers.push(server.post_as(&token, &format!("/v1/reservations/{reservation}/settle"), json!({"amounts": {}})));
    }
    answers.push(server.post("/v1/tokens/revoke", json!({ "token": scoped })));
    answers.push(server.post_as(&scoped, "/v1/authorize", ask(1)));
    answers.push(server.post("/v1/admin-keys/0000000000000000/revoke", json!({})));
    let over = vec![b' '; BODY_BYTES_MAX + 1];
    answers.push(http(&server.addr, "POST", "/v1/identities", Some(&second), Some(&over)));
    let exported = server.entries(0, server.log_size()).join("\n");

    let database = rusqlite::Connection::open(server.data.join("mandate.db")).unwrap();
    let signer: String = database.query_row("SELECT signer FROM logs", [], |row| row.get(0)).unwrap();
    drop(database);
    // `PRIVATE+KEY+<name>+<hash>+<base64 of the key>`: names hold no `+`,
    // base64 may.
    let signing_key = signer.splitn(5, '+').nth(4).unwrap().to_owned();
    assert!(signer.starts_with("PRIVATE+KEY+") && signing_key.len() >= 40, "{}", &signer[..12]);

    let stopped = server.stop();
    assert!(stopped.status.success());
    assert!(stopped.stderr.contains("TRACE"), "MANDATE_LOG=trace wrote no trace lines");
    let mut secrets: Vec<&str> = credentials.iter().map(|credential| secret(credential)).collect();
    secrets.push(&signing_key);
    for (i, needle) in secrets.iter().enumerate() {
        assert!(!stopped.stdout.contains(needle), "secret {i} is on stdout");
        assert!(!stopped.stderr.contains(needle), "secret {i} is on stderr");
        assert!(!exported.contains(needle), "secret {i} is in the log");
    }
    // No answer quotes a secret, whether the credential came as the bearer,
    // in a body, a path or a query.
    for answer in &answers {
        let text = answer.text();
        for (i, needle) in secrets.iter().enumerate() {
            assert!(!text.contains(needle), "{}: secret {i} in the answer: {text}", answer.request);
        }
    }
}
