//! `mandate import claude|codex|gemini FILE`: a coding agent's transcript
//! as log entries, so that past runs become verifiable history.
//!
//! # What is read
//!
//! The transcripts the clients print in their machine-readable modes, one
//! JSON event per line (captured examples: `tests/fixtures/agent-clients/`,
//! copied from `/work/shared/fixtures/agent-clients/`):
//!
//! | client | command | a call | its result | session |
//! |---|---|---|---|---|
//! | Claude Code | `claude -p --output-format stream-json --verbose` | `tool_use` block of an `assistant` line | `tool_result` block (`tool_use_id`) of a `user` line | `session_id` |
//! | Codex | `codex exec --json` | `item.started` / `item.completed` (`command_execution`, `mcp_tool_call`, `file_change`) | the same item, joined by its `id` | `thread_id` |
//! | Gemini CLI | `gemini --output-format stream-json` | `tool_use` | `tool_result` (`tool_id`) | `session_id` |
//!
//! Each call is named as the client's *hook* names the same call, so that
//! [`mandate_core::tool_call::action_for`] gives the action the hook asks
//! for and one policy reads both: Codex's `command_execution` is `Bash` with
//! the script alone as `command` (the transcript shows it wrapped as
//! `/bin/bash -lc '…'`), its `file_change` is `apply_patch`, and an MCP tool
//! is `mcp__<server>__<tool>` for every client (Gemini's own
//! `mcp_<server>_<tool>` included), hence `mcp.<server>.<tool>`. Where the
//! transcript holds the hook's input (Claude Code, Gemini, Codex commands
//! and MCP tools), `input_digest` is the digest the hook's request carries.
//!
//! The outcome is `denied` when the client says a hook or a permission rule
//! refused the call (Claude Code: `tool_result_meta` or the final
//! `permission_denials`; Codex: status `declined`; Gemini: an error of type
//! `policy_violation`), `failure` when the tool failed, `success`, or
//! `unknown` when the transcript ends before the result. (Codex prints
//! nothing at all for a call its hook blocked, so there is nothing to
//! import for it.)
//!
//! Lines that are not tool calls, and event types or fields this version
//! does not know, are skipped; a line that is not JSON is an error naming
//! it, and so is a transcript none of whose lines is the client's event.
//!
//! # What is sent
//!
//! `POST /v1/imports`, in parts of at most [`PART_CALLS_MAX`] calls, each
//! naming the SHA-256 of the whole transcript and its part number: the
//! server writes each call as an `event.imported` entry and answers a part
//! it already has with the first import's indexes, writing nothing, so
//! importing a file twice (or again after an interruption) never writes a
//! call twice. The parts are cut by count alone, never by size, so that
//! `--include-content` cannot shift a call into another part; instead each
//! part's content (the tool input and output, at most
//! [`INPUT_CONTENT_BYTES_MAX`] and [`OUTPUT_CONTENT_BYTES_MAX`] each) is
//! shared out so that the body stays under [`PART_BODY_BYTES_TARGET`], and
//! whatever was cut is flagged `truncated`. By default only digests leave
//! the machine.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mandate_core::tool_call::{self, CONTEXT_DEPTH_MAX, cedar_value, outcome_of};
use mandate_server::registry::ADMIN_KEY_PREFIX;
use serde_json::{Map, Value, json};

use crate::hook;

/// The largest transcript read (a long Claude Code session is tens of MB).
pub const TRANSCRIPT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// The most calls in one request (the server's limit).
pub const PART_CALLS_MAX: usize = 100;

/// The size a request body is kept under, below the server's 256 KiB.
pub const PART_BODY_BYTES_TARGET: usize = 200 * 1024;

/// The most of a tool input sent with `--include-content`: its RFC 8785
/// form (the server's limit).
pub const INPUT_CONTENT_BYTES_MAX: usize = 16 * 1024;

/// The most of a tool output's text sent with `--include-content` (the
/// server's limit).
pub const OUTPUT_CONTENT_BYTES_MAX: usize = 16 * 1024;

/// The longest `call_id`, `session_id`, `tool` and `action` (the server's
/// limit).
pub const FIELD_BYTES_MAX: usize = 256;

/// How long one part's request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What `"input":`, `"output":`, `"truncated":true` and their commas add to
/// a call, at most.
const CONTENT_KEYS_BYTES: usize = 48;

/// The client that wrote a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Client {
    /// Claude Code: `claude -p --output-format stream-json --verbose`.
    #[value(alias = "claude-code")]
    Claude,
    /// Codex CLI: `codex exec --json`.
    Codex,
    /// Gemini CLI: `gemini --output-format stream-json`.
    Gemini,
}

impl Client {
    /// The `source` of the import, as the server names it.
    pub fn source(self) -> &'static str {
        match self {
            Client::Claude => "claude-code",
            Client::Codex => "codex",
            Client::Gemini => "gemini",
        }
    }

    /// What its transcripts are called, for messages.
    fn transcript_kind(self) -> &'static str {
        match self {
            Client::Claude => "Claude Code stream-json",
            Client::Codex => "Codex `exec --json`",
            Client::Gemini => "Gemini CLI stream-json",
        }
    }
}

/// `mandate import`'s arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The client that wrote the transcript.
    #[arg(value_enum, value_name = "CLIENT")]
    client: Client,
    /// The transcript (JSON lines), or `-` to read it from stdin.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The identity that made the calls: required with an admin key
    /// (`mk_…`); an agent token (`mt_…`) imports as its own identity, and
    /// may name only that one.
    #[arg(long, value_name = "ID")]
    identity: Option<String>,
    /// Also send each call's input and output (cut to 16 KiB each, or less
    /// to keep a request under 200 KiB, and flagged `truncated` when cut).
    /// By default only their SHA-256 digests leave this machine.
    #[arg(long)]
    include_content: bool,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The tool ran and reported no error.
    Success,
    /// The tool ran and failed (or was interrupted).
    Failure,
    /// A hook or a permission rule refused the call: it did not run.
    Denied,
    /// The transcript holds no result for the call.
    Unknown,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One tool call of a transcript, joined with its result.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedCall {
    /// The client's id for the call (`toolu_…`, `item_3`, Gemini's `tool_id`).
    pub call_id: Option<String>,
    /// The client's session (Codex: the thread).
    pub session_id: Option<String>,
    /// The tool's name as the client's hook sends it.
    pub tool: String,
    /// `tool.<name>` or `mcp.<server>.<tool>`.
    pub action: String,
    /// The tool input, as the hook would see it.
    pub input: Value,
    /// `sha256:` of the input's RFC 8785 form.
    pub input_digest: String,
    /// How the call ended.
    pub outcome: Outcome,
    /// The result the client reported, if any.
    pub output: Option<Value>,
    /// `sha256:` of the output's RFC 8785 form, if there is an output.
    pub output_digest: Option<String>,
    /// When the call was made (RFC 3339, UTC), if the transcript says.
    pub started_at: Option<String>,
    /// The transcript line (from 1) the call appears on.
    pub line: usize,
}

/// Why a transcript could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No line holds anything.
    #[error("the transcript is empty")]
    Empty,
    /// A line is not JSON.
    #[error("line {line}: not JSON: {message}")]
    NotJson {
        /// The line, from 1.
        line: usize,
        /// The parser's complaint.
        message: String,
    },
    /// An id or name the log cannot take: longer than [`FIELD_BYTES_MAX`],
    /// or holding control characters.
    #[error("line {line}: the call's `{field}` is longer than {FIELD_BYTES_MAX} bytes or holds control characters")]
    BadField {
        /// The line, from 1.
        line: usize,
        /// `call_id`, `session_id`, `tool` or `action`.
        field: &'static str,
    },
    /// JSON, but none of it the client's events.
    #[error("no line is a {kind} event (the first is line {line}): is this the right client?")]
    Unrecognised {
        /// What the client's transcripts are called.
        kind: &'static str,
        /// The first non-blank line.
        line: usize,
    },
}

/// The tool calls of a transcript, in the order they were made.
pub fn parse(client: Client, transcript: &[u8]) -> Result<Vec<ImportedCall>, ParseError> {
    let mut parser = Parser { client, calls: Vec::new(), by_key: HashMap::new(), session: None };
    let mut first = None;
    let mut recognised = false;
    for (index, line) in transcript.split(|&byte| byte == b'\n').enumerate() {
        let number = index + 1;
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        first.get_or_insert(number);
        let event: Value = serde_json::from_slice(line)
            .map_err(|error| ParseError::NotJson { line: number, message: json_message(&error) })?;
        // JSON that is not an object is no event of any client: skipped.
        if let Value::Object(event) = event {
            recognised |= parser.event(&event, number)?;
        }
    }
    let Some(first) = first else { return Err(ParseError::Empty) };
    if !recognised {
        return Err(ParseError::Unrecognised { kind: client.transcript_kind(), line: first });
    }
    Ok(parser.calls)
}

/// Runs `mandate import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let token = std::env::var("MANDATE_TOKEN").unwrap_or_default();
    if token.trim().is_empty() {
        bail!(
            "`MANDATE_TOKEN` is not set: give an admin key (`mk_…`) with `--identity`, or the agent's token (`mt_…`)"
        );
    }
    if token.trim().starts_with(ADMIN_KEY_PREFIX) && args.identity.is_none() {
        bail!("an admin key imports on behalf of an identity: give `--identity ID`");
    }
    let config = hook::Config::from_env()?;
    let name = if args.file == Path::new("-") { "stdin".to_owned() } else { args.file.display().to_string() };
    let transcript = read_transcript(&args.file)?;
    let sha256 = mandate_log::Hash::digest(&transcript).to_hex();
    let calls = parse(args.client, &transcript).with_context(|| {
        if args.file == Path::new("-") { "the transcript on stdin".to_owned() } else { format!("`{name}`") }
    })?;
    drop(transcript);
    if calls.is_empty() {
        println!("no tool calls in {name}: nothing to import");
        return Ok(());
    }
    let header = PartHeader { identity: args.identity.as_deref(), source: args.client.source(), sha256: &sha256 };
    let parts: Vec<&[ImportedCall]> = calls.chunks(PART_CALLS_MAX).collect();
    let progress = progress_bar(calls.len() as u64);
    let (mut written, mut replayed) = (Vec::new(), Vec::new());
    for (part, part_calls) in parts.iter().enumerate() {
        let sent = send_part(&config, &header, part, part_calls, args.include_content).map_err(|error| {
            progress.finish_and_clear();
            let first = part * PART_CALLS_MAX + 1;
            let last = part * PART_CALLS_MAX + part_calls.len();
            let done = if part == 0 {
                String::new()
            } else {
                " (the calls before it are in the log: run the command again to import the rest)".to_owned()
            };
            if parts.len() == 1 {
                error
            } else {
                anyhow!("part {} of {} (tool calls {first}–{last}): {error:#}{done}", part + 1, parts.len())
            }
        })?;
        if sent.replayed {
            replayed.extend(sent.indexes)
        } else {
            written.extend(sent.indexes)
        }
        progress.inc(part_calls.len() as u64);
    }
    progress.finish_and_clear();
    println!("{}", summary(&name, calls.len(), &written, &replayed));
    Ok(())
}

// ---------------------------------------------------------------- parsing

/// The calls seen so far, and the session they belong to.
struct Parser {
    client: Client,
    calls: Vec<ImportedCall>,
    /// (session, call id) → index in `calls`.
    by_key: HashMap<(String, String), usize>,
    /// The session of the lines that do not name it (Codex, Gemini).
    session: Option<String>,
}

/// Claude Code's event types (`stream_event` with `--include-partial-messages`).
const CLAUDE_TYPES: [&str; 7] =
    ["system", "assistant", "user", "result", "stream_event", "tool_progress", "auth_status"];

/// Codex's event types.
const CODEX_TYPES: [&str; 8] = [
    "thread.started",
    "turn.started",
    "turn.completed",
    "turn.failed",
    "item.started",
    "item.updated",
    "item.completed",
    "error",
];

/// Gemini CLI's event types.
const GEMINI_TYPES: [&str; 6] = ["init", "message", "tool_use", "tool_result", "error", "result"];

/// Gemini's error types for a call its policy or a hook refused.
const GEMINI_DENIALS: [&str; 1] = ["policy_violation"];

impl Parser {
    /// Reads one event; whether it is one of the client's.
    fn event(&mut self, event: &Map<String, Value>, line: usize) -> Result<bool, ParseError> {
        match self.client {
            Client::Claude => self.claude(event, line),
            Client::Codex => self.codex(event, line),
            Client::Gemini => self.gemini(event, line),
        }
    }

    fn claude(&mut self, event: &Map<String, Value>, line: usize) -> Result<bool, ParseError> {
        let kind = text(event, "type").unwrap_or_default();
        // Every Claude Code event names its session; Gemini's `result` does not.
        let Some(session) = text(event, "session_id").filter(|_| CLAUDE_TYPES.contains(&kind)) else {
            return Ok(false);
        };
        let blocks = event.get("message").and_then(|message| message.get("content")).and_then(Value::as_array);
        let blocks = blocks.map(Vec::as_slice).unwrap_or_default();
        match kind {
            "assistant" => {
                for block in blocks.iter().filter(|block| block.get("type") == Some(&json!("tool_use"))) {
                    let (Some(id), Some(name)) = (str_at(block, "id"), str_at(block, "name")) else { continue };
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    self.start(Some(session), id, name.to_owned(), input, text(event, "timestamp"), line)?;
                }
            }
            "user" => {
                let results: Vec<&Value> =
                    blocks.iter().filter(|block| block.get("type") == Some(&json!("tool_result"))).collect();
                // `tool_use_result` is the tool's own answer (what a
                // PostToolUse hook gets as `tool_response`), given when
                // the line carries one result.
                let whole = event.get("tool_use_result").filter(|_| results.len() == 1);
                for block in results {
                    let Some(id) = str_at(block, "tool_use_id") else { continue };
                    let refused = claude_refused(event, id);
                    let Some(call) = self.find(Some(session), id) else { continue };
                    let output = whole.or_else(|| block.get("content")).cloned().unwrap_or(Value::Null);
                    let outcome = if refused {
                        Outcome::Denied
                    } else if block.get("is_error") == Some(&Value::Bool(true)) {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    call.resolve(outcome, Some(output));
                }
            }
            "result" => {
                let denials = event.get("permission_denials").and_then(Value::as_array);
                for denial in denials.map(Vec::as_slice).unwrap_or_default() {
                    if let Some(call) = str_at(denial, "tool_use_id").and_then(|id| self.find(Some(session), id)) {
                        call.outcome = Outcome::Denied;
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }

    fn codex(&mut self, event: &Map<String, Value>, line: usize) -> Result<bool, ParseError> {
        let kind = text(event, "type").unwrap_or_default();
        if !CODEX_TYPES.contains(&kind) {
            return Ok(false);
        }
        if kind == "thread.started" {
            self.session = text(event, "thread_id").map(ToOwned::to_owned);
        }
        if let Some(Value::Object(item)) = event.get("item").filter(|_| kind.starts_with("item.")) {
            self.codex_item(item, line)?;
        }
        Ok(true)
    }

    /// One item's state: the call starts at its first sight and ends with
    /// the status that closes it.
    fn codex_item(&mut self, item: &Map<String, Value>, line: usize) -> Result<(), ParseError> {
        let Some(id) = text(item, "id") else { return Ok(()) };
        let kind = text(item, "type").unwrap_or_default();
        let (tool, input) = match kind {
            "command_execution" => {
                let Some(command) = text(item, "command") else { return Ok(()) };
                ("Bash".to_owned(), json!({ "command": shell_script(command).unwrap_or_else(|| command.to_owned()) }))
            }
            "mcp_tool_call" => {
                let (Some(server), Some(name)) = (text(item, "server"), text(item, "tool")) else { return Ok(()) };
                let arguments = item.get("arguments").filter(|arguments| !arguments.is_null());
                (format!("mcp__{server}__{name}"), arguments.cloned().unwrap_or_else(|| json!({})))
            }
            "file_change" => {
                ("apply_patch".to_owned(), json!({ "changes": item.get("changes").cloned().unwrap_or(json!([])) }))
            }
            _ => return Ok(()),
        };
        let session = self.session.clone();
        self.start(session.as_deref(), id, tool, input, None, line)?;
        let status = text(item, "status").unwrap_or_default();
        let outcome = match status {
            "declined" => Outcome::Denied,
            "failed" => Outcome::Failure,
            "completed" => {
                let failed = match kind {
                    "command_execution" => item.get("exit_code").and_then(Value::as_i64).is_some_and(|code| code != 0),
                    "mcp_tool_call" => {
                        item.get("error").is_some_and(|error| !error.is_null())
                            || item.get("result").is_some_and(|result| outcome_of(result) == "failure")
                    }
                    _ => false,
                };
                if failed { Outcome::Failure } else { Outcome::Success }
            }
            // `in_progress`, or a status this version does not know.
            _ => return Ok(()),
        };
        let output = match kind {
            "command_execution" => item.get("aggregated_output").cloned().unwrap_or(json!("")),
            "mcp_tool_call" => {
                let result = item.get("result").filter(|result| !result.is_null());
                result.or_else(|| item.get("error")).cloned().unwrap_or(Value::Null)
            }
            _ => json!(status),
        };
        if let Some(call) = self.find(session.as_deref(), id) {
            call.resolve(outcome, Some(output));
        }
        Ok(())
    }

    fn gemini(&mut self, event: &Map<String, Value>, line: usize) -> Result<bool, ParseError> {
        let kind = text(event, "type").unwrap_or_default();
        // Every Gemini CLI event is stamped; Claude Code's `result` is not.
        let timestamp = text(event, "timestamp");
        if timestamp.is_none() || !GEMINI_TYPES.contains(&kind) {
            return Ok(false);
        }
        let session = self.session.clone();
        match kind {
            "init" => self.session = text(event, "session_id").map(ToOwned::to_owned),
            "tool_use" => {
                let (Some(id), Some(name)) = (text(event, "tool_id"), text(event, "tool_name")) else {
                    return Ok(true);
                };
                let input = event.get("parameters").filter(|input| !input.is_null());
                let input = input.cloned().unwrap_or_else(|| json!({}));
                self.start(session.as_deref(), id, gemini_tool(name), input, timestamp, line)?;
            }
            "tool_result" => {
                let Some(call) = text(event, "tool_id").and_then(|id| self.find(session.as_deref(), id)) else {
                    return Ok(true);
                };
                let error = event.get("error").filter(|error| !error.is_null());
                let outcome = match text(event, "status") {
                    Some("success") => Outcome::Success,
                    _ => match error.and_then(|error| str_at(error, "type")) {
                        Some(kind) if GEMINI_DENIALS.contains(&kind) => Outcome::Denied,
                        _ => Outcome::Failure,
                    },
                };
                let output = event.get("output").or(error).cloned().unwrap_or(Value::Null);
                call.resolve(outcome, Some(output));
            }
            _ => {}
        }
        Ok(true)
    }

    /// Records a call at its first sight (a later sight of the same id
    /// changes nothing).
    fn start(
        &mut self,
        session: Option<&str>,
        id: &str,
        tool: String,
        input: Value,
        timestamp: Option<&str>,
        line: usize,
    ) -> Result<(), ParseError> {
        let key = (session.unwrap_or_default().to_owned(), id.to_owned());
        if self.by_key.contains_key(&key) {
            return Ok(());
        }
        let action = tool_call::action_for(&tool);
        for (field, value) in
            [("call_id", id), ("session_id", key.0.as_str()), ("tool", tool.as_str()), ("action", action.as_str())]
        {
            if value.len() > FIELD_BYTES_MAX || value.chars().any(char::is_control) {
                return Err(ParseError::BadField { line, field });
            }
        }
        let call = ImportedCall {
            call_id: Some(id.to_owned()),
            session_id: session.map(ToOwned::to_owned),
            input_digest: tool_call::digest(&input),
            tool,
            action,
            input,
            outcome: Outcome::Unknown,
            output: None,
            output_digest: None,
            started_at: timestamp.and_then(rfc3339),
            line,
        };
        self.by_key.insert(key, self.calls.len());
        self.calls.push(call);
        Ok(())
    }

    fn find(&mut self, session: Option<&str>, id: &str) -> Option<&mut ImportedCall> {
        let index = *self.by_key.get(&(session.unwrap_or_default().to_owned(), id.to_owned()))?;
        self.calls.get_mut(index)
    }
}

impl ImportedCall {
    fn resolve(&mut self, outcome: Outcome, output: Option<Value>) {
        self.outcome = outcome;
        self.output_digest = output.as_ref().map(tool_call::digest);
        self.output = output;
    }
}

/// Whether Claude Code says on this line that a hook or a permission rule
/// refused call `id`.
fn claude_refused(event: &Map<String, Value>, id: &str) -> bool {
    let meta = event.get("tool_result_meta").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    meta.iter().filter(|meta| str_at(meta, "id") == Some(id)).any(|meta| {
        let decision = meta.pointer("/permission_decision/decision").and_then(Value::as_str);
        matches!(decision, Some("reject" | "deny"))
    })
}

/// Gemini CLI's name for an MCP tool (`mcp_<server>_<tool>`, the server
/// ending at the first `_`, as Gemini's own policy engine reads it) in the
/// form the other clients use, `mcp__<server>__<tool>`.
fn gemini_tool(name: &str) -> String {
    if !name.starts_with("mcp__")
        && let Some((server, tool)) = name.strip_prefix("mcp_").and_then(|rest| rest.split_once('_'))
        && !server.is_empty()
        && !tool.is_empty()
    {
        return format!("mcp__{server}__{tool}");
    }
    name.to_owned()
}

/// The script of `<shell> -lc <script>` (how Codex reports a shell command
/// whose hook payload carries the script alone), or `None` when `command`
/// is anything else.
fn shell_script(command: &str) -> Option<String> {
    let mut parts = command.splitn(3, ' ');
    let (shell, flag, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = shell.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"/._-".contains(&byte));
    let known = matches!(shell.rsplit('/').next(), Some("bash" | "zsh" | "sh"));
    if !plain || !known || !matches!(flag, "-lc" | "-c") {
        return None;
    }
    shell_word(rest)
}

/// `text` read as exactly one POSIX shell word with its quotes removed, or
/// `None` when it is several words or would need the shell to expand
/// anything (then the command is kept whole).
fn shell_word(text: &str) -> Option<String> {
    let mut word = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => word.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('$' | '`' | '"' | '\\') => word.push(c),
                        '\n' => {}
                        c => {
                            word.push('\\');
                            word.push(c);
                        }
                    },
                    '$' | '`' => return None,
                    c => word.push(c),
                }
            },
            '\\' => match chars.next()? {
                '\n' => {}
                c => word.push(c),
            },
            c if c.is_alphanumeric() || "-_./:,+@%=".contains(c) => word.push(c),
            _ => return None,
        }
    }
    Some(word)
}

/// The transcript's timestamp as it is when it is RFC 3339, else as jiff
/// writes it (RFC 3339, UTC) when jiff can read it, else `None`.
fn rfc3339(text: &str) -> Option<String> {
    let timestamp = text.parse::<jiff::Timestamp>().ok()?;
    Some(if rfc3339_shape(text) { text.to_owned() } else { timestamp.to_string() })
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, letter for
/// letter.
fn rfc3339_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|part| part.iter().all(u8::is_ascii_digit));
    let at = |index: usize, byte: u8| bytes.get(index) == Some(&byte);
    let date_time = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    let mut rest = text.get(19..).unwrap_or_default();
    if let Some(fraction) = rest.strip_prefix('.') {
        let length = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = fraction.get(length..).filter(|_| length > 0).unwrap_or("?");
    }
    let offset = rest.as_bytes();
    let zone = rest == "Z"
        || (offset.len() == 6
            && matches!(offset.first(), Some(b'+' | b'-'))
            && offset.get(3) == Some(&b':')
            && [1, 2, 4, 5].iter().all(|&index| offset.get(index).is_some_and(u8::is_ascii_digit)));
    date_time && zone
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str).filter(|text| !text.is_empty())
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// serde_json's message without its position (always line 1 here).
fn json_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rsplit_once(" at line ") {
        Some((what, _)) => format!("{what} at column {}", error.column()),
        None => message,
    }
}

// ---------------------------------------------------------------- sending

/// What every part of one import names.
struct PartHeader<'a> {
    identity: Option<&'a str>,
    source: &'static str,
    sha256: &'a str,
}

/// The server's answer to one part.
struct Sent {
    replayed: bool,
    indexes: Vec<u64>,
}

fn send_part(
    config: &hook::Config,
    header: &PartHeader<'_>,
    part: usize,
    calls: &[ImportedCall],
    include_content: bool,
) -> anyhow::Result<Sent> {
    let body = part_body(header, part, calls, include_content)?;
    let answer = hook::request(config, "POST", "/v1/imports", Some(&body), Instant::now() + REQUEST_TIMEOUT)?;
    // Paired with what was sent: an answer for another part or file is a fault.
    let echoed = answer.get("transcript_sha256").and_then(Value::as_str) == Some(header.sha256)
        && answer.get("part").and_then(Value::as_u64) == Some(part as u64)
        && answer.get("calls").and_then(Value::as_u64) == Some(calls.len() as u64);
    let indexes: Option<Vec<u64>> =
        answer.get("log_indexes").and_then(Value::as_array).map(|list| list.iter().filter_map(Value::as_u64).collect());
    match indexes {
        Some(indexes) if echoed && indexes.len() == calls.len() => {
            Ok(Sent { replayed: answer.get("replayed") == Some(&Value::Bool(true)), indexes })
        }
        _ => bail!("the server's answer does not match the part sent: {answer}"),
    }
}

/// One request's body (see the module documentation).
fn part_body(header: &PartHeader<'_>, part: usize, calls: &[ImportedCall], content: bool) -> anyhow::Result<Vec<u8>> {
    let mut objects: Vec<Map<String, Value>> = calls.iter().map(wire_call).collect();
    let body = |objects: &[Map<String, Value>]| -> anyhow::Result<Vec<u8>> {
        let mut body = Map::new();
        if let Some(identity) = header.identity {
            body.insert("identity".into(), identity.into());
        }
        body.insert("source".into(), header.source.into());
        body.insert("transcript_sha256".into(), header.sha256.into());
        body.insert("part".into(), part.into());
        body.insert("calls".into(), objects.iter().cloned().map(Value::Object).collect());
        Ok(serde_json::to_vec(&Value::Object(body))?)
    };
    if content {
        let bare = body(&objects)?.len();
        let budget =
            PART_BODY_BYTES_TARGET.saturating_sub(bare).saturating_sub(calls.len().saturating_mul(CONTENT_KEYS_BYTES));
        let contents: Vec<Content> = calls.iter().map(Content::of).collect();
        let needs: Vec<usize> = contents.iter().map(Content::need).collect();
        for ((object, content), share) in objects.iter_mut().zip(&contents).zip(water_fill(&needs, budget)) {
            content.fit(object, share);
        }
    }
    let body = body(&objects)?;
    if body.len() > hook::REQUEST_BODY_BYTES_MAX {
        bail!(
            "part {part} is {} bytes, over the server's {} (a fault of this command)",
            body.len(),
            hook::REQUEST_BODY_BYTES_MAX
        );
    }
    Ok(body)
}

/// A call's fields on the wire, without content.
fn wire_call(call: &ImportedCall) -> Map<String, Value> {
    let mut object = Map::new();
    if let Some(id) = &call.call_id {
        object.insert("call_id".into(), id.as_str().into());
    }
    if let Some(session) = &call.session_id {
        object.insert("session_id".into(), session.as_str().into());
    }
    object.insert("tool".into(), call.tool.as_str().into());
    object.insert("action".into(), call.action.as_str().into());
    object.insert("input_digest".into(), call.input_digest.as_str().into());
    object.insert("outcome".into(), call.outcome.as_str().into());
    if let Some(digest) = &call.output_digest {
        object.insert("output_digest".into(), digest.as_str().into());
    }
    if let Some(started_at) = &call.started_at {
        object.insert("started_at".into(), started_at.as_str().into());
    }
    object
}

/// A call's input and output as `--include-content` sends them, before
/// fitting.
struct Content {
    /// The input as the log can hold it (I-JSON numbers, bounded depth), if
    /// it is an object.
    input: Option<Value>,
    /// Its RFC 8785 size.
    input_bytes: usize,
    /// The output's text: a string as is, anything else as JSON.
    output: Option<String>,
}

impl Content {
    fn of(call: &ImportedCall) -> Content {
        let loggable = mandate_log::json::check_numbers(&call.input).is_ok() && depth(&call.input) <= CONTEXT_DEPTH_MAX;
        let input = if loggable { Some(call.input.clone()) } else { cedar_value(&call.input, 0) };
        let input = input.filter(Value::is_object);
        let input_bytes = input.as_ref().map_or(0, canonical_len);
        let output = call.output.as_ref().map(|output| match output {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        Content { input, input_bytes, output }
    }

    /// The body bytes the whole content takes, within the server's limits.
    fn need(&self) -> usize {
        self.input_need() + self.output_need()
    }

    fn input_need(&self) -> usize {
        self.input_bytes.min(INPUT_CONTENT_BYTES_MAX)
    }

    fn output_need(&self) -> usize {
        self.output.as_deref().map_or(0, |text| cut_text(text, OUTPUT_CONTENT_BYTES_MAX, usize::MAX).1)
    }

    /// Adds what fits in `share` bytes to the call's object.
    fn fit(&self, object: &mut Map<String, Value>, share: usize) {
        let mut truncated = self.input.is_none() && self.input_bytes == 0;
        let shares = water_fill(&[self.input_need(), self.output_need()], share);
        let (input_share, output_share) = (shares.first().copied().unwrap_or(0), shares.get(1).copied().unwrap_or(0));
        if let Some(input) = &self.input {
            let limit = input_share.min(INPUT_CONTENT_BYTES_MAX);
            if self.input_bytes <= limit {
                object.insert("input".into(), input.clone());
            } else {
                truncated = true;
                if let Some(cut) = shrink(input, limit) {
                    object.insert("input".into(), cut);
                }
            }
        }
        if let Some(text) = &self.output {
            let (cut, _) = cut_text(text, OUTPUT_CONTENT_BYTES_MAX, output_share);
            if cut.len() < text.len() {
                truncated = true;
            }
            if !cut.is_empty() || text.is_empty() {
                object.insert("output".into(), cut.into());
            }
        }
        if truncated {
            object.insert("truncated".into(), true.into());
        }
    }
}

/// Shares `budget` out: each gets what it needs if that is no more than an
/// equal share of what is left, and the rest is split among the others.
fn water_fill(needs: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..needs.len()).collect();
    order.sort_by_key(|&index| needs.get(index).copied().unwrap_or(0));
    let mut shares = vec![0; needs.len()];
    let mut left = budget;
    for (done, index) in order.into_iter().enumerate() {
        let fair = left / (needs.len() - done).max(1);
        let share = needs.get(index).copied().unwrap_or(0).min(fair);
        if let Some(slot) = shares.get_mut(index) {
            *slot = share;
        }
        left -= share;
    }
    shares
}

/// `input` with its strings cut to the longest length that makes its RFC
/// 8785 form fit in `limit` bytes, or `None` if even empty strings do not.
fn shrink(input: &Value, limit: usize) -> Option<Value> {
    let fits = |cap: usize| {
        let cut = cut_strings(input, cap);
        (canonical_len(&cut) <= limit).then_some(cut)
    };
    let mut best = fits(0)?;
    let (mut low, mut high) = (1, longest_string(input));
    while low <= high {
        let middle = low + (high - low) / 2;
        match fits(middle) {
            Some(cut) => {
                best = cut;
                low = middle + 1;
            }
            None => high = middle - 1,
        }
    }
    Some(best)
}

fn cut_strings(value: &Value, cap: usize) -> Value {
    match value {
        Value::String(text) if text.len() > cap => Value::String(cut_text(text, cap, usize::MAX).0),
        Value::Array(items) => Value::Array(items.iter().map(|item| cut_strings(item, cap)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(key, item)| (key.clone(), cut_strings(item, cap))).collect())
        }
        other => other.clone(),
    }
}

fn longest_string(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(map) => map.values().map(longest_string).max().unwrap_or(0),
        _ => 0,
    }
}

/// The longest prefix of `text` (whole characters) of at most `bytes_max`
/// bytes whose JSON string form takes at most `json_max` bytes, and the
/// size of that form.
fn cut_text(text: &str, bytes_max: usize, json_max: usize) -> (String, usize) {
    let mut json_len = 2;
    let mut end = 0;
    if json_max < json_len {
        return (String::new(), 0);
    }
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if at + c.len_utf8() > bytes_max || json_len + escaped > json_max {
            break;
        }
        json_len += escaped;
        end = at + c.len_utf8();
    }
    (text.get(..end).unwrap_or_default().to_owned(), json_len)
}

fn canonical_len(value: &Value) -> usize {
    mandate_log::json::canonicalize(value).map_or(usize::MAX, |bytes| bytes.len())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------- the terminal

fn read_transcript(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(TRANSCRIPT_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .context("reading the transcript from stdin")?;
    } else {
        std::fs::File::open(file)
            .and_then(|opened| opened.take(TRANSCRIPT_BYTES_MAX + 1).read_to_end(&mut bytes))
            .with_context(|| format!("reading `{}`", file.display()))?;
    }
    if bytes.len() as u64 > TRANSCRIPT_BYTES_MAX {
        bail!("the transcript is over {TRANSCRIPT_BYTES_MAX} bytes");
    }
    Ok(bytes)
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("importing {bar:40} {pos}/{len} tool calls {eta}") {
        bar.set_style(style);
    }
    bar
}

/// The line printed at the end.
fn summary(name: &str, calls: usize, written: &[u64], replayed: &[u64]) -> String {
    let what = plural(calls, "tool call", "tool calls");
    match (written.is_empty(), replayed.is_empty()) {
        (_, true) => format!(
            "imported {what} from {name} as {} ({})",
            plural(written.len(), "log entry", "log entries"),
            indexes(written)
        ),
        (true, false) => {
            let are = if calls == 1 { "is" } else { "are" };
            format!(
                "already imported: the {what} from {name} {are} in the log ({}); nothing written",
                indexes(replayed)
            )
        }
        (false, false) => format!(
            "imported {what} from {name}: {} as new log entries ({}), {} already imported ({})",
            written.len(),
            indexes(written),
            replayed.len(),
            indexes(replayed)
        ),
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 { format!("1 {one}") } else { format!("{count} {many}") }
}

/// `index 7`, or `indexes 41–43, 50` (runs of consecutive indexes joined).
fn indexes(list: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &index in list {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(index) => *end = index,
            _ => runs.push((index, index)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(start, end)| if start == end { start.to_string() } else { format!("{start}–{end}") })
        .collect();
    if list.len() == 1 { format!("index {}", text.join("")) } else { format!("indexes {}", text.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured transcripts, copied from
    /// `/work/shared/fixtures/agent-clients/` (see
    /// `the_copies_are_the_captured_fixtures`).
    const CLAUDE_ALLOWED: &str = include_str!("../tests/fixtures/agent-clients/claude-stream-json-allowed.jsonl");
    const CLAUDE_DENIED: &str = include_str!("../tests/fixtures/agent-clients/claude-stream-json-denied-by-hook.jsonl");
    const CLAUDE_MCP: &str = include_str!("../tests/fixtures/agent-clients/claude-stream-json-mcp-tool.jsonl");
    const CODEX_ALLOWED: &str = include_str!("../tests/fixtures/agent-clients/codex-exec-json-allowed.jsonl");
    const CODEX_DENIED: &str = include_str!("../tests/fixtures/agent-clients/codex-exec-json-denied-by-hook.jsonl");
    const CODEX_MCP: &str = include_str!("../tests/fixtures/agent-clients/codex-exec-json-mcp-tool.jsonl");
    const GEMINI_ALLOWED: &str = include_str!("../tests/fixtures/agent-clients/gemini-stream-json-allowed.jsonl");
    const GEMINI_DENIED: &str = include_str!("../tests/fixtures/agent-clients/gemini-stream-json-denied-by-hook.jsonl");

    const FIXTURES: &str = "/work/shared/fixtures/agent-clients";

    fn one(client: Client, transcript: &str) -> ImportedCall {
        let calls = parse(client, transcript.as_bytes()).unwrap();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        calls.into_iter().next().unwrap()
    }

    fn digest(value: &Value) -> Option<String> {
        Some(tool_call::digest(value))
    }

    #[test]
    fn the_copies_are_the_captured_fixtures() {
        if !Path::new(FIXTURES).is_dir() {
            eprintln!("{FIXTURES} is not here: comparing nothing");
            return;
        }
        for (file, copy) in [
            ("claude-stream-json-allowed.jsonl", CLAUDE_ALLOWED),
            ("claude-stream-json-denied-by-hook.jsonl", CLAUDE_DENIED),
            ("claude-stream-json-mcp-tool.jsonl", CLAUDE_MCP),
            ("codex-exec-json-allowed.jsonl", CODEX_ALLOWED),
            ("codex-exec-json-denied-by-hook.jsonl", CODEX_DENIED),
            ("codex-exec-json-mcp-tool.jsonl", CODEX_MCP),
            ("gemini-stream-json-allowed.jsonl", GEMINI_ALLOWED),
            ("gemini-stream-json-denied-by-hook.jsonl", GEMINI_DENIED),
        ] {
            assert_eq!(std::fs::read_to_string(Path::new(FIXTURES).join(file)).unwrap(), copy, "{file}");
        }
    }

    #[test]
    fn claude_code_calls_are_joined_to_their_results() {
        let call = one(Client::Claude, CLAUDE_ALLOWED);
        // The same input and response as the hook payloads of this call
        // (claude-pretooluse.json, claude-posttooluse.json): the digests
        // are the ones the hook sends.
        let input = json!({"command": "echo hello-from-tool"});
        let response = json!({"stdout": "hello-from-tool", "stderr": "", "interrupted": false,
                              "isImage": false, "noOutputExpected": false});
        let expected = ImportedCall {
            call_id: Some("toolu_msg_0001".into()),
            session_id: Some("5c73097e-2655-474f-b12f-9bc33bf3f8f1".into()),
            tool: "Bash".into(),
            action: "tool.Bash".into(),
            input_digest: tool_call::digest(&input),
            input,
            outcome: Outcome::Success,
            output_digest: digest(&response),
            output: Some(response),
            started_at: Some("2026-11-22T01:31:03.054Z".into()),
            line: 2,
        };
        assert_eq!(call, expected);
    }

    #[test]
    fn claude_code_calls_refused_by_a_hook_are_denied() {
        let call = one(Client::Claude, CLAUDE_DENIED);
        assert_eq!((call.call_id.as_deref(), call.action.as_str()), (Some("toolu_msg_0003"), "tool.Bash"));
        assert_eq!(call.session_id.as_deref(), Some("f5325f48-a452-4610-bf46-361cd2d80be6"));
        assert_eq!(call.outcome, Outcome::Denied);
        let said =
            json!("Error: PreToolUse:Bash hook error: [/home/dev/scratch]: ledger: denied by policy P1 (exit 2)\n");
        assert_eq!(call.output_digest, digest(&said));
        assert_eq!(call.started_at.as_deref(), Some("2026-11-22T01:31:10.026Z"));

        // Either sign is enough: the line's `tool_result_meta` alone …
        let meta_only = CLAUDE_DENIED.replace(r#""permission_denials":[{"tool_name":"Bash","tool_use_id":"toolu_msg_0003","tool_input":{"command":"echo hello-from-tool"}}]"#, r#""permission_denials":[]"#);
        assert_ne!(meta_only, CLAUDE_DENIED);
        assert_eq!(one(Client::Claude, &meta_only).outcome, Outcome::Denied);
        // … or the final `permission_denials` alone (older versions).
        let denials_only = CLAUDE_DENIED.replace(r#""decision":"reject""#, r#""decision":"accept""#);
        assert_ne!(denials_only, CLAUDE_DENIED);
        assert_eq!(one(Client::Claude, &denials_only).outcome, Outcome::Denied);
        // Neither: a tool error is a failure.
        let failed = denials_only
            .replace(r#""tool_use_id":"toolu_msg_0003","tool_input""#, r#""tool_use_id":"toolu_other","tool_input""#);
        assert_eq!(one(Client::Claude, &failed).outcome, Outcome::Failure);
    }

    #[test]
    fn claude_code_mcp_tools_are_mcp_actions() {
        let call = one(Client::Claude, CLAUDE_MCP);
        assert_eq!(call.tool, "mcp__payments__transfer");
        assert_eq!(call.action, "mcp.payments.transfer");
        assert_eq!(call.input, json!({"amount_usd": 12.5, "to": "acme"}));
        assert_eq!(call.outcome, Outcome::Success);
        assert_eq!(call.output.as_ref().unwrap()["structuredContent"], json!({"result": "sent 12.5 to acme"}));
    }

    #[test]
    fn codex_commands_are_the_hooks_bash_with_the_script_alone() {
        let call = one(Client::Codex, CODEX_ALLOWED);
        // codex-pretooluse.json: `Bash` with `{"command":"echo hello-from-codex"}`;
        // codex-posttooluse.json: `tool_response` is the output text.
        let input = json!({"command": "echo hello-from-codex"});
        let expected = ImportedCall {
            call_id: Some("item_3".into()),
            session_id: Some("01a200f6-3503-7820-adad-79173b17e8c4".into()),
            tool: "Bash".into(),
            action: "tool.Bash".into(),
            input_digest: tool_call::digest(&input),
            input,
            outcome: Outcome::Success,
            output_digest: digest(&json!("hello-from-codex\n")),
            output: Some(json!("hello-from-codex\n")),
            started_at: None,
            line: 6,
        };
        assert_eq!(call, expected);
        // The "MCP" capture's fake model ran a shell command too.
        let call = one(Client::Codex, CODEX_MCP);
        assert_eq!((call.action.as_str(), call.outcome), ("tool.Bash", Outcome::Success));
        assert_eq!(call.session_id.as_deref(), Some("01a200fb-71f7-7f31-8673-9b186ffc4724"));
        // Codex prints nothing for a call its hook blocked.
        assert_eq!(parse(Client::Codex, CODEX_DENIED.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn codex_items_of_every_kind_and_status() {
        let transcript = [
            r#"{"type":"thread.started","thread_id":"thread-1"}"#,
            r#"{"type":"item.started","item":{"id":"item_1","type":"mcp_tool_call","server":"payments","tool":"transfer","arguments":{"to":"acme"},"result":null,"error":null,"status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_1","type":"mcp_tool_call","server":"payments","tool":"transfer","arguments":{"to":"acme"},"result":{"content":[{"type":"text","text":"sent"}],"structured_content":null},"error":null,"status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_2","type":"mcp_tool_call","server":"payments","tool":"refund","arguments":null,"result":null,"error":{"message":"no such order"},"status":"failed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_3","type":"mcp_tool_call","server":"payments","tool":"transfer","arguments":{},"result":{"content":[],"isError":true},"error":null,"status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_4","type":"command_execution","command":"/bin/bash -lc 'exit 3'","aggregated_output":"","exit_code":3,"status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_5","type":"command_execution","command":"rm -rf /","aggregated_output":"","exit_code":null,"status":"declined"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_6","type":"file_change","changes":[{"path":"/w/a.rs","kind":"update"}],"status":"completed"}}"#,
            r#"{"type":"item.started","item":{"id":"item_7","type":"command_execution","command":"/bin/zsh -lc \"sleep 99\"","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_8","type":"web_search","query":"rust"}}"#,
            r#"{"type":"turn.failed","error":{"message":"stream ended"}}"#,
        ]
        .join("\n");
        let calls = parse(Client::Codex, transcript.as_bytes()).unwrap();
        let seen: Vec<(&str, &str, Outcome)> =
            calls.iter().map(|call| (call.call_id.as_deref().unwrap(), call.action.as_str(), call.outcome)).collect();
        assert_eq!(
            seen,
            [
                ("item_1", "mcp.payments.transfer", Outcome::Success),
                ("item_2", "mcp.payments.refund", Outcome::Failure),
                ("item_3", "mcp.payments.transfer", Outcome::Failure),
                ("item_4", "tool.Bash", Outcome::Failure),
                ("item_5", "tool.Bash", Outcome::Denied),
                ("item_6", "tool.apply_patch", Outcome::Success),
                ("item_7", "tool.Bash", Outcome::Unknown),
            ]
        );
        assert!(calls.iter().all(|call| call.session_id.as_deref() == Some("thread-1")));
        assert_eq!(calls[0].input, json!({"to": "acme"}));
        assert_eq!(calls[0].line, 2, "where the call first appears");
        assert_eq!(
            calls[0].output,
            Some(json!({"content": [{"type": "text", "text": "sent"}], "structured_content": null}))
        );
        assert_eq!(calls[1].input, json!({}));
        assert_eq!(calls[1].output, Some(json!({"message": "no such order"})));
        assert_eq!(calls[3].input, json!({"command": "exit 3"}));
        assert_eq!(calls[4].input, json!({"command": "rm -rf /"}), "not a shell wrapper: kept whole");
        assert_eq!(calls[6].input, json!({"command": "sleep 99"}));
        assert_eq!((&calls[6].output, &calls[6].output_digest), (&None, &None), "no result yet");
    }

    #[test]
    fn gemini_calls_and_refusals() {
        let call = one(Client::Gemini, GEMINI_ALLOWED);
        // gemini-beforetool.json's `tool_name` and `tool_input`.
        let input = json!({"command": "echo hello-from-gemini", "description": "echo"});
        let expected = ImportedCall {
            call_id: Some("run_shell_command__run_shell_command_1795312605575_0".into()),
            session_id: Some("733bc34b-464a-409a-8131-e57ede9d4d13".into()),
            tool: "run_shell_command".into(),
            action: "tool.run_shell_command".into(),
            input_digest: tool_call::digest(&input),
            input,
            outcome: Outcome::Success,
            output_digest: digest(&json!("hello-from-gemini")),
            output: Some(json!("hello-from-gemini")),
            started_at: Some("2026-11-22T01:56:45.651Z".into()),
            line: 3,
        };
        assert_eq!(call, expected);
        let call = one(Client::Gemini, GEMINI_DENIED);
        assert_eq!((call.action.as_str(), call.outcome), ("tool.run_shell_command", Outcome::Denied));
        assert_eq!(call.session_id.as_deref(), Some("5449c802-b974-4f81-a116-baa0ead94757"));
        // Another error is a failure.
        let failed = GEMINI_DENIED.replace("policy_violation", "execution_failed");
        assert_eq!(one(Client::Gemini, &failed).outcome, Outcome::Failure);
    }

    #[test]
    fn gemini_mcp_tools_take_the_other_clients_form() {
        let transcript =
            GEMINI_ALLOWED.replace(r#""tool_name":"run_shell_command""#, r#""tool_name":"mcp_payments_transfer""#);
        let call = one(Client::Gemini, &transcript);
        assert_eq!((call.tool.as_str(), call.action.as_str()), ("mcp__payments__transfer", "mcp.payments.transfer"));
        assert_eq!(gemini_tool("mcp_my-server_read_file"), "mcp__my-server__read_file");
        assert_eq!(gemini_tool("mcp__files__read"), "mcp__files__read");
        assert_eq!(gemini_tool("mcp_"), "mcp_");
        assert_eq!(gemini_tool("read_file"), "read_file");
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let mut lines: Vec<&str> = CODEX_ALLOWED.lines().collect();
        lines.insert(2, r#"{"type":"item.completed","item":{"id":"#);
        let error = parse(Client::Codex, lines.join("\n").as_bytes()).unwrap_err();
        assert!(matches!(error, ParseError::NotJson { line: 3, .. }), "{error:?}");
        assert!(error.to_string().starts_with("line 3: not JSON: "), "{error}");
        assert!(!error.to_string().contains("line 1"), "{error}");
        let error = parse(Client::Claude, b"{\"type\":\"system\",\"session_id\":\"s\"}\n\xff\xfe\n").unwrap_err();
        assert!(matches!(error, ParseError::NotJson { line: 2, .. }), "{error:?}");
    }

    #[test]
    fn empty_and_foreign_transcripts_are_refused() {
        for empty in ["", "\n", "  \r\n\t\n"] {
            assert_eq!(parse(Client::Claude, empty.as_bytes()), Err(ParseError::Empty), "{empty:?}");
        }
        // Another client's transcript: JSON, but none of it this client's.
        for (client, other) in [
            (Client::Codex, CLAUDE_ALLOWED),
            (Client::Claude, CODEX_ALLOWED),
            (Client::Claude, GEMINI_ALLOWED),
            (Client::Gemini, CLAUDE_ALLOWED),
            (Client::Gemini, CODEX_ALLOWED),
            (Client::Codex, "\n[1, 2]\n\"text\"\n{}\n"),
        ] {
            let error = parse(client, other.as_bytes()).unwrap_err();
            assert!(matches!(error, ParseError::Unrecognised { .. }), "{client:?}: {error:?}");
        }
        let error = parse(Client::Codex, b"\n\n{\"type\":\"system\"}\n").unwrap_err();
        assert_eq!(error, ParseError::Unrecognised { kind: "Codex `exec --json`", line: 3 });
    }

    #[test]
    fn unknown_events_and_fields_are_skipped() {
        let mut lines: Vec<String> = CLAUDE_ALLOWED.lines().map(str::to_owned).collect();
        lines
            .insert(1, r#"{"type":"hologram","session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","x":[1,2,3]}"#.into());
        lines.insert(
            1,
            r#"{"type":"assistant","session_id":"5c73097e-2655-474f-b12f-9bc33bf3f8f1","message":"odd"}"#.into(),
        );
        lines.insert(1, "[\"not an event\"]".into());
        lines[4] = lines[4].replace(r#""type":"tool_use","#, r#""type":"tool_use","novel":{"deep":[null]},"#);
        let calls = parse(Client::Claude, lines.join("\r\n").as_bytes()).unwrap();
        assert_eq!(calls.len(), 1);
        let expected = one(Client::Claude, CLAUDE_ALLOWED);
        assert_eq!(
            (&calls[0].input_digest, &calls[0].output_digest),
            (&expected.input_digest, &expected.output_digest)
        );
        assert_eq!(calls[0].line, 5);

        let mut lines: Vec<&str> = GEMINI_ALLOWED.lines().collect();
        lines.insert(3, r#"{"type":"tool_progress","timestamp":"2026-11-22T01:56:45.700Z","tool_id":"x"}"#);
        lines.insert(3, r#"{"type":"tool_result","timestamp":"2026-11-22T01:56:45.700Z","tool_id":"never-called","status":"success"}"#);
        assert_eq!(
            parse(Client::Gemini, lines.join("\n").as_bytes()).unwrap(),
            vec![one(Client::Gemini, GEMINI_ALLOWED)]
        );
    }

    #[test]
    fn a_call_without_its_result_is_unknown() {
        for (client, transcript, cut) in [
            (Client::Claude, CLAUDE_ALLOWED, 2),
            (Client::Gemini, GEMINI_ALLOWED, 3),
            (Client::Codex, CODEX_ALLOWED, 6),
        ] {
            let head: Vec<&str> = transcript.lines().take(cut).collect();
            let call = one(client, &head.join("\n"));
            assert_eq!(call.outcome, Outcome::Unknown, "{client:?}");
            assert_eq!((call.output, call.output_digest), (None, None), "{client:?}");
        }
    }

    #[test]
    fn calls_keep_their_order_and_repeats_are_one_call() {
        let lines: Vec<&str> = CLAUDE_ALLOWED.lines().collect();
        let second = lines[1].replace("toolu_msg_0001", "toolu_msg_0002").replace("hello-from-tool", "second");
        let transcript = [lines[0], lines[1], &second, lines[1], lines[2]].join("\n");
        let calls = parse(Client::Claude, transcript.as_bytes()).unwrap();
        let ids: Vec<_> = calls.iter().map(|call| (call.call_id.as_deref().unwrap(), call.outcome)).collect();
        assert_eq!(ids, [("toolu_msg_0001", Outcome::Success), ("toolu_msg_0002", Outcome::Unknown)]);
    }

    #[test]
    fn ids_and_names_the_log_cannot_take_are_refused() {
        let long = "x".repeat(FIELD_BYTES_MAX + 1);
        let transcript = GEMINI_ALLOWED.replace("run_shell_command__run_shell_command_1795312605575_0", &long);
        assert_eq!(
            parse(Client::Gemini, transcript.as_bytes()),
            Err(ParseError::BadField { line: 3, field: "call_id" })
        );
        let name = "y".repeat(FIELD_BYTES_MAX - 2);
        let transcript =
            GEMINI_ALLOWED.replace(r#""tool_name":"run_shell_command""#, &format!(r#""tool_name":"{name}""#));
        assert_eq!(
            parse(Client::Gemini, transcript.as_bytes()),
            Err(ParseError::BadField { line: 3, field: "action" })
        );
        let transcript = GEMINI_ALLOWED.replace(r#""tool_name":"run_shell_command""#, r#""tool_name":"run\tshell""#);
        assert_eq!(parse(Client::Gemini, transcript.as_bytes()), Err(ParseError::BadField { line: 3, field: "tool" }));
    }

    #[test]
    fn timestamps_are_rfc3339_or_dropped() {
        assert_eq!(rfc3339("2026-11-22T01:31:03.239Z").as_deref(), Some("2026-11-22T01:31:03.239Z"));
        assert_eq!(rfc3339("2026-11-22T01:31:03.960Z").as_deref(), Some("2026-11-22T01:31:03.960Z"));
        assert_eq!(rfc3339("2026-11-22T02:31:03+01:00").as_deref(), Some("2026-11-22T02:31:03+01:00"));
        assert_eq!(rfc3339("2026-11-22 02:31:03+01:00").as_deref(), Some("2026-11-22T01:31:03Z"));
        assert_eq!(rfc3339("2026-11-22T02:31:03.+01:00").as_deref(), None);
        assert!(!rfc3339_shape("2026-11-22T01:31:03.Z"));
        assert!(!rfc3339_shape("2026-11-22T01:31:03+0100"));
        assert_eq!(rfc3339("yesterday"), None);
        let transcript = GEMINI_ALLOWED.replace("2026-11-22T01:56:45.651Z", "soon");
        assert_eq!(one(Client::Gemini, &transcript).started_at, None);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of every transcript (cut mid-line, mid-character),
        // and each with bytes flipped: an answer, never a panic.
        for transcript in [CLAUDE_ALLOWED, CLAUDE_DENIED, CLAUDE_MCP, CODEX_ALLOWED, GEMINI_ALLOWED, GEMINI_DENIED] {
            let bytes = transcript.as_bytes();
            for client in [Client::Claude, Client::Codex, Client::Gemini] {
                for end in (0..bytes.len()).step_by(7) {
                    let _ = parse(client, &bytes[..end]);
                }
                for at in (0..bytes.len()).step_by(13) {
                    let mut flipped = bytes.to_vec();
                    flipped[at] ^= 0x20;
                    let _ = parse(client, &flipped);
                }
            }
        }
        let _ = parse(Client::Claude, "[".repeat(100_000).as_bytes());
        let deep = format!("{{\"type\":\"item.completed\",\"item\":{}}}", "[".repeat(200) + &"]".repeat(200));
        let _ = parse(Client::Codex, deep.as_bytes());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_script("/bin/bash -lc 'echo hello-from-codex'").as_deref(), Some("echo hello-from-codex"));
        assert_eq!(shell_script(r#"bash -lc 'echo it'"'"'s'"#).as_deref(), Some("echo it's"));
        assert_eq!(shell_script(r"/bin/sh -c 'a'\''b'").as_deref(), Some("a'b"));
        assert_eq!(shell_script(r#"/usr/bin/zsh -lc "echo \"\$HOME\" \\ x""#).as_deref(), Some(r#"echo "$HOME" \ x"#));
        assert_eq!(shell_script("/bin/bash -lc ls").as_deref(), Some("ls"));
        assert_eq!(shell_script("/bin/bash -lc ''").as_deref(), Some(""));
        for kept in [
            "/bin/bash -lc 'a' 'b'",
            "/bin/bash -lc \"echo $HOME\"",
            "/bin/bash -lc 'unterminated",
            "/bin/bash -lc a;b",
            "/bin/fish -c 'ls'",
            "/bin/bash -x 'ls'",
            "bash",
            "ls -la",
        ] {
            assert_eq!(shell_script(kept), None, "{kept}");
        }
    }

    fn header() -> PartHeader<'static> {
        PartHeader { identity: Some("agent:coder"), source: "claude-code", sha256: "ab" }
    }

    fn big_call(index: usize, output: usize, input: usize) -> ImportedCall {
        let mut call = one(Client::Claude, CLAUDE_ALLOWED);
        call.call_id = Some(format!("toolu_{index}"));
        call.input = json!({"command": "é".repeat(input / 2), "n": 1.5, "big": 9_007_199_254_740_993_u64});
        call.output = Some(json!("\n".repeat(output / 2)));
        call
    }

    #[test]
    fn digests_only_by_default() {
        let calls = parse(Client::Claude, CLAUDE_MCP.as_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&part_body(&header(), 3, &calls, false).unwrap()).unwrap();
        let call = &calls[0];
        assert_eq!(
            body,
            json!({"identity": "agent:coder", "source": "claude-code", "transcript_sha256": "ab", "part": 3,
                   "calls": [{"call_id": "toolu_msg_0001", "session_id": "c5f4b808-d6c4-4f4f-bbf7-22ac906366ad",
                              "tool": "mcp__payments__transfer", "action": "mcp.payments.transfer",
                              "input_digest": call.input_digest, "outcome": "success",
                              "output_digest": call.output_digest, "started_at": "2026-11-22T01:59:57.960Z"}]})
        );
        let body = part_body(&PartHeader { identity: None, ..header() }, 0, &calls, true).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body.get("identity").is_none());
        assert_eq!(body["calls"][0]["input"], json!({"amount_usd": 12.5, "to": "acme"}));
        assert_eq!(body["calls"][0]["output"], call.output.as_ref().unwrap().to_string());
        assert!(body["calls"][0].get("truncated").is_none());
    }

    #[test]
    fn content_is_cut_to_the_limits_and_flagged() {
        // One call with an input and output far over 16 KiB each.
        let calls = [big_call(0, 100_000, 100_000)];
        let body: Value = serde_json::from_slice(&part_body(&header(), 0, &calls, true).unwrap()).unwrap();
        let call = &body["calls"][0];
        assert_eq!(call["truncated"], true);
        let input = mandate_log::json::canonicalize(&call["input"]).unwrap();
        assert!(input.len() <= INPUT_CONTENT_BYTES_MAX && input.len() > INPUT_CONTENT_BYTES_MAX - 8, "{}", input.len());
        // Cut from the I-JSON form: fractions and big numbers as text.
        assert_eq!((&call["input"]["n"], &call["input"]["big"]), (&json!("1.5"), &json!("9007199254740993")));
        let output = call["output"].as_str().unwrap();
        assert!(output.len() <= OUTPUT_CONTENT_BYTES_MAX && output.len() > 8_000, "{}", output.len());
        assert_eq!(call["input_digest"], calls[0].input_digest.as_str(), "digests are of the whole");
    }

    #[test]
    fn a_full_part_with_content_stays_under_the_target() {
        // 100 calls: small ones keep all their content, big ones share the rest.
        let calls: Vec<ImportedCall> = (0..PART_CALLS_MAX)
            .map(|i| if i % 2 == 0 { big_call(i, 40, 40) } else { big_call(i, 60_000, 60_000) })
            .collect();
        let bytes = part_body(&header(), 0, &calls, true).unwrap();
        assert!(bytes.len() <= PART_BODY_BYTES_TARGET, "{}", bytes.len());
        assert!(bytes.len() > PART_BODY_BYTES_TARGET - 4 * 1024, "the budget is used: {}", bytes.len());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        for (index, call) in body["calls"].as_array().unwrap().iter().enumerate() {
            assert_eq!(call.get("truncated").is_some(), index % 2 == 1, "{index}: {call}");
            if index % 2 == 0 {
                assert_eq!(call["output"], "\n".repeat(20));
            } else {
                assert!(call["output"].as_str().unwrap().len() > 100, "{index}");
            }
        }
    }

    #[test]
    fn water_fill_gives_the_small_all_and_splits_the_rest() {
        assert_eq!(water_fill(&[10, 1_000, 20, 1_000], 530), vec![10, 250, 20, 250]);
        assert_eq!(water_fill(&[10, 20], 1_000), vec![10, 20]);
        assert_eq!(water_fill(&[], 1_000), Vec::<usize>::new());
        assert_eq!(water_fill(&[5, 5], 0), vec![0, 0]);
    }

    #[test]
    fn cut_text_counts_escapes_and_keeps_whole_characters() {
        assert_eq!(cut_text("héllo", 2, usize::MAX).0, "h");
        assert_eq!(cut_text("héllo", 3, usize::MAX).0, "hé");
        assert_eq!(cut_text("a\u{1}b", 100, 8), ("a".to_owned(), 3));
        assert_eq!(cut_text("a\u{1}b", 100, 9), ("a\u{1}".to_owned(), 9));
        assert_eq!(cut_text("abc", 100, 1), (String::new(), 0));
        assert_eq!(cut_text("ab\"c", 100, usize::MAX).1, serde_json::to_string("ab\"c").unwrap().len());
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary("t.jsonl", 3, &[41, 42, 43], &[]),
            "imported 3 tool calls from t.jsonl as 3 log entries (indexes 41–43)"
        );
        assert_eq!(summary("stdin", 1, &[7], &[]), "imported 1 tool call from stdin as 1 log entry (index 7)");
        assert_eq!(
            summary("t.jsonl", 3, &[], &[41, 42, 50]),
            "already imported: the 3 tool calls from t.jsonl are in the log (indexes 41–42, 50); nothing written"
        );
        assert_eq!(
            summary("t.jsonl", 1, &[], &[41]),
            "already imported: the 1 tool call from t.jsonl is in the log (index 41); nothing written"
        );
        assert_eq!(
            summary("t.jsonl", 3, &[60], &[41, 42]),
            "imported 3 tool calls from t.jsonl: 1 as new log entries (index 60), 2 already imported (indexes 41–42)"
        );
    }
}
