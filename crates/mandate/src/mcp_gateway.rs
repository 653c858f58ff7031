//! `mandate mcp-gateway --server NAME -- <command> [args]`: a stdio MCP
//! proxy that asks Mandate before each tool call.
//!
//! The target server is spawned with piped stdin and stdout (stderr is
//! inherited). Two pumps copy newline-delimited JSON-RPC messages, byte for
//! byte, except:
//!
//! - a client's `tools/call` request is authorized first (`POST
//!   /v1/authorize` with the agent token of `MANDATE_TOKEN`, action
//!   `mcp.<server>.<tool>`, resource `mcp://<server>/<tool>`, the arguments
//!   in the Cedar context). Only an allow forwards it; a deny, a pending
//!   approval or any failure (fail closed) is answered by the gateway itself
//!   with a tool result `isError: true` holding the reason;
//! - the server's response to an allowed call is passed back at once, and
//!   its outcome recorded in the background (`POST /v1/events`, then the
//!   reservation settled or voided);
//! - the server's response to a client's `tools/list` keeps only the tools
//!   the agent may call, probed with `POST /v1/authorize/batch` (the
//!   arguments unknown, so the probe's context has none). Every other field
//!   of that response is kept; only this response is re-serialized.
//!
//! Both protocol generations pass through untouched otherwise: the
//! 2025-06-18 `initialize` handshake and the 2026-07-28 `server/discover`
//! (whose result lists no tools: tools come from `tools/list` in both).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use mandate_core::tool_call::{self, cedar_value};
use serde_json::{Map, Value, json};

use crate::hook::{Config, reasons, request};

/// The most tools one batch probe asks about (the server's batch limit).
const PROBE_BATCH_MAX: usize = 30;

/// Where a 2026-07-28 request states its protocol version, in `params._meta`.
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// The largest message the gateway reads on either side.
const LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// `mandate mcp-gateway`.
#[derive(Debug, Args)]
pub struct McpGatewayArgs {
    /// The server's name in actions (`mcp.<server>.<tool>`).
    #[arg(long, value_name = "NAME")]
    server: String,
    /// How long one question to Mandate may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// The MCP server to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// What the gateway remembers between a request and its response.
#[derive(Default)]
struct State {
    /// The ids (as JSON text) of the client's `tools/list` requests.
    lists: HashSet<String>,
    /// The ids (as JSON text) of allowed calls in flight.
    calls: HashMap<String, Call>,
}

/// An allowed call in flight.
struct Call {
    decision_id: String,
    reservation: Option<String>,
    started: Instant,
}

struct Gateway {
    server: String,
    config: Config,
    timeout: Duration,
    state: Mutex<State>,
    /// The threads recording outcomes, joined before the gateway exits.
    recorders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Runs the gateway; exits with the target server's exit code.
pub fn run(args: McpGatewayArgs) -> ExitCode {
    match gateway(args) {
        Ok(code) => code,
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("mandate mcp-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

fn gateway(args: McpGatewayArgs) -> anyhow::Result<ExitCode> {
    if args.server.is_empty() || !args.server.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) {
        bail!("`--server` must be a non-empty name of letters, digits, `_` and `-` (got `{}`)", args.server);
    }
    let config = Config::from_env()?;
    let (program, rest) = args.command.split_first().ok_or_else(|| anyhow!("no MCP server command after `--`"))?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting `{program}`"))?;
    let to_server = child.stdin.take().ok_or_else(|| anyhow!("no stdin for the MCP server"))?;
    let from_server = child.stdout.take().ok_or_else(|| anyhow!("no stdout for the MCP server"))?;
    let gateway = Arc::new(Gateway {
        server: args.server,
        config,
        timeout: Duration::from_millis(args.timeout_ms),
        state: Mutex::new(State::default()),
        recorders: Mutex::new(Vec::new()),
    });
    let back = {
        let gateway = Arc::clone(&gateway);
        std::thread::spawn(move || gateway.server_to_client(from_server))
    };
    let forward = gateway.client_to_server(to_server);
    let status = child.wait().context("waiting for the MCP server")?;
    let _ = back.join();
    let recorders = std::mem::take(&mut *gateway.recorders.lock().unwrap_or_else(PoisonError::into_inner));
    for recorder in recorders {
        let _ = recorder.join();
    }
    forward?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// One message on our stdout, whole, whichever pump writes it.
fn write_client(line: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line)?;
    if !line.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads one line (with its newline, if any) of at most [`LINE_BYTES_MAX`]
/// bytes; `None` at the end.
fn read_line<R: BufRead>(reader: &mut R, buffer: &mut Vec<u8>) -> anyhow::Result<Option<()>> {
    buffer.clear();
    let read = std::io::Read::take(&mut *reader, LINE_BYTES_MAX as u64).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    if buffer.len() >= LINE_BYTES_MAX && !buffer.ends_with(b"\n") {
        bail!("a message longer than {LINE_BYTES_MAX} bytes");
    }
    Ok(Some(()))
}

/// A request's or response's id as JSON text (`1` and `"1"` differ).
fn id_key(message: &Map<String, Value>) -> Option<String> {
    message.get("id").filter(|id| !id.is_null()).map(Value::to_string)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gateway {
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The client's messages to the server, until our stdin ends.
    fn client_to_server(&self, mut to_server: ChildStdin) -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        let mut reader = BufReader::new(stdin.lock());
        let mut line = Vec::new();
        while read_line(&mut reader, &mut line)?.is_some() {
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(message)) => {
                    let method = message.get("method").and_then(Value::as_str);
                    match (method, id_key(&message)) {
                        (Some("tools/call"), Some(id)) => {
                            if let Some(answer) = self.call(&message, &id) {
                                write_client(&answer)?;
                                continue;
                            }
                        }
                        (Some("tools/call"), None) => {
                            // A call without an id cannot be answered: never forwarded unasked.
                            eprintln!("mandate mcp-gateway: dropped a `tools/call` without an id");
                            continue;
                        }
                        (Some("tools/list"), Some(id)) => {
                            lock(&self.state).lists.insert(id);
                        }
                        _ => {}
                    }
                }
                Ok(Value::Array(batch)) => {
                    // JSON-RPC batches left MCP in 2025-06-18; one holding a
                    // call or a listing would pass by the checks: refused.
                    let checked = |item: &Value| {
                        matches!(item.get("method").and_then(Value::as_str), Some("tools/call" | "tools/list"))
                    };
                    if batch.iter().any(checked) {
                        for item in batch.iter().filter(|item| item.get("id").is_some_and(|id| !id.is_null())) {
                            let id = item.get("id").cloned().unwrap_or(Value::Null);
                            let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600,
                                "message": "the Mandate gateway does not take batches holding tools/call or tools/list"}});
                            write_client(&serde_json::to_vec(&error)?)?;
                        }
                        continue;
                    }
                }
                _ => {}
            }
            if to_server.write_all(&line).and_then(|()| to_server.flush()).is_err() {
                break;
            }
        }
        // Closing the server's stdin asks it to end.
        drop(to_server);
        Ok(())
    }

    /// Authorizes a `tools/call`: `None` to forward it, else the answer to
    /// write back instead.
    fn call(&self, message: &Map<String, Value>, id: &str) -> Option<Vec<u8>> {
        let reason = match self.authorize_call(message) {
            Ok(Ok(call)) => {
                lock(&self.state).calls.insert(id.to_owned(), call);
                return None;
            }
            Ok(Err(reason)) => reason,
            Err(error) => {
                let message = format!("{error:#}").replace('\n', " ");
                format!("the Mandate gateway could not authorize this call, so it was not made: {message}")
            }
        };
        let mut result = json!({"content": [{"type": "text", "text": reason}], "isError": true});
        // 2026-07-28 (a request stamped with its version in `_meta`) requires
        // `resultType` on every result; the handshake generation has none.
        let modern = message
            .get("params")
            .and_then(|params| params.get("_meta"))
            .and_then(|meta| meta.get(PROTOCOL_VERSION_META))
            .and_then(Value::as_str)
            .is_some();
        if modern && let Value::Object(result) = &mut result {
            result.insert("resultType".into(), "complete".into());
        }
        let answer =
            json!({"jsonrpc": "2.0", "id": message.get("id").cloned().unwrap_or(Value::Null), "result": result});
        Some(serde_json::to_vec(&answer).unwrap_or_default())
    }

    /// `Ok(Ok(call))` when allowed, `Ok(Err(reason))` when refused.
    fn authorize_call(&self, message: &Map<String, Value>) -> anyhow::Result<Result<Call, String>> {
        let params = message.get("params").and_then(Value::as_object);
        let tool = params
            .and_then(|params| params.get("name"))
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| anyhow!("the call names no tool"))?;
        let arguments = params.and_then(|params| params.get("arguments")).cloned().unwrap_or(Value::Null);
        let action = self.action(tool);
        let mut body = self.question(tool, Some(&arguments));
        let raw_ok =
            mandate_log::json::check_numbers(&arguments).is_ok() && mandate_log::json::canonicalize(&arguments).is_ok();
        if raw_ok && !arguments.is_null() {
            body.insert("input".into(), arguments.clone());
        }
        let mut bytes = serde_json::to_vec(&body)?;
        if bytes.len() > crate::hook::REQUEST_BODY_BYTES_MAX {
            body.remove("input");
            bytes = serde_json::to_vec(&body)?;
        }
        let started = Instant::now();
        let answer = request(&self.config, "POST", "/v1/authorize", Some(&bytes), self.deadline())?;
        let decision = answer.get("decision").and_then(Value::as_str).unwrap_or_default();
        let decision_id = answer.get("decision_id").and_then(Value::as_str).unwrap_or_default();
        match decision {
            "allow" => Ok(Ok(Call {
                decision_id: decision_id.to_owned(),
                reservation: answer.pointer("/reservation/id").and_then(Value::as_str).map(ToOwned::to_owned),
                started,
            })),
            "pending" => {
                let approval = answer.pointer("/approval/id").and_then(Value::as_str).unwrap_or("?");
                Ok(Err(format!(
                    "`{action}` waits for approval {approval} (decision {decision_id}); ask again once it is approved"
                )))
            }
            "deny" => Ok(Err(format!("`{action}` denied: {} (decision {decision_id})", reasons(&answer)))),
            other => bail!("the server answered an unknown decision `{other}`"),
        }
    }

    fn action(&self, tool: &str) -> String {
        format!("mcp.{}.{tool}", self.server)
    }

    /// The body of an authorize request for `tool`; `arguments` `None` for a
    /// probe (the context then says `probe: true`).
    fn question(&self, tool: &str, arguments: Option<&Value>) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("client".into(), "mcp-gateway".into());
        context.insert("server".into(), self.server.clone().into());
        context.insert("tool".into(), tool.into());
        match arguments {
            Some(arguments) => {
                let cedar = cedar_value(arguments, 0).unwrap_or_else(|| Value::Object(Map::new()));
                context.insert("arguments".into(), cedar);
            }
            None => {
                context.insert("probe".into(), true.into());
            }
        }
        let mut body = Map::new();
        body.insert("action".into(), self.action(tool).into());
        body.insert("resource".into(), format!("mcp://{}/{tool}", self.server).into());
        body.insert("context".into(), Value::Object(context));
        body
    }

    /// The server's messages to the client, until the server's stdout ends.
    fn server_to_client(self: Arc<Self>, from_server: std::process::ChildStdout) {
        let mut reader = BufReader::new(from_server);
        let mut line = Vec::new();
        while let Ok(Some(())) = read_line(&mut reader, &mut line) {
            let mut out = None;
            if let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(&line)
                && !message.contains_key("method")
                && let Some(id) = id_key(&message)
            {
                let (listed, call) = {
                    let mut state = lock(&self.state);
                    (state.lists.remove(&id), state.calls.remove(&id))
                };
                if listed {
                    if let Some(Value::Array(tools)) = message.get_mut("result").and_then(|r| r.get_mut("tools")) {
                        let kept = self.allowed_tools(std::mem::take(tools));
                        *tools = kept;
                        let mut bytes = serde_json::to_vec(&message).unwrap_or_default();
                        bytes.push(b'\n');
                        out = Some(bytes);
                    }
                } else if let Some(call) = call {
                    let failed = message.contains_key("error")
                        || message.get("result").and_then(|result| result.get("isError")).and_then(Value::as_bool)
                            == Some(true);
                    let result = message.get("result").cloned().unwrap_or(Value::Null);
                    let gateway = Arc::clone(&self);
                    let recorder = std::thread::spawn(move || {
                        if let Err(error) = gateway.record(&call, failed, &result) {
                            let message = format!("{error:#}").replace('\n', " ");
                            eprintln!("mandate mcp-gateway: recording the outcome of {}: {message}", call.decision_id);
                        }
                    });
                    self.recorders.lock().unwrap_or_else(PoisonError::into_inner).push(recorder);
                }
            }
            if write_client(out.as_deref().unwrap_or(&line)).is_err() {
                break;
            }
        }
    }

    /// The tools the agent may call, in their order; any failure drops them.
    fn allowed_tools(&self, tools: Vec<Value>) -> Vec<Value> {
        let names: Vec<Option<String>> = tools
            .iter()
            .map(|tool| tool.get("name").and_then(Value::as_str).filter(|name| !name.is_empty()).map(str::to_owned))
            .collect();
        let mut allowed = vec![false; tools.len()];
        let asked: Vec<(usize, &String)> =
            names.iter().enumerate().filter_map(|(i, name)| name.as_ref().map(|name| (i, name))).collect();
        for chunk in asked.chunks(PROBE_BATCH_MAX) {
            let answers = match self.probe_batch(chunk.iter().map(|(_, name)| name.as_str())) {
                Ok(answers) => answers,
                // A batch is refused whole when one action is outside the
                // token's scopes: ask one by one.
                Err(_) => chunk
                    .iter()
                    .map(|(_, name)| {
                        self.probe_batch(std::iter::once(name.as_str())).ok().and_then(|a| a.into_iter().next())
                    })
                    .map(|answer| answer.unwrap_or(Value::Null))
                    .collect(),
            };
            for ((i, _), answer) in chunk.iter().zip(answers) {
                if answer.get("decision").and_then(Value::as_str) == Some("allow") {
                    if let Some(slot) = allowed.get_mut(*i) {
                        *slot = true;
                    }
                    // A probe holds nothing: free what it reserved.
                    if let Some(reservation) = answer.pointer("/reservation/id").and_then(Value::as_str) {
                        let path = format!("/v1/reservations/{reservation}/void");
                        let _ = request(&self.config, "POST", &path, Some(b"{}"), self.deadline());
                    }
                }
            }
        }
        tools.into_iter().zip(allowed).filter_map(|(tool, allowed)| allowed.then_some(tool)).collect()
    }

    /// One batch probe: the answers, one per tool, in order.
    fn probe_batch<'a>(&self, tools: impl Iterator<Item = &'a str>) -> anyhow::Result<Vec<Value>> {
        let requests: Vec<Value> = tools.map(|tool| Value::Object(self.question(tool, None))).collect();
        let count = requests.len();
        let body = serde_json::to_vec(&json!({"requests": requests}))?;
        let answer = request(&self.config, "POST", "/v1/authorize/batch", Some(&body), self.deadline())?;
        let results = answer.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
        if results.len() != count {
            bail!("the batch answered {} results for {count} requests", results.len());
        }
        Ok(results)
    }

    /// Records an allowed call's outcome and settles (or voids) its reservation.
    fn record(&self, call: &Call, failed: bool, result: &Value) -> anyhow::Result<()> {
        let outcome = if failed { "failure" } else { "success" };
        let duration_ms = u64::try_from(call.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let event = json!({
            "decision_id": call.decision_id,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "output_digest": tool_call::digest(result),
            "attributes": {"client": "mcp-gateway", "server": self.server},
        });
        request(&self.config, "POST", "/v1/events", Some(&serde_json::to_vec(&event)?), self.deadline())?;
        if let Some(reservation) = &call.reservation {
            let (path, body) = if failed {
                (format!("/v1/reservations/{reservation}/void"), json!({}))
            } else {
                (format!("/v1/reservations/{reservation}/settle"), json!({"amounts": {}}))
            };
            request(&self.config, "POST", &path, Some(&serde_json::to_vec(&body)?), self.deadline())?;
        }
        Ok(())
    }
}
