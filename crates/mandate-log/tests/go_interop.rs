//! Interoperability with an independent implementation of the same standards:
//! Go's `golang.org/x/mod/sumdb/tlog` (RFC 6962/9162 Merkle proofs) and
//! `golang.org/x/mod/sumdb/note` (C2SP signed notes), the code behind the Go
//! checksum database.
//!
//! Mandate builds a log of real canonical entries, signs checkpoints and
//! proves inclusion and consistency; the Go program in
//! `interop/go/mandate-interop` must accept every honest case and reject every
//! tampered one. Each case is also checked by Mandate's own verifiers, so the
//! two implementations are held to the same verdicts. The other way round, Go
//! generates a key and signs a checkpoint that Mandate must open, and Mandate's
//! signature with Go's key must be byte-identical to Go's (Ed25519 is
//! deterministic).
//!
//! Go builds offline in GOPATH mode from the Debian packages `golang-go` and
//! `golang-golang-x-mod-dev`. Without them this test fails rather than skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../../../interop/go/harness.rs"]
mod harness;
use harness::run as run_go;

use std::collections::{BTreeMap, BTreeSet};

use mandate_log::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use mandate_log::hash::{Hash, leaf_hash};
use mandate_log::note::{self, NoteError, SignerKey, VerifierKey};
use mandate_log::tree::{self, MemoryTree};
use mandate_log::{CanonicalEntry, Entry};
use serde_json::{Value, json};

const ORIGIN: &str = "mandate.test/default";

/// The log's length, and the sizes at which it publishes a signed checkpoint:
/// the edge cases of RFC 9162's recursion (1, 2, powers of two and their
/// neighbours), 13, a random-ish 777 and the full log.
const LOG_SIZE: u64 = 1000;
const CHECKPOINT_SIZES: [u64; 31] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513,
    777, 999, 1000,
];

// ---------------------------------------------------------------------------
// The Go program

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a Go subcommand that must succeed and returns its stdout.
fn go_stdout(args: &[&str]) -> String {
    let output = run_go(args);
    assert!(output.status.success(), "mandate-interop {}: {}", args.join(" "), lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

// ---------------------------------------------------------------------------
// The log

/// A log of canonical entries, with the root its live frontier reported at
/// each checkpoint size.
struct Log {
    entries: Vec<CanonicalEntry>,
    tree: MemoryTree,
    heads: BTreeMap<u64, Hash>,
}

/// A hash-chained log of `size` entries. Entries from `fork_at` on say
/// something else: a log that agrees with the honest one up to there.
fn build_log(size: u64, fork_at: u64) -> Log {
    const TYPES: [&str; 4] = ["identity.created", "mandate.granted", "decision", "mandate.revoked"];
    let mut log = Log { entries: Vec::new(), tree: MemoryTree::new(), heads: BTreeMap::new() };
    let mut prev = Hash::ZERO;
    for index in 0..size {
        let action = if index < fork_at { "read" } else { "wire-transfer" };
        let Value::Object(body) = json!({
            "agent": format!("agent:{}", index % 7),
            "action": action,
            "amount": index * 37 % 1000,
            "note": "caf\u{e9} \u{2713} \u{1f600} \"quoted\"",
            "tags": ["a", index % 3],
        }) else {
            unreachable!()
        };
        let entry = Entry {
            tenant: "default".into(),
            index,
            time: format!(
                "2026-11-22T{:02}:{:02}:{:02}.{:03}Z",
                index / 3600 % 24,
                index / 60 % 60,
                index % 60,
                index % 1000
            ),
            entry_type: TYPES[(index % 4) as usize].into(),
            prev,
            body,
        };
        let canonical = entry.to_canonical().unwrap();
        prev = canonical.leaf_hash;
        log.tree.push(canonical.leaf_hash);
        log.entries.push(canonical);
        if CHECKPOINT_SIZES.contains(&log.tree.size()) || log.tree.size() == size {
            log.heads.insert(log.tree.size(), log.tree.root());
        }
    }
    for (&size, root) in &log.heads {
        assert_eq!(log.tree.root_at(size).unwrap(), *root, "the frontier and the stored nodes disagree at {size}");
    }
    log
}

fn checkpoint(size: u64, root: Hash) -> Checkpoint {
    Checkpoint { origin: ORIGIN.into(), size, root }
}

fn tamper(hash: &Hash) -> Hash {
    let mut bytes = hash.0;
    bytes[31] ^= 1;
    Hash(bytes)
}

fn base64s(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_base64).collect()
}

/// The indexes whose inclusion is proven in a tree of `size`: all of them in
/// small trees, and the edges, halves, powers of two and a few pseudo-random
/// ones in large trees.
fn indexes(size: u64) -> BTreeSet<u64> {
    if size <= 64 {
        return (0..size).collect();
    }
    let mut set: BTreeSet<u64> =
        [0, 1, 2, 3, size / 3, size / 2 - 1, size / 2, size / 2 + 1, size - 3, size - 2, size - 1]
            .into_iter()
            .collect();
    for bit in 1..10 {
        set.extend([(1u64 << bit) - 1, 1 << bit, (1 << bit) + 1].into_iter().filter(|&i| i < size));
    }
    let mut state = size;
    for _ in 0..16 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        set.insert((state >> 33) % size);
    }
    set
}

// ---------------------------------------------------------------------------
// The cases

/// What Go must make of a case: accept it, or reject it with an error that
/// contains the given text.
#[derive(Clone, Copy)]
enum Expect {
    Valid,
    Rejected(&'static str),
}

/// The cases file, with Mandate's own verdict checked as each case is added.
struct Cases {
    verifier: VerifierKey,
    /// Sizes and roots of the checkpoints that verified, as the Go side keeps
    /// them: proofs count only against signed roots.
    anchors: BTreeMap<u64, Hash>,
    checkpoints: Vec<Value>,
    inclusion: Vec<Value>,
    consistency: Vec<Value>,
    expected: BTreeMap<String, Expect>,
}

impl Cases {
    fn new(verifier: VerifierKey) -> Cases {
        Cases {
            verifier,
            anchors: BTreeMap::new(),
            checkpoints: Vec::new(),
            inclusion: Vec::new(),
            consistency: Vec::new(),
            expected: BTreeMap::new(),
        }
    }

    fn expect(&mut self, name: &str, expect: Expect, mandate_accepts: bool) -> bool {
        let valid = matches!(expect, Expect::Valid);
        assert_eq!(mandate_accepts, valid, "Mandate's own verdict on case {name}");
        assert!(self.expected.insert(name.to_owned(), expect).is_none(), "duplicate case {name}");
        valid
    }

    fn anchored(&self, size: u64, root: &Hash) -> bool {
        self.anchors.get(&size) == Some(root)
    }

    fn checkpoint(&mut self, name: &str, note: &str, expect: Expect) {
        let opened = SignedCheckpoint::open(note.as_bytes(), std::slice::from_ref(&self.verifier));
        let valid = self.expect(name, expect, opened.is_ok());
        if let (true, Ok(signed)) = (valid, opened) {
            let root = self.anchors.entry(signed.checkpoint.size).or_insert(signed.checkpoint.root);
            assert_eq!(*root, signed.checkpoint.root, "two roots for one size in case {name}");
        }
        self.checkpoints.push(json!({"name": name, "note": note, "valid": valid}));
    }

    #[allow(clippy::too_many_arguments)]
    fn inclusion(
        &mut self,
        name: &str,
        entry: &[u8],
        leaf: Hash,
        index: u64,
        size: u64,
        root: Hash,
        proof: &[Hash],
        expect: Expect,
    ) {
        let accepts = self.anchored(size, &root)
            && leaf_hash(entry) == leaf
            && tree::verify_inclusion(index, size, &leaf, proof, &root);
        let valid = self.expect(name, expect, accepts);
        self.inclusion.push(json!({
            "name": name,
            "entry": std::str::from_utf8(entry).unwrap(),
            "leaf_hash": leaf.to_base64(),
            "index": index,
            "size": size,
            "root": root.to_base64(),
            "proof": base64s(proof),
            "valid": valid,
        }));
    }

    fn consistency(&mut self, name: &str, from: u64, to: u64, roots: (Hash, Hash), proof: &[Hash], expect: Expect) {
        let (old_root, new_root) = roots;
        let accepts = self.anchored(from, &old_root)
            && self.anchored(to, &new_root)
            && tree::verify_consistency(from, to, &old_root, &new_root, proof);
        let valid = self.expect(name, expect, accepts);
        self.consistency.push(json!({
            "name": name,
            "from": from,
            "to": to,
            "old_root": old_root.to_base64(),
            "new_root": new_root.to_base64(),
            "proof": base64s(proof),
            "valid": valid,
        }));
    }

    fn to_json(&self) -> Value {
        json!({
            "verifier_key": self.verifier.to_string(),
            "checkpoints": self.checkpoints,
            "inclusion": self.inclusion,
            "consistency": self.consistency,
        })
    }
}

// Go's reasons for rejecting, as its errors spell them.
const PROOF_FAILED: &str = "invalid transparency proof"; // tlog.CheckRecord, tlog.CheckTree
const BAD_INPUTS: &str = "tlog: invalid inputs"; // sizes out of order
const UNKNOWN_KEY: &str = "note has no verifiable signatures"; // note.Open
const BAD_SIGNATURE: &str = "invalid signature for key"; // note.Open
const NOT_SIGNED: &str = "no verified checkpoint"; // the Go program's anchoring
const OTHER_ROOT: &str = "is not the verified root"; // the Go program's anchoring
const OTHER_ORIGIN: &str = "is not the key name"; // the Go program's checkpoint parsing
const NOT_THE_ENTRY: &str = "is not the leaf hash"; // tlog.RecordHash against the leaf

fn build_cases() -> Cases {
    let signer = SignerKey::from_seed(ORIGIN, Hash::digest(b"mandate go interop: log key").0).unwrap();
    // Same name, another key: what an attacker who took the name would sign with.
    let impostor = SignerKey::from_seed(ORIGIN, Hash::digest(b"mandate go interop: impostor").0).unwrap();
    let witness = SignerKey::from_seed("witness.test", Hash::digest(b"mandate go interop: witness").0).unwrap();
    let log = build_log(LOG_SIZE, u64::MAX);
    let mut cases = Cases::new(signer.verifier().clone());
    let (tree, entries) = (&log.tree, &log.entries);
    let root = |size: u64| log.heads[&size];

    // Checkpoints.
    for &size in &CHECKPOINT_SIZES {
        let signed = checkpoint(size, root(size)).sign(&signer).unwrap();
        cases.checkpoint(&format!("checkpoint/{size}"), &signed.note, Expect::Valid);
    }
    let text = checkpoint(13, root(13)).to_text();
    // A witness's cosignature is from a key Go does not know: ignored.
    cases.checkpoint("checkpoint/13/cosigned", &note::sign(&text, &[&witness, &signer]).unwrap(), Expect::Valid);
    let by_impostor = checkpoint(13, root(13)).sign(&impostor).unwrap().note;
    cases.checkpoint("checkpoint/13/impostor-key", &by_impostor, Expect::Rejected(UNKNOWN_KEY));
    let honest = checkpoint(13, root(13)).sign(&signer).unwrap().note;
    let resized = honest.replacen("\n13\n", "\n12\n", 1);
    cases.checkpoint("checkpoint/13/tampered-size", &resized, Expect::Rejected(BAD_SIGNATURE));
    let elsewhere = text.replacen(ORIGIN, "mandate.test/other", 1);
    let other_origin = note::sign(&elsewhere, &[&signer]).unwrap();
    cases.checkpoint("checkpoint/13/other-origin", &other_origin, Expect::Rejected(OTHER_ORIGIN));

    // A log that agrees for 13 entries and then says something else, signed
    // by the impostor: its proofs are sound, only the signature is missing.
    let forged = build_log(14, 13);
    let forged_root = forged.tree.root();
    let forged_note = checkpoint(14, forged_root).sign(&impostor).unwrap().note;
    cases.checkpoint("checkpoint/14/forged", &forged_note, Expect::Rejected(UNKNOWN_KEY));
    let forged_proof = forged.tree.inclusion_proof(13, 14).unwrap();
    let forged_entry = &forged.entries[13];
    cases.inclusion(
        "inclusion/14/13/forged",
        &forged_entry.bytes,
        forged_entry.leaf_hash,
        13,
        14,
        forged_root,
        &forged_proof,
        Expect::Rejected(NOT_SIGNED),
    );
    let forged_proof = forged.tree.consistency_proof(13, 14).unwrap();
    let roots = (root(13), forged_root);
    cases.consistency("consistency/13-14/forged", 13, 14, roots, &forged_proof, Expect::Rejected(NOT_SIGNED));
    // The forged tree's 13-entry prefix is the honest one, so a proof against
    // its size 13 root is anchored, but not one against a tampered root.
    let proof = tree.inclusion_proof(5, 13).unwrap();
    let entry = &entries[5];
    let (bytes, leaf) = (&entry.bytes, entry.leaf_hash);
    cases.inclusion(
        "inclusion/13/5/unsigned-root",
        bytes,
        leaf,
        5,
        13,
        tamper(&root(13)),
        &proof,
        Expect::Rejected(OTHER_ROOT),
    );

    // Inclusion.
    for &size in &CHECKPOINT_SIZES {
        for index in indexes(size) {
            let proof = tree.inclusion_proof(index, size).unwrap();
            let entry = &entries[index as usize];
            let name = format!("inclusion/{size}/{index}");
            cases.inclusion(&name, &entry.bytes, entry.leaf_hash, index, size, root(size), &proof, Expect::Valid);
        }
        if size < 2 {
            continue;
        }
        for index in BTreeSet::from([size / 3, size - 1]) {
            let proof = tree.inclusion_proof(index, size).unwrap();
            let entry = &entries[index as usize];
            let (bytes, leaf) = (&entry.bytes, entry.leaf_hash);
            let other_index = if index + 1 < size { index + 1 } else { index - 1 };
            let other = &entries[other_index as usize];
            let name = |what: &str| format!("inclusion/{size}/{index}/{what}");
            let rejected = Expect::Rejected(PROOF_FAILED);

            let mut tampered = proof.clone();
            let at = index as usize % tampered.len();
            tampered[at] = tamper(&tampered[at]);
            cases.inclusion(&name("tampered-proof"), bytes, leaf, index, size, root(size), &tampered, rejected);
            cases.inclusion(&name("wrong-index"), bytes, leaf, other_index, size, root(size), &proof, rejected);
            let (other_bytes, other_leaf) = (&other.bytes, other.leaf_hash);
            cases.inclusion(&name("other-entry"), other_bytes, other_leaf, index, size, root(size), &proof, rejected);
            let not_the_entry = Expect::Rejected(NOT_THE_ENTRY);
            cases.inclusion(&name("entry-not-leaf"), other_bytes, leaf, index, size, root(size), &proof, not_the_entry);
            let short = &proof[..proof.len() - 1];
            cases.inclusion(&name("short-proof"), bytes, leaf, index, size, root(size), short, rejected);
            let mut long = proof.clone();
            long.push(leaf);
            cases.inclusion(&name("long-proof"), bytes, leaf, index, size, root(size), &long, rejected);
            // A proof from this tree presented against the next checkpoint.
            if let Some(&later) = CHECKPOINT_SIZES.iter().find(|&&later| later > size) {
                cases.inclusion(&name("stale-proof"), bytes, leaf, index, later, root(later), &proof, rejected);
            }
        }
    }

    // Consistency: every pair of checkpoints, then tampering on a selection.
    for (i, &from) in CHECKPOINT_SIZES.iter().enumerate() {
        for &to in &CHECKPOINT_SIZES[i..] {
            let proof = tree.consistency_proof(from, to).unwrap();
            let name = format!("consistency/{from}-{to}");
            cases.consistency(&name, from, to, (root(from), root(to)), &proof, Expect::Valid);
        }
    }
    let mut pairs: BTreeSet<(u64, u64)> = CHECKPOINT_SIZES.windows(2).map(|pair| (pair[0], pair[1])).collect();
    pairs.extend([1, 7, 13, 64, 777].map(|from| (from, LOG_SIZE)));
    pairs.extend([(2, 777), (8, 13), (13, 64)]);
    for (from, to) in pairs {
        let proof = tree.consistency_proof(from, to).unwrap();
        let roots = (root(from), root(to));
        let name = |what: &str| format!("consistency/{from}-{to}/{what}");
        let rejected = Expect::Rejected(PROOF_FAILED);

        let mut tampered = proof.clone();
        let at = from as usize % tampered.len();
        tampered[at] = tamper(&tampered[at]);
        cases.consistency(&name("tampered-proof"), from, to, roots, &tampered, rejected);
        let short = &proof[..proof.len() - 1];
        cases.consistency(&name("short-proof"), from, to, roots, short, rejected);
        let mut long = proof.clone();
        long.push(root(from));
        cases.consistency(&name("long-proof"), from, to, roots, &long, rejected);
        // The proof presented for another old checkpoint.
        if let Some(&other) = CHECKPOINT_SIZES.iter().rev().find(|&&other| other < to && other != from) {
            let other_roots = (root(other), root(to));
            cases.consistency(&name(&format!("as-from-{other}")), other, to, other_roots, &proof, rejected);
        }
        // A rollback: the newer tree presented as the older one.
        let reversed = (root(to), root(from));
        cases.consistency(&name("reversed"), to, from, reversed, &proof, Expect::Rejected(BAD_INPUTS));
    }
    cases
}

/// One line of Go's report: `ok NAME`, `ok NAME (rejected: REASON)` or
/// `FAIL NAME: REASON`.
fn parse_report(stdout: &str) -> BTreeMap<String, (bool, String)> {
    let mut report = BTreeMap::new();
    for line in stdout.lines() {
        let (ok, rest) = match (line.strip_prefix("ok "), line.strip_prefix("FAIL ")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => panic!("unexpected line from Go: {line}"),
        };
        let (name, detail) = rest.split_once([' ', ':']).unwrap_or((rest, ""));
        assert!(report.insert(name.to_owned(), (ok, detail.to_owned())).is_none(), "Go reported {name} twice");
    }
    report
}

#[test]
fn go_verifies_mandates_checkpoints_and_proofs() {
    let cases = build_cases();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_vec(&cases.to_json()).unwrap()).unwrap();

    let output = run_go(&["verify", path.to_str().unwrap()]);
    let stdout = lossy(&output.stdout);
    let report = parse_report(&stdout);

    let mut problems = Vec::new();
    for (name, expect) in &cases.expected {
        match (report.get(name), expect) {
            (None, _) => problems.push(format!("{name}: Go did not report it")),
            (Some((false, detail)), _) => problems.push(format!("{name}: Go says FAIL:{detail}")),
            (Some((true, detail)), Expect::Valid) if !detail.is_empty() => {
                problems.push(format!("{name}: expected plain ok, Go says `{detail}`"));
            }
            (Some((true, detail)), Expect::Rejected(reason)) if !detail.contains(reason) => {
                problems.push(format!("{name}: expected a rejection for `{reason}`, Go says `{detail}`"));
            }
            _ => {}
        }
    }
    problems.extend(report.keys().filter(|name| !cases.expected.contains_key(*name)).map(|n| format!("{n}: unknown")));
    assert!(
        problems.is_empty(),
        "{} of {} cases disagree between Mandate and Go:\n{}\nGo's stderr: {}",
        problems.len(),
        cases.expected.len(),
        problems.iter().take(40).cloned().collect::<Vec<_>>().join("\n"),
        lossy(&output.stderr)
    );
    assert!(output.status.success(), "Go's verify exited with {}: {}", output.status, lossy(&output.stderr));

    // The suite is as large as intended, and every kind of negative is there.
    let rejected = cases.expected.values().filter(|expect| matches!(expect, Expect::Rejected(_))).count();
    assert!(cases.inclusion.len() > 700 && cases.consistency.len() > 500 && rejected > 300, "too few cases");
    for reason in
        [PROOF_FAILED, BAD_INPUTS, UNKNOWN_KEY, BAD_SIGNATURE, NOT_SIGNED, OTHER_ROOT, OTHER_ORIGIN, NOT_THE_ENTRY]
    {
        assert!(
            cases.expected.values().any(|expect| matches!(expect, Expect::Rejected(r) if *r == reason)),
            "no case rejected for {reason}"
        );
    }
}

#[test]
fn mandate_opens_go_signed_checkpoints_and_signs_identically() {
    let keys = go_stdout(&["keygen", ORIGIN]);
    let [signer_text, verifier_text] = keys.lines().collect::<Vec<_>>()[..] else {
        panic!("keygen printed {keys:?}, not two keys");
    };
    let verifier = VerifierKey::parse(verifier_text).unwrap();
    assert_eq!(verifier.to_string(), verifier_text);
    let signer = SignerKey::parse(signer_text).unwrap();
    assert_eq!(signer.verifier(), &verifier);
    assert_eq!(signer.to_private_text(), signer_text);
    let keys = std::slice::from_ref(&verifier);

    // And a key Mandate made, used by Go.
    let mandate_signer = SignerKey::from_seed(ORIGIN, Hash::digest(b"mandate go interop: log key").0).unwrap();
    let mandate_signer_text = mandate_signer.to_private_text();

    let log = build_log(LOG_SIZE, u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    for size in [1, 2, 7, 8, 13, 64, 777, LOG_SIZE] {
        let checkpoint = checkpoint(size, log.heads[&size]);
        let text = checkpoint.to_text();
        let path = dir.path().join(format!("checkpoint-{size}.txt"));
        std::fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();

        let go_note = go_stdout(&["sign", signer_text, path]);
        let opened = SignedCheckpoint::open(go_note.as_bytes(), keys).unwrap();
        assert_eq!(opened.checkpoint, checkpoint);
        assert_eq!(opened.note, go_note);
        let note = note::open(go_note.as_bytes(), keys).unwrap();
        assert_eq!(note.text, text);
        assert_eq!(note.signatures.len(), 1);
        assert_eq!((note.signatures[0].name.as_str(), note.signatures[0].id), (ORIGIN, verifier.id()));
        // Ed25519 is deterministic: the same key and text give the same note.
        assert_eq!(checkpoint.sign(&signer).unwrap().note, go_note, "Mandate and Go sign size {size} differently");

        let tampered = go_note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
        assert!(matches!(
            SignedCheckpoint::open(tampered.as_bytes(), keys),
            Err(CheckpointError::Note(NoteError::BadSignature { .. }))
        ));

        let go_note = go_stdout(&["sign", &mandate_signer_text, path]);
        assert_eq!(checkpoint.sign(&mandate_signer).unwrap().note, go_note, "Go signs with Mandate's key differently");
    }
}
