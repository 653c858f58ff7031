//! What the `api_*` targets share: agent tokens to decode as, the checks
//! every refusal must pass, and the seed requests `examples/make_seeds.rs`
//! writes.

use mandate_core::identity::IdentityId;
use mandate_core::pattern::ActionPattern;
use mandate_server::problem::{Code, Problem};
use mandate_server::state::AgentToken;
use serde_json::Value;

/// The identity the fixture agent tokens act as.
pub const AGENT: &str = "agent:buyer";

/// An agent token for [`AGENT`], with these scopes (`None`: every action).
pub fn agent_token(scopes: Option<&[&str]>) -> AgentToken {
    let parse = |text: &str| match ActionPattern::parse(text) {
        Ok(pattern) => pattern,
        Err(error) => unreachable!("the fixture scopes parse: {error}"),
    };
    let identity = match IdentityId::parse(AGENT) {
        Ok(identity) => identity,
        Err(error) => unreachable!("the fixture identity parses: {error}"),
    };
    AgentToken {
        identity,
        issued_at: jiff::Timestamp::UNIX_EPOCH,
        expires_at: jiff::Timestamp::MAX,
        scopes: scopes.map(|scopes| scopes.iter().copied().map(parse).collect()),
        secret_sha256: [0; 32],
        log_index: 0,
        revoked_log_index: None,
    }
}

/// A refusal of `input` must be one of `allowed`, a 4xx, a whole RFC 9457
/// body, and name its field when it is `invalid_field`. The name is empty
/// only when `input` is a JSON document with an empty key (`{"": 1}`), which
/// the problem then names exactly.
pub fn check_problem(what: &str, problem: &Problem, allowed: &[Code], input: &[u8]) {
    assert!(allowed.contains(&problem.code()), "{what}: unexpected {problem:?}");
    let status = problem.status().as_u16();
    assert!((400..500).contains(&status), "{what}: status {status}: {problem:?}");
    let body = problem.to_json();
    for member in ["type", "title", "status", "code", "detail"] {
        assert!(body.contains_key(member), "{what}: no `{member}`: {problem:?}");
    }
    assert!(!problem.detail().is_empty(), "{what}: no detail: {problem:?}");
    let field = body.get("field").and_then(Value::as_str);
    if problem.code() == Code::InvalidField {
        assert!(field.is_some(), "{what}: an invalid field not named: {problem:?}");
    }
    if field == Some("") {
        let empty_key = mandate_log::json::parse_strict(input).is_ok_and(|value| has_empty_key(&value));
        assert!(empty_key, "{what}: a field named by an empty name: {problem:?}");
    }
}

/// Whether a value holds an object with the empty key.
pub fn has_empty_key(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(has_empty_key),
        Value::Object(object) => object.contains_key("") || object.values().any(has_empty_key),
        _ => false,
    }
}

/// Whether a value holds a number that is not an integer (whose text
/// serde_json may not read back to the same double).
pub fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(number) => number.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(object) => object.values().any(has_float),
        _ => false,
    }
}

/// Seed bodies of `POST /v1/authorize` and `/v1/authorize/batch`.
pub const AUTHORIZE_SEEDS: &[(&str, &str)] = &[
    ("admin", r#"{"identity":"agent:buyer","action":"payments.charge","resource":"merchant://books"}"#),
    ("agent", r#"{"action":"payments.charge","resource":"merchant://books","amounts":{"usd_cents":1250}}"#),
    (
        "full",
        r#"{"identity":"agent:buyer","action":"payments.charge","resource":"merchant://books/1","context":{"cart":["a","b"],"n":3,"ok":true},"amounts":{"usd_cents":1250,"calls":1},"input":{"q":"x","page":[1,2.5,null]},"request_id":"r-1","reservation_ttl_s":600,"session_id":"s-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
    ),
    ("scope_outside", r#"{"action":"github.push","resource":"repo://x"}"#),
    (
        "batch",
        r#"{"requests":[{"identity":"agent:buyer","action":"a.b","resource":"r"},{"action":"payments.charge","resource":"r","amounts":{"usd_cents":1}}]}"#,
    ),
    ("reserved_context", r#"{"identity":"agent:buyer","action":"a","resource":"r","context":{"chain":1}}"#),
];

/// Seed bodies of the other routes, each decoded by every decoder.
pub const BODY_SEEDS: &[(&str, &str)] = &[
    ("identity", r#"{"id":"agent:buyer","kind":"agent","parent":"user:alice","attributes":{"team":"ops","level":3}}"#),
    ("human", r#"{"id":"user:alice","kind":"human","public_key":"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}"#),
    (
        "grant",
        r#"{"grantee":"agent:buyer","grantor":"user:alice","actions":["payments.*","github.push"],"resources":["merchant://*"],"limits":{"usd_cents":5000},"not_before":"2026-01-01T00:00:00Z","expires_at":"2027-01-01T00:00:00Z"}"#,
    ),
    ("budget", r#"{"id":"alice-usd","identity":"user:alice","dimension":"usd_cents","period":"month","limit":100000}"#),
    ("budget_patch", r#"{"limit":9007199254740991}"#),
    ("settle", r#"{"amounts":{"usd_cents":700,"calls":1}}"#),
    ("token", r#"{"identity":"agent:buyer","ttl_s":3600,"scopes":["payments.*","github.push"]}"#),
    (
        "token_revoke",
        r#"{"token":"mt_00112233445566770011223344556677001122334455667700112233445566770011223344556677"}"#,
    ),
    ("revoke_id", r#"{"id":"0011223344556677","token_type_hint":"access_token"}"#),
    ("admin_key", r#"{"role":"auditor"}"#),
    ("approval", r#"{"approver":"user:alice"}"#),
    ("empty", ""),
];

/// Seed query strings.
pub const QUERY_SEEDS: &[(&str, &str)] = &[
    (
        "search",
        "identity=agent%3Abuyer&type=decision&decision=allow&since=2026-01-01T00:00:00Z&until=2027-01-01T00:00:00Z&limit=50&cursor=17",
    ),
    ("identities", "parent=user%3Aalice&after=agent%3Aa&limit=1000"),
    ("entries", "start=0&end=100000"),
    ("wait", "wait_s=60"),
    ("empty", ""),
];
