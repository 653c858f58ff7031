//! The coding-agent hook end to end, with the real Gemini CLI (npm
//! `@google/gemini-cli` 0.61.0) driving the real `mandate serve`.
//!
//! Each case runs `gemini -p … --output-format stream-json` once, fully
//! offline: `GOOGLE_GEMINI_BASE_URL` points at a small fake Gemini API
//! (`tests/gemini_cli/fake_gemini.py`: first a `run_shell_command` call that
//! creates a marker file, then, after the tool's result, a final text), with
//! an API key, a fixed model (`auto` would first ask a router model) and the
//! user's settings turning off usage statistics, telemetry and updates (with
//! them, its only connection is to the fake server; checked with strace).
//! The project's `.gemini/settings.json` is written by `mandate hook install
//! gemini` (so the hook is the binary under test); `GEMINI_CLI_TRUST_WORKSPACE`
//! trusts the folder (without it, headless Gemini CLI refuses to start, and
//! an untrusted folder's hooks would not load), and `--approval-mode yolo`
//! lets the command past Gemini's own confirmation, so a block can only come
//! from the hook.
//!
//! The CLI is installed with npm into `target/gemini-cli-0.61.0` on the
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

const GEMINI_CLI_VERSION: &str = "0.61.0";

/// How long one CLI run may take (a few seconds here).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";

// ---------------------------------------------------------------- the CLI

/// The `gemini` launcher of `@google/gemini-cli@0.61.0` (a Node script),
/// installed on the first call into `target/gemini-cli-0.61.0` (a lock file
/// beside it keeps parallel tests from installing it twice).
fn gemini() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let prefix = target.join(format!("gemini-cli-{GEMINI_CLI_VERSION}"));
    let launcher = prefix.join("node_modules/.bin/gemini");
    let manifest = prefix.join("node_modules/@google/gemini-cli/package.json");
    let works = |_: &Path| {
        std::fs::read(&manifest)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .is_some_and(|package| package["version"] == GEMINI_CLI_VERSION)
            && launcher.exists()
    };
    std::fs::create_dir_all(&target).unwrap();
    let lock = File::create(target.join("gemini-cli.lock")).unwrap();
    lock.lock().unwrap();
    if !works(&launcher) {
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(&prefix).unwrap();
        let package = format!("@google/gemini-cli@{GEMINI_CLI_VERSION}");
        let npm = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&prefix)
            .arg(&package)
            .output()
            .unwrap_or_else(|error| panic!("running npm: {error}"));
        assert!(npm.status.success(), "npm install {package}: {}", String::from_utf8_lossy(&npm.stderr));
        assert!(works(&launcher), "{} is not {GEMINI_CLI_VERSION}", manifest.display());
    }
    drop(lock);
    launcher
}

// ---------------------------------------------------------------- the fake model

/// The fake Gemini API, stopped when dropped.
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
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gemini_cli/fake_gemini.py");
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

    /// The `functionResponse` parts the model was sent.
    fn tool_responses(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let requests: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let mut responses = Vec::new();
        for request in requests {
            for content in request["body"]["contents"].as_array().into_iter().flatten() {
                for part in content["parts"].as_array().into_iter().flatten() {
                    if part.get("functionResponse").is_some() {
                        responses.push(part["functionResponse"].clone());
                    }
                }
            }
        }
        responses
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- one run

/// A project directory with the hook installed, a home, a marker path and
/// the command that creates it.
struct Project {
    dir: tempfile::TempDir,
    /// The project (canonical, as Gemini CLI reports it as `cwd`).
    root: PathBuf,
    home: PathBuf,
    marker: PathBuf,
    command: String,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let home = dir.path().join("home");
        let marker = root.join("ran.txt");
        let command = format!("echo ran > {}", path_str(&marker));
        let project = Project { dir, root, home, marker, command };
        project.user_settings(&json!({}));
        project
    }

    /// The user's `~/.gemini/settings.json`: API-key auth, nothing sent
    /// anywhere else, and `extra` merged in.
    fn user_settings(&self, extra: &Value) {
        let mut settings = json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        });
        for (key, value) in extra.as_object().unwrap() {
            for (inner, value) in value.as_object().unwrap() {
                settings[key][inner] = value.clone();
            }
        }
        let path = self.home.join(".gemini/settings.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
    }

    /// `mandate hook install gemini --settings <project>/.gemini/settings.json`.
    fn install_hook(&self) {
        let settings = self.root.join(".gemini/settings.json");
        let installed = mandate(&["hook", "install", "gemini", "--settings", path_str(&settings)]);
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
        let command = written["hooks"]["BeforeTool"][0]["hooks"][0]["command"].as_str().unwrap();
        assert_eq!(command, format!("{} hook gemini", env!("CARGO_BIN_EXE_mandate")), "the binary under test");
    }
}

/// What one `gemini -p` run printed.
struct Run {
    /// The stream-json events.
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The `tool_result` event of the model's tool call.
    fn tool_result(&self) -> &Value {
        self.events
            .iter()
            .find(|event| event["type"] == "tool_result")
            .unwrap_or_else(|| panic!("no tool result: {}", self.all()))
    }

    fn all(&self) -> String {
        let lines: Vec<String> = self.events.iter().map(Value::to_string).collect();
        format!("{}\n{}", lines.join("\n"), self.stderr)
    }
}

/// Runs the real CLI once in `project` against `model`, with `env` added
/// (`MANDATE_URL`, `MANDATE_TOKEN` for the hook). The environment is
/// otherwise empty but for `PATH`: in particular no `GITHUB_SHA`, with
/// which Gemini CLI strips the hook's environment (see
/// `github_actions_strips_the_token_unless_allowed_by_name`).
fn run_gemini(project: &Project, model: &FakeModel, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(gemini());
    command
        .args(["-m", "gemini-fake", "--approval-mode", "yolo", "--output-format", "stream-json"])
        .args(["-p", "Create the marker file."])
        .current_dir(&project.root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &project.home)
        .env("GEMINI_API_KEY", "fake-gemini-key-for-tests")
        .env("GOOGLE_GEMINI_BASE_URL", &model.url)
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .env("MANDATE_HOOK_STATE", project.dir.path().join("hook-state"))
        .envs(env.iter().copied())
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
            panic!("gemini ran over {RUN_TIMEOUT:?}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "gemini exited {status}: {stdout}\n{stderr}");
    let events = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    Run { events, stderr }
}

// ---------------------------------------------------------------- Mandate

/// `user:alice` → `agent:coder`, granted `tool.*` in the project; returns an
/// agent token for the coder.
fn coder(server: &Server, project: &Path) -> String {
    server.identity(ALICE, "human", None);
    server.identity(CODER, "agent", Some(ALICE));
    let root = path_str(project);
    server.grant(json!({
        "grantee": CODER, "grantor": ALICE, "actions": ["tool.*"], "resources": [root, format!("{root}/*")],
    }));
    let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
    issued["token"].as_str().unwrap().to_owned()
}

/// The decisions on `tool.run_shell_command` in the log.
fn shell_decisions(server: &Server) -> Vec<Value> {
    let decisions = server.search_all("type=decision");
    decisions.into_iter().filter(|decision| decision["body"]["request"]["action"] == "tool.run_shell_command").collect()
}

// ---------------------------------------------------------------- the cases

#[test]
fn a_forbid_policy_keeps_the_command_from_running_and_the_model_is_told_why() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &project.root);
    server.put_policies(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-shell\") forbid(principal, action == Mandate::Action::\"tool.run_shell_command\", resource);",
    );
    project.install_hook();
    let url = format!("http://{}", server.addr);
    let run = run_gemini(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert!(!project.marker.exists(), "the command ran despite the deny: {}", run.all());
    let result = run.tool_result();
    assert_eq!(result["status"], "error", "{}", run.all());
    let text = result["output"].to_string();
    assert!(text.contains("mandate: `tool.run_shell_command` denied") && text.contains("no-shell"), "{result}");
    let told = model.tool_responses();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].to_string().contains("no-shell"), "the model was told why: {told:?}");

    let decisions = shell_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let body = &decisions[0]["body"];
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["request"]["context"]["client"], "gemini", "{body}");
    assert_eq!(body["request"]["context"]["input"]["command"], project.command.as_str(), "{body}");
    assert_eq!(body["request"]["resource"], path_str(&project.root), "{body}");
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "the reason names the logged decision: {result}");
    assert!(server.search_all("type=event.recorded").is_empty());
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &project.root);
    server.put_policies("@id(\"all\") permit(principal, action, resource);");
    project.install_hook();
    let url = format!("http://{}", server.addr);
    let run = run_gemini(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran: {}", run.all());
    assert_eq!(run.tool_result()["status"], "success", "{}", run.all());

    let decisions = shell_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = &decisions[0];
    assert_eq!(decision["body"]["decision"], "allow", "{decision}");
    assert_eq!(decision["body"]["request"]["context"]["input"]["command"], project.command.as_str());
    // Gemini CLI sends no call id: the AfterTool half finds its decision by
    // the tool and its input.
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "the AfterTool half recorded the outcome: {events:?}\n{}", run.all());
    let event = &events[0];
    assert_eq!(event["body"]["decision_id"], decision["body"]["decision_id"], "{event}");
    assert_eq!(event["body"]["outcome"], "success", "{event}");
    assert_eq!(event["body"]["attributes"]["client"], "gemini", "{event}");
    assert!(event["index"].as_u64().unwrap() > decision["index"].as_u64().unwrap(), "{event} after {decision}");
}

#[test]
fn a_stopped_mandate_server_keeps_the_command_from_running() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, mut server) = Server::fresh();
    let token = coder(&server, &project.root);
    let url = format!("http://{}", server.addr);
    server.stop();
    project.install_hook();
    let run = run_gemini(&project, &model, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)]);

    assert!(!project.marker.exists(), "the command ran with Mandate down: {}", run.all());
    let result = run.tool_result();
    assert_eq!(result["status"], "error", "{}", run.all());
    let text = result["output"].to_string();
    assert!(text.contains("mandate: blocked") && text.contains("unreachable"), "{result}");
}

/// In GitHub Actions (`GITHUB_SHA` set) Gemini CLI gives a hook only the
/// variables it allows by name: the hook then has no token and blocks (it
/// fails closed), until `security.environmentVariableRedaction.allowed`
/// names `MANDATE_URL` and `MANDATE_TOKEN` (what `hook install gemini`
/// documents).
#[test]
fn github_actions_strips_the_token_unless_allowed_by_name() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &project.root);
    server.put_policies("@id(\"all\") permit(principal, action, resource);");
    project.install_hook();
    let url = format!("http://{}", server.addr);
    let env = [("MANDATE_URL", &*url), ("MANDATE_TOKEN", &*token), ("GITHUB_SHA", "0123456789abcdef")];
    let run = run_gemini(&project, &model, &env);
    assert!(!project.marker.exists(), "the command ran without a decision: {}", run.all());
    let text = run.tool_result()["output"].to_string();
    assert!(text.contains("MANDATE_TOKEN") && text.contains("not set"), "{}", run.all());
    assert!(shell_decisions(&server).is_empty());

    let model = FakeModel::start(project.dir.path(), &project.command);
    project.user_settings(&json!({"security": {"environmentVariableRedaction": {
        "allowed": ["MANDATE_URL", "MANDATE_TOKEN"],
    }}}));
    let run = run_gemini(&project, &model, &env);
    assert!(project.marker.exists(), "allowed by name, the hook let it run: {}", run.all());
    assert_eq!(shell_decisions(&server).len(), 1);
}
