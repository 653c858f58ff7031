//! Fixed keys and a small real log, shared by the fuzz targets (which check
//! signatures and receipts against them) and by `examples/make_seeds.rs`
//! (which writes the seed corpora from them). Everything is deterministic, so
//! the checked-in seeds stay valid for the targets.

use mandate_log::checkpoint::{Checkpoint, SignedCheckpoint};
use mandate_log::entry::Entry;
use mandate_log::note::{SignerKey, VerifierKey};
use mandate_log::receipt::Receipt;
use mandate_log::tree::MemoryTree;
use serde_json::{Map, Value, json};

/// The tenant of the fixture log.
pub const TENANT: &str = "default";

/// The fixture log's origin, which is also its key's name.
pub const ORIGIN: &str = "mandate.test/default";

/// The Ed25519 seed of the fixture log key (a test key, never a real one).
pub const LOG_KEY_SEED: [u8; 32] = [7; 32];

/// The number of entries in the fixture log.
pub const LOG_SIZE: u64 = 13;

/// The entry whose receipt the `receipt_parse` target checks.
pub const RECEIPT_INDEX: u64 = 5;

/// The fixture log key.
pub fn signer() -> SignerKey {
    match SignerKey::from_seed(ORIGIN, LOG_KEY_SEED) {
        Ok(signer) => signer,
        Err(error) => unreachable!("the fixture key name is valid: {error}"),
    }
}

/// The fixture log key's public half.
pub fn verifier() -> VerifierKey {
    signer().verifier().clone()
}

/// A realistic body for entry `index`: decisions, with an identity entry first.
/// Odd entries hold a float, which sends them down the verifier's slow path.
pub fn body(index: u64) -> Map<String, Value> {
    let value = if index == 0 {
        json!({"id": "agent:invoice-bot", "kind": "agent", "owner": "user:alice@example.com", "scopes": ["payments.transfer"]})
    } else {
        json!({
            "action": "payments.transfer",
            "amounts": {"currency": "EUR", "limit_minor": 500_000, "requested_minor": 1_000 * index},
            "chain": ["user:alice@example.com", "agent:procurement", "agent:invoice-bot"],
            "decision": if index.is_multiple_of(3) { "deny" } else { "allow" },
            "identity": {"id": "agent:invoice-bot", "kind": "agent"},
            "reasons": ["within daily limit", "payee on allowlist", "caf\u{e9} \u{1f600} \"quoted\"\n"],
            "resource": format!("vendor:acme-{index}"),
        })
    };
    let Value::Object(mut map) = value else { return Map::new() };
    if index % 2 == 1
        && let Some(Value::Object(amounts)) = map.get_mut("amounts")
    {
        amounts.insert("rate".into(), json!(1.0825));
    }
    map
}

/// The canonical lines of the fixture log, hash-chained, without newlines.
pub fn log_lines(size: u64) -> Vec<Vec<u8>> {
    let mut prev = mandate_log::Hash::ZERO;
    let mut lines = Vec::new();
    for index in 0..size {
        let entry = Entry {
            tenant: TENANT.into(),
            index,
            time: format!("2026-11-22T10:{:02}:{:02}.{:03}Z", index / 60 % 60, index % 60, index % 1000),
            entry_type: if index == 0 { "identity.created".into() } else { "decision".into() },
            prev,
            body: body(index),
        };
        match entry.to_canonical() {
            Ok(canonical) => {
                prev = canonical.leaf_hash;
                lines.push(canonical.bytes);
            }
            Err(error) => unreachable!("the fixture entries are valid: {error}"),
        }
    }
    lines
}

/// The Merkle tree of `lines`.
pub fn tree(lines: &[Vec<u8>]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for line in lines {
        tree.push(mandate_log::leaf_hash(line));
    }
    tree
}

/// The fixture log's checkpoint at `size`, signed by the fixture key.
pub fn signed_checkpoint(size: u64) -> SignedCheckpoint {
    let tree = tree(&log_lines(LOG_SIZE));
    let root = match tree.root_at(size) {
        Ok(root) => root,
        Err(error) => unreachable!("sizes up to LOG_SIZE are in the tree: {error}"),
    };
    match (Checkpoint { origin: ORIGIN.into(), size, root }).sign(&signer()) {
        Ok(signed) => signed,
        Err(error) => unreachable!("the fixture checkpoint signs: {error}"),
    }
}

/// A receipt for entry `index` of the fixture log against its full checkpoint.
pub fn receipt(index: u64, extra: Option<Vec<u8>>) -> Receipt {
    let tree = tree(&log_lines(LOG_SIZE));
    let proof = match tree.inclusion_proof(index, LOG_SIZE) {
        Ok(proof) => proof,
        Err(error) => unreachable!("index below LOG_SIZE: {error}"),
    };
    Receipt { extra, index, proof, checkpoint_note: signed_checkpoint(LOG_SIZE).note }
}

/// The canonical bytes of entry [`RECEIPT_INDEX`].
pub fn receipt_entry() -> Vec<u8> {
    log_lines(LOG_SIZE).into_iter().nth(RECEIPT_INDEX as usize).unwrap_or_default()
}

/// Fixtures and checks of the `api_*` targets (the server's request decoding).
pub mod api;
