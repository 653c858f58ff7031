//! The Python SDK's own tests (`sdk/python`, pytest), run by the workspace's
//! test command against this very build of `mandate serve`: the client, the
//! `@guard` decorator, the LangChain and OpenAI Agents integrations (real
//! agent loops) and receipt verification. The first run makes the SDK's
//! virtualenv and installs its pinned test dependencies from PyPI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_sdk_passes_its_tests_against_this_server() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python/run-tests.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("MANDATE_BIN", env!("CARGO_BIN_EXE_mandate"))
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "the Python SDK's tests failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(" passed"), "pytest ran no test: {summary}");
}
