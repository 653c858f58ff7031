//! The coding-agent hook end to end, with the real Codex CLI (npm
//! `@openai/codex` 0.169.0) driving the real `mandate serve`.
//!
//! Each case runs `codex exec --json` once, fully offline: `CODEX_HOME` is a
//! temporary directory whose `config.toml` names a `model_providers` entry
//! pointing at a small fake Responses API (`tests/codex_cli/fake_openai.py`:
//! first an `exec_command` call that creates a marker file, then, after the
//! tool's output, a final text) and turns off the update check, analytics,
//! plugins and apps (with them off, its only connection is to the fake
//! server; checked with strace), and whose `hooks.json` was written by
//! `mandate hook install codex` (so the hook is the binary under test).
//! `--dangerously-bypass-approvals-and-sandbox` lets the command past Codex's
//! own approvals and sandbox (which cannot start in every container), so a
//! block can only come from the hook.
//!
//! Codex runs a hook from a user or project layer only once the user has
//! trusted it (`/hooks` in the interactive CLI keeps the reviewed hash in
//! `config.toml`): the cases pass `--dangerously-bypass-hook-trust`, as
//! automation that vets its hooks would, and one case pins what happens
//! without it.
//!
//! The CLI is installed with npm into `target/codex-0.169.0` on the first
//! run, under a file lock so that parallel tests install it once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

const CODEX_VERSION: &str = "0.169.0";

/// How long one CLI run may take (it takes a second or two here).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const ALICE: &str = "user:alice";
const CODER: &str = "agent:coder";

// ---------------------------------------------------------------- the CLI

/// The `codex` launcher of `@openai/codex@0.169.0` (a Node script that runs
/// the platform's native binary), installed on the first call into
/// `target/codex-0.169.0` (a lock file beside it keeps parallel tests from
/// installing it twice).
fn codex() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let prefix = target.join(format!("codex-{CODEX_VERSION}"));
    let launcher = prefix.join("node_modules/.bin/codex");
    let works = |launcher: &Path| {
        Command::new(launcher)
            .arg("--version")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == format!("codex-cli {CODEX_VERSION}"))
    };
    std::fs::create_dir_all(&target).unwrap();
    let lock = File::create(target.join("codex.lock")).unwrap();
    lock.lock().unwrap();
    if !works(&launcher) {
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(&prefix).unwrap();
        let package = format!("@openai/codex@{CODEX_VERSION}");
        let npm = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&prefix)
            .arg(&package)
            .output()
            .unwrap_or_else(|error| panic!("running npm: {error}"));
        assert!(npm.status.success(), "npm install {package}: {}", String::from_utf8_lossy(&npm.stderr));
        assert!(works(&launcher), "{} --version is not {CODEX_VERSION}", launcher.display());
    }
    drop(lock);
    launcher
}

// ---------------------------------------------------------------- the fake model

/// The fake Responses API, stopped when dropped.
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
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codex_cli/fake_openai.py");
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
        FakeModel { child, _stdin: stdin, url: format!("http://127.0.0.1:{port}/v1"), log }
    }

    /// The `function_call_output` items the model was sent.
    fn tool_outputs(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let requests: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let mut outputs = Vec::new();
        for request in requests {
            for item in request["body"]["input"].as_array().into_iter().flatten() {
                if item["type"] == "function_call_output" {
                    outputs.push(item.clone());
                }
            }
        }
        outputs
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- one run

/// A project directory, a Codex home with the hook installed, a marker path
/// and the command that creates it.
struct Project {
    dir: tempfile::TempDir,
    /// The project (canonical, as Codex reports it as `cwd`).
    root: PathBuf,
    codex_home: PathBuf,
    marker: PathBuf,
    command: String,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let codex_home = dir.path().join("home/.codex");
        std::fs::create_dir_all(&codex_home).unwrap();
        let marker = root.join("ran.txt");
        let command = format!("echo ran > {}", path_str(&marker));
        Project { dir, root, codex_home, marker, command }
    }

    /// `config.toml` for `model`, and `mandate hook install codex --hooks
    /// <CODEX_HOME>/hooks.json` (the user's layer).
    fn configure(&self, model: &FakeModel) {
        let config = format!(
            "model = \"gpt-fake\"\n\
             model_provider = \"fake\"\n\
             check_for_update_on_startup = false\n\
             \n\
             [analytics]\n\
             enabled = false\n\
             \n\
             [features]\n\
             plugins = false\n\
             apps = false\n\
             \n\
             [model_providers.fake]\n\
             name = \"fake\"\n\
             base_url = \"{}\"\n\
             wire_api = \"responses\"\n",
            model.url
        );
        std::fs::write(self.codex_home.join("config.toml"), config).unwrap();
        let hooks = self.codex_home.join("hooks.json");
        let installed = mandate(&["hook", "install", "codex", "--hooks", path_str(&hooks)]);
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let written: Value = serde_json::from_slice(&std::fs::read(&hooks).unwrap()).unwrap();
        let command = written["hooks"]["PreToolUse"][0]["hooks"][0]["command"].as_str().unwrap();
        assert_eq!(command, format!("{} hook codex", env!("CARGO_BIN_EXE_mandate")), "the binary under test");
    }
}

/// What one `codex exec --json` run printed.
struct Run {
    /// The JSONL events.
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    /// The command executions Codex reported.
    fn executions(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|event| event["type"] == "item.completed" && event["item"]["type"] == "command_execution")
            .map(|event| &event["item"])
            .collect()
    }

    fn all(&self) -> String {
        let lines: Vec<String> = self.events.iter().map(Value::to_string).collect();
        format!("{}\n{}", lines.join("\n"), self.stderr)
    }
}

/// Runs the real CLI once in `project`, with `mandate_env` for the hook and
/// `--dangerously-bypass-hook-trust` if `bypass_trust`.
fn run_codex(project: &Project, mandate_env: &[(&str, &str)], bypass_trust: bool) -> Run {
    let mut command = Command::new(codex());
    command
        .args(["exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"])
        .args(bypass_trust.then_some("--dangerously-bypass-hook-trust"))
        .arg("--cd")
        .arg(&project.root)
        .arg("Create the marker file.")
        .current_dir(&project.root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", project.dir.path().join("home"))
        .env("CODEX_HOME", &project.codex_home)
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
            panic!("codex ran over {RUN_TIMEOUT:?}: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "codex exited {status}: {stdout}\n{stderr}");
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
    let token = coder(&server, &project.root);
    server.put_policies(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-bash\") forbid(principal, action == Mandate::Action::\"tool.Bash\", resource);",
    );
    project.configure(&model);
    let url = format!("http://{}", server.addr);
    let run = run_codex(&project, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)], true);

    assert!(!project.marker.exists(), "the command ran despite the deny: {}", run.all());
    assert!(run.executions().is_empty(), "{}", run.all());
    let told = model.tool_outputs();
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["output"].to_string();
    assert!(text.contains("blocked by PreToolUse hook: mandate: `tool.Bash` denied"), "{told:?}");
    assert!(text.contains("no-bash"), "{told:?}");

    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let body = &decisions[0]["body"];
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["request"]["context"]["client"], "codex", "{body}");
    assert_eq!(body["request"]["context"]["input"]["command"], project.command.as_str(), "{body}");
    assert_eq!(body["request"]["resource"], path_str(&project.root), "{body}");
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "the reason names the logged decision: {told:?}");
    assert!(server.search_all("type=event.recorded").is_empty());
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &project.root);
    server.put_policies("@id(\"all\") permit(principal, action, resource);");
    project.configure(&model);
    let url = format!("http://{}", server.addr);
    let run = run_codex(&project, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)], true);

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran: {}", run.all());
    let executions = run.executions();
    assert_eq!(executions.len(), 1, "{}", run.all());
    assert_eq!(executions[0]["exit_code"], 0, "{}", run.all());

    let decisions = bash_decisions(&server);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let decision = &decisions[0];
    assert_eq!(decision["body"]["decision"], "allow", "{decision}");
    assert_eq!(decision["body"]["request"]["context"]["input"]["command"], project.command.as_str());
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "the PostToolUse half recorded the outcome: {events:?}\n{}", run.all());
    let event = &events[0];
    assert_eq!(event["body"]["decision_id"], decision["body"]["decision_id"], "{event}");
    assert_eq!(event["body"]["outcome"], "success", "{event}");
    assert_eq!(event["body"]["attributes"]["client"], "codex", "{event}");
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
    project.configure(&model);
    let run = run_codex(&project, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)], true);

    assert!(!project.marker.exists(), "the command ran with Mandate down: {}", run.all());
    let told = model.tool_outputs();
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["output"].to_string();
    assert!(text.contains("mandate: blocked") && text.contains("unreachable"), "{told:?}");
}

/// What `mandate hook install codex` cannot do alone: until the hook is
/// trusted in Codex, Codex skips it and the command runs unchecked (the
/// README and `hook install codex` say so). If this starts failing, Codex
/// changed how it treats untrusted hooks: update them.
#[test]
fn an_untrusted_hook_is_skipped_by_codex() {
    let project = Project::new();
    let model = FakeModel::start(project.dir.path(), &project.command);
    let (_data, server) = Server::fresh();
    let token = coder(&server, &project.root);
    server.put_policies("@id(\"none\") forbid(principal, action, resource);");
    project.configure(&model);
    let url = format!("http://{}", server.addr);
    let run = run_codex(&project, &[("MANDATE_URL", &url), ("MANDATE_TOKEN", &token)], false);

    assert!(project.marker.exists(), "Codex ran the untrusted hook: {}", run.all());
    assert!(bash_decisions(&server).is_empty(), "Mandate was not asked");
}
