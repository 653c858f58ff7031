//! Receipts: `c2sp.org/tlog-proof@v1` files that let a third party check,
//! offline, that one entry is in the log the operator signed.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! index 517
//! <base64 hash, leaf's sibling first>
//! …
//!
//! <signed checkpoint, verbatim>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::entry::{Entry, EntryError};
use crate::hash::{Hash, clip, leaf_hash};
use crate::note::VerifierKey;
use crate::tree;

/// The first line of every receipt.
pub const RECEIPT_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// The longest inclusion proof: one hash per level of a 2^64-leaf tree.
pub const PROOF_HASHES_MAX: usize = 64;

/// A parsed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    /// The entry's index.
    pub index: u64,
    /// The inclusion proof, leaf's sibling first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint the proof leads to, verbatim.
    pub checkpoint_note: String,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a `c2sp.org/tlog-proof@v1` file.
    #[error("receipt is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint inside does not verify.
    #[error("receipt checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The entry file is not a canonical entry.
    #[error("entry: {0}")]
    Entry(#[from] EntryError),
    /// The entry names another index than the receipt.
    #[error("the entry is index {entry} but the receipt proves index {receipt}")]
    IndexMismatch {
        /// The entry's `index`.
        entry: u64,
        /// The receipt's index.
        receipt: u64,
    },
    /// The inclusion proof does not lead from the entry to the signed root.
    #[error("the inclusion proof for index {index} does not lead to the root of the checkpoint of size {size}")]
    NotIncluded {
        /// The index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
    },
}

impl Receipt {
    /// The receipt file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{RECEIPT_HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.proof {
            text.push_str(&hash.to_base64());
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.checkpoint_note);
        text
    }

    /// Parses a receipt file (its checkpoint is checked by [`Receipt::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let malformed = |reason: &str| ReceiptError::Malformed { reason: reason.to_owned() };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        let (head, checkpoint_note) =
            text.split_once("\n\n").ok_or(malformed("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(RECEIPT_HEADER) {
            return Err(malformed("the first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut extra = None;
        if let Some(encoded) = lines.peek().and_then(|line| line.strip_prefix("extra ")) {
            extra = Some(BASE64.decode(encoded).map_err(|_| malformed("extra data is not base64"))?);
            lines.next();
        }
        let index_text = lines.next().and_then(|line| line.strip_prefix("index ")).ok_or(malformed("no index line"))?;
        let index_ok = !index_text.is_empty()
            && index_text.bytes().all(|b| b.is_ascii_digit())
            && (index_text == "0" || !index_text.starts_with('0'));
        let index = index_text.parse::<u64>().ok().filter(|_| index_ok).ok_or_else(|| ReceiptError::Malformed {
            reason: format!("index `{}` is not a decimal number without leading zeros", clip(index_text)),
        })?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == PROOF_HASHES_MAX {
                return Err(malformed("more than 64 proof hashes"));
            }
            proof.push(Hash::from_base64(line).map_err(|error| ReceiptError::Malformed { reason: error.to_string() })?);
        }
        Ok(Receipt { extra, index, proof, checkpoint_note: checkpoint_note.to_owned() })
    }

    /// Checks the receipt for the entry's canonical bytes: the checkpoint is
    /// signed by one of `keys`, the entry is canonical and names the receipt's
    /// index, and the proof leads from its leaf hash to the signed root.
    pub fn verify(&self, entry_bytes: &[u8], keys: &[VerifierKey]) -> Result<SignedCheckpoint, ReceiptError> {
        let signed = SignedCheckpoint::open(self.checkpoint_note.as_bytes(), keys)?;
        let entry = Entry::parse(entry_bytes)?;
        if entry.index != self.index {
            return Err(ReceiptError::IndexMismatch { entry: entry.index, receipt: self.index });
        }
        let size = signed.checkpoint.size;
        if !tree::verify_inclusion(self.index, size, &leaf_hash(entry_bytes), &self.proof, &signed.checkpoint.root) {
            return Err(ReceiptError::NotIncluded { index: self.index, size });
        }
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::entry::Entry;
    use crate::note::SignerKey;
    use crate::tree::MemoryTree;

    fn log(n: u64) -> (Vec<Vec<u8>>, MemoryTree) {
        let mut tree = MemoryTree::new();
        let mut prev = Hash::ZERO;
        let mut entries = Vec::new();
        for index in 0..n {
            let entry = Entry {
                tenant: "default".into(),
                index,
                time: "2026-11-22T00:00:00Z".into(),
                entry_type: "test".into(),
                prev,
                body: serde_json::Map::new(),
            };
            let canonical = entry.to_canonical().unwrap();
            tree.push(canonical.leaf_hash);
            prev = canonical.leaf_hash;
            entries.push(canonical.bytes);
        }
        (entries, tree)
    }

    #[test]
    fn receipts_round_trip_and_verify() {
        let signer = SignerKey::from_seed("mandate.test/default", [1; 32]).unwrap();
        let (entries, tree) = log(13);
        let checkpoint = Checkpoint { origin: "mandate.test/default".into(), size: 13, root: tree.root() };
        let note = checkpoint.sign(&signer).unwrap().note;
        let keys = [signer.verifier().clone()];
        for index in 0..13 {
            let receipt = Receipt {
                extra: Some(b"x".to_vec()),
                index,
                proof: tree.inclusion_proof(index, 13).unwrap(),
                checkpoint_note: note.clone(),
            };
            let parsed = Receipt::parse(receipt.to_text().as_bytes()).unwrap();
            assert_eq!(parsed, receipt);
            assert_eq!(parsed.verify(&entries[index as usize], &keys).unwrap().checkpoint, checkpoint);
            let other = (index as usize + 1) % 13;
            assert!(parsed.verify(&entries[other], &keys).is_err());
        }
    }

    #[test]
    fn malformed_receipts_are_refused() {
        for bad in [
            "",
            "c2sp.org/tlog-proof@v1\n",
            "c2sp.org/tlog-proof@v2\nindex 0\n\nx",
            "c2sp.org/tlog-proof@v1\nindex 01\n\nx",
            "c2sp.org/tlog-proof@v1\nindex 0\nnot-a-hash\n\nx",
        ] {
            assert!(Receipt::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
