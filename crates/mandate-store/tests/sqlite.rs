//! Behaviour of the SQLite backend beyond the conformance suite: what survives
//! a reopen, and what it refuses to sign when its files were edited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use mandate_log::{Entry, LogVerifier, SignerKey};
use mandate_store::{EntryDraft, Ledger, SqliteLedger, StoreError};
use serde_json::json;

fn draft(n: u64) -> EntryDraft {
    let serde_json::Value::Object(body) = json!({"n": n}) else { unreachable!() };
    EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap()
}

fn signer() -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed("mandate.test/t", [3; 32]).unwrap())
}

#[test]
fn the_log_and_its_checkpoint_survive_a_reopen_and_keep_chaining() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (last_leaf, checkpoint) = {
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.create_log("t").unwrap();
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
    ledger.create_log("t").unwrap();
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
    ledger.create_log("t").unwrap();
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
