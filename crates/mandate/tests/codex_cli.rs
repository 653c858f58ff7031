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

use std::path::PathBuf;

use serde_json::Value;

mod common;
use common::*;

mod agent_cli;
use agent_cli::*;

const CODEX_VERSION: &str = "0.169.0";

// ---------------------------------------------------------------- the CLI

/// `@openai/codex@0.169.0`: the `codex` launcher (a Node script that runs
/// the platform's native binary).
const CLI: AgentCli = AgentCli {
    check: VersionCheck::Flag { env: &[], reports: |stdout| stdout.trim() == format!("codex-cli {CODEX_VERSION}") },
    ..AgentCli::npm("@openai/codex", CODEX_VERSION, "node_modules/.bin/codex", "codex_cli/fake_openai.py")
};

// ---------------------------------------------------------------- the fake model

impl FakeModel {
    /// The `function_call_output` items the model was sent.
    fn tool_outputs(&self) -> Vec<Value> {
        self.sent(|body| {
            let items = body["input"].as_array().into_iter().flatten();
            items.filter(|item| item["type"] == "function_call_output").cloned().collect()
        })
    }
}

// ---------------------------------------------------------------- one run

impl Project {
    /// `CODEX_HOME`, in the temporary home.
    fn codex_home(&self) -> PathBuf {
        self.home.join(".codex")
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
             base_url = \"{}/v1\"\n\
             wire_api = \"responses\"\n",
            model.url
        );
        std::fs::create_dir_all(self.codex_home()).unwrap();
        std::fs::write(self.codex_home().join("config.toml"), config).unwrap();
        let hooks = self.codex_home().join("hooks.json");
        let args = ["hook", "install", "codex", "--hooks", path_str(&hooks)];
        self.install_hook_with(&args, &hooks, "PreToolUse", "codex");
    }
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
}

/// Runs `codex exec --json` once in `project`, with `mandate_env` for the
/// hook and `--dangerously-bypass-hook-trust` if `bypass_trust`.
fn run_codex(project: &Project, mandate_env: &[(&str, &str)], bypass_trust: bool) -> Run {
    let mut command = CLI.command(project, mandate_env);
    command
        .args(["exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"])
        .args(bypass_trust.then_some("--dangerously-bypass-hook-trust"))
        .arg("--cd")
        .arg(&project.root)
        .arg("Create the marker file.")
        .env("CODEX_HOME", project.codex_home());
    CLI.run(&mut command, |line| line.starts_with('{'))
}

// ---------------------------------------------------------------- the cases

#[test]
fn a_forbid_policy_keeps_the_command_from_running_and_the_model_is_told_why() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(&forbidding("no-bash", "tool.Bash")));
    project.configure(&model);
    let run = run_codex(&project, &server.env(), true);

    assert!(!project.marker.exists(), "the command ran despite the deny: {}", run.all());
    assert!(run.executions().is_empty(), "{}", run.all());
    let told = model.tool_outputs();
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["output"].to_string();
    assert!(text.contains("blocked by PreToolUse hook: mandate: `tool.Bash` denied"), "{told:?}");
    assert!(text.contains("no-bash"), "{told:?}");

    let body = the_one_denial(&server, "tool.Bash", "codex", &project);
    assert!(text.contains(body["decision_id"].as_str().unwrap()), "the reason names the logged decision: {told:?}");
}

#[test]
fn an_allowed_command_runs_and_its_outcome_is_joined_to_the_decision() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some(PERMIT_ALL));
    project.configure(&model);
    let run = run_codex(&project, &server.env(), true);

    assert_eq!(std::fs::read_to_string(&project.marker).unwrap(), "ran\n", "the command ran: {}", run.all());
    let executions = run.executions();
    assert_eq!(executions.len(), 1, "{}", run.all());
    assert_eq!(executions[0]["exit_code"], 0, "{}", run.all());

    let decisions = decisions_on(&server, "tool.Bash");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    the_joined_outcome(&server, &decisions[0], &project.command, "codex", &run);
}

#[test]
fn a_stopped_mandate_server_keeps_the_command_from_running() {
    let project = Project::new();
    let model = CLI.fake_model(&project);
    let mut server = Mandate::serve(&[&project.root], None);
    server.stop();
    project.configure(&model);
    let run = run_codex(&project, &server.env(), true);

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
    let model = CLI.fake_model(&project);
    let server = Mandate::serve(&[&project.root], Some("@id(\"none\") forbid(principal, action, resource);"));
    project.configure(&model);
    let run = run_codex(&project, &server.env(), false);

    assert!(project.marker.exists(), "Codex ran the untrusted hook: {}", run.all());
    assert!(decisions_on(&server, "tool.Bash").is_empty(), "Mandate was not asked");
}
