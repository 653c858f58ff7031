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

use serde_json::{Value, json};

mod common;
use common::*;

mod agent_cli;
use agent_cli::*;

// ---------------------------------------------------------------- the CLI

/// `@google/gemini-cli@0.61.0`: the `gemini` launcher (a Node script).
const CLI: AgentCli =
    AgentCli::npm("@google/gemini-cli", "0.61.0", "node_modules/.bin/gemini", "gemini_cli/fake_gemini.py");

// ---------------------------------------------------------------- the fake model

impl FakeModel {
    /// The `functionResponse` parts the model was sent.
    fn tool_responses(&self) -> Vec<Value> {
        self.sent(|body| {
            let contents = body["contents"].as_array().into_iter().flatten();
            let parts = contents.flat_map(|content| content["parts"].as_array().into_iter().flatten());
            parts.filter_map(|part| part.get("functionResponse")).cloned().collect()
        })
    }
}

// ---------------------------------------------------------------- one run

impl Project {
    /// A project whose home has the user's default settings.
    fn gemini() -> Project {
        let project = Project::new();
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
        let args = ["hook", "install", "gemini", "--settings", path_str(&settings)];
        self.install_hook_with(&args, &settings, "BeforeTool", "gemini");
    }
}

impl Run {
    /// The `tool_result` event of the model's tool call.
    fn tool_result(&self) -> &Value {
        self.events
            .iter()
            .find(|event| event["type"] == "tool_result")
            .unwrap_or_else(|| panic!("no tool result: {}", self.all()))
    }
}

/// Runs `gemini -p … --output-format stream-json` once in `project` against
/// `model`, with `env` added (`MANDATE_URL`, `MANDATE_TOKEN` for the hook).
/// The environment is otherwise empty but for `PATH`, `HOME` and the hook's
/// state: in particular no `GITHUB_SHA`, with which Gemini CLI strips the
/// hook's environment (see
/// `github_actions_strips_the_token_unless_allowed_by_name`).
fn run_gemini(project: &Project, model: &FakeModel, env: &[(&str, &str)]) -> Run {
    let mut command = CLI.command(project, env);
    command
        .args(["-m", "gemini-fake", "--approval-mode", "yolo", "--output-format", "stream-json"])
        .args(["-p", "Create the marker file."])
        .env("GEMINI_API_KEY", "fake-gemini-key-for-tests")
        .env("GOOGLE_GEMINI_BASE_URL", &model.url)
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true");
    CLI.run(&mut command, |line| line.starts_with('{'))
}

// ---------------------------------------------------------------- the cases

#[test]
fn a_forbid_policy_keeps_the_command_from_running_and_the_model_is_told_why() {
    let project = Project::gemini();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(&forbidding("no-shell", "tool.run_shell_command")));
    project.install_hook();
    let run = run_gemini(&project, &model, &server.env());

    assert!(!project.marker.exists(), "the command ran despite the deny: {}", run.all());
    let result = run.tool_result();
    assert_eq!(result["status"], "error", "{}", run.all());
    let text = result["output"].to_string();
    assert!(text.contains("mandate: `tool.run_shell_command` denied") && text.contains("no-shell"), "{result}");
    let told = model.tool_responses();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].to_string().contains("no-shell"), "the model was told why: {told:?}");

    let body = the_one_denial(&server, "tool.run_shell_command", "gemini", &project);
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "the reason names the logged decision: {result}");
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::gemini();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(PERMIT_ALL));
    project.install_hook();
    let run = run_gemini(&project, &model, &server.env());

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran: {}", run.all());
    assert_eq!(run.tool_result()["status"], "success", "{}", run.all());

    let decisions = decisions_on(&server, "tool.run_shell_command");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    // Gemini CLI sends no call id: the AfterTool half finds its decision by
    // the tool and its input.
    the_joined_outcome(&server, &decisions[0], &project.command, "gemini", &run);
}

#[test]
fn a_stopped_mandate_server_keeps_the_command_from_running() {
    let project = Project::gemini();
    let model = CLI.fake_model(&project);
    let mut server = Mandate::serve(&[&project.root], None);
    server.stop();
    project.install_hook();
    let run = run_gemini(&project, &model, &server.env());

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
    let project = Project::gemini();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(PERMIT_ALL));
    project.install_hook();
    let [url, token] = server.env();
    let env = [url, token, ("GITHUB_SHA", "0123456789abcdef")];
    let run = run_gemini(&project, &model, &env);
    assert!(!project.marker.exists(), "the command ran without a decision: {}", run.all());
    let text = run.tool_result()["output"].to_string();
    assert!(text.contains("MANDATE_TOKEN") && text.contains("not set"), "{}", run.all());
    assert!(decisions_on(&server, "tool.run_shell_command").is_empty());

    let model = CLI.fake_model(&project);
    project.user_settings(&json!({"security": {"environmentVariableRedaction": {
        "allowed": ["MANDATE_URL", "MANDATE_TOKEN"],
    }}}));
    let run = run_gemini(&project, &model, &env);
    assert!(project.marker.exists(), "allowed by name, the hook let it run: {}", run.all());
    assert_eq!(decisions_on(&server, "tool.run_shell_command").len(), 1);
}
