//! Store benchmarks: durable appends from concurrent writers (group commit),
//! proofs and searches on a large log, and packing a body with each of the
//! store's dictionaries.
//!
//! ```sh
//! cargo bench -p mandate-store --bench store
//! cargo bench -p mandate-store --bench store -- pack
//! MANDATE_BENCH_PROOF_SIZE=10000000 cargo bench -p mandate-store --bench store -- 'proof|search'
//! ```
//!
//! The proof and search benchmarks build their log once and keep it in
//! `target/bench-data/proofs-<size>.db` for later runs.
//!
//! The `postgres_append` group needs the test database
//! (`MANDATE_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and is skipped when it cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mandate_log::SignerKey;
use mandate_store::{EntryDraft, Ledger, PostgresLedger, SearchQuery, SqliteLedger};
use serde_json::json;

#[path = "../tests/pg_support/mod.rs"]
mod pg_support;

fn signer() -> SignerKey {
    SignerKey::from_seed("mandate.bench/bench", [1; 32]).unwrap()
}

/// A decision entry of about 560 bytes, as the authority engine will write,
/// with its search terms: one of 16 identities, and one decision in 100 a deny.
fn decision(n: u64) -> EntryDraft {
    let identity = format!("agent:buyer{:02}", n % 16);
    let decision = if n.is_multiple_of(100) { "deny" } else { "allow" };
    let serde_json::Value::Object(body) = json!({
        "decision": decision,
        "decision_id": format!("01JD7Q8R3T{n:016}"),
        "identity": identity,
        "chain": ["agent:buyer", "agent:planner", "user:alice"],
        "action": "payments.charge",
        "resource": format!("merchant://books/{n}"),
        "amounts": {"usd_cents": 4_723},
        "reasons": [],
        "policies": {"determining": ["allow-books"], "errors": []},
        "input_digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    }) else {
        unreachable!()
    };
    EntryDraft::new("decision", "2026-11-22T12:00:00.123456Z", &body)
        .unwrap()
        .with_terms(Some(&identity), Some(decision))
}

fn concurrent_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for writers in [1u64, 16, 64, 256] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("durable_concurrent_writers", writers), &writers, |b, &writers| {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Arc::new(SqliteLedger::open(dir.path().join("bench.db")).unwrap());
            ledger.create_log("bench", &signer()).unwrap();
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(writers);
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for writer in 0..writers {
                        let ledger = ledger.clone();
                        scope.spawn(move || {
                            for i in 0..per_writer {
                                ledger.append("bench", vec![decision(writer * per_writer + i)]).wait().unwrap();
                            }
                        });
                    }
                });
                started.elapsed().mul_f64(iters as f64 / (per_writer * writers) as f64)
            });
        });
    }
    // The server's shape: many tasks awaiting their tickets on a small runtime.
    for tasks in [64u64, 512] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("durable_concurrent_tasks", tasks), &tasks, |b, &tasks| {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Arc::new(SqliteLedger::open(dir.path().join("bench.db")).unwrap());
            ledger.create_log("bench", &signer()).unwrap();
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks);
                let started = Instant::now();
                runtime.block_on(async {
                    let handles: Vec<_> = (0..tasks)
                        .map(|task| {
                            let ledger = ledger.clone();
                            tokio::spawn(async move {
                                for i in 0..per_task {
                                    ledger.append("bench", vec![decision(task * per_task + i)]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.unwrap();
                    }
                });
                started.elapsed().mul_f64(iters as f64 / (per_task * tasks) as f64)
            });
        });
    }
    group.finish();
}

/// Durable appends on PostgreSQL from two ledgers on one database (as two
/// server instances), each with many tasks awaiting their tickets.
fn postgres_appends(c: &mut Criterion) {
    let Ok(schema) = std::panic::catch_unwind(pg_support::TestSchema::new) else {
        eprintln!("postgres_append: the test database cannot be reached; skipped");
        return;
    };
    let mut group = c.benchmark_group("postgres_append");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    let ledgers: Vec<Arc<PostgresLedger>> =
        (0..2).map(|_| Arc::new(PostgresLedger::connect(&schema.url()).unwrap())).collect();
    ledgers[0].create_log("bench", &signer()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    for tasks in [64u64, 512] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("two_ledgers_concurrent_tasks", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks);
                let started = Instant::now();
                runtime.block_on(async {
                    let handles: Vec<_> = (0..tasks)
                        .map(|task| {
                            let ledger = ledgers[(task % 2) as usize].clone();
                            tokio::spawn(async move {
                                for i in 0..per_task {
                                    ledger.append("bench", vec![decision(task * per_task + i)]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.unwrap();
                    }
                });
                started.elapsed().mul_f64(iters as f64 / (per_task * tasks) as f64)
            });
        });
    }
    group.finish();
    drop(ledgers);
    drop(schema);
}

fn proof_log(size: u64) -> SqliteLedger {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = SqliteLedger::open(dir.join(format!("proofs-{size}.db"))).unwrap();
    if ledger.size("bench").is_err() {
        ledger.create_log("bench", &signer()).unwrap();
    }
    let have = ledger.size("bench").unwrap();
    if have < size {
        eprintln!("building a log of {size} entries (once; kept in target/bench-data)…");
        let started = Instant::now();
        // Several appends in flight so that the writer commits large batches.
        let ledger = &ledger;
        std::thread::scope(|scope| {
            let chunk = 1_000;
            let writers = 4;
            for writer in 0..writers {
                scope.spawn(move || {
                    let mut start = have + writer * chunk;
                    while start < size {
                        let end = (start + chunk).min(size);
                        let drafts = (start..end).map(decision).collect();
                        ledger.append("bench", drafts).wait().unwrap();
                        start += writers * chunk;
                    }
                });
            }
        });
        eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    }
    ledger
}

fn proofs(c: &mut Criterion) {
    let ledger = proof_log(proof_log_size());
    let size = ledger.size("bench").unwrap();
    let mut group = c.benchmark_group("proof");
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("inclusion", size), |b| {
        b.iter(|| {
            n = (n + 7_919_993) % size;
            ledger.inclusion_proof("bench", n, size).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("consistency", size), |b| {
        b.iter(|| {
            n = (n + 7_919_993) % size;
            ledger.consistency_proof("bench", n.max(1), size).unwrap()
        })
    });
    group.finish();
}

fn proof_log_size() -> u64 {
    std::env::var("MANDATE_BENCH_PROOF_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}

/// Searches from random cursors: a dense page (one identity in 16), a sparse
/// one (that identity's denies, one entry in 400), and the worst cases, filters
/// that match nothing, with and without an identity, where one call examines
/// about `SEARCH_EXAMINED_MAX` candidates and returns none.
fn searches(c: &mut Criterion) {
    let ledger = proof_log(proof_log_size());
    let size = ledger.size("bench").unwrap();
    let mut group = c.benchmark_group("search");
    let text = |s: &str| Some(s.to_owned());
    let cases = [
        ("identity_page_100", SearchQuery { identity: text("agent:buyer07"), ..SearchQuery::default() }),
        (
            "identity_sparse_page_100",
            SearchQuery { identity: text("agent:buyer04"), decision: text("deny"), ..SearchQuery::default() },
        ),
        (
            // n ≡ 7 (mod 16) is odd, never a multiple of 100: no denies.
            "identity_no_match",
            SearchQuery { identity: text("agent:buyer07"), decision: text("deny"), ..SearchQuery::default() },
        ),
        ("no_match", SearchQuery { decision: text("pending"), ..SearchQuery::default() }),
    ];
    let mut n = 0u64;
    for (name, query) in cases {
        group.bench_function(BenchmarkId::new(name, size), |b| {
            b.iter(|| {
                n = (n + 7_919_993) % size;
                ledger.search("bench", &SearchQuery { after: Some(n), limit: 100, ..query.clone() }).unwrap()
            })
        });
    }
    group.finish();
}

/// A decision body of `mandate bench` (944 bytes, canonical), as of 2026-12-04.
const BENCH_DECISION_BODY: &str = r#"{"approval":null,"budgets":[{"after":9,"before":8,"dimension":"usd_cents","id":"bench-8c558191-agent-bench-8c558191-sub","limit":1000000000000},{"after":9,"before":8,"dimension":"usd_cents","id":"bench-8c558191-agent-bench-8c558191","limit":1000000000000},{"after":9,"before":8,"dimension":"usd_cents","id":"bench-8c558191-user-bench-8c558191","limit":1000000000000}],"chain":["agent:bench-8c558191-sub","agent:bench-8c558191","user:bench-8c558191"],"decision":"allow","decision_id":"01a24277-2ff7-71ee-8730-e1c5313a26d2","policies":{"determining":["permit-team"],"errors":[]},"policy_version":"b18ee51f2ea9a304a85f8556c06dcc030b90b74a6bc9cd012de0ff5e034edbc6","reasons":[],"request":{"action":"payments.charge","amounts":{"usd_cents":1},"context":{"merchant":"books"},"identity":"agent:bench-8c558191-sub","resource":"merchant://books/1"},"reservation":{"expires_at":"2026-12-04T19:15:37.047044Z","id":"01a24277-2ff7-71ee-8730-e1c656a02c4d"}}"#;

/// Compressing and reading back a decision body at the store's level (−3)
/// with dictionary 1 (content only) and dictionary 2 (the same content with
/// entropy tables), which is what new rows use (`packed::compress_body`).
fn packing(c: &mut Criterion) {
    let body = BENCH_DECISION_BODY.as_bytes();
    let mut group = c.benchmark_group("pack");
    let dictionaries: [(&str, &[u8]); 2] = [
        ("dictionary_1", include_bytes!("../src/entry-dictionary-1.jsonl")),
        ("dictionary_2", include_bytes!("../src/entry-dictionary-2.zdict")),
    ];
    for (name, dictionary) in dictionaries {
        let mut compressor = zstd::bulk::Compressor::with_dictionary(-3, dictionary).unwrap();
        let mut decompressor = zstd::bulk::Decompressor::with_dictionary(dictionary).unwrap();
        let frame = compressor.compress(body).unwrap();
        eprintln!("pack/{name}: {} bytes of body kept in {}", body.len(), frame.len());
        group.bench_function(BenchmarkId::new("compress", name), |b| b.iter(|| compressor.compress(body).unwrap()));
        group.bench_function(BenchmarkId::new("decompress", name), |b| {
            b.iter(|| decompressor.decompress(&frame, body.len()).unwrap())
        });
    }
    group.bench_function("compress_body", |b| b.iter(|| mandate_store::packed::compress_body(body).unwrap()));
    group.finish();
}

criterion_group!(benches, concurrent_appends, postgres_appends, proofs, searches, packing);
criterion_main!(benches);
