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

use std::path::PathBuf;

use serde_json::Value;

mod common;
use common::*;

mod agent_cli;
use agent_cli::*;

const CLAUDE_CODE_VERSION: &str = "2.1.330";

// ---------------------------------------------------------------- the CLI

/// `@anthropic-ai/claude-code@2.1.330`: the native `claude` binary, which
/// an npm that skipped the postinstall leaves as a placeholder (its
/// `install.cjs` puts the platform's binary in its place).
const CLI: AgentCli = AgentCli {
    check: VersionCheck::Flag {
        env: &[("DISABLE_AUTOUPDATER", "1")],
        reports: |stdout| stdout.starts_with(CLAUDE_CODE_VERSION),
    },
    postinstall: Some("install.cjs"),
    ..AgentCli::npm(
        "@anthropic-ai/claude-code",
        CLAUDE_CODE_VERSION,
        "node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        "claude_code/fake_anthropic.py",
    )
};

// ---------------------------------------------------------------- the fake model

impl FakeModel {
    /// The `tool_result` blocks the model was sent.
    fn tool_results(&self) -> Vec<Value> {
        self.sent(|body| {
            let messages = body["messages"].as_array().into_iter().flatten();
            let blocks = messages.flat_map(|message| message["content"].as_array().into_iter().flatten());
            blocks.filter(|block| block["type"] == "tool_result").cloned().collect()
        })
    }
}

// ---------------------------------------------------------------- one run

impl Project {
    fn settings(&self) -> PathBuf {
        self.root.join(".claude/settings.json")
    }

    /// `mandate hook install claude-code --settings <project>/.claude/settings.json`.
    fn install_command_hook(&self) -> Value {
        let settings = self.settings();
        let args = ["hook", "install", "claude-code", "--settings", path_str(&settings)];
        self.install_hook_with(&args, &settings, "PreToolUse", "claude-code")
    }

    /// Claude Code's HTTP hook type, pointed at `POST /v1/hooks/claude-code`
    /// of `server` (`http://host:port`), with the agent token taken from
    /// `MANDATE_TOKEN` in Claude Code's environment: written by `mandate
    /// hook install claude-code --http`.
    fn install_http_hook(&self, server: &str) -> Value {
        let settings = self.settings();
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

impl Run {
    /// The `tool_result` Claude Code produced for the model's tool call.
    fn tool_result(&self) -> &Value {
        self.events
            .iter()
            .filter(|event| event["type"] == "user")
            .flat_map(|event| event["message"]["content"].as_array().into_iter().flatten())
            .find(|block| block["type"] == "tool_result")
            .unwrap_or_else(|| panic!("no tool result in the transcript: {}", self.all()))
    }

    /// The final `result` event.
    fn result(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|event| event["type"] == "result")
            .unwrap_or_else(|| panic!("no result in the transcript: {}", self.all()))
    }
}

/// Runs `claude -p … --output-format stream-json --verbose` once in
/// `project`, against `model`, with `mandate_env` (`MANDATE_URL`,
/// `MANDATE_TOKEN`) for the hook.
fn run_claude(project: &Project, model: &FakeModel, mandate_env: &[(&str, &str)]) -> Run {
    let mut command = CLI.command(project, mandate_env);
    command
        .args(["-p", "Create the marker file.", "--output-format", "stream-json", "--verbose"])
        .args(["--allowedTools", "Bash"])
        .env("CLAUDE_CONFIG_DIR", project.home.join(".claude"))
        .env("TMPDIR", project.dir.path())
        .env("ANTHROPIC_BASE_URL", &model.url)
        .env("ANTHROPIC_API_KEY", "sk-ant-fake-key-for-tests")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1");
    CLI.run(&mut command, |line| !line.trim().is_empty())
}

// ---------------------------------------------------------------- the cases

#[test]
fn a_forbid_policy_keeps_the_command_from_running_and_the_model_is_told_why() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(&forbidding("no-bash", "tool.Bash")));
    project.install_command_hook();
    let run = run_claude(&project, &model, &server.env());

    assert!(
        !project.marker.exists(),
        "the command ran despite the deny: {}\n{}\n{:#?}",
        run.events.iter().skip(1).map(Value::to_string).collect::<Vec<_>>().join("\n"),
        run.stderr,
        decisions_on(&server, "tool.Bash")
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

    let body = the_one_denial(&server, "tool.Bash", "claude-code", &project);
    assert!(body.to_string().contains("no-bash"), "{body}");
    let id = body["decision_id"].as_str().unwrap();
    assert!(text.contains(id), "the reason names the logged decision {id}: {result}");
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(PERMIT_ALL));
    project.install_command_hook();
    let run = run_claude(&project, &model, &server.env());

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran");
    let result = run.tool_result();
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(run.result()["subtype"], "success");

    let decisions = decisions_on(&server, "tool.Bash");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let event = the_joined_outcome(&server, &decisions[0], &project.command, "claude-code", &run);
    assert_eq!(event["body"]["attributes"]["tool_use_id"], result["tool_use_id"], "{event}");
}

#[test]
fn a_stopped_mandate_server_keeps_the_command_from_running() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let mut server = Mandate::serve(&[&project.root], Some(PERMIT_ALL));
    server.stop();
    project.install_command_hook();
    let run = run_claude(&project, &model, &server.env());

    assert!(!project.marker.exists(), "the command ran with Mandate down");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("mandate: blocked") && text.contains("unreachable"), "{result}");
}

// ---------------------------------------------------------------- the HTTP hook

#[test]
fn the_http_hook_denies_allows_and_fails_closed_as_the_command_hook_does() {
    let deny = Project::new();
    let allow = Project::new();
    let policies = format!(
        "@id(\"all\") permit(principal, action, resource);\n\
         @id(\"no-bash-here\") forbid(principal, action == Mandate::Action::\"tool.Bash\", resource)\n\
         when {{ context.cwd == \"{}\" }};",
        path_str(&deny.root)
    );
    let server = Mandate::serve(&[&deny.root, &allow.root], Some(&policies));
    let (url, token) = (server.url.clone(), server.token.clone());

    // Denied: the command never runs, the model is told Mandate's reason.
    let model = CLI.fake_model(&deny);
    deny.install_http_hook(&url);
    let run = run_claude(&deny, &model, &[("MANDATE_TOKEN", &token)]);
    assert!(!deny.marker.exists(), "the command ran despite the deny");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("`tool.Bash` denied") && text.contains("no-bash-here"), "{result}");
    let body = the_one_denial(&server, "tool.Bash", "claude-code", &deny);
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "{result}");

    // Allowed: it runs, and the PostToolUse half is joined by `tool_use_id`.
    let model = CLI.fake_model(&allow);
    allow.install_http_hook(&url);
    let run = run_claude(&allow, &model, &[("MANDATE_TOKEN", &token)]);
    assert_eq!(std::fs::read_to_string(&allow.marker).unwrap(), "ran\n", "the command ran");
    let result = run.tool_result();
    assert_eq!(result["is_error"], false, "{result}");
    let decisions = decisions_on(&server, "tool.Bash");
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let event = the_joined_outcome(&server, &decisions[1], &allow.command, "claude-code", &run);
    assert_eq!(event["body"]["attributes"]["tool_use_id"], result["tool_use_id"], "{event}");

    // Mandate stopped: the HTTP hook cannot connect, and `onFailure: "block"`
    // keeps the command from running.
    let mut server = server;
    server.stop();
    let down = Project::new();
    let model = CLI.fake_model(&down);
    down.install_http_hook(&url);
    let run = run_claude(&down, &model, &[("MANDATE_TOKEN", &token)]);
    assert!(!down.marker.exists(), "the command ran with Mandate down");
    let result = run.tool_result();
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["content"].to_string();
    assert!(text.contains("onFailure") && text.contains("ECONNREFUSED"), "{result}");
}
