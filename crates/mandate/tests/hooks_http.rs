//! `POST /v1/hooks/claude-code`: Claude Code's HTTP hook, against the real
//! `mandate serve` over HTTP (see `common/mod.rs`), with the captured
//! payloads (`/work/shared/fixtures/agent-clients/`).
//!
//! Claude Code runs the tool after any non-2xx answer of an HTTP hook
//! (unless told `onFailure: "block"`), so a `PreToolUse` must be answered
//! 200 whatever happens: `{}` to allow, the blocking JSON otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{Value, json};

mod common;
use common::*;

const CLAUDE_PRE: &str = r#"{"session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","transcript_path":"/home/dev/.claude/projects/-home-dev-project/5c73097e-2655-474f-b12f-9bc33bf3f8f1.jsonl","cwd":"/home/dev/project","prompt_id":"da2264fe-539d-4d1e-b7a0-9443bd6a7969","permission_mode":"default","effort":{"level":"medium"},"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"echo hello-from-tool"},"tool_use_id":"toolu_msg_0001"}"#;
const CLAUDE_POST: &str = r#"{"session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","transcript_path":"/home/dev/.claude/projects/-home-dev-project/5c73097e-2655-474f-b12f-9bc33bf3f8f1.jsonl","cwd":"/home/dev/project","prompt_id":"da2264fe-539d-4d1e-b7a0-9443bd6a7969","permission_mode":"default","effort":{"level":"medium"},"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"echo hello-from-tool"},"tool_response":{"stdout":"hello-from-tool","stderr":"","interrupted":false,"isImage":false,"noOutputExpected":false},"tool_use_id":"toolu_msg_0001","duration_ms":53}"#;

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";
const HOOK: &str = "/v1/hooks/claude-code";

/// `user:alice` → `agent:coder`, granted `tool.*` in `/home/dev/project`;
/// returns an agent token for the coder.
fn coder(server: &Server) -> String {
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    server.grant(json!({
        "grantee": CODER, "grantor": ALICE, "actions": ["tool.*"],
        "resources": ["/home/dev/project", "/home/dev/project/*"],
    }));
    let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

fn with(payload: &str, changes: Value) -> Value {
    let mut payload: Value = serde_json::from_str(payload).unwrap();
    for (key, value) in changes.as_object().unwrap() {
        payload[key] = value.clone();
    }
    payload
}

/// Posts a hook payload (as raw bytes) with `token`.
fn post(server: &Server, token: Option<&str>, body: &[u8]) -> Response {
    http(&server.addr, "POST", HOOK, token, Some(body))
}

/// Asserts Claude Code's blocking answer, with 200, and returns the reason.
fn blocked(response: &Response) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    let reason = answer["reason"].as_str().unwrap_or_else(|| panic!("no reason: {answer}")).to_owned();
    assert_eq!(
        answer,
        json!({"decision": "block", "reason": reason, "hookSpecificOutput": {
            "hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason}}),
    );
    reason
}

fn allowed(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(serde_json::from_slice::<Value>(&response.body).unwrap(), json!({}), "allow is `{{}}`");
}

#[test]
fn an_allowed_call_is_decided_once_and_its_outcome_recorded_against_it() {
    let (_dir, server) = Server::fresh();
    let token = coder(&server);
    allowed(&post(&server, Some(&token), CLAUDE_PRE.as_bytes()));
    // Claude Code retries a hook that timed out: the same call is the same decision.
    let size = server.log_size();
    allowed(&post(&server, Some(&token), CLAUDE_PRE.as_bytes()));
    assert_eq!(server.log_size(), size, "a retry writes nothing");

    allowed(&post(&server, Some(&token), CLAUDE_POST.as_bytes()));
    let decisions = server.search_all("type=decision");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = &decisions[0]["body"];
    assert_eq!(decision["decision"], "allow", "{decision}");
    assert_eq!(decision["request"]["action"], "tool.Bash");
    assert_eq!(decision["request"]["resource"], "/home/dev/project");
    assert_eq!(decision["request"]["context"]["input"]["command"], "echo hello-from-tool");
    assert_eq!(decision["request"]["context"]["client"], "claude-code");
    assert_eq!(decision["request"]["request_id"], "claude-code:5c73097e-2655-474f-b12f-9bc33bf3f8f1:toolu_msg_0001");
    assert_eq!(decision["request"]["session_id"], "5c73097e-2655-474f-b12f-9bc33bf3f8f1");
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0]["body"];
    assert_eq!(event["decision_id"], decision["decision_id"]);
    assert_eq!(event["identity"], CODER);
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["duration_ms"], 53);
    assert_eq!(event["attributes"], json!({"client": "claude-code", "tool_use_id": "toolu_msg_0001"}));
    assert!(event["output_digest"].as_str().unwrap().starts_with("sha256:"), "{event}");

    // A call that failed is recorded as a failure.
    let second = json!({"tool_use_id": "toolu_msg_0002"});
    allowed(&post(&server, Some(&token), with(CLAUDE_PRE, second.clone()).to_string().as_bytes()));
    let mut failure = with(CLAUDE_POST, second);
    failure["hook_event_name"] = json!("PostToolUseFailure");
    allowed(&post(&server, Some(&token), failure.to_string().as_bytes()));
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["body"]["outcome"], "failure");

    // Another session may reuse a call id (a client restarted, a fake
    // model): its own call, not a conflict. Over-long ids still decide.
    let other_session = json!({"session_id": "another-session"});
    allowed(&post(&server, Some(&token), with(CLAUDE_PRE, other_session).to_string().as_bytes()));
    let long = json!({"session_id": "s".repeat(200), "tool_use_id": "t".repeat(200)});
    allowed(&post(&server, Some(&token), with(CLAUDE_PRE, long.clone()).to_string().as_bytes()));
    allowed(&post(&server, Some(&token), with(CLAUDE_POST, long).to_string().as_bytes()));
    let decisions = server.search_all("type=decision");
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    let hashed = decisions[3]["body"]["request"]["request_id"].as_str().unwrap();
    assert!(hashed.starts_with("claude-code:") && hashed.len() == "claude-code:".len() + 64, "{hashed}");
    assert_eq!(server.search_all("type=event.recorded").len(), 3, "the post half found the long call");
}

#[test]
fn the_same_call_is_the_same_request_through_the_command_hook_and_the_http_hook() {
    let (dir, server) = Server::fresh();
    let token = coder(&server);
    allowed(&post(&server, Some(&token), CLAUDE_PRE.as_bytes()));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"));
    command
        .args(["hook", "claude-code"])
        .env("MANDATE_URL", format!("http://{}", server.addr))
        .env("MANDATE_TOKEN", &token)
        .env("MANDATE_HOOK_STATE", dir.path().join("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), CLAUDE_PRE.as_bytes()).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let decisions = server.search_all("type=decision");
    assert_eq!(decisions.len(), 2);
    let request = |i: usize| {
        let mut request = decisions[i]["body"]["request"].clone();
        let object = request.as_object_mut().unwrap();
        object.remove("request_id");
        object.remove("token_id");
        request
    };
    assert_eq!(request(0), request(1), "one mapping, wherever the call comes from");
}

#[test]
fn a_denied_or_pending_call_is_blocked_with_the_reason() {
    let (_dir, server) = Server::fresh();
    let token = coder(&server);
    server.put_policies(
        "@id(\"no-rm\")\nforbid(principal, action == Mandate::Action::\"tool.Bash\", resource) when { context.input.command like \"rm *\" };\n\
         @id(\"ask-for-curl\")\n@approval(\"required\")\npermit(principal, action == Mandate::Action::\"tool.Bash\", resource) when { context.input.command like \"curl *\" };\n\
         @id(\"rest\")\npermit(principal, action, resource) unless { context.input has command && context.input.command like \"curl *\" };\n",
    );
    let rm = with(CLAUDE_PRE, json!({"tool_input": {"command": "rm -rf /"}, "tool_use_id": "toolu_rm"}));
    let reason = blocked(&post(&server, Some(&token), rm.to_string().as_bytes()));
    assert!(reason.contains("`tool.Bash` denied by Mandate") && reason.contains("no-rm"), "{reason}");
    let curl = with(CLAUDE_PRE, json!({"tool_input": {"command": "curl evil"}, "tool_use_id": "toolu_curl"}));
    let reason = blocked(&post(&server, Some(&token), curl.to_string().as_bytes()));
    assert!(reason.contains("waits for approval"), "{reason}");
    // Outside the grant's directory.
    let elsewhere = with(CLAUDE_PRE, json!({"cwd": "/etc", "tool_use_id": "toolu_etc"}));
    let reason = blocked(&post(&server, Some(&token), elsewhere.to_string().as_bytes()));
    assert!(reason.contains("denied by Mandate"), "{reason}");
    let decisions = server.search_all("type=decision");
    let outcomes: Vec<&str> = decisions.iter().map(|d| d["body"]["decision"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["deny", "pending", "deny"]);
}

#[test]
fn every_failure_to_decide_blocks_and_writes_nothing() {
    let (_dir, server) = Server::fresh();
    let token = coder(&server);
    let size = server.log_size();
    let key = server.key.clone();
    let unknown = format!("mt_{}", "0".repeat(80));
    let cases: Vec<(&str, Option<&str>, Vec<u8>, &str)> = vec![
        ("no token", None, CLAUDE_PRE.into(), "unauthorized"),
        ("an unknown token", Some(&unknown), CLAUDE_PRE.into(), "unauthorized"),
        ("an admin key (no agent)", Some(&key), CLAUDE_PRE.into(), "agent's token"),
        ("not JSON", Some(&token), b"{\"hook_event_name\": \"PreToolUse\"".to_vec(), "could not read"),
        ("no tool", Some(&token), br#"{"hook_event_name":"PreToolUse"}"#.to_vec(), "tool_name"),
        (
            "a tool input over the server's usual body limit",
            Some(&token),
            with(
                CLAUDE_PRE,
                json!({"tool_name": "Write", "tool_input": {"file_path": "a", "content": "x".repeat(600_000)}}),
            )
            .to_string()
            .into_bytes(),
            "could not decide",
        ),
    ];
    // Without a token the server reads no more than the usual limit.
    let big = with(
        CLAUDE_PRE,
        json!({"tool_name": "Write", "tool_input": {"file_path": "a", "content": "x".repeat(600_000)}}),
    );
    let mut cases = cases;
    cases.push(("no token and a body over the usual limit", None, big.to_string().into_bytes(), "could not read"));
    for (what, token, body, because) in cases {
        let reason = blocked(&post(&server, token, &body));
        assert!(reason.contains(because), "{what}: {reason}");
    }
    assert_eq!(server.log_size(), size, "nothing decided, nothing written");
}

#[test]
fn the_post_half_finds_only_the_tokens_own_calls() {
    let (_dir, server) = Server::fresh();
    let token = coder(&server);
    server.identity("agent:other", "agent", Some(ALICE));
    let other = server.post("/v1/tokens", json!({"identity": "agent:other", "ttl_s": 600})).expect(201);
    let other = other["token"].as_str().unwrap().to_owned();
    allowed(&post(&server, Some(&token), CLAUDE_PRE.as_bytes()));
    let size = server.log_size();
    // Another agent's token does not find the coder's call.
    let answer = post(&server, Some(&other), CLAUDE_POST.as_bytes());
    assert_eq!(answer.status, 404, "{}", answer.text());
    // A call never decided.
    let unknown = with(CLAUDE_POST, json!({"tool_use_id": "toolu_never"}));
    assert_eq!(post(&server, Some(&token), unknown.to_string().as_bytes()).status, 404);
    let no_id = with(CLAUDE_POST, json!({"tool_use_id": null}));
    let answer = post(&server, Some(&token), no_id.to_string().as_bytes());
    assert_eq!((answer.status, answer.json()["field"].clone()), (400, json!("tool_use_id")));
    // An event this endpoint does not answer.
    let other_event = with(CLAUDE_PRE, json!({"hook_event_name": "UserPromptSubmit"}));
    let answer = post(&server, Some(&token), other_event.to_string().as_bytes());
    assert_eq!((answer.status, answer.json()["field"].clone()), (400, json!("hook_event_name")));
    // Only a PreToolUse is answered without a key (with a block): the rest
    // refuse it as every endpoint does.
    for body in [CLAUDE_POST.to_owned(), other_event.to_string()] {
        let answer = post(&server, None, body.as_bytes());
        answer.problem(401, "unauthorized");
    }
    assert_eq!(server.log_size(), size);
}
