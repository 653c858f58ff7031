//! `mandate import claude|codex|gemini FILE`, driven as a person drives it:
//! the real binary on the captured transcripts (`fixtures/agent-clients/`,
//! copies of `/work/shared/fixtures/agent-clients/`) against the real
//! `mandate serve` (see `common/mod.rs`), then the log read back over the
//! API and checked offline by `mandate verify`.
//!
//! Each tool call must become one `event.imported` entry naming the action
//! the hook would have asked for, the outcome, the digests the hook would
//! have sent, the identity and the session; a second import of the same
//! file must write nothing; every refusal must be one line, exit 1, and
//! leave the log as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mandate_core::tool_call::digest;
use serde_json::{Value, json};

mod common;
use common::*;

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";
const OTHER: &str = "agent:other";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-clients").join(name)
}

/// `user:alice` → `agent:coder`, `agent:other`; returns an agent token for
/// the coder. (No grant: an import records what happened, it asks nothing.)
fn family(server: &Server) -> String {
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    server.identity(OTHER, "agent", Some(ALICE));
    let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

/// Runs `mandate import <args>` against `server` with `token`, and `stdin`.
fn import(server: &Server, token: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command
        .arg("import")
        .args(args)
        .env("MANDATE_URL", format!("http://{}", server.addr))
        .env("MANDATE_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn err(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns the one line printed.
fn succeeded(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}{}", out(output), err(output));
    assert_eq!(err(output), "", "nothing on stderr off a terminal");
    let stdout = out(output);
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "one line: {stdout:?}");
    stdout.trim_end().to_owned()
}

/// Asserts a refusal: exit 1, one line on stderr containing `because`,
/// nothing on stdout.
fn refused(output: &Output, because: &str) -> String {
    assert_eq!(output.status.code(), Some(1), "{}{}", out(output), err(output));
    assert_eq!(out(output), "");
    let stderr = err(output);
    assert!(stderr.ends_with('\n') && stderr.lines().count() == 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("mandate: ") && stderr.contains(because), "{because:?} in {stderr:?}");
    stderr
}

fn sha256_of(path: &Path) -> String {
    mandate_log::Hash::digest(&std::fs::read(path).unwrap()).to_hex()
}

/// The entries `[start, end)`, parsed.
fn entries(server: &Server, start: u64, end: u64) -> Vec<Value> {
    server.entries(start, end).iter().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// An RFC 3339 time (the server may write it in another form of the same instant).
fn instant(value: &Value) -> jiff::Timestamp {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

/// What one fixture's calls must become.
struct Expected {
    file: &'static str,
    client: &'static str,
    source: &'static str,
    /// (tool, action, outcome, call_id, session_id)
    calls: &'static [(&'static str, &'static str, &'static str, &'static str, &'static str)],
}

const EXPECTED: [Expected; 8] = [
    Expected {
        file: "claude-stream-json-allowed.jsonl",
        client: "claude",
        source: "claude-code",
        calls: &[("Bash", "tool.Bash", "success", "toolu_msg_0001", "5c73097e-2655-474f-b12f-9bc33bf3f8f1")],
    },
    Expected {
        file: "claude-stream-json-denied-by-hook.jsonl",
        client: "claude",
        source: "claude-code",
        calls: &[("Bash", "tool.Bash", "denied", "toolu_msg_0003", "f5325f48-a452-4610-bf46-361cd2d80be6")],
    },
    Expected {
        file: "claude-stream-json-mcp-tool.jsonl",
        client: "claude-code",
        source: "claude-code",
        calls: &[(
            "mcp__payments__transfer",
            "mcp.payments.transfer",
            "success",
            "toolu_msg_0001",
            "c5f4b808-d6c4-4f4f-bbf7-22ac906366ad",
        )],
    },
    Expected {
        file: "codex-exec-json-allowed.jsonl",
        client: "codex",
        source: "codex",
        calls: &[("Bash", "tool.Bash", "success", "item_3", "01a200f6-3503-7820-adad-79173b17e8c4")],
    },
    // Codex prints nothing for a call its hook blocked: nothing to import.
    Expected { file: "codex-exec-json-denied-by-hook.jsonl", client: "codex", source: "codex", calls: &[] },
    Expected {
        file: "codex-exec-json-mcp-tool.jsonl",
        client: "codex",
        source: "codex",
        calls: &[("Bash", "tool.Bash", "success", "item_3", "01a200fb-71f7-7f31-8673-9b186ffc4724")],
    },
    Expected {
        file: "gemini-stream-json-allowed.jsonl",
        client: "gemini",
        source: "gemini",
        calls: &[(
            "run_shell_command",
            "tool.run_shell_command",
            "success",
            "run_shell_command__run_shell_command_1795312605575_0",
            "733bc34b-464a-409a-8131-e57ede9d4d13",
        )],
    },
    Expected {
        file: "gemini-stream-json-denied-by-hook.jsonl",
        client: "gemini",
        source: "gemini",
        calls: &[(
            "run_shell_command",
            "tool.run_shell_command",
            "denied",
            "run_shell_command__run_shell_command_1795312615246_0",
            "5449c802-b974-4f81-a116-baa0ead94757",
        )],
    },
];

#[test]
fn every_captured_transcript_becomes_entries_that_verify() {
    let (dir, server) = Server::fresh();
    let token = family(&server);
    for expected in &EXPECTED {
        let path = fixture(expected.file);
        let before = server.log_size();
        let line = succeeded(&import(&server, &token, &[expected.client, path.to_str().unwrap()], None));
        let after = server.log_size();
        if expected.calls.is_empty() {
            assert_eq!(line, format!("no tool calls in {}: nothing to import", path.display()));
            assert_eq!(after, before, "{}", expected.file);
            continue;
        }
        assert_eq!(
            line,
            format!("imported 1 tool call from {} as 1 log entry (index {before})", path.display()),
            "{}",
            expected.file
        );
        assert_eq!(after, before + expected.calls.len() as u64, "{}", expected.file);
        let written = entries(&server, before, after);
        for (entry, &(tool, action, outcome, call_id, session_id)) in written.iter().zip(expected.calls) {
            assert_eq!(entry["type"], "event.imported", "{entry}");
            let body = &entry["body"];
            for (field, value) in [
                ("identity", CODER),
                ("source", expected.source),
                ("tool", tool),
                ("action", action),
                ("outcome", outcome),
                ("call_id", call_id),
                ("session_id", session_id),
            ] {
                assert_eq!(body[field], value, "{field} of {}: {entry}", expected.file);
            }
            assert_eq!(body["transcript_sha256"], sha256_of(&path), "{entry}");
            assert_eq!(body["part"], 0, "{entry}");
            assert!(body["input_digest"].as_str().unwrap().starts_with("sha256:"), "{entry}");
            assert!(body["output_digest"].as_str().unwrap().starts_with("sha256:"), "{entry}");
            for absent in ["input", "output", "truncated"] {
                assert!(body.get(absent).is_none(), "digests only by default: {entry}");
            }
        }
    }

    // The digests are the ones the hooks send for the same calls (the
    // payloads of claude-pretooluse.json / -posttooluse.json, and Codex's
    // and Gemini's), so an imported run and a hooked run can be matched.
    let imported = server.search_all("type=event.imported");
    assert_eq!(imported.len(), 7, "{imported:?}");
    let claude = &imported[0]["body"];
    assert_eq!(claude["input_digest"], digest(&json!({"command": "echo hello-from-tool"})));
    let response = json!({"stdout": "hello-from-tool", "stderr": "", "interrupted": false,
                          "isImage": false, "noOutputExpected": false});
    assert_eq!(claude["output_digest"], digest(&response));
    assert_eq!(instant(&claude["started_at"]), instant(&json!("2026-11-22T01:31:03.054Z")));
    let codex = &imported[3]["body"];
    assert_eq!(codex["input_digest"], digest(&json!({"command": "echo hello-from-codex"})));
    assert_eq!(codex["output_digest"], digest(&json!("hello-from-codex\n")));
    assert!(codex.get("started_at").is_none(), "Codex's events carry no time: {codex}");
    let gemini = &imported[5]["body"];
    assert_eq!(gemini["input_digest"], digest(&json!({"command": "echo hello-from-gemini", "description": "echo"})));
    assert_eq!(instant(&gemini["started_at"]), instant(&json!("2026-11-22T01:56:45.651Z")));
    // Found by the identity that made the calls.
    assert_eq!(server.search_all(&format!("identity={CODER}&type=event.imported")).len(), 7);
    assert!(server.search_all(&format!("identity={OTHER}&type=event.imported")).is_empty());

    // The whole log, exported, verifies offline.
    let size = server.log_size();
    let log = dir.path().join("log.jsonl");
    std::fs::write(&log, server.entries(0, size).join("\n") + "\n").unwrap();
    let key = dir.path().join("log.pub");
    std::fs::write(&key, server.get("/v1/log/public-key").expect_text(200)).unwrap();
    let verified = mandate(&["verify", "--log", path_str(&log), "--key", path_str(&key)]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with(&format!("ok: {size} entries")));
}

#[test]
fn importing_the_same_transcript_again_writes_nothing() {
    let (_dir, server) = Server::fresh();
    let token = family(&server);
    let path = fixture("claude-stream-json-mcp-tool.jsonl");
    let first = succeeded(&import(&server, &token, &["claude", path_str(&path)], None));
    let index = server.log_size() - 1;
    assert!(first.ends_with(&format!("(index {index})")), "{first}");
    let size = server.log_size();
    // Again, with or without contents (parts are cut by count, so the same
    // calls make the same parts), and as the admin naming the same identity.
    for args in [vec!["claude"], vec!["claude", "--include-content"]] {
        let mut args = args.clone();
        args.push(path_str(&path));
        let again = succeeded(&import(&server, &token, &args, None));
        assert_eq!(
            again,
            format!(
                "already imported: the 1 tool call from {} is in the log (index {index}); nothing written",
                path.display()
            )
        );
    }
    let admin = succeeded(&import(&server, &server.key, &["claude", "--identity", CODER, path_str(&path)], None));
    assert!(admin.starts_with("already imported"), "{admin}");
    assert_eq!(server.log_size(), size, "nothing written");
}

#[test]
fn an_admin_key_names_the_identity_and_a_token_only_its_own() {
    let (_dir, server) = Server::fresh();
    let token = family(&server);
    let path = fixture("gemini-stream-json-allowed.jsonl");
    let file = path_str(&path);
    let size = server.log_size();

    // An admin key without --identity: one line, exit 1, nothing asked.
    refused(&import(&server, &server.key, &["gemini", file], None), "give `--identity ID`");
    // An identity the tenant does not have.
    refused(&import(&server, &server.key, &["gemini", "--identity", "agent:nobody", file], None), "404");
    // An agent token naming another identity.
    refused(&import(&server, &token, &["gemini", "--identity", OTHER, file], None), "403");
    // No token at all.
    refused(&import(&server, "", &["gemini", file], None), "`MANDATE_TOKEN` is not set");
    // A forged token.
    refused(&import(&server, "mt_0000000000000000_forged", &["gemini", file], None), "401");
    assert_eq!(server.log_size(), size, "nothing written");

    // The admin key naming an identity imports as it; so does a token
    // naming itself.
    succeeded(&import(&server, &server.key, &["gemini", "--identity", OTHER, file], None));
    let entry = server.entry(size);
    assert_eq!((&entry["type"], &entry["body"]["identity"]), (&json!("event.imported"), &json!(OTHER)), "{entry}");
    let denied = fixture("gemini-stream-json-denied-by-hook.jsonl");
    succeeded(&import(&server, &token, &["gemini", "--identity", CODER, path_str(&denied)], None));
    assert_eq!(server.entry(size + 1)["body"]["identity"], CODER);
}

#[test]
fn a_malformed_transcript_is_named_and_writes_nothing() {
    let (dir, server) = Server::fresh();
    let token = family(&server);
    let size = server.log_size();
    let good = std::fs::read_to_string(fixture("codex-exec-json-allowed.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    // Line 7, the completed call, cut short.
    let cut = &lines[6][..40];
    lines[6] = cut;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let stderr = refused(&import(&server, &token, &["codex", path_str(&bad)], None), "line 7: not JSON");
    assert!(stderr.contains(path_str(&bad)), "{stderr}");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    refused(&import(&server, &token, &["codex", path_str(&empty)], None), "the transcript is empty");
    // Another client's transcript.
    let claude = fixture("claude-stream-json-allowed.jsonl");
    refused(&import(&server, &token, &["codex", path_str(&claude)], None), "no line is a Codex `exec --json` event");
    refused(&import(&server, &token, &["codex", "/no/such/transcript"], None), "/no/such/transcript");
    assert_eq!(server.log_size(), size, "nothing written");

    // Usage errors are clap's: exit 2.
    let usage = import(&server, &token, &["fish", path_str(&claude)], None);
    assert_eq!(usage.status.code(), Some(2), "{}", err(&usage));
}

#[test]
fn a_transcript_on_stdin_imports_the_same() {
    let (_dir, server) = Server::fresh();
    let token = family(&server);
    let path = fixture("claude-stream-json-denied-by-hook.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let before = server.log_size();
    let line = succeeded(&import(&server, &token, &["claude", "-"], Some(&bytes)));
    assert_eq!(line, format!("imported 1 tool call from stdin as 1 log entry (index {before})"));
    let body = &server.entry(before)["body"];
    assert_eq!((&body["outcome"], &body["transcript_sha256"]), (&json!("denied"), &json!(sha256_of(&path))));
    // The same bytes from the file are the same transcript.
    let again = succeeded(&import(&server, &token, &["claude", path_str(&path)], None));
    assert!(again.starts_with("already imported"), "{again}");
    // A malformed one on stdin is named as such.
    refused(
        &import(&server, &token, &["claude", "-"], Some(b"{\"type\":\"system\"}\n{")),
        "transcript on stdin: line 2",
    );
}

#[test]
fn a_long_transcript_goes_in_parts_and_contents_are_cut_to_fit() {
    let (dir, server) = Server::fresh();
    let token = family(&server);
    // 250 calls (three parts), every output 40 KiB: over the 16 KiB a call
    // may carry, and far over a request's 256 KiB all together.
    let captured = std::fs::read_to_string(fixture("claude-stream-json-allowed.jsonl")).unwrap();
    let lines: Vec<&str> = captured.lines().collect();
    let mut transcript = vec![lines[0].to_owned()];
    let big = "x".repeat(40 * 1024);
    for call in 0..250 {
        let id = format!("toolu_{call:04}");
        transcript.push(lines[1].replace("toolu_msg_0001", &id).replace("hello-from-tool", &format!("call {call}")));
        let mut result: Value = serde_json::from_str(lines[2]).unwrap();
        result["message"]["content"][0]["tool_use_id"] = json!(id);
        result["tool_use_result"]["stdout"] = json!(big);
        result["tool_result_meta"][0]["id"] = json!(id);
        transcript.push(result.to_string());
    }
    let path = dir.path().join("long.jsonl");
    std::fs::write(&path, transcript.join("\n") + "\n").unwrap();

    let before = server.log_size();
    let line = succeeded(&import(&server, &token, &["claude", "--include-content", path_str(&path)], None));
    assert_eq!(
        line,
        format!(
            "imported 250 tool calls from {} as 250 log entries (indexes {before}–{})",
            path.display(),
            before + 249
        )
    );
    let written = entries(&server, before, before + 250);
    for (call, entry) in written.iter().enumerate() {
        let body = &entry["body"];
        assert_eq!(body["call_id"], format!("toolu_{call:04}"), "in the transcript's order");
        assert_eq!(body["part"], call / 100, "{entry}");
        assert_eq!(body["input"], json!({"command": format!("echo call {call}")}), "small inputs whole");
        assert_eq!(body["truncated"], true, "{call}");
        let output = body["output"].as_str().unwrap();
        assert!(output.len() > 1_000 && output.len() <= 16 * 1024, "{call}: {}", output.len());
        assert!(output.contains("\"stdout\":\"xxxxxxxx"), "{call}: {}", &output[..60]);
    }
    // Digests only, the second time: the same parts, all already there.
    let again = succeeded(&import(&server, &token, &["claude", path_str(&path)], None));
    assert!(again.starts_with("already imported: the 250 tool calls"), "{again}");
    assert_eq!(server.log_size(), before + 250);
}

#[test]
fn contents_are_recorded_when_asked() {
    let (_dir, server) = Server::fresh();
    let token = family(&server);
    let path = fixture("claude-stream-json-mcp-tool.jsonl");
    let before = server.log_size();
    succeeded(&import(&server, &token, &["claude", "--include-content", path_str(&path)], None));
    let body = &server.entry(before)["body"];
    assert_eq!(body["input"], json!({"amount_usd": 12.5, "to": "acme"}), "{body}");
    let output: Value = serde_json::from_str(body["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["structuredContent"], json!({"result": "sent 12.5 to acme"}), "{body}");
    assert!(body.get("truncated").is_none(), "{body}");
    assert_eq!(body["input_digest"], digest(&json!({"amount_usd": 12.5, "to": "acme"})));
}
