//! Mandate's storage: one trait in ledger verbs, [`Ledger`], and its embedded
//! backend, [`SqliteLedger`].
//!
//! A ledger holds one append-only log per tenant. Appends from many callers
//! are *group-committed*: one writer takes every append waiting, writes them in
//! one transaction and one fsync, and only then answers each caller, so an
//! acknowledged append survives `kill -9` and power loss.
//!
//! Beside each entry the ledger stores the hash of every complete subtree of
//! the Merkle tree ([`mandate_log::NodeId`]), so any inclusion or consistency
//! proof costs O(log n) reads, and it persists the last checkpoint it signed,
//! so it never signs two checkpoints that are not consistent with each other.

mod sqlite;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mandate_log::tree::ProofRangeError;
use mandate_log::{CanonicalBody, EntryError, Hash, SignedCheckpoint, SignerKey};
use serde_json::{Map, Value};

pub use sqlite::{SqliteLedger, SqliteOptions};

/// The most entries one [`Ledger::entries`] call returns.
pub const ENTRIES_PAGE_MAX: u64 = 10_000;

/// The most entries one append may carry.
pub const APPEND_ENTRIES_MAX: usize = 1_000;

/// An entry to append: the ledger assigns its index and `prev`.
///
/// A draft is checked and its body canonicalized when it is made, on the
/// caller's thread, so that a bad draft fails before it reaches the writer and
/// the writer only splices bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDraft {
    entry_type: String,
    time: String,
    body: CanonicalBody,
}

impl EntryDraft {
    /// A draft of type `entry_type` (`decision`, `identity.created`, …) at
    /// `time` (RFC 3339 UTC; the caller reads the clock so that the core and
    /// tests control time) with `body`.
    pub fn new(
        entry_type: impl Into<String>,
        time: impl Into<String>,
        body: &Map<String, Value>,
    ) -> Result<EntryDraft, EntryError> {
        let (entry_type, time) = (entry_type.into(), time.into());
        mandate_log::entry::check_entry_type(&entry_type)?;
        mandate_log::entry::check_time(&time)?;
        Ok(EntryDraft { entry_type, time, body: CanonicalBody::new(body)? })
    }
}

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its index in the tenant's log.
    pub index: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its index.
    pub index: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// Its canonical bytes (the exported line, without the newline).
    pub bytes: Vec<u8>,
}

/// Why a ledger operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No log for this tenant.
    #[error("tenant `{tenant}` has no log")]
    UnknownTenant {
        /// The tenant.
        tenant: String,
    },
    /// The tenant's log exists already.
    #[error("tenant `{tenant}` already has a log")]
    TenantExists {
        /// The tenant.
        tenant: String,
    },
    /// A draft cannot become an entry (too large, bad type, bad time…).
    #[error("entry {position} of the append: {error}")]
    InvalidEntry {
        /// Its position in the append.
        position: usize,
        /// Why.
        error: EntryError,
    },
    /// An append of no entries or of more than [`APPEND_ENTRIES_MAX`].
    #[error("an append carries 1 to {APPEND_ENTRIES_MAX} entries, not {count}")]
    AppendSize {
        /// The number given.
        count: usize,
    },
    /// A range or proof request outside the log.
    #[error(transparent)]
    Range(#[from] ProofRangeError),
    /// A read beyond the end of the log or larger than a page.
    #[error("entries [{start}, {end}) are not a page of a log of size {size} (at most {ENTRIES_PAGE_MAX} per page)")]
    EntryRange {
        /// The first index asked for.
        start: u64,
        /// One past the last.
        end: u64,
        /// The log's size.
        size: u64,
    },
    /// The stored log contradicts itself or its last checkpoint. Nothing is
    /// signed while this holds; it needs an operator.
    #[error("the stored log is inconsistent: {reason}")]
    Corrupt {
        /// What was found.
        reason: String,
    },
    /// The database failed (I/O, disk full, locked).
    #[error("database error: {message}")]
    Database {
        /// The database's message.
        message: String,
    },
    /// The writer thread is gone (the ledger is shutting down).
    #[error("the ledger's writer has stopped")]
    WriterStopped,
}

/// The ledger verbs. Implementations must be safe to share between threads.
///
/// INVARIANT (ack-after-commit): an [`AppendTicket`] resolves only after the
/// batch holding its entries is committed durably.
pub trait Ledger: Send + Sync {
    /// Creates an empty log for `tenant`.
    fn create_log(&self, tenant: &str) -> Result<(), StoreError>;

    /// Appends `drafts` as consecutive entries of `tenant`'s log. Concurrent
    /// appends are committed together; each append's entries stay contiguous.
    fn append(&self, tenant: &str, drafts: Vec<EntryDraft>) -> AppendTicket;

    /// The number of committed entries.
    fn size(&self, tenant: &str) -> Result<u64, StoreError>;

    /// Entries `[start, end)`, at most [`ENTRIES_PAGE_MAX`].
    fn entries(&self, tenant: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError>;

    /// The root of the first `size` entries.
    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError>;

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    fn inclusion_proof(&self, tenant: &str, index: u64, size: u64) -> Result<Vec<Hash>, StoreError>;

    /// The consistency proof between the trees of `from` and `to` entries.
    fn consistency_proof(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Hash>, StoreError>;

    /// The last checkpoint signed, if any.
    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// Signs a checkpoint of everything committed, after proving it consistent
    /// with the last one signed, and persists it. Returns the last one when
    /// nothing was appended since.
    fn sign_checkpoint(&self, tenant: &str, signer: Arc<SignerKey>) -> Result<SignedCheckpoint, StoreError>;
}

/// The pending result of an append: `.wait()` blocks a thread, `.await`
/// suspends a task. Either way it resolves after the commit.
#[derive(Debug)]
pub struct AppendTicket(TicketState);

#[derive(Debug)]
enum TicketState {
    Waiting(tokio::sync::oneshot::Receiver<Result<Vec<Appended>, StoreError>>),
    Done(Option<Result<Vec<Appended>, StoreError>>),
}

impl AppendTicket {
    pub(crate) fn waiting(receiver: tokio::sync::oneshot::Receiver<Result<Vec<Appended>, StoreError>>) -> Self {
        AppendTicket(TicketState::Waiting(receiver))
    }

    pub(crate) fn done(result: Result<Vec<Appended>, StoreError>) -> Self {
        AppendTicket(TicketState::Done(Some(result)))
    }

    /// Blocks until the append is committed or has failed. Do not call it
    /// from inside an async runtime: `.await` the ticket there.
    pub fn wait(self) -> Result<Vec<Appended>, StoreError> {
        match self.0 {
            TicketState::Waiting(receiver) => receiver.blocking_recv().unwrap_or(Err(StoreError::WriterStopped)),
            TicketState::Done(result) => result.unwrap_or(Err(StoreError::WriterStopped)),
        }
    }
}

impl IntoFuture for AppendTicket {
    type Output = Result<Vec<Appended>, StoreError>;
    type IntoFuture = TicketFuture;

    fn into_future(self) -> TicketFuture {
        TicketFuture(self.0)
    }
}

/// The future of an [`AppendTicket`].
#[derive(Debug)]
pub struct TicketFuture(TicketState);

impl Future for TicketFuture {
    type Output = Result<Vec<Appended>, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            TicketState::Waiting(receiver) => {
                Pin::new(receiver).poll(cx).map(|result| result.unwrap_or(Err(StoreError::WriterStopped)))
            }
            TicketState::Done(result) => Poll::Ready(result.take().unwrap_or(Err(StoreError::WriterStopped))),
        }
    }
}
