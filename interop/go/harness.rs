//! Builds the Go interop program (`interop/go/mandate-interop`) once per test
//! process. Included with `#[path]` by every test that runs it, so that there
//! is one recipe: GOPATH mode against Debian's sources, offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const GOPATH: &str = "/usr/share/gocode";
const INSTALL: &str = "apt-get install golang-go golang-golang-x-mod-dev";

/// Builds the Go program once per test process. The binary and Go's build
/// cache live in Cargo's per-target temporary directory, so HOME is never
/// written and reruns are fast.
pub fn go_interop() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        match Command::new("go").arg("version").stdin(Stdio::null()).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                panic!("`go version` failed: {}\nInstall Go: `{INSTALL}`", String::from_utf8_lossy(&output.stderr))
            }
            Err(error) => panic!("cannot run `go` ({error}). This test needs Go and golang.org/x/mod: `{INSTALL}`"),
        }
        let sumdb = Path::new(GOPATH).join("src/golang.org/x/mod/sumdb");
        assert!(
            sumdb.join("tlog").is_dir() && sumdb.join("note").is_dir(),
            "{} is missing. This test needs golang.org/x/mod: `{INSTALL}`",
            sumdb.display()
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/go/mandate-interop");
        // One directory per crate: tests of two crates may build at once.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(concat!("go-interop-", env!("CARGO_PKG_NAME")));
        let binary = out.join("mandate-interop");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            // GOPATH mode against the Debian sources: no modules, no proxy,
            // no toolchain download, no user go.env, no C compiler.
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOENV", "off")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", out.join("cache"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "building {} failed:\n{}\n(needs `{INSTALL}`)",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}

/// Runs the program; without Go this fails the test rather than skipping it.
#[allow(dead_code)]
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(go_interop()).args(args).stdin(Stdio::null()).output().unwrap()
}
