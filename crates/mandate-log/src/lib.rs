//! Mandate's verifiable log, with no I/O: what an auditor needs to check a log
//! offline, and what the server needs to write one.
//!
//! - [`entry`]: entries as RFC 8785 canonical JSON, input held to I-JSON.
//! - [`hash`] and [`tree`]: RFC 9162 leaf and node hashes, roots, inclusion
//!   and consistency proofs, addressed by complete subtrees so that a store
//!   answers any proof in O(log n) reads.
//! - [`note`] and [`checkpoint`]: C2SP signed notes with Ed25519 and
//!   `tlog-checkpoint` tree heads.
//! - [`receipt`]: `c2sp.org/tlog-proof@v1` files for one entry.
//! - [`verify`]: the streaming verifier behind `mandate verify`.
//!
//! Nothing here reads a clock, a file or a random source: times, bytes and key
//! seeds are passed in. Every parser refuses rather than guesses, and none
//! panics on any input (the fuzz targets in `fuzz/` hold it to that).

pub mod canonical;
pub mod checkpoint;
pub mod entry;
pub mod hash;
pub mod json;
pub mod note;
pub mod receipt;
pub mod tree;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
pub use entry::{CanonicalBody, CanonicalEntry, Entry, EntryError, EntryHead};
pub use hash::{Hash, leaf_hash, node_hash};
pub use note::{NoteError, SignerKey, VerifierKey};
pub use receipt::{Receipt, ReceiptError};
pub use tree::{Frontier, MemoryTree, NodeId};
pub use verify::{CheckedLine, FaultKind, LogFault, LogVerifier, VerifiedLog, check_line};
