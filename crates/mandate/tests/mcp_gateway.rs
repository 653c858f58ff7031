//! `mandate mcp-gateway`, driven by the real `mcp` Python package (2.3.0)
//! as client, with a small MCPServer (`tests/mcp/server.py`) as target and
//! the real `mandate serve` behind it (see `common/mod.rs`), in both
//! protocol generations: the `initialize` handshake (`mode="legacy"`) and
//! 2026-07-28 `server/discover` (`mode="auto"`, which the server accepts).
//! A raw JSON-RPC exchange checks what the Python client cannot show:
//! unknown fields survive both ways, ids (strings too) come back as sent.
//!
//! The `mcp` package is installed from PyPI into `target/mcp-venv` on the
//! first run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;
use common::*;

const MCP_VERSION: &str = "2.3.0";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// The venv's python, with `mcp==2.3.0` installed. Tests run in separate
/// processes: each that finds no venv builds its own beside it and renames
/// it into place, and the first rename wins.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv");
    let has = |venv: &Path| {
        Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import importlib.metadata as m; assert m.version('mcp') == '{MCP_VERSION}'")])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !has(&venv) {
        let building = venv.with_file_name(format!("mcp-venv.building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let made = Command::new("python3").arg("-m").arg("venv").arg(&building).status().unwrap();
        assert!(made.success(), "python3 -m venv");
        let pip = Command::new(building.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", &format!("mcp=={MCP_VERSION}")])
            .status()
            .unwrap();
        assert!(pip.success(), "pip install mcp=={MCP_VERSION}");
        if has(&venv) || std::fs::rename(&building, &venv).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        assert!(has(&venv), "mcp=={MCP_VERSION} in {}", venv.display());
    }
    venv.join("bin/python")
}

/// A server where `agent:coder` may call `mcp.demo.add` but not
/// `mcp.demo.wipe`; the server and an agent token for the coder.
fn setup() -> (tempfile::TempDir, Server, String) {
    let (dir, server) = Server::fresh();
    server.identity("user:alice", "human", None);
    server.identity("agent:coder", "agent", Some("user:alice"));
    server.grant(json!({
        "grantee": "agent:coder", "grantor": "user:alice", "actions": ["mcp.demo.add"],
        "resources": ["mcp://demo/*"],
    }));
    let issued = server.post("/v1/tokens", json!({"identity": "agent:coder", "ttl_s": 600})).expect(201);
    (dir, server, issued["token"].as_str().unwrap().to_owned())
}

fn wire_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn the_real_mcp_client_is_filtered_and_refused_in_both_generations() {
    let python = python();
    let (dir, server, token) = setup();
    for (mode, generation_method) in [("legacy", "\"initialize\""), ("auto", "\"server/discover\"")] {
        let marker = dir.path().join(format!("wiped-{mode}"));
        let wire = dir.path().join(format!("wire-{mode}.log"));
        let output = Command::new(&python)
            .arg(scripts().join("client.py"))
            .arg(mode)
            .arg(env!("CARGO_BIN_EXE_mandate"))
            .arg(scripts().join("server.py"))
            .env("MANDATE_URL", format!("http://{}", server.addr))
            .env("MANDATE_TOKEN", &token)
            .env("MCP_WIPE_MARKER", &marker)
            .env("MCP_WIRE_LOG", &wire)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{mode}: client.py failed: {stderr}");
        let summary: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{mode}: no summary: {} {stderr}", String::from_utf8_lossy(&output.stdout)));
        assert_eq!(summary["discovered"], mode == "auto", "{mode}: the generation: {summary}");
        assert_eq!(summary["tools"], json!(["add"]), "{mode}: tools/list filtered: {summary}");
        assert_eq!(summary["add"]["isError"], false, "{mode}: {summary}");
        assert_eq!(summary["add"]["text"], json!(["42"]), "{mode}: {summary}");
        assert_eq!(summary["wipe"]["isError"], true, "{mode}: {summary}");
        let reason = summary["wipe"]["text"][0].as_str().unwrap();
        assert!(reason.contains("`mcp.demo.wipe` denied") && reason.contains("decision"), "{mode}: {reason}");
        assert!(!marker.exists(), "{mode}: wipe ran");

        let lines = wire_lines(&wire);
        assert!(lines.iter().any(|line| line.contains(generation_method)), "{mode}: {lines:?}");
        let calls: Vec<&String> = lines.iter().filter(|line| line.contains("\"tools/call\"")).collect();
        assert_eq!(calls.len(), 1, "{mode}: only add reached the server: {calls:?}");
        assert!(calls[0].contains("\"add\""), "{mode}: {calls:?}");
    }

    // Each call's decision; the allowed ones' outcomes, joined to them.
    let decisions = server.search_all("type=decision");
    let texts: Vec<String> = decisions.iter().map(Value::to_string).collect();
    let calls_add = texts.iter().filter(|text| text.contains("mcp.demo.add") && !text.contains("\"probe\"")).count();
    assert!(calls_add >= 2, "{texts:?}");
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 2, "one outcome per allowed call: {events:?}");
    for event in &events {
        let body = &event["body"];
        assert_eq!(body["outcome"], "success", "{event}");
        assert_eq!(body["attributes"]["client"], "mcp-gateway", "{event}");
        let decision = decisions
            .iter()
            .find(|decision| decision["body"]["decision_id"] == body["decision_id"])
            .unwrap_or_else(|| panic!("no decision for {event}"));
        assert!(decision.to_string().contains("mcp.demo.add"), "{decision}");
    }
}

/// The 2026-07-28 `_meta` the fixtures' Claude Code sends on every request.
const META: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}"#;

#[test]
fn raw_messages_pass_unchanged_and_unknown_fields_survive() {
    let python = python();
    let (dir, server, token) = setup();
    let marker = dir.path().join("wiped");
    let wire = dir.path().join("wire.log");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp-gateway", "--server", "demo", "--"])
        .arg(&python)
        .arg(scripts().join("server.py"))
        .env("MANDATE_URL", format!("http://{}", server.addr))
        .env("MANDATE_TOKEN", &token)
        .env("MCP_WIPE_MARKER", &marker)
        .env("MCP_WIRE_LOG", &wire)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = gateway.stdin.take().unwrap();
    let mut output = BufReader::new(gateway.stdout.take().unwrap());
    let mut exchange = |line: &str| -> Value {
        input.write_all(line.as_bytes()).unwrap();
        input.write_all(b"\n").unwrap();
        input.flush().unwrap();
        let mut answer = String::new();
        output.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
    };

    // Key order as Claude Code sends it (`method` first), unknown fields.
    let discover = format!(
        r#"{{"method":"server/discover","jsonrpc":"2.0","id":0,"x-client-extra":{{"a":[1,{{"b":null}}]}},"params":{{"_meta":{META}}}}}"#
    );
    let discovered = exchange(&discover);
    assert_eq!(discovered["id"], 0);
    assert!(discovered["result"]["supportedVersions"].to_string().contains("2026-07-28"), "{discovered}");
    assert_eq!(discovered["result"]["x-mandate-test"], json!({"kept": [1, 2.5, "three"]}));
    assert_eq!(discovered["x-mandate-test"], "top");

    let list = format!(r#"{{"method":"tools/list","jsonrpc":"2.0","id":"list-1","params":{{"_meta":{META}}}}}"#);
    let listed = exchange(&list);
    assert_eq!(listed["id"], "list-1");
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["add"], "{listed}");
    assert!(listed["result"]["tools"][0]["inputSchema"]["properties"]["a"].is_object(), "{listed}");
    assert_eq!(listed["result"]["x-mandate-test"], json!({"kept": [1, 2.5, "three"]}), "kept when filtered");
    assert_eq!(listed["x-mandate-test"], "top");

    let add = format!(
        r#"{{"method":"tools/call","params":{{"name":"add","arguments":{{"a":2,"b":3}},"x-arg-extra":true,"_meta":{META}}},"jsonrpc":"2.0","id":"call-add"}}"#
    );
    let added = exchange(&add);
    assert_eq!(added["id"], "call-add");
    assert_eq!(added["result"]["isError"], false, "{added}");
    assert_eq!(added["result"]["content"][0]["text"], "5", "{added}");
    assert_eq!(added["result"]["x-mandate-test"], json!({"kept": [1, 2.5, "three"]}));

    // Allowed, run, and failed: recorded as a failure.
    let bad = format!(
        r#"{{"method":"tools/call","params":{{"name":"add","arguments":{{"a":"x","b":3}},"_meta":{META}}},"jsonrpc":"2.0","id":"call-bad"}}"#
    );
    let failed = exchange(&bad);
    assert_eq!(failed["id"], "call-bad");
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    assert!(!failed["result"]["content"][0]["text"].as_str().unwrap().contains("denied"), "the server's: {failed}");

    let wipe = format!(
        r#"{{"method":"tools/call","params":{{"name":"wipe","arguments":{{"target":"/"}},"_meta":{META}}},"jsonrpc":"2.0","id":7}}"#
    );
    let wiped = exchange(&wipe);
    assert_eq!(wiped["id"], 7);
    assert_eq!(wiped["result"]["isError"], true, "{wiped}");
    assert_eq!(wiped["result"]["resultType"], "complete", "2026-07-28 requires it: {wiped}");
    assert!(wiped["result"]["content"][0]["text"].as_str().unwrap().contains("`mcp.demo.wipe` denied"), "{wiped}");

    drop(input);
    let status = gateway.wait().unwrap();
    assert!(status.success(), "the gateway exits as its server does: {status}");
    assert!(!marker.exists(), "wipe never ran");
    // What reached the server: the client's lines, byte for byte, wipe not among them.
    let lines = wire_lines(&wire);
    assert_eq!(lines, [discover, list, add, bad], "{lines:#?}");
    let events = server.search_all("type=event.recorded");
    // Recorded in the background: in either order.
    let mut outcomes: Vec<&str> = events.iter().map(|event| event["body"]["outcome"].as_str().unwrap()).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["failure", "success"], "{events:?}");
}

#[test]
fn without_a_token_the_gateway_does_not_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp-gateway", "--server", "demo", "--", "true"])
        .env_remove("MANDATE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MANDATE_TOKEN"));
}

#[test]
fn an_unreachable_server_fails_closed() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("wiped");
    let wire = dir.path().join("wire.log");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp-gateway", "--server", "demo", "--"])
        .arg(&python)
        .arg(scripts().join("server.py"))
        .env("MANDATE_URL", format!("http://127.0.0.1:{port}"))
        .env("MANDATE_TOKEN", "mt_nothing")
        .env("MCP_WIPE_MARKER", &marker)
        .env("MCP_WIRE_LOG", &wire)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = gateway.stdin.take().unwrap();
    let mut output = BufReader::new(gateway.stdout.take().unwrap());
    // A call without an id (it could not be answered) is dropped, not forwarded.
    let notification = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"wipe","arguments":{"target":"/"}}}"#;
    writeln!(input, "{notification}").unwrap();
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe","arguments":{"target":"/"}}}"#;
    writeln!(input, "{line}").unwrap();
    input.flush().unwrap();
    let mut answer = String::new();
    output.read_line(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(answer["result"].get("resultType").is_none(), "not in the handshake generation: {answer}");
    assert!(answer["result"]["content"][0]["text"].as_str().unwrap().contains("unreachable"), "{answer}");
    drop(input);
    gateway.wait().unwrap();
    assert!(!marker.exists(), "wipe never ran");
    assert_eq!(wire_lines(&wire), Vec::<String>::new(), "nothing reached the server");
}

#[test]
fn a_token_scoped_narrower_than_the_tools_still_lists_what_it_may_call() {
    let python = python();
    let (dir, server, _) = setup();
    // The batch probe is refused whole (403) for `wipe`, outside the scopes:
    // the gateway then asks tool by tool.
    let scoped = server
        .post("/v1/tokens", json!({"identity": "agent:coder", "ttl_s": 600, "scopes": ["mcp.demo.add"]}))
        .expect(201);
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp-gateway", "--server", "demo", "--"])
        .arg(&python)
        .arg(scripts().join("server.py"))
        .env("MANDATE_URL", format!("http://{}", server.addr))
        .env("MANDATE_TOKEN", scoped["token"].as_str().unwrap())
        .env("MCP_WIPE_MARKER", dir.path().join("wiped"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = gateway.stdin.take().unwrap();
    let mut output = BufReader::new(gateway.stdout.take().unwrap());
    let discover = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{"_meta":{META}}}}}"#);
    let list = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{META}}}}}"#);
    writeln!(input, "{discover}\n{list}").unwrap();
    input.flush().unwrap();
    let mut answer = String::new();
    output.read_line(&mut answer).unwrap();
    answer.clear();
    output.read_line(&mut answer).unwrap();
    let listed: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(listed["id"], 2);
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|tool| tool["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["add"], "{listed}");
    drop(input);
    assert!(gateway.wait().unwrap().success());
    // The refused batch decided nothing; the probe of `add` alone was decided.
    let decisions = server.search_all("type=decision");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(decisions[0].to_string().contains("mcp.demo.add"), "{decisions:?}");
}
