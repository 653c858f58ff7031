//! The ledger conformance suite: behaviour every [`Ledger`] backend must show.
//! Each check takes a fresh ledger from a backend's factory, so a new backend
//! joins by adding one `backend!` line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use mandate_log::{Checkpoint, Entry, Hash, LogVerifier, MemoryTree, SignedCheckpoint, SignerKey, tree};
use mandate_store::{EntryDraft, Ledger, SqliteLedger, StoreError};
use serde_json::json;

fn draft(n: u64) -> EntryDraft {
    let serde_json::Value::Object(body) = json!({"n": n, "note": "conformance"}) else { unreachable!() };
    EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap()
}

fn signer(tenant: &str) -> Arc<SignerKey> {
    Arc::new(SignerKey::from_seed(&format!("mandate.test/{tenant}"), [42; 32]).unwrap())
}

/// Reads a whole log and checks it the way `mandate verify` does.
fn verify_all(ledger: &dyn Ledger, tenant: &str) -> (Vec<Vec<u8>>, MemoryTree) {
    let size = ledger.size(tenant).unwrap();
    let mut verifier = LogVerifier::new(&[]);
    let mut tree = MemoryTree::new();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::ENTRIES_PAGE_MAX).min(size);
        for stored in ledger.entries(tenant, start, end).unwrap() {
            verifier.push(&stored.bytes).unwrap();
            assert_eq!(stored.leaf_hash, mandate_log::leaf_hash(&stored.bytes));
            tree.push(stored.leaf_hash);
            lines.push(stored.bytes);
        }
        start = end;
    }
    let verified = verifier.finish(None, None).unwrap();
    assert_eq!(verified.size, size);
    assert_eq!(ledger.root(tenant, size).unwrap(), verified.root);
    (lines, tree)
}

fn appends_are_gapless_chained_and_readable(ledger: &dyn Ledger) {
    ledger.create_log("acme").unwrap();
    let appended = ledger.append("acme", (0..5).map(draft).collect()).wait().unwrap();
    assert_eq!(appended.iter().map(|a| a.index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    let more = ledger.append("acme", vec![draft(5)]).wait().unwrap();
    assert_eq!(more[0].index, 5);
    let (lines, _) = verify_all(ledger, "acme");
    let entry = Entry::parse(&lines[5]).unwrap();
    assert_eq!((entry.index, entry.tenant.as_str(), entry.prev), (5, "acme", appended[4].leaf_hash));
    assert_eq!(entry.body["n"], json!(5));
}

fn tenants_have_separate_logs(ledger: &dyn Ledger) {
    ledger.create_log("a").unwrap();
    ledger.create_log("b").unwrap();
    assert_eq!(ledger.create_log("a"), Err(StoreError::TenantExists { tenant: "a".into() }));
    assert!(matches!(ledger.create_log("Not A Tenant"), Err(StoreError::InvalidEntry { .. })));
    ledger.append("a", vec![draft(0), draft(1)]).wait().unwrap();
    ledger.append("b", vec![draft(0)]).wait().unwrap();
    assert_eq!((ledger.size("a").unwrap(), ledger.size("b").unwrap()), (2, 1));
    assert_eq!(
        ledger.append("nobody", vec![draft(0)]).wait(),
        Err(StoreError::UnknownTenant { tenant: "nobody".into() })
    );
    assert!(matches!(ledger.size("nobody"), Err(StoreError::UnknownTenant { .. })));
    verify_all(ledger, "a");
    verify_all(ledger, "b");
}

fn concurrent_appends_are_all_committed_contiguously(ledger: &dyn Ledger) {
    ledger.create_log("busy").unwrap();
    let threads = 16;
    let appends_per_thread = 50;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for i in 0..appends_per_thread {
                    let first = (thread * appends_per_thread + i) * 3;
                    let appended =
                        ledger.append("busy", vec![draft(first), draft(first + 1), draft(first + 2)]).wait().unwrap();
                    // One append's entries stay together.
                    assert_eq!(appended[1].index, appended[0].index + 1);
                    assert_eq!(appended[2].index, appended[0].index + 2);
                }
            });
        }
    });
    assert_eq!(ledger.size("busy").unwrap(), threads * appends_per_thread * 3);
    let (lines, _) = verify_all(ledger, "busy");
    let mut seen: Vec<u64> = lines.iter().map(|line| Entry::parse(line).unwrap().body["n"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..threads * appends_per_thread * 3).collect::<Vec<_>>());
}

fn a_bad_append_fails_alone_and_leaves_nothing(ledger: &dyn Ledger) {
    ledger.create_log("t").unwrap();
    ledger.append("t", vec![draft(0)]).wait().unwrap();
    // Bad drafts are refused when made, before they reach the writer.
    let body = serde_json::Map::new();
    assert!(EntryDraft::new("test", "yesterday", &body).is_err());
    assert!(EntryDraft::new("Not A Type", "2026-11-22T12:00:00Z", &body).is_err());
    let mut huge = serde_json::Map::new();
    huge.insert("x".into(), json!("y".repeat(70_000)));
    assert!(EntryDraft::new("test", "2026-11-22T12:00:00Z", &huge).is_err());
    let mut unsafe_number = serde_json::Map::new();
    unsafe_number.insert("x".into(), json!(1u64 << 60));
    assert!(EntryDraft::new("test", "2026-11-22T12:00:00Z", &unsafe_number).is_err());
    assert!(matches!(ledger.append("t", vec![]).wait(), Err(StoreError::AppendSize { count: 0 })));
    let too_many = (0..=mandate_store::APPEND_ENTRIES_MAX as u64).map(draft).collect();
    assert!(matches!(ledger.append("t", too_many).wait(), Err(StoreError::AppendSize { .. })));
    // An append that fails in the writer does not take its batch down with it.
    std::thread::scope(|scope| {
        let failing = scope.spawn(|| ledger.append("nobody", vec![draft(1)]).wait());
        let fine: Vec<_> = (1..9).map(|n| scope.spawn(move || ledger.append("t", vec![draft(n)]).wait())).collect();
        assert!(matches!(failing.join().unwrap(), Err(StoreError::UnknownTenant { .. })));
        for append in fine {
            append.join().unwrap().unwrap();
        }
    });
    assert_eq!(ledger.size("t").unwrap(), 9);
    verify_all(ledger, "t");
}

fn proofs_match_an_in_memory_tree(ledger: &dyn Ledger) {
    ledger.create_log("p").unwrap();
    for chunk in 0..10 {
        ledger.append("p", (0..37).map(|i| draft(chunk * 37 + i)).collect()).wait().unwrap();
    }
    let (lines, tree) = verify_all(ledger, "p");
    for size in [1u64, 2, 3, 7, 8, 64, 100, 255, 256, 370] {
        let root = ledger.root("p", size).unwrap();
        assert_eq!(root, tree.root_at(size).unwrap());
        for index in (0..size).step_by(7).chain([size - 1]) {
            let proof = ledger.inclusion_proof("p", index, size).unwrap();
            assert_eq!(proof, tree.inclusion_proof(index, size).unwrap());
            let leaf = mandate_log::leaf_hash(&lines[index as usize]);
            assert!(tree::verify_inclusion(index, size, &leaf, &proof, &root));
        }
        for from in [0, 1, size / 2, size] {
            let proof = ledger.consistency_proof("p", from, size).unwrap();
            assert_eq!(proof, tree.consistency_proof(from, size).unwrap());
            assert!(tree::verify_consistency(from, size, &tree.root_at(from).unwrap(), &root, &proof));
        }
    }
    assert!(matches!(ledger.inclusion_proof("p", 370, 370), Err(StoreError::Range(_))));
    assert!(matches!(ledger.inclusion_proof("p", 0, 371), Err(StoreError::EntryRange { .. })));
    assert!(matches!(ledger.consistency_proof("p", 10, 5), Err(StoreError::Range(_))));
    assert!(matches!(ledger.entries("p", 5, 400), Err(StoreError::EntryRange { .. })));
    assert!(matches!(ledger.entries("p", 6, 5), Err(StoreError::EntryRange { .. })));
}

fn checkpoints_are_signed_consistent_and_persisted(ledger: &dyn Ledger) {
    ledger.create_log("c").unwrap();
    let key = signer("c");
    assert_eq!(ledger.latest_checkpoint("c").unwrap(), None);
    let empty = ledger.sign_checkpoint("c", key.clone()).unwrap();
    assert_eq!(empty.checkpoint.size, 0);
    ledger.append("c", (0..10).map(draft).collect()).wait().unwrap();
    let first = ledger.sign_checkpoint("c", key.clone()).unwrap();
    assert_eq!(first.checkpoint.size, 10);
    assert_eq!(first.checkpoint.root, ledger.root("c", 10).unwrap());
    let opened = SignedCheckpoint::open(first.note.as_bytes(), std::slice::from_ref(key.verifier())).unwrap();
    assert_eq!(opened.checkpoint, first.checkpoint);
    // Nothing appended: the same checkpoint comes back.
    assert_eq!(ledger.sign_checkpoint("c", key.clone()).unwrap(), first);
    ledger.append("c", (10..25).map(draft).collect()).wait().unwrap();
    let second = ledger.sign_checkpoint("c", key.clone()).unwrap();
    assert_eq!(ledger.latest_checkpoint("c").unwrap(), Some(second.clone()));
    let proof = ledger.consistency_proof("c", 10, 25).unwrap();
    assert!(tree::verify_consistency(10, 25, &first.checkpoint.root, &second.checkpoint.root, &proof));
}

fn a_checkpoint_needs_a_matching_origin(ledger: &dyn Ledger) {
    ledger.create_log("o").unwrap();
    ledger.append("o", vec![draft(0)]).wait().unwrap();
    let signed = ledger.sign_checkpoint("o", signer("o")).unwrap();
    let _ = Checkpoint::parse_text(&mandate_log::note::Note::parse(signed.note.as_bytes()).unwrap().text).unwrap();
    assert!(signed.note.starts_with("mandate.test/o\n1\n"));
    assert_ne!(signed.checkpoint.root, Hash::ZERO);
}

macro_rules! backend {
    ($module:ident, $factory:expr) => {
        mod $module {
            use super::*;

            fn with_ledger(check: fn(&dyn Ledger)) {
                let (_guard, ledger) = $factory;
                check(&ledger);
            }

            #[test]
            fn appends_are_gapless_chained_and_readable() {
                with_ledger(super::appends_are_gapless_chained_and_readable)
            }
            #[test]
            fn tenants_have_separate_logs() {
                with_ledger(super::tenants_have_separate_logs)
            }
            #[test]
            fn concurrent_appends_are_all_committed_contiguously() {
                with_ledger(super::concurrent_appends_are_all_committed_contiguously)
            }
            #[test]
            fn a_bad_append_fails_alone_and_leaves_nothing() {
                with_ledger(super::a_bad_append_fails_alone_and_leaves_nothing)
            }
            #[test]
            fn proofs_match_an_in_memory_tree() {
                with_ledger(super::proofs_match_an_in_memory_tree)
            }
            #[test]
            fn checkpoints_are_signed_consistent_and_persisted() {
                with_ledger(super::checkpoints_are_signed_consistent_and_persisted)
            }
            #[test]
            fn a_checkpoint_needs_a_matching_origin() {
                with_ledger(super::a_checkpoint_needs_a_matching_origin)
            }
        }
    };
}

fn sqlite() -> (tempfile::TempDir, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("mandate.db")).unwrap();
    (dir, ledger)
}

backend!(sqlite_backend, sqlite());
