//! A coding agent's tool call as a Mandate request: which action, on which
//! resource, with what Cedar context.
//!
//! One mapping for every place a coding agent's tool call arrives — the
//! `mandate hook` command, `POST /v1/hooks/claude-code` and `mandate import`
//! — so that one policy reads the same call the same way wherever it came
//! from (the MCP gateway, which sees a server's tools rather than the
//! agent's, shares [`cedar_value`] and [`digest`]):
//!
//! - action: `tool.<name>` (`tool.Bash`, `tool.run_shell_command`); an MCP
//!   tool is `mcp.<server>.<tool>`, whether the client names it
//!   `mcp__<server>__<tool>` (Claude Code, Codex) or sends its server and
//!   tool apart (Gemini CLI's `mcp_context`, since its own name
//!   `mcp_<server>_<tool>` cannot be split when either holds a `_`);
//! - resource: the file the tool touches (`file_path`, `notebook_path`,
//!   `absolute_path` or `path` in its input, made absolute against the
//!   working directory and with `.` and `..` resolved), a `url` as is,
//!   otherwise the working directory;
//! - context: `{client, tool, cwd, input}`, where `input` is the tool input
//!   made representable in Cedar by [`cedar_value`]; nesting keeps the
//!   tool's keys clear of the reserved `amounts` and `chain`.

use std::path::{Component, Path};

use serde_json::{Map, Value};

/// How deep a tool input is kept as Cedar values; deeper parts become their
/// JSON text (Cedar refuses values nested deeper than 32).
pub const CONTEXT_DEPTH_MAX: usize = 16;

/// The resource of a call that names no file, URL or working directory.
pub const RESOURCE_UNKNOWN: &str = "unknown-cwd";

/// The largest integer an I-JSON number (and so a log entry) may hold.
const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// One tool call, borrowed from the client's payload.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// The client's name: `claude-code`, `codex`, `gemini`, `mcp-gateway`.
    pub client: &'a str,
    /// The tool's name as the client sends it.
    pub tool: &'a str,
    /// The tool input (an object, usually).
    pub input: &'a Value,
    /// The agent's working directory, when the client sends it.
    pub cwd: Option<&'a str>,
    /// An MCP tool's server and tool name, when the client sends them apart.
    pub mcp: Option<(&'a str, &'a str)>,
}

/// The input of a payload that has none.
static NO_INPUT: Value = Value::Null;

impl<'a> ToolCall<'a> {
    /// The call in a hook payload: `tool_name`, `tool_input`, `cwd`, and
    /// Gemini CLI's `mcp_context` (`server_name`, `tool_name`); `None`
    /// without a `tool_name`.
    pub fn from_payload(client: &'a str, payload: &'a Map<String, Value>) -> Option<ToolCall<'a>> {
        let text = |value: Option<&'a Value>| value.and_then(Value::as_str).filter(|text| !text.is_empty());
        let mcp = payload.get("mcp_context");
        let server = text(mcp.and_then(|mcp| mcp.get("server_name")));
        let tool = text(mcp.and_then(|mcp| mcp.get("tool_name")));
        Some(ToolCall {
            client,
            tool: text(payload.get("tool_name"))?,
            input: payload.get("tool_input").unwrap_or(&NO_INPUT),
            cwd: text(payload.get("cwd")),
            mcp: server.zip(tool),
        })
    }

    /// `tool.<name>`, or `mcp.<server>.<tool>` for an MCP tool.
    pub fn action(&self) -> String {
        match self.mcp {
            Some((server, tool)) => format!("mcp.{server}.{tool}"),
            None => action_for(self.tool),
        }
    }

    /// The file the tool touches, a URL it fetches, or the working directory.
    pub fn resource(&self) -> String {
        for key in ["file_path", "notebook_path", "absolute_path", "path"] {
            if let Some(path) = self.input.get(key).and_then(Value::as_str).filter(|path| !path.is_empty()) {
                return match self.cwd {
                    Some(cwd) if !Path::new(path).is_absolute() => normalize(&Path::new(cwd).join(path)),
                    _ => normalize(Path::new(path)),
                };
            }
        }
        if let Some(url) = self.input.get("url").and_then(Value::as_str).filter(|url| !url.is_empty()) {
            return url.to_owned();
        }
        self.cwd.map_or_else(|| RESOURCE_UNKNOWN.to_owned(), |cwd| normalize(Path::new(cwd)))
    }

    /// The Cedar context: `{client, tool, cwd, input}`.
    pub fn context(&self) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("client".into(), self.client.into());
        context.insert("tool".into(), self.tool.into());
        if let Some(cwd) = self.cwd {
            context.insert("cwd".into(), cwd.into());
        }
        context.insert("input".into(), cedar_value(self.input, 0).unwrap_or_else(|| Value::Object(Map::new())));
        context
    }
}

/// `tool.<name>`, or `mcp.<server>.<tool>` for `mcp__<server>__<tool>`.
pub fn action_for(tool: &str) -> String {
    if let Some(rest) = tool.strip_prefix("mcp__")
        && let Some((server, name)) = rest.split_once("__")
        && !server.is_empty()
        && !name.is_empty()
    {
        return format!("mcp.{server}.{name}");
    }
    format!("tool.{tool}")
}

/// `path` with `.` and `..` resolved by its text alone.
///
/// Grants match resources by prefix, so `/home/dev/project/../../etc` must
/// not pass for a path inside `/home/dev/project`. (Symbolic links are not
/// followed: the file may not exist yet, and nothing here touches the file
/// system it guards.)
pub fn normalize(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    let mut absolute = false;
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(part) => parts.push(part),
        }
    }
    let joined: Vec<String> = parts.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    let text = joined.join("/");
    if absolute { format!("/{text}") } else { text }
}

/// A JSON value Cedar (and a log entry) can hold, or `None` for a null,
/// which is dropped: fractions and integers beyond ±(2^53 − 1) become their
/// decimal text, and nesting deeper than [`CONTEXT_DEPTH_MAX`] becomes JSON
/// text.
pub fn cedar_value(value: &Value, depth: usize) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Bool(_) | Value::String(_) => Some(value.clone()),
        Value::Number(number) => {
            let safe = number.as_u64().is_some_and(|n| n <= SAFE_INTEGER_MAX)
                || number.as_i64().is_some_and(|n| n.unsigned_abs() <= SAFE_INTEGER_MAX);
            Some(if safe { value.clone() } else { Value::String(number.to_string()) })
        }
        Value::Array(_) | Value::Object(_) if depth >= CONTEXT_DEPTH_MAX => Some(Value::String(value.to_string())),
        Value::Array(items) => {
            Some(Value::Array(items.iter().filter_map(|item| cedar_value(item, depth + 1)).collect()))
        }
        Value::Object(map) => Some(Value::Object(
            map.iter().filter_map(|(key, item)| cedar_value(item, depth + 1).map(|item| (key.clone(), item))).collect(),
        )),
    }
}

/// `sha256:<hex>` of a value's RFC 8785 form (of its JSON text when it has
/// none, e.g. a number beyond I-JSON): how outputs and inputs are named in
/// the log without their contents.
pub fn digest(value: &Value) -> String {
    let bytes = mandate_log::json::canonicalize(value).unwrap_or_else(|_| value.to_string().into_bytes());
    format!("sha256:{}", mandate_log::Hash::digest(&bytes).to_hex())
}

/// `failure` when a tool's response says it failed or was interrupted
/// (`is_error`, `isError`, `interrupted`, or a non-null `error`), else
/// `success`.
pub fn outcome_of(response: &Value) -> &'static str {
    let flagged = |key: &str| response.get(key).and_then(Value::as_bool) == Some(true);
    let has_error = response.get("error").is_some_and(|error| !error.is_null() && error != &Value::Bool(false));
    if flagged("is_error") || flagged("isError") || flagged("interrupted") || has_error { "failure" } else { "success" }
}

/// A decision answer's reasons as one line for a client to show: `code:
/// message` each, joined by `; ` (the hooks and the MCP gateway tell the
/// agent why in this form).
pub fn reasons_text(answer: &Map<String, Value>) -> String {
    let list = answer.get("reasons").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let texts: Vec<String> = list
        .iter()
        .map(|reason| {
            let code = reason.get("code").and_then(Value::as_str).unwrap_or("denied");
            match reason.get("message").and_then(Value::as_str) {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            }
        })
        .collect();
    if texts.is_empty() { "no reason given".to_owned() } else { texts.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call<'a>(tool: &'a str, input: &'a Value, cwd: Option<&'a str>) -> ToolCall<'a> {
        ToolCall { client: "claude-code", tool, input, cwd, mcp: None }
    }

    #[test]
    fn payloads_name_mcp_tools_however_the_client_spells_them() {
        let claude = json!({"tool_name": "mcp__payments__transfer", "tool_input": {"to": "acme"}, "cwd": "/w"});
        let claude = claude.as_object().unwrap();
        let call = ToolCall::from_payload("claude-code", claude).unwrap();
        assert_eq!((call.action(), call.resource()), ("mcp.payments.transfer".to_owned(), "/w".to_owned()));
        // Gemini CLI: `mcp_<server>_<tool>`, split by its `mcp_context`.
        let gemini = json!({"tool_name": "mcp_my_files_read_file", "tool_input": {"path": "a"},
            "mcp_context": {"server_name": "my_files", "tool_name": "read_file", "command": "node"}});
        let call = ToolCall::from_payload("gemini", gemini.as_object().unwrap()).unwrap();
        assert_eq!(call.action(), "mcp.my_files.read_file");
        assert_eq!(call.resource(), "a");
        let none = json!({"tool_input": {}});
        assert!(ToolCall::from_payload("gemini", none.as_object().unwrap()).is_none());
        let bare = json!({"tool_name": "Bash"});
        let call = ToolCall::from_payload("codex", bare.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(call.context()), json!({"client": "codex", "tool": "Bash", "input": {}}));
    }

    #[test]
    fn actions_name_the_tool_or_the_mcp_server_and_tool() {
        assert_eq!(action_for("Bash"), "tool.Bash");
        assert_eq!(action_for("mcp__files__read"), "mcp.files.read");
        assert_eq!(action_for("mcp__files__read__deep"), "mcp.files.read__deep");
        assert_eq!(action_for("mcp____read"), "tool.mcp____read");
        assert_eq!(action_for("mcp__files"), "tool.mcp__files");
    }

    #[test]
    fn resources_are_the_file_the_url_or_the_working_directory() {
        let cwd = Some("/home/dev/project");
        assert_eq!(call("Read", &json!({"file_path": "src/../lib.rs"}), cwd).resource(), "/home/dev/project/lib.rs");
        assert_eq!(call("Read", &json!({"file_path": "/etc/./passwd"}), cwd).resource(), "/etc/passwd");
        // `..` cannot climb out of a prefix a grant names.
        assert_eq!(call("Read", &json!({"path": "../../../etc/shadow"}), cwd).resource(), "/etc/shadow");
        assert_eq!(call("WebFetch", &json!({"url": "https://example.com/a"}), cwd).resource(), "https://example.com/a");
        assert_eq!(call("Bash", &json!({"command": "ls"}), cwd).resource(), "/home/dev/project");
        assert_eq!(call("Bash", &json!({"command": "ls"}), None).resource(), RESOURCE_UNKNOWN);
    }

    #[test]
    fn the_context_holds_the_input_as_cedar_can_read_it() {
        let input = json!({"command": "ls", "n": 1.5, "big": 9_007_199_254_740_993_u64, "none": null});
        let context = call("Bash", &input, Some("/w")).context();
        assert_eq!(
            Value::Object(context),
            json!({"client": "claude-code", "tool": "Bash", "cwd": "/w",
                   "input": {"command": "ls", "n": "1.5", "big": "9007199254740993"}})
        );
        let mut deep = json!("bottom");
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let mut depth = 0;
        let mut at = cedar_value(&deep, 0).unwrap();
        while let Value::Array(mut items) = at {
            depth += 1;
            at = items.pop().unwrap();
        }
        assert_eq!(depth, CONTEXT_DEPTH_MAX);
        assert!(at.as_str().unwrap().starts_with("[["));
    }

    #[test]
    fn outcomes_and_digests() {
        assert_eq!(outcome_of(&json!({"stdout": "x", "interrupted": false})), "success");
        assert_eq!(outcome_of(&json!({"is_error": true})), "failure");
        assert_eq!(outcome_of(&json!({"error": "boom"})), "failure");
        assert_eq!(outcome_of(&json!({"error": null})), "success");
        assert_eq!(digest(&json!({"b": 1, "a": 2})), digest(&json!({"a": 2, "b": 1})));
        assert!(digest(&json!(1)).starts_with("sha256:"));
    }

    #[test]
    fn reasons_read_as_one_line() {
        let answer = json!({"reasons": [{"code": "grant_missing", "message": "no grant"}, {"code": "policy_forbid"}]});
        assert_eq!(reasons_text(answer.as_object().unwrap()), "grant_missing: no grant; policy_forbid");
        assert_eq!(reasons_text(&Map::new()), "no reason given");
    }
}
