//! The ledger conformance suite: behaviour every [`Ledger`] backend must show.
//! Each check takes a fresh ledger from a backend's factory, so a new backend
//! joins by adding one `backend!` line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use mandate_log::{Checkpoint, Entry, Hash, LogVerifier, MemoryTree, SignedCheckpoint, SignerKey, tree};
use mandate_store::{
    ENTRY_KEYS_MAX, EntryDraft, EntryKey, Ledger, PostgresLedger, SearchPage, SearchQuery, SqliteLedger, StateRow,
    StoreError,
};
use serde_json::json;

mod pg_support;

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
    ledger.create_log("acme", &signer("acme")).unwrap();
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
    ledger.create_log("a", &signer("a")).unwrap();
    ledger.create_log("b", &signer("b")).unwrap();
    assert_eq!(ledger.create_log("a", &signer("a")), Err(StoreError::TenantExists { tenant: "a".into() }));
    assert!(matches!(ledger.create_log("Not A Tenant", &signer("x")), Err(StoreError::InvalidEntry { .. })));
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
    ledger.create_log("busy", &signer("busy")).unwrap();
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
    ledger.create_log("t", &signer("t")).unwrap();
    ledger.append("t", vec![draft(0)]).wait().unwrap();
    // Bad drafts are refused when made, before they reach the writer.
    let body = serde_json::Map::new();
    assert!(EntryDraft::new("test", "yesterday", &body).is_err());
    // The right shape, but no such instant.
    assert!(EntryDraft::new("test", "2026-02-31T12:00:00Z", &body).is_err());
    // A leap second is an instant (counted as :59 when searching).
    assert!(EntryDraft::new("test", "2016-12-31T23:59:60Z", &body).is_ok());
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
    ledger.create_log("p", &signer("p")).unwrap();
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
    ledger.create_log("c", &signer("c")).unwrap();
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
    ledger.create_log("o", &signer("o")).unwrap();
    ledger.append("o", vec![draft(0)]).wait().unwrap();
    let signed = ledger.sign_checkpoint("o", signer("o")).unwrap();
    let _ = Checkpoint::parse_text(&mandate_log::note::Note::parse(signed.note.as_bytes()).unwrap().text).unwrap();
    assert!(signed.note.starts_with("mandate.test/o\n1\n"));
    assert_ne!(signed.checkpoint.root, Hash::ZERO);
}

fn signers_live_with_their_logs(ledger: &dyn Ledger) {
    assert_eq!(ledger.tenants().unwrap(), Vec::<String>::new());
    for tenant in ["zeta", "alpha", "mid"] {
        ledger.create_log(tenant, &signer(tenant)).unwrap();
    }
    assert_eq!(ledger.tenants().unwrap(), ["alpha", "mid", "zeta"]);
    let stored = ledger.signer("mid").unwrap();
    assert_eq!(stored.to_private_text(), signer("mid").to_private_text());
    // A second create neither succeeds nor replaces the key.
    let other = SignerKey::from_seed("mandate.test/mid", [7; 32]).unwrap();
    assert_eq!(ledger.create_log("mid", &other), Err(StoreError::TenantExists { tenant: "mid".into() }));
    assert_eq!(ledger.signer("mid").unwrap().to_private_text(), signer("mid").to_private_text());
    assert_eq!(ledger.signer("nobody").unwrap_err(), StoreError::UnknownTenant { tenant: "nobody".into() });
    // A refused tenant leaves nothing behind.
    assert!(ledger.create_log("Not A Tenant", &other).is_err());
    assert_eq!(ledger.tenants().unwrap().len(), 3);
    // The stored key signs checkpoints that its verifier accepts.
    ledger.append("mid", vec![draft(0)]).wait().unwrap();
    let signed = ledger.sign_checkpoint("mid", Arc::new(ledger.signer("mid").unwrap())).unwrap();
    SignedCheckpoint::open(signed.note.as_bytes(), std::slice::from_ref(signer("mid").verifier())).unwrap();
}

/// What the search tests append: entry `n` of a small log with every kind of
/// term, and times that are not in index order.
struct Searchable {
    entry_type: &'static str,
    identity: Option<&'static str>,
    decision: Option<&'static str>,
    time_us: i64,
}

fn searchable(n: u64) -> (EntryDraft, Searchable) {
    let entry_type = ["decision", "identity.created", "event"][(n % 3) as usize];
    let identity = [Some("agent:a"), Some("agent:b"), Some("user:alice"), None][(n % 4) as usize];
    let decision = (entry_type == "decision").then(|| ["allow", "deny", "pending"][(n / 3 % 3) as usize]);
    // Minutes wander back and forth; microseconds make every time distinct.
    let time = format!("2026-11-22T12:{:02}:00.{:06}Z", (n * 7) % 60, n);
    let time_us = time.parse::<jiff::Timestamp>().unwrap().as_microsecond();
    let serde_json::Value::Object(body) = json!({"n": n}) else { unreachable!() };
    let entry = EntryDraft::new(entry_type, &time, &body).unwrap().with_terms(identity, decision);
    (entry, Searchable { entry_type, identity, decision, time_us })
}

fn matches(entry: &Searchable, query: &SearchQuery) -> bool {
    query.identity.as_deref().is_none_or(|identity| entry.identity == Some(identity))
        && query.entry_type.as_deref().is_none_or(|entry_type| entry.entry_type == entry_type)
        && query.decision.as_deref().is_none_or(|decision| entry.decision == Some(decision))
        && query.since_us.is_none_or(|since| entry.time_us >= since)
        && query.until_us.is_none_or(|until| entry.time_us < until)
}

/// Follows `next` from `query.after` to the end; checks every page's shape and
/// returns the indexes found.
fn search_all(ledger: &dyn Ledger, tenant: &str, query: &SearchQuery) -> Vec<u64> {
    let mut query = query.clone();
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let SearchPage { entries, next } = ledger.search(tenant, &query).unwrap();
        assert!(entries.len() <= query.limit.clamp(1, mandate_store::SEARCH_PAGE_MAX), "{query:?}");
        for entry in &entries {
            assert!(query.after.is_none_or(|after| entry.index > after), "{query:?}");
            assert_eq!(entry.leaf_hash, mandate_log::leaf_hash(&entry.bytes));
            assert_eq!(Entry::parse(&entry.bytes).unwrap().index, entry.index);
            found.push(entry.index);
        }
        if let (Some(next), Some(last)) = (next, entries.last()) {
            assert!(next >= last.index);
        }
        pages += 1;
        assert!(pages < 10_000, "search does not terminate: {query:?}");
        match next {
            Some(next) => {
                assert!(query.after.is_none_or(|after| next > after), "no progress: {query:?}");
                query.after = Some(next);
            }
            None => return found,
        }
    }
}

fn search_log(ledger: &dyn Ledger, tenant: &str, size: u64) -> Vec<Searchable> {
    ledger.create_log(tenant, &signer(tenant)).unwrap();
    let (drafts, model): (Vec<_>, Vec<_>) = (0..size).map(searchable).unzip();
    for chunk in drafts.chunks(50) {
        ledger.append(tenant, chunk.to_vec()).wait().unwrap();
    }
    model
}

fn expected(model: &[Searchable], query: &SearchQuery) -> Vec<u64> {
    let start = query.after.map_or(0, |after| after.saturating_add(1));
    (0..model.len() as u64).filter(|&n| n >= start && matches(&model[n as usize], query)).collect()
}

fn search_finds_exactly_the_matches(ledger: &dyn Ledger) {
    let model = search_log(ledger, "s", 240);
    let at =
        |minute: u64| format!("2026-11-22T12:{minute:02}:00Z").parse::<jiff::Timestamp>().unwrap().as_microsecond();
    let text = |s: &str| Some(s.to_owned());
    let queries = [
        SearchQuery::default(),
        SearchQuery { identity: text("agent:a"), ..SearchQuery::default() },
        SearchQuery { identity: text("user:alice"), ..SearchQuery::default() },
        SearchQuery { identity: text("agent:nobody"), ..SearchQuery::default() },
        SearchQuery { entry_type: text("decision"), ..SearchQuery::default() },
        SearchQuery { entry_type: text("event"), ..SearchQuery::default() },
        SearchQuery { decision: text("deny"), ..SearchQuery::default() },
        SearchQuery { since_us: Some(at(30)), ..SearchQuery::default() },
        SearchQuery { until_us: Some(at(10)), ..SearchQuery::default() },
        SearchQuery { since_us: Some(at(10)), until_us: Some(at(20)), ..SearchQuery::default() },
        // An empty and an inverted range.
        SearchQuery { since_us: Some(at(20)), until_us: Some(at(20)), ..SearchQuery::default() },
        SearchQuery { since_us: Some(at(30)), until_us: Some(at(20)), ..SearchQuery::default() },
        // Combined.
        SearchQuery { identity: text("agent:b"), entry_type: text("decision"), ..SearchQuery::default() },
        SearchQuery { entry_type: text("decision"), decision: text("allow"), ..SearchQuery::default() },
        SearchQuery { identity: text("agent:a"), decision: text("pending"), ..SearchQuery::default() },
        SearchQuery {
            identity: text("user:alice"),
            entry_type: text("decision"),
            decision: text("deny"),
            since_us: Some(at(5)),
            until_us: Some(at(50)),
            ..SearchQuery::default()
        },
        // A filter that exists on no entry of its kind.
        SearchQuery { entry_type: text("event"), decision: text("allow"), ..SearchQuery::default() },
        // From a cursor.
        SearchQuery { after: Some(100), ..SearchQuery::default() },
        SearchQuery { identity: text("agent:a"), after: Some(101), ..SearchQuery::default() },
        SearchQuery { after: Some(239), ..SearchQuery::default() },
        SearchQuery { after: Some(u64::MAX), ..SearchQuery::default() },
    ];
    for query in queries {
        for limit in [1, 7, 100, mandate_store::SEARCH_PAGE_MAX] {
            let query = SearchQuery { limit, ..query.clone() };
            assert_eq!(search_all(ledger, "s", &query), expected(&model, &query), "{query:?}");
        }
    }
    // Every filter above finds something where it should.
    assert!(!expected(&model, &SearchQuery { decision: text("deny"), ..SearchQuery::default() }).is_empty());
    // The first page of a dense search is full, in order, and says where to go on.
    let page = ledger.search("s", &SearchQuery { limit: 10, ..SearchQuery::default() }).unwrap();
    assert_eq!(page.entries.iter().map(|e| e.index).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(page.next, Some(9));
    assert_eq!(page.entries, ledger.entries("s", 0, 10).unwrap());
    // Limits are clamped to 1..=SEARCH_PAGE_MAX.
    assert_eq!(ledger.search("s", &SearchQuery::default()).unwrap().entries.len(), 1);
    let page = ledger.search("s", &SearchQuery { limit: usize::MAX, ..SearchQuery::default() }).unwrap();
    assert_eq!((page.entries.len(), page.next), (240, None));
    assert!(matches!(ledger.search("nobody", &SearchQuery::default()), Err(StoreError::UnknownTenant { .. })));
}

fn search_in_a_larger_log_finds_exactly_the_matches(ledger: &dyn Ledger) {
    let model = search_log(ledger, "big", 10_000);
    let text = |s: &str| Some(s.to_owned());
    let queries = [
        SearchQuery { identity: text("agent:a"), ..SearchQuery::default() },
        SearchQuery { identity: text("agent:b"), decision: text("deny"), ..SearchQuery::default() },
        SearchQuery { identity: text("user:alice"), entry_type: text("event"), ..SearchQuery::default() },
        SearchQuery { decision: text("pending"), ..SearchQuery::default() },
    ];
    for query in queries {
        for after in [None, Some(0), Some(4_094), Some(4_095), Some(4_096), Some(8_191), Some(9_998)] {
            for limit in [7, 1_000] {
                let query = SearchQuery { after, limit, ..query.clone() };
                assert_eq!(search_all(ledger, "big", &query), expected(&model, &query), "{query:?}");
            }
        }
    }
}

fn search_sees_only_its_tenant(ledger: &dyn Ledger) {
    let model = search_log(ledger, "t1", 60);
    search_log(ledger, "t2", 90);
    ledger.create_log("t3", &signer("t3")).unwrap();
    for query in [
        SearchQuery { limit: 1_000, ..SearchQuery::default() },
        SearchQuery { identity: Some("agent:a".into()), limit: 1_000, ..SearchQuery::default() },
        SearchQuery { entry_type: Some("decision".into()), limit: 3, ..SearchQuery::default() },
    ] {
        let found = search_all(ledger, "t1", &query);
        assert_eq!(found, expected(&model, &query));
        for entry in ledger.search("t1", &query).unwrap().entries {
            assert_eq!(Entry::parse(&entry.bytes).unwrap().tenant, "t1");
        }
        assert_eq!(search_all(ledger, "t3", &query), Vec::<u64>::new());
    }
    assert_eq!(ledger.search("t3", &SearchQuery::default()).unwrap(), SearchPage { entries: vec![], next: None });
}

fn a_rare_match_is_reached_in_bounded_pages(ledger: &dyn Ledger) {
    // More entries than one call examines, and the only match at the end.
    let size = mandate_store::SEARCH_EXAMINED_MAX + 5_000;
    ledger.create_log("r", &signer("r")).unwrap();
    let mut start = 0;
    while start < size {
        let end = (start + mandate_store::APPEND_ENTRIES_MAX as u64).min(size);
        let drafts = (start..end)
            .map(|n| {
                let (decision, identity) = if n == size - 1 { ("deny", "agent:rare") } else { ("allow", "agent:busy") };
                draft(n).with_terms(Some(identity), Some(decision))
            })
            .collect();
        ledger.append("r", drafts).wait().unwrap();
        start = end;
    }
    for query in [
        SearchQuery { decision: Some("deny".into()), limit: 10, ..SearchQuery::default() },
        SearchQuery {
            identity: Some("agent:busy".into()),
            decision: Some("deny".into()),
            limit: 10,
            ..SearchQuery::default()
        },
    ] {
        let first = ledger.search("r", &query).unwrap();
        assert_eq!(first.entries, vec![], "one call examines about SEARCH_EXAMINED_MAX entries at most");
        assert!(first.next.is_some_and(|next| next < size - 1), "{:?}", first.next);
    }
    let query = SearchQuery { decision: Some("deny".into()), limit: 10, ..SearchQuery::default() };
    assert_eq!(search_all(ledger, "r", &query), vec![size - 1]);
    // By identity, the rare identity's index leads straight to it.
    let query = SearchQuery { identity: Some("agent:rare".into()), limit: 10, ..SearchQuery::default() };
    let page = ledger.search("r", &query).unwrap();
    assert_eq!((page.entries.len(), page.next), (1, None));
    let query = SearchQuery {
        identity: Some("agent:busy".into()),
        decision: Some("deny".into()),
        limit: 10,
        ..SearchQuery::default()
    };
    assert_eq!(search_all(ledger, "r", &query), Vec::<u64>::new());
}

fn row(kind: &str, key: &str, value: &str) -> StateRow {
    StateRow { kind: kind.into(), key: key.into(), value: Some(value.as_bytes().to_vec()) }
}

fn deleted(kind: &str, key: &str) -> StateRow {
    StateRow { kind: kind.into(), key: key.into(), value: None }
}

/// The rows of `tenant` as `(kind, key, value)` text.
fn rows_of(ledger: &dyn Ledger, tenant: &str, kind: Option<&str>) -> Vec<(String, String, String)> {
    ledger
        .state_rows(tenant, kind)
        .unwrap()
        .into_iter()
        .map(|row| (row.kind, row.key, String::from_utf8(row.value.expect("read rows have values")).unwrap()))
        .collect()
}

fn triples(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter().map(|&(kind, key, value)| (kind.into(), key.into(), value.into())).collect()
}

fn state_rows_are_written_with_their_entries(ledger: &dyn Ledger) {
    ledger.create_log("st", &signer("st")).unwrap();
    assert_eq!(ledger.state_rows("st", None).unwrap(), vec![]);
    let rows = vec![row("budget", "b2", "20"), row("reservation", "r1", "open"), row("budget", "b1", "10")];
    let appended = ledger.append_with_state("st", vec![draft(0), draft(1)], rows).wait().unwrap();
    assert_eq!(appended.len(), 2);
    // Sorted by (kind, key), whatever the order written.
    assert_eq!(
        rows_of(ledger, "st", None),
        triples(&[("budget", "b1", "10"), ("budget", "b2", "20"), ("reservation", "r1", "open")])
    );
    assert_eq!(rows_of(ledger, "st", Some("budget")), triples(&[("budget", "b1", "10"), ("budget", "b2", "20")]));
    assert_eq!(rows_of(ledger, "st", Some("reservation")), triples(&[("reservation", "r1", "open")]));
    assert_eq!(rows_of(ledger, "st", Some("nothing")), triples(&[]));
    // A plain append leaves the rows as they are.
    ledger.append("st", vec![draft(2)]).wait().unwrap();
    assert_eq!(rows_of(ledger, "st", None).len(), 3);
    // Overwrite, delete, delete what is not there, and within one append the
    // later row of a key wins.
    let rows = vec![
        row("budget", "b1", "9"),
        deleted("reservation", "r1"),
        deleted("reservation", "never"),
        row("budget", "b3", "first"),
        row("budget", "b3", "second"),
        row("budget", "b2", "gone soon"),
        deleted("budget", "b2"),
    ];
    ledger.append_with_state("st", vec![draft(3)], rows).wait().unwrap();
    assert_eq!(rows_of(ledger, "st", None), triples(&[("budget", "b1", "9"), ("budget", "b3", "second")]));
    // A deleted row can come back; empty values and any bytes are kept as given.
    let binary = StateRow { kind: "blob".into(), key: "k".into(), value: Some(vec![0, 255, 1, 0]) };
    let empty = StateRow { kind: "blob".into(), key: "empty".into(), value: Some(vec![]) };
    ledger
        .append_with_state("st", vec![draft(4)], vec![row("reservation", "r1", "again"), binary.clone(), empty.clone()])
        .wait()
        .unwrap();
    assert_eq!(ledger.state_rows("st", Some("blob")).unwrap(), vec![empty, binary]);
    assert_eq!(rows_of(ledger, "st", Some("reservation")), triples(&[("reservation", "r1", "again")]));
    // Kinds and keys sort by their bytes.
    ledger
        .append_with_state("st", vec![draft(5)], vec![row("z", "b", "1"), row("z", "B", "2"), row("z", "é", "3")])
        .wait()
        .unwrap();
    assert_eq!(rows_of(ledger, "st", Some("z")), triples(&[("z", "B", "2"), ("z", "b", "1"), ("z", "é", "3")]));
    assert_eq!(ledger.size("st").unwrap(), 6);
    verify_all(ledger, "st");
    assert!(matches!(ledger.state_rows("nobody", None), Err(StoreError::UnknownTenant { .. })));
}

fn a_failed_append_writes_no_rows(ledger: &dyn Ledger) {
    ledger.create_log("f", &signer("f")).unwrap();
    ledger.append_with_state("f", vec![draft(0)], vec![row("budget", "b", "0")]).wait().unwrap();
    // Refused before the writer: rows without entries, bad names, a value too large.
    assert_eq!(
        ledger.append_with_state("f", vec![], vec![row("budget", "b", "1")]).wait(),
        Err(StoreError::RowsWithoutEntries { rows: 1 })
    );
    assert_eq!(
        ledger.append_with_state("f", vec![], vec![deleted("budget", "b")]).wait(),
        Err(StoreError::RowsWithoutEntries { rows: 1 })
    );
    assert!(matches!(ledger.append_with_state("f", vec![], vec![]).wait(), Err(StoreError::AppendSize { count: 0 })));
    let name_max = mandate_store::STATE_NAME_BYTES_MAX;
    let value_max = mandate_store::STATE_VALUE_BYTES_MAX;
    let long = "k".repeat(name_max + 1);
    let too_large = StateRow { kind: "budget".into(), key: "b".into(), value: Some(vec![7; value_max + 1]) };
    for bad in [row("", "b", "1"), row("budget", "", "1"), row(&long, "b", "1"), row("budget", &long, "1"), too_large] {
        let rows = vec![row("budget", "b", "1"), bad];
        let refused = ledger.append_with_state("f", vec![draft(1)], rows).wait();
        assert!(matches!(refused, Err(StoreError::InvalidStateRow { position: 1, .. })), "{refused:?}");
    }
    // Deleting with a bad name is refused too.
    let refused = ledger.append_with_state("f", vec![draft(1)], vec![deleted("budget", "")]).wait();
    assert!(matches!(refused, Err(StoreError::InvalidStateRow { position: 0, .. })), "{refused:?}");
    assert_eq!(ledger.size("f").unwrap(), 1);
    assert_eq!(rows_of(ledger, "f", None), triples(&[("budget", "b", "0")]));
    // The limits themselves are fine.
    let widest = StateRow { kind: "k".repeat(name_max), key: "k".repeat(name_max), value: Some(vec![7; value_max]) };
    ledger.append_with_state("f", vec![draft(1)], vec![widest.clone()]).wait().unwrap();
    assert_eq!(ledger.state_rows("f", Some(&widest.kind)).unwrap(), vec![widest]);
    // Refused by the writer, inside a batch of appends that succeed: an entry
    // that is too large once its head is added, behind a good one.
    let mut body = serde_json::Map::new();
    body.insert("x".into(), json!("y".repeat(mandate_log::entry::ENTRY_BYTES_MAX - 10)));
    let oversized = EntryDraft::new("test.append", "2026-11-22T12:00:00Z", &body).unwrap();
    std::thread::scope(|scope| {
        let failing = scope.spawn(|| {
            ledger
                .append_with_state(
                    "f",
                    vec![draft(100), oversized],
                    vec![row("budget", "b", "from the failed append"), row("budget", "failed", "x")],
                )
                .wait()
        });
        let unknown = scope
            .spawn(|| ledger.append_with_state("nobody", vec![draft(0)], vec![row("budget", "b", "nobody")]).wait());
        let fine: Vec<_> = (0..8)
            .map(|n| {
                scope.spawn(move || {
                    ledger.append_with_state("f", vec![draft(n)], vec![row("fine", &format!("{n}"), "ok")]).wait()
                })
            })
            .collect();
        assert!(matches!(failing.join().unwrap(), Err(StoreError::InvalidEntry { position: 1, .. })));
        assert!(matches!(unknown.join().unwrap(), Err(StoreError::UnknownTenant { .. })));
        for append in fine {
            append.join().unwrap().unwrap();
        }
    });
    assert_eq!(ledger.size("f").unwrap(), 10);
    assert_eq!(rows_of(ledger, "f", Some("budget")), triples(&[("budget", "b", "0")]));
    assert_eq!(rows_of(ledger, "f", Some("fine")).len(), 8);
    let (lines, _) = verify_all(ledger, "f");
    assert!(lines.iter().all(|line| Entry::parse(line).unwrap().body["n"] != json!(100)));
}

fn state_rows_are_per_tenant(ledger: &dyn Ledger) {
    for tenant in ["ta", "tb", "tc"] {
        ledger.create_log(tenant, &signer(tenant)).unwrap();
    }
    ledger
        .append_with_state("ta", vec![draft(0)], vec![row("budget", "shared", "a"), row("budget", "only-a", "a")])
        .wait()
        .unwrap();
    ledger.append_with_state("tb", vec![draft(0)], vec![row("budget", "shared", "b")]).wait().unwrap();
    assert_eq!(rows_of(ledger, "ta", None), triples(&[("budget", "only-a", "a"), ("budget", "shared", "a")]));
    assert_eq!(rows_of(ledger, "tb", None), triples(&[("budget", "shared", "b")]));
    assert_eq!(rows_of(ledger, "tc", None), triples(&[]));
    // Deleting in one tenant leaves the other's row of the same name.
    ledger
        .append_with_state("tb", vec![draft(1)], vec![deleted("budget", "shared"), deleted("budget", "only-a")])
        .wait()
        .unwrap();
    assert_eq!(rows_of(ledger, "ta", None), triples(&[("budget", "only-a", "a"), ("budget", "shared", "a")]));
    assert_eq!(rows_of(ledger, "tb", None), triples(&[]));
}

fn concurrent_rows_end_with_the_last_write_in_log_order(ledger: &dyn Ledger) {
    ledger.create_log("cr", &signer("cr")).unwrap();
    let threads = 16;
    let appends_per_thread = 40;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for i in 0..appends_per_thread {
                    // The append's own number, unique across threads; its
                    // index is only known once the writer assigns it.
                    let n = thread * appends_per_thread + i;
                    let drafts = (0..1 + n % 3).map(|_| draft(n)).collect();
                    let rows = vec![
                        row("counter", "counter", &n.to_string()),
                        row("thread", &format!("thread-{thread:02}"), &i.to_string()),
                        row("append", &format!("{n:04}"), &n.to_string()),
                    ];
                    ledger.append_with_state("cr", drafts, rows).wait().unwrap();
                }
            });
        }
    });
    let (lines, _) = verify_all(ledger, "cr");
    let numbers: Vec<u64> = lines.iter().map(|line| Entry::parse(line).unwrap().body["n"].as_u64().unwrap()).collect();
    // The counter holds the number of the append that is last in the log.
    let last = *numbers.last().unwrap();
    assert_eq!(rows_of(ledger, "cr", Some("counter")), triples(&[("counter", "counter", &last.to_string())]));
    // Each thread's row holds its last append (a thread's appends are in order).
    let threads_rows = rows_of(ledger, "cr", Some("thread"));
    assert_eq!(threads_rows.len(), threads as usize);
    for (thread, (_, _, value)) in threads_rows.iter().enumerate() {
        assert_eq!(value, &(appends_per_thread - 1).to_string(), "thread {thread}");
    }
    // Every append left its row.
    let appends = rows_of(ledger, "cr", Some("append"));
    assert_eq!(appends.len(), (threads * appends_per_thread) as usize);
    for (n, (_, key, value)) in appends.iter().enumerate() {
        assert_eq!((key.as_str(), value.as_str()), (format!("{n:04}").as_str(), n.to_string().as_str()));
    }
    assert_eq!(ledger.state_rows("cr", None).unwrap().len(), 1 + threads as usize + appends.len());
}

/// Runs `work` on a small runtime: holds are futures.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(work)
}

fn a_hold_reads_what_came_before_and_commits_at_its_size(ledger: &dyn Ledger) {
    ledger.create_log("h", &signer("h")).unwrap();
    let before = ledger.append("h", (0..3).map(draft).collect()).wait().unwrap();
    block_on(async {
        let mut hold = ledger.hold("h", 1).await.unwrap();
        assert_eq!(hold.size(), 3);
        let fetched = hold.take_fetched();
        assert_eq!(
            fetched.iter().map(|e| (e.index, e.leaf_hash)).collect::<Vec<_>>(),
            vec![(1, before[1].leaf_hash), (2, before[2].leaf_hash)]
        );
        assert!(hold.take_fetched().is_empty(), "taken once");
        let seen = hold.entries(1, 3).await.unwrap();
        assert_eq!(
            seen.iter().map(|e| (e.index, e.leaf_hash)).collect::<Vec<_>>(),
            vec![(1, before[1].leaf_hash), (2, before[2].leaf_hash)]
        );
        assert!(matches!(hold.entries(2, 4).await, Err(StoreError::EntryRange { .. })), "beyond the held size");
        let appended = hold.commit(vec![draft(3), draft(4)], vec![row("k", "a", "1")]).await.unwrap();
        assert_eq!(appended.iter().map(|a| a.index).collect::<Vec<_>>(), vec![3, 4]);
    });
    let (lines, _) = verify_all(ledger, "h");
    assert_eq!(lines.len(), 5);
    assert_eq!(rows_of(ledger, "h", None), triples(&[("k", "a", "1")]));
    assert!(matches!(block_on(ledger.hold("nobody", 0)), Err(StoreError::UnknownTenant { .. })));
}

fn holds_exclude_each_other(ledger: &dyn Ledger) {
    ledger.create_log("x", &signer("x")).unwrap();
    ledger.append("x", vec![draft(0)]).wait().unwrap();
    block_on(async {
        let first = ledger.hold("x", 0).await.unwrap();
        assert_eq!(first.size(), 1);
        let waiting = ledger.hold("x", 0);
        let second = tokio::spawn(waiting);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "a second hold was granted while the first was held");
        // Another tenant's log is not held.
        ledger.create_log("y", &signer("y")).unwrap();
        drop(ledger.hold("y", 0).await.unwrap());
        first.commit(vec![draft(1), draft(2)], Vec::new()).await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.size(), 3, "the second hold sees the first one's commit");
        assert_eq!(second.commit(vec![draft(3)], Vec::new()).await.unwrap()[0].index, 3);
    });
    assert_eq!(verify_all(ledger, "x").0.len(), 4);
}

fn a_dropped_hold_writes_nothing_and_releases(ledger: &dyn Ledger) {
    ledger.create_log("d", &signer("d")).unwrap();
    block_on(async {
        let hold = ledger.hold("d", 0).await.unwrap();
        drop(hold);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), ledger.hold("d", 0)).await;
        let again = again.expect("a dropped hold is released").unwrap();
        assert_eq!(again.size(), 0);
        // A commit that fails (a bad row) writes nothing and releases too.
        let bad = again.commit(vec![draft(0)], vec![row("", "k", "v")]).await;
        assert!(matches!(bad, Err(StoreError::InvalidStateRow { .. })));
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(5), ledger.hold("d", 0)).await.unwrap().unwrap();
        assert_eq!(third.size(), 0);
    });
    assert_eq!(ledger.size("d").unwrap(), 0);
}

/// A plain append never lands inside a hold: either it waits for the hold's
/// commit (PostgreSQL's row lock), or it lands first and the commit fails as
/// stale (SQLite, where the data directory's lock keeps other servers out).
fn a_plain_append_never_lands_inside_a_hold(ledger: &dyn Ledger) {
    ledger.create_log("p", &signer("p")).unwrap();
    let hold = block_on(ledger.hold("p", 0)).unwrap();
    assert_eq!(hold.size(), 0);
    let (held, plain) = std::thread::scope(|scope| {
        let plain = scope.spawn(|| ledger.append("p", vec![draft(100)]).wait());
        std::thread::sleep(std::time::Duration::from_millis(200));
        let held = hold.commit(vec![draft(0)], Vec::new()).wait();
        (held, plain.join().unwrap())
    });
    match (held, plain) {
        (Ok(held), Ok(plain)) => assert_eq!((held[0].index, plain[0].index), (0, 1)),
        (Err(StoreError::Stale { held: 0, size: 1, .. }), Ok(plain)) => assert_eq!(plain[0].index, 0),
        other => panic!("unexpected outcome: {other:?}"),
    }
    verify_all(ledger, "p");
}

fn key(n: u8) -> EntryKey {
    [n; 16]
}

fn keyed(n: u64, keys: &[u8]) -> EntryDraft {
    draft(n).with_keys(keys.iter().map(|k| key(*k)).collect())
}

fn keys_find_the_newest_entry_stored_with_them(ledger: &dyn Ledger) {
    ledger.create_log("k", &signer("k")).unwrap();
    ledger.create_log("other", &signer("other")).unwrap();
    assert_eq!(ledger.keyed_from("k").unwrap(), 0, "a new log is keyed from its start");
    ledger.append("k", vec![keyed(0, &[1, 2]), draft(1), keyed(2, &[3])]).wait().unwrap();
    ledger.append("other", vec![keyed(0, &[1, 9])]).wait().unwrap();
    assert_eq!(
        ledger.find("k", &[key(1), key(2), key(3), key(9), key(4)]).unwrap(),
        vec![Some(0), Some(0), Some(2), None, None]
    );
    assert_eq!(ledger.find("other", &[key(1), key(3)]).unwrap(), vec![Some(0), None], "keys are per tenant");
    // The same key again: the later entry is the one found.
    ledger.append("k", vec![keyed(3, &[1])]).wait().unwrap();
    assert_eq!(ledger.find("k", &[key(1), key(2)]).unwrap(), vec![Some(3), Some(0)]);
    assert_eq!(ledger.find("k", &[]).unwrap(), Vec::<Option<u64>>::new());
    assert!(matches!(ledger.find("nobody", &[key(1)]), Err(StoreError::UnknownTenant { .. })));
    // Too many keys: the append fails whole, and writes no key.
    let many: Vec<u8> = (10..10 + ENTRY_KEYS_MAX as u8 + 1).collect();
    let refused = ledger.append("k", vec![keyed(4, &[20]), keyed(5, &many)]).wait();
    assert!(matches!(refused, Err(StoreError::InvalidEntry { position: 1, .. })), "{refused:?}");
    assert_eq!(ledger.size("k").unwrap(), 4);
    assert_eq!(ledger.find("k", &[key(20), key(10)]).unwrap(), vec![None, None]);
}

fn keys_are_found_through_a_hold_and_backfilled_once(ledger: &dyn Ledger) {
    ledger.create_log("hk", &signer("hk")).unwrap();
    ledger.append("hk", vec![keyed(0, &[1]), draft(1), draft(2)]).wait().unwrap();
    block_on(async {
        let mut hold = ledger.hold("hk", 3).await.unwrap();
        assert_eq!(hold.find(vec![key(1), key(2)]).await.unwrap(), vec![Some(0), None]);
        hold.commit(vec![keyed(3, &[2])], Vec::new()).await.unwrap();
        let mut hold = ledger.hold("hk", 4).await.unwrap();
        assert_eq!(hold.find(vec![key(2), key(1)]).await.unwrap(), vec![Some(3), Some(0)], "the held commit's key");
    });
    // A backfill keeps the newer entry where a key is stored already.
    ledger.backfill_keys("hk", vec![(key(2), 1), (key(5), 2), (key(1), 1)]).unwrap();
    assert_eq!(ledger.find("hk", &[key(2), key(5), key(1)]).unwrap(), vec![Some(3), Some(2), Some(1)]);
    ledger.backfill_keys("hk", vec![(key(5), 2)]).unwrap();
    assert_eq!(ledger.keyed_from("hk").unwrap(), 0);
    assert!(ledger.backfill_keys("hk", vec![(key(6), 4)]).is_err(), "no entry 4 to key");
    assert_eq!(ledger.find("hk", &[key(6)]).unwrap(), vec![None]);
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
            #[test]
            fn signers_live_with_their_logs() {
                with_ledger(super::signers_live_with_their_logs)
            }
            #[test]
            fn search_finds_exactly_the_matches() {
                with_ledger(super::search_finds_exactly_the_matches)
            }
            #[test]
            fn search_in_a_larger_log_finds_exactly_the_matches() {
                with_ledger(super::search_in_a_larger_log_finds_exactly_the_matches)
            }
            #[test]
            fn search_sees_only_its_tenant() {
                with_ledger(super::search_sees_only_its_tenant)
            }
            #[test]
            fn a_rare_match_is_reached_in_bounded_pages() {
                with_ledger(super::a_rare_match_is_reached_in_bounded_pages)
            }
            #[test]
            fn state_rows_are_written_with_their_entries() {
                with_ledger(super::state_rows_are_written_with_their_entries)
            }
            #[test]
            fn a_failed_append_writes_no_rows() {
                with_ledger(super::a_failed_append_writes_no_rows)
            }
            #[test]
            fn state_rows_are_per_tenant() {
                with_ledger(super::state_rows_are_per_tenant)
            }
            #[test]
            fn concurrent_rows_end_with_the_last_write_in_log_order() {
                with_ledger(super::concurrent_rows_end_with_the_last_write_in_log_order)
            }
            #[test]
            fn a_hold_reads_what_came_before_and_commits_at_its_size() {
                with_ledger(super::a_hold_reads_what_came_before_and_commits_at_its_size)
            }
            #[test]
            fn holds_exclude_each_other() {
                with_ledger(super::holds_exclude_each_other)
            }
            #[test]
            fn a_dropped_hold_writes_nothing_and_releases() {
                with_ledger(super::a_dropped_hold_writes_nothing_and_releases)
            }
            #[test]
            fn a_plain_append_never_lands_inside_a_hold() {
                with_ledger(super::a_plain_append_never_lands_inside_a_hold)
            }
            #[test]
            fn keys_find_the_newest_entry_stored_with_them() {
                with_ledger(super::keys_find_the_newest_entry_stored_with_them)
            }
            #[test]
            fn keys_are_found_through_a_hold_and_backfilled_once() {
                with_ledger(super::keys_are_found_through_a_hold_and_backfilled_once)
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

/// A ledger on a fresh schema of the test database (see `pg_support`).
fn postgres() -> (pg_support::TestSchema, PostgresLedger) {
    let schema = pg_support::TestSchema::new();
    let ledger = PostgresLedger::connect(&schema.url()).unwrap();
    (schema, ledger)
}

backend!(postgres_backend, postgres());
