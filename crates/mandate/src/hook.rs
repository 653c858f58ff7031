//! `mandate hook claude-code|codex|gemini`: a coding agent's tool-call hook
//! that asks Mandate before every tool runs, and records the outcome after.
//!
//! # What each client sends and honours
//!
//! Claude Code (`PreToolUse` / `PostToolUse`), Codex (the same names and
//! shape, plus `model` and `turn_id`) and Gemini CLI (`BeforeTool` /
//! `AfterTool`, no call id) run a command, write one JSON object on its
//! stdin (`hook_event_name`, `session_id`, `cwd`, `tool_name`, `tool_input`,
//! and after the call `tool_response`; Claude Code and Codex add
//! `tool_use_id`), and read the answer from its exit code and output. The
//! captured payloads and observed behaviour are in
//! `/work/shared/fixtures/agent-clients/` (README); in short, for all three:
//!
//! - allow: exit 0 with empty stdout;
//! - deny: exit 0 with a blocking JSON object on stdout, or exit 2 with the
//!   reason on stderr. Claude Code and Codex get
//!   `{"decision":"block","reason":R,"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny","permissionDecisionReason":R}}`;
//!   Gemini honours `decision: "block"` only, so it gets
//!   `{"decision":"block","reason":R}`;
//! - exit 1, or a client-side timeout, lets the tool run in Claude Code.
//!
//! # Fail closed
//!
//! Because a crash or a timeout would let the tool run, the pre half never
//! exits 1: a decision of `deny` (or `pending`: the call waits for an
//! approval the agent cannot wait for here) answers with the blocking JSON
//! (a permission decision, shown to the model as such); every failure (no
//! token, bad stdin, an unreachable server, an error answer, or this hook's
//! own deadline, `MANDATE_HOOK_TIMEOUT_MS`, default 5 s, enforced on a
//! watchdog whatever the worker is stuck on) exits 2 with the reason on
//! stderr, which all three clients treat as a block. The post half only
//! records what happened, so it never blocks: it exits 0 and warns on
//! stderr when recording fails.
//!
//! # The request
//!
//! - action, resource and Cedar context: [`mandate_core::tool_call`] (the
//!   same mapping as `POST /v1/hooks/claude-code` and `mandate import`), so
//!   a policy reads `context.input.command`;
//! - `input`: the raw tool input (the server records its SHA-256), and
//!   `session_id`: the client's session, so one run's decisions are found
//!   together.
//!
//! The identity is the agent token's own (`MANDATE_TOKEN`, `mt_…`): the
//! request names none. The server is `MANDATE_URL` (plain `http://`).
//!
//! # Joining the post half to its decision
//!
//! The pre half writes the allowed decision's id to a small state file in `MANDATE_HOOK_STATE` (default
//! `<temp>/mandate-hook`), named by the SHA-256 of the client, the session
//! and the call: `tool_use_id` where the client sends one, else (Gemini) the
//! tool name and canonical input, which `AfterTool` repeats. The post half
//! reads and removes it, records `POST /v1/events` (`outcome`,
//! `duration_ms`, `output_digest` = `sha256:` of the canonical
//! `tool_response`). (The hook asks with no amounts, so a decision holds no
//! reservation to settle: only `calls` budgets count it, when it is made.)
//!
//! A call whose post half never runs (the client crashed, or the tool was
//! interrupted) leaves its file behind: each pre half sweeps the directory
//! of state files older than [`STATE_AGE_MAX`], at most once per
//! [`SWEEP_INTERVAL`] (the time is kept as the mtime of a `.swept` file in
//! the directory), looking at no more than [`SWEEP_ENTRIES_MAX`] entries.
//!
//! # Installing
//!
//! `mandate hook install claude-code|codex|gemini` merges both halves into
//! the client's settings file, in the form each client reads (see
//! `hook_entries`): other keys kept, an earlier entry of ours replaced, so
//! running it again changes nothing.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use mandate_core::tool_call::{self, ToolCall, cedar_value, outcome_of};
use serde_json::{Map, Value, json};

/// The server when `MANDATE_URL` is not set.
pub const URL_DEFAULT: &str = "http://127.0.0.1:8420";

/// The hook's own deadline when `MANDATE_HOOK_TIMEOUT_MS` is not set.
pub const TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// The longest deadline accepted (a client would have given up long before).
pub const TIMEOUT_MS_MAX: u64 = 600_000;

/// The most stdin read: a payload carries one tool call (a large `Write`
/// is well under this).
pub const STDIN_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// The most of a server answer read.
pub const RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The server's limit on request bodies (SPEC: 256 KiB).
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;

/// How old a state file may grow before a pre half removes it: far longer
/// than any tool call (the post half runs right after the tool).
pub const STATE_AGE_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// How often the state directory is swept, at most.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The most directory entries one sweep looks at (the rest wait for the
/// next sweep), so that a sweep stays well inside the hook's deadline.
pub const SWEEP_ENTRIES_MAX: usize = 10_000;

/// Claude Code's own timeout for the hook, in seconds, written by `hook
/// install`: above the hook's default deadline, so that the hook's own
/// answer (a block, with a reason) always comes first.
pub const CLAUDE_TIMEOUT_S: u64 = 10;

/// The settings file `hook install claude-code` writes by default.
pub const CLAUDE_SETTINGS_DEFAULT: &str = ".claude/settings.json";

/// Codex's own timeout for the hook, in seconds (its `timeout` is in
/// seconds, default 600), written by `hook install codex`.
pub const CODEX_TIMEOUT_S: u64 = 10;

/// The hooks file `hook install codex` writes by default (the project's
/// layer; `~/.codex/hooks.json` is the user's).
pub const CODEX_HOOKS_DEFAULT: &str = ".codex/hooks.json";

/// Gemini CLI's own timeout for the hook, in milliseconds (its `timeout` is
/// in milliseconds, default 60,000), written by `hook install gemini`.
pub const GEMINI_TIMEOUT_MS: u64 = 10_000;

/// The settings file `hook install gemini` writes by default.
pub const GEMINI_SETTINGS_DEFAULT: &str = ".gemini/settings.json";

/// The hook commands.
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Claude Code's PreToolUse / PostToolUse hook (stdin: the hook payload).
    ClaudeCode(HookArgs),
    /// Codex CLI's PreToolUse / PostToolUse hook (stdin: the hook payload).
    Codex(HookArgs),
    /// Gemini CLI's BeforeTool / AfterTool hook (stdin: the hook payload).
    Gemini(HookArgs),
    /// Write the hook into a client's settings.
    #[command(subcommand)]
    Install(InstallCommand),
}

/// Which half runs: taken from the payload's `hook_event_name` unless forced.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// Run the pre half (authorize) whatever the payload says.
    #[arg(long, conflicts_with = "post")]
    pre: bool,
    /// Run the post half (record the outcome) whatever the payload says.
    #[arg(long)]
    post: bool,
}

/// Where to install the hook.
#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Add the PreToolUse and PostToolUse entries to Claude Code's settings
    /// (merged into the file, other keys kept; running it again changes
    /// nothing).
    ClaudeCode {
        /// The settings file.
        #[arg(long, value_name = "PATH", default_value = CLAUDE_SETTINGS_DEFAULT)]
        settings: PathBuf,
        /// The command to run (default: this binary's path, `hook claude-code`).
        #[arg(long, value_name = "COMMAND")]
        command: Option<String>,
        /// Install Claude Code's HTTP hook instead of the command: the
        /// Mandate server's URL (`http://127.0.0.1:8420`), asked at
        /// `POST /v1/hooks/claude-code` with `$MANDATE_TOKEN` as the bearer.
        #[arg(long, value_name = "URL", conflicts_with = "command")]
        http: Option<String>,
    },
    /// Add the PreToolUse and PostToolUse entries to a Codex hooks file
    /// (merged, other keys kept; running it again changes nothing). Codex
    /// runs a hook from a user or project layer only once it is trusted:
    /// review it with `/hooks` in Codex (or run `codex exec
    /// --dangerously-bypass-hook-trust` where the file is vetted otherwise).
    Codex {
        /// The hooks file: `.codex/hooks.json` (the project's, loaded when
        /// Codex trusts the project) or `~/.codex/hooks.json` (the user's).
        #[arg(long, value_name = "PATH", default_value = CODEX_HOOKS_DEFAULT)]
        hooks: PathBuf,
        /// The command to run (default: this binary's path, `hook codex`).
        #[arg(long, value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Add the BeforeTool and AfterTool entries to Gemini CLI's settings
    /// (merged, other keys kept; running it again changes nothing). Gemini
    /// CLI runs a project's hooks only in a folder it trusts; the user's
    /// `~/.gemini/settings.json` applies everywhere.
    Gemini {
        /// The settings file.
        #[arg(long, value_name = "PATH", default_value = GEMINI_SETTINGS_DEFAULT)]
        settings: PathBuf,
        /// The command to run (default: this binary's path, `hook gemini`).
        #[arg(long, value_name = "COMMAND")]
        command: Option<String>,
    },
}

/// Runs a hook command and answers in the client's form.
pub fn run(command: HookCommand) -> ExitCode {
    match command {
        HookCommand::ClaudeCode(args) => run_hook(Client::ClaudeCode, &args),
        HookCommand::Codex(args) => run_hook(Client::Codex, &args),
        HookCommand::Gemini(args) => run_hook(Client::Gemini, &args),
        HookCommand::Install(install) => {
            let (path, installed) = match install {
                InstallCommand::ClaudeCode { settings, command, http } => {
                    let installed = match http {
                        Some(url) => http_hook_url(&url)
                            .and_then(|url| install_hooks(Client::ClaudeCode, &settings, Target::Http(url))),
                        None => install_hooks(Client::ClaudeCode, &settings, Target::Command(command)),
                    };
                    (settings, installed)
                }
                InstallCommand::Codex { hooks, command } => {
                    let installed = install_hooks(Client::Codex, &hooks, Target::Command(command));
                    (hooks, installed)
                }
                InstallCommand::Gemini { settings, command } => {
                    let installed = install_hooks(Client::Gemini, &settings, Target::Command(command));
                    (settings, installed)
                }
            };
            match installed {
                Ok(note) => {
                    println!("installed the mandate hook in {}", path.display());
                    if let Some(note) = note {
                        println!("{note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("mandate: {}", format!("{error:#}").replace('\n', " "));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

// ---------------------------------------------------------------- the hook

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    ClaudeCode,
    Codex,
    Gemini,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::ClaudeCode => "claude-code",
            Client::Codex => "codex",
            Client::Gemini => "gemini",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pre,
    Post,
}

/// What the hook concluded.
#[derive(Debug)]
enum Outcome {
    /// Let the tool run.
    Allow,
    /// Mandate said no (or not yet): block, with the reason.
    Deny(String),
    /// The pre half could not decide: block, with why.
    Failed(String),
    /// The post half is done (with a warning if recording failed).
    Recorded(Option<String>),
}

fn run_hook(client: Client, args: &HookArgs) -> ExitCode {
    let forced = match (args.pre, args.post) {
        (_, true) => Some(Phase::Post),
        (true, false) => Some(Phase::Pre),
        (false, false) => None,
    };
    let timeout = match timeout_from_env() {
        Ok(timeout) => timeout,
        Err(error) => return answer(client, Outcome::Failed(format!("{error:#}"))),
    };
    let deadline = Instant::now() + timeout;
    // The phase, once known, so that a deadline in the post half does not block.
    let phase = Arc::new(Mutex::new(forced));
    let (sender, receiver) = mpsc::channel();
    let worker_phase = Arc::clone(&phase);
    let spawned = std::thread::Builder::new().name("mandate-hook".into()).spawn(move || {
        let _ = sender.send(work(client, forced, &worker_phase, deadline));
    });
    if let Err(error) = spawned {
        return answer(client, Outcome::Failed(format!("starting the hook's worker: {error}")));
    }
    match receiver.recv_timeout(timeout) {
        Ok(outcome) => answer(client, outcome),
        Err(_) => {
            let reason = format!("no answer within the hook's deadline of {} ms", timeout.as_millis());
            let known = phase.lock().ok().and_then(|phase| *phase);
            match known {
                Some(Phase::Post) => answer(client, Outcome::Recorded(Some(reason))),
                // INVARIANT (fail closed): an unknown phase is the pre half.
                _ => answer(client, Outcome::Failed(reason)),
            }
        }
    }
}

/// Writes the answer in the client's form and gives the exit code.
fn answer(client: Client, outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Allow | Outcome::Recorded(None) => ExitCode::SUCCESS,
        Outcome::Recorded(Some(warning)) => {
            eprintln!("mandate hook: the outcome was not recorded: {warning}");
            ExitCode::SUCCESS
        }
        Outcome::Deny(reason) => {
            let reason = format!("mandate: {reason}");
            let blocking = block_json(client, &reason);
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{blocking}").and_then(|()| stdout.flush()).is_err() {
                // The JSON did not get out: exit 2 blocks all the same.
                eprintln!("{reason}");
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Outcome::Failed(reason) => {
            eprintln!("mandate: blocked: {}", reason.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// The blocking JSON each client honours (see the module documentation).
fn block_json(client: Client, reason: &str) -> Value {
    match client {
        Client::ClaudeCode | Client::Codex => json!({
            "decision": "block",
            "reason": reason,
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            },
        }),
        Client::Gemini => json!({"decision": "block", "reason": reason}),
    }
}

fn timeout_from_env() -> anyhow::Result<Duration> {
    match std::env::var("MANDATE_HOOK_TIMEOUT_MS") {
        Err(_) => Ok(Duration::from_millis(TIMEOUT_MS_DEFAULT)),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(ms) if (1..=TIMEOUT_MS_MAX).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => bail!("`MANDATE_HOOK_TIMEOUT_MS` must be 1 to {TIMEOUT_MS_MAX} milliseconds, not `{text}`"),
        },
    }
}

/// Reads the payload, then runs the half it asks for.
fn work(client: Client, forced: Option<Phase>, phase: &Mutex<Option<Phase>>, deadline: Instant) -> Outcome {
    let payload = match read_payload() {
        Ok(payload) => payload,
        Err(error) => {
            return match forced {
                Some(Phase::Post) => Outcome::Recorded(Some(format!("{error:#}"))),
                _ => Outcome::Failed(format!("{error:#}")),
            };
        }
    };
    let event = payload.get("hook_event_name").and_then(Value::as_str).unwrap_or_default();
    let detected = match event {
        // `PostToolUseFailure`: Claude Code's event after a tool that failed.
        "PostToolUse" | "PostToolUseFailure" | "AfterTool" => Phase::Post,
        // Anything else, named or not, is treated as the pre half: failing
        // closed on a payload we do not recognise.
        _ => Phase::Pre,
    };
    let which = forced.unwrap_or(detected);
    if let Ok(mut slot) = phase.lock() {
        *slot = Some(which);
    }
    match which {
        Phase::Pre => pre(client, &payload, deadline).unwrap_or_else(|error| Outcome::Failed(format!("{error:#}"))),
        Phase::Post => Outcome::Recorded(post(client, &payload, deadline).err().map(|error| format!("{error:#}"))),
    }
}

fn read_payload() -> anyhow::Result<Map<String, Value>> {
    let mut bytes = Vec::new();
    std::io::stdin().lock().take(STDIN_BYTES_MAX + 1).read_to_end(&mut bytes).context("reading the hook payload")?;
    if bytes.len() as u64 > STDIN_BYTES_MAX {
        bail!("the hook payload is over {STDIN_BYTES_MAX} bytes");
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => bail!("the hook payload is not a JSON object"),
        Err(error) => bail!("the hook payload is not JSON: {error}"),
    }
}

/// The server and the token, from the environment.
pub(crate) struct Config {
    url: Endpoint,
    token: String,
}

impl Config {
    pub(crate) fn from_env() -> anyhow::Result<Config> {
        let token = std::env::var("MANDATE_TOKEN").unwrap_or_default();
        let token = token.trim();
        if token.is_empty() {
            bail!("`MANDATE_TOKEN` is not set: the hook needs an agent token (`mt_…`) to ask Mandate");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("`MANDATE_TOKEN` holds characters a token never has");
        }
        let url = std::env::var("MANDATE_URL").unwrap_or_else(|_| URL_DEFAULT.to_owned());
        Ok(Config { url: Endpoint::parse(&url)?, token: token.to_owned() })
    }
}

fn text<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// The pre half: authorize the call.
fn pre(client: Client, payload: &Map<String, Value>, deadline: Instant) -> anyhow::Result<Outcome> {
    sweep_stale_state(&state_dir(), SystemTime::now());
    let config = Config::from_env()?;
    let call =
        ToolCall::from_payload(client.name(), payload).ok_or_else(|| anyhow!("the hook payload has no `tool_name`"))?;
    let (tool, input) = (call.tool, payload.get("tool_input").cloned().unwrap_or_else(|| Value::Object(Map::new())));
    let action = call.action();
    let mut body = Map::new();
    body.insert("action".into(), action.clone().into());
    body.insert("resource".into(), call.resource().into());
    body.insert("context".into(), Value::Object(call.context()));
    // The raw input when the server can hash it as is; else the Cedar form.
    let raw_ok = mandate_log::json::check_numbers(&input).is_ok() && mandate_log::json::canonicalize(&input).is_ok();
    body.insert("input".into(), if raw_ok { input.clone() } else { cedar_value(&input, 0).unwrap_or(Value::Null) });
    if let Some(session) = text(payload, "session_id").filter(|session| session.len() <= 256) {
        body.insert("session_id".into(), session.into());
    }
    let mut bytes = serde_json::to_vec(&body)?;
    if bytes.len() > REQUEST_BODY_BYTES_MAX {
        // The input is in the context already: drop the copy kept for its digest.
        body.remove("input");
        bytes = serde_json::to_vec(&body)?;
        if bytes.len() > REQUEST_BODY_BYTES_MAX {
            bail!(
                "the tool input of `{tool}` is too large to authorize ({} bytes, the server takes {REQUEST_BODY_BYTES_MAX})",
                bytes.len()
            );
        }
    }
    let answer = request(&config, "POST", "/v1/authorize", Some(&bytes), deadline)?;
    let decision = answer.get("decision").and_then(Value::as_str).unwrap_or_default();
    let decision_id = answer.get("decision_id").and_then(Value::as_str).unwrap_or_default();
    if decision != "allow" {
        // A call asked again and refused now must not be joined to an
        // earlier allow of the same id.
        let _ = state_path(client, payload).map(std::fs::remove_file);
    }
    match decision {
        "allow" => {
            // Best effort: a lost state file loses the outcome, never the decision.
            let _ = save_state(client, payload, decision_id);
            Ok(Outcome::Allow)
        }
        "pending" => {
            let approval = answer.pointer("/approval/id").and_then(Value::as_str).unwrap_or("?");
            Ok(Outcome::Deny(format!(
                "`{action}` waits for approval {approval} (decision {decision_id}); ask again once it is approved"
            )))
        }
        "deny" => Ok(Outcome::Deny(format!("`{action}` denied: {} (decision {decision_id})", reasons(&answer)))),
        other => bail!("the server answered an unknown decision `{other}`"),
    }
}

/// The reasons' messages, joined.
pub(crate) fn reasons(answer: &Value) -> String {
    answer.as_object().map_or_else(|| "no reason given".to_owned(), tool_call::reasons_text)
}

// ---------------------------------------------------------------- the post half

/// The post half: record the outcome against the decision made before.
fn post(client: Client, payload: &Map<String, Value>, deadline: Instant) -> anyhow::Result<()> {
    let path = state_path(client, payload)?;
    let state = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes).context("reading the hook's state file")?,
        Err(_) => bail!("no allowed decision was recorded for this call (was the pre hook installed?)"),
    };
    let _ = std::fs::remove_file(&path);
    let config = Config::from_env()?;
    let decision_id = state
        .get("decision_id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the hook's state file names no decision"))?;
    let response = payload.get("tool_response").unwrap_or(&Value::Null);
    let failed_event = text(payload, "hook_event_name") == Some("PostToolUseFailure");
    let outcome = if failed_event { "failure" } else { outcome_of(response) };
    let mut event = Map::new();
    event.insert("decision_id".into(), decision_id.into());
    event.insert("outcome".into(), outcome.into());
    if let Some(ms) = payload.get("duration_ms").and_then(Value::as_u64) {
        event.insert("duration_ms".into(), ms.into());
    }
    event.insert("output_digest".into(), tool_call::digest(response).into());
    let mut attributes = Map::new();
    attributes.insert("client".into(), client.name().into());
    if let Some(id) = text(payload, "tool_use_id").filter(|id| id.len() <= 256) {
        attributes.insert("tool_use_id".into(), id.into());
    }
    event.insert("attributes".into(), Value::Object(attributes));
    request(&config, "POST", "/v1/events", Some(&serde_json::to_vec(&event)?), deadline)?;
    Ok(())
}

/// The state file for this call (see the module documentation).
fn state_path(client: Client, payload: &Map<String, Value>) -> anyhow::Result<PathBuf> {
    let dir = state_dir();
    let session = text(payload, "session_id").unwrap_or_default();
    let call = match text(payload, "tool_use_id") {
        Some(id) => format!("id\n{id}"),
        None => {
            let tool = text(payload, "tool_name").unwrap_or_default();
            let input = payload.get("tool_input").unwrap_or(&Value::Null);
            format!("input\n{tool}\n{}", tool_call::digest(input))
        }
    };
    let key = mandate_log::Hash::digest(format!("{}\n{session}\n{call}", client.name()).as_bytes()).to_hex();
    Ok(dir.join(format!("{key}.json")))
}

/// The directory of the state files: `MANDATE_HOOK_STATE`, or
/// `<temp>/mandate-hook`.
fn state_dir() -> PathBuf {
    match std::env::var_os("MANDATE_HOOK_STATE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("mandate-hook"),
    }
}

/// Removes the state files in `dir` older than [`STATE_AGE_MAX`], unless
/// the directory was swept less than [`SWEEP_INTERVAL`] before `now`. Best
/// effort: whatever fails is left for the next sweep, and nothing but
/// regular files named as [`state_path`] names them is touched.
fn sweep_stale_state(dir: &Path, now: SystemTime) {
    let marker = dir.join(".swept");
    let last = std::fs::symlink_metadata(&marker).and_then(|metadata| metadata.modified());
    if let Ok(last) = last
        && now.duration_since(last).is_ok_and(|since| since < SWEEP_INTERVAL)
    {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    // Claim this sweep first, so that hooks running beside it skip theirs.
    let claimed = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&marker)
        .and_then(|file| file.set_modified(now));
    if claimed.is_err() {
        return;
    }
    for entry in entries.take(SWEEP_ENTRIES_MAX).flatten() {
        let name = entry.file_name();
        let is_state = name.to_str().and_then(|name| name.strip_suffix(".json")).is_some_and(|stem| {
            stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !is_state {
            continue;
        }
        let stale = entry.metadata().is_ok_and(|metadata| {
            metadata.is_file()
                && metadata
                    .modified()
                    .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|age| age > STATE_AGE_MAX))
        });
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn save_state(client: Client, payload: &Map<String, Value>, decision_id: &str) -> anyhow::Result<()> {
    let path = state_path(client, payload)?;
    if let Some(dir) = path.parent() {
        // Owner-only: the directory may sit in a shared temporary directory.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let state = json!({ "decision_id": decision_id });
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(&serde_json::to_vec(&state)?)?;
    Ok(())
}

// ---------------------------------------------------------------- HTTP

/// A plain `http://host:port[/prefix]` server address.
struct Endpoint {
    /// `host:port`, for connecting and the `Host` header.
    authority: String,
    /// A path prefix, without the trailing slash.
    prefix: String,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let Some(rest) = url.trim().strip_prefix("http://") else {
            bail!("`MANDATE_URL` must be an `http://` address (got `{url}`); put a local proxy before a TLS server");
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(authority, path)| (authority, path));
        if authority.is_empty() {
            bail!("`MANDATE_URL` has no host (got `{url}`)");
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(Endpoint { authority, prefix })
    }
}

/// The time left before `deadline`, or an error once it has passed.
fn remaining(deadline: Instant) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("the hook's deadline passed");
    }
    Ok(left)
}

/// One request on its own connection, within the deadline; a 2xx answer's
/// JSON, or an error naming the status and the server's problem detail.
pub(crate) fn request(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    deadline: Instant,
) -> anyhow::Result<Value> {
    let authority = &config.url.authority;
    let addrs: Vec<_> = authority.to_socket_addrs().with_context(|| format!("resolving `{authority}`"))?.collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(error) => last = Some(error),
        }
    }
    let Some(mut stream) = stream else {
        let why = last.map_or_else(|| "no address".to_owned(), |error| error.to_string());
        bail!("the Mandate server at {authority} is unreachable: {why}");
    };
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        config.url.prefix,
        config.token,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .with_context(|| format!("sending {method} {path} to {authority}"))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path} from {authority}"))?;
    let (status, answer) = parse_response(&raw).with_context(|| format!("the answer to {method} {path}"))?;
    let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let detail = json
            .get("detail")
            .and_then(Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&answer).chars().take(200).collect(), ToOwned::to_owned);
        bail!("{method} {path} answered {status}: {detail}");
    }
    if json.is_null() {
        bail!("{method} {path} answered {status} without JSON");
    }
    Ok(json)
}

/// The status and body of a whole HTTP/1.1 answer.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").ok_or_else(|| anyhow!("no answer"))?;
    let (head, rest) = raw.split_at(split);
    let body = rest.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).context("a head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("a bad status line"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if name == "content-length" {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(|| anyhow!("a chunked body cut short"))?
    } else if let Some(length) = length {
        body.get(..length).ok_or_else(|| anyhow!("a body cut short"))?.to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(rest.get(..end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = rest.get(end + 2..)?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------- install

/// The entries `hook install` merges into a client's settings, each event's
/// list of matcher groups getting one group of ours, in the form each client
/// reads (checked against each client's code and docs):
///
/// - Claude Code 2.1.330, `.claude/settings.json`: `hooks.PreToolUse` and
///   `hooks.PostToolUse`, each `[{"matcher": "*", "hooks": [{"type":
///   "command", "command", "timeout" (seconds)}]}]`; the pre entry adds
///   `"onFailure": "block"`, so that a crash or a client-side timeout blocks
///   too (a failure otherwise lets the tool run).
/// - Codex 0.169.0: the same `{"hooks": {"PreToolUse": […], "PostToolUse":
///   […]}}` shape in a `hooks.json` beside a config layer
///   (`~/.codex/hooks.json`, `<project>/.codex/hooks.json`; an inline
///   `[hooks]` table in `config.toml` is the other form, and a layer with
///   both loads both), `timeout` in seconds, no `onFailure`. A hook from a
///   user or project layer runs only once trusted: Codex keeps the hash of
///   what the user reviewed in `config.toml` (`[hooks.state."<file>:
///   pre_tool_use:<group>:<handler>"] trusted_hash`) and skips, with no
///   error, a hook it has no trust for, so installing is not enforcing
///   until the hook is trusted in Codex (`/hooks`) or a vetted automation
///   passes `codex exec --dangerously-bypass-hook-trust`.
/// - Gemini CLI 0.61.0, `.gemini/settings.json`: `hooks.BeforeTool` and
///   `hooks.AfterTool`, each `[{"matcher": "*", "hooks": [{"type":
///   "command", "name": "mandate", "command", "timeout" (milliseconds)}]}]`.
///   Gemini runs a project's hooks only in a trusted folder (the user's
///   settings everywhere; headless, it will not start in an untrusted one
///   unless told `GEMINI_CLI_TRUST_WORKSPACE=true` or `--skip-trust`), and
///   in GitHub Actions (`GITHUB_SHA` set) strips from the hook's
///   environment every variable not allowed by name, so there `MANDATE_URL`
///   and `MANDATE_TOKEN` need `"security": {"environmentVariableRedaction":
///   {"allowed": [...]}}` (without it the hook blocks: no token).
///
/// Any earlier entry of ours (this command, or any command ending in
/// ` hook <client>`) is replaced; everything else is kept.
fn hook_entries(client: Client, target: &Target) -> [(&'static str, Value); 2] {
    let command = match target {
        Target::Http(url) => {
            // Claude Code fills `$MANDATE_TOKEN` only for variables listed in
            // `allowedEnvVars`; `onFailure: "block"` is a second guard (the
            // endpoint answers every failure with a block already).
            let hook = |pre: bool| {
                let mut hook = Map::new();
                hook.insert("type".into(), "http".into());
                hook.insert("url".into(), url.as_str().into());
                hook.insert("headers".into(), json!({"Authorization": "Bearer $MANDATE_TOKEN"}));
                hook.insert("allowedEnvVars".into(), json!(["MANDATE_TOKEN"]));
                hook.insert("timeout".into(), CLAUDE_TIMEOUT_S.into());
                if pre {
                    hook.insert("onFailure".into(), "block".into());
                }
                Value::Object(hook)
            };
            return [("PreToolUse", hook(true)), ("PostToolUse", hook(false))];
        }
        Target::Command(command) => command.as_deref().unwrap_or_default(),
    };
    match client {
        Client::ClaudeCode => [
            (
                "PreToolUse",
                json!({"type": "command", "command": command, "timeout": CLAUDE_TIMEOUT_S, "onFailure": "block"}),
            ),
            ("PostToolUse", json!({"type": "command", "command": command, "timeout": CLAUDE_TIMEOUT_S})),
        ],
        Client::Codex => [
            ("PreToolUse", json!({"type": "command", "command": command, "timeout": CODEX_TIMEOUT_S})),
            ("PostToolUse", json!({"type": "command", "command": command, "timeout": CODEX_TIMEOUT_S})),
        ],
        Client::Gemini => [
            (
                "BeforeTool",
                json!({"type": "command", "name": "mandate", "command": command, "timeout": GEMINI_TIMEOUT_MS}),
            ),
            (
                "AfterTool",
                json!({"type": "command", "name": "mandate", "command": command, "timeout": GEMINI_TIMEOUT_MS}),
            ),
        ],
    }
}

/// What a client's settings entry runs.
enum Target {
    /// A command (`None`: this binary, `hook <client>`).
    Command(Option<String>),
    /// Claude Code's HTTP hook at this URL.
    Http(String),
}

/// The path of the HTTP hook on a Mandate server.
const CLAUDE_HTTP_HOOK_PATH: &str = "/v1/hooks/claude-code";

/// The HTTP hook's URL on the server at `base` (`http://` or `https://`).
fn http_hook_url(base: &str) -> anyhow::Result<String> {
    let base = base.trim().trim_end_matches('/');
    let host = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(format!("{base}{CLAUDE_HTTP_HOOK_PATH}"))
        }
        _ => bail!("`{base}` is not an http:// or https:// URL of a Mandate server"),
    }
}

/// Merges the hook into `client`'s settings file (see [`hook_entries`]),
/// replacing any earlier Mandate entry (command or HTTP); returns a note for
/// the user, if the client needs a step of its own.
fn install_hooks(client: Client, settings: &Path, target: Target) -> anyhow::Result<Option<&'static str>> {
    let suffix = format!(" hook {}", client.name());
    let target = match target {
        Target::Command(None) => {
            let exe = std::env::current_exe().context("finding this binary's path")?;
            Target::Command(Some(format!("{}{suffix}", shell_quote(&exe.display().to_string()))))
        }
        other => other,
    };
    let command = match &target {
        Target::Command(command) => command.clone().unwrap_or_default(),
        Target::Http(_) => String::new(),
    };
    let mut root = match std::fs::read(settings) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Value::Object(Map::new()),
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .with_context(|| format!("`{}` is not JSON; fix or move it first", settings.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Value::Object(Map::new()),
        Err(error) => return Err(error).with_context(|| format!("reading `{}`", settings.display())),
    };
    let Value::Object(object) = &mut root else { bail!("`{}` is not a JSON object", settings.display()) };
    let hooks = object.entry("hooks").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(hooks) = hooks else { bail!("`hooks` in `{}` is not an object", settings.display()) };
    for (event, hook) in hook_entries(client, &target) {
        let list = hooks.entry(event).or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = list else { bail!("`hooks.{event}` in `{}` is not a list", settings.display()) };
        // Drop earlier mandate entries (ours, or this command), keep the rest.
        for group in list.iter_mut() {
            if let Some(Value::Array(inner)) = group.get_mut("hooks") {
                inner.retain(|entry| {
                    let text = entry.get("command").and_then(Value::as_str).unwrap_or_default();
                    let url = entry.get("url").and_then(Value::as_str).unwrap_or_default();
                    let ours = (!command.is_empty() && text == command)
                        || text.ends_with(&suffix)
                        || url.ends_with(CLAUDE_HTTP_HOOK_PATH);
                    !ours
                });
            }
        }
        list.retain(|group| group.get("hooks").and_then(Value::as_array).is_none_or(|inner| !inner.is_empty()));
        list.push(json!({"matcher": "*", "hooks": [hook]}));
    }
    if let Some(dir) = settings.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(&root)?;
    text.push('\n');
    std::fs::write(settings, text).with_context(|| format!("writing `{}`", settings.display()))?;
    Ok(match client {
        Client::ClaudeCode => None,
        Client::Codex => Some(
            "Codex runs it once trusted: review it with /hooks in Codex (until then Codex skips it and nothing is \
             checked)",
        ),
        Client::Gemini => Some("Gemini CLI runs a project's hooks only in a folder it trusts"),
    })
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b)) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
