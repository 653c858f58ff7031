//! Crash test: a process appending from many threads is killed with SIGKILL,
//! again and again. After every kill the store must open, hold every append
//! the process acknowledged (same index, same leaf hash), and verify.
//!
//! The one test plays two roles. Run normally, it is the parent: it starts
//! this same test binary as a child with `MANDATE_CRASH_CHILD_DB` set, reads
//! the child's acknowledgements from its stdout, and kills it at a random
//! moment. Run with that variable, it is the child: it appends until killed.
//! Search rows are written with their entries, so after every kill search
//! finds each entry exactly once. State rows too: each append writes a row
//! of its own (named after the append, since its index is only known once
//! the writer assigns it) and overwrites its writer's "last" row, so after
//! every kill the rows are exactly those of the appends in the log: every
//! acknowledged append's row is there, and no row outlives its entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_log::{Entry, Hash, LogVerifier};
use mandate_store::{EntryDraft, Ledger, PostgresLedger, SearchQuery, SqliteLedger, StateRow, StoreError};
use serde_json::json;

mod pg_support;

const CHILD_ENV: &str = "MANDATE_CRASH_CHILD_DB";
const TENANT: &str = "crash";
const KILLS: u32 = 12;
const WRITERS: u64 = 8;
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

/// Opens the store a child or a check names: a PostgreSQL URL, or a SQLite
/// file.
fn open_ledger(db: &str) -> Arc<dyn Ledger> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Arc::new(PostgresLedger::connect(db).unwrap())
    } else {
        Arc::new(SqliteLedger::open(db).unwrap())
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        append_until_killed(&db);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mandate.db");
    kill_and_check("acknowledged_appends_survive_sigkill", db.to_str().unwrap());
}

/// The same against PostgreSQL (a fresh schema of the test database): a
/// killed process's open transaction is rolled back by the server, and
/// everything it acknowledged was committed.
#[test]
fn acknowledged_appends_survive_sigkill_on_postgres() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        append_until_killed(&db);
        return;
    }
    let schema = pg_support::TestSchema::new();
    kill_and_check("acknowledged_appends_survive_sigkill_on_postgres", &schema.url());
}

/// The parent: runs `test` (this binary) as a child appending to `db`,
/// kills it [`KILLS`] times and checks the store after each kill.
fn kill_and_check(test: &str, db: &str) {
    let mut acknowledged: BTreeMap<u64, Hash> = BTreeMap::new();
    // The first index of each acknowledged append, and the name of its row.
    let mut acknowledged_appends: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, db)
            .env("MANDATE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let append_acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let (acks, append_acks) = (acks.clone(), append_acks.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // A line cut by the kill is not an acknowledgement.
                    let mut parts = line.split(' ');
                    match (parts.next(), parts.next(), parts.next(), parts.next()) {
                        (Some("ack"), Some(index), Some(hash), None) => {
                            if let (Ok(index), Ok(hash)) = (index.parse::<u64>(), Hash::from_hex(hash)) {
                                acks.lock().unwrap().push((index, hash));
                            }
                        }
                        (Some("row"), Some(index), Some(name), None) if name.ends_with(';') => {
                            if let Ok(index) = index.parse::<u64>() {
                                append_acks.lock().unwrap().push((index, name.trim_end_matches(';').to_owned()));
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        // Let it get going, then kill it at a moment that varies by round.
        let started = Instant::now();
        while acks.lock().unwrap().len() < 50 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(17 * u64::from(round % 7) + 3));
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        reader.join().unwrap();
        let round_acks = acks.lock().unwrap().clone();
        assert!(!round_acks.is_empty(), "round {round}: the child acknowledged nothing");
        for (index, hash) in round_acks {
            assert_eq!(acknowledged.insert(index, hash).filter(|old| *old != hash), None, "index {index} acked twice");
        }
        for (index, name) in append_acks.lock().unwrap().drain(..) {
            assert_eq!(acknowledged_appends.insert(index, name), None, "append at {index} acked twice");
        }
        check_store(db, &acknowledged, &acknowledged_appends, round);
    }
}

/// Opens the store as a restarted server would and checks every promise.
fn check_store(db: &str, acknowledged: &BTreeMap<u64, Hash>, acknowledged_appends: &BTreeMap<u64, String>, round: u32) {
    let ledger = open_ledger(db);
    let size = ledger.size(TENANT).unwrap();
    let (&last_acked, _) = acknowledged.last_key_value().unwrap();
    assert!(size > last_acked, "round {round}: log has {size} entries but index {last_acked} was acknowledged");
    let mut verifier = LogVerifier::new(&[]);
    // From the log: the row each append should have left (name → entries,
    // and where it starts), and each writer's last append.
    let mut append_rows: BTreeMap<String, String> = BTreeMap::new();
    let mut appends_at: BTreeMap<u64, String> = BTreeMap::new();
    let mut last_rows: BTreeMap<String, String> = BTreeMap::new();
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::ENTRIES_PAGE_MAX).min(size);
        for entry in ledger.entries(TENANT, start, end).unwrap() {
            verifier.push(&entry.bytes).unwrap_or_else(|fault| panic!("round {round}: {fault}"));
            if let Some(hash) = acknowledged.get(&entry.index) {
                assert_eq!(*hash, entry.leaf_hash, "round {round}: acknowledged entry {} changed", entry.index);
            }
            let body = Entry::parse(&entry.bytes).unwrap().body;
            let number = |field: &str| body[field].as_u64().unwrap();
            let (name, k) = (append_name(number("round"), number("writer"), number("seq")), number("k"));
            if k == 0 {
                appends_at.insert(entry.index, name.clone());
                last_rows.insert(format!("writer{}", number("writer")), name.clone());
            }
            append_rows.insert(name, format!("{}", k + 1));
        }
        start = end;
    }
    verifier.finish(None, None).unwrap();
    // Rows ⇔ entries: the rows are exactly those of the appends in the log.
    let rows_of = |kind: &str| -> BTreeMap<String, String> {
        let rows = ledger.state_rows(TENANT, Some(kind)).unwrap();
        rows.into_iter().map(|row| (row.key, String::from_utf8(row.value.unwrap()).unwrap())).collect()
    };
    let stored = rows_of("append");
    // A killed client's last COMMIT may still be landing on a database
    // server (PostgreSQL finishes it without the client): if the log grew
    // while it was read, read it all again, so that entries and rows come
    // from one state.
    if ledger.size(TENANT).unwrap() != size {
        assert!(round < u32::MAX && settle_attempts(round) < 20, "round {round}: the log keeps growing");
        return check_store(db, acknowledged, acknowledged_appends, round);
    }
    if stored != append_rows {
        let (stored_keys, log_keys): (BTreeSet<_>, BTreeSet<_>) =
            (stored.keys().collect(), append_rows.keys().collect());
        panic!(
            "round {round}: rows without entries {:?}, appends without rows {:?}",
            stored_keys.difference(&log_keys).take(5).collect::<Vec<_>>(),
            log_keys.difference(&stored_keys).take(5).collect::<Vec<_>>()
        );
    }
    assert_eq!(rows_of("last"), last_rows, "round {round}: a writer's last row is not its last append");
    for (index, name) in acknowledged_appends {
        assert_eq!(appends_at.get(index), Some(name), "round {round}: the acknowledged append at {index} lost its row");
    }
    assert_eq!(ledger.state_rows(TENANT, None).unwrap().len(), stored.len() + last_rows.len());
    // Every entry has its search row: by type, and by identity (one per writer).
    // Only the first `size` count: a killed client's COMMIT can still land
    // on PostgreSQL after the check above.
    let count = |query: SearchQuery| {
        let mut query = SearchQuery { limit: mandate_store::SEARCH_PAGE_MAX, ..query };
        let mut found = 0;
        loop {
            let page = ledger.search(TENANT, &query).unwrap();
            found += page.entries.iter().filter(|entry| entry.index < size).count() as u64;
            match page.next {
                Some(next) => query.after = Some(next),
                None => return found,
            }
        }
    };
    assert_eq!(count(SearchQuery { entry_type: Some("test.crash".into()), ..SearchQuery::default() }), size);
    let by_writer: u64 = (0..WRITERS)
        .map(|writer| count(SearchQuery { identity: Some(format!("agent:writer{writer}")), ..SearchQuery::default() }))
        .sum();
    assert_eq!(by_writer, size, "round {round}: identity search misses entries");
}

/// The name of an append's own row.
fn append_name(round: u64, writer: u64, seq: u64) -> String {
    format!("r{round}.w{writer}.s{seq}")
}

/// The child: append from several threads and print each acknowledgement
/// only after `wait()` returned, which is after the commit.
fn append_until_killed(db: &str) {
    let ledger = open_ledger(db);
    let signer = mandate_log::SignerKey::from_seed("mandate.test/crash", [9; 32]).unwrap();
    match ledger.create_log(TENANT, &signer) {
        Ok(()) | Err(StoreError::TenantExists { .. }) => {}
        Err(error) => panic!("{error}"),
    }
    let round: u64 = std::env::var("MANDATE_CRASH_ROUND").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (ledger, stdout) = (ledger.clone(), stdout.clone());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while started.elapsed() < CHILD_LIFETIME_MAX {
                    let drafts = (0..1 + seq % 3)
                        .map(|k| {
                            let serde_json::Value::Object(body) =
                                json!({"round": round, "writer": writer, "seq": seq, "k": k, "pad": "x".repeat(200)})
                            else {
                                unreachable!()
                            };
                            EntryDraft::new("test.crash", "2026-11-22T12:00:00Z", &body)
                                .unwrap()
                                .with_terms(Some(&format!("agent:writer{writer}")), None)
                        })
                        .collect();
                    let name = append_name(round, writer, seq);
                    let count = (1 + seq % 3).to_string();
                    let rows = vec![
                        StateRow { kind: "append".into(), key: name.clone(), value: Some(count.into_bytes()) },
                        StateRow {
                            kind: "last".into(),
                            key: format!("writer{writer}"),
                            value: Some(name.clone().into_bytes()),
                        },
                    ];
                    let appended = ledger.append_with_state(TENANT, drafts, rows).wait().unwrap();
                    let mut out = stdout.lock().unwrap();
                    // The terminator tells a whole line from one cut by the kill.
                    writeln!(out, "row {} {name};", appended[0].index).unwrap();
                    for entry in appended {
                        writeln!(out, "ack {} {}", entry.index, entry.leaf_hash.to_hex()).unwrap();
                    }
                    out.flush().unwrap();
                    seq += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
}

/// How often [`check_store`] has started again for `round`.
fn settle_attempts(round: u32) -> u32 {
    use std::sync::Mutex;
    static ATTEMPTS: Mutex<BTreeMap<u32, u32>> = Mutex::new(BTreeMap::new());
    let mut attempts = ATTEMPTS.lock().unwrap();
    let count = attempts.entry(round).or_insert(0);
    *count += 1;
    *count
}
