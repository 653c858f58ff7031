//! Tenant and role isolation, generated from the live server's
//! `/openapi.json` (issue 5): for every operation the document describes,
//! another tenant's admin key, the tenant's auditor key, an agent token, no
//! key and an unknown key are each tried against the first tenant's real
//! objects, and each must get the status the role matrix of
//! `crates/mandate-server/src/api.rs` says.
//!
//! The matrix ([`MATRIX`]) and the tables that turn an operation into a
//! concrete request (path ids, query strings, bodies, and an agent token's
//! own and foreign objects) are data, checked against the document in both
//! directions before anything is sent: an operation added to the API without
//! a row here fails this test, naming what to add.
//!
//! Beyond the statuses: no answer is a 5xx, every error is
//! `application/problem+json` with the code its status implies, no secret
//! (key or token) appears in any answer, nothing the other tenant's key
//! sees carries the first tenant's data, and no refused call changes the
//! first tenant (its log size is checked after every one, and every read of
//! it is the same before and after).
//!
//! Order: the other tenant, the auditor, the agent token's refusals and the
//! anonymous calls all run before anything of the first tenant is resolved
//! or revoked; then the agent token uses what it may on its own objects;
//! then, last, the first tenant's own admin key runs every operation (on
//! objects kept for the purpose) to prove the requests were valid for it,
//! so that the refusals above were refusals and not malformed requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value, json};

mod common;
use common::*;

// ---------------------------------------------------------------- the matrix

/// Who may call an operation (api.rs, "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No key needed (operations: health, readiness, metrics, the document).
    Public,
    /// `/v1/log/*`: admin and auditor; an agent token 403.
    Audit,
    /// Everything else: admin only; auditor and agent token 403.
    Admin,
    /// Admin, and an agent token as its own identity only: on another
    /// identity's object 404, naming another identity (or token) 403.
    Agent,
    /// Claude Code's HTTP hook: a `PreToolUse` answers 200 whoever asks,
    /// with a block to everyone but an agent token (Claude Code would run
    /// the tool after an error status); a `PostToolUse` for another
    /// identity's call is not found.
    Hook,
}

use Access::{Admin, Agent, Audit, Hook, Public};

/// One row per operation of `/openapi.json`, exactly.
const MATRIX: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
    ("GET", "/openapi.json", Public),
    ("POST", "/v1/identities", Admin),
    ("GET", "/v1/identities", Admin),
    ("GET", "/v1/identities/{id}", Admin),
    ("POST", "/v1/identities/{id}/revoke", Admin),
    ("POST", "/v1/grants", Admin),
    ("GET", "/v1/grants", Admin),
    ("GET", "/v1/grants/{id}", Admin),
    ("POST", "/v1/grants/{id}/revoke", Admin),
    ("PUT", "/v1/policies", Admin),
    ("GET", "/v1/policies", Admin),
    ("GET", "/v1/policies/versions", Admin),
    ("GET", "/v1/settings", Admin),
    ("PATCH", "/v1/settings", Admin),
    ("POST", "/v1/admin-keys", Admin),
    ("POST", "/v1/admin-keys/{id}/revoke", Admin),
    ("POST", "/v1/authorize", Agent),
    ("POST", "/v1/authorize/batch", Agent),
    ("POST", "/v1/events", Agent),
    ("POST", "/v1/imports", Agent),
    ("POST", "/v1/hooks/claude-code", Hook),
    ("POST", "/v1/budgets", Admin),
    ("GET", "/v1/budgets", Admin),
    ("GET", "/v1/budgets/{id}", Admin),
    ("PATCH", "/v1/budgets/{id}", Admin),
    ("GET", "/v1/reservations/{id}", Admin),
    ("POST", "/v1/reservations/{id}/settle", Agent),
    ("POST", "/v1/reservations/{id}/void", Agent),
    ("GET", "/v1/approvals", Admin),
    ("GET", "/v1/approvals/{id}", Agent),
    ("POST", "/v1/approvals/{id}/approve", Admin),
    ("POST", "/v1/approvals/{id}/deny", Admin),
    ("POST", "/v1/tokens", Admin),
    ("POST", "/v1/tokens/introspect", Agent),
    ("POST", "/v1/tokens/revoke", Admin),
    ("GET", "/v1/log/checkpoint", Audit),
    ("GET", "/v1/log/entries", Audit),
    ("GET", "/v1/log/proof/inclusion", Audit),
    ("GET", "/v1/log/proof/consistency", Audit),
    ("GET", "/v1/log/receipt", Audit),
    ("GET", "/v1/log/public-key", Audit),
    ("GET", "/v1/log/search", Audit),
];

/// The callers tried against tenant A's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    /// No `Authorization` header.
    NoKey,
    /// A well-formed key that is no one's.
    UnknownKey,
    /// Tenant B's admin key.
    OtherTenant,
    /// Tenant A's auditor key.
    Auditor,
    /// An agent token of A's `agent:buyer-a`, on other identities' objects
    /// (or naming another identity or token).
    AgentToken,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Caller::NoKey => "no key",
            Caller::UnknownKey => "an unknown key",
            Caller::OtherTenant => "tenant b's admin key",
            Caller::Auditor => "tenant a's auditor key",
            Caller::AgentToken => "tenant a's agent token (on another identity's objects)",
        })
    }
}

/// What tenant B's admin key gets for a write that names no A object in
/// its path, sent with the body valid for A: it is answered in B, where A's
/// identities, tokens and objects do not exist. `(method, path, status,
/// what the answer must show)`.
const OTHER_TENANT_WRITES: &[(&str, &str, u16, Seen)] = &[
    // B's own new identity (the body holds nothing of A's).
    ("POST", "/v1/identities", 201, Seen::Anything),
    // A's grantee, grantor and budget identity are unknown in B.
    ("POST", "/v1/grants", 400, Seen::Field("grantee")),
    ("POST", "/v1/budgets", 400, Seen::Field("identity")),
    // B's own policies, settings and keys.
    ("PUT", "/v1/policies", 200, Seen::Anything),
    ("PATCH", "/v1/settings", 200, Seen::Anything),
    ("POST", "/v1/admin-keys", 201, Seen::Anything),
    // A's agent asks in B: unknown there, so a (logged, B's) deny.
    ("POST", "/v1/authorize", 200, Seen::Denied),
    ("POST", "/v1/authorize/batch", 200, Seen::Denied),
    // A's decision is not found in B.
    ("POST", "/v1/events", 404, Seen::Anything),
    // A's agent is unknown in B.
    ("POST", "/v1/imports", 404, Seen::Field("identity")),
    // B's admin key is no agent's: blocked.
    ("POST", "/v1/hooks/claude-code", 200, Seen::Blocked),
    // No token for A's agent in B; A's token is not B's; A's token id is not found.
    ("POST", "/v1/tokens", 400, Seen::Field("identity")),
    ("POST", "/v1/tokens/introspect", 200, Seen::Inactive),
    ("POST", "/v1/tokens/revoke", 404, Seen::Anything),
];

/// [`Agent`] operations without a path parameter whose body names an
/// object (not an identity): another identity's object there is not found
/// (404) rather than forbidden.
const AGENT_BODY_OBJECTS: &[(&str, &str)] = &[("POST", "/v1/events"), ("POST", "/v1/hooks/claude-code")];

/// The status of an operation that succeeds, where it is not 200.
const CREATED: &[(&str, &str)] = &[
    ("POST", "/v1/identities"),
    ("POST", "/v1/grants"),
    ("POST", "/v1/admin-keys"),
    ("POST", "/v1/budgets"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/events"),
];

fn success_status(op: &Operation) -> u16 {
    if CREATED.iter().any(|(method, path)| *method == op.method && *path == op.path) { 201 } else { 200 }
}

/// What an answer of [`OTHER_TENANT_WRITES`] must show besides its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing more (the leak and no-change checks still apply).
    Anything,
    /// A problem naming this field.
    Field(&'static str),
    /// A deny (or, for a batch, every result a deny) for `identity_unknown`.
    Denied,
    /// RFC 7662's `{"active": false}` and nothing else.
    Inactive,
    /// Claude Code's blocking answer.
    Blocked,
}

/// The matrix read for one caller.
fn expected(access: Access, caller: Caller, op: &Operation) -> u16 {
    let on_object = !op.path_params.is_empty();
    match (caller, access) {
        (_, Public) => 200,
        (Caller::AgentToken, Hook) => 404,
        (_, Hook) => 200,
        (Caller::NoKey | Caller::UnknownKey, _) => 401,
        // Another tenant's objects are not found; its collections are its own.
        (Caller::OtherTenant, _) if on_object => 404,
        (Caller::OtherTenant, _) if op.method == "GET" => 200,
        (Caller::OtherTenant, _) => other_tenant_write(op).map_or(0, |(status, _)| status),
        (Caller::Auditor, Audit) => 200,
        (Caller::Auditor, _) => 403,
        // Another identity's reservation or approval: 404; another identity
        // (or token) named in the body: 403.
        (Caller::AgentToken, Agent) if on_object => 404,
        (Caller::AgentToken, Agent)
            if AGENT_BODY_OBJECTS.iter().any(|(method, path)| *method == op.method && *path == op.path) =>
        {
            404
        }
        (Caller::AgentToken, Agent) => 403,
        (Caller::AgentToken, _) => 403,
    }
}

fn other_tenant_write(op: &Operation) -> Option<(u16, Seen)> {
    OTHER_TENANT_WRITES
        .iter()
        .find(|(method, path, _, _)| *method == op.method && *path == op.path)
        .map(|(_, _, status, seen)| (*status, *seen))
}

/// Cases where the server disagrees with the matrix, skipped and reported:
/// `(method, path, caller, why)`. Empty: the server agrees everywhere.
const KNOWN_BUGS: &[(&str, &str, Caller, &str)] = &[];

// ---------------------------------------------------------------- tenant A

const HUMAN: &str = "user:alice-a";
/// The agent the token acts as.
const AGENT: &str = "agent:buyer-a";
/// Another agent of A: its reservations and approvals are not the token's.
const OTHER: &str = "agent:other-a";
/// Revoked by A's own key, last.
const SPARE: &str = "agent:spare-a";
/// Set on A's identities and policies: seen by tenant B, it would be a leak.
const A_MARK: &str = "only-in-tenant-a";

const A_POLICIES: &str = r#"
@id("only-in-tenant-a-needs-a-human")
@approval("required")
permit(principal, action, resource) when { context.amounts.usd_cents >= 1000 };

@id("only-in-tenant-a-small-goes")
permit(principal, action, resource) when { context.amounts.usd_cents < 1000 };
"#;

/// A's objects, so that every path parameter names a real one.
struct TenantA {
    auditor: String,
    auditor_id: String,
    /// The token of `AGENT`.
    token: String,
    token_id: String,
    /// A token of `OTHER`, which `token` may not introspect.
    other_token: String,
    /// Revoked by A's own key, last.
    spare_token: String,
    spare_token_id: String,
    /// An admin key revoked by A's own key, last.
    spare_key: String,
    spare_key_id: String,
    grant: String,
    spare_grant: String,
    budget: String,
    /// `OTHER`'s held reservations: one to settle, one to void.
    settle_reservation: String,
    void_reservation: String,
    /// `OTHER`'s pending approvals: one to approve, one to deny.
    approval: String,
    deny_approval: String,
    /// `AGENT`'s own, for the token.
    own_settle_reservation: String,
    own_void_reservation: String,
    own_approval: String,
    /// A decision of `OTHER`, and one of `AGENT` (for events).
    other_decision: String,
    own_decision: String,
    decision_ids: Vec<String>,
}

fn str_of(value: &Value, pointer: &str) -> String {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no {pointer} in {value}")).to_owned()
}

fn build_tenant_a(server: &Server) -> TenantA {
    let attributes = json!({ "mark": A_MARK });
    let identity = |id: &str, kind: &str, parent: Option<&str>| {
        server
            .post("/v1/identities", json!({"id": id, "kind": kind, "parent": parent, "attributes": attributes}))
            .expect(201);
    };
    identity(HUMAN, "human", None);
    identity(AGENT, "agent", Some(HUMAN));
    identity(OTHER, "agent", Some(HUMAN));
    identity(SPARE, "agent", Some(HUMAN));
    let grant = |grantee: &str, actions: Value| {
        let body = json!({"grantee": grantee, "grantor": HUMAN, "actions": actions, "resources": ["*"]});
        str_of(&server.grant(body), "/id")
    };
    let grant_id = grant(AGENT, json!(["payments.*"]));
    grant(OTHER, json!(["payments.*"]));
    let spare_grant = grant(OTHER, json!(["github.*"]));
    let budget = json!({"identity": HUMAN, "dimension": "usd_cents", "period": "total", "limit": 1_000_000});
    let budget = str_of(&server.post("/v1/budgets", budget).expect(201), "/id");
    server.put_policies(A_POLICIES);

    let key = |role: &str| {
        let issued = server.post("/v1/admin-keys", json!({ "role": role })).expect(201);
        (str_of(&issued, "/key"), str_of(&issued, "/id"))
    };
    let (auditor, auditor_id) = key("auditor");
    let (spare_key, spare_key_id) = key("admin");
    let token = |identity: &str| {
        let issued = server.post("/v1/tokens", json!({"identity": identity, "ttl_s": 3_600})).expect(201);
        (str_of(&issued, "/token"), str_of(&issued, "/id"))
    };
    let (agent_token, token_id) = token(AGENT);
    let (other_token, _) = token(OTHER);
    let (spare_token, spare_token_id) = token(OTHER);

    let mut decision_ids = Vec::new();
    let mut decide = |caller: &str, body: Value, outcome: &str| {
        let answer = server.post_as(caller, "/v1/authorize", body).expect(200);
        assert_eq!(answer["decision"], outcome, "{answer}");
        decision_ids.push(str_of(&answer, "/decision_id"));
        answer
    };
    let key_a = server.key.clone();
    let held = |answer: Value| str_of(&answer, "/reservation/id");
    let waiting = |answer: Value| str_of(&answer, "/approval/id");
    let settle_reservation = held(decide(&key_a, charge(OTHER, "merchant://books", 10), "allow"));
    let void_reservation = held(decide(&key_a, charge(OTHER, "merchant://books", 10), "allow"));
    let approval = waiting(decide(&key_a, charge(OTHER, "merchant://books", 5_000), "pending"));
    let deny_approval = waiting(decide(&key_a, charge(OTHER, "merchant://books", 5_000), "pending"));
    let mine = |cents: u64| json!({"action": "payments.charge", "resource": "merchant://books", "amounts": {"usd_cents": cents}});
    let own_settle_reservation = held(decide(&agent_token, mine(10), "allow"));
    let own_void_reservation = held(decide(&agent_token, mine(10), "allow"));
    let own_approval = waiting(decide(&agent_token, mine(5_000), "pending"));
    let other_decision = str_of(&decide(&key_a, charge(OTHER, "merchant://books", 10), "allow"), "/decision_id");
    // As the hook endpoint decides a call: its post half is `OTHER`'s only.
    let mut other_call = charge(OTHER, "merchant://books", 10);
    other_call["request_id"] = json!(format!("claude-code:s-1:{OTHER_CALL}"));
    decide(&key_a, other_call, "allow");
    let own_decision = str_of(&decide(&agent_token, mine(10), "allow"), "/decision_id");

    TenantA {
        auditor,
        auditor_id,
        token: agent_token,
        token_id,
        other_token,
        spare_token,
        spare_token_id,
        spare_key,
        spare_key_id,
        grant: grant_id,
        spare_grant,
        budget,
        settle_reservation,
        void_reservation,
        approval,
        deny_approval,
        own_settle_reservation,
        own_void_reservation,
        own_approval,
        other_decision,
        own_decision,
        decision_ids,
    }
}

// ---------------------------------------------------------------- requests

/// Path templates with a parameter → the A object each names, for every
/// caller (the agent token's are another identity's).
fn object_ids(a: &TenantA) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("/v1/identities/{id}", AGENT.to_owned()),
        ("/v1/identities/{id}/revoke", SPARE.to_owned()),
        ("/v1/grants/{id}", a.grant.clone()),
        ("/v1/grants/{id}/revoke", a.spare_grant.clone()),
        ("/v1/budgets/{id}", a.budget.clone()),
        ("/v1/reservations/{id}", a.void_reservation.clone()),
        ("/v1/reservations/{id}/settle", a.settle_reservation.clone()),
        ("/v1/reservations/{id}/void", a.void_reservation.clone()),
        ("/v1/approvals/{id}", a.approval.clone()),
        ("/v1/approvals/{id}/approve", a.approval.clone()),
        ("/v1/approvals/{id}/deny", a.deny_approval.clone()),
        ("/v1/admin-keys/{id}/revoke", a.spare_key_id.clone()),
    ])
}

/// For the [`Agent`] operations on an object: the agent token's own object.
fn own_object_ids(a: &TenantA) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("/v1/reservations/{id}/settle", a.own_settle_reservation.clone()),
        ("/v1/reservations/{id}/void", a.own_void_reservation.clone()),
        ("/v1/approvals/{id}", a.own_approval.clone()),
    ])
}

/// The query string of every operation that declares parameters other than
/// its path's (the required ones filled so that they are valid in both
/// tenants: B's log has its first 3 entries).
const QUERIES: &[(&str, &str, &str)] = &[
    ("GET", "/v1/identities", "limit=1000"),
    ("GET", "/v1/grants", "grantee=agent:buyer-a"),
    ("GET", "/v1/budgets", ""),
    ("GET", "/v1/approvals", "status=pending"),
    ("GET", "/v1/approvals/{id}", "wait_s=0"),
    ("GET", "/v1/log/entries", "start=0&end=3"),
    ("GET", "/v1/log/proof/inclusion", "index=1&size=3"),
    ("GET", "/v1/log/proof/consistency", "from=1&to=3"),
    ("GET", "/v1/log/receipt", "index=0"),
    ("GET", "/v1/log/search", "limit=1000"),
];

/// A body valid for A's admin key for every POST, PUT and PATCH (`None`:
/// the operation takes none). The decisions name the agent token's own
/// identity, so that they are valid for the token too. None of them holds
/// [`A_MARK`]: what tenant B creates with them is B's.
fn bodies(a: &TenantA) -> BTreeMap<(&'static str, &'static str), Option<Value>> {
    let decide = json!({"identity": AGENT, "action": "payments.charge", "resource": "merchant://books",
        "amounts": {"usd_cents": 10}});
    BTreeMap::from([
        (("POST", "/v1/identities"), Some(json!({"id": "user:created-by-the-matrix", "kind": "human"}))),
        (("POST", "/v1/identities/{id}/revoke"), None),
        (
            ("POST", "/v1/grants"),
            Some(json!({"grantee": AGENT, "grantor": HUMAN, "actions": ["github.*"], "resources": ["repo://a/*"]})),
        ),
        (("POST", "/v1/grants/{id}/revoke"), None),
        (("PUT", "/v1/policies"), Some(json!({"policies": "@id(\"matrix\")\npermit(principal, action, resource);\n"}))),
        (("PATCH", "/v1/settings"), Some(json!({"record_inputs": "digest"}))),
        (("POST", "/v1/admin-keys"), Some(json!({"role": "auditor"}))),
        (("POST", "/v1/admin-keys/{id}/revoke"), None),
        (("POST", "/v1/authorize"), Some(decide.clone())),
        (("POST", "/v1/authorize/batch"), Some(json!({ "requests": [decide] }))),
        (
            ("POST", "/v1/events"),
            Some(json!({"decision_id": a.own_decision, "outcome": "success", "duration_ms": 12,
                "output_digest": "sha256:00", "attributes": {"tool": "charge"}})),
        ),
        (
            ("POST", "/v1/budgets"),
            Some(json!({"identity": AGENT, "dimension": "tokens", "period": "day", "limit": 1_000})),
        ),
        (("POST", "/v1/imports"), Some(import(AGENT))),
        (("POST", "/v1/hooks/claude-code"), Some(hook_payload("PreToolUse", "toolu_own"))),
        (("PATCH", "/v1/budgets/{id}"), Some(json!({"limit": 2_000_000}))),
        (("POST", "/v1/reservations/{id}/settle"), Some(json!({"amounts": {"usd_cents": 5}}))),
        (("POST", "/v1/reservations/{id}/void"), None),
        (("POST", "/v1/approvals/{id}/approve"), Some(json!({}))),
        (("POST", "/v1/approvals/{id}/deny"), Some(json!({}))),
        (("POST", "/v1/tokens"), Some(json!({"identity": AGENT, "ttl_s": 60}))),
        (("POST", "/v1/tokens/introspect"), Some(json!({ "token": a.token }))),
        (("POST", "/v1/tokens/revoke"), Some(json!({ "id": a.spare_token_id }))),
    ])
}

/// For the [`Agent`] operations without an object: a body naming another
/// identity (or another identity's token), which the agent token may not
/// send.
fn foreign_bodies(a: &TenantA) -> BTreeMap<(&'static str, &'static str), Value> {
    let decide = json!({"identity": OTHER, "action": "payments.charge", "resource": "merchant://books",
        "amounts": {"usd_cents": 10}});
    BTreeMap::from([
        (("POST", "/v1/authorize"), decide.clone()),
        (("POST", "/v1/authorize/batch"), json!({ "requests": [decide] })),
        (("POST", "/v1/events"), json!({"decision_id": a.other_decision, "outcome": "success"})),
        (("POST", "/v1/imports"), import(OTHER)),
        // `OTHER` made this call: the token's identity did not.
        (("POST", "/v1/hooks/claude-code"), hook_payload("PostToolUse", OTHER_CALL)),
        (("POST", "/v1/tokens/introspect"), json!({ "token": a.other_token })),
    ])
}

/// The `tool_use_id` of a call `OTHER` was decided on through the hook's
/// request id.
const OTHER_CALL: &str = "toolu_other";

/// One imported tool call of `identity`.
fn import(identity: &str) -> Value {
    json!({"identity": identity, "source": "claude-code", "transcript_sha256": "ab".repeat(32), "part": 0,
        "calls": [{"tool": "Bash", "action": "tool.Bash", "input_digest": "sha256:00", "outcome": "success"}]})
}

/// A Claude Code hook payload for a `Bash` call.
fn hook_payload(event: &str, tool_use_id: &str) -> Value {
    json!({"hook_event_name": event, "session_id": "s-1", "cwd": "/work", "tool_name": "Bash",
        "tool_input": {"command": "ls"}, "tool_use_id": tool_use_id, "tool_response": {"stdout": ""}})
}

/// One operation of the document.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    /// The template, e.g. `/v1/grants/{id}`.
    path: String,
    /// The template's `{…}` parameters.
    path_params: Vec<String>,
    /// The other declared parameters: `(name, required in the query)`.
    query_params: Vec<(String, bool)>,
    has_body: bool,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn operations(document: &Value) -> Vec<Operation> {
    let paths = document["paths"].as_object().expect("/openapi.json has `paths`");
    let mut found = Vec::new();
    for (path, item) in paths {
        let path_params: Vec<String> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                continue;
            }
            let query_params = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|parameter| {
                    let name = parameter["name"].as_str()?.to_owned();
                    // The document may call a query parameter `in: path`:
                    // what the template does not hold goes in the query.
                    (!path_params.contains(&name)).then(|| {
                        let required = parameter["in"] == "query" && parameter["required"] == true;
                        (name, required)
                    })
                })
                .collect();
            found.push(Operation {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                path_params: path_params.clone(),
                query_params,
                has_body: operation.get("requestBody").is_some(),
            });
        }
    }
    found
}

/// A concrete request.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: Option<Value>,
}

impl Request {
    /// The path and body as text, to tell what the caller itself sent.
    fn text(&self) -> String {
        format!("{} {}", self.path, self.body.as_ref().map(Value::to_string).unwrap_or_default())
    }
}

/// Everything needed to turn an operation into requests.
struct Tables {
    access: BTreeMap<(String, String), Access>,
    ids: BTreeMap<&'static str, String>,
    own_ids: BTreeMap<&'static str, String>,
    queries: BTreeMap<(String, String), String>,
    bodies: BTreeMap<(&'static str, &'static str), Option<Value>>,
    foreign: BTreeMap<(&'static str, &'static str), Value>,
}

impl Tables {
    fn new(a: &TenantA) -> Tables {
        Tables {
            access: MATRIX.iter().map(|(m, p, access)| (((*m).to_owned(), (*p).to_owned()), *access)).collect(),
            ids: object_ids(a),
            own_ids: own_object_ids(a),
            queries: QUERIES.iter().map(|(m, p, q)| (((*m).to_owned(), (*p).to_owned()), (*q).to_owned())).collect(),
            bodies: bodies(a),
            foreign: foreign_bodies(a),
        }
    }

    fn access(&self, op: &Operation) -> Access {
        self.access[&(op.method.clone(), op.path.clone())]
    }

    /// Everything an operation of the document lacks here, and every row
    /// here that the document lacks.
    fn missing(&self, ops: &[Operation]) -> Vec<String> {
        let mut missing = Vec::new();
        let in_document: BTreeSet<(String, String)> =
            ops.iter().map(|op| (op.method.clone(), op.path.clone())).collect();
        let in_matrix: BTreeSet<(String, String)> = self.access.keys().cloned().collect();
        assert_eq!(in_matrix.len(), MATRIX.len(), "MATRIX has a duplicate row");
        for (method, path) in in_document.difference(&in_matrix) {
            missing.push(format!(
                "`{method} {path}` is in /openapi.json but not in MATRIX: add its row of the role matrix"
            ));
        }
        for (method, path) in in_matrix.difference(&in_document) {
            missing.push(format!("MATRIX row `{method} {path}` is not an operation of /openapi.json: remove it"));
        }
        for op in ops {
            let name = op.name();
            if op.path_params.len() > 1 {
                missing.push(format!("`{name}` has several path parameters: teach `Tables::request` to fill them"));
            }
            if !op.path_params.is_empty() && !self.ids.contains_key(op.path.as_str()) {
                missing.push(format!(
                    "`{name}`: add to `object_ids` the A object that fills `{{{}}}`",
                    op.path_params.join("}, {")
                ));
            }
            let key = (op.method.clone(), op.path.clone());
            match self.queries.get(&key) {
                None if !op.query_params.is_empty() => missing.push(format!(
                    "`{name}` takes query parameters {:?}: add its query string to QUERIES",
                    op.query_params.iter().map(|(name, _)| name).collect::<Vec<_>>()
                )),
                Some(query) => {
                    for (param, required) in &op.query_params {
                        let given = query.split('&').any(|pair| pair.split('=').next() == Some(param.as_str()));
                        if *required && !given {
                            missing.push(format!("`{name}` requires `{param}`: add it to its QUERIES entry"));
                        }
                    }
                }
                None => {}
            }
            if matches!(op.method.as_str(), "POST" | "PUT" | "PATCH") {
                match self.bodies.get(&(op.method.as_str(), op.path.as_str())) {
                    None => missing.push(format!("add a body for `{name}` to `bodies` (or `None` if it takes none)")),
                    Some(None) if op.has_body => {
                        missing.push(format!("`{name}` takes a request body: give it one in `bodies`"));
                    }
                    Some(_) => {}
                }
            }
            let b_writes = op.method != "GET" && op.path_params.is_empty();
            if b_writes
                && self.access.get(&key).is_some_and(|access| *access != Public)
                && other_tenant_write(op).is_none()
            {
                missing.push(format!("`{name}`: add what tenant b's admin key gets for it to OTHER_TENANT_WRITES"));
            }
            if self.access.get(&key) == Some(&Agent) {
                let covered = if op.path_params.is_empty() {
                    self.foreign.contains_key(&(op.method.as_str(), op.path.as_str()))
                } else {
                    self.own_ids.contains_key(op.path.as_str())
                };
                if !covered {
                    missing.push(format!(
                        "`{name}` is open to agent tokens: add {}",
                        if op.path_params.is_empty() {
                            "a body naming another identity to `foreign_bodies`"
                        } else {
                            "the token's own object to `own_object_ids`"
                        }
                    ));
                }
            }
        }
        for (method, path, _, _) in OTHER_TENANT_WRITES {
            if !in_document.contains(&((*method).to_owned(), (*path).to_owned())) {
                missing.push(format!("OTHER_TENANT_WRITES has `{method} {path}`, which /openapi.json does not"));
            }
        }
        for (method, path) in self.bodies.keys() {
            if !in_document.contains(&((*method).to_owned(), (*path).to_owned())) {
                missing.push(format!("`bodies` has `{method} {path}`, which /openapi.json does not"));
            }
        }
        missing
    }

    /// The request for `op`, on the object `id` (for a path with a
    /// parameter), with `body` (else the table's).
    fn request(&self, op: &Operation, id: Option<&str>, body: Option<Value>) -> Request {
        let mut path = op.path.clone();
        if let Some(param) = op.path_params.first() {
            let id = id.map(str::to_owned).unwrap_or_else(|| self.ids[op.path.as_str()].clone());
            path = path.replace(&format!("{{{param}}}"), &id);
        }
        if let Some(query) = self.queries.get(&(op.method.clone(), op.path.clone())).filter(|q| !q.is_empty()) {
            path = format!("{path}?{query}");
        }
        let body = body.or_else(|| self.bodies.get(&(op.method.as_str(), op.path.as_str())).cloned().flatten());
        Request { method: op.method.clone(), path, body }
    }
}

// ---------------------------------------------------------------- checks

/// What every answer must satisfy, and what it must not leak.
struct Checker<'a> {
    server: &'a Server,
    /// Keys and tokens: in no answer, ever.
    secrets: Vec<String>,
    /// A's data: in nothing tenant B (or no one) is answered, unless the
    /// caller sent it itself.
    a_markers: Vec<String>,
    failures: Vec<String>,
    skipped: Vec<String>,
}

impl Checker<'_> {
    fn fail(&mut self, op: &Operation, who: &str, request: &Request, message: String) {
        self.failures.push(format!("{} as {who} ({} {}): {message}", op.name(), request.method, request.path));
    }

    /// Sends `request` with `token` and checks what holds for every answer.
    fn send(&mut self, op: &Operation, who: &str, request: &Request, token: Option<&str>) -> Response {
        let response = self.server.call(&request.method, &request.path, token, request.body.as_ref());
        let text = response.text();
        if response.status >= 500 {
            self.fail(op, who, request, format!("a {}: {text}", response.status));
        }
        if response.status >= 400 {
            if response.content_type() != "application/problem+json" {
                let message =
                    format!("error {} as `{}`, not problem+json: {text}", response.status, response.content_type());
                self.fail(op, who, request, message);
            } else {
                let problem: Value = serde_json::from_slice(&response.body).unwrap_or_default();
                let code = match response.status {
                    401 => Some("unauthorized"),
                    403 => Some("forbidden"),
                    404 => Some("not_found"),
                    _ => None,
                };
                let code_ok = problem["code"].as_str().is_some_and(|c| code.is_none_or(|code| c == code));
                let type_ok =
                    problem["type"].as_str() == problem["code"].as_str().map(|c| format!("/problems/{c}")).as_deref();
                if problem["status"] != response.status || !code_ok || !type_ok {
                    self.fail(op, who, request, format!("a malformed problem for {}: {text}", response.status));
                }
            }
        }
        let held: Vec<String> = self
            .secrets
            .iter()
            .filter(|secret| text.contains(secret.as_str()))
            .map(|s| format!("{}…", &s[..12]))
            .collect();
        if !held.is_empty() {
            self.fail(op, who, request, format!("the answer holds secrets {held:?}: {text}"));
        }
        response
    }

    /// Fails when the answer holds any of A's data the caller did not send.
    fn no_a_data(&mut self, op: &Operation, who: &str, request: &Request, response: &Response) {
        let text = response.text();
        let sent = request.text();
        let leaked: Vec<&String> = self
            .a_markers
            .iter()
            .filter(|marker| text.contains(marker.as_str()) && !sent.contains(marker.as_str()))
            .collect();
        if !leaked.is_empty() {
            let message = format!("the answer holds tenant a's data {leaked:?}: {text}");
            self.fail(op, who, request, message);
        }
    }

    fn known_bug(&mut self, op: &Operation, caller: Caller) -> bool {
        let bug = KNOWN_BUGS.iter().find(|(m, p, c, _)| *m == op.method && *p == op.path && *c == caller);
        if let Some((_, _, _, why)) = bug {
            self.skipped.push(format!("{} as {caller}: {why}", op.name()));
        }
        bug.is_some()
    }

    fn compare(&mut self, op: &Operation, who: &str, request: &Request, response: &Response, expect: u16) {
        if response.status != expect {
            let message = format!("expected {expect}, got {}: {}", response.status, response.text());
            self.fail(op, who, request, message);
        }
    }

    /// Checks what tenant B's write shows besides its status.
    fn seen(&mut self, op: &Operation, who: &str, request: &Request, response: &Response, seen: Seen) {
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let denied =
            |answer: &Value| answer["decision"] == "deny" && answer["reasons"][0]["code"] == "identity_unknown";
        let ok = match seen {
            Seen::Anything => true,
            Seen::Field(field) => answer["field"] == field,
            Seen::Denied => match answer["results"].as_array() {
                Some(results) => !results.is_empty() && results.iter().all(denied),
                None => denied(&answer),
            },
            Seen::Inactive => answer == json!({"active": false}),
            Seen::Blocked => blocked(&answer),
        };
        if !ok {
            self.fail(op, who, request, format!("expected an answer showing {seen:?}: {answer}"));
        }
    }

    /// A hook answer that blocks must be Claude Code's blocking JSON.
    fn blocked(&mut self, op: &Operation, who: &str, request: &Request, response: &Response) {
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        if !blocked(&answer) {
            self.fail(op, who, request, format!("expected Claude Code's blocking answer: {answer}"));
        }
    }

    /// A's log size, by A's admin key.
    fn a_size(&self) -> u64 {
        self.server.log_size()
    }

    /// Every read of A, by A's admin key.
    fn a_snapshot(&mut self, ops: &[Operation], tables: &Tables) -> BTreeMap<String, (u16, String)> {
        let key = self.server.key.clone();
        ops.iter()
            .filter(|op| op.method == "GET" && tables.access(op) != Public)
            .map(|op| {
                let request = tables.request(op, None, None);
                let response = self.send(op, "tenant a's admin key", &request, Some(&key));
                if response.status != 200 {
                    self.fail(op, "tenant a's admin key", &request, format!("expected 200, got {}", response.status));
                }
                (op.name(), (response.status, response.text()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------- the test

fn blocked(answer: &Value) -> bool {
    answer["decision"] == "block"
        && answer["hookSpecificOutput"]["permissionDecision"] == "deny"
        && answer["reason"].as_str().is_some_and(|reason| !reason.is_empty())
}

#[test]
fn every_operation_of_the_openapi_document_keeps_to_the_role_matrix() {
    let (_dir, server) = Server::fresh();
    let a = build_tenant_a(&server);
    let b_key = server.create_tenant("b");
    // B has data of its own, so that its lists are not empty by default.
    server.post_as(&b_key, "/v1/identities", json!({"id": "user:bob-b", "kind": "human"})).expect(201);

    let document = http(&server.addr, "GET", "/openapi.json", None, None).expect(200);
    let ops = operations(&document);
    let tables = Tables::new(&a);
    let missing = tables.missing(&ops);
    assert!(missing.is_empty(), "the isolation tables do not cover /openapi.json:\n  {}", missing.join("\n  "));

    // What would betray A: its origin (checkpoints, keys), its entries, its
    // marked identities and policies, and the ids the server made for it.
    let a_checkpoint = server.checkpoint();
    let origin = a_checkpoint.lines().next().unwrap().to_owned();
    assert!(origin.ends_with("/default"), "{origin}");
    let a_public_key = server.get("/v1/log/public-key").expect_text(200).trim().to_owned();
    let mut a_markers = vec![
        A_MARK.to_owned(),
        origin,
        a_public_key,
        r#""tenant":"default""#.to_owned(),
        a.token_id.clone(),
        a.spare_token_id.clone(),
        a.auditor_id.clone(),
        a.spare_key_id.clone(),
        a.grant.clone(),
        a.spare_grant.clone(),
        a.budget.clone(),
        a.settle_reservation.clone(),
        a.void_reservation.clone(),
        a.approval.clone(),
        a.deny_approval.clone(),
        a.own_settle_reservation.clone(),
        a.own_void_reservation.clone(),
        a.own_approval.clone(),
    ];
    a_markers.extend(a.decision_ids.iter().cloned());
    let unknown_key = format!("mk_{}", "0".repeat(80));
    let secrets = vec![
        server.key.clone(),
        b_key.clone(),
        a.auditor.clone(),
        a.token.clone(),
        a.other_token.clone(),
        a.spare_token.clone(),
        a.spare_key.clone(),
    ];
    let mut check = Checker { server: &server, secrets, a_markers, failures: Vec::new(), skipped: Vec::new() };

    let snapshot = check.a_snapshot(&ops, &tables);
    let size = check.a_size();

    // 1. Everyone refused or kept out, before anything of A is resolved or
    // revoked. No call here may change A.
    for caller in [Caller::NoKey, Caller::UnknownKey, Caller::OtherTenant, Caller::Auditor, Caller::AgentToken] {
        let token = match caller {
            Caller::NoKey => None,
            Caller::UnknownKey => Some(unknown_key.as_str()),
            Caller::OtherTenant => Some(b_key.as_str()),
            Caller::Auditor => Some(a.auditor.as_str()),
            Caller::AgentToken => Some(a.token.as_str()),
        };
        for op in &ops {
            if check.known_bug(op, caller) {
                continue;
            }
            let access = tables.access(op);
            let on_object = !op.path_params.is_empty();
            let expect = expected(access, caller, op);
            let request = match (caller, access, on_object) {
                (Caller::AgentToken, Agent | Hook, false) => {
                    tables.request(op, None, Some(tables.foreign[&(op.method.as_str(), op.path.as_str())].clone()))
                }
                _ => tables.request(op, None, None),
            };
            let who = caller.to_string();
            let response = check.send(op, &who, &request, token);
            check.compare(op, &who, &request, &response, expect);
            if access != Public && matches!(caller, Caller::OtherTenant | Caller::NoKey | Caller::UnknownKey) {
                check.no_a_data(op, &who, &request, &response);
            }
            if caller == Caller::OtherTenant
                && let Some((_, seen)) = other_tenant_write(op)
            {
                check.seen(op, &who, &request, &response, seen);
            }
            if access == Hook && caller != Caller::AgentToken {
                check.blocked(op, &who, &request, &response);
            }
            // The auditor's reads are A's own; everything else here must
            // leave A's log as it was.
            let after = check.a_size();
            if after != size {
                check.fail(op, &who, &request, format!("tenant a's log grew from {size} to {after}"));
                panic!("tenant a changed, so later checks mean nothing:\n  {}", check.failures.join("\n  "));
            }
        }
    }
    let again = check.a_snapshot(&ops, &tables);
    for (name, before) in &snapshot {
        if again.get(name) != Some(before) {
            check.failures.push(format!("{name}: tenant a's read changed: {before:?} → {:?}", again.get(name)));
        }
    }

    // 2. The agent token on its own objects, as itself: allowed.
    for op in ops.iter().filter(|op| matches!(tables.access(op), Agent | Hook)) {
        let own = tables.own_ids.get(op.path.as_str()).map(String::as_str);
        let request = tables.request(op, own, None);
        let who = "tenant a's agent token (as itself)";
        let response = check.send(op, who, &request, Some(&a.token));
        check.compare(op, who, &request, &response, success_status(op));
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let about_itself = match op.path.as_str() {
            "/v1/authorize" => answer["chain"][0] == AGENT,
            "/v1/authorize/batch" => answer["results"][0]["chain"][0] == AGENT,
            "/v1/tokens/introspect" => answer["active"] == true && answer["sub"] == AGENT,
            "/v1/events" => answer["identity"] == AGENT && answer["decision_id"] == a.own_decision.as_str(),
            "/v1/imports" => answer["calls"] == 1 && answer["replayed"] == false,
            // Decided, as itself: the agent has no grant for `tool.Bash`.
            "/v1/hooks/claude-code" => {
                blocked(&answer) && answer["reason"].as_str().is_some_and(|r| r.contains("denied by Mandate"))
            }
            _ => answer["id"] == own.unwrap_or_default(),
        };
        if !about_itself {
            check.fail(op, who, &request, format!("the answer is not about itself: {answer}"));
        }
    }

    // 3. Last, A's own admin key runs every operation (on objects kept for
    // it), which shows the requests above were valid ones: a refusal was a
    // refusal, not a malformed request or a missing object.
    for op in &ops {
        let request = tables.request(op, None, None);
        let who = "tenant a's admin key";
        let response = check.send(op, who, &request, Some(&server.key));
        if !(200..300).contains(&response.status) {
            let message = format!("expected 2xx, got {}: {}", response.status, response.text());
            check.fail(op, who, &request, message);
        }
    }

    if !check.skipped.is_empty() {
        eprintln!("skipped as known bugs:\n  {}", check.skipped.join("\n  "));
    }
    assert!(check.failures.is_empty(), "{} failures:\n  {}", check.failures.len(), check.failures.join("\n  "));
}
