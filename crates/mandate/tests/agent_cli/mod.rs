//! The harness shared by the tests that drive a real coding-agent CLI
//! (`claude_code.rs`, `codex_cli.rs`, `gemini_cli.rs`) against the real
//! `mandate serve`: the CLI pinned and installed with npm into
//! `target/<name>-<version>` under a file lock, a fake model server (a Python
//! script beside the test, built on `fake_server.py` here) and its request
//! log, a project directory with a marker file its command creates, one run
//! of the CLI with a deadline, the coder and its token, and the checks on the
//! log that every CLI's deny and allow cases share.
//!
//! Each test file adds what is its CLI's own (arguments, environment,
//! settings, where its transcript and the model's requests put the tool's
//! result) as inherent methods on these types.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Server, path_str};

/// How long one CLI run may take (a few seconds at most here).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub const ALICE: &str = "user:alice";
pub const CODER: &str = "agent:coder";

// ---------------------------------------------------------------- the CLI

/// A coding-agent CLI pinned to one npm version, and its fake model.
pub struct AgentCli {
    /// The npm package, e.g. `@openai/codex`: installed into
    /// `target/<its last segment>-<version>`, under the lock
    /// `target/<its last segment>.lock`.
    pub package: &'static str,
    pub version: &'static str,
    /// The binary to run, relative to the install prefix; its name without
    /// an extension names it in messages.
    pub binary: &'static str,
    /// The fake model server, relative to `tests/`.
    pub fake: &'static str,
    /// How to tell that the installed binary is the pinned version.
    pub check: VersionCheck,
    /// A script (in the package's directory) to run with `node` when the
    /// binary still fails its check after `npm install`.
    pub postinstall: Option<&'static str>,
}

/// How an installed CLI shows its version.
pub enum VersionCheck {
    /// `<binary> --version`, run with `env`, prints what `reports` accepts.
    Flag { env: &'static [(&'static str, &'static str)], reports: fn(&str) -> bool },
    /// The package's `package.json` names the version (and the binary exists).
    Manifest,
}

impl AgentCli {
    /// `package@version`, checked by its manifest, with no postinstall.
    pub const fn npm(package: &'static str, version: &'static str, binary: &'static str, fake: &'static str) -> Self {
        AgentCli { package, version, binary, fake, check: VersionCheck::Manifest, postinstall: None }
    }

    fn name(&self) -> &str {
        let file = self.binary.rsplit('/').next().unwrap_or(self.binary);
        file.split('.').next().unwrap_or(file)
    }

    /// The binary, installed on the first call (the lock keeps parallel
    /// tests from installing it twice).
    pub fn installed(&self) -> PathBuf {
        let dir = self.package.rsplit('/').next().unwrap();
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        let prefix = target.join(format!("{dir}-{}", self.version));
        let binary = prefix.join(self.binary);
        let package_dir = prefix.join("node_modules").join(self.package);
        let manifest = package_dir.join("package.json");
        let works = || match &self.check {
            VersionCheck::Flag { env, reports } => Command::new(&binary)
                .arg("--version")
                .envs(env.iter().copied())
                .output()
                .is_ok_and(|output| reports(&String::from_utf8_lossy(&output.stdout))),
            VersionCheck::Manifest => {
                std::fs::read(&manifest)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .is_some_and(|package| package["version"] == self.version)
                    && binary.exists()
            }
        };
        std::fs::create_dir_all(&target).unwrap();
        let lock = File::create(target.join(format!("{dir}.lock"))).unwrap();
        lock.lock().unwrap();
        if !works() {
            let _ = std::fs::remove_dir_all(&prefix);
            std::fs::create_dir_all(&prefix).unwrap();
            let package = format!("{}@{}", self.package, self.version);
            let npm = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(&prefix)
                .arg(&package)
                .output()
                .unwrap_or_else(|error| panic!("running npm: {error}"));
            assert!(npm.status.success(), "npm install {package}: {}", String::from_utf8_lossy(&npm.stderr));
            if let Some(script) = self.postinstall.filter(|_| !works()) {
                let installed = Command::new("node").arg(script).current_dir(&package_dir).output().unwrap();
                assert!(installed.status.success(), "{script}: {}", String::from_utf8_lossy(&installed.stderr));
            }
            assert!(works(), "{} is not {package}", binary.display());
        }
        drop(lock);
        binary
    }

    /// The fake model for `project`: its tool call runs the project's
    /// command, and it logs its requests in the project's directory.
    pub fn fake_model(&self, project: &Project) -> FakeModel {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(self.fake);
        let log = project.dir.path().join("model-requests.jsonl");
        // `-B`: no `__pycache__` in the source tree.
        let mut child = Command::new("python3")
            .arg("-B")
            .arg(script)
            .arg(&log)
            .arg(&project.command)
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

    /// The CLI, to run in `project` with an environment empty but for
    /// `PATH`, `HOME`, the hook's state directory and `mandate_env`
    /// (`MANDATE_URL`, `MANDATE_TOKEN` for the hook); the caller adds the
    /// arguments and the CLI's own variables.
    pub fn command(&self, project: &Project, mandate_env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(self.installed());
        command
            .current_dir(&project.root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &project.home)
            .env("MANDATE_HOOK_STATE", project.dir.path().join("hook-state"))
            .envs(mandate_env.iter().copied());
        command
    }

    /// Runs `command` to its successful end within [`RUN_TIMEOUT`], and
    /// parses the stdout lines `is_event` accepts as JSON.
    pub fn run(&self, command: &mut Command, is_event: fn(&str) -> bool) -> Run {
        let name = self.name();
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
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
                panic!("{name} ran over {RUN_TIMEOUT:?}: {}", err.join().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        assert!(status.success(), "{name} exited {status}: {stdout}\n{stderr}");
        let events = stdout
            .lines()
            .filter(|line| is_event(line))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect();
        Run { events, stderr }
    }
}

// ---------------------------------------------------------------- the fake model

/// A fake model server, stopped when dropped.
pub struct FakeModel {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: ChildStdin,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl FakeModel {
    /// Every request it received (`method`, `path`, `body`).
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// What `items` finds in each request's body, in order.
    pub fn sent(&self, items: fn(&Value) -> Vec<Value>) -> Vec<Value> {
        self.requests().iter().flat_map(|request| items(&request["body"])).collect()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- one run

/// A temporary directory with a project, a home, a marker path and the
/// command that creates it.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The project (canonical: the CLIs report its real path as `cwd`).
    pub root: PathBuf,
    /// `HOME` for the CLI.
    pub home: PathBuf,
    pub marker: PathBuf,
    pub command: String,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let marker = root.join("ran.txt");
        let command = format!("echo ran > {}", path_str(&marker));
        Project { dir, root, home, marker, command }
    }

    /// Runs `mandate <args>` (a `hook install`) and checks that the first
    /// `event` hook (PreToolUse or its like) in the `file` it wrote runs `<the
    /// binary under test> hook <client>`; returns the file.
    pub fn install_hook_with(&self, args: &[&str], file: &Path, event: &str, client: &str) -> Value {
        let installed = crate::common::mandate(args);
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let written: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let command = written["hooks"][event][0]["hooks"][0]["command"].as_str().unwrap();
        let expected = format!("{} hook {client}", env!("CARGO_BIN_EXE_mandate"));
        assert_eq!(command, expected, "the binary under test");
        written
    }
}

/// What one run of a CLI printed.
pub struct Run {
    /// The JSON transcript, one event a line.
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Run {
    /// The transcript and stderr, for messages.
    pub fn all(&self) -> String {
        let lines: Vec<String> = self.events.iter().map(Value::to_string).collect();
        format!("{}\n{}", lines.join("\n"), self.stderr)
    }
}

// ---------------------------------------------------------------- Mandate

/// The policy that permits everything.
pub const PERMIT_ALL: &str = "@id(\"all\") permit(principal, action, resource);";

/// [`PERMIT_ALL`] and a forbid policy named `id` on `action`.
pub fn forbidding(id: &str, action: &str) -> String {
    format!("{PERMIT_ALL}\n@id(\"{id}\") forbid(principal, action == Mandate::Action::\"{action}\", resource);")
}

/// A fresh `mandate serve` where `user:alice` → `agent:coder` may use
/// `tool.*` in the given projects, with an agent token for the coder; a
/// [`Server`] by `Deref`.
pub struct Mandate {
    /// Dropped before its data directory.
    server: Server,
    _data: tempfile::TempDir,
    /// `http://<the server's address>`, kept when it stops.
    pub url: String,
    pub token: String,
}

impl Mandate {
    /// The server, with `policies` if any.
    pub fn serve(projects: &[&Path], policies: Option<&str>) -> Mandate {
        let (data, server) = Server::fresh();
        server.identity(ALICE, "human", None);
        server.identity(CODER, "agent", Some(ALICE));
        let resources: Vec<String> =
            projects.iter().flat_map(|root| [path_str(root).to_owned(), format!("{}/*", path_str(root))]).collect();
        server.grant(json!({"grantee": CODER, "grantor": ALICE, "actions": ["tool.*"], "resources": resources}));
        let issued = server.post("/v1/tokens", json!({"identity": CODER, "ttl_s": 600})).expect(201);
        let token = issued["token"].as_str().unwrap().to_owned();
        if let Some(policies) = policies {
            server.put_policies(policies);
        }
        let url = format!("http://{}", server.addr);
        Mandate { server, _data: data, url, token }
    }

    /// `MANDATE_URL` and `MANDATE_TOKEN`, for the hook.
    pub fn env(&self) -> [(&str, &str); 2] {
        [("MANDATE_URL", &self.url), ("MANDATE_TOKEN", &self.token)]
    }
}

impl std::ops::Deref for Mandate {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Mandate {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// The decisions on `action` in the log.
pub fn decisions_on(server: &Server, action: &str) -> Vec<Value> {
    let decisions = server.search_all("type=decision");
    decisions.into_iter().filter(|decision| decision["body"]["request"]["action"] == action).collect()
}

/// Checks that the log holds one decision on `action`, a deny of `project`'s
/// command asked by `client` on the project, and no recorded outcome
/// (nothing ran); returns the decision's body.
pub fn the_one_denial(server: &Server, action: &str, client: &str, project: &Project) -> Value {
    let decisions = decisions_on(server, action);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let body = &decisions[0]["body"];
    assert_eq!(body["decision"], "deny", "{body}");
    assert_eq!(body["request"]["context"]["client"], client, "{body}");
    assert_eq!(body["request"]["context"]["input"]["command"], project.command.as_str(), "{body}");
    assert_eq!(body["request"]["resource"], path_str(&project.root), "{body}");
    assert!(server.search_all("type=event.recorded").is_empty(), "nothing ran, nothing recorded");
    body.clone()
}

/// Checks that `decision` allowed `command` and that the log's one
/// `event.recorded` is its outcome: joined by its decision id, a success
/// reported by `client`, written after it (`run` is for messages); returns
/// the event.
pub fn the_joined_outcome(server: &Server, decision: &Value, command: &str, client: &str, run: &Run) -> Value {
    assert_eq!(decision["body"]["decision"], "allow", "{decision}");
    assert_eq!(decision["body"]["request"]["context"]["input"]["command"], command, "{decision}");
    let events = server.search_all("type=event.recorded");
    assert_eq!(events.len(), 1, "the after half recorded the outcome: {events:?}\n{}", run.all());
    let event = &events[0];
    assert_eq!(event["body"]["decision_id"], decision["body"]["decision_id"], "{event}");
    assert_eq!(event["body"]["outcome"], "success", "{event}");
    assert_eq!(event["body"]["attributes"]["client"], client, "{event}");
    assert!(event["index"].as_u64().unwrap() > decision["index"].as_u64().unwrap(), "{event} after {decision}");
    event.clone()
}
