//! The coding-agent hook end to end, with the real Claude Code CLI (npm
//! `@anthropic-ai/claude-code` 2.1.330) driving the real `mandate serve`.
//!
//! Each case runs `claude -p … --output-format stream-json --verbose` once, in
//! a fresh project directory whose `.claude/settings.json` was written by
//! `mandate hook install claude-code` (so the hook is the binary under test),
//! fully offline: `ANTHROPIC_BASE_URL` points at a small fake Messages API
//! (`tests/claude_code/fake_anthropic.py`) whose first answer is a `Bash`
//! tool call that creates a marker file and whose next answer, after the tool
//! result, is a final text; `HOME` and the config directory are temporary;
//! `DISABLE_AUTOUPDATER`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`,
//! `DISABLE_TELEMETRY` and `DISABLE_ERROR_REPORTING` keep it from calling
//! anything else (with them, its only connection is to the fake server;
//! checked with strace). `--allowedTools Bash` lets the command through
//! Claude Code's own permission check, so a block can only come from the
//! hook.
//!
//! The marker file says whether the command ran; the transcript says what
//! the model was told; the log says what Mandate decided and recorded.
//!
//! The same cases run with Claude Code's HTTP hook type instead of the
//! command: `{"type": "http", "url": "<server>/v1/hooks/claude-code",
//! "headers": {"Authorization": "Bearer $MANDATE_TOKEN"}, "allowedEnvVars":
//! ["MANDATE_TOKEN"], "timeout": 10}` for PreToolUse (with `"onFailure":
//! "block"`, without which a server that cannot be reached lets the tool
//! run) and PostToolUse, the form Claude Code 2.1.330's settings schema
//! takes.
//!
//! The CLI is installed with npm into `target/claude-code-2.1.330` on the
//! first run, under a file lock so that parallel tests install it once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

const CLAUDE_CODE_VERSION: &str = "2.1.330";

/// How long one CLI run may take (it takes about a second here).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";

// ---------------------------------------------------------------- the CLI

/// The `claude` binary of `@anthropic-ai/claude-code@2.1.330`, installed on
/// the first call into `target/claude-code-2.1.330` (a lock file beside it
/// keeps parallel tests from installing it twice).
fn claude() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let prefix = target.join(format!("claude-code-{CLAUDE_CODE_VERSION}"));
    let binary = prefix.join("node_modules/@anthropic-ai/claude-code/bin/claude.exe");
    let works = |binary: &Path| {
        Command::new(binary)
            .arg("--version")
            .env("DISABLE_AUTOUPDATER", "1")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).starts_with(CLAUDE_CODE_VERSION))
    };
    std::fs::create_dir_all(&target).unwrap();
    let lock = File::create(target.join("claude-code.lock")).unwrap();
    lock.lock().unwrap();
    if !works(&binary) {
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(&prefix).unwrap();
        let package = format!("@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}");
        let npm = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&prefix)
            .arg(&package)
            .output()
            .unwrap_or_else(|error| panic!("running npm: {error}"));
        assert!(npm.status.success(), "npm install {package}: {}", String::from_utf8_lossy(&npm.stderr));
        if !works(&binary) {
            // An npm that skipped the postinstall leaves a placeholder: run
            // it, which puts the platform's native binary in its place.
            let installed = Command::new("node")
                .arg("install.cjs")
                .current_dir(prefix.join("node_modules/@anthropic-ai/claude-code"))
                .output()
                .unwrap();
            assert!(installed.status.success(), "install.cjs: {}", String::from_utf8_lossy(&installed.stderr));
        }
        assert!(works(&binary), "{} --version is not {CLAUDE_CODE_VERSION}", binary.display());
    }
    drop(lock);
    binary
}

// ---------------------------------------------------------------- the fake model

/// The fake Messages API, stopped when dropped.
struct FakeModel {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: ChildStdin,
    url: String,
    log: PathBuf,
}

impl FakeModel {
    /// A fake model whose tool call runs `command`.
    fn start(dir: &Path, command: &str) -> FakeModel {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claude_code/fake_anthropic.py");
        let log = dir.join("model-requests.jsonl");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&log)
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        let port: u16 = port.trim().parse().unwrap_or_else(|_| panic!("the fake model printed no port: {port:?}"));
        FakeModel { child, _stdin: stdin, url: format!("http://127.0.0.1:{port}"), log }
    }

    /// Every request it received.
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The `tool_result` blocks the model was sent.
    fn tool_results(&self) -> Vec<Value> {
        let mut results = Vec::new();
        for request in self.requests() {
            for message in request["body"]["messages"].as_array().into_iter().flatten() {
                for block in message["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_result" {
                        results.push(block.clone());
                    }
                }
            }
        }
        results
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- one run

/// A project directory with the hook installed, a marker path, and the
/// command that creates it.
struct Project {
    dir: tempfile::TempDir,
    /// The project (canonical: Claude Code reports its real path as `cwd`).
    root: PathBuf,
    marker: PathBuf,
    command: String,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let marker = root.join("ran.txt");
        let command = format!("echo ran > {}", path_str(&marker));
        Project { dir, root, marker, command }
    }

    /// `mandate hook install claude-code --settings <project>/.claude/settings.json`.
    fn install_command_hook(&self) -> Value {
        let settings = self.root.join(".claude/settings.json");
        let installed = mandate(&["hook", "install", "claude-code", "--settings", path_str(&settings)]);
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
        let command = written["hooks"]["PreToolUse"][0]["hooks"][0]["command"].as_str().unwrap();
        assert_eq!(command, format!("{} hook claude-code", env!("CARGO_BIN_EXE_mandate")), "the binary under test");
        written
    }
}

impl Project {
    /// Claude Code's HTTP hook type, pointed at `POST /v1/hooks/claude-code`
    /// of `server` (`http://host:port`), with the agent token taken from
    /// `MANDATE_TOKEN` in Claude Code's environment: written by `mandate
    /// hook install claude-code --http`.
    fn install_http_hook(&self, server: &str) -> Value {
        let settings = self.root.join(".claude/settings.json");
        let installed =
            mandate(&["hook", "install", "claude-code", "--settings", path_str(&settings), "--http", server]);
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
        let pre = &written["hooks"]["PreToolUse"][0]["hooks"][0];
        assert_eq!(pre["url"], format!("{server}/v1/hooks/claude-code"), "{written}");
        assert_eq!(pre["onFailure"], "block", "{written}");
        written
    }
}

/// What one `claude -p` run printed.
struct Run {
    /// The stream-json transcript, one event a line.
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The `tool_result` Claude Code produced for the model's tool call.
    fn tool_result(&self) -> &Value {
        self.events
            .iter()
            .filter(|event| event["type"] == "user")
            .flat_map(|event| event["message"]["content"].as_array().into_iter().flatten())
            .find(|block| block["type"] == "tool_result")
            .unwrap_or_else(|| panic!("no tool result in the transcript: {:#?}\n{}", self.events, self.stderr))
    }

    /// The final `result` event.
    fn result(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|event| event["type"] == "result")
            .unwrap_or_else(|| panic!("no result in the transcript: {:#?}\n{}", self.events, self.stderr))
    }
}

/// Runs the real CLI once in `project`, against `model`, with `mandate_env`
/// (`MANDATE_URL`, `MANDATE_TOKEN`) for the hook.
fn run_claude(project: &Project, model: &FakeModel, mandate_env: &[(&str, &str)]) -> Run {
    let home = project.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(claude());
    command
        .args(["-p", "Create the marker file.", "--output-format", "stream-json", "--verbose"])
        .args(["--allowedTools", "Bash"])
        .current_dir(&project.root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("TMPDIR", project.dir.path())
        .env("ANTHROPIC_BASE_URL", &model.url)
        .env("ANTHROPIC_API_KEY", "sk-ant-fake-key-for-tests")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("MANDATE_HOOK_STATE", project.dir.path().join("hook-state"))
        .envs(mandate_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("claude ran over {RUN_TIMEOUT:?}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "claude exited {status}: {stdout}\n{stderr}");
    let events = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    Run { events, stderr }
}

// ---------------------------------------------------------------- Mandate

/// `user:alice` → `agent:coder`, granted `tool.*` in the projects; returns
/// an agent token for the coder.
fn coder(server: &Server, projects: &[&Path]) -> String {
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    let resources: Vec<String> =
        projects.iter().flat_map(|root| [path_str(root).to_owned(), format!("{}/*", path_str(root))]).collect();
    server.grant(json!({"grantee": CODER, "grantor": ALICE, "actions": ["tool.*"], "resources": resources}));
    let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

/// The decisions on `tool.Bash` in the log.
fn bash_decisions(server: &Server) -> Vec<Value> {
    let decisions = server.search_all("type=decision");
    decisions.into_iter().filter(|decision| decision["body"]["request"]["action"] == "tool.Bash").collect()
}

// ---------------------------------------------------------------- the cases

#[test]
fn a_forbid_policy_keeps_the_command_from_running_and_the_model_is_told_why() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &[&project.root]);
    server.put_policies(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-bash\") forbid(principal, action == Mandate::Action::\"tool.Bash\", resource);",
    );
    project.install_command_hook();
    let url = format!("http://{}", server.addr);
    let run = run_claude(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert!(
        !project.marker.exists(),
        "the command ran despite the deny: {}\n{}\n{:#?}",
        run.events.iter().skip(1).map(Value::to_string).collect::<Vec<_>>().join("\n"),
        run.stderr,
        bash_decisions(&server)
    );
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("mandate: `tool.Bash` denied") && text.contains("no-bash"), "{result}");
    // The model was told the same.
    let told = model.tool_results();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["is_error"], true, "{told:?}");
    assert!(told[0]["content"].to_string().contains("no-bash"), "{told:?}");
    assert_eq!(run.result()["subtype"], "success", "the session went on to its end");

    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let body = &decisions[0]["body"];
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["request"]["context"]["input"]["command"], project.command.as_str(), "{body}");
    assert_eq!(body["request"]["context"]["client"], "claude-code", "{body}");
    assert_eq!(body["request"]["resource"], path_str(&project.root), "{body}");
    assert!(body.to_string().contains("no-bash"), "{body}");
    let id = body["decision_id"].as_str().unwrap();
    assert!(text.contains(id), "the reason names the logged decision {id}: {result}");
    assert!(server.search_all("type=event.recorded").is_empty(), "nothing ran, nothing recorded");
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &[&project.root]);
    server.put_policies("@id(\"all\") permit(principal, action, resource);");
    project.install_command_hook();
    let url = format!("http://{}", server.addr);
    let run = run_claude(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran");
    let result = run.tool_result();
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(run.result()["subtype"], "success");

    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = &decisions[0];
    assert_eq!(decision["body"]["decision"], "allow", "{decision}");
    assert_eq!(decision["body"]["request"]["context"]["input"]["command"], project.command.as_str());
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "the PostToolUse half recorded the outcome: {events:?}\n{}", run.stderr);
    let event = &events[0];
    assert_eq!(event["body"]["decision_id"], decision["body"]["decision_id"], "{event}");
    assert_eq!(event["body"]["outcome"], "success", "{event}");
    assert_eq!(event["body"]["attributes"]["client"], "claude-code", "{event}");
    assert_eq!(event["body"]["attributes"]["tool_use_id"], result["tool_use_id"], "{event}");
    assert!(event["index"].as_u64().unwrap() > decision["index"].as_u64().unwrap(), "{event} after {decision}");
}

#[test]
fn a_stopped_mandate_server_keeps_the_command_from_running() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, mut server) = Server::fresh();
    let token = coder(&server, &[&project.root]);
    server.put_policies("@id(\"all\") permit(principal, action, resource);");
    let url = format!("http://{}", server.addr);
    server.stop();
    project.install_command_hook();
    let run = run_claude(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert!(!project.marker.exists(), "the command ran with Mandate down");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("mandate: blocked") && text.contains("unreachable"), "{result}");
}

// ---------------------------------------------------------------- the HTTP hook

#[test]
fn the_http_hook_denies_allows_and_fails_closed_as_the_command_hook_does() {
    let (_data, server) = Server::fresh();
    let url = format!("http://{}", server.addr);
    let deny = Project::new();
    let allow = Project::new();
    let token = coder(&server, &[&deny.root, &allow.root]);
    server.put_policies(&format!(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-bash-here\") forbid(principal, action == Mandate::Action::\"tool.Bash\", resource)\n\
         when {{ context.cwd == \"{}\" }};",
        path_str(&deny.root)
    ));

    // Denied: the command never runs, the model is told Mandate's reason.
    let model = FakeModel::start(deny.dir.path(), &deny.command);
    deny.install_http_hook(&url);
    let run = run_claude(&deny, &model, &[("MANDATE_TOKEN", &token)]);
    assert!(!deny.marker.exists(), "the command ran despite the deny");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("`tool.Bash` denied") && text.contains("no-bash-here"), "{result}");
    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let body = &decisions[0]["body"];
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["request"]["context"]["input"]["command"], deny.command.as_str(), "{body}");
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "{result}");

    // Allowed: it runs, and the PostToolUse half is joined by `tool_use_id`.
    let model = FakeModel::start(allow.dir.path(), &allow.command);
    allow.install_http_hook(&url);
    let run = run_claude(&allow, &model, &[("MANDATE_TOKEN", &token)]);
    assert_eq!(std::fs::read_to_string(&allow.marker).unwrap(), "ran\n", "the command ran");
    let result = run.tool_result();
    assert_eq!(result["is_error"], false, "{result}");
    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let decision = &decisions[1];
    assert_eq!(decision["body"]["decision"], "allow", "{decision}");
    assert_eq!(decision["body"]["request"]["context"]["input"]["command"], allow.command.as_str());
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "{events:?}\n{}", run.stderr);
    let event = &events[0];
    assert_eq!(event["body"]["decision_id"], decision["body"]["decision_id"], "{event}");
    assert_eq!(event["body"]["outcome"], "success", "{event}");
    assert!(event["index"].as_u64().unwrap() > decision["index"].as_u64().unwrap(), "{event} after {decision}");

    // Mandate stopped: the HTTP hook cannot connect, and `onFailure: "block"`
    // keeps the command from running.
    let mut server = server;
    server.stop();
    let down = Project::new();
    let model = FakeModel::start(down.dir.path(), &down.command);
    down.install_http_hook(&url);
    let run = run_claude(&down, &model, &[("MANDATE_TOKEN", &token)]);
    assert!(!down.marker.exists(), "the command ran with Mandate down");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("onFailure") && text.contains("ECONNREFUSED"), "{result}");
}
