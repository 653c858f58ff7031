//! Behaviour of the SQLite backend beyond the conformance suite: what survives
//! a reopen, what it refuses to sign when its files were edited, two ledgers
//! on one file, and migration from schema versions 1, 2, 3 and 4.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use mandate_log::{Entry, LogVerifier, SignerKey};
use mandate_store::{EntryDraft, Ledger, SearchQuery, SqliteLedger, StateRow, StoreError};
use serde_json::json;

fn draft(n: u64) -> EntryDraft {
    let serde_json::Value::Object(body) = json!({"n": n}) else { unreachable!() };
    EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap()
}

fn signer() -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed("mandate.test/t", [3; 32]).unwrap())
}

fn row(kind: &str, key: &str, value: &str) -> StateRow {
    StateRow { kind: kind.into(), key: key.into(), value: Some(value.as_bytes().to_vec()) }
}

/// The version in the file's header.
fn schema_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path).unwrap().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
}

#[test]
fn state_rows_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        let rows = vec![row("budget", "b1", "10"), row("budget", "b2", "20"), row("reservation", "r1", "open")];
        ledger.append_with_state("t", vec![draft(0)], rows).wait().unwrap();
        let change = vec![row("budget", "b1", "9"), StateRow { kind: "budget".into(), key: "b2".into(), value: None }];
        ledger.append_with_state("t", vec![draft(1)], change).wait().unwrap();
    }
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![row("budget", "b1", "9"), row("reservation", "r1", "open")]);
    ledger.append_with_state("t", vec![draft(2)], vec![row("budget", "b1", "8")]).wait().unwrap();
    assert_eq!(ledger.state_rows("t", Some("budget")).unwrap(), vec![row("budget", "b1", "8")]);
}

#[test]
fn the_log_and_its_checkpoint_survive_a_reopen_and_keep_chaining() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (last_leaf, checkpoint) = {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        let appended = ledger.append("t", (0..7).map(draft).collect()).wait().unwrap();
        (appended[6].leaf_hash, ledger.sign_checkpoint("t", signer()).unwrap())
    };
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(ledger.size("t").unwrap(), 7);
    assert_eq!(ledger.latest_checkpoint("t").unwrap(), Some(checkpoint.clone()));
    let appended = ledger.append("t", vec![draft(7)]).wait().unwrap();
    assert_eq!(appended[0].index, 7);
    let stored = ledger.entries("t", 7, 8).unwrap();
    assert_eq!(Entry::parse(&stored[0].bytes).unwrap().prev, last_leaf);
    let next = ledger.sign_checkpoint("t", signer()).unwrap();
    assert_eq!(next.checkpoint.size, 8);
    let mut verifier = LogVerifier::new(&[7, 8]);
    for entry in ledger.entries("t", 0, 8).unwrap() {
        verifier.push(&entry.bytes).unwrap();
    }
    verifier.finish(Some(&next.checkpoint), Some(&checkpoint.checkpoint)).unwrap();
}

/// A closed ledger with `signed` entries under a checkpoint and `more` after it.
fn closed_ledger(signed: u64, more: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let ledger = SqliteLedger::open(&path).unwrap();
    ledger.create_log("t", &signer()).unwrap();
    ledger.append("t", (0..signed).map(draft).collect()).wait().unwrap();
    ledger.sign_checkpoint("t", signer()).unwrap();
    if more > 0 {
        ledger.append("t", (signed..signed + more).map(draft).collect()).wait().unwrap();
    }
    (dir, path)
}

#[test]
fn an_edited_tree_is_never_signed() {
    let (_dir, path) = closed_ledger(6, 6);
    // An operator rewrites the tree node over entries 0..8 (level 3, completed
    // by leaf 7), which the new root uses and the checkpoint of size 6 constrains.
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(raw.execute("UPDATE nodes SET hash = zeroblob(32) WHERE at = (7 << 6) | 3", []).unwrap(), 1);
    drop(raw);
    let ledger = SqliteLedger::open(&path).unwrap();
    let refused = ledger.sign_checkpoint("t", signer());
    assert!(matches!(refused, Err(StoreError::Corrupt { .. })), "{refused:?}");
    assert_eq!(ledger.latest_checkpoint("t").unwrap().unwrap().checkpoint.size, 6);
}

#[test]
fn a_rolled_back_log_is_never_signed() {
    let (_dir, path) = closed_ledger(6, 0);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE logs SET size = 4", []).unwrap();
    drop(raw);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert!(matches!(ledger.sign_checkpoint("t", signer()), Err(StoreError::Corrupt { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_can_be_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(SqliteLedger::open(dir.path().join("mandate.db")).unwrap());
    ledger.create_log("t", &signer()).unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.append("t", vec![draft(n)]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(ledger.size("t").unwrap(), 32);
}

fn verify_log(ledger: &SqliteLedger, tenant: &str) -> u64 {
    let size = ledger.size(tenant).unwrap();
    let mut verifier = LogVerifier::new(&[]);
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::ENTRIES_PAGE_MAX).min(size);
        for entry in ledger.entries(tenant, start, end).unwrap() {
            verifier.push(&entry.bytes).unwrap();
        }
        start = end;
    }
    let verified = verifier.finish(None, None).unwrap();
    assert_eq!(verified.root, ledger.root(tenant, size).unwrap());
    size
}

/// A second process (here: a second ledger on the same file) creates a
/// tenant and appends to it while the first appends to its own; the first
/// then uses the new tenant, and neither builds on a stale head.
#[test]
fn two_ledgers_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let a = SqliteLedger::open(&path).unwrap();
    a.create_log("t1", &signer()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let key2 = SignerKey::from_seed("mandate.test/t2", [5; 32]).unwrap();
    let appended_by_a = std::thread::scope(|scope| {
        let appender = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                a.append("t1", vec![draft(n), draft(n + 1)]).wait().unwrap();
                n += 2;
            }
            n
        });
        let b = SqliteLedger::open(&path).unwrap();
        b.create_log("t2", &key2).unwrap();
        for n in 0..20 {
            b.append("t2", vec![draft(n)]).wait().unwrap();
        }
        assert_eq!(b.tenants().unwrap(), ["t1", "t2"]);
        drop(b);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        appender.join().unwrap()
    });
    // A sees B's tenant, its key and its entries, and appends after them.
    assert_eq!(a.tenants().unwrap(), ["t1", "t2"]);
    assert_eq!(a.signer("t2").unwrap().to_private_text(), key2.to_private_text());
    assert_eq!(a.size("t2").unwrap(), 20);
    assert_eq!(a.append("t2", vec![draft(20)]).wait().unwrap()[0].index, 20);
    // B comes back and appends again: A's cached head of t2 is now stale, and
    // A must notice instead of writing over entry 21.
    let b = SqliteLedger::open(&path).unwrap();
    assert_eq!(b.append("t2", vec![draft(21), draft(22)]).wait().unwrap()[0].index, 21);
    assert_eq!(a.append("t2", vec![draft(23)]).wait().unwrap()[0].index, 23);
    assert_eq!(b.append("t1", vec![draft(0)]).wait().unwrap()[0].index, appended_by_a);
    assert_eq!(a.append("t1", vec![draft(1)]).wait().unwrap()[0].index, appended_by_a + 1);
    drop(b);
    assert_eq!(verify_log(&a, "t1"), appended_by_a + 2);
    assert_eq!(verify_log(&a, "t2"), 24);
    let signed = a.sign_checkpoint("t2", Arc::new(a.signer("t2").unwrap())).unwrap();
    assert_eq!(signed.checkpoint.size, 24);
}

/// Two writers take turns on one tenant across the points where the identity
/// index is extended: each must build on the other's entries and index.
#[test]
fn two_ledgers_take_turns_on_one_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (a, b) = (SqliteLedger::open(&path).unwrap(), SqliteLedger::open(&path).unwrap());
    a.create_log("t", &signer()).unwrap();
    let identity = |n: u64| ["agent:a", "agent:b", "agent:c"][(n % 3) as usize];
    let mut n = 0;
    for (turn, (ledger, count)) in
        [(&a, 4_000), (&b, 200), (&a, 4_000), (&b, 100), (&a, 300), (&b, 9)].into_iter().enumerate()
    {
        let end = n + count;
        while n < end {
            let chunk = (end - n).min(1_000);
            let drafts = (n..n + chunk).map(|k| draft(k).with_terms(Some(identity(k)), None)).collect();
            let rows = vec![row("counter", "next", &(n + chunk).to_string()), row("turn", &turn.to_string(), "")];
            assert_eq!(ledger.append_with_state("t", drafts, rows).wait().unwrap()[0].index, n);
            n += chunk;
        }
    }
    assert_eq!(verify_log(&a, "t"), n);
    // Both see the rows of both, the last write winning.
    for ledger in [&a, &b] {
        assert_eq!(ledger.state_rows("t", Some("counter")).unwrap(), vec![row("counter", "next", &n.to_string())]);
        assert_eq!(ledger.state_rows("t", Some("turn")).unwrap().len(), 6);
    }
    for ledger in [&a, &b] {
        let mut found = Vec::new();
        let mut query = SearchQuery { identity: Some("agent:b".into()), limit: 1_000, ..SearchQuery::default() };
        loop {
            let page = ledger.search("t", &query).unwrap();
            found.extend(page.entries.iter().map(|entry| entry.index));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, (0..n).filter(|k| k % 3 == 1).collect::<Vec<_>>());
    }
}

/// Turns a closed version-5 database back into the version-4 shape: every
/// entry kept plain (its canonical bytes), as version 4 wrote them.
fn downgrade_to_version_4(path: &std::path::Path) {
    let mut plain = Vec::new();
    {
        let ledger = SqliteLedger::open(path).unwrap();
        let raw = rusqlite::Connection::open(path).unwrap();
        for tenant in ledger.tenants().unwrap() {
            let log: i64 = raw.query_row("SELECT id FROM logs WHERE tenant = ?1", [&tenant], |row| row.get(0)).unwrap();
            let size = ledger.size(&tenant).unwrap();
            for entry in ledger.entries(&tenant, 0, size).unwrap() {
                plain.push(((log << 40) | entry.index as i64, entry.bytes));
            }
        }
    }
    let raw = rusqlite::Connection::open(path).unwrap();
    for (key, bytes) in plain {
        raw.execute("UPDATE entries SET bytes = ?2 WHERE key = ?1", rusqlite::params![key, bytes]).unwrap();
    }
    raw.execute_batch("PRAGMA user_version = 4;").unwrap();
}

/// The first byte of each entry row as kept, in key order.
fn kept_forms(path: &std::path::Path) -> Vec<u8> {
    let raw = rusqlite::Connection::open(path).unwrap();
    let mut statement = raw.prepare("SELECT substr(bytes, 1, 1) FROM entries ORDER BY key").unwrap();
    statement.query_map([], |row| row.get::<_, Vec<u8>>(0)).unwrap().map(|first| first.unwrap()[0]).collect()
}

#[test]
fn a_version_4_database_keeps_its_plain_entries_and_packs_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (signed, lines) = {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        ledger.append("t", (0..30).map(draft).collect()).wait().unwrap();
        (ledger.sign_checkpoint("t", signer()).unwrap(), ledger.entries("t", 0, 30).unwrap())
    };
    assert_eq!(kept_forms(&path), [2; 30], "version 6 packs every entry that shrinks (dictionary 2)");
    downgrade_to_version_4(&path);
    assert_eq!(kept_forms(&path), [b'{'; 30]);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(schema_version(&path), 6);
    // The plain rows read as they were; new ones are packed and chain on.
    assert_eq!(ledger.entries("t", 0, 30).unwrap(), lines);
    assert_eq!(ledger.latest_checkpoint("t").unwrap(), Some(signed));
    ledger.append("t", (30..40).map(draft).collect()).wait().unwrap();
    assert_eq!(kept_forms(&path), [[b'{'; 30].as_slice(), &[2; 10]].concat());
    assert_eq!(verify_log(&ledger, "t"), 40);
    let by_type = SearchQuery { entry_type: Some("test.append".into()), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &by_type).unwrap().entries[..30], lines[..]);
}

/// Turns a closed version-5 database back into the version-3 shape.
fn downgrade_to_version_3(path: &std::path::Path) {
    downgrade_to_version_4(path);
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch("DROP TABLE entry_keys; ALTER TABLE logs DROP COLUMN keyed_from; PRAGMA user_version = 3;")
        .unwrap();
}

/// Turns a closed version-5 database back into the version-2 shape.
fn downgrade_to_version_2(path: &std::path::Path) {
    downgrade_to_version_3(path);
    rusqlite::Connection::open(path).unwrap().execute_batch("DROP TABLE state; PRAGMA user_version = 2;").unwrap();
}

/// Turns a closed version-5 database back into the version-1 shape.
fn downgrade_to_version_1(path: &std::path::Path) {
    downgrade_to_version_2(path);
    let raw = rusqlite::Connection::open(path).unwrap();
    raw.execute_batch(
        "DROP TABLE search;
         DROP TABLE search_identity;
         ALTER TABLE logs DROP COLUMN signer;
         ALTER TABLE logs DROP COLUMN indexed;
         PRAGMA user_version = 1;",
    )
    .unwrap();
}

#[test]
fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let signed = {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        let drafts = (0..30).map(|n| draft(n).with_terms(Some("agent:a"), Some("allow"))).collect();
        ledger.append("t", drafts).wait().unwrap();
        ledger.sign_checkpoint("t", signer()).unwrap()
    };
    downgrade_to_version_1(&path);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(schema_version(&path), 6);
    // The log, its checkpoint and its chain are intact; its key is not there.
    assert_eq!(ledger.size("t").unwrap(), 30);
    assert_eq!(ledger.latest_checkpoint("t").unwrap(), Some(signed));
    assert_eq!(ledger.signer("t").unwrap_err(), StoreError::NoSigner { tenant: "t".into() });
    // Old entries are found by type and time (their terms were never stored).
    let by_type = SearchQuery { entry_type: Some("test.append".into()), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &by_type).unwrap().entries.len(), 30);
    let since = SearchQuery { since_us: Some(0), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &since).unwrap().entries.len(), 30);
    let by_identity = SearchQuery { identity: Some("agent:a".into()), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &by_identity).unwrap().entries.len(), 0);
    // New entries chain on and carry their terms.
    ledger.append("t", vec![draft(30).with_terms(Some("agent:a"), None)]).wait().unwrap();
    let page = ledger.search("t", &by_identity).unwrap();
    assert_eq!((page.entries.len(), page.entries[0].index), (1, 30));
    assert_eq!(verify_log(&ledger, "t"), 31);
    // New tenants have keys.
    ledger.create_log("u", &signer()).unwrap();
    assert_eq!(ledger.signer("u").unwrap().to_private_text(), signer().to_private_text());
    // State rows start empty and are written from now on.
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![]);
    ledger.append_with_state("t", vec![draft(31)], vec![row("budget", "b", "1")]).wait().unwrap();
    // Opening again changes nothing.
    drop(ledger);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(ledger.tenants().unwrap(), ["t", "u"]);
    assert_eq!(ledger.search("t", &by_type).unwrap().entries.len(), 32);
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![row("budget", "b", "1")]);
}

#[test]
fn a_version_2_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (signed, lines) = {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        let drafts = (0..30).map(|n| draft(n).with_terms(Some("agent:a"), Some("allow"))).collect();
        ledger.append_with_state("t", drafts, vec![row("budget", "b", "from version 3")]).wait().unwrap();
        (ledger.sign_checkpoint("t", signer()).unwrap(), ledger.entries("t", 0, 30).unwrap())
    };
    // The rows written above go with the state table: a version-2 file never had them.
    downgrade_to_version_2(&path);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(schema_version(&path), 6);
    // Entries, checkpoint, key and search are untouched; there are no rows.
    assert_eq!(ledger.entries("t", 0, 30).unwrap(), lines);
    assert_eq!(ledger.latest_checkpoint("t").unwrap(), Some(signed));
    assert_eq!(ledger.signer("t").unwrap().to_private_text(), signer().to_private_text());
    let by_identity = SearchQuery { identity: Some("agent:a".into()), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &by_identity).unwrap().entries.len(), 30);
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![]);
    // Rows are written from the next append on, and the log chains on.
    ledger.append_with_state("t", vec![draft(30)], vec![row("budget", "b", "1")]).wait().unwrap();
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![row("budget", "b", "1")]);
    assert_eq!(verify_log(&ledger, "t"), 31);
    // Opening again migrates nothing more.
    drop(ledger);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(schema_version(&path), 6);
    assert_eq!(ledger.state_rows("t", None).unwrap(), vec![row("budget", "b", "1")]);
}

#[test]
fn a_version_3_database_is_migrated_and_keyed_from_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        ledger.create_log("empty", &signer()).unwrap();
        ledger.append("t", (0..5).map(|n| draft(n).with_keys(vec![[n as u8; 16]])).collect()).wait().unwrap();
    }
    // A version-3 file never had keys.
    downgrade_to_version_3(&path);
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(schema_version(&path), 6);
    assert_eq!((ledger.keyed_from("t").unwrap(), ledger.keyed_from("empty").unwrap()), (5, 0));
    assert_eq!(ledger.find("t", &[[1; 16]]).unwrap(), vec![None]);
    // New entries are keyed; the backfill keys the old ones and marks the log.
    ledger.append("t", vec![draft(5).with_keys(vec![[1; 16]])]).wait().unwrap();
    ledger.backfill_keys("t", vec![([1; 16], 1), ([2; 16], 2)]).unwrap();
    assert_eq!(ledger.find("t", &[[1; 16], [2; 16]]).unwrap(), vec![Some(5), Some(2)]);
    assert_eq!(ledger.keyed_from("t").unwrap(), 0);
    assert_eq!(verify_log(&ledger, "t"), 6);
}

/// Two processes (here: two ledgers) opening a version-2 file at once
/// migrate it once.
#[test]
fn a_migration_runs_once_when_two_open_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t", &signer()).unwrap();
        ledger.append("t", vec![draft(0)]).wait().unwrap();
    }
    downgrade_to_version_2(&path);
    let ledgers: Vec<SqliteLedger> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..4).map(|_| scope.spawn(|| SqliteLedger::open(&path).unwrap())).collect();
        opening.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(schema_version(&path), 6);
    for (n, ledger) in ledgers.iter().enumerate() {
        ledger
            .append_with_state("t", vec![draft(1 + n as u64)], vec![row("budget", "b", &n.to_string())])
            .wait()
            .unwrap();
    }
    assert_eq!(ledgers[0].state_rows("t", None).unwrap(), vec![row("budget", "b", "3")]);
    assert_eq!(verify_log(&ledgers[0], "t"), 5);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    drop(SqliteLedger::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 7).unwrap();
    assert!(matches!(SqliteLedger::open(&path), Err(StoreError::Database { .. })));
}

#[test]
fn a_corrupted_stored_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let ledger = SqliteLedger::open(&path).unwrap();
    ledger.create_log("t", &signer()).unwrap();
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE logs SET signer = 'PRIVATE+KEY+x'", []).unwrap();
    assert!(matches!(ledger.signer("t"), Err(StoreError::Corrupt { .. })));
}

/// The file holds signing keys: only its owner may read it.
#[cfg(unix)]
#[test]
fn the_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let ledger = SqliteLedger::open(&path).unwrap();
    ledger.create_log("t", &signer()).unwrap();
    ledger.append("t", vec![draft(0)]).wait().unwrap();
    for file in ["mandate.db", "mandate.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

/// Appends without a pause, for longer than a passive checkpoint can catch
/// up with: the WAL must still be reused from its start rather than grow
/// with the load (it reached 640 MB in 15 s of a server flat out before the
/// checkpointer restarted it past 64 MiB).
#[test]
fn the_wal_stays_bounded_under_appends_without_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let ledger = SqliteLedger::open(&path).unwrap();
    ledger.create_log("t", &signer()).unwrap();
    let padding = "x".repeat(3_000);
    let wal = dir.path().join("mandate.db-wal");
    let mut largest = 0;
    std::thread::scope(|scope| {
        for writer in 0..16u64 {
            let (ledger, padding) = (&ledger, &padding);
            scope.spawn(move || {
                for n in 0..5_000u64 {
                    let serde_json::Value::Object(body) = json!({"n": n, "w": writer, "p": padding}) else {
                        unreachable!()
                    };
                    let draft = EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap();
                    ledger.append("t", vec![draft]).wait().unwrap();
                }
            });
        }
        let started = std::time::Instant::now();
        while ledger.size("t").unwrap() < 80_000 && started.elapsed() < std::time::Duration::from_secs(300) {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    // 80,000 entries of ~3 KB: about 300 MiB of frames in all. Bounded: the
    // limit (64 MiB) and what is appended until the checkpointer notices
    // (~80 MiB here; the margin is for a slow machine).
    assert!(largest < 160 * 1024 * 1024, "the WAL reached {} MiB", largest / (1024 * 1024));
    assert_eq!(verify_log(&ledger, "t"), 80_000);
}
