//! `mandate hook claude-code|codex|gemini` and `mandate hook install`,
//! driven as the clients drive them: the real binary, a captured payload on
//! stdin, and the real `mandate serve` behind it (see `common/mod.rs`).
//!
//! Each client's answer is checked in the exact form it honours (the
//! fixtures' README, `/work/shared/fixtures/agent-clients/`): allow is exit
//! 0 with empty stdout; a deny is exit 0 with the blocking JSON; every
//! failure (no token, an unreachable server, bad stdin, the deadline) is
//! exit 2 with the reason on stderr, since exit 1 would let the tool run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

// ---------------------------------------------------------------- fixtures

// The payloads, byte for byte as captured in
// /work/shared/fixtures/agent-clients/ (copied here so that the tests need
// nothing outside the repository).

const CLAUDE_PRE: &str = r#"{"session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","transcript_path":"/home/dev/.claude/projects/-home-dev-project/5c73097e-2655-474f-b12f-9bc33bf3f8f1.jsonl","cwd":"/home/dev/project","prompt_id":"da2264fe-539d-4d1e-b7a0-9443bd6a7969","permission_mode":"default","effort":{"level":"medium"},"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"echo hello-from-tool"},"tool_use_id":"toolu_msg_0001"}"#;
const CLAUDE_POST: &str = r#"{"session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","transcript_path":"/home/dev/.claude/projects/-home-dev-project/5c73097e-2655-474f-b12f-9bc33bf3f8f1.jsonl","cwd":"/home/dev/project","prompt_id":"da2264fe-539d-4d1e-b7a0-9443bd6a7969","permission_mode":"default","effort":{"level":"medium"},"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"echo hello-from-tool"},"tool_response":{"stdout":"hello-from-tool","stderr":"","interrupted":false,"isImage":false,"noOutputExpected":false},"tool_use_id":"toolu_msg_0001","duration_ms":53}"#;
const CODEX_PRE: &str = r#"{"session_id":"01a200f6-3503-7820-adad-79173b17e8c4","turn_id":"01a200f6-353f-74c2-8255-6dcb47cdf021","transcript_path":"/home/dev/.codex/sessions/2026/11/22/rollout-2026-11-22T01-54-25-01a200f6-3503-7820-adad-79173b17e8c4.jsonl","cwd":"/home/dev/project","hook_event_name":"PreToolUse","model":"gpt-fake","permission_mode":"bypassPermissions","tool_name":"Bash","tool_input":{"command":"echo hello-from-codex"},"tool_use_id":"call_resp_1"}"#;
const CODEX_POST: &str = r#"{"session_id":"01a200f6-3503-7820-adad-79173b17e8c4","turn_id":"01a200f6-353f-74c2-8255-6dcb47cdf021","transcript_path":"/home/dev/.codex/sessions/2026/11/22/rollout-2026-11-22T01-54-25-01a200f6-3503-7820-adad-79173b17e8c4.jsonl","cwd":"/home/dev/project","hook_event_name":"PostToolUse","model":"gpt-fake","permission_mode":"bypassPermissions","tool_name":"Bash","tool_input":{"command":"echo hello-from-codex"},"tool_response":"hello-from-codex\n","tool_use_id":"call_resp_1"}"#;
const GEMINI_PRE: &str = r#"{"session_id":"733bc34b-464a-409a-8131-e57ede9d4d13","transcript_path":"/home/dev/.gemini/tmp/project/chats/session-2026-11-22T01-55.json","cwd":"/home/dev/project","hook_event_name":"BeforeTool","timestamp":"2026-11-22T01:56:45.665Z","tool_name":"run_shell_command","tool_input":{"command":"echo hello-from-gemini","description":"echo"}}"#;
const GEMINI_POST: &str = r#"{"session_id":"733bc34b-464a-409a-8131-e57ede9d4d13","transcript_path":"/home/dev/.gemini/tmp/project/chats/session-2026-11-22T01-55.json","cwd":"/home/dev/project","hook_event_name":"AfterTool","timestamp":"2026-11-22T01:56:45.787Z","tool_name":"run_shell_command","tool_input":{"command":"echo hello-from-gemini","description":"echo"},"tool_response":{"llmContent":"<untrusted_context>\nOutput: hello-from-gemini\nProcess Group PGID: 6835\n</untrusted_context>","returnDisplay":"hello-from-gemini"}}"#;

/// Where the captured fixtures live, when this machine has them.
const FIXTURES: &str = "/work/shared/fixtures/agent-clients";

#[test]
fn the_payloads_here_are_the_captured_fixtures() {
    let files = [
        ("claude-pretooluse.json", CLAUDE_PRE),
        ("claude-posttooluse.json", CLAUDE_POST),
        ("codex-pretooluse.json", CODEX_PRE),
        ("codex-posttooluse.json", CODEX_POST),
        ("gemini-beforetool.json", GEMINI_PRE),
        ("gemini-aftertool.json", GEMINI_POST),
    ];
    if !Path::new(FIXTURES).is_dir() {
        eprintln!("{FIXTURES} is not here: comparing nothing");
        return;
    }
    for (file, copy) in files {
        let captured = std::fs::read_to_string(Path::new(FIXTURES).join(file)).unwrap();
        assert_eq!(captured.trim_end(), copy, "{file}");
    }
}

/// Claude Code's PreToolUse for the MCP tool of
/// `claude-stream-json-mcp-tool.jsonl` (`mcp__payments__transfer`, with a
/// fractional amount Cedar cannot hold as a number).
fn claude_mcp_pre() -> String {
    let mut payload: Value = serde_json::from_str(CLAUDE_PRE).unwrap();
    payload["tool_name"] = json!("mcp__payments__transfer");
    payload["tool_input"] = json!({"amount_usd": 12.5, "to": "acme"});
    payload["tool_use_id"] = json!("toolu_msg_0002");
    payload.to_string()
}

/// One client: its subcommand, its payloads, the action its tool maps to.
struct Case {
    client: &'static str,
    pre: &'static str,
    post: &'static str,
    action: &'static str,
}

const CASES: [Case; 3] = [
    Case { client: "claude-code", pre: CLAUDE_PRE, post: CLAUDE_POST, action: "tool.Bash" },
    Case { client: "codex", pre: CODEX_PRE, post: CODEX_POST, action: "tool.Bash" },
    Case { client: "gemini", pre: GEMINI_PRE, post: GEMINI_POST, action: "tool.run_shell_command" },
];

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";

/// `user:alice` → `agent:coder`, granted `tool.*` and `mcp.payments.*` in
/// `/home/dev/project`; returns an agent token for the coder.
fn coder(server: &Server) -> String {
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    server.grant(json!({
        "grantee": CODER, "grantor": ALICE, "actions": ["tool.*", "mcp.payments.*"],
        "resources": ["/home/dev/project", "/home/dev/project/*"],
    }));
    let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

/// Runs `mandate hook <args>` with `stdin`, only the given `MANDATE_*`
/// variables, and its state in `state`.
fn hook(args: &[&str], env: &[(&str, &str)], state: &Path, stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.arg("hook").args(args);
    for name in ["MANDATE_URL", "MANDATE_TOKEN", "MANDATE_HOOK_TIMEOUT_MS"] {
        command.env_remove(name);
    }
    command.env("MANDATE_HOOK_STATE", state).envs(env.iter().copied());
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn err(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts an allow: exit 0, nothing on stdout.
fn assert_allow(output: &Output, what: &str) {
    assert_eq!(output.status.code(), Some(0), "{what}: {}{}", out(output), err(output));
    assert_eq!(out(output), "", "{what}: allow prints nothing");
}

/// Asserts a deny in `client`'s form and returns the reason.
fn assert_deny(client: &str, output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{client}: {}{}", out(output), err(output));
    let stdout = out(output);
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "{client}: one line: {stdout:?}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let reason = answer["reason"].as_str().unwrap().to_owned();
    let expected = if client == "gemini" {
        json!({"decision": "block", "reason": reason})
    } else {
        json!({
            "decision": "block", "reason": reason,
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason,
            },
        })
    };
    assert_eq!(answer, expected, "{client}");
    reason
}

/// Asserts a failure that blocks: exit 2 and the reason on stderr.
fn assert_blocked(output: &Output, what: &str, because: &str) {
    assert_eq!(output.status.code(), Some(2), "{what}: {}{}", out(output), err(output));
    assert_eq!(out(output), "", "{what}");
    let stderr = err(output);
    assert!(stderr.starts_with("mandate: blocked: ") && stderr.contains(because), "{what}: {stderr}");
}

// ---------------------------------------------------------------- allow and record

#[test]
fn allowed_calls_run_and_their_outcomes_are_recorded_against_the_decision() {
    let (dir, server) = Server::fresh();
    let token = coder(&server);
    let state = dir.path().join("state");
    let env = [("MANDATE_URL", &*format!("http://{}", server.addr)), ("MANDATE_TOKEN", &*token)];
    for case in &CASES {
        let pre = hook(&[case.client], &env, &state, case.pre);
        assert_allow(&pre, case.client);
        assert_eq!(err(&pre), "", "{}", case.client);
        let post = hook(&[case.client], &env, &state, case.post);
        assert_allow(&post, case.client);
        assert_eq!(err(&post), "", "{}: the outcome is recorded", case.client);
    }
    let mcp = hook(&["claude-code"], &env, &state, &claude_mcp_pre());
    assert_allow(&mcp, "mcp");
    // Claude Code's event after a tool that failed records a failure.
    let failed =
        CLAUDE_POST.replace("\"PostToolUse\"", "\"PostToolUseFailure\"").replace("toolu_msg_0001", "toolu_msg_0002");
    let failed = hook(&["claude-code"], &env, &state, &failed);
    assert_allow(&failed, "failure");
    assert_eq!(err(&failed), "", "joined to the MCP call's decision");

    let decisions = server.search_all("type=decision");
    let events = server.search_all("type=event.recorded");
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    assert_eq!(events.len(), 4, "{events:?}");
    for (case, event) in CASES.iter().zip(&events) {
        let body = &event["body"];
        assert_eq!(body["outcome"], "success", "{event}");
        assert_eq!(body["attributes"]["client"], case.client, "{event}");
        assert!(body["output_digest"].as_str().unwrap().starts_with("sha256:"), "{event}");
        let decision = decisions
            .iter()
            .find(|decision| decision["body"]["decision_id"] == body["decision_id"])
            .unwrap_or_else(|| panic!("no decision for {event}"));
        let text = decision.to_string();
        assert!(text.contains(case.action) && text.contains("/home/dev/project"), "{decision}");
    }
    assert_eq!(events[0]["body"]["duration_ms"], 53, "Claude Code's duration");
    assert_eq!(events[0]["body"]["attributes"]["tool_use_id"], "toolu_msg_0001");
    let mcp_decision =
        decisions.iter().find(|decision| decision["body"]["request"]["action"] == "mcp.payments.transfer");
    let mcp_decision = mcp_decision.unwrap_or_else(|| panic!("{decisions:?}"));
    assert_eq!(mcp_decision["body"]["decision"], "allow", "a fraction becomes text for Cedar: {mcp_decision}");
    assert_eq!(mcp_decision["body"]["request"]["context"]["input"]["amount_usd"], "12.5", "{mcp_decision}");
    assert_eq!(events[3]["body"]["decision_id"], mcp_decision["body"]["decision_id"]);
    assert_eq!(events[3]["body"]["outcome"], "failure");

    // A post with no decision before it (the pre half never ran) never blocks.
    let orphan = hook(&["codex", "--post"], &env, &state, CODEX_POST);
    assert_allow(&orphan, "orphan post");
    assert!(err(&orphan).contains("no allowed decision"), "{}", err(&orphan));
}

// ---------------------------------------------------------------- deny

#[test]
fn denied_calls_are_blocked_in_each_clients_form_with_the_reason() {
    let (dir, server) = Server::fresh();
    let token = coder(&server);
    let state = dir.path().join("state");
    let env = [("MANDATE_URL", &*format!("http://{}", server.addr)), ("MANDATE_TOKEN", &*token)];

    // Outside the granted directory: no grant.
    for case in &CASES {
        let elsewhere = case.pre.replace("\"cwd\":\"/home/dev/project\"", "\"cwd\":\"/home/dev/scratch\"");
        let reason = assert_deny(case.client, &hook(&[case.client], &env, &state, &elsewhere));
        assert!(reason.contains(case.action) && reason.contains("no_grant"), "{}: {reason}", case.client);
    }

    // `..` does not climb out of the granted directory.
    let mut escape: Value = serde_json::from_str(CLAUDE_PRE).unwrap();
    escape["tool_name"] = json!("Read");
    escape["tool_input"] = json!({"file_path": "/home/dev/project/../scratch/secret"});
    let reason = assert_deny("claude-code", &hook(&["claude-code"], &env, &state, &escape.to_string()));
    assert!(reason.contains("no_grant") && reason.contains("/home/dev/scratch/secret"), "{reason}");
    // (Same `tool_use_id` as CLAUDE_PRE: its deny below must not be joined to this allow.)
    escape["tool_input"] = json!({"file_path": "src/../README.md"});
    assert_allow(&hook(&["claude-code"], &env, &state, &escape.to_string()), "relative path inside");

    // A token the server does not know blocks, with the server's answer.
    let forged = [("MANDATE_URL", &*format!("http://{}", server.addr)), ("MANDATE_TOKEN", "mt_forged")];
    assert_blocked(&hook(&["codex"], &forged, &state, CODEX_PRE), "forged token", "401");

    // A Cedar rule on the tool's input.
    server.put_policies(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-echo\") forbid(principal, action, resource) when { context.input has command && context.input.command like \"echo *\" };",
    );
    for case in &CASES {
        let output = hook(&[case.client], &env, &state, case.pre);
        let reason = assert_deny(case.client, &output);
        assert!(reason.contains(case.action) && reason.contains("no-echo"), "{}: {reason}", case.client);
        // A denied call leaves no decision for the post half to join.
        let post = hook(&[case.client], &env, &state, case.post);
        assert_allow(&post, case.client);
        assert!(err(&post).contains("no allowed decision"), "{}", err(&post));
    }

    // Waiting for approval blocks, naming the approval.
    server.put_policies("@id(\"ask\") @approval(\"required\") permit(principal, action, resource);");
    let reason = assert_deny("claude-code", &hook(&["claude-code"], &env, &state, CLAUDE_PRE));
    assert!(reason.contains("tool.Bash") && reason.contains("waits for approval"), "{reason}");
    assert!(server.search_all("type=event.recorded").is_empty());
}

// ---------------------------------------------------------------- fail closed

#[test]
fn every_failure_blocks_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let unreachable = [("MANDATE_URL", &*format!("http://{closed}")), ("MANDATE_TOKEN", "mt_test")];
    for case in &CASES {
        let no_token = hook(&[case.client], &[("MANDATE_URL", &*format!("http://{closed}"))], &state, case.pre);
        assert_blocked(&no_token, case.client, "MANDATE_TOKEN");
        assert_blocked(&hook(&[case.client], &unreachable, &state, case.pre), case.client, "unreachable");
        assert_blocked(&hook(&[case.client], &unreachable, &state, "{not json"), case.client, "not JSON");
        assert_blocked(&hook(&[case.client], &unreachable, &state, "[1]"), case.client, "not a JSON object");
        // The post half warns and lets the client go on.
        let post = hook(&[case.client], &unreachable, &state, case.post);
        assert_allow(&post, case.client);
        assert!(err(&post).contains("not recorded"), "{}", err(&post));
    }
    let bad_url = [("MANDATE_URL", "https://mandate.example"), ("MANDATE_TOKEN", "mt_test")];
    assert_blocked(&hook(&["codex"], &bad_url, &state, CODEX_PRE), "https", "http://");
    let bad_timeout = [("MANDATE_HOOK_TIMEOUT_MS", "soon"), ("MANDATE_TOKEN", "mt_test")];
    assert_blocked(&hook(&["gemini"], &bad_timeout, &state, GEMINI_PRE), "timeout", "MANDATE_HOOK_TIMEOUT_MS");
}

#[test]
fn the_hook_keeps_its_own_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut streams = Vec::new();
        for stream in listener.incoming().take(3) {
            streams.push(stream);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    let env =
        [("MANDATE_URL", &*format!("http://{addr}")), ("MANDATE_TOKEN", "mt_test"), ("MANDATE_HOOK_TIMEOUT_MS", "300")];
    for case in &CASES {
        let started = Instant::now();
        let output = hook(&[case.client], &env, &state, case.pre);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert_blocked(&output, case.client, "");
        assert!(err(&output).contains("deadline") || err(&output).contains("timed out"), "{}", err(&output));
    }
    drop(held);

    // A client that never closes stdin: the watchdog still answers.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["hook", "claude-code"])
        .env("MANDATE_HOOK_TIMEOUT_MS", "300")
        .env("MANDATE_TOKEN", "mt_test")
        .env("MANDATE_HOOK_STATE", &state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_blocked(&output, "open stdin", "deadline of 300 ms");
}

#[test]
fn gemini_mcp_tools_are_named_by_their_server_and_tool() {
    let (dir, server) = Server::fresh();
    let token = coder(&server);
    let env = [("MANDATE_URL", &*format!("http://{}", server.addr)), ("MANDATE_TOKEN", &*token)];
    // Gemini CLI names the tool `mcp_<server>_<tool>` (ambiguous with `_`
    // in either) and sends the two apart in `mcp_context`.
    let mut payload: Value = serde_json::from_str(GEMINI_PRE).unwrap();
    payload["tool_name"] = json!("mcp_payments_transfer_funds");
    payload["tool_input"] = json!({"to": "acme"});
    payload["mcp_context"] = json!({"server_name": "payments", "tool_name": "transfer_funds", "command": "node"});
    assert_allow(&hook(&["gemini"], &env, &dir.path().join("state"), &payload.to_string()), "gemini mcp");
    let decisions = server.search_all("type=decision");
    assert_eq!(decisions[0]["body"]["request"]["action"], "mcp.payments.transfer_funds", "{decisions:?}");
}

// ---------------------------------------------------------------- install

#[test]
fn install_merges_the_claude_code_settings_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join(".claude/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let existing = json!({
        "model": "opus",
        "hooks": {"PreToolUse": [{"matcher": "Write", "hooks": [{"type": "command", "command": "lint"}]}]},
    });
    std::fs::write(&settings, existing.to_string()).unwrap();
    let install =
        ["hook", "install", "claude-code", "--settings", path_str(&settings), "--command", "mandate hook claude-code"];
    let first = mandate(&install);
    assert!(first.status.success(), "{}", err(&first));
    let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let expected = json!({
        "model": "opus",
        "hooks": {
            "PreToolUse": [
                {"matcher": "Write", "hooks": [{"type": "command", "command": "lint"}]},
                {"matcher": "*", "hooks": [{"type": "command", "command": "mandate hook claude-code", "timeout": 10, "onFailure": "block"}]},
            ],
            "PostToolUse": [
                {"matcher": "*", "hooks": [{"type": "command", "command": "mandate hook claude-code", "timeout": 10}]},
            ],
        },
    });
    assert_eq!(written, expected);
    let again = mandate(&install);
    assert!(again.status.success(), "{}", err(&again));
    let rewritten: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    assert_eq!(rewritten, expected, "a second install changes nothing");

    // A fresh directory, and this binary's own path by default.
    let fresh = dir.path().join("other/.claude/settings.json");
    let output = mandate(&["hook", "install", "claude-code", "--settings", path_str(&fresh)]);
    assert!(output.status.success(), "{}", err(&output));
    let written: Value = serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    let command = written["hooks"]["PreToolUse"][0]["hooks"][0]["command"].as_str().unwrap();
    assert!(command.ends_with(" hook claude-code") && command.contains("mandate"), "{command}");

    // Settings that are not JSON are left alone.
    std::fs::write(&settings, "{oops").unwrap();
    let refused = mandate(&install);
    assert!(!refused.status.success());
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "{oops");
}

#[test]
fn install_writes_claude_codes_http_hook_in_place_of_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join(".claude/settings.json");
    let existing = json!({"hooks": {"PreToolUse": [
        {"matcher": "Write", "hooks": [{"type": "http", "url": "https://lint.example/check"}]},
    ]}});
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(&settings, existing.to_string()).unwrap();
    let command = mandate(&["hook", "install", "claude-code", "--settings", path_str(&settings)]);
    assert!(command.status.success(), "{}", err(&command));
    let http =
        ["hook", "install", "claude-code", "--settings", path_str(&settings), "--http", "http://127.0.0.1:8420/"];
    for _ in 0..2 {
        let output = mandate(&http);
        assert!(output.status.success(), "{}", err(&output));
    }
    let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let hook = json!({"type": "http", "url": "http://127.0.0.1:8420/v1/hooks/claude-code",
        "headers": {"Authorization": "Bearer $MANDATE_TOKEN"}, "allowedEnvVars": ["MANDATE_TOKEN"], "timeout": 10});
    let mut pre = hook.clone();
    pre["onFailure"] = json!("block");
    assert_eq!(
        written,
        json!({"hooks": {
            "PreToolUse": [
                {"matcher": "Write", "hooks": [{"type": "http", "url": "https://lint.example/check"}]},
                {"matcher": "*", "hooks": [pre]},
            ],
            "PostToolUse": [{"matcher": "*", "hooks": [hook]}],
        }}),
        "the command hook replaced, another HTTP hook kept, a second install changes nothing"
    );
    let bad =
        mandate(&["hook", "install", "claude-code", "--settings", path_str(&settings), "--http", "127.0.0.1:8420"]);
    assert_refused(&bad, "not an http:// or https:// URL");
    let both = mandate(&["hook", "install", "claude-code", "--command", "x", "--http", "http://h"]);
    assert_eq!(both.status.code(), Some(2), "a usage error");
}

/// Asserts that `output` refused in one line on stderr naming `because`, with exit 1.
fn assert_refused(output: &Output, because: &str) {
    assert_eq!(output.status.code(), Some(1), "{}{}", out(output), err(output));
    let stderr = err(output);
    assert!(stderr.starts_with("mandate: ") && stderr.ends_with('\n') && stderr.lines().count() == 1, "{stderr:?}");
    assert!(stderr.contains(because), "{stderr}");
}

#[test]
fn install_merges_the_codex_hooks_file_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join(".codex/hooks.json");
    std::fs::create_dir_all(hooks.parent().unwrap()).unwrap();
    let existing = json!({
        "comment": "kept",
        "hooks": {
            "SessionStart": [{"matcher": "startup", "hooks": [{"type": "command", "command": "hello"}]}],
            "PreToolUse": [{"matcher": "^Bash$", "hooks": [{"type": "command", "command": "lint", "timeout": 30}]}],
        },
    });
    std::fs::write(&hooks, existing.to_string()).unwrap();
    let install = ["hook", "install", "codex", "--hooks", path_str(&hooks), "--command", "mandate hook codex"];
    let first = mandate(&install);
    assert!(first.status.success(), "{}", err(&first));
    assert!(out(&first).contains("/hooks"), "says how Codex comes to trust it: {}", out(&first));
    let written: Value = serde_json::from_slice(&std::fs::read(&hooks).unwrap()).unwrap();
    let ours = json!({"type": "command", "command": "mandate hook codex", "timeout": 10});
    let expected = json!({
        "comment": "kept",
        "hooks": {
            "SessionStart": [{"matcher": "startup", "hooks": [{"type": "command", "command": "hello"}]}],
            "PreToolUse": [
                {"matcher": "^Bash$", "hooks": [{"type": "command", "command": "lint", "timeout": 30}]},
                {"matcher": "*", "hooks": [ours]},
            ],
            "PostToolUse": [{"matcher": "*", "hooks": [ours]}],
        },
    });
    assert_eq!(written, expected);
    let bytes = std::fs::read(&hooks).unwrap();
    let again = mandate(&install);
    assert!(again.status.success(), "{}", err(&again));
    assert_eq!(std::fs::read(&hooks).unwrap(), bytes, "a second install changes nothing");

    // An earlier entry of another mandate binary is replaced, not doubled.
    let other = ["hook", "install", "codex", "--hooks", path_str(&hooks), "--command", "/opt/mandate hook codex"];
    assert!(mandate(&other).status.success());
    let written: Value = serde_json::from_slice(&std::fs::read(&hooks).unwrap()).unwrap();
    let pre = written["hooks"]["PreToolUse"].as_array().unwrap();
    assert_eq!(pre.len(), 2, "{written}");
    assert_eq!(pre[1]["hooks"][0]["command"], "/opt/mandate hook codex");
    assert_eq!(written["hooks"]["PostToolUse"].as_array().unwrap().len(), 1, "{written}");

    // A fresh directory, and this binary's own path by default.
    let fresh = dir.path().join("home/.codex/hooks.json");
    let output = mandate(&["hook", "install", "codex", "--hooks", path_str(&fresh)]);
    assert!(output.status.success(), "{}", err(&output));
    let written: Value = serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    let command = written["hooks"]["PreToolUse"][0]["hooks"][0]["command"].as_str().unwrap();
    assert_eq!(command, format!("{} hook codex", env!("CARGO_BIN_EXE_mandate")));

    // A file that is not JSON, or not of the shape, is left alone.
    for bad in ["{oops", "[1, 2]", r#"{"hooks": {"PreToolUse": {"matcher": "*"}}}"#] {
        std::fs::write(&hooks, bad).unwrap();
        assert_refused(&mandate(&install), path_str(&hooks));
        assert_eq!(std::fs::read_to_string(&hooks).unwrap(), bad);
    }
}

#[test]
fn install_merges_the_gemini_settings_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join(".gemini/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let existing = json!({
        "model": {"name": "gemini-fake"},
        "security": {"folderTrust": {"enabled": true}},
        "hooks": {"AfterTool": [{"matcher": "write_file", "hooks": [{"type": "command", "command": "fmt"}]}]},
    });
    std::fs::write(&settings, existing.to_string()).unwrap();
    let install = ["hook", "install", "gemini", "--settings", path_str(&settings), "--command", "mandate hook gemini"];
    let first = mandate(&install);
    assert!(first.status.success(), "{}", err(&first));
    let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    let ours = json!({"type": "command", "name": "mandate", "command": "mandate hook gemini", "timeout": 10000});
    let expected = json!({
        "model": {"name": "gemini-fake"},
        "security": {"folderTrust": {"enabled": true}},
        "hooks": {
            "AfterTool": [
                {"matcher": "write_file", "hooks": [{"type": "command", "command": "fmt"}]},
                {"matcher": "*", "hooks": [ours]},
            ],
            "BeforeTool": [{"matcher": "*", "hooks": [ours]}],
        },
    });
    assert_eq!(written, expected);
    let bytes = std::fs::read(&settings).unwrap();
    let again = mandate(&install);
    assert!(again.status.success(), "{}", err(&again));
    assert_eq!(std::fs::read(&settings).unwrap(), bytes, "a second install changes nothing");

    // The default command is this binary.
    let fresh = dir.path().join("other/.gemini/settings.json");
    let output = mandate(&["hook", "install", "gemini", "--settings", path_str(&fresh)]);
    assert!(output.status.success(), "{}", err(&output));
    let written: Value = serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    let command = written["hooks"]["BeforeTool"][0]["hooks"][0]["command"].as_str().unwrap();
    assert_eq!(command, format!("{} hook gemini", env!("CARGO_BIN_EXE_mandate")));

    // Gemini reads comments in its settings; this install does not, and
    // leaves such a file alone rather than lose them.
    for bad in ["{\n  // a comment\n  \"model\": {}\n}", "\"text\"", r#"{"hooks": []}"#] {
        std::fs::write(&settings, bad).unwrap();
        assert_refused(&mandate(&install), path_str(&settings));
        assert_eq!(std::fs::read_to_string(&settings).unwrap(), bad);
    }
}

// ---------------------------------------------------------------- stale state

/// Sets a file's modification time to `ago` before now.
fn age(path: &Path, ago: Duration) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

#[test]
fn a_pre_call_sweeps_state_files_left_over_a_day_at_most_once_an_hour() {
    const HOUR: Duration = Duration::from_secs(60 * 60);
    let (dir, server) = Server::fresh();
    let token = coder(&server);
    let state = dir.path().join("state");
    let env = [("MANDATE_URL", &*format!("http://{}", server.addr)), ("MANDATE_TOKEN", &*token)];
    // Allowed calls whose post halves never run leave their files (the
    // first made the directory; the second found it and swept it).
    assert_allow(&hook(&["claude-code"], &env, &state, CLAUDE_PRE), "pre");
    let marker = state.join(".swept");
    assert!(!marker.exists(), "no directory to sweep before the first call");
    assert_allow(&hook(&["codex"], &env, &state, CODEX_PRE), "pre");
    assert!(marker.is_file(), "the second pre call swept (and marked it)");
    let left: Vec<_> = std::fs::read_dir(&state).unwrap().map(|entry| entry.unwrap().path()).collect();
    let left: Vec<_> = left.into_iter().filter(|path| path.extension().is_some_and(|ext| ext == "json")).collect();
    assert_eq!(left.len(), 2, "{left:?}");

    // A day and more later, with the last sweep over an hour ago.
    for path in &left {
        age(path, 25 * HOUR);
    }
    let fresh = state.join(format!("{}.json", "a".repeat(64)));
    std::fs::write(&fresh, "{}").unwrap();
    age(&fresh, 23 * HOUR);
    let other = state.join("notes.txt");
    std::fs::write(&other, "not ours").unwrap();
    age(&other, 48 * HOUR);
    age(&marker, 2 * HOUR);
    // Any pre call sweeps, even one that blocks (here: no token).
    let blocked = hook(&["codex"], &[("MANDATE_URL", env[0].1)], &state, CODEX_PRE);
    assert_blocked(&blocked, "no token", "MANDATE_TOKEN");
    assert!(left.iter().all(|path| !path.exists()), "state files over a day old are removed");
    assert!(fresh.exists(), "a state file under a day old is kept");
    assert!(other.exists(), "a file not named as a state file is kept");

    // Within the hour, nothing is swept again.
    let stale = state.join(format!("{}.json", "b".repeat(64)));
    std::fs::write(&stale, "{}").unwrap();
    age(&stale, 30 * HOUR);
    assert_blocked(&hook(&["gemini"], &[], &state, GEMINI_PRE), "no token", "MANDATE_TOKEN");
    assert!(stale.exists(), "swept less than an hour ago");
    age(&marker, 2 * HOUR);
    assert_blocked(&hook(&["gemini"], &[], &state, GEMINI_PRE), "no token", "MANDATE_TOKEN");
    assert!(!stale.exists(), "swept again after the hour");

    // A post half never sweeps: its own file is what it reads.
    std::fs::write(&stale, "{}").unwrap();
    age(&stale, 30 * HOUR);
    age(&marker, 2 * HOUR);
    let post = hook(&["claude-code"], &env, &state, CLAUDE_POST);
    assert_allow(&post, "post");
    assert!(stale.exists());
}
