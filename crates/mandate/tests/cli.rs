//! Drives the real `mandate` binary: tampering with an exported log of 1,200
//! entries in every way the foundation promises to catch, bad input of every
//! kind, receipts, and the demo.
//!
//! Each check gets a fresh directory holding a log exported from a real
//! SQLite ledger, its verifier key, a checkpoint at the full size and one at
//! 600 entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use mandate_log::{Entry, Hash, Receipt, SignerKey};
use mandate_store::{EntryDraft, Ledger, SqliteLedger};
use serde_json::json;

const SIZE: u64 = 1_200;
const PREVIOUS_SIZE: u64 = 600;
const ORIGIN: &str = "mandate.test/default";

struct Fixture {
    dir: tempfile::TempDir,
    lines: Vec<String>,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_log(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// `mandate verify --log FILE` with the fixture's key and checkpoints.
    fn verify(&self, log: &Path, checkpoint: bool, previous: bool) -> Output {
        let mut args = vec!["verify".into(), "--log".into(), log.to_str().unwrap().to_owned()];
        args.extend(["--key".into(), self.path("log.pub").to_str().unwrap().to_owned()]);
        if checkpoint {
            args.extend(["--checkpoint".into(), self.path("checkpoint").to_str().unwrap().to_owned()]);
        }
        if previous {
            args.extend(["--previous-checkpoint".into(), self.path("previous").to_str().unwrap().to_owned()]);
        }
        mandate(&args)
    }
}

fn mandate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mandate")).args(args).output().unwrap()
}

fn signer(seed: u8) -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed(ORIGIN, [seed; 32]).unwrap())
}

fn draft(n: u64) -> EntryDraft {
    let serde_json::Value::Object(body) = json!({
        "decision": "allow", "identity": "agent:buyer", "action": "payments.charge",
        "resource": format!("merchant://books/{n}"), "amounts": {"usd_cents": 4_000 + n},
    }) else {
        unreachable!()
    };
    EntryDraft::new("decision", "2026-11-22T12:00:00.5Z", &body).unwrap()
}

/// A real ledger's export, with checkpoints at 600 and 1,200 entries.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("mandate.db")).unwrap();
    let key = signer(1);
    ledger.create_log("default", &key).unwrap();
    ledger.append("default", (0..500).map(draft).collect()).wait().unwrap();
    ledger.append("default", (500..PREVIOUS_SIZE).map(draft).collect()).wait().unwrap();
    std::fs::write(dir.path().join("previous"), ledger.sign_checkpoint("default", key.clone()).unwrap().note).unwrap();
    for start in (PREVIOUS_SIZE..SIZE).step_by(300) {
        ledger.append("default", (start..start + 300).map(draft).collect()).wait().unwrap();
    }
    std::fs::write(dir.path().join("checkpoint"), ledger.sign_checkpoint("default", key.clone()).unwrap().note)
        .unwrap();
    std::fs::write(dir.path().join("log.pub"), format!("{}\n", key.verifier())).unwrap();
    let lines = ledger
        .entries("default", 0, SIZE)
        .unwrap()
        .into_iter()
        .map(|entry| String::from_utf8(entry.bytes).unwrap())
        .collect();
    Fixture { dir, lines }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit 1 with exactly one line naming `needle`, and never a panic.
fn assert_fails(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Re-chains `lines` from `from` on, as a forger who recomputes hashes would.
fn rechain(lines: &mut [String], from: usize) {
    let mut prev = if from == 0 { Hash::ZERO } else { mandate_log::leaf_hash(lines[from - 1].as_bytes()) };
    for line in &mut lines[from..] {
        let mut entry = Entry::parse(line.as_bytes()).unwrap();
        entry.prev = prev;
        let canonical = entry.to_canonical().unwrap();
        prev = canonical.leaf_hash;
        *line = String::from_utf8(canonical.bytes).unwrap();
    }
}

#[test]
fn an_intact_export_verifies_against_both_checkpoints() {
    let fixture = fixture();
    let log = fixture.write_log("log.jsonl", &fixture.lines);
    let output = fixture.verify(&log, true, true);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("ok: 1200 entries of tenant `default`"), "{stdout}");
    assert!(stdout.contains("extends the previous checkpoint of size 600"), "{stdout}");
}

#[test]
fn one_changed_byte_in_any_field_names_the_entry() {
    let fixture = fixture();
    let original = &fixture.lines[700];
    // One byte inside each field's value; every result stays valid JSON.
    let edits: [(&str, &str, &str); 8] = [
        ("body", "merchant://books/700", "merchant://books/701"),
        ("amount", "\"usd_cents\":4700", "\"usd_cents\":4701"),
        ("index", "\"index\":700", "\"index\":701"),
        ("tenant", "\"tenant\":\"default\"", "\"tenant\":\"defaulu\""),
        ("time", "12:00:00.5Z", "12:00:01.5Z"),
        ("type", "\"type\":\"decision\"", "\"type\":\"decisioo\""),
        ("version", "\"v\":1", "\"v\":2"),
        ("key order", "{\"action\"", "{\"zction\""),
    ];
    for (field, from, to) in edits {
        let mut lines = fixture.lines.clone();
        assert!(original.contains(from), "{field}: `{from}` not in {original}");
        lines[700] = original.replacen(from, to, 1);
        let log = fixture.write_log(&format!("{field}.jsonl"), &lines);
        assert_fails(&fixture.verify(&log, true, true), "index 700:");
    }
    // `prev`: flip one hex digit.
    let mut lines = fixture.lines.clone();
    let at = original.find("\"prev\":\"").unwrap() + 8;
    let digit = if &original[at..=at] == "0" { "1" } else { "0" };
    lines[700].replace_range(at..=at, digit);
    let log = fixture.write_log("prev.jsonl", &lines);
    assert_fails(&fixture.verify(&log, true, true), "index 700: `prev` does not match");
}

#[test]
fn a_change_with_every_later_hash_recomputed_fails_the_checkpoint() {
    let fixture = fixture();
    let mut lines = fixture.lines.clone();
    lines[900] = lines[900].replace("\"usd_cents\":4900", "\"usd_cents\":1");
    rechain(&mut lines, 900);
    let log = fixture.write_log("rechained.jsonl", &lines);
    // The chain alone cannot tell; the signed root can.
    assert!(fixture.verify(&log, false, false).status.success());
    assert_fails(&fixture.verify(&log, true, true), "checkpoint of size 1200");
    // A change before the earlier checkpoint is caught by it as well.
    let mut lines = fixture.lines.clone();
    lines[100] = lines[100].replace("\"usd_cents\":4100", "\"usd_cents\":1");
    rechain(&mut lines, 100);
    let log = fixture.write_log("rechained-early.jsonl", &lines);
    assert_fails(&fixture.verify(&log, false, true), "previous checkpoint of size 600");
}

#[test]
fn deleted_inserted_swapped_and_duplicated_entries_are_located() {
    let fixture = fixture();
    let truncated = fixture.write_log("truncated.jsonl", &fixture.lines[..1_150]);
    assert_fails(&fixture.verify(&truncated, true, false), "index 1150: entry is missing");

    let mut deleted = fixture.lines.clone();
    deleted.remove(300);
    assert_fails(&fixture.verify(&fixture.write_log("deleted.jsonl", &deleted), true, false), "index 300:");

    // A forged entry slipped in with a plausible index and `prev`.
    let mut inserted = fixture.lines.clone();
    let mut forged = Entry::parse(fixture.lines[300].as_bytes()).unwrap();
    forged.body.insert("resource".into(), json!("merchant://attacker"));
    inserted.insert(300, String::from_utf8(forged.to_canonical().unwrap().bytes).unwrap());
    assert_fails(&fixture.verify(&fixture.write_log("inserted.jsonl", &inserted), true, false), "index 300:");

    let mut swapped = fixture.lines.clone();
    swapped.swap(300, 301);
    assert_fails(&fixture.verify(&fixture.write_log("swapped.jsonl", &swapped), true, false), "index 300:");

    let mut duplicated = fixture.lines.clone();
    duplicated.insert(301, fixture.lines[300].clone());
    assert_fails(&fixture.verify(&fixture.write_log("duplicated.jsonl", &duplicated), true, false), "index 300:");

    let torn = fixture.path("torn.jsonl");
    let whole = fixture.lines.join("\n");
    std::fs::write(&torn, &whole[..whole.len() - 15]).unwrap();
    assert_fails(&fixture.verify(&torn, false, false), "index 1199: torn last line");
}

#[test]
fn foreign_and_inconsistent_checkpoints_are_refused() {
    let fixture = fixture();
    let log = fixture.write_log("log.jsonl", &fixture.lines);

    // The same checkpoint text signed by another key.
    let stranger = signer(2);
    let text = std::fs::read_to_string(fixture.path("checkpoint")).unwrap();
    let body = &text[..text.find("\n\n").unwrap() + 1];
    std::fs::write(fixture.path("checkpoint"), mandate_log::note::sign(body, &[&stranger]).unwrap()).unwrap();
    assert_fails(&fixture.verify(&log, true, false), "no signature from a known key");

    // A checkpoint from a forked history, signed by the right key: the log
    // cannot extend it.
    let fork_dir = tempfile::tempdir().unwrap();
    let fork = SqliteLedger::open(fork_dir.path().join("fork.db")).unwrap();
    fork.create_log("default", &signer(1)).unwrap();
    fork.append("default", (0..400).map(draft).collect()).wait().unwrap();
    fork.append("default", (10_000..10_300).map(draft).collect()).wait().unwrap();
    std::fs::write(fixture.path("previous"), fork.sign_checkpoint("default", signer(1)).unwrap().note).unwrap();
    std::fs::write(fixture.path("checkpoint"), std::fs::read(fixture.path("previous")).unwrap()).unwrap();
    assert_fails(&fixture.verify(&log, false, true), "not consistent");

    // The checkpoints swapped: the "earlier" one is larger, so the log was rolled back.
    let fixture = self::fixture();
    let log = fixture.write_log("log.jsonl", &fixture.lines);
    let (current, earlier) = (fixture.path("checkpoint"), fixture.path("previous"));
    let (current_note, earlier_note) = (std::fs::read(&current).unwrap(), std::fs::read(&earlier).unwrap());
    std::fs::write(&current, earlier_note).unwrap();
    std::fs::write(&earlier, current_note).unwrap();
    assert_fails(&fixture.verify(&log, true, true), "rolled back");
}

#[test]
fn bad_input_gets_one_line_and_exit_1() {
    let fixture = fixture();
    let junk = fixture.path("junk");
    std::fs::write(&junk, (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    assert_fails(&fixture.verify(&junk, false, false), "index 0:");

    let huge = fixture.path("huge");
    std::fs::write(&huge, "x".repeat(300_000)).unwrap();
    assert_fails(&fixture.verify(&huge, false, false), "index 0: entry is");

    let mut spaced = fixture.lines.clone();
    spaced[5] = spaced[5].replacen(':', ": ", 1);
    assert_fails(
        &fixture.verify(&fixture.write_log("spaced.jsonl", &spaced), false, false),
        "index 5: entry is not in RFC 8785 canonical form",
    );

    let mut duplicate_key = fixture.lines.clone();
    duplicate_key[6] = duplicate_key[6].replacen("{\"body\":{", "{\"body\":{\"action\":\"x\",", 1);
    assert_fails(
        &fixture.verify(&fixture.write_log("dup.jsonl", &duplicate_key), false, false),
        "index 6: duplicate key",
    );

    let log = fixture.write_log("log.jsonl", &fixture.lines);
    let note = std::fs::read_to_string(fixture.path("checkpoint")).unwrap();
    std::fs::write(fixture.path("checkpoint"), &note[..note.len() - 30]).unwrap();
    assert_fails(&fixture.verify(&log, true, false), "checkpoint:");

    for key in ["", "nonsense", "a+b+c", "mandate.test/default+00000000+AAAA"] {
        assert_fails(&mandate(&["verify", "--log", log.to_str().unwrap(), "--key", key]), "key:");
    }
    std::fs::write(fixture.path("empty"), "").unwrap();
    let empty = mandate(&[
        "verify",
        "--log",
        fixture.path("empty").to_str().unwrap(),
        "--key",
        fixture.path("log.pub").to_str().unwrap(),
    ]);
    assert!(empty.status.success(), "an empty log is a valid empty log");
    assert_fails(
        &mandate(&["verify", "--log", "/no/such/file", "--key", fixture.path("log.pub").to_str().unwrap()]),
        "/no/such/file",
    );
    let usage = mandate(&["verify", "--key", "x"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn receipts_verify_alone_and_catch_a_changed_entry() {
    let fixture = fixture();
    let ledger = SqliteLedger::open(fixture.path("mandate.db")).unwrap();
    let note = std::fs::read_to_string(fixture.path("checkpoint")).unwrap();
    let receipt = Receipt {
        extra: None,
        index: 777,
        proof: ledger.inclusion_proof("default", 777, SIZE).unwrap(),
        checkpoint_note: note,
    };
    std::fs::write(fixture.path("receipt"), receipt.to_text()).unwrap();
    std::fs::write(fixture.path("entry"), format!("{}\n", fixture.lines[777])).unwrap();
    let key = fixture.path("log.pub");
    let args = |entry: &str| {
        [
            "verify",
            "--receipt",
            fixture.path("receipt").to_str().unwrap(),
            "--entry",
            entry,
            "--key",
            key.to_str().unwrap(),
        ]
        .map(str::to_owned)
    };
    let output = mandate(&args(fixture.path("entry").to_str().unwrap()));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("entry 777 is in the log"));

    std::fs::write(fixture.path("other"), &fixture.lines[778]).unwrap();
    assert_fails(&mandate(&args(fixture.path("other").to_str().unwrap())), "index 777: the entry is index 778");
    std::fs::write(fixture.path("changed"), fixture.lines[777].replace("4777", "4778")).unwrap();
    assert_fails(&mandate(&args(fixture.path("changed").to_str().unwrap())), "does not lead to the root");
    std::fs::write(fixture.path("receipt"), "c2sp.org/tlog-proof@v1\nindex x\n\n").unwrap();
    assert_fails(&mandate(&args(fixture.path("entry").to_str().unwrap())), "receipt is malformed");
}

#[test]
fn the_demo_tells_its_story_and_leaves_verifiable_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let output = mandate(&["demo", "--data", data.to_str().unwrap(), "--entries", "40"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(!stdout.contains('\x1b'), "no colour when stdout is not a terminal");
    assert!(stdout.lines().count() <= 70, "one screen:\n{stdout}");
    for needle in [
        "grant_exceeds_grantor, field `limits`",
        "allow  by policy `default-permit`",
        "limit_exceeded: ",
        "no_grant: ",
        "policy_forbid: forbidden by policy `block-gambling`",
        "identity_unknown: ",
        "reserved in every budget on the chain, all or nothing: buyer-daily 0 → 1899 of 6000, alice-daily 0 → 1899 of 10000",
        "settles (log index ",
        "399 released",
        "buyer-daily  reserved 1899, spent 0, remaining 4101  →  reserved 0, spent 1500, remaining 4500",
        "pending  by policy `big-charges-need-alice`",
        "user:alice approved it",
        "budget_exceeded: budget `buyer-daily` of `agent:buyer` (usd_cents per day, limit 6000) has 0 left",
        "identity_revoked: identity `agent:buyer/search` has no authority: its ancestor `user:alice` is revoked",
        "40 allowed",
        "verified ",
        "verification failed: index ",
    ] {
        assert!(stdout.contains(needle), "`{needle}` is missing from:\n{stdout}");
    }

    // The approval it names is the one alice's answer in the log approves,
    // and both charges were settled there.
    let approval = stdout.split("waits for a human").next().unwrap().rsplit("approval ").next().unwrap().trim();
    assert_eq!(approval.len(), 36, "an approval id: {stdout}");
    let log = std::fs::read_to_string(data.join("log.jsonl")).unwrap();
    let answered = format!(r#"{{"body":{{"by":"user:alice","id":"{approval}"}}"#);
    assert!(log.lines().any(|line| line.starts_with(&answered) && line.contains(r#""type":"approval.approved""#)));
    for settled in [r#""usd_cents":1500"#, r#""usd_cents":4500"#] {
        assert!(log.lines().any(|line| line.contains(settled) && line.contains(r#""type":"reservation.settled""#)));
    }

    // Every file it says it wrote exists, in the data directory.
    let files = stdout.lines().find_map(|line| line.strip_prefix("Files in ")).unwrap();
    let (listed_dir, names) = files.split_once(": ").unwrap();
    assert_eq!(Path::new(listed_dir), data);
    for name in names.split_whitespace() {
        assert!(data.join(name).is_file(), "{name} is missing");
    }
    // The commands it gives verify, run as printed in the data directory.
    let commands: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("mandate verify "))
        .map(|args| std::iter::once("verify").chain(args.split_whitespace()).collect())
        .collect();
    assert_eq!(commands.len(), 2, "{stdout}");
    for args in commands {
        let verified = Command::new(env!("CARGO_BIN_EXE_mandate")).args(&args).current_dir(&data).output().unwrap();
        assert!(verified.status.success(), "{args:?}: {}", stderr(&verified));
    }
    let public = data.join("log.pub");
    let caught = mandate(&[
        "verify",
        "--log",
        data.join("tampered.jsonl").to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--checkpoint",
        data.join("checkpoint").to_str().unwrap(),
    ]);
    assert_fails(&caught, "entry was altered");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(data.join("admin.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // A second run refuses to mix with the first.
    assert_fails(&mandate(&["demo", "--data", data.to_str().unwrap()]), "already holds a demo store");

    // Without --data it makes a directory of its own.
    let output = mandate(&["demo", "--entries", "10"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    let files = stdout.lines().find_map(|line| line.strip_prefix("Files in ")).unwrap();
    let own = PathBuf::from(files.split_once(": ").unwrap().0);
    assert!(own.join("log.jsonl").is_file(), "{stdout}");
    assert!(own.starts_with(std::env::temp_dir()), "{}", own.display());
    std::fs::remove_dir_all(own).unwrap();
}

#[test]
fn a_log_larger_than_one_read_block_verifies_and_faults_are_still_located() {
    // ~12 MB: several of `verify`'s 4 MiB blocks, with lines straddling them.
    let dir = tempfile::tempdir().unwrap();
    let key = signer(1);
    let mut tree = mandate_log::MemoryTree::new();
    let mut prev = Hash::ZERO;
    let mut lines = Vec::new();
    let serde_json::Value::Object(body) = json!({"pad": "p".repeat(300)}) else { unreachable!() };
    for index in 0..30_000u64 {
        let entry = Entry {
            tenant: "default".into(),
            index,
            time: "2026-11-22T12:00:00Z".into(),
            entry_type: "test".into(),
            prev,
            body: body.clone(),
        };
        let canonical = entry.to_canonical().unwrap();
        tree.push(canonical.leaf_hash);
        prev = canonical.leaf_hash;
        lines.push(String::from_utf8(canonical.bytes).unwrap());
    }
    let checkpoint = mandate_log::Checkpoint { origin: ORIGIN.into(), size: 30_000, root: tree.root() };
    std::fs::write(dir.path().join("checkpoint"), checkpoint.sign(&key).unwrap().note).unwrap();
    std::fs::write(dir.path().join("log.pub"), key.verifier().to_string()).unwrap();
    let fixture = Fixture { dir, lines };
    let log = fixture.write_log("big.jsonl", &fixture.lines);
    let output = fixture.verify(&log, true, false);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut altered = fixture.lines.clone();
    altered[29_000] = altered[29_000].replacen("ppp", "ppq", 1);
    assert_fails(
        &fixture.verify(&fixture.write_log("altered.jsonl", &altered), true, false),
        "index 29000: entry was altered",
    );
}

/// `mandate bench` on its own temporary store: it sets up the tenant, makes
/// decisions (all allowed: the budgets are large), and writes its results.
#[test]
fn bench_loads_an_embedded_server_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("results.json");
    let chart_path = dir.path().join("latency.svg");
    let output = mandate(&[
        "bench",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--settle",
        "--json",
        json_path.to_str().unwrap(),
        "--chart",
        chart_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("decisions in 1 s") && stdout.contains("p99"), "{stdout}");
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let decisions = results["decisions"].as_u64().unwrap();
    assert!(decisions > 0, "{results}");
    assert_eq!(results["allowed"].as_u64().unwrap(), decisions, "{results}");
    assert_eq!(results["failed"], 0, "{results}");
    assert!(results["settled"].as_u64().unwrap() > 0, "{results}");
    assert!(results["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{results}");
    let seconds = results["per_second"].as_array().unwrap();
    assert_eq!(seconds.len(), 1, "{results}");
    assert_eq!(seconds[0]["decisions"].as_u64().unwrap(), decisions, "{results}");
    let distribution = results["distribution"].as_array().unwrap();
    let latencies: Vec<f64> = distribution.iter().map(|p| p["latency_ms"].as_f64().unwrap()).collect();
    assert!(latencies.windows(2).all(|pair| pair[0] <= pair[1]), "percentiles rise: {latencies:?}");
    let chart = std::fs::read_to_string(&chart_path).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("authorize latency over time"), "{chart}");
    assert!(chart.contains("authorize latency by percentile") && chart.contains("<polyline"), "{chart}");

    // The floor: the same connections, and nothing decided.
    let floor = mandate(&[
        "bench",
        "--floor",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(floor.status.success(), "{}", String::from_utf8_lossy(&floor.stderr));
    let stdout = String::from_utf8_lossy(&floor.stdout);
    assert!(
        stdout.contains("requests (GET /healthz) in 1 s") && stdout.contains("GET /healthz latency: p50"),
        "{stdout}"
    );
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(results["workload"], "GET /healthz", "{results}");
    assert!(results["decisions"].as_u64().unwrap() > 0 && results["failed"] == 0, "{results}");
    let both = mandate(&["bench", "--floor", "--settle"]);
    assert_eq!(both.status.code(), Some(2), "clap refuses --floor with --settle");

    let no_key = mandate(&["bench", "--url", "http://127.0.0.1:1"]);
    assert_eq!(no_key.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_key.stderr);
    assert!(stderr.contains("--key") && stderr.trim().lines().count() == 1, "{stderr}");
}
