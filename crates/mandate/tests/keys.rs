//! Drives the real `mandate` binary through `key generate` and `grant sign`:
//! a key made on disk signs a grant that verifies under the printed public
//! key, and every bad input is one readable line and exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::VerifyingKey;
use mandate_core::wire::grant_from_json;
use serde_json::{Value, json};

fn mandate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mandate")).args(args).output().unwrap()
}

/// `mandate` with `input` on stdin.
fn mandate_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The one line a failed command prints, checked to be one line and exit 1.
fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "stdout: {}", text(&output.stdout));
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("mandate: "), "{stderr}");
    stderr
}

fn grant_json() -> Value {
    json!({
        "grantee": "agent:buyer",
        "grantor": "user:alice",
        "actions": ["payments.charge"],
        "resources": ["merchant://books/*"],
        "limits": {"usd_cents": 5000},
        "expires_at": "2026-12-31T00:00:00Z",
    })
}

/// `mandate key generate` into `dir/name`: the key file and the public key.
fn generate(dir: &Path, name: &str) -> (PathBuf, VerifyingKey) {
    let path = dir.join(name);
    let output = mandate(&["key", "generate", "--out", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let bytes: [u8; 32] = BASE64.decode(stdout.trim_end()).unwrap().try_into().unwrap();
    (path, VerifyingKey::from_bytes(&bytes).unwrap())
}

#[test]
fn generated_key_signs_grants_that_verify_under_the_printed_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public_key) = generate(dir.path(), "alice.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let line = std::fs::read_to_string(&key).unwrap();
    assert!(line.starts_with("mandate-ed25519-private:") && line.ends_with('\n'), "{line}");
    assert_eq!(line.lines().count(), 1);

    let grant_file = dir.path().join("grant.json");
    std::fs::write(&grant_file, grant_json().to_string()).unwrap();
    let output = mandate(&["grant", "sign", "--key", key.to_str().unwrap(), grant_file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let Value::Object(signed) = serde_json::from_slice(&output.stdout).unwrap() else { panic!("not an object") };

    // The input's fields, and the signature; nothing the server sets.
    let mut expected = grant_json().as_object().unwrap().clone();
    expected.insert("signature".into(), signed["signature"].clone());
    assert_eq!(signed, expected);
    let grant = grant_from_json(&signed, "g-1".into()).unwrap();
    assert!(grant.verify_signature(&public_key));

    // Another key's signature does not verify under alice's.
    let (other, _) = generate(dir.path(), "bob.key");
    let output = mandate(&["grant", "sign", "--key", other.to_str().unwrap(), grant_file.to_str().unwrap()]);
    let resigned = serde_json::from_slice::<Value>(&output.stdout).unwrap();
    assert!(!grant_from_json(resigned.as_object().unwrap(), "g".into()).unwrap().verify_signature(&public_key));

    // Two keys are two keys.
    assert_ne!(std::fs::read(&key).unwrap(), std::fs::read(&other).unwrap());
}

#[test]
fn signing_reads_stdin_and_replaces_an_old_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public_key) = generate(dir.path(), "alice.key");
    let mut input = grant_json();
    input["signature"] = json!(BASE64.encode([7u8; 64]));
    for args in [
        vec!["grant", "sign", "--key", key.to_str().unwrap()],
        vec!["grant", "sign", "--key", key.to_str().unwrap(), "-"],
    ] {
        let output = mandate_stdin(&args, input.to_string().as_bytes());
        assert!(output.status.success(), "{}", text(&output.stderr));
        let signed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_ne!(signed["signature"], input["signature"]);
        assert!(grant_from_json(signed.as_object().unwrap(), "g".into()).unwrap().verify_signature(&public_key));
    }
}

#[test]
fn generate_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.key");
    std::fs::write(&path, "keep me\n").unwrap();
    let stderr = failure(&mandate(&["key", "generate", "--out", path.to_str().unwrap()]));
    assert!(stderr.contains("already exists; refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me\n");

    let missing = dir.path().join("no/such/dir/a.key");
    let stderr = failure(&mandate(&["key", "generate", "--out", missing.to_str().unwrap()]));
    assert!(stderr.contains("creating"), "{stderr}");
}

#[test]
fn bad_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = generate(dir.path(), "good.key");
    let line = std::fs::read_to_string(&good).unwrap();
    let seed = line.trim_end().strip_prefix("mandate-ed25519-private:").unwrap().to_owned();
    let grant_file = dir.path().join("grant.json");
    std::fs::write(&grant_file, grant_json().to_string()).unwrap();

    let bad_contents = [
        String::new(),
        "\n".to_owned(),
        seed.clone(),
        format!("mandate-ed25519-public:{seed}\n"),
        format!("mandate-ed25519-private:{}\n", seed.trim_end_matches('=')),
        format!("mandate-ed25519-private:{seed}\r\n"),
        format!("mandate-ed25519-private:{seed}\n\n"),
        format!("mandate-ed25519-private: {seed}\n"),
        format!("mandate-ed25519-private:{}\n", BASE64.encode([1u8; 31])),
        format!("mandate-ed25519-private:{}\n", BASE64.encode([1u8; 64])),
        "x".repeat(10_000),
    ];
    for (n, contents) in bad_contents.iter().enumerate() {
        let path = dir.path().join(format!("bad-{n}.key"));
        std::fs::write(&path, contents).unwrap();
        let stderr =
            failure(&mandate(&["grant", "sign", "--key", path.to_str().unwrap(), grant_file.to_str().unwrap()]));
        assert!(
            stderr.contains(&format!("bad-{n}.key"))
                && (stderr.contains("not a mandate private key") || stderr.contains("larger than")),
            "{contents:?}: {stderr}"
        );
    }
    std::fs::write(dir.path().join("binary.key"), [0xff, 0xfe, 0x00]).unwrap();
    let stderr = failure(&mandate(&[
        "grant",
        "sign",
        "--key",
        dir.path().join("binary.key").to_str().unwrap(),
        grant_file.to_str().unwrap(),
    ]));
    assert!(stderr.contains("not a mandate private key"), "{stderr}");

    let stderr = failure(&mandate(&[
        "grant",
        "sign",
        "--key",
        dir.path().join("missing.key").to_str().unwrap(),
        grant_file.to_str().unwrap(),
    ]));
    assert!(stderr.contains("missing.key"), "{stderr}");
}

#[test]
fn bad_grants_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate(dir.path(), "alice.key");
    let key = key.to_str().unwrap().to_owned();
    let cases: [(&str, &str); 9] = [
        (
            r#"{"grantee":"agent:b","grantor":"user:a","actions":["git*"],"resources":["*"]}"#,
            "grant.json: field actions[0]: action pattern `git*` must end in `.*`",
        ),
        (r#"{"grantee":"agent:b","grantor":"user:a","actions":["*"]}"#, "grant.json: field resources: is required"),
        (
            r#"{"grantee":"agent:b","grantor":"user:a","actions":["*"],"resources":["*"],"id":"g1"}"#,
            "grant.json: field id: is set by the server",
        ),
        (
            r#"{"grantee":"agent:b","grantor":"user:a","actions":["*"],"resources":["*"],"limits":{"usd_cents":-1}}"#,
            "grant.json: field limits.usd_cents:",
        ),
        (
            r#"{"grantee":"agent:b","grantee":"agent:c","grantor":"user:a","actions":["*"],"resources":["*"]}"#,
            "grant.json: duplicate key `grantee`",
        ),
        (
            r#"{"grantee":"agent:b","grantor":"user:a","actions":["*"],"resources":["*"],"limits":{"n":9007199254740992}}"#,
            "grant.json: number `9007199254740992` is beyond",
        ),
        (r#"{"grantee":"agent:b""#, "grant.json: invalid JSON"),
        (r#"["not", "an", "object"]"#, "grant.json: a grant must be a JSON object"),
        ("", "grant.json: invalid JSON"),
    ];
    for (input, expected) in cases {
        let path = dir.path().join("grant.json");
        std::fs::write(&path, input).unwrap();
        let stderr = failure(&mandate(&["grant", "sign", "--key", &key, path.to_str().unwrap()]));
        assert!(stderr.contains(expected), "{input}: {stderr}");
    }
    let stderr = failure(&mandate_stdin(&["grant", "sign", "--key", &key], br#"{"a":1,"a":2}"#));
    assert!(stderr.contains("stdin: duplicate key `a`"), "{stderr}");
    let stderr = failure(&mandate(&["grant", "sign", "--key", &key, dir.path().join("nope.json").to_str().unwrap()]));
    assert!(stderr.contains("reading") && stderr.contains("nope.json"), "{stderr}");
}

#[test]
fn help_describes_each_command() {
    for (args, expected) in [
        (&["key", "--help"][..], "generate"),
        (&["key", "generate", "--help"][..], "--out <FILE>"),
        (&["grant", "--help"][..], "sign"),
        (&["grant", "sign", "--help"][..], "--key <FILE>"),
    ] {
        let output = mandate(args);
        assert!(output.status.success(), "{args:?}");
        assert!(text(&output.stdout).contains(expected), "{args:?}: {}", text(&output.stdout));
    }
    // A missing argument is a usage error: exit 2.
    assert_eq!(mandate(&["key", "generate"]).status.code(), Some(2));
    assert_eq!(mandate(&["grant", "sign"]).status.code(), Some(2));
}
