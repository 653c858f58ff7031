//! C2SP tlog checkpoints (c2sp.org/tlog-checkpoint): a signed note whose text
//! is the log's origin, its tree size and its root hash.
//!
//! ```text
//! mandate.example/default
//! 1042
//! 3gDyrDp9GpMr3M0xC8JkQfU8mX4ZbYv5n8yG6n2kK0s=
//!
//! — mandate.example/default Az3grlgt…
//! ```
//!
//! Mandate's origin is `<host>/<tenant>` and the log key is named after it.

use crate::hash::{Hash, clip};
use crate::note::{self, Note, NoteError, SignerKey, VerifierKey};

/// A tree head: what a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, `<host>/<tenant>`.
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The RFC 9162 root of those entries.
    pub root: Hash,
}

/// A checkpoint with the signed note that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// The whole signed note, as published.
    pub note: String,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note itself failed (syntax or signature).
    #[error("{0}")]
    Note(#[from] NoteError),
    /// The note text is not origin, size and root.
    #[error("checkpoint text is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The note was signed by a key named other than the origin.
    #[error("checkpoint origin `{origin}` is not the name of the key that signed it (`{key}`)")]
    OriginMismatch {
        /// The checkpoint's origin.
        origin: String,
        /// The verifying key's name.
        key: String,
    },
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each ending in a newline.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64())
    }

    /// Parses the note text. Extension lines after the root are allowed by
    /// C2SP and ignored here, since Mandate neither writes nor needs them.
    pub fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |reason: &str| CheckpointError::Malformed { reason: reason.to_owned() };
        let mut lines = text.strip_suffix('\n').ok_or(malformed("no final newline"))?.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(malformed("expected origin, size and root lines"));
        };
        if origin.is_empty() {
            return Err(malformed("empty origin"));
        }
        if lines.any(str::is_empty) {
            return Err(malformed("an empty extension line"));
        }
        let size_ok =
            !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) && (size == "0" || !size.starts_with('0'));
        let size = size.parse::<u64>().ok().filter(|_| size_ok).ok_or_else(|| CheckpointError::Malformed {
            reason: format!("tree size `{}` is not a decimal number without leading zeros", clip(size)),
        })?;
        let root = Hash::from_base64(root).map_err(|error| CheckpointError::Malformed { reason: error.to_string() })?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }

    /// Signs the checkpoint. The signer's name must be the origin.
    pub fn sign(&self, signer: &SignerKey) -> Result<SignedCheckpoint, CheckpointError> {
        if signer.name() != self.origin {
            return Err(CheckpointError::OriginMismatch { origin: self.origin.clone(), key: signer.name().to_owned() });
        }
        let note = note::sign(&self.to_text(), &[signer])?;
        Ok(SignedCheckpoint { checkpoint: self.clone(), note })
    }
}

impl SignedCheckpoint {
    /// Parses and verifies a signed checkpoint: a key in `keys` named after the
    /// origin must have signed it.
    pub fn open(bytes: &[u8], keys: &[VerifierKey]) -> Result<SignedCheckpoint, CheckpointError> {
        let note = Note::parse(bytes)?;
        let signers = note.verify(keys)?;
        let checkpoint = Checkpoint::parse_text(&note.text)?;
        if !signers.iter().any(|key| key.name() == checkpoint.origin) {
            let key = signers.first().map(|key| key.name().to_owned()).unwrap_or_default();
            return Err(CheckpointError::OriginMismatch { origin: checkpoint.origin, key });
        }
        let note = String::from_utf8_lossy(bytes).into_owned();
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn signer() -> SignerKey {
        SignerKey::from_seed("mandate.test/default", [7; 32]).unwrap()
    }

    #[test]
    fn sign_and_open_round_trip() {
        let checkpoint = Checkpoint { origin: "mandate.test/default".into(), size: 1042, root: Hash::digest(b"x") };
        let signed = checkpoint.sign(&signer()).unwrap();
        assert!(signed.note.starts_with("mandate.test/default\n1042\n"));
        let opened = SignedCheckpoint::open(signed.note.as_bytes(), &[signer().verifier().clone()]).unwrap();
        assert_eq!(opened, signed);
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_refused() {
        let checkpoint = Checkpoint { origin: "mandate.test/default".into(), size: 1, root: Hash::ZERO };
        let other = SignerKey::from_seed("mandate.test/default", [8; 32]).unwrap();
        let signed = checkpoint.sign(&other).unwrap();
        assert!(matches!(
            SignedCheckpoint::open(signed.note.as_bytes(), &[signer().verifier().clone()]),
            Err(CheckpointError::Note(NoteError::NoKnownSignature { .. }))
        ));
        let renamed = SignerKey::from_seed("elsewhere", [7; 32]).unwrap();
        assert!(matches!(checkpoint.sign(&renamed), Err(CheckpointError::OriginMismatch { .. })));
    }

    #[test]
    fn malformed_texts_are_refused() {
        for bad in [
            "",
            "origin\n",
            "origin\n1\n",
            "origin\n01\nAAAA\n",
            "origin\n-1\nAAAA\n",
            "\n1\nAAAA\n",
            "o\n1\nAAAA\n",
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
        ] {
            assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
        }
        assert!(Checkpoint::parse_text("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n").is_ok());
    }
}
