//! The server's decoding of every other request body (`api::decode_*`: the
//! functions the handlers call) never panics on any bytes, each decoder
//! trying the same input. A refusal is a 4xx problem of the expected codes,
//! naming its field; what is accepted is within the limits of
//! `mandate_server::limits`, and an accepted identity or grant written back
//! in its wire form (without the fields the server sets) decodes to the same
//! value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::wire;
use mandate_fuzz::api::{check_problem, has_float};
use mandate_server::api::{
    TokenRevokeBy, decode_admin_key, decode_approval_answer, decode_budget, decode_budget_patch, decode_event,
    decode_grant, decode_identity, decode_import, decode_introspect, decode_settle, decode_token, decode_token_revoke,
};
use mandate_server::limits::{
    BUDGET_ID_BYTES_MAX, IMPORT_CALL_BYTES_MAX, IMPORT_CALLS_MAX, EVENT_ATTRIBUTES_BYTES_MAX, EVENT_OUTPUT_DIGEST_BYTES_MAX, INTEGER_MAX, TOKEN_SCOPES_MAX,
    TOKEN_TTL_MAX_S,
};
use mandate_server::problem::Code;
use serde_json::Value;

const FIELDS: &[Code] = &[Code::InvalidJson, Code::InvalidField];

fuzz_target!(|data: &[u8]| {
    match decode_identity(data) {
        Ok(identity) => {
            let mut object = wire::identity_to_json(&identity);
            object.remove("status");
            let value = Value::Object(object);
            if !has_float(&value) {
                let again = decode_identity(&serde_json::to_vec(&value).unwrap_or_default());
                assert_eq!(again.as_ref().ok(), Some(&identity), "identity round trip: {again:?}");
            }
        }
        Err(problem) => check_problem("identity", &problem, FIELDS, data),
    }
    match decode_grant(data, "grant-1".into()) {
        Ok(grant) => {
            let mut object = wire::grant_to_json(&grant);
            for server_set in ["id", "revoked", "signed"] {
                object.remove(server_set);
            }
            let again = decode_grant(&serde_json::to_vec(&Value::Object(object)).unwrap_or_default(), "grant-1".into());
            assert_eq!(again.as_ref().ok(), Some(&grant), "grant round trip: {again:?}");
        }
        Err(problem) => check_problem("grant", &problem, FIELDS, data),
    }
    match decode_budget(data, jiff::Timestamp::UNIX_EPOCH) {
        Ok(budget) => {
            assert!((1..=BUDGET_ID_BYTES_MAX).contains(&budget.id.len()), "{budget:?}");
            assert!(wire::is_dimension(&budget.dimension), "{budget:?}");
            assert!(budget.limit <= INTEGER_MAX, "{budget:?}");
        }
        Err(problem) => check_problem("budget", &problem, FIELDS, data),
    }
    match decode_budget_patch(data) {
        Ok(limit) => assert!(limit <= INTEGER_MAX),
        Err(problem) => check_problem("budget patch", &problem, FIELDS, data),
    }
    match decode_settle(data) {
        Ok(amounts) => assert!(amounts.values().all(|amount| *amount <= INTEGER_MAX), "{amounts:?}"),
        Err(problem) => check_problem("settle", &problem, FIELDS, data),
    }
    match decode_token(data) {
        Ok(token) => {
            assert!((1..=TOKEN_TTL_MAX_S as i64).contains(&token.ttl.as_secs()), "{token:?}");
            if let Some(scopes) = &token.scopes {
                assert!((1..=TOKEN_SCOPES_MAX).contains(&scopes.len()), "{token:?}");
            }
        }
        Err(problem) => check_problem("token", &problem, FIELDS, data),
    }
    match decode_token_revoke(data) {
        Ok(TokenRevokeBy::Token(_) | TokenRevokeBy::Id(_)) => {}
        Err(problem) => check_problem("token revoke", &problem, FIELDS, data),
    }
    if let Err(problem) = decode_introspect(data) {
        check_problem("introspect", &problem, FIELDS, data);
    }
    if let Err(problem) = decode_admin_key(data) {
        check_problem("admin key", &problem, FIELDS, data);
    }
    match decode_event(data) {
        Ok(event) => {
            assert!(["success", "failure", "error"].contains(&event.outcome.as_str()), "{event:?}");
            assert!(event.duration_ms.is_none_or(|ms| ms <= INTEGER_MAX), "{event:?}");
            assert!(event.output_digest.as_ref().is_none_or(|d| d.len() <= EVENT_OUTPUT_DIGEST_BYTES_MAX));
            if let Some(attributes) = &event.attributes {
                let canonical = mandate_log::json::canonicalize_object(attributes).unwrap_or_default();
                assert!(canonical.len() <= EVENT_ATTRIBUTES_BYTES_MAX, "{} bytes", canonical.len());
            }
        }
        Err(problem) => check_problem("event", &problem, FIELDS, data),
    }
    match decode_import(data, None) {
        Ok(calls) => {
            assert!(!calls.is_empty() && calls.len() <= IMPORT_CALLS_MAX, "{} calls", calls.len());
            for (position, call) in calls.iter().enumerate() {
                assert_eq!(call.position, position as u64);
                assert_eq!(call.calls_in_part, calls.len() as u64);
                assert!(call.part <= INTEGER_MAX);
                let outcome = call.fields.get("outcome").and_then(Value::as_str).unwrap_or_default();
                assert!(mandate_server::state::IMPORT_OUTCOMES.contains(&outcome), "{outcome}");
                let canonical = mandate_log::json::canonicalize_object(&call.fields).unwrap_or_default();
                assert!(!canonical.is_empty() && canonical.len() <= IMPORT_CALL_BYTES_MAX, "{} bytes", canonical.len());
            }
        }
        Err(problem) => check_problem("import", &problem, FIELDS, data),
    }
    match decode_approval_answer(data) {
        Ok(None) => assert!(data.is_empty() || matches!(mandate_log::json::parse_strict(data), Ok(Value::Object(_)))),
        Ok(Some(_)) => {}
        Err(problem) => check_problem("approval answer", &problem, FIELDS, data),
    }
});
