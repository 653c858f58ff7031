//! The server's decoding of `POST /v1/authorize` and `/v1/authorize/batch`
//! (`api::decode_authorize`, `api::decode_authorize_batch`: the functions
//! the handlers call) never panics, as an admin key or as an agent token with
//! or without scopes. A refusal is a 4xx problem of the expected codes,
//! naming its field; an accepted request is within every limit of
//! `mandate_server::limits` and acts as the token's identity, within its
//! scopes; each request of an accepted batch decodes alone to the same
//! request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_fuzz::api::{agent_token, check_problem, has_float};
use mandate_server::api::{decode_authorize, decode_authorize_batch};
use mandate_server::limits::{
    ACTION_BYTES_MAX, AUTHORIZE_BATCH_MAX, INTEGER_MAX, RESERVATION_TTL_MAX_S, RESOURCE_BYTES_MAX, SHORT_TEXT_BYTES_MAX,
};
use mandate_server::problem::Code;
use mandate_server::state::AgentToken;
use mandate_server::tenant::AuthorizeRequest;
use serde_json::Value;

const REFUSALS: &[Code] = &[Code::InvalidJson, Code::InvalidField, Code::Forbidden];

fn check_accepted(request: &AuthorizeRequest, agent: Option<&AgentToken>) {
    assert!((1..=ACTION_BYTES_MAX).contains(&request.action.len()), "action: {request:?}");
    assert!((1..=RESOURCE_BYTES_MAX).contains(&request.resource.len()), "resource: {request:?}");
    for text in [&request.request_id, &request.session_id].into_iter().flatten() {
        assert!((1..=SHORT_TEXT_BYTES_MAX).contains(&text.len()), "{request:?}");
    }
    for (dimension, amount) in &request.amounts {
        assert!(mandate_core::wire::is_dimension(dimension), "{request:?}");
        assert!(*amount <= INTEGER_MAX, "{request:?}");
    }
    assert!(!request.context.contains_key("amounts") && !request.context.contains_key("chain"), "{request:?}");
    match (&request.input, &request.input_sha256) {
        (None, None) => {}
        (Some(_), Some(digest)) => {
            assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{request:?}")
        }
        _ => panic!("input and input_sha256 disagree: {request:?}"),
    }
    if let Some(trace_id) = &request.trace_id {
        assert!(trace_id.len() == 32 && trace_id.bytes().any(|b| b != b'0'), "{request:?}");
    }
    if let Some(ttl) = request.reservation_ttl {
        assert!((1..=RESERVATION_TTL_MAX_S as i64).contains(&ttl.as_secs()), "{request:?}");
    }
    if let Some(token) = agent {
        assert_eq!(request.identity, token.identity, "a token acts only as its identity");
        assert!(token.allows(&request.action), "an action outside the token's scopes: {request:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let scoped = agent_token(Some(&["payments.*", "github.push"]));
    let unscoped = agent_token(None);
    for agent in [None, Some(&scoped), Some(&unscoped)] {
        match decode_authorize(data, agent) {
            Ok(request) => check_accepted(&request, agent),
            Err(problem) => check_problem("authorize", &problem, REFUSALS, data),
        }
        match decode_authorize_batch(data, agent) {
            Ok(requests) => {
                assert!((1..=AUTHORIZE_BATCH_MAX).contains(&requests.len()), "{} requests", requests.len());
                let Ok(Value::Object(body)) = mandate_log::json::parse_strict(data) else {
                    panic!("an accepted batch is not an I-JSON object")
                };
                let Some(Value::Array(items)) = body.get("requests") else {
                    panic!("an accepted batch has no requests")
                };
                assert_eq!(items.len(), requests.len());
                for (item, request) in items.iter().zip(&requests) {
                    check_accepted(request, agent);
                    if has_float(item) {
                        continue;
                    }
                    let alone = serde_json::to_vec(item).unwrap_or_default();
                    match decode_authorize(&alone, agent) {
                        Ok(decoded) => assert_eq!(&decoded, request, "a batch's request decodes otherwise alone"),
                        Err(problem) => panic!("a batch's request is refused alone: {problem:?}"),
                    }
                }
            }
            Err(problem) => check_problem("authorize/batch", &problem, REFUSALS, data),
        }
    }
});
