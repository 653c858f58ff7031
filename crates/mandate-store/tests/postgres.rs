//! The PostgreSQL backend across processes: several ledgers on one database
//! (as several `mandate serve` instances would be) share each tenant's log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use mandate_log::{Entry, LogVerifier, SignedCheckpoint, SignerKey, tree};
use mandate_store::{EntryDraft, EntryKey, Ledger, PostgresLedger, SearchQuery, StateRow, StoreError};
use serde_json::json;

mod pg_support;

fn draft(n: u64) -> EntryDraft {
    let serde_json::Value::Object(body) = json!({"n": n}) else { unreachable!() };
    EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap()
}

fn signer(tenant: &str) -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed(&format!("mandate.test/{tenant}"), [42; 32]).unwrap())
}

/// Reads the whole log through `ledger`, checks the chain and the root, and
/// returns the `n` of every entry in log order.
fn verify_all(ledger: &dyn Ledger, tenant: &str) -> Vec<u64> {
    let size = ledger.size(tenant).unwrap();
    let mut verifier = LogVerifier::new(&[]);
    let mut numbers = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::ENTRIES_PAGE_MAX).min(size);
        for (offset, stored) in ledger.entries(tenant, start, end).unwrap().into_iter().enumerate() {
            assert_eq!(stored.index, start + offset as u64);
            verifier.push(&stored.bytes).unwrap();
            numbers.push(Entry::parse(&stored.bytes).unwrap().body["n"].as_u64().unwrap());
        }
        start = end;
    }
    let verified = verifier.finish(None, None).unwrap();
    assert_eq!(verified.size, size);
    assert_eq!(ledger.root(tenant, size).unwrap(), verified.root);
    numbers
}

#[test]
fn two_ledgers_appending_to_one_tenant_make_one_gapless_log() {
    let schema = pg_support::TestSchema::new();
    let ledgers: Vec<PostgresLedger> = (0..2).map(|_| PostgresLedger::connect(&schema.url()).unwrap()).collect();
    ledgers[0].create_log("shared", &signer("shared")).unwrap();
    let (threads_per_ledger, appends_per_thread) = (4u64, 60u64);
    std::thread::scope(|scope| {
        for (l, ledger) in ledgers.iter().enumerate() {
            for thread in 0..threads_per_ledger {
                scope.spawn(move || {
                    for i in 0..appends_per_thread {
                        let first = ((l as u64 * threads_per_ledger + thread) * appends_per_thread + i) * 2;
                        let row = StateRow {
                            kind: "last".into(),
                            key: format!("{l}/{thread}"),
                            value: Some(i.to_string().into_bytes()),
                        };
                        let appended = ledger
                            .append_with_state("shared", vec![draft(first), draft(first + 1)], vec![row])
                            .wait()
                            .unwrap();
                        assert_eq!(appended[1].index, appended[0].index + 1);
                    }
                });
            }
        }
    });
    let total = 2 * threads_per_ledger * appends_per_thread * 2;
    for ledger in &ledgers {
        assert_eq!(ledger.size("shared").unwrap(), total);
        let mut numbers = verify_all(ledger, "shared");
        numbers.sort_unstable();
        assert_eq!(numbers, (0..total).collect::<Vec<_>>());
        let rows = ledger.state_rows("shared", Some("last")).unwrap();
        assert_eq!(rows.len(), (2 * threads_per_ledger) as usize);
        let last = (appends_per_thread - 1).to_string().into_bytes();
        assert!(rows.iter().all(|row| row.value.as_deref() == Some(last.as_slice())));
    }
    // Each ledger's cached head is stale now; both still append correctly.
    for (n, ledger) in ledgers.iter().enumerate() {
        let appended = ledger.append("shared", vec![draft(total + n as u64)]).wait().unwrap();
        assert_eq!(appended[0].index, total + n as u64);
    }
    assert_eq!(verify_all(&ledgers[1], "shared").len() as u64, total + 2);
}

#[test]
fn two_ledgers_signing_at_once_never_sign_inconsistent_checkpoints() {
    let schema = pg_support::TestSchema::new();
    let ledgers: Vec<PostgresLedger> = (0..2).map(|_| PostgresLedger::connect(&schema.url()).unwrap()).collect();
    ledgers[0].create_log("c", &signer("c")).unwrap();
    let key = signer("c");
    let signed: Vec<SignedCheckpoint> = std::thread::scope(|scope| {
        let handles: Vec<_> = ledgers
            .iter()
            .enumerate()
            .map(|(l, ledger)| {
                let key = key.clone();
                scope.spawn(move || {
                    let mut signed = Vec::new();
                    for i in 0..40u64 {
                        ledger.append("c", vec![draft(l as u64 * 1_000 + i)]).wait().unwrap();
                        signed.push(ledger.sign_checkpoint("c", key.clone()).unwrap());
                    }
                    signed
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
    });
    // Every checkpoint either ledger signed is consistent with every other.
    let ledger = &ledgers[0];
    let size = ledger.size("c").unwrap();
    assert_eq!(size, 80);
    for checkpoint in &signed {
        SignedCheckpoint::open(checkpoint.note.as_bytes(), std::slice::from_ref(key.verifier())).unwrap();
        let (old, new) = (checkpoint.checkpoint.size, size);
        let root = ledger.root("c", new).unwrap();
        let proof = ledger.consistency_proof("c", old, new).unwrap();
        assert!(tree::verify_consistency(old, new, &checkpoint.checkpoint.root, &root, &proof));
    }
    let latest = ledger.latest_checkpoint("c").unwrap().unwrap();
    assert_eq!(latest.checkpoint.size, signed.iter().map(|c| c.checkpoint.size).max().unwrap());
    verify_all(ledger, "c");
}

#[test]
fn ledgers_connecting_at_once_migrate_once() {
    let schema = pg_support::TestSchema::new();
    let url = schema.url();
    let ledgers: Vec<PostgresLedger> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| PostgresLedger::connect(&url).unwrap())).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    ledgers[0].create_log("m", &signer("m")).unwrap();
    for (n, ledger) in ledgers.iter().enumerate() {
        assert_eq!(ledger.append("m", vec![draft(n as u64)]).wait().unwrap()[0].index, n as u64);
    }
    drop(ledgers);
    // A later connect finds the schema in place and the log intact.
    let again = PostgresLedger::connect(&url).unwrap();
    assert_eq!(verify_all(&again, "m"), vec![0, 1, 2, 3]);
}

#[test]
fn works_from_inside_a_multi_thread_runtime() {
    let schema = pg_support::TestSchema::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let ledger = Arc::new(PostgresLedger::connect(&schema.url()).unwrap());
        ledger.create_log("rt", &signer("rt")).unwrap();
        let tasks: Vec<_> = (0..8u64)
            .map(|n| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.append("rt", vec![draft(n)]).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let reader = ledger.clone();
        let size = tokio::task::spawn_blocking(move || reader.size("rt").unwrap()).await.unwrap();
        assert_eq!(size, 8);
        let reader = ledger.clone();
        tokio::task::spawn_blocking(move || verify_all(reader.as_ref(), "rt")).await.unwrap();
        // Dropping it inside the runtime does not panic.
        drop(ledger);
    });
}

#[test]
fn a_bad_address_is_a_database_error() {
    assert!(matches!(
        PostgresLedger::connect("postgres://postgres@127.0.0.1:1/test?connect_timeout=2"),
        Err(mandate_store::StoreError::Database { .. })
    ));
    assert!(matches!(PostgresLedger::connect("not a url ://"), Err(mandate_store::StoreError::Database { .. })));
}

/// Runs one statement on the test database.
fn execute(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = task.await;
    });
}

#[test]
fn lost_connections_are_replaced_without_a_restart() {
    let schema = pg_support::TestSchema::new();
    let name = format!("mandate_lost_{}", std::process::id());
    let url = format!("{}&application_name={name}", schema.url());
    let ledger = PostgresLedger::connect(&url).unwrap();
    ledger.create_log("l", &signer("l")).unwrap();
    ledger.append("l", vec![draft(0)]).wait().unwrap();
    assert_eq!(ledger.size("l").unwrap(), 1);
    // Every connection of the ledger is cut, as a database restart would.
    execute(
        &schema.url(),
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"),
    );
    // Calls may fail for a moment (cleanly), then work again.
    let mut next = 1;
    for _ in 0..50 {
        if ledger.append("l", vec![draft(next)]).wait().is_ok() {
            next += 1;
            if next == 4 {
                break;
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(next, 4);
    let size = (0..50)
        .find_map(|_| {
            ledger.size("l").ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            })
        })
        .unwrap();
    assert_eq!(size, 4);
    assert_eq!(verify_all(&ledger, "l"), vec![0, 1, 2, 3]);
    ledger.sign_checkpoint("l", signer("l")).unwrap();
}

#[test]
fn text_postgresql_cannot_hold_fails_alone() {
    let schema = pg_support::TestSchema::new();
    let ledger = PostgresLedger::connect(&schema.url()).unwrap();
    ledger.create_log("n", &signer("n")).unwrap();
    let ledger = &ledger;
    std::thread::scope(|scope| {
        let bad_term = scope.spawn(|| ledger.append("n", vec![draft(0).with_terms(Some("agent:\0"), None)]).wait());
        let bad_row = scope.spawn(|| {
            let row = StateRow { kind: "k".into(), key: "\0".into(), value: Some(b"v".to_vec()) };
            ledger.append_with_state("n", vec![draft(0)], vec![row]).wait()
        });
        let bad_tenant = scope.spawn(|| ledger.append("n\0", vec![draft(0)]).wait());
        let fine: Vec<_> = (0..4).map(|n| scope.spawn(move || ledger.append("n", vec![draft(n)]).wait())).collect();
        assert!(matches!(bad_term.join().unwrap(), Err(mandate_store::StoreError::InvalidEntry { .. })));
        assert!(matches!(bad_row.join().unwrap(), Err(mandate_store::StoreError::InvalidStateRow { .. })));
        assert!(matches!(bad_tenant.join().unwrap(), Err(mandate_store::StoreError::UnknownTenant { .. })));
        for append in fine {
            append.join().unwrap().unwrap();
        }
    });
    assert!(matches!(ledger.size("n\0"), Err(mandate_store::StoreError::UnknownTenant { .. })));
    assert!(matches!(ledger.signer("n\0"), Err(mandate_store::StoreError::UnknownTenant { .. })));
    assert_eq!(ledger.state_rows("n", Some("\0")).unwrap(), vec![]);
    let query = mandate_store::SearchQuery { identity: Some("\0".into()), ..Default::default() };
    assert_eq!(ledger.search("n", &query).unwrap().entries, vec![]);
    assert_eq!(verify_all(ledger, "n").len(), 4);
}

#[test]
fn two_ledgers_appending_to_several_tenants_never_deadlock() {
    let schema = pg_support::TestSchema::new();
    let ledgers: Vec<PostgresLedger> = (0..2).map(|_| PostgresLedger::connect(&schema.url()).unwrap()).collect();
    let tenants = ["t0", "t1", "t2"];
    for tenant in tenants {
        ledgers[0].create_log(tenant, &signer(tenant)).unwrap();
    }
    // Each batch of either ledger likely holds several tenants, in any order:
    // their rows are locked in tenant order, so the ledgers never deadlock.
    std::thread::scope(|scope| {
        for (l, ledger) in ledgers.iter().enumerate() {
            for thread in 0..6u64 {
                scope.spawn(move || {
                    for i in 0..40u64 {
                        let tenant = tenants[((thread + i + l as u64) % 3) as usize];
                        ledger.append(tenant, vec![draft(i)]).wait().unwrap();
                    }
                });
            }
        }
    });
    let sizes: u64 = tenants.iter().map(|tenant| verify_all(&ledgers[1], tenant).len() as u64).sum();
    assert_eq!(sizes, 2 * 6 * 40);
}

/// Read-decide-append across processes: each step holds the log, reads its
/// last entry, and appends an entry naming the size it saw. If two steps ever
/// saw the same size (a hold not excluding another ledger's), two entries
/// would name one number and the log would not be `0, 1, 2, …`.
#[test]
fn holds_on_two_ledgers_serialize_read_decide_append() {
    let schema = pg_support::TestSchema::new();
    let ledgers: Vec<Arc<PostgresLedger>> =
        (0..2).map(|_| Arc::new(PostgresLedger::connect(&schema.url()).unwrap())).collect();
    ledgers[0].create_log("held", &signer("held")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (tasks_per_ledger, steps) = (3, 40u64);
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for ledger in &ledgers {
            for _ in 0..tasks_per_ledger {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..steps {
                        let known = ledger.size("held").unwrap().saturating_sub(1);
                        let mut hold = ledger.hold("held", known).await.unwrap();
                        let size = hold.size();
                        if let Some(last) = size.checked_sub(1) {
                            // What came since `known`, fetched with the hold, ends at the last entry.
                            let fetched = hold.take_fetched();
                            assert_eq!(fetched.last().unwrap().index, last);
                            let seen = hold.entries(last, size).await.unwrap();
                            assert_eq!(Entry::parse(&seen[0].bytes).unwrap().body["n"], json!(last));
                        }
                        let appended = hold.commit(vec![draft(size)], Vec::new()).await.unwrap();
                        assert_eq!(appended[0].index, size);
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let total = 2 * tasks_per_ledger as u64 * steps;
    assert_eq!(verify_all(ledgers[1].as_ref(), "held"), (0..total).collect::<Vec<_>>());
}

/// A held commit sends its statements and its `COMMIT` together. When one
/// statement fails in the database (here a trigger refuses a state row), the
/// commit reports the failure, nothing of it is written, and the log's next
/// holds work: no connection is left inside the failed transaction.
#[test]
fn a_statement_failing_inside_a_held_commit_writes_nothing() {
    let schema = pg_support::TestSchema::new();
    let ledger = PostgresLedger::connect(&schema.url()).unwrap();
    ledger.create_log("t", &signer("t")).unwrap();
    ledger.append("t", vec![draft(0)]).wait().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&schema.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN IF NEW.kind = 'boom' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$;
                 CREATE TRIGGER refuse_boom BEFORE INSERT ON state FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
            )
            .await
            .unwrap();
        let boom = StateRow { kind: "boom".into(), key: "k".into(), value: Some(b"v".to_vec()) };
        for _ in 0..20 {
            let hold = ledger.hold("t", 1).await.unwrap();
            assert_eq!(hold.size(), 1);
            let failed = hold.commit(vec![draft(1), draft(2)], vec![boom.clone()]).await;
            assert!(failed.is_err(), "the refused row fails the commit");
        }
        // Nothing was written, and the log goes on.
        let hold = ledger.hold("t", 1).await.unwrap();
        assert_eq!(hold.size(), 1);
        let good = StateRow { kind: "fine".into(), key: "k".into(), value: Some(b"v".to_vec()) };
        let appended = hold.commit(vec![draft(1)], vec![good]).await.unwrap();
        assert_eq!(appended[0].index, 1);
    });
    assert_eq!(verify_all(&ledger, "t"), vec![0, 1]);
    let rows = ledger.state_rows("t", None).unwrap();
    assert_eq!(rows.iter().map(|row| row.kind.as_str()).collect::<Vec<_>>(), vec!["fine"]);
}

/// A key for tests: `n` in its first bytes.
fn key(n: u64) -> EntryKey {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&n.to_be_bytes());
    key
}

/// The schema version recorded in the database.
fn schema_version(url: &str) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(connection);
        let version = client.query_one("SELECT version FROM mandate_schema", &[]).await.unwrap().get(0);
        drop(client);
        let _ = task.await;
        version
    })
}

/// Turns a version-3 database back into the version-2 shape: every entry
/// kept plain (its canonical bytes), as version 2 wrote them.
fn downgrade_to_version_2(url: &str) {
    let ledger = PostgresLedger::connect(url).unwrap();
    let mut sql = String::new();
    for tenant in ledger.tenants().unwrap() {
        for entry in ledger.entries(&tenant, 0, ledger.size(&tenant).unwrap()).unwrap() {
            let hex: String = entry.bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            sql.push_str(&format!(
                "UPDATE entries SET bytes = decode('{hex}', 'hex') WHERE idx = {} \
                 AND log = (SELECT id FROM logs WHERE tenant = '{tenant}');",
                entry.index
            ));
        }
    }
    drop(ledger);
    execute(url, &format!("{sql} UPDATE mandate_schema SET version = 2"));
}

/// The first byte of each entry row of `tenant` as kept, in log order.
fn kept_forms(url: &str, tenant: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT substr(bytes, 1, 1) FROM entries WHERE log = (SELECT id FROM logs WHERE tenant = $1) ORDER BY idx",
                &[&tenant],
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        rows.iter().map(|row| row.get::<_, Vec<u8>>(0)[0]).collect()
    })
}

/// Entries written before version 3 stay plain and read as before; new ones
/// are packed and chain on.
#[test]
fn a_version_2_database_keeps_its_plain_entries_and_packs_new_ones() {
    let schema = pg_support::TestSchema::new();
    let url = schema.url();
    let (signed, lines) = {
        let ledger = PostgresLedger::connect(&url).unwrap();
        ledger.create_log("t", &signer("t")).unwrap();
        ledger.append("t", (0..30).map(draft).collect()).wait().unwrap();
        (ledger.sign_checkpoint("t", signer("t")).unwrap(), ledger.entries("t", 0, 30).unwrap())
    };
    assert_eq!(kept_forms(&url, "t"), [2; 30], "version 4 packs every entry that shrinks (dictionary 2)");
    downgrade_to_version_2(&url);
    assert_eq!(kept_forms(&url, "t"), [b'{'; 30]);
    let ledger = PostgresLedger::connect(&url).unwrap();
    assert_eq!(schema_version(&url), 4);
    assert_eq!(ledger.entries("t", 0, 30).unwrap(), lines);
    assert_eq!(ledger.latest_checkpoint("t").unwrap(), Some(signed));
    ledger.append("t", (30..40).map(draft).collect()).wait().unwrap();
    assert_eq!(kept_forms(&url, "t"), [[b'{'; 30].as_slice(), &[2; 10]].concat());
    assert_eq!(verify_all(&ledger, "t"), (0..40).collect::<Vec<_>>());
    let by_type = SearchQuery { entry_type: Some("test.append".into()), limit: 100, ..SearchQuery::default() };
    assert_eq!(ledger.search("t", &by_type).unwrap().entries[..30], lines[..]);
}

/// A log written before keys were stored (schema version 1) is keyed only
/// from its size at migration; its older entries are found once backfilled,
/// without losing a newer entry that shares a key.
#[test]
fn a_version_1_database_migrates_and_its_keys_are_backfilled() {
    let schema = pg_support::TestSchema::new();
    let url = schema.url();
    {
        let ledger = PostgresLedger::connect(&url).unwrap();
        ledger.create_log("old", &signer("old")).unwrap();
        ledger.create_log("empty", &signer("empty")).unwrap();
        ledger.append("old", (0..5).map(draft).collect()).wait().unwrap();
    }
    // Version 1 is version 2 without the key index and `keyed_from`.
    downgrade_to_version_2(&url);
    execute(
        &url,
        "DROP TABLE entry_keys; ALTER TABLE logs DROP COLUMN keyed_from; UPDATE mandate_schema SET version = 1",
    );
    assert_eq!(schema_version(&url), 1);

    let ledger = PostgresLedger::connect(&url).unwrap();
    assert_eq!(schema_version(&url), 4);
    assert_eq!(ledger.keyed_from("old").unwrap(), 5);
    assert_eq!(ledger.keyed_from("empty").unwrap(), 0);
    let old_keys: Vec<EntryKey> = (0..5).map(key).collect();
    assert_eq!(ledger.find("old", &old_keys).unwrap(), vec![None; 5]);

    // New entries are keyed at once; entry 5 shares entry 2's key.
    ledger.append("old", vec![draft(5).with_keys(vec![key(2)]), draft(6).with_keys(vec![key(6)])]).wait().unwrap();
    assert_eq!(ledger.find("old", &[key(2), key(6), key(0)]).unwrap(), vec![Some(5), Some(6), None]);
    assert_eq!(ledger.keyed_from("old").unwrap(), 5);

    // An entry beyond the log is refused, and nothing is written.
    assert!(matches!(ledger.backfill_keys("old", vec![(key(0), 0), (key(9), 7)]), Err(StoreError::EntryRange { .. })));
    assert_eq!(ledger.find("old", &[key(0)]).unwrap(), vec![None]);
    assert_eq!(ledger.keyed_from("old").unwrap(), 5);

    // A key given twice keeps its greater entry; a key stored with a newer
    // entry keeps that one.
    let backfill: Vec<(EntryKey, u64)> = (0..5).map(|n| (key(n), n)).chain([(key(1), 0)]).collect();
    for _ in 0..2 {
        ledger.backfill_keys("old", backfill.clone()).unwrap();
        assert_eq!(ledger.keyed_from("old").unwrap(), 0);
        assert_eq!(
            ledger.find("old", &[key(0), key(1), key(2), key(3), key(4), key(6)]).unwrap(),
            vec![Some(0), Some(1), Some(5), Some(3), Some(4), Some(6)]
        );
    }
    assert_eq!(ledger.find("empty", &[key(0)]).unwrap(), vec![None]);
    assert_eq!(ledger.find("old", &[]).unwrap(), vec![]);
    assert!(matches!(ledger.find("nobody", &[key(0)]), Err(StoreError::UnknownTenant { .. })));
    assert!(matches!(ledger.keyed_from("nobody"), Err(StoreError::UnknownTenant { .. })));
    assert!(matches!(ledger.keyed_from("no\0body"), Err(StoreError::UnknownTenant { .. })));
    assert!(matches!(ledger.backfill_keys("nobody", vec![]), Err(StoreError::UnknownTenant { .. })));
    assert_eq!(verify_all(&ledger, "old"), (0..7).collect::<Vec<_>>());
    drop(ledger);

    // A database newer than this code is still refused.
    execute(&url, "UPDATE mandate_schema SET version = 5");
    assert!(matches!(PostgresLedger::connect(&url), Err(StoreError::Database { .. })));
}

/// Keys written through one ledger, by plain appends and held commits from
/// both at once, are found through the other, by `Ledger::find` and by a
/// hold's `find`; the newest entry with a key wins across processes.
#[test]
fn keys_written_through_one_ledger_are_found_through_another() {
    let schema = pg_support::TestSchema::new();
    let ledgers: Vec<Arc<PostgresLedger>> =
        (0..2).map(|_| Arc::new(PostgresLedger::connect(&schema.url()).unwrap())).collect();
    ledgers[0].create_log("k", &signer("k")).unwrap();
    let shared = key(u64::MAX);
    // Every entry carries the shared key and one of its own (its `n`).
    let keyed = |n: u64| draft(n).with_keys(vec![shared, key(n)]);
    let (threads, appends) = (3u64, 20u64);
    let found: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u64)
            .flat_map(|l| (0..threads).map(move |t| (l, t)))
            .map(|(l, t)| {
                let ledger = &ledgers[l as usize];
                scope.spawn(move || {
                    let mut written = Vec::new();
                    for i in 0..appends {
                        let n = ((l * threads + t) * appends + i) * 2;
                        let appended = ledger.append("k", vec![keyed(n), keyed(n + 1)]).wait().unwrap();
                        written.extend([(n, appended[0].index), (n + 1, appended[1].index)]);
                    }
                    written
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
    });
    let size = ledgers[0].size("k").unwrap();
    assert_eq!(size, 2 * threads * appends * 2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // Written through ledger 0 (and 1), found through ledger 1's hold.
        let mut hold = ledgers[1].hold("k", size).await.unwrap();
        assert_eq!(hold.size(), size);
        let wanted: Vec<EntryKey> = found.iter().map(|&(n, _)| key(n)).chain([shared, key(size * 10)]).collect();
        let expected: Vec<Option<u64>> =
            found.iter().map(|&(_, index)| Some(index)).chain([Some(size - 1), None]).collect();
        assert_eq!(hold.find(wanted.clone()).await.unwrap(), expected);
        assert_eq!(hold.find(Vec::new()).await.unwrap(), vec![]);
        assert_eq!(ledgers[0].find("k", &wanted).unwrap(), expected);
        assert_eq!(ledgers[1].find("k", &wanted).unwrap(), expected);
        // A held commit's keys: the shared key moves to it; a key given twice
        // in one commit names its later entry.
        let appended = hold
            .commit(vec![keyed(size * 10), draft(size * 10 + 1).with_keys(vec![key(size * 10)])], Vec::new())
            .await
            .unwrap();
        assert_eq!(appended[1].index, size + 1);
        let mut hold = ledgers[0].hold("k", size + 2).await.unwrap();
        assert_eq!(
            hold.find(vec![shared, key(size * 10), key(0)]).await.unwrap(),
            vec![Some(size), Some(size + 1), expected[0]]
        );
        drop(hold.take_fetched());
    });
    assert_eq!(ledgers[1].find("k", &[shared]).unwrap(), vec![Some(size)]);
    assert_eq!(verify_all(ledgers[0].as_ref(), "k").len() as u64, size + 2);
}
