//! The HTTP API (SPEC §4): handlers, request parsing and the OpenAPI
//! description generated from them.
//!
//! Every request body is read as bytes and parsed with the I-JSON parser
//! (`mandate_log::json::parse_strict`: duplicate keys, lone surrogates and
//! numbers beyond ±2^53 are refused), then into typed fields with the failing
//! field's path named in the problem. The `decode_*` functions are that
//! decoding, one per body and query: the handlers call them, and so do the
//! fuzz targets in `fuzz/`. Every limit is in [`crate::limits`].
//!
//! # Roles
//!
//! Every handler authenticates first ([`authenticate`] with a [`Need`]), and
//! every lookup is in the caller's tenant, so another tenant's objects answer
//! 404. An agent token (`mt_…`) acts as its identity and nothing else:
//!
//! | endpoint | admin | auditor | agent token |
//! |---|---|---|---|
//! | `/v1/log/*` (checkpoint, entries, proofs, receipt, public key, search) | yes | yes | 403 |
//! | `POST /v1/authorize`, `/v1/authorize/batch` | yes (`identity` required) | 403 | as its identity (`identity` omitted or its own, else 403 naming `identity`); actions outside its scopes 403 naming `action` |
//! | `POST /v1/reservations/{id}/settle`, `/void` | yes | 403 | its identity's reservations; another's: 404 |
//! | `POST /v1/events` | yes | 403 | events after its identity's decisions; another identity's decision: 404 |
//! | `POST /v1/imports` | yes (`identity` required) | 403 | as its identity (another `identity`: 403) |
//! | `POST /v1/hooks/claude-code` | PreToolUse: a block; PostToolUse: 403 | the same | as its identity |
//! | `GET /v1/approvals/{id}` (long poll) | yes | 403 | approvals of its identity's decisions; another's: 404 |
//! | `POST /v1/tokens/introspect` | any token of the tenant | 403 | itself only (another token: 403 naming `token`) |
//! | everything else (identities, grants, policies, settings, admin keys, budgets, reservations and approvals otherwise, `POST /v1/tokens`, `/v1/tokens/revoke`) | yes | 403 | 403 |
//!
//! An action outside a token's scopes is refused with 403 `forbidden` rather
//! than answered with a logged deny: the scopes limit what the token may ask,
//! not what the identity may do, so nothing is decided and nothing is logged.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_core::budget::Budget;
use mandate_core::grant::Grant;
use mandate_core::identity::{Identity, IdentityId};
use mandate_core::pattern::ActionPattern;
use mandate_core::policy::PolicySet;
use mandate_core::wire;
use mandate_store::SearchQuery;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::AppState;
use crate::limits::{
    ACTION_BYTES_MAX, APPROVAL_WAIT_MAX_S, AUTHORIZE_BATCH_MAX, BODY_BYTES_MAX, BUDGET_ID_BYTES_MAX,
    DIMENSION_BYTES_MAX, ENTRIES_RESPONSE_MAX, EVENT_ATTRIBUTES_BYTES_MAX, EVENT_OUTPUT_DIGEST_BYTES_MAX,
    HOOK_BODY_BYTES_MAX, IDENTITIES_PAGE_MAX, IMPORT_CALL_BYTES_MAX, IMPORT_CALLS_MAX, IMPORT_CONTENT_BYTES_MAX,
    IMPORT_SOURCES, INTEGER_MAX, InFlightGuard, PAGE_LIMIT_DEFAULT, RESERVATION_TTL_MAX_S, RESOURCE_BYTES_MAX,
    SEARCH_PAGE_MAX, SHORT_TEXT_BYTES_MAX, TOKEN_SCOPES_MAX, TOKEN_TTL_MAX_S,
};
use crate::problem::{Code, Problem};
use crate::registry::{Caller, NewAdminKey, NewAgentToken, Principal};
use crate::spend;
use crate::state::{AgentToken, Role, hex};
use crate::tenant::{self, AuthorizeRequest, EventRequest, Op};

type ApiResult = Result<Response, Problem>;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A change, or a read of authority state: the `admin` role.
    Admin,
    /// The log, search and export: `admin` or `auditor`.
    Audit,
    /// What an agent does as itself (decide, settle, void, record events,
    /// wait for its approvals, introspect itself): `admin`, or an agent token, whose
    /// handler then holds it to its identity.
    Agent,
}

/// An authenticated caller, counted against its credential's requests in
/// flight ([`crate::limits::IN_FLIGHT_PER_KEY_MAX`]) until dropped, at the
/// end of the handler.
#[derive(Debug)]
pub struct Authenticated {
    caller: Caller,
    _in_flight: InFlightGuard,
}

impl Deref for Authenticated {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// The bearer key or token of a request, checked against what the route
/// needs: 401 when it is missing or not an active key or token, 403 when
/// its role may not call the route, 429 when the credential already has
/// [`crate::limits::IN_FLIGHT_PER_KEY_MAX`] requests in flight.
pub async fn authenticate(app: &AppState, headers: &HeaderMap, need: Need) -> Result<Authenticated, Problem> {
    authenticate_with(app, headers, need, true).await
}

/// [`authenticate`] for the hot path: routes whose only work is one
/// operation wrapped by [`as_caller`], which the sequencer checks again
/// against the state it has caught up with the log, so the request needs no
/// look at the shared store first (see [`crate::Registry::authenticate`]).
pub async fn authenticate_sequenced(app: &AppState, headers: &HeaderMap, need: Need) -> Result<Authenticated, Problem> {
    authenticate_with(app, headers, need, false).await
}

async fn authenticate_with(
    app: &AppState,
    headers: &HeaderMap,
    need: Need,
    fresh: bool,
) -> Result<Authenticated, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // RFC 9110 §11.1: the scheme is case-insensitive.
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token))
        .ok_or_else(|| Problem::new(Code::Unauthorized, "send `Authorization: Bearer <key>`"))?;
    let caller = app.registry.authenticate(token.trim(), fresh).await?;
    let allowed = match (&caller.principal, need) {
        (Principal::Key { role: Role::Admin, .. }, _) => true,
        (Principal::Key { role: Role::Auditor, .. }, need) => need == Need::Audit,
        (Principal::Agent { .. }, need) => need == Need::Agent,
    };
    if !allowed {
        let detail = match caller.agent() {
            Some(_) => {
                "an agent token may only authorize, settle, void, record events, wait for its approvals and introspect itself"
                    .to_owned()
            }
            None => format!("a `{}` key may not do this", caller.role_name()),
        };
        return Err(Problem::new(Code::Forbidden, detail));
    }
    // Counted only once the secret is verified: nobody can use up a
    // credential's share but its holder.
    let credential = match &caller.principal {
        Principal::Key { key_id, .. } => format!("{}{key_id}", crate::registry::ADMIN_KEY_PREFIX),
        Principal::Agent { token_id, .. } => format!("{}{token_id}", crate::registry::AGENT_TOKEN_PREFIX),
    };
    let in_flight = app.in_flight.enter(&credential)?;
    Ok(Authenticated { caller, _in_flight: in_flight })
}

/// The operation as the caller asks it, wrapped with its credential so that
/// the sequencer checks the key or token again, in log order.
fn as_caller(caller: &Caller, op: Op) -> Op {
    match &caller.principal {
        Principal::Agent { token_id, .. } => Op::AsAgent { token_id: token_id.clone(), op: Box::new(op) },
        Principal::Key { key_id, .. } => Op::AsAdmin { key_id: key_id.clone(), op: Box::new(op) },
    }
}

/// A body's bytes: 413 over [`BODY_BYTES_MAX`].
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(Code::PayloadTooLarge, format!("the body is over {BODY_BYTES_MAX} bytes"))
        } else {
            Problem::new(Code::InvalidJson, rejection.body_text())
        }
    })
}

/// Reads a body as an I-JSON object.
fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Problem> {
    decode_object(&body_bytes(body)?)
}

/// Reads a body into `T`, naming the field at fault.
fn typed<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, Problem> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let field = if path == "." { message_field(&message).unwrap_or_default() } else { path };
        Problem::field(Code::InvalidField, field.clone(), format!("`{field}`: {message}"))
    })
}

/// Query parameters, parsed so that a bad one is a problem naming it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        decode_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Reads a query string into `T`, naming the parameter at fault.
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let field = if path == "." { message_field(&message).unwrap_or_default() } else { path };
        Problem::field(Code::InvalidField, field.clone(), format!("query parameter `{field}`: {message}"))
    })
}

/// The `{id}` path segment, as a problem naming `id` when it is not UTF-8.
pub struct Path<T>(pub T);

impl<S: Send + Sync> FromRequestParts<S> for Path<String> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Path(id))
            .map_err(|rejection| Problem::field(Code::InvalidField, "id", rejection.body_text()))
    }
}

/// Answers a known path asked with a method it does not take.
pub async fn method_not_allowed() -> Problem {
    Problem::new(Code::MethodNotAllowed, "this path does not take that method")
}

/// serde names a missing or unknown field in its message, not in the path.
fn message_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message.get(start..)?.find('`')?;
    message.get(start..end).map(str::to_owned)
}

fn json(status: StatusCode, object: Map<String, Value>) -> Response {
    (status, Json(Value::Object(object))).into_response()
}

fn ok(object: Map<String, Value>) -> ApiResult {
    Ok(json(StatusCode::OK, object))
}

fn created(object: Map<String, Value>) -> ApiResult {
    Ok(json(StatusCode::CREATED, object))
}

fn identity_id(field: &str, text: &str) -> Result<IdentityId, Problem> {
    IdentityId::parse(text).map_err(|error| Problem::field(Code::InvalidField, field, error.to_string()))
}

// ---------------------------------------------------------------- request decoding
//
// One function per body and per query with checks of its own: the handlers
// decode with these and nothing else, and the fuzz targets in `fuzz/` call
// them on arbitrary bytes. Each answers a value within every limit of
// `crate::limits`, or a problem with a 4xx status (naming the field for
// `invalid_field`); none touches a tenant.

/// Parses a body as an I-JSON object: 400 `invalid_json` for anything else
/// (not JSON, not I-JSON, nested deeper than [`crate::limits::JSON_DEPTH_MAX`],
/// not an object).
pub fn decode_object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    match mandate_log::json::parse_strict(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Problem::new(Code::InvalidJson, "the body must be a JSON object")),
        Err(error) => Err(Problem::new(Code::InvalidJson, format!("the body is not I-JSON: {error}"))),
    }
}

/// Parses a body into `T`, naming the field at fault.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    typed(decode_object(bytes)?)
}

/// `POST /v1/identities`.
pub fn decode_identity(bytes: &[u8]) -> Result<Identity, Problem> {
    Ok(wire::identity_from_json(&decode_object(bytes)?)?)
}

/// `POST /v1/grants`; `id` is the id the server gives the grant.
pub fn decode_grant(bytes: &[u8], id: String) -> Result<Grant, Problem> {
    Ok(wire::grant_from_json(&decode_object(bytes)?, id)?)
}

/// `POST /v1/authorize`, as asked with an admin key (`agent` is `None`) or
/// with an agent token (its token): the request the sequencer decides.
pub fn decode_authorize(bytes: &[u8], agent: Option<&AgentToken>) -> Result<AuthorizeRequest, Problem> {
    check_request(agent, decode(bytes)?, "")
}

/// `POST /v1/authorize/batch`: 1 to [`AUTHORIZE_BATCH_MAX`] requests, each
/// checked as [`decode_authorize`] checks one, the field named with its
/// position (`requests[3].action`).
pub fn decode_authorize_batch(bytes: &[u8], agent: Option<&AgentToken>) -> Result<Vec<AuthorizeRequest>, Problem> {
    let batch: AuthorizeBatch = decode(bytes)?;
    if batch.requests.is_empty() || batch.requests.len() > AUTHORIZE_BATCH_MAX {
        return Err(Problem::field(
            Code::InvalidField,
            "requests",
            format!("`requests` holds 1 to {AUTHORIZE_BATCH_MAX} requests"),
        ));
    }
    batch
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, body)| check_request(agent, body, &format!("requests[{i}].")))
        .collect()
}

/// `POST /v1/budgets`: the budget, its window from `now` (set again from
/// its entry's time when it is applied), a new UUID as its id when none is
/// given.
pub fn decode_budget(bytes: &[u8], now: jiff::Timestamp) -> Result<Budget, Problem> {
    let request: BudgetCreate = decode(bytes)?;
    let identity = identity_id("identity", &request.identity)?;
    let period = mandate_core::budget::Period::parse(&request.period).ok_or_else(|| {
        Problem::field(Code::InvalidField, "period", "`period` must be hour, day, week, month, year or total")
    })?;
    if !wire::is_dimension(&request.dimension) {
        return Err(Problem::field(
            Code::InvalidField,
            "dimension",
            format!("`dimension` must be 1 to {DIMENSION_BYTES_MAX} of a-z, 0-9 and _"),
        ));
    }
    let id = match request.id {
        Some(id) if id.is_empty() || id.len() > BUDGET_ID_BYTES_MAX => {
            return Err(Problem::field(
                Code::InvalidField,
                "id",
                format!("`id` must be 1 to {BUDGET_ID_BYTES_MAX} bytes"),
            ));
        }
        Some(id) => id,
        None => uuid::Uuid::now_v7().to_string(),
    };
    let limit = check_limit(request.limit)?;
    Ok(Budget::new(id, identity, request.dimension, period, limit, now))
}

/// `PATCH /v1/budgets/{id}`: the new limit.
pub fn decode_budget_patch(bytes: &[u8]) -> Result<u64, Problem> {
    let request: BudgetPatch = decode(bytes)?;
    check_limit(request.limit)
}

/// `POST /v1/reservations/{id}/settle`: the amounts spent, by dimension
/// (whether they fit the reservation is the sequencer's question).
pub fn decode_settle(bytes: &[u8]) -> Result<BTreeMap<String, u64>, Problem> {
    let request: SettleBody = decode(bytes)?;
    Ok(request.amounts)
}

/// `POST /v1/events`: the outcome one of `success`, `failure`, `error`;
/// `decision_id` 1 to [`SHORT_TEXT_BYTES_MAX`] bytes; `duration_ms` at most
/// 2^53-1; `output_digest` 1 to [`EVENT_OUTPUT_DIGEST_BYTES_MAX`] bytes
/// without control characters; `attributes` an object of at most
/// [`EVENT_ATTRIBUTES_BYTES_MAX`] bytes in its canonical form. Whether the
/// decision exists is the sequencer's question.
pub fn decode_event(bytes: &[u8]) -> Result<EventRequest, Problem> {
    let body: EventBody = decode(bytes)?;
    if body.decision_id.is_empty() || body.decision_id.len() > SHORT_TEXT_BYTES_MAX {
        return Err(Problem::field(
            Code::InvalidField,
            "decision_id",
            format!("`decision_id` must be 1 to {SHORT_TEXT_BYTES_MAX} bytes"),
        ));
    }
    if !crate::state::EVENT_OUTCOMES.contains(&body.outcome.as_str()) {
        return Err(Problem::field(
            Code::InvalidField,
            "outcome",
            "`outcome` must be \"success\", \"failure\" or \"error\"",
        ));
    }
    if body.duration_ms.is_some_and(|duration| duration > INTEGER_MAX) {
        return Err(Problem::field(Code::InvalidField, "duration_ms", "`duration_ms` is at most 2^53-1"));
    }
    if let Some(digest) = &body.output_digest
        && (digest.is_empty() || digest.len() > EVENT_OUTPUT_DIGEST_BYTES_MAX || digest.chars().any(char::is_control))
    {
        return Err(Problem::field(
            Code::InvalidField,
            "output_digest",
            format!("`output_digest` must be 1 to {EVENT_OUTPUT_DIGEST_BYTES_MAX} bytes of printable text"),
        ));
    }
    if let Some(attributes) = &body.attributes {
        let size = mandate_log::json::canonicalize_object(attributes).map_or(usize::MAX, |bytes| bytes.len());
        if size > EVENT_ATTRIBUTES_BYTES_MAX {
            return Err(Problem::field(
                Code::InvalidField,
                "attributes",
                format!("`attributes` must be an object of at most {EVENT_ATTRIBUTES_BYTES_MAX} bytes (RFC 8785)"),
            ));
        }
    }
    Ok(EventRequest {
        decision_id: body.decision_id,
        outcome: body.outcome,
        duration_ms: body.duration_ms,
        output_digest: body.output_digest,
        attributes: body.attributes,
    })
}

/// `POST /v1/imports`, as asked with an admin key (`agent` is `None`, and
/// `identity` is required) or with an agent token (its own identity only):
/// the calls to record, each with its place in the part. `source` one of
/// [`IMPORT_SOURCES`]; `transcript_sha256` 64 lowercase hex digits; 1 to
/// [`IMPORT_CALLS_MAX`] calls, each with `tool` and `action` of 1 to
/// [`ACTION_BYTES_MAX`] bytes, `outcome` one of
/// [`crate::state::IMPORT_OUTCOMES`], digests of 1 to
/// [`EVENT_OUTPUT_DIGEST_BYTES_MAX`] printable bytes, ids of 1 to
/// [`SHORT_TEXT_BYTES_MAX`] bytes, `started_at` an RFC 3339 time, and
/// `input` / `output` of at most [`IMPORT_CONTENT_BYTES_MAX`] bytes
/// (canonical form / UTF-8), the whole call at most
/// [`IMPORT_CALL_BYTES_MAX`] bytes in its canonical form.
pub fn decode_import(bytes: &[u8], agent: Option<&AgentToken>) -> Result<Vec<tenant::ImportCall>, Problem> {
    let body: ImportBody = decode(bytes)?;
    let identity = acting_identity(agent, body.identity.as_deref(), "identity")?;
    if !IMPORT_SOURCES.contains(&body.source.as_str()) {
        return Err(Problem::field(
            Code::InvalidField,
            "source",
            format!("`source` must be one of {}", IMPORT_SOURCES.join(", ")),
        ));
    }
    let sha = &body.transcript_sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Problem::field(
            Code::InvalidField,
            "transcript_sha256",
            "`transcript_sha256` must be 64 lowercase hex digits",
        ));
    }
    if body.part > INTEGER_MAX {
        return Err(Problem::field(Code::InvalidField, "part", "`part` is at most 2^53-1"));
    }
    if body.calls.is_empty() || body.calls.len() > IMPORT_CALLS_MAX {
        return Err(Problem::field(
            Code::InvalidField,
            "calls",
            format!("`calls` must hold 1 to {IMPORT_CALLS_MAX} calls"),
        ));
    }
    let calls_in_part = body.calls.len() as u64;
    let mut calls = Vec::with_capacity(body.calls.len());
    for (position, call) in body.calls.into_iter().enumerate() {
        let name = |field: &str| format!("calls[{position}].{field}");
        let text = |field: &str, value: &str, max: usize| {
            if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
                Err(Problem::field(
                    Code::InvalidField,
                    name(field),
                    format!("`{}` must be 1 to {max} bytes of printable text", name(field)),
                ))
            } else {
                Ok(Value::from(value))
            }
        };
        let mut fields = Map::new();
        fields.insert("action".into(), text("action", &call.action, ACTION_BYTES_MAX)?);
        if let Some(id) = &call.call_id {
            fields.insert("call_id".into(), text("call_id", id, SHORT_TEXT_BYTES_MAX)?);
        }
        if let Some(input) = call.input {
            let size = mandate_log::json::canonicalize(&input).map_or(usize::MAX, |bytes| bytes.len());
            if size > IMPORT_CONTENT_BYTES_MAX {
                return Err(Problem::field(
                    Code::InvalidField,
                    name("input"),
                    format!("`{}` must be at most {IMPORT_CONTENT_BYTES_MAX} bytes (RFC 8785)", name("input")),
                ));
            }
            fields.insert("input".into(), input);
        }
        fields.insert("input_digest".into(), text("input_digest", &call.input_digest, EVENT_OUTPUT_DIGEST_BYTES_MAX)?);
        if !crate::state::IMPORT_OUTCOMES.contains(&call.outcome.as_str()) {
            return Err(Problem::field(
                Code::InvalidField,
                name("outcome"),
                format!("`{}` must be one of {}", name("outcome"), crate::state::IMPORT_OUTCOMES.join(", ")),
            ));
        }
        fields.insert("outcome".into(), Value::from(call.outcome));
        if let Some(output) = call.output {
            if output.len() > IMPORT_CONTENT_BYTES_MAX {
                return Err(Problem::field(
                    Code::InvalidField,
                    name("output"),
                    format!("`{}` must be at most {IMPORT_CONTENT_BYTES_MAX} bytes", name("output")),
                ));
            }
            fields.insert("output".into(), Value::from(output));
        }
        if let Some(digest) = &call.output_digest {
            fields.insert("output_digest".into(), text("output_digest", digest, EVENT_OUTPUT_DIGEST_BYTES_MAX)?);
        }
        if let Some(session) = &call.session_id {
            fields.insert("session_id".into(), text("session_id", session, SHORT_TEXT_BYTES_MAX)?);
        }
        fields.insert("source".into(), Value::from(body.source.as_str()));
        if let Some(started) = &call.started_at {
            let _: jiff::Timestamp = started.parse().map_err(|_| {
                Problem::field(
                    Code::InvalidField,
                    name("started_at"),
                    format!("`{}` must be an RFC 3339 time", name("started_at")),
                )
            })?;
            // Kept as the transcript wrote it.
            fields.insert("started_at".into(), Value::from(started.as_str()));
        }
        fields.insert("tool".into(), text("tool", &call.tool, ACTION_BYTES_MAX)?);
        fields.insert("transcript_sha256".into(), Value::from(sha.as_str()));
        if call.truncated == Some(true) {
            fields.insert("truncated".into(), Value::Bool(true));
        }
        // Refused here rather than by the entry's own limit in the
        // sequencer, which would leave the part half written.
        let size = mandate_log::json::canonicalize_object(&fields).map_or(usize::MAX, |bytes| bytes.len());
        if size > IMPORT_CALL_BYTES_MAX {
            return Err(Problem::field(
                Code::InvalidField,
                format!("calls[{position}]"),
                format!(
                    "`calls[{position}]` is {size} bytes in its RFC 8785 form; a call takes at most {IMPORT_CALL_BYTES_MAX}"
                ),
            ));
        }
        calls.push(tenant::ImportCall {
            identity: identity.clone(),
            transcript_sha256: sha.clone(),
            part: body.part,
            position: position as u64,
            calls_in_part,
            fields,
        });
    }
    Ok(calls)
}

/// `POST /v1/approvals/{id}/approve` and `/deny`: the human who answers, if
/// named. An empty body names nobody.
pub fn decode_approval_answer(bytes: &[u8]) -> Result<Option<IdentityId>, Problem> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let answer: ApprovalAnswer = decode(bytes)?;
    answer.approver.map(|approver| identity_id("approver", &approver)).transpose()
}

/// `POST /v1/admin-keys`: the new key's role.
pub fn decode_admin_key(bytes: &[u8]) -> Result<Role, Problem> {
    let request: AdminKeyCreate = decode(bytes)?;
    Role::parse(&request.role)
        .ok_or_else(|| Problem::field(Code::InvalidField, "role", "`role` must be \"admin\" or \"auditor\""))
}

/// What `POST /v1/tokens` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The identity the token acts as.
    pub identity: IdentityId,
    /// How long it lives: 1 s to [`TOKEN_TTL_MAX_S`].
    pub ttl: jiff::SignedDuration,
    /// What it may ask about; `None`: everything.
    pub scopes: Option<Vec<ActionPattern>>,
}

/// `POST /v1/tokens`.
pub fn decode_token(bytes: &[u8]) -> Result<TokenRequest, Problem> {
    let request: TokenCreate = decode(bytes)?;
    let identity = identity_id("identity", &request.identity)?;
    if request.ttl_s == 0 || request.ttl_s > TOKEN_TTL_MAX_S {
        return Err(Problem::field(Code::InvalidField, "ttl_s", format!("`ttl_s` must be 1 to {TOKEN_TTL_MAX_S}")));
    }
    let scopes = match request.scopes {
        None => None,
        Some(scopes) if scopes.is_empty() || scopes.len() > TOKEN_SCOPES_MAX => {
            return Err(Problem::field(
                Code::InvalidField,
                "scopes",
                format!("`scopes` holds 1 to {TOKEN_SCOPES_MAX} action patterns (omit it for every action)"),
            ));
        }
        Some(scopes) => Some(
            scopes
                .iter()
                .enumerate()
                .map(|(i, scope)| {
                    ActionPattern::parse(scope)
                        .map_err(|error| Problem::field(Code::InvalidField, format!("scopes[{i}]"), error.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    // At most 30 days: the cast cannot wrap.
    Ok(TokenRequest { identity, ttl: jiff::SignedDuration::from_secs(request.ttl_s as i64), scopes })
}

/// `POST /v1/tokens/introspect`: the token asked about.
pub fn decode_introspect(bytes: &[u8]) -> Result<String, Problem> {
    let request: TokenIntrospect = decode(bytes)?;
    Ok(request.token)
}

/// Which token `POST /v1/tokens/revoke` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRevokeBy {
    /// The token itself (RFC 7009).
    Token(String),
    /// Its id.
    Id(String),
}

/// `POST /v1/tokens/revoke`: `token` or `id`, not both.
pub fn decode_token_revoke(bytes: &[u8]) -> Result<TokenRevokeBy, Problem> {
    let request: TokenRevoke = decode(bytes)?;
    match (request.token, request.id) {
        (Some(token), None) => Ok(TokenRevokeBy::Token(token)),
        (None, Some(id)) => Ok(TokenRevokeBy::Id(id)),
        (Some(_), Some(_)) => Err(Problem::field(Code::InvalidField, "id", "give `token` or `id`, not both")),
        (None, None) => Err(Problem::field(Code::InvalidField, "token", "give `token` or `id`")),
    }
}

/// A page size: [`PAGE_LIMIT_DEFAULT`] when absent, else 1 to `max`.
fn page_limit(limit: Option<usize>, max: usize) -> Result<usize, Problem> {
    match limit {
        None => Ok(PAGE_LIMIT_DEFAULT.min(max)),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(Problem::field(Code::InvalidField, "limit", format!("`limit` must be 1 to {max}"))),
    }
}

/// What `GET /v1/identities` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPage {
    /// Only the children of this identity.
    pub parent: Option<String>,
    /// Only ids after this one.
    pub after: Option<String>,
    /// At most this many: 1 to [`IDENTITIES_PAGE_MAX`].
    pub limit: usize,
}

/// The query of `GET /v1/identities`.
pub fn decode_identity_page(query: &str) -> Result<IdentityPage, Problem> {
    let query: IdentityList = decode_query(query)?;
    Ok(IdentityPage { parent: query.parent, after: query.after, limit: page_limit(query.limit, IDENTITIES_PAGE_MAX)? })
}

/// The query of `GET /v1/log/entries`: `[start, end)`, at most
/// [`ENTRIES_RESPONSE_MAX`] entries.
pub fn decode_entries_range(query: &str) -> Result<(u64, u64), Problem> {
    let EntriesQuery { start, end } = decode_query(query)?;
    if start > end || end - start > ENTRIES_RESPONSE_MAX {
        return Err(Problem::field(
            Code::InvalidField,
            "end",
            format!("need start ≤ end and at most {ENTRIES_RESPONSE_MAX} entries"),
        ));
    }
    Ok((start, end))
}

/// The query of `GET /v1/log/search`.
pub fn decode_search(query: &str) -> Result<SearchQuery, Problem> {
    let params: SearchParams = decode_query(query)?;
    let after = match params.cursor.as_deref() {
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .map_err(|_| Problem::field(Code::InvalidField, "cursor", "not a cursor from this API"))?,
        ),
        None => None,
    };
    Ok(SearchQuery {
        identity: params.identity,
        entry_type: params.entry_type,
        decision: params.decision,
        since_us: micros("since", params.since.as_deref())?,
        until_us: micros("until", params.until.as_deref())?,
        after,
        limit: page_limit(params.limit, SEARCH_PAGE_MAX)?,
    })
}

/// The query of `GET /v1/approvals/{id}`: how long to wait, at most
/// [`APPROVAL_WAIT_MAX_S`].
pub fn decode_approval_wait(query: &str) -> Result<Duration, Problem> {
    let query: ApprovalWait = decode_query(query)?;
    match query.wait_s.unwrap_or(0) {
        seconds if seconds <= APPROVAL_WAIT_MAX_S => Ok(Duration::from_secs(seconds)),
        _ => Err(Problem::field(Code::InvalidField, "wait_s", format!("`wait_s` must be 0 to {APPROVAL_WAIT_MAX_S}"))),
    }
}

// ---------------------------------------------------------------- operations

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: every tenant is loaded and the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub async fn readyz(State(app): State<AppState>) -> ApiResult {
    let ledger = app.registry.ledger().clone();
    let tenants = tokio::task::spawn_blocking(move || ledger.tenants())
        .await
        .map_err(|_| Problem::new(Code::Unavailable, "the store check did not finish"))??;
    let mut body = Map::new();
    body.insert("status".into(), Value::from("ready"));
    body.insert("tenants".into(), Value::from(tenants.len()));
    ok(body)
}

/// Prometheus metrics: decisions by outcome, decision latency, log sizes,
/// authenticated requests in flight.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_text()).into_response()
}

/// The OpenAPI description as pretty JSON.
pub fn openapi_text() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

// ---------------------------------------------------------------- identities

/// `POST /v1/identities`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IdentityCreate {
    /// 1–128 characters of `A-Za-z0-9._:@/-`.
    id: String,
    /// `human`, `agent` or `service`.
    kind: String,
    /// Null only for humans.
    parent: Option<String>,
    /// Standard base64 of the 32-byte Ed25519 key its grants are signed with.
    public_key: Option<String>,
    /// Free attributes, visible to Cedar.
    #[schema(value_type = Object, required = false)]
    attributes: Option<Map<String, Value>>,
}

/// Registers an identity.
#[utoipa::path(post, path = "/v1/identities", tag = "identities", request_body = IdentityCreate,
    responses((status = 201, description = "the identity, with `log_index`"), (status = 400, description = "invalid field"),
        (status = 409, description = "exists"), (status = 422, description = "cannot be placed in the tree")))]
pub async fn create_identity(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let identity = decode_identity(&body_bytes(body)?)?;
    created(caller.tenant.submit_one(Op::CreateIdentity(identity)).await?)
}

/// Query of `GET /v1/identities`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdentityList {
    /// Only the children of this identity.
    parent: Option<String>,
    /// Return identities with ids after this one.
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Lists identities in id order.
#[utoipa::path(get, path = "/v1/identities", tag = "identities", params(IdentityList),
    responses((status = 200, description = "`{identities, next}`"), (status = 400, description = "invalid parameter (`limit` 0 or over 1000)")))]
pub async fn list_identities(State(app): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let query = decode_identity_page(query.as_deref().unwrap_or_default())?;
    let limit = query.limit;
    let page = caller
        .tenant
        .read(|state| {
            let mut identities = Vec::new();
            let mut next = None;
            let matching = state.authority.directory.iter().filter(|identity| {
                query.after.as_deref().is_none_or(|after| identity.id.as_str() > after)
                    && query
                        .parent
                        .as_deref()
                        .is_none_or(|parent| identity.parent.as_ref().is_some_and(|p| p.as_str() == parent))
            });
            for identity in matching {
                if identities.len() == limit {
                    next = identities.last().and_then(|last: &Value| last.get("id").cloned());
                    break;
                }
                identities.push(Value::Object(tenant::identity_view(state, &identity.id).unwrap_or_default()));
            }
            (identities, next)
        })
        .await?;
    let mut body = Map::new();
    body.insert("identities".into(), Value::Array(page.0));
    body.insert("next".into(), page.1.unwrap_or(Value::Null));
    ok(body)
}

/// One identity, with whether it is effective.
#[utoipa::path(get, path = "/v1/identities/{id}", tag = "identities", params(("id" = String, Path, description = "identity id (percent-encode `/`)")),
    responses((status = 200, description = "the identity"), (status = 404, description = "no such identity")))]
pub async fn get_identity(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let id = IdentityId::parse(&id).map_err(|_| Problem::not_found("identity"))?;
    ok(caller.tenant.read(|state| tenant::identity_view(state, &id)).await??)
}

/// Revokes an identity: it and every descendant lose authority at once.
#[utoipa::path(post, path = "/v1/identities/{id}/revoke", tag = "identities", params(("id" = String, Path, description = "identity id")),
    responses((status = 200, description = "the identity, with `revoked_descendants` and `log_index`"), (status = 404, description = "no such identity")))]
pub async fn revoke_identity(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let id = IdentityId::parse(&id).map_err(|_| Problem::not_found("identity"))?;
    ok(caller.tenant.submit_one(Op::RevokeIdentity(id)).await?)
}

// ---------------------------------------------------------------- grants

/// `POST /v1/grants`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct GrantCreate {
    /// Who receives the authority.
    grantee: String,
    /// The grantee's parent.
    grantor: String,
    /// Action patterns: `payments.charge`, `github.*`, `*`.
    actions: Vec<String>,
    /// Resource patterns with `*` as a suffix wildcard.
    resources: Vec<String>,
    /// Per-call limits by dimension, in minor units.
    #[schema(value_type = Object, required = false)]
    limits: Option<BTreeMap<String, u64>>,
    /// RFC 3339.
    not_before: Option<String>,
    /// RFC 3339.
    expires_at: Option<String>,
    /// Standard base64 Ed25519 signature by the grantor's registered key over
    /// the RFC 8785 form of the grant without `signature`.
    signature: Option<String>,
}

/// Stores a grant after checking that it is no wider than its grantor's.
#[utoipa::path(post, path = "/v1/grants", tag = "grants", request_body = GrantCreate,
    responses((status = 201, description = "the grant, with `id` and `log_index`"), (status = 400, description = "invalid field"),
        (status = 422, description = "wider than the grantor's authority, wrong grantor, or bad signature")))]
pub async fn create_grant(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let grant = decode_grant(&body_bytes(body)?, uuid::Uuid::now_v7().to_string())?;
    created(caller.tenant.submit_one(Op::CreateGrant(grant)).await?)
}

/// Query of `GET /v1/grants`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantList {
    /// The grantee whose grants to list.
    grantee: String,
}

/// The grants held by one identity.
#[utoipa::path(get, path = "/v1/grants", tag = "grants", params(GrantList), responses((status = 200, description = "`{grants}`")))]
pub async fn list_grants(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<GrantList>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let grantee = identity_id("grantee", &query.grantee)?;
    let grants = caller
        .tenant
        .read(|state| {
            state
                .authority
                .grants
                .get(&grantee)
                .into_iter()
                .flatten()
                .map(|held| Value::Object(tenant::grant_view(held)))
                .collect()
        })
        .await?;
    let mut body = Map::new();
    body.insert("grants".into(), Value::Array(grants));
    ok(body)
}

/// One grant.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "grants", params(("id" = String, Path, description = "grant id")),
    responses((status = 200, description = "the grant"), (status = 404, description = "no such grant")))]
pub async fn get_grant(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller
        .tenant
        .read(|state| state.grant(&id).map(tenant::grant_view))
        .await?
        .ok_or_else(|| Problem::not_found("grant"))?)
}

/// Revokes a grant.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "grants", params(("id" = String, Path, description = "grant id")),
    responses((status = 200, description = "the grant"), (status = 404, description = "no such grant")))]
pub async fn revoke_grant(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller.tenant.submit_one(Op::RevokeGrant(id)).await?)
}

// ---------------------------------------------------------------- policies

/// `PUT /v1/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoliciesPut {
    /// Cedar policies, each with `@id("…")`.
    policies: String,
    /// A Cedar schema: when given, policies are validated strictly.
    schema: Option<String>,
}

/// Replaces the policy set with a new version, after validating it.
#[utoipa::path(put, path = "/v1/policies", tag = "policies", request_body = PoliciesPut,
    responses((status = 200, description = "the new version"), (status = 422, description = "does not parse or validate")))]
pub async fn put_policies(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let put: PoliciesPut = typed(json_object(body)?)?;
    // Cedar compiles here, off the sequencer.
    let set = tokio::task::spawn_blocking(move || PolicySet::new(&put.policies, put.schema.as_deref()))
        .await
        .map_err(|_| Problem::new(Code::Internal, "policy compilation did not finish"))?
        .map_err(|error| {
            let field = if error.to_string().contains("schema") { "schema" } else { "policies" };
            Problem::field(Code::InvalidPolicy, field, error.to_string())
        })?;
    ok(caller.tenant.submit_one(Op::PutPolicies(set)).await?)
}

/// The current policy set.
#[utoipa::path(get, path = "/v1/policies", tag = "policies", responses((status = 200, description = "`{version, policy_hash, policies, schema}`")))]
pub async fn get_policies(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller.tenant.read(tenant::policies_view).await?)
}

/// Every version of the policy set.
#[utoipa::path(get, path = "/v1/policies/versions", tag = "policies", responses((status = 200, description = "`{versions}`")))]
pub async fn policy_versions(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let versions = caller
        .tenant
        .read(|state| {
            state
                .policy_versions
                .iter()
                .map(|version| {
                    let mut object = Map::new();
                    object.insert("log_index".into(), Value::from(version.log_index));
                    object.insert("policy_hash".into(), Value::from(version.policy_hash.as_str()));
                    object.insert("time".into(), Value::from(version.time.as_str()));
                    object.insert("version".into(), Value::from(version.version));
                    Value::Object(object)
                })
                .collect()
        })
        .await?;
    let mut body = Map::new();
    body.insert("versions".into(), Value::Array(versions));
    ok(body)
}

// ---------------------------------------------------------------- settings and keys

/// The tenant's settings.
#[utoipa::path(get, path = "/v1/settings", tag = "tenant", responses((status = 200, description = "`{require_signed_grants, record_inputs}`")))]
pub async fn get_settings(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller.tenant.read(|state| state.settings.to_json()).await?)
}

/// Changes the settings given (`require_signed_grants`, `record_inputs`).
#[utoipa::path(patch, path = "/v1/settings", tag = "tenant", request_body = Object, responses((status = 200, description = "the settings")))]
pub async fn patch_settings(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller.tenant.submit_one(Op::UpdateSettings(json_object(body)?)).await?)
}

/// `POST /v1/admin-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyCreate {
    /// `admin` or `auditor`.
    role: String,
}

/// Issues an admin key; the answer's `key` is shown this once.
#[utoipa::path(post, path = "/v1/admin-keys", tag = "tenant", request_body = AdminKeyCreate, responses((status = 201, description = "`{id, role, key}`")))]
pub async fn create_admin_key(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let role = decode_admin_key(&body_bytes(body)?)?;
    let key = NewAdminKey::generate()?;
    let op = Op::CreateAdminKey { key_id: key.key_id.clone(), role, secret_sha256: key.secret_sha256 };
    let mut answer = caller.tenant.submit_one(op).await?;
    app.registry.add_key(&key.key_id, caller.tenant.name());
    answer.insert("key".into(), Value::from(key.token));
    created(answer)
}

/// Revokes an admin key.
#[utoipa::path(post, path = "/v1/admin-keys/{id}/revoke", tag = "tenant", params(("id" = String, Path, description = "key id")), responses((status = 200, description = "the key")))]
pub async fn revoke_admin_key(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    ok(caller.tenant.submit_one(Op::RevokeAdminKey(id)).await?)
}

// ---------------------------------------------------------------- decisions

/// `POST /v1/authorize`: the question.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// The acting identity: required with an admin key; with an agent token,
    /// omitted or the token's own identity.
    identity: Option<String>,
    /// The action, e.g. `payments.charge`.
    action: String,
    /// The resource, e.g. `merchant://books`.
    resource: String,
    /// Cedar's `context` (must not use the reserved keys `amounts` and `chain`).
    #[schema(value_type = Object, required = false)]
    context: Option<Map<String, Value>>,
    /// Amounts in minor units by dimension.
    #[schema(value_type = Object, required = false)]
    amounts: Option<BTreeMap<String, u64>>,
    /// The tool's raw input: only its SHA-256 is recorded unless the tenant records inputs in full.
    #[schema(value_type = Object, required = false)]
    input: Option<Value>,
    /// Idempotency key.
    request_id: Option<String>,
    /// How long a reservation is held, in seconds.
    reservation_ttl_s: Option<u64>,
    /// The agent run this decision belongs to.
    session_id: Option<String>,
    /// W3C trace-context trace id (32 lowercase hex digits).
    trace_id: Option<String>,
}

/// `POST /v1/authorize/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBatch {
    /// Up to 30 requests, decided in order.
    requests: Vec<AuthorizeBody>,
}

fn short_text(field: &str, text: Option<String>) -> Result<Option<String>, Problem> {
    match text {
        Some(text) if text.is_empty() || text.len() > SHORT_TEXT_BYTES_MAX => Err(Problem::field(
            Code::InvalidField,
            field,
            format!("`{field}` must be 1 to {SHORT_TEXT_BYTES_MAX} bytes"),
        )),
        other => Ok(other),
    }
}

/// Who a request acts as, named in `field`: required with an admin key
/// (`agent` is `None`); an agent token's own identity, which it may omit
/// (another: 403).
fn acting_identity(agent: Option<&AgentToken>, named: Option<&str>, field: &str) -> Result<IdentityId, Problem> {
    match (agent, named) {
        (None, Some(text)) => identity_id(field, text),
        (None, None) => Err(Problem::field(
            Code::InvalidField,
            field,
            format!("`{field}` is required (only an agent token may omit it)"),
        )),
        (Some(token), None) => Ok(token.identity.clone()),
        (Some(token), Some(text)) if text == token.identity.as_str() => Ok(token.identity.clone()),
        (Some(token), Some(_)) => Err(Problem::field(
            Code::Forbidden,
            field,
            format!("an agent token acts only as its identity `{}`", token.identity),
        )),
    }
}

/// Checks one request of `POST /v1/authorize` (or of a batch, its fields
/// named after `prefix`), as asked by an admin key or by the agent token
/// `agent`.
fn check_request(agent: Option<&AgentToken>, body: AuthorizeBody, prefix: &str) -> Result<AuthorizeRequest, Problem> {
    let name = |field: &str| format!("{prefix}{field}");
    let identity = acting_identity(agent, body.identity.as_deref(), &name("identity"))?;
    for (field, text, max) in
        [("action", &body.action, ACTION_BYTES_MAX), ("resource", &body.resource, RESOURCE_BYTES_MAX)]
    {
        if text.is_empty() || text.len() > max {
            return Err(Problem::field(Code::InvalidField, name(field), format!("`{field}` must be 1 to {max} bytes")));
        }
    }
    if let Some(token) = agent
        && !token.allows(&body.action)
    {
        return Err(tenant::scope_problem(token, &body.action, &name("action")));
    }
    let context = body.context.unwrap_or_default();
    for reserved in ["amounts", "chain"] {
        if context.contains_key(reserved) {
            let field = name(&format!("context.{reserved}"));
            return Err(Problem::field(
                Code::InvalidField,
                field,
                format!("`context.{reserved}` is reserved: Mandate sets it"),
            ));
        }
    }
    let amounts = body.amounts.unwrap_or_default();
    for (dimension, amount) in &amounts {
        if *amount > INTEGER_MAX {
            return Err(Problem::field(
                Code::InvalidField,
                name(&format!("amounts.{dimension}")),
                "amounts are at most 2^53-1",
            ));
        }
        if !wire::is_dimension(dimension) {
            return Err(Problem::field(
                Code::InvalidField,
                name("amounts"),
                format!("dimension `{dimension}` must be 1 to {DIMENSION_BYTES_MAX} of `a-z0-9_`"),
            ));
        }
    }
    let input_sha256 = match &body.input {
        Some(input) => {
            let canonical = mandate_log::json::canonicalize(input)
                .map_err(|error| Problem::field(Code::InvalidField, name("input"), error.to_string()))?;
            Some(hex(&Sha256::digest(&canonical)))
        }
        None => None,
    };
    if let Some(trace_id) = &body.trace_id
        && (trace_id.len() != 32
            || !trace_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            || trace_id.bytes().all(|b| b == b'0'))
    {
        return Err(Problem::field(
            Code::InvalidField,
            name("trace_id"),
            "`trace_id` must be 32 lowercase hex digits, not all zero",
        ));
    }
    if body.reservation_ttl_s.is_some_and(|ttl| ttl == 0 || ttl > RESERVATION_TTL_MAX_S) {
        return Err(Problem::field(
            Code::InvalidField,
            name("reservation_ttl_s"),
            format!("`reservation_ttl_s` must be 1 to {RESERVATION_TTL_MAX_S}"),
        ));
    }
    Ok(AuthorizeRequest {
        identity,
        action: body.action,
        resource: body.resource,
        context,
        amounts,
        input: body.input,
        input_sha256,
        request_id: short_text(&name("request_id"), body.request_id)?,
        reservation_ttl: body.reservation_ttl_s.map(|ttl| jiff::SignedDuration::from_secs(ttl as i64)),
        session_id: short_text(&name("session_id"), body.session_id)?,
        trace_id: body.trace_id,
    })
}

fn record_decision(app: &AppState, started: Instant, answer: &Map<String, Value>) {
    let outcome = answer.get("decision").and_then(Value::as_str).unwrap_or("error").to_owned();
    app.metrics.decision(&outcome, started.elapsed());
}

/// Decides (SPEC §3). A deny is an answer: HTTP 200. With an agent token,
/// the decision is the token's identity's, and an action outside the
/// token's scopes is refused (403) without a decision.
#[utoipa::path(post, path = "/v1/authorize", tag = "decisions", request_body = AuthorizeBody,
    responses((status = 200, description = "`{decision, decision_id, reasons, chain, policies, budgets, reservation, approval, log_index}`"),
        (status = 400, description = "invalid field"),
        (status = 403, description = "an agent token naming another `identity`, or an `action` outside its scopes")))]
pub async fn authorize(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let started = Instant::now();
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    let request = decode_authorize(&body_bytes(body)?, caller.agent().map(|(_, token)| token))?;
    let answer = caller.tenant.submit_one(as_caller(&caller, Op::Authorize(Box::new(request)))).await?;
    record_decision(&app, started, &answer);
    ok(answer)
}

/// Decides up to 30 requests in order, in one commit.
#[utoipa::path(post, path = "/v1/authorize/batch", tag = "decisions", request_body = AuthorizeBatch,
    responses((status = 200, description = "`{results}`: one answer (or problem) per request, in order"),
        (status = 403, description = "an agent token: a request naming another `identity`, or an `action` outside its scopes (nothing is decided)")))]
pub async fn authorize_batch(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let started = Instant::now();
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    let ops = decode_authorize_batch(&body_bytes(body)?, caller.agent().map(|(_, token)| token))?
        .into_iter()
        .map(|request| as_caller(&caller, Op::Authorize(Box::new(request))))
        .collect();
    let results = caller.tenant.submit(ops).await?;
    let results = results
        .into_iter()
        .map(|result| match result {
            Ok(answer) => {
                record_decision(&app, started, &answer);
                Value::Object(answer)
            }
            Err(problem) => Value::Object(problem.to_json()),
        })
        .collect();
    let mut body = Map::new();
    body.insert("results".into(), Value::Array(results));
    ok(body)
}

// ---------------------------------------------------------------- the log

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Problem> + Send + 'static) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.map_err(|_| Problem::new(Code::Internal, "a storage task did not finish"))?
}

fn text(content_type: &'static str, body: String) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// A signed checkpoint of everything committed (a C2SP signed note).
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log", responses((status = 200, description = "signed note", content_type = "text/plain")))]
pub async fn checkpoint(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let (ledger, tenant) = (app.registry.ledger().clone(), caller.tenant.clone());
    let signed = blocking(move || Ok(ledger.sign_checkpoint(tenant.name(), tenant.signer())?)).await?;
    text("text/plain; charset=utf-8", signed.note)
}

/// Query of `GET /v1/log/entries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// First index (inclusive).
    start: u64,
    /// Last index (exclusive); at most 100,000 entries per request.
    end: u64,
}

/// How many entries `GET /v1/log/entries` reads from the store at a time:
/// about half a megabyte of decisions.
const STREAMED_PAGE_ENTRIES: u64 = 1_000;

/// Entries `[start, end)`, one canonical entry per line.
#[utoipa::path(get, path = "/v1/log/entries", tag = "log", params(EntriesQuery),
    responses((status = 200, description = "JSONL", content_type = "application/x-ndjson"),
        (status = 400, description = "invalid parameter (`end` before `start`, beyond the log, or more than 100,000 entries after it)")))]
pub async fn entries(State(app): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let (start, end) = decode_entries_range(query.as_deref().unwrap_or_default())?;
    let (ledger, name) = (app.registry.ledger().clone(), caller.tenant.name().to_owned());
    let size = {
        let (ledger, name) = (ledger.clone(), name.clone());
        blocking(move || Ok(ledger.size(&name)?)).await?
    };
    if end > size {
        return Err(Problem::field(Code::InvalidField, "end", format!("the log has {size} entries")));
    }
    // Pages are read on a blocking thread and streamed as they come, one
    // page waiting at most: what an export holds is a few pages, not the
    // answer (pages of 10,000 entries and four waiting took 36 MiB).
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::task::spawn_blocking(move || {
        let mut at = start;
        while at < end {
            let page_end = end.min(at + STREAMED_PAGE_ENTRIES);
            let chunk = match ledger.entries(&name, at, page_end) {
                Ok(page) => {
                    let mut chunk = Vec::with_capacity(page.iter().map(|entry| entry.bytes.len() + 1).sum());
                    for entry in page {
                        chunk.extend_from_slice(&entry.bytes);
                        chunk.push(b'\n');
                    }
                    Ok(Bytes::from(chunk))
                }
                Err(error) => Err(std::io::Error::other(error.to_string())),
            };
            let failed = chunk.is_err();
            if sender.blocking_send(chunk).is_err() || failed {
                return;
            }
            at = page_end;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn base64_hashes(hashes: &[mandate_log::Hash]) -> Value {
    use base64::Engine as _;
    Value::Array(
        hashes
            .iter()
            .map(|hash| Value::from(base64::engine::general_purpose::STANDARD.encode(hash.as_bytes())))
            .collect(),
    )
}

/// Query of `GET /v1/log/proof/inclusion`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The entry.
    index: u64,
    /// The tree size (a checkpoint's).
    size: u64,
}

/// The RFC 9162 inclusion proof of an entry in the tree of `size` entries.
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log", params(InclusionQuery), responses((status = 200, description = "`{index, size, hashes}` (base64)")))]
pub async fn inclusion_proof(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<InclusionQuery>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let (ledger, name) = (app.registry.ledger().clone(), caller.tenant.name().to_owned());
    let proof = blocking(move || Ok(ledger.inclusion_proof(&name, query.index, query.size)?)).await?;
    let mut body = Map::new();
    body.insert("hashes".into(), base64_hashes(&proof));
    body.insert("index".into(), Value::from(query.index));
    body.insert("size".into(), Value::from(query.size));
    ok(body)
}

/// Query of `GET /v1/log/proof/consistency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older size.
    from: u64,
    /// The newer size.
    to: u64,
}

/// The RFC 9162 consistency proof between two tree sizes.
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log", params(ConsistencyQuery), responses((status = 200, description = "`{from, to, hashes}` (base64)")))]
pub async fn consistency_proof(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ConsistencyQuery>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let (ledger, name) = (app.registry.ledger().clone(), caller.tenant.name().to_owned());
    let proof = blocking(move || Ok(ledger.consistency_proof(&name, query.from, query.to)?)).await?;
    let mut body = Map::new();
    body.insert("from".into(), Value::from(query.from));
    body.insert("hashes".into(), base64_hashes(&proof));
    body.insert("to".into(), Value::from(query.to));
    ok(body)
}

/// Query of `GET /v1/log/receipt`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiptQuery {
    /// The entry.
    index: u64,
}

/// A `c2sp.org/tlog-proof@v1` receipt: the entry's inclusion in a signed checkpoint.
#[utoipa::path(get, path = "/v1/log/receipt", tag = "log", params(ReceiptQuery), responses((status = 200, description = "receipt", content_type = "text/plain")))]
pub async fn receipt(State(app): State<AppState>, headers: HeaderMap, Query(query): Query<ReceiptQuery>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let (ledger, tenant) = (app.registry.ledger().clone(), caller.tenant.clone());
    let receipt = blocking(move || {
        let signed = ledger.sign_checkpoint(tenant.name(), tenant.signer())?;
        if query.index >= signed.checkpoint.size {
            return Err(Problem::field(
                Code::InvalidField,
                "index",
                format!("the log has {} entries", signed.checkpoint.size),
            ));
        }
        let proof = ledger.inclusion_proof(tenant.name(), query.index, signed.checkpoint.size)?;
        Ok(mandate_log::Receipt { extra: None, index: query.index, proof, checkpoint_note: signed.note })
    })
    .await?;
    text("text/plain; charset=utf-8", receipt.to_text())
}

/// The verifier key of the tenant's log (C2SP signed-note format).
#[utoipa::path(get, path = "/v1/log/public-key", tag = "log", responses((status = 200, description = "verifier key", content_type = "text/plain")))]
pub async fn public_key(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    text("text/plain; charset=utf-8", format!("{}\n", caller.tenant.signer().verifier()))
}

/// Query of `GET /v1/log/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The identity an entry is about (a decision's acting identity, a created identity, a grant's grantee).
    identity: Option<String>,
    /// Entry type, e.g. `decision`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    entry_type: Option<String>,
    /// `allow`, `deny` or `pending`.
    decision: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    /// At most this many entries (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn micros(field: &str, text: Option<&str>) -> Result<Option<i64>, Problem> {
    text.map(|text| {
        text.parse::<jiff::Timestamp>()
            .map(|at| at.as_microsecond())
            .map_err(|error| Problem::field(Code::InvalidField, field, format!("`{field}` is not RFC 3339: {error}")))
    })
    .transpose()
}

/// Entries matching every filter given, oldest first. A page may hold fewer
/// than `limit` entries; continue while `next_cursor` is not null.
#[utoipa::path(get, path = "/v1/log/search", tag = "log", params(SearchParams),
    responses((status = 200, description = "`{entries, next_cursor}`"),
        (status = 400, description = "invalid parameter (`limit` 0 or over 1000, a bad `cursor`, `since` or `until`)")))]
pub async fn search(State(app): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Audit).await?;
    let query = decode_search(query.as_deref().unwrap_or_default())?;
    let (ledger, name) = (app.registry.ledger().clone(), caller.tenant.name().to_owned());
    let page = blocking(move || Ok(ledger.search(&name, &query)?)).await?;
    let entries = page
        .entries
        .iter()
        .map(|entry| {
            serde_json::from_slice::<Value>(&entry.bytes)
                .map_err(|error| Problem::new(Code::Internal, error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = Map::new();
    body.insert("entries".into(), Value::Array(entries));
    body.insert("next_cursor".into(), page.next.map_or(Value::Null, |next| Value::from(next.to_string())));
    ok(body)
}

// ---------------------------------------------------------------- budgets

/// `POST /v1/budgets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetCreate {
    /// Optional id (1–128 bytes); a new UUID when absent.
    id: Option<String>,
    /// Whose spend, with all its descendants', it limits.
    identity: String,
    /// `usd_cents`, `tokens`, `calls`, or any other dimension name.
    dimension: String,
    /// `hour`, `day`, `week`, `month`, `year` or `total` (calendar windows in UTC, weeks from Monday).
    period: String,
    /// The most that may be spent and reserved in one window.
    limit: u64,
}

/// `PATCH /v1/budgets/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetPatch {
    /// The new limit (lowering it below what is used leaves no room until the window resets).
    limit: u64,
}

fn check_limit(limit: u64) -> Result<u64, Problem> {
    if limit > INTEGER_MAX {
        return Err(Problem::field(Code::InvalidField, "limit", "`limit` is at most 2^53-1"));
    }
    Ok(limit)
}

/// Sets a budget.
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", request_body = BudgetCreate,
    responses((status = 201, description = "the budget, with `spent`, `reserved`, `remaining` and `window`"),
        (status = 409, description = "the id, or the identity's budget for this dimension and period, exists")))]
pub async fn create_budget(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let budget = decode_budget(&body_bytes(body)?, jiff::Timestamp::now())?;
    created(caller.tenant.submit_one(Op::CreateBudget(budget)).await?)
}

/// Query of `GET /v1/budgets`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BudgetList {
    /// Only this identity's budgets.
    identity: Option<String>,
}

/// Budgets, as they stand now.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets", params(BudgetList), responses((status = 200, description = "`{budgets}`")))]
pub async fn list_budgets(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<BudgetList>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let identity = query.identity.as_deref().map(|text| identity_id("identity", text)).transpose()?;
    let now = jiff::Timestamp::now();
    let budgets = caller
        .tenant
        .read(|state| {
            let budgets = &state.spending.budgets;
            let chosen: Vec<&mandate_core::budget::Budget> = match &identity {
                Some(identity) => budgets.of(identity).collect(),
                None => budgets.iter().collect(),
            };
            chosen.into_iter().map(|budget| Value::Object(spend::budget_view(budget, now))).collect()
        })
        .await?;
    let mut body = Map::new();
    body.insert("budgets".into(), Value::Array(budgets));
    ok(body)
}

/// One budget, as it stands now.
#[utoipa::path(get, path = "/v1/budgets/{id}", tag = "budgets", params(("id" = String, Path, description = "budget id")),
    responses((status = 200, description = "the budget"), (status = 404, description = "no such budget")))]
pub async fn get_budget(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let now = jiff::Timestamp::now();
    ok(caller
        .tenant
        .read(|state| state.spending.budgets.get(&id).map(|budget| spend::budget_view(budget, now)))
        .await?
        .ok_or_else(|| Problem::not_found("budget"))?)
}

/// Changes a budget's limit.
#[utoipa::path(patch, path = "/v1/budgets/{id}", tag = "budgets", request_body = BudgetPatch,
    params(("id" = String, Path, description = "budget id")),
    responses((status = 200, description = "the budget"), (status = 404, description = "no such budget")))]
pub async fn patch_budget(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let limit = decode_budget_patch(&body_bytes(body)?)?;
    ok(caller.tenant.submit_one(Op::UpdateBudget { id, limit }).await?)
}

// ---------------------------------------------------------------- reservations

/// `POST /v1/reservations/{id}/settle`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    /// What was actually spent, by dimension, each at most what was reserved
    /// (dimensions not named: 0). The rest is released.
    #[schema(value_type = Object)]
    amounts: BTreeMap<String, u64>,
}

/// Settles a reservation: spends the actual amounts and releases the rest.
/// An agent token settles only its identity's reservations (others: 404).
#[utoipa::path(post, path = "/v1/reservations/{id}/settle", tag = "reservations", request_body = SettleBody,
    params(("id" = String, Path, description = "reservation id")),
    responses((status = 200, description = "the reservation; the same answer again for the same settlement"),
        (status = 404, description = "no such reservation"), (status = 409, description = "resolved otherwise, or its approval is not given")))]
pub async fn settle(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    let amounts = decode_settle(&body_bytes(body)?)?;
    ok(caller.tenant.submit_one(as_caller(&caller, Op::Settle { id, amounts })).await?)
}

/// Voids a reservation: releases everything it holds. An agent token voids
/// only its identity's reservations (others: 404).
#[utoipa::path(post, path = "/v1/reservations/{id}/void", tag = "reservations",
    params(("id" = String, Path, description = "reservation id")),
    responses((status = 200, description = "the reservation; the same answer again for a repeated void"),
        (status = 404, description = "no such reservation"), (status = 409, description = "resolved otherwise")))]
pub async fn void(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    ok(caller.tenant.submit_one(as_caller(&caller, Op::Void(id))).await?)
}

// ---------------------------------------------------------------- events

/// `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The decision the tool ran after, made within the last 24 h (any
    /// outcome: a denied call may still be followed by an `error`).
    #[schema(min_length = 1, max_length = 256)]
    decision_id: String,
    /// `success`, `failure` or `error`.
    outcome: String,
    /// How long the tool ran, in milliseconds (0 to 2^53-1).
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    duration_ms: Option<u64>,
    /// A digest of the tool's output, e.g. `sha256:<hex>`: up to 128 bytes of printable text.
    #[schema(min_length = 1, max_length = 128)]
    output_digest: Option<String>,
    /// Free attributes: a JSON object of at most 4 KiB (RFC 8785 form).
    #[schema(value_type = Option<Object>)]
    attributes: Option<Map<String, Value>>,
}

/// Records a tool's outcome after a decision of the last 24 h, as an
/// `event.recorded` entry (several per decision are fine). An agent token
/// records events only after its identity's decisions (others: 404).
#[utoipa::path(post, path = "/v1/events", tag = "decisions", request_body = EventBody,
    responses((status = 201, description = "`{id, decision_id, outcome, duration_ms, output_digest, attributes, identity, log_index}`"),
        (status = 400, description = "invalid field"),
        (status = 404, description = "no such decision in the last 24 h (or, to an agent token, another identity's)")))]
pub async fn record_event(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    let event = decode_event(&body_bytes(body)?)?;
    created(caller.tenant.submit_one(as_caller(&caller, Op::RecordEvent(Box::new(event)))).await?)
}

/// `POST /v1/imports`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Whose run the transcript records: required with an admin key; an
    /// agent token imports as its own identity.
    identity: Option<String>,
    /// The client that wrote the transcript: `claude-code`, `codex` or `gemini`.
    source: String,
    /// The SHA-256 of the whole transcript, 64 lowercase hex digits.
    #[schema(min_length = 64, max_length = 64)]
    transcript_sha256: String,
    /// Which part of the transcript this request carries (0, 1, …).
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    part: u64,
    /// The part's tool calls, in the transcript's order: 1 to 100.
    #[schema(min_items = 1, max_items = 100)]
    calls: Vec<ImportedCallBody>,
}

/// One tool call of `POST /v1/imports`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedCallBody {
    /// The client's id of the call (`toolu_…`).
    #[schema(min_length = 1, max_length = 256)]
    call_id: Option<String>,
    /// The client's session.
    #[schema(min_length = 1, max_length = 256)]
    session_id: Option<String>,
    /// The tool's name as the client's hook would send it.
    #[schema(min_length = 1, max_length = 1024)]
    tool: String,
    /// The action, as the hook maps the tool (`tool.Bash`, `mcp.<server>.<tool>`).
    #[schema(min_length = 1, max_length = 1024)]
    action: String,
    /// `sha256:<hex>` of the tool input's RFC 8785 form.
    #[schema(min_length = 1, max_length = 128)]
    input_digest: String,
    /// `success`, `failure`, `denied` or `unknown`.
    outcome: String,
    /// `sha256:<hex>` of the tool's result, when the transcript has one.
    #[schema(min_length = 1, max_length = 128)]
    output_digest: Option<String>,
    /// When the call was made, per the transcript (RFC 3339).
    started_at: Option<String>,
    /// The tool input itself (at most 16 KiB in RFC 8785 form), when imported with contents.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// The tool's output text (at most 16 KiB), when imported with contents.
    #[schema(max_length = 16384)]
    output: Option<String>,
    /// The input or output was cut to fit.
    truncated: Option<bool>,
}

/// Records the tool calls of a coding agent's transcript (`mandate import`)
/// as `event.imported` entries, one per call, all of a part in one commit.
/// A part already imported answers `replayed: true` with the entries of the
/// first import and writes nothing.
#[utoipa::path(post, path = "/v1/imports", tag = "decisions", request_body = ImportBody,
    responses((status = 200, description = "`{transcript_sha256, part, calls, replayed, log_indexes}`"),
        (status = 400, description = "invalid field"),
        (status = 403, description = "an agent token naming another `identity`"),
        (status = 404, description = "no such identity"),
        (status = 409, description = "this part was imported before with another number of calls")))]
pub async fn import_transcript(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate_sequenced(&app, &headers, Need::Agent).await?;
    let calls = decode_import(&body_bytes(body)?, caller.agent().map(|(_, token)| token))?;
    let (transcript, part) = match calls.first() {
        Some(call) => (call.transcript_sha256.clone(), call.part),
        None => return Err(Problem::field(Code::InvalidField, "calls", "`calls` is empty")),
    };
    let ops = calls.into_iter().map(|call| as_caller(&caller, Op::ImportCall(Box::new(call)))).collect();
    let mut indexes = Vec::new();
    let mut replayed = false;
    for result in caller.tenant.submit(ops).await? {
        let answer = result?;
        replayed |= answer.get("replayed").and_then(Value::as_bool).unwrap_or(false);
        indexes.push(answer.get("log_index").cloned().unwrap_or(Value::Null));
    }
    let mut body = Map::new();
    body.insert("calls".into(), Value::from(indexes.len()));
    body.insert("log_indexes".into(), Value::Array(indexes));
    body.insert("part".into(), Value::from(part));
    body.insert("replayed".into(), Value::Bool(replayed));
    body.insert("transcript_sha256".into(), Value::from(transcript));
    ok(body)
}

// ---------------------------------------------------------------- coding agents

/// The prefix of the `request_id` under which the Claude Code hook endpoint
/// decides a call, followed by its session and `tool_use_id`: the post half
/// finds the decision by it, and a retried call gets the first answer.
pub const CLAUDE_CODE_REQUEST_PREFIX: &str = "claude-code:";

/// What the pre half answers.
enum HookVerdict {
    Allow,
    Block(String),
}

/// Claude Code's HTTP hook (`"type": "http"`) for `PreToolUse`,
/// `PostToolUse` and `PostToolUseFailure`, with an agent token as the
/// bearer: the same decision as `mandate hook claude-code` (the mapping is
/// [`mandate_core::tool_call`]).
///
/// `PreToolUse` answers 200 `{}` to allow, and Claude Code's blocking JSON
/// (`decision: "block"` and `permissionDecision: "deny"`, with the reason)
/// to deny, for a pending approval, and on **every** failure — a missing or
/// inactive token, a bad payload, a refused request, an unreachable store —
/// because Claude Code runs the tool after any non-2xx answer unless the
/// hook says `onFailure: "block"`: this endpoint fails closed whatever the
/// settings. The call is decided under `request_id`
/// `claude-code:<session_id>:<tool_use_id>`.
///
/// `PostToolUse` / `PostToolUseFailure` find that decision and record the
/// outcome (`event.recorded`: `success`, or `failure` when the response says
/// so or the event is the failure one; the output's digest; `tool_use_id`);
/// they answer 200 `{}`, or a
/// problem (the tool has run: nothing is blocked, Claude Code shows it).
#[utoipa::path(post, path = "/v1/hooks/claude-code", tag = "decisions",
    request_body(content = Object, description = "Claude Code's hook payload (`hook_event_name`, `session_id`, `cwd`, `tool_name`, `tool_input`, `tool_use_id`, and after the call `tool_response`)"),
    responses((status = 200, description = "`{}`, or Claude Code's blocking JSON `{decision, reason, hookSpecificOutput}` (for PreToolUse, every failure too)"),
        (status = 400, description = "(PostToolUse) invalid payload, or an event this endpoint does not answer"),
        (status = 403, description = "(PostToolUse) not an agent token"),
        (status = 404, description = "(PostToolUse) no decision for this `tool_use_id` in the last 24 h")))]
pub async fn claude_code_hook(State(app): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    let started = Instant::now();
    // The token first: only an agent's own token makes the server read a
    // body over the usual limit (a tool input can be large).
    let caller = hook_caller(&app, &headers).await;
    let limit = if caller.is_ok() { HOOK_BODY_BYTES_MAX } else { BODY_BYTES_MAX };
    let payload = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => decode_object(&bytes),
        Err(_) => Err(Problem::new(Code::PayloadTooLarge, format!("the body is over {limit} bytes, or was cut off"))),
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(problem) => {
            return ok(claude_block(&format!("Mandate could not read the hook payload: {}", problem.detail())));
        }
    };
    match payload.get("hook_event_name").and_then(Value::as_str) {
        Some("PreToolUse") => {
            let decided = match caller {
                Ok(caller) => claude_code_pre(&app, caller, &payload, started).await,
                Err(problem) => Err(problem),
            };
            let verdict = match decided {
                Ok(verdict) => verdict,
                Err(problem) => HookVerdict::Block(format!(
                    "Mandate could not decide, so the call is blocked: {} ({})",
                    problem.detail(),
                    problem.code().as_str()
                )),
            };
            match verdict {
                HookVerdict::Allow => ok(Map::new()),
                HookVerdict::Block(reason) => ok(claude_block(&reason)),
            }
        }
        Some("PostToolUse" | "PostToolUseFailure") => claude_code_post(caller?, &payload).await,
        other => {
            caller?;
            Err(Problem::field(
                Code::InvalidField,
                "hook_event_name",
                format!(
                    "this endpoint answers PreToolUse, PostToolUse and PostToolUseFailure, not {}",
                    other.map_or_else(|| "a payload without `hook_event_name`".to_owned(), |name| format!("`{name}`"))
                ),
            ))
        }
    }
}

/// Claude Code's blocking answer to a `PreToolUse` hook.
fn claude_block(reason: &str) -> Map<String, Value> {
    let mut specific = Map::new();
    specific.insert("hookEventName".into(), "PreToolUse".into());
    specific.insert("permissionDecision".into(), "deny".into());
    specific.insert("permissionDecisionReason".into(), reason.into());
    let mut answer = Map::new();
    answer.insert("decision".into(), "block".into());
    answer.insert("hookSpecificOutput".into(), Value::Object(specific));
    answer.insert("reason".into(), reason.into());
    answer
}

/// A payload's non-empty text field.
fn payload_text<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// The `request_id` of a Claude Code call: `claude-code:<session>:<tool_use_id>`,
/// or, when that is longer than a request id may be, the prefix and the
/// SHA-256 of the rest.
fn claude_request_id(payload: &Map<String, Value>) -> Option<String> {
    let call = payload_text(payload, "tool_use_id")?;
    let session = payload_text(payload, "session_id").unwrap_or_default();
    let id = format!("{CLAUDE_CODE_REQUEST_PREFIX}{session}:{call}");
    Some(if id.len() <= SHORT_TEXT_BYTES_MAX {
        id
    } else {
        format!("{CLAUDE_CODE_REQUEST_PREFIX}{}", hex(&Sha256::digest(format!("{session}\n{call}"))))
    })
}

/// The agent token of a hook request (an admin key names no identity).
async fn hook_caller(app: &AppState, headers: &HeaderMap) -> Result<Authenticated, Problem> {
    let caller = authenticate_sequenced(app, headers, Need::Agent).await?;
    if caller.agent().is_none() {
        return Err(Problem::new(Code::Forbidden, "a hook acts as an agent: send the agent's token (`mt_…`)"));
    }
    Ok(caller)
}

async fn claude_code_pre(
    app: &AppState,
    caller: Authenticated,
    payload: &Map<String, Value>,
    started: Instant,
) -> Result<HookVerdict, Problem> {
    let call = mandate_core::tool_call::ToolCall::from_payload("claude-code", payload)
        .ok_or_else(|| Problem::field(Code::InvalidField, "tool_name", "the hook payload has no `tool_name`"))?;
    let empty = Value::Object(Map::new());
    let input = payload.get("tool_input").unwrap_or(&empty);
    let action = call.action();
    let mut body = Map::new();
    body.insert("action".into(), action.clone().into());
    body.insert("context".into(), Value::Object(call.context()));
    body.insert("input".into(), input.clone());
    body.insert("resource".into(), call.resource().into());
    if let Some(request_id) = claude_request_id(payload) {
        body.insert("request_id".into(), request_id.into());
    }
    if let Some(session) = payload_text(payload, "session_id") {
        body.insert("session_id".into(), session.into());
    }
    let request = check_request(caller.agent().map(|(_, token)| token), typed(body)?, "")?;
    let answer = caller.tenant.submit_one(as_caller(&caller, Op::Authorize(Box::new(request)))).await?;
    record_decision(app, started, &answer);
    let decision_id = answer.get("decision_id").and_then(Value::as_str).unwrap_or_default();
    Ok(match answer.get("decision").and_then(Value::as_str) {
        Some("allow") => HookVerdict::Allow,
        Some("pending") => {
            let approval = answer.get("approval").and_then(|a| a.get("id")).and_then(Value::as_str).unwrap_or("?");
            HookVerdict::Block(format!(
                "`{action}` waits for approval {approval} (decision {decision_id}); ask again once it is approved"
            ))
        }
        _ => {
            let reasons = mandate_core::tool_call::reasons_text(&answer);
            HookVerdict::Block(format!("`{action}` denied by Mandate: {reasons} (decision {decision_id})"))
        }
    })
}

async fn claude_code_post(caller: Authenticated, payload: &Map<String, Value>) -> ApiResult {
    let Some((_, token)) = caller.agent() else {
        return Err(Problem::new(Code::Forbidden, "a hook acts as an agent: send the agent's token (`mt_…`)"));
    };
    let request_id = claude_request_id(payload).ok_or_else(|| {
        Problem::field(Code::InvalidField, "tool_use_id", "the payload has no `tool_use_id` to find its decision by")
    })?;
    let decision_id = caller
        .tenant
        .recent_request(&token.identity, &request_id)
        .await?
        .ok_or_else(|| Problem::new(Code::NotFound, "no decision for this `tool_use_id` in the last 24 h"))?;
    let response = payload.get("tool_response").unwrap_or(&Value::Null);
    let failed = payload_text(payload, "hook_event_name") == Some("PostToolUseFailure")
        || mandate_core::tool_call::outcome_of(response) == "failure";
    let mut attributes = Map::new();
    attributes.insert("client".into(), "claude-code".into());
    if let Some(id) = payload_text(payload, "tool_use_id") {
        attributes.insert("tool_use_id".into(), id.into());
    }
    // The hook asks with no amounts, so the decision holds no reservation to
    // settle: recording the outcome is all.
    let event = EventRequest {
        decision_id,
        outcome: if failed { "failure" } else { "success" }.to_owned(),
        duration_ms: payload.get("duration_ms").and_then(Value::as_u64).filter(|ms| *ms <= INTEGER_MAX),
        output_digest: Some(mandate_core::tool_call::digest(response)),
        attributes: Some(attributes),
    };
    caller.tenant.submit_one(as_caller(&caller, Op::RecordEvent(Box::new(event)))).await?;
    ok(Map::new())
}

/// One reservation (held, or resolved within the last 24 h).
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = String, Path, description = "reservation id")),
    responses((status = 200, description = "the reservation"), (status = 404, description = "no such reservation")))]
pub async fn get_reservation(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let held = caller
        .tenant
        .read(|state| state.spending.budgets.reservation(&id).as_ref().map(spend::reservation_view))
        .await?;
    let view = match held {
        Some(view) => Some(view),
        // Resolved ones left the state: their entries tell them.
        None => caller.tenant.resolved_reservation(&id).await?,
    };
    ok(view.ok_or_else(|| Problem::not_found("reservation"))?)
}

// ---------------------------------------------------------------- approvals

/// Query of `GET /v1/approvals`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalList {
    /// `pending`, `approved`, `denied` or `expired`.
    status: Option<String>,
}

/// Approvals, newest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalList), responses((status = 200, description = "`{approvals}`")))]
pub async fn list_approvals(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ApprovalList>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(spend::ApprovalStatus::parse(text).ok_or_else(|| {
            Problem::field(Code::InvalidField, "status", "`status` must be pending, approved, denied or expired")
        })?),
    };
    let approvals = caller
        .tenant
        .read(|state| {
            let mut chosen: Vec<&spend::Approval> =
                state.spending.approvals.values().filter(|a| status.is_none_or(|s| a.status == s)).collect();
            chosen.sort_by_key(|approval| std::cmp::Reverse(approval.log_index));
            chosen.into_iter().map(|approval| Value::Object(spend::approval_view(approval))).collect()
        })
        .await?;
    let mut body = Map::new();
    body.insert("approvals".into(), Value::Array(approvals));
    ok(body)
}

/// Query of `GET /v1/approvals/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalWait {
    /// Wait up to this many seconds (at most 60) for the approval to leave `pending`.
    #[param(maximum = 60)]
    wait_s: Option<u64>,
}

/// One approval; with `wait_s`, a long poll that answers as soon as it is
/// approved, denied or expired, or at once with the approval as it stands
/// when the server is stopping. An agent token sees only the approvals of
/// its identity's decisions (others: 404).
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "approval id"), ApprovalWait),
    responses((status = 200, description = "the approval"), (status = 400, description = "`wait_s` over 60"),
        (status = 404, description = "no such approval")))]
pub async fn get_approval(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Agent).await?;
    let wait = decode_approval_wait(query.as_deref().unwrap_or_default())?;
    let owner = caller.agent().map(|(_, token)| token.identity.clone());
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = app.stopping.subscribe();
    loop {
        let view = caller
            .tenant
            .read(|state| {
                state
                    .spending
                    .approvals
                    .get(&id)
                    .filter(|approval| owner.as_ref().is_none_or(|owner| approval.chain.first() == Some(owner)))
                    .map(spend::approval_view)
            })
            .await?
            .ok_or_else(|| Problem::not_found("approval"))?;
        let pending = view.get("status").and_then(Value::as_str) == Some("pending");
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !pending || left.is_zero() || *stopping.borrow() {
            return ok(view);
        }
        tokio::select! {
            () = caller.tenant.changed(left) => {}
            // The server is stopping: answer with the approval as it stands.
            _ = stopping.wait_for(|stopping| *stopping) => {}
        }
    }
}

/// `POST /v1/approvals/{id}/approve` and `/deny`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// The human on the decision's chain who answers (recorded); without it,
    /// the answer is recorded as the admin key's.
    approver: Option<String>,
}

async fn answer_approval(app: AppState, headers: HeaderMap, id: String, body: Bytes, approve: bool) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let by = match decode_approval_answer(&body)? {
        None => match &caller.principal {
            Principal::Key { key_id, .. } => format!("admin_key:{key_id}"),
            Principal::Agent { .. } => return Err(Problem::new(Code::Forbidden, "an agent token may not do this")),
        },
        Some(approver) => {
            let on_chain = caller
                .tenant
                .read(|state| {
                    let chain = state.spending.approvals.get(&id).map(|a| a.chain.clone())?;
                    let human = state
                        .authority
                        .directory
                        .get(&approver)
                        .is_some_and(|identity| identity.kind == mandate_core::identity::Kind::Human)
                        // A revoked human no longer speaks for the chain.
                        && state.authority.directory.chain(&approver).is_ok();
                    Some(human && chain.contains(&approver))
                })
                .await?
                .ok_or_else(|| Problem::not_found("approval"))?;
            if !on_chain {
                return Err(Problem::field(
                    Code::Forbidden,
                    "approver",
                    format!("`{approver}` is not a human on this decision's chain"),
                ));
            }
            approver.to_string()
        }
    };
    ok(caller.tenant.submit_one(Op::ResolveApproval { id, approve, by }).await?)
}

/// Approves a pending decision: the agent may go ahead and settle.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", request_body = ApprovalAnswer,
    params(("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "the approval"), (status = 409, description = "already answered otherwise")))]
pub async fn approve(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    answer_approval(app, headers, id, body_bytes(body)?, true).await
}

/// Denies a pending decision and voids its reservation.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", request_body = ApprovalAnswer,
    params(("id" = String, Path, description = "approval id")),
    responses((status = 200, description = "the approval"), (status = 409, description = "already answered otherwise")))]
pub async fn deny(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    answer_approval(app, headers, id, body_bytes(body)?, false).await
}

// ---------------------------------------------------------------- agent tokens

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// The identity the token acts as, and only as (it must be effective).
    identity: String,
    /// Seconds until the token expires: 1 to 2,592,000 (30 days).
    ttl_s: u64,
    /// 1 to 32 action patterns (`payments.charge`, `github.*`, `*`) the token
    /// may ask about; absent or null: every action.
    scopes: Option<Vec<String>>,
}

/// Issues an agent token for one identity. The answer's `token` (`mt_…`) is
/// shown this once; the log keeps only the SHA-256 of its secret.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenCreate,
    responses((status = 201, description = "`{token, id, identity, issued_at, expires_at, scopes, revoked, created_log_index, log_index}`"),
        (status = 400, description = "invalid field (an unknown or ineffective `identity` among them)")))]
pub async fn create_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let TokenRequest { identity, ttl, scopes } = decode_token(&body_bytes(body)?)?;
    let token = NewAgentToken::generate()?;
    let op =
        Op::CreateToken { token_id: token.token_id.clone(), identity, ttl, scopes, secret_sha256: token.secret_sha256 };
    let mut answer = caller.tenant.submit_one(op).await?;
    let expires_at = answer
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
        .unwrap_or(jiff::Timestamp::MAX);
    app.registry.add_token(&token.token_id, caller.tenant.name(), expires_at);
    answer.insert("token".into(), Value::from(token.token));
    created(answer)
}

/// `POST /v1/tokens/introspect` (RFC 7662, as JSON).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIntrospect {
    /// The agent token (`mt_…`).
    token: String,
    /// RFC 7662's hint; accepted and ignored (only agent tokens are introspected).
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Whether an agent token is active, in RFC 7662's shape: `{active, sub,
/// exp, iat, scope, token_type, token_id, expires_at}` plus the identity
/// `chain` (acting identity first) as an extension; anything not active in
/// this tenant (unknown, another tenant's, revoked, expired, its identity
/// or an ancestor revoked) is just `{"active": false}`. An admin key may
/// introspect any token; an agent token only itself.
#[utoipa::path(post, path = "/v1/tokens/introspect", tag = "tokens", request_body = TokenIntrospect,
    responses((status = 200, description = "`{active, sub, exp, iat, scope, token_type, token_id, expires_at, chain}` or `{active: false}`"),
        (status = 403, description = "an agent token introspecting another token")))]
pub async fn introspect_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Agent).await?;
    let token = decode_introspect(&body_bytes(body)?)?;
    if let Some((token_id, _)) = caller.agent() {
        let presented = crate::registry::split_agent_token(&token).map(|(id, _)| id);
        if presented != Some(token_id) {
            return Err(Problem::field(Code::Forbidden, "token", "an agent token may introspect only itself"));
        }
    }
    let now = jiff::Timestamp::now();
    ok(caller.tenant.read(|state| tenant::introspection(state, &token, now)).await?)
}

/// `POST /v1/tokens/revoke`: the token (RFC 7009) or its id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRevoke {
    /// The agent token (`mt_…`) to revoke.
    token: Option<String>,
    /// Or its id (as `POST /v1/tokens` answered it).
    id: Option<String>,
    /// RFC 7009's hint; accepted and ignored.
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Revokes an agent token at once, by the token itself (`token`) or by its
/// `id`. As in RFC 7009, a `token` that is not one of this tenant's answers
/// 200 `{"revoked": false}`; an unknown `id` answers 404. Revoking again
/// answers the same as the first time, with its `log_index`.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens", request_body = TokenRevoke,
    responses((status = 200, description = "the token, with `revoked: true` and `log_index`; or `{revoked: false}` for a `token` not of this tenant"),
        (status = 400, description = "neither or both of `token` and `id`"), (status = 404, description = "no token with this `id`")))]
pub async fn revoke_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = authenticate(&app, &headers, Need::Admin).await?;
    let id = match decode_token_revoke(&body_bytes(body)?)? {
        TokenRevokeBy::Token(token) => {
            let now = jiff::Timestamp::now();
            let found = caller
                .tenant
                .read(|state| {
                    let (id, secret) = crate::registry::split_agent_token(&token)?;
                    let held = state.token(id, now)?;
                    crate::registry::secret_matches(secret, &held.secret_sha256).then(|| id.to_owned())
                })
                .await?;
            match found {
                Some(id) => id,
                None => {
                    let mut body = Map::new();
                    body.insert("revoked".into(), Value::Bool(false));
                    return ok(body);
                }
            }
        }
        TokenRevokeBy::Id(id) => id,
    };
    ok(caller.tenant.submit_one(Op::RevokeToken(id)).await?)
}

/// Any other path.
pub async fn fallback() -> Problem {
    Problem::new(Code::NotFound, "no such route")
}

/// The OpenAPI description, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "Mandate", description = "Authority, budgets and a verifiable audit log for AI agents."),
    paths(
        healthz, readyz, metrics, openapi_json,
        create_identity, list_identities, get_identity, revoke_identity,
        create_grant, list_grants, get_grant, revoke_grant,
        put_policies, get_policies, policy_versions,
        get_settings, patch_settings, create_admin_key, revoke_admin_key,
        authorize, authorize_batch, record_event, import_transcript, claude_code_hook,
        create_budget, list_budgets, get_budget, patch_budget,
        settle, void, get_reservation,
        list_approvals, get_approval, approve, deny,
        create_token, introspect_token, revoke_token,
        checkpoint, entries, inclusion_proof, consistency_proof, receipt, public_key, search,
    ),
    components(schemas(IdentityCreate, GrantCreate, PoliciesPut, AdminKeyCreate, AuthorizeBody, AuthorizeBatch,
        BudgetCreate, BudgetPatch, SettleBody, EventBody, ImportBody, ImportedCallBody, ApprovalAnswer, TokenCreate, TokenIntrospect, TokenRevoke)),
    modifiers(&BearerAuth, &LimitAnswers),
)]
pub struct ApiDoc;

/// Documents the answers any operation may give, whatever it does: 503 for
/// a request past the time limit ([`crate::limits::REQUEST_TIME_MAX`]), and,
/// on the authenticated `/v1` routes, 429 with `Retry-After` for a key with
/// too many requests in flight ([`crate::limits::IN_FLIGHT_PER_KEY_MAX`]).
struct LimitAnswers;

impl utoipa::Modify for LimitAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Content, Header, RefOr, Response, ResponseBuilder};
        let problem = || Content::new(Some(ObjectBuilder::new().schema_type(Type::Object)));
        let too_many: RefOr<Response> = ResponseBuilder::new()
            .description(format!(
                "this key has {} requests in flight already; retry after `Retry-After` seconds",
                crate::limits::IN_FLIGHT_PER_KEY_MAX
            ))
            .header("Retry-After", Header::new(ObjectBuilder::new().schema_type(Type::Integer)))
            .content("application/problem+json", problem())
            .build()
            .into();
        let unavailable: RefOr<Response> = ResponseBuilder::new()
            .description(format!(
                "the server cannot answer now: the request took longer than {} s, or storage failed",
                crate::limits::REQUEST_TIME_MAX.as_secs()
            ))
            .content("application/problem+json", problem())
            .build()
            .into();
        let answer = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", problem())
                .build()
                .into()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/v1/");
            let has_id = path.contains('{');
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (operation, writes) in operations.into_iter().filter_map(|(op, writes)| Some((op.as_mut()?, writes))) {
                let takes_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut declare = |status: &str, response: &dyn Fn() -> RefOr<Response>| {
                    responses.entry(status.to_owned()).or_insert_with(response);
                };
                if api {
                    // Every problem an API operation can answer, so that a
                    // client (or a fuzzer) can hold the server to its document.
                    declare("400", &|| answer("a field, query parameter or the JSON is invalid (named in `field`)"));
                    declare("401", &|| answer("no key or token, or not one of this server's"));
                    declare("403", &|| answer("this key's role, or this token, may not do this"));
                    declare("429", &|| too_many.clone());
                    if has_id {
                        declare("404", &|| answer("no such object in this tenant"));
                    }
                    if takes_body {
                        declare("413", &|| answer("the body, or the log entry it makes, is too large"));
                    }
                    if writes {
                        declare("409", &|| {
                            answer("conflicts with the current state (exists, resolved otherwise, reused id)")
                        });
                        declare("422", &|| answer("well-formed, but refused by the authority model"));
                    }
                } else {
                    // Operations endpoints need no credential.
                    operation.security = Some(vec![utoipa::openapi::security::SecurityRequirement::default()]);
                }
                declare("503", &|| unavailable.clone());
            }
        }
    }
}

/// Declares the bearer scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    /// The document states the limits the code holds requests to.
    #[test]
    fn the_document_states_the_limits() {
        let document: Value = serde_json::from_str(&openapi_text()).unwrap();
        let parameter = |path: &str, name: &str| -> Value {
            let parameters = document["paths"][path]["get"]["parameters"].as_array().unwrap();
            parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path} {name}")).clone()
        };
        for (path, name, max) in [
            ("/v1/identities", "limit", IDENTITIES_PAGE_MAX as u64),
            ("/v1/log/search", "limit", SEARCH_PAGE_MAX as u64),
            ("/v1/approvals/{id}", "wait_s", APPROVAL_WAIT_MAX_S),
        ] {
            let parameter = parameter(path, name);
            assert_eq!(parameter["in"], "query", "{path} {name}");
            assert_eq!(parameter["schema"]["maximum"], max, "{path} {name}");
        }
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                assert!(responses.get("503").is_some(), "{method} {path}");
                if path.starts_with("/v1/") {
                    assert!(responses["429"]["headers"].get("Retry-After").is_some(), "{method} {path}");
                }
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let in_path = path.contains(&format!("{{{}}}", parameter["name"].as_str().unwrap()));
                    assert_eq!(parameter["in"], if in_path { "path" } else { "query" }, "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn pages_over_their_maximum_are_refused_naming_limit() {
        assert_eq!(decode_identity_page("").unwrap().limit, PAGE_LIMIT_DEFAULT);
        assert_eq!(decode_identity_page("limit=1000").unwrap().limit, 1000);
        assert_eq!(decode_search("limit=1000").unwrap().limit, 1000);
        for query in ["limit=0", "limit=1001", "limit=18446744073709551615"] {
            for problem in [decode_identity_page(query).unwrap_err(), decode_search(query).unwrap_err()] {
                assert_eq!((problem.code(), problem.to_json()["field"].clone()), (Code::InvalidField, "limit".into()));
            }
        }
        assert_eq!(decode_approval_wait("wait_s=60").unwrap(), Duration::from_secs(60));
        let wait = decode_approval_wait("wait_s=61").unwrap_err();
        assert_eq!(wait.to_json()["field"], "wait_s");
    }
}
