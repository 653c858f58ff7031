//! Crash test: a process appending from many threads is killed with SIGKILL,
//! again and again. After every kill the store must open, hold every append
//! the process acknowledged (same index, same leaf hash), and verify.
//!
//! The one test plays two roles. Run normally, it is the parent: it starts
//! this same test binary as a child with `MANDATE_CRASH_CHILD_DB` set, reads
//! the child's acknowledgements from its stdout, and kills it at a random
//! moment. Run with that variable, it is the child: it appends until killed.
//! Search rows are written with their entries, so after every kill search
//! finds each entry exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_log::{Hash, LogVerifier};
use mandate_store::{EntryDraft, Ledger, SearchQuery, SqliteLedger, StoreError};
use serde_json::json;

const CHILD_ENV: &str = "MANDATE_CRASH_CHILD_DB";
const TENANT: &str = "crash";
const KILLS: u32 = 12;
const WRITERS: u64 = 8;
/// A child that is never killed stops by itself after this long.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        append_until_killed(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mandate.db");
    let mut acknowledged: BTreeMap<u64, Hash> = BTreeMap::new();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "acknowledged_appends_survive_sigkill", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .env("MANDATE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // A line cut by the kill is not an acknowledgement.
                    let mut parts = line.split(' ');
                    if let (Some("ack"), Some(index), Some(hash), None) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                        && let (Ok(index), Ok(hash)) = (index.parse::<u64>(), Hash::from_hex(hash))
                    {
                        acks.lock().unwrap().push((index, hash));
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
        check_store(&db, &acknowledged, round);
    }
}

/// Opens the store as a restarted server would and checks every promise.
fn check_store(db: &Path, acknowledged: &BTreeMap<u64, Hash>, round: u32) {
    let ledger = SqliteLedger::open(db).unwrap();
    let size = ledger.size(TENANT).unwrap();
    let (&last_acked, _) = acknowledged.last_key_value().unwrap();
    assert!(size > last_acked, "round {round}: log has {size} entries but index {last_acked} was acknowledged");
    let mut verifier = LogVerifier::new(&[]);
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::ENTRIES_PAGE_MAX).min(size);
        for entry in ledger.entries(TENANT, start, end).unwrap() {
            verifier.push(&entry.bytes).unwrap_or_else(|fault| panic!("round {round}: {fault}"));
            if let Some(hash) = acknowledged.get(&entry.index) {
                assert_eq!(*hash, entry.leaf_hash, "round {round}: acknowledged entry {} changed", entry.index);
            }
        }
        start = end;
    }
    verifier.finish(None, None).unwrap();
    // Every entry has its search row: by type, and by identity (one per writer).
    let count = |query: SearchQuery| {
        let mut query = SearchQuery { limit: mandate_store::SEARCH_PAGE_MAX, ..query };
        let mut found = 0;
        loop {
            let page = ledger.search(TENANT, &query).unwrap();
            found += page.entries.len() as u64;
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

/// The child: append from several threads and print each acknowledgement
/// only after `wait()` returned, which is after the commit.
fn append_until_killed(db: &Path) {
    let ledger = Arc::new(SqliteLedger::open(db).unwrap());
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
                    let appended = ledger.append(TENANT, drafts).wait().unwrap();
                    let mut out = stdout.lock().unwrap();
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
