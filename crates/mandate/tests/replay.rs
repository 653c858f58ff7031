//! Drives the real `mandate replay` over the store `mandate demo` leaves:
//! the rows written beside the log agree with the log folded again, and a
//! row changed or deleted behind the log's back is found and named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output};

fn mandate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mandate")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn replay(data: &Path) -> Output {
    mandate(&["replay", "--data", data.to_str().unwrap()])
}

/// The demo's store, in `dir/demo`.
fn demo_store(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("demo");
    let output = mandate(&["demo", "--data", data.to_str().unwrap(), "--entries", "20"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    data
}

fn database(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("mandate.db")).unwrap()
}

/// The stored value of a state row, as text.
fn row(data: &Path, kind: &str, key: &str) -> String {
    let value: Vec<u8> = database(data)
        .query_row("SELECT value FROM state WHERE kind = ?1 AND key = ?2", [kind, key], |row| row.get(0))
        .unwrap();
    String::from_utf8(value).unwrap()
}

/// Overwrites a state row's value, as bytes (the column holds BLOBs).
fn write_row(data: &Path, kind: &str, key: &str, value: &str) {
    let changed = database(data)
        .execute(
            "UPDATE state SET value = ?1 WHERE kind = ?2 AND key = ?3",
            rusqlite::params![value.as_bytes(), kind, key],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// Exit 1, one line on stderr, no panic.
fn assert_difference(output: &Output) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stdout: {}\nstderr: {err}", stdout(output));
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("difference"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_demo_store_replays_without_difference_and_tampered_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_store(dir.path());

    // As the demo left it: the log and the rows agree.
    let output = replay(&data);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("tenant `default`: folded "), "{out}");
    // The demo resolves every reservation it makes, and resolved ones leave the state.
    assert!(out.contains("2 budgets, 0 reservations, 1 approval; no difference"), "{out}");

    // A budget's counter changed behind the log's back.
    let original = row(&data, "budget", "buyer-daily");
    assert!(original.contains(r#""spent":6000"#), "{original}");
    write_row(&data, "budget", "buyer-daily", &original.replace(r#""spent":6000"#, r#""spent":5000"#));
    let output = replay(&data);
    assert_difference(&output);
    let out = stdout(&output);
    let named = out.lines().find(|line| line.contains("budget `buyer-daily`")).unwrap_or_else(|| panic!("{out}"));
    assert!(named.contains(r#""spent":6000"#) && named.contains(r#""spent":5000"#), "{named}");
    assert!(out.contains("1 difference"), "{out}");
    assert!(!out.contains("alice-daily"), "only the changed row is named: {out}");

    // Put back byte for byte, it agrees again.
    write_row(&data, "budget", "buyer-daily", &original);
    let output = replay(&data);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("no difference"));

    // Edited by hand as text (as the sqlite3 shell does): still read, and
    // named as a difference rather than failing the replay.
    let edited = original.replace(r#""spent":6000"#, r#""spent":1"#);
    database(&data)
        .execute("UPDATE state SET value = ?1 WHERE kind = 'budget' AND key = 'buyer-daily'", [&edited])
        .unwrap();
    let output = replay(&data);
    assert_difference(&output);
    assert!(stdout(&output).contains(r#""spent":1,"#), "{}", stdout(&output));
    write_row(&data, "budget", "buyer-daily", &original);

    // An approval's row deleted.
    let key: String = database(&data)
        .query_row("SELECT key FROM state WHERE kind = 'approval' ORDER BY key LIMIT 1", [], |row| row.get(0))
        .unwrap();
    let deleted = database(&data).execute("DELETE FROM state WHERE kind = 'approval' AND key = ?1", [&key]).unwrap();
    assert_eq!(deleted, 1);
    let output = replay(&data);
    assert_difference(&output);
    let out = stdout(&output);
    let named = out
        .lines()
        .find(|line| line.contains(&format!("approval `{key}`")))
        .unwrap_or_else(|| panic!("{key} is not named: {out}"));
    assert!(named.contains("the store holds nothing"), "{named}");
}

#[test]
fn a_directory_without_a_store_gets_one_readable_line() {
    let output = replay(Path::new("/nonexistent"));
    let err = stderr(&output);
    assert!(!output.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
}
