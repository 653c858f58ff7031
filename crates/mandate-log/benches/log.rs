//! Benchmarks of mandate-log's hot paths: hashing, writing and parsing a
//! realistic decision entry, streaming verification of a whole log, the
//! frontier, and proofs on a tree of a million leaves.
//!
//! ```text
//! cargo bench -p mandate-log --bench log [-- FILTER]
//! ```
//!
//! The product target is whole-log verification at 1,000,000 entries/s or
//! more: `verify/push` reports it in elements (entries) per second, and
//! `verify/check_line` and `verify/push_checked` split it into the part a
//! caller can spread over threads and the part it cannot. `entry/scan_entry`
//! and `entry/leaf_hash` are most of `check_line`; the `json/*` benches split
//! the slow path, `entry/parse`, into its parts.

// Setup that fails is a broken benchmark: stop at once, loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mandate_log::canonical::scan_entry;
use mandate_log::tree::{verify_consistency, verify_inclusion};
use mandate_log::{Entry, Frontier, Hash, LogVerifier, MemoryTree, NodeId, check_line, json, leaf_hash};
use serde_json::{Map, Value, json};

/// The tenant of every benchmark entry.
const TENANT: &str = "acme-prod";

/// Lines in the streaming-verification benchmark.
const VERIFY_LINES: u64 = 100_000;

/// Leaves in the proof benchmarks' tree.
const TREE_LEAVES: u64 = 1_000_000;

/// A decision body of about 400 bytes: who asked, for what, the delegation
/// chain, the verdict and its reasons, and the amounts weighed.
fn decision_body(index: u64) -> Map<String, Value> {
    let body = json!({
        "action": "payments.transfer",
        "amounts": {"currency": "EUR", "limit_minor": 500_000, "requested_minor": 12_500 + index % 1_000, "spent_today_minor": 310_000},
        "chain": ["user:alice@acme.example", "agent:procurement", "agent:invoice-bot"],
        "decision": if index.is_multiple_of(7) { "deny" } else { "allow" },
        "identity": {"id": "agent:invoice-bot", "kind": "agent", "key": "k_2f8a1c"},
        "mandate": "mnd_01J9ZQ4R7C2W",
        "reasons": ["within the daily limit", "payee on the allowlist"],
        "resource": format!("vendor:acme-gmbh/invoice/{index}"),
    });
    let Value::Object(map) = body else { unreachable!("json! of an object literal is an object") };
    map
}

fn decision_entry(index: u64, prev: Hash) -> Entry {
    let (seconds, millis) = (index / 1_000, index % 1_000);
    Entry {
        tenant: TENANT.into(),
        index,
        time: format!(
            "2026-11-22T{:02}:{:02}:{:02}.{millis:03}Z",
            seconds / 3_600 % 24,
            seconds / 60 % 60,
            seconds % 60
        ),
        entry_type: "decision".into(),
        prev,
        body: decision_body(index),
    }
}

/// `count` hash-chained canonical lines, without newlines.
fn log_lines(count: u64) -> Vec<Vec<u8>> {
    let mut prev = Hash::ZERO;
    (0..count)
        .map(|index| {
            let canonical = decision_entry(index, prev).to_canonical().expect("benchmark entries are valid");
            prev = canonical.leaf_hash;
            canonical.bytes
        })
        .collect()
}

fn entries(c: &mut Criterion) {
    let entry = decision_entry(4_711, Hash::digest(b"the entry before"));
    let bytes = entry.to_canonical().expect("benchmark entries are valid").bytes;
    let body_bytes = json::canonicalize(&Value::Object(entry.body.clone())).expect("the body canonicalizes").len();
    println!("decision entry: {} bytes canonical, body {body_bytes} bytes", bytes.len());
    let value = json::parse_strict(&bytes).expect("canonical bytes are I-JSON");

    let mut group = c.benchmark_group("entry");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("leaf_hash", |b| b.iter(|| leaf_hash(black_box(&bytes))));
    group.bench_function("to_canonical", |b| b.iter(|| black_box(&entry).to_canonical()));
    group.bench_function("parse", |b| b.iter(|| Entry::parse(black_box(&bytes))));
    // The verifier's fast path: the header without a JSON tree.
    assert!(scan_entry(&bytes).is_some(), "the decision entry takes the fast path");
    group.bench_function("scan_entry", |b| b.iter(|| scan_entry(black_box(&bytes))));
    group.finish();

    // Entry::parse is parse_strict, then canonicalize and compare, then
    // taking the fields apart; these show the share of each.
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("parse_strict", |b| b.iter(|| json::parse_strict(black_box(&bytes))));
    group.bench_function("canonicalize", |b| b.iter(|| json::canonicalize(black_box(&value))));
    // The crate Mandate's writer is tested against, for scale.
    group.bench_function("canonicalize_serde_json_canonicalizer", |b| {
        b.iter(|| serde_json_canonicalizer::to_vec(black_box(&value)))
    });
    group.bench_function("drop_value", |b| b.iter_batched(|| value.clone(), drop, BatchSize::SmallInput));
    group.finish();
}

fn verifier(c: &mut Criterion) {
    // Built on first use, so that a filtered run skips it.
    let lines = LazyLock::new(|| {
        let lines = log_lines(VERIFY_LINES);
        let total_bytes: usize = lines.iter().map(Vec::len).sum();
        println!("verify: {VERIFY_LINES} lines, {} bytes on average", total_bytes / lines.len());
        lines
    });

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(VERIFY_LINES));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("push", |b| {
        b.iter(|| {
            let mut verifier = LogVerifier::new(&[VERIFY_LINES / 2, VERIFY_LINES]);
            for line in lines.iter() {
                verifier.push(black_box(line)).expect("the benchmark log is valid");
            }
            verifier.finish(None, None).expect("the benchmark log is valid")
        });
    });
    // The two halves of `push`: what each line needs alone (which a caller
    // may spread over threads), and the sequential rest (index, tenant, the
    // `prev` chain, the frontier), whose rate bounds a parallel verifier.
    group.bench_function("check_line", |b| {
        b.iter(|| {
            for line in lines.iter() {
                check_line(black_box(line)).expect("the benchmark log is valid");
            }
        });
    });
    let checked = LazyLock::new(|| {
        lines.iter().map(|line| check_line(line).expect("the benchmark log is valid")).collect::<Vec<_>>()
    });
    group.bench_function("push_checked", |b| {
        b.iter_batched(
            || checked.clone(),
            |checked| {
                let mut verifier = LogVerifier::new(&[VERIFY_LINES / 2, VERIFY_LINES]);
                for line in checked {
                    verifier.push_checked(Ok(black_box(line))).expect("the benchmark log is valid");
                }
                verifier.finish(None, None).expect("the benchmark log is valid")
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn frontier(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..1_024u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut group = c.benchmark_group("frontier");
    group.throughput(Throughput::Elements(leaves.len() as u64));
    // 1,024 pushes on a tree already holding 2^40 - 1 leaves, so that each
    // batch pays the amortised merges of a large tree.
    let start = Frontier::from_nodes((1 << 40) - 1, vec![Hash::ZERO; 40]).expect("40 nodes for 40 set bits");
    group.bench_function("push_1024", |b| {
        b.iter_batched(
            || start.clone(),
            |mut frontier| {
                for leaf in &leaves {
                    frontier.push(*leaf, |_, _| {});
                }
                frontier
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// A tree of [`TREE_LEAVES`] leaves with proofs to check against it.
struct ProofFixture {
    tree: MemoryTree,
    root: Hash,
    /// Indexes (and old sizes) spread over the tree, visited in turn.
    points: Vec<u64>,
    /// `(index, leaf, proof)`.
    inclusion: Vec<(u64, Hash, Vec<Hash>)>,
    /// `(from, from_root, proof)` to the whole tree.
    consistency: Vec<(u64, Hash, Vec<Hash>)>,
}

impl ProofFixture {
    fn build() -> ProofFixture {
        let mut tree = MemoryTree::new();
        for i in 0..TREE_LEAVES {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        let size = tree.size();
        let points: Vec<u64> = (1..=64u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (size - 1) + 1).collect();
        let inclusion = points
            .iter()
            .map(|&index| {
                let leaf = tree.node(NodeId { level: 0, index }).expect("a leaf of the tree");
                (index, leaf, tree.inclusion_proof(index, size).expect("index below size"))
            })
            .collect();
        let consistency = points
            .iter()
            .map(|&from| {
                let from_root = tree.root_at(from).expect("an earlier size");
                (from, from_root, tree.consistency_proof(from, size).expect("from below size"))
            })
            .collect();
        ProofFixture { root: tree.root(), tree, points, inclusion, consistency }
    }
}

fn proofs(c: &mut Criterion) {
    // Built on first use, so that a filtered run skips it.
    let fixture = LazyLock::new(ProofFixture::build);
    let size = TREE_LEAVES;

    let mut group = c.benchmark_group("proof_1m");
    group.bench_function("inclusion_proof", |b| {
        let mut points = fixture.points.iter().cycle();
        b.iter(|| fixture.tree.inclusion_proof(black_box(*points.next().unwrap_or(&1)), size));
    });
    group.bench_function("consistency_proof", |b| {
        let mut points = fixture.points.iter().cycle();
        b.iter(|| fixture.tree.consistency_proof(black_box(*points.next().unwrap_or(&1)), size));
    });
    group.bench_function("verify_inclusion", |b| {
        let mut proofs = fixture.inclusion.iter().cycle();
        b.iter(|| {
            let (index, leaf, proof) = proofs.next().expect("a cycle never ends");
            assert!(verify_inclusion(*index, size, leaf, black_box(proof), &fixture.root));
        });
    });
    group.bench_function("verify_consistency", |b| {
        let mut proofs = fixture.consistency.iter().cycle();
        b.iter(|| {
            let (from, from_root, proof) = proofs.next().expect("a cycle never ends");
            assert!(verify_consistency(*from, size, from_root, &fixture.root, black_box(proof)));
        });
    });
    group.finish();
}

criterion_group!(benches, entries, verifier, frontier, proofs);
criterion_main!(benches);
