//! Mandate's storage: one trait in ledger verbs, [`Ledger`], its embedded
//! backend, [`SqliteLedger`], and its shared one, [`PostgresLedger`] (several
//! processes on one database).
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
//!
//! Each log keeps its tenant's signing key beside it ([`Ledger::create_log`]),
//! so a tenant never exists without its key and several processes sharing one
//! database sign with the same key. Each entry also leaves a few search terms
//! (type, time, and the identity and decision the caller names with
//! [`EntryDraft::with_terms`]), written in the same transaction as the entry,
//! which [`Ledger::search`] reads a bounded page at a time.
//!
//! Beside the log a ledger also keeps *state rows* ([`StateRow`]): the current
//! value of an object (a budget, a reservation) that the caller derives from
//! the log, written in the same transaction as the entries that changed it
//! ([`Ledger::append_with_state`]), so that a replay of the log can be
//! compared with them ([`Ledger::state_rows`]).
//!
//! Finally an entry may carry *keys* ([`EntryKey`], [`EntryDraft::with_keys`]):
//! 16 bytes the caller derives (a decision's id, a hash of a request id), by
//! which [`Ledger::find`] and [`LogHold::find`] return the newest entry stored
//! with them. They keep "have I seen this id?" out of the caller's memory:
//! the answer is in the store, written with the entry.

pub mod packed;
mod postgres;
mod sqlite;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mandate_log::tree::ProofRangeError;
use mandate_log::{CanonicalBody, EntryError, Hash, SignedCheckpoint, SignerKey};
use serde_json::{Map, Value};

pub use postgres::{PostgresLedger, PostgresOptions};
pub use sqlite::{SqliteLedger, SqliteOptions};

/// The most entries one [`Ledger::entries`] call returns.
pub const ENTRIES_PAGE_MAX: u64 = 10_000;

/// The most entries one append may carry.
pub const APPEND_ENTRIES_MAX: usize = 1_000;

/// The most entries one [`Ledger::search`] page holds; larger limits are
/// clamped to it.
pub const SEARCH_PAGE_MAX: usize = 1_000;

/// The most bytes of a [`StateRow`]'s kind and of its key (at least 1).
pub const STATE_NAME_BYTES_MAX: usize = 128;

/// The most bytes of a [`StateRow`]'s value: 64 KiB.
pub const STATE_VALUE_BYTES_MAX: usize = 64 * 1024;

/// About how many candidate entries one [`Ledger::search`] call examines at
/// most, so that a filter that rarely matches costs a bounded amount of work
/// per call (a few milliseconds) rather than a scan of the whole log. The
/// caller continues from [`SearchPage::next`]. A backend may overshoot it by a
/// small constant (the SQLite one by under 4,096 entries).
pub const SEARCH_EXAMINED_MAX: u64 = 50_000;

/// A key an entry can be found by ([`Ledger::find`]): 16 bytes the caller
/// derives. Keys that grow with time (a UUIDv7) keep the key index's writes
/// at its end; hashes spread them.
pub type EntryKey = [u8; 16];

/// The most keys one draft may carry.
pub const ENTRY_KEYS_MAX: usize = 4;

/// An entry to append: the ledger assigns its index and `prev`.
///
/// A draft is checked and its body canonicalized when it is made, on the
/// caller's thread, so that a bad draft fails before it reaches the writer and
/// the writer only splices bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDraft {
    entry_type: String,
    time: String,
    /// `time` in microseconds since the Unix epoch, for search.
    time_us: i64,
    body: CanonicalBody,
    /// The body compressed for storage (`packed.rs`), here on the caller's
    /// thread so that the writer does not; `None` stores the entry plain.
    compressed_body: Option<Vec<u8>>,
    /// The acting identity, for search; not part of the entry's bytes.
    identity: Option<String>,
    /// The decision (`allow`, `deny`, `pending`), for search; not part of the
    /// entry's bytes.
    decision: Option<String>,
    /// Keys the entry can be found by; not part of its bytes.
    keys: Vec<EntryKey>,
}

impl EntryDraft {
    /// A draft of type `entry_type` (`decision`, `identity.created`, …) at
    /// `time` (RFC 3339 UTC; the caller reads the clock so that the core and
    /// tests control time) with `body`. The time must also be a real instant
    /// (no 31 February), since search filters by it.
    pub fn new(
        entry_type: impl Into<String>,
        time: impl Into<String>,
        body: &Map<String, Value>,
    ) -> Result<EntryDraft, EntryError> {
        let (entry_type, time) = (entry_type.into(), time.into());
        mandate_log::entry::check_entry_type(&entry_type)?;
        let time_us = time_us(&time)?;
        let body = CanonicalBody::new(body)?;
        Ok(EntryDraft {
            entry_type,
            time,
            time_us,
            compressed_body: packed::compress_body(body.as_bytes()),
            body,
            identity: None,
            decision: None,
            keys: Vec::new(),
        })
    }

    /// The same draft, findable by [`Ledger::search`] under `identity` (the
    /// acting identity) and `decision` (`allow`, `deny`, `pending`). Terms are
    /// stored beside the entry, not in its bytes; keep them short (an identity
    /// id is at most 128 characters), since they cost storage per entry. A
    /// draft has no terms until given some; its type and time are always
    /// searchable.
    pub fn with_terms(self, identity: Option<&str>, decision: Option<&str>) -> EntryDraft {
        EntryDraft { identity: identity.map(str::to_owned), decision: decision.map(str::to_owned), ..self }
    }

    /// The same draft, findable by [`Ledger::find`] under each of `keys` (at
    /// most [`ENTRY_KEYS_MAX`]). A key stored again with a later entry finds
    /// the later one.
    pub fn with_keys(self, keys: Vec<EntryKey>) -> EntryDraft {
        EntryDraft { keys, ..self }
    }
}

/// An entry time (RFC 3339 UTC, as [`mandate_log::entry::check_time`]
/// accepts) in microseconds since the Unix epoch. Digits beyond the
/// microsecond are truncated; a leap second (`:60`) counts as `:59`.
pub(crate) fn time_us(time: &str) -> Result<i64, EntryError> {
    mandate_log::entry::check_time(time)?;
    let timestamp: jiff::Timestamp = time.parse().map_err(|error: jiff::Error| EntryError::InvalidField {
        field: "time",
        reason: format!("`{time}` is not an instant: {error}"),
    })?;
    Ok(timestamp.as_microsecond())
}

/// One projection row: the current value of one object, written in the same
/// transaction as the entries of its append. `value: None` deletes the row.
///
/// `kind` names the kind of object (`budget`, `reservation`, …) and `key` the
/// object, each 1 to [`STATE_NAME_BYTES_MAX`] bytes; `value` is opaque to the
/// ledger, at most [`STATE_VALUE_BYTES_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// The kind of object.
    pub kind: String,
    /// The object, within its kind.
    pub key: String,
    /// Its current value; `None` deletes the row.
    pub value: Option<Vec<u8>>,
}

impl StateRow {
    /// Checks the sizes of the kind, key and value.
    fn check(&self) -> Result<(), String> {
        for (field, name) in [("kind", &self.kind), ("key", &self.key)] {
            if name.is_empty() || name.len() > STATE_NAME_BYTES_MAX {
                return Err(format!("its {field} is {} bytes, not 1 to {STATE_NAME_BYTES_MAX}", name.len()));
            }
        }
        match &self.value {
            Some(value) if value.len() > STATE_VALUE_BYTES_MAX => {
                Err(format!("its value is {} bytes, more than {STATE_VALUE_BYTES_MAX}", value.len()))
            }
            _ => Ok(()),
        }
    }
}

/// Checks an append's shape before it goes to a backend's writer: 1 to
/// [`APPEND_ENTRIES_MAX`] drafts, and state rows of the right sizes.
pub(crate) fn check_append(drafts: &[EntryDraft], rows: &[StateRow]) -> Result<(), StoreError> {
    if drafts.is_empty() && !rows.is_empty() {
        return Err(StoreError::RowsWithoutEntries { rows: rows.len() });
    }
    if drafts.is_empty() || drafts.len() > APPEND_ENTRIES_MAX {
        return Err(StoreError::AppendSize { count: drafts.len() });
    }
    if let Some(position) = drafts.iter().position(|draft| draft.keys.len() > ENTRY_KEYS_MAX) {
        return Err(StoreError::InvalidEntry {
            position,
            error: EntryError::InvalidField { field: "keys", reason: format!("more than {ENTRY_KEYS_MAX} keys") },
        });
    }
    for (position, row) in rows.iter().enumerate() {
        row.check().map_err(|reason| StoreError::InvalidStateRow { position, reason })?;
    }
    Ok(())
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

/// What [`Ledger::search`] looks for: every filter given must hold (AND);
/// filters left `None` match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Entries appended with this identity term ([`EntryDraft::with_terms`]).
    pub identity: Option<String>,
    /// Entries of this type (`decision`, `identity.created`, …).
    pub entry_type: Option<String>,
    /// Entries appended with this decision term.
    pub decision: Option<String>,
    /// Entries whose `time` is at or after this instant, in microseconds since
    /// the Unix epoch (inclusive).
    pub since_us: Option<i64>,
    /// Entries whose `time` is before this instant (exclusive).
    pub until_us: Option<i64>,
    /// The cursor: only entries with an index greater than this. `None`
    /// starts at the beginning of the log; pass the previous page's
    /// [`SearchPage::next`] to continue.
    pub after: Option<u64>,
    /// The most entries to return, clamped to 1 to [`SEARCH_PAGE_MAX`] (so the
    /// default, 0, returns one).
    pub limit: usize,
}

/// One page of [`Ledger::search`] results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// The matching entries, in ascending index order.
    pub entries: Vec<StoredEntry>,
    /// Where to continue (as [`SearchQuery::after`]) when there may be more:
    /// the last index this call returned or examined. `None` when the search
    /// reached the end of the log as of this call.
    pub next: Option<u64>,
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
    /// The tenant's log has no signing key: it was created before logs kept
    /// their keys (schema version 1). It needs an operator to set one.
    #[error("tenant `{tenant}` has no signing key stored with its log")]
    NoSigner {
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
    /// State rows with no entry to carry them: every change of state comes
    /// with the entry that makes it.
    #[error("an append of {rows} state rows carries no entries")]
    RowsWithoutEntries {
        /// The number of rows given.
        rows: usize,
    },
    /// A state row of an append is too large or has an empty kind or key.
    #[error("state row {position} of the append: {reason}")]
    InvalidStateRow {
        /// Its position in the append's rows.
        position: usize,
        /// Why.
        reason: String,
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
    /// A held log moved: something appended to it without holding it, so
    /// the caller's view of the log is out of date. Nothing was written.
    #[error("the log of tenant `{tenant}` has {size} entries, not the {held} it had when held")]
    Stale {
        /// The tenant.
        tenant: String,
        /// Its size when the hold began.
        held: u64,
        /// Its size now.
        size: u64,
    },
}

/// The ledger verbs. Implementations must be safe to share between threads.
///
/// INVARIANT (ack-after-commit): an [`AppendTicket`] resolves only after the
/// batch holding its entries is committed durably.
pub trait Ledger: Send + Sync {
    /// Creates an empty log for `tenant`, whose checkpoints `signer` signs:
    /// the key's private text is stored with the log, in one statement, so a
    /// tenant never exists without its key and every process sharing the
    /// store signs with the same one. The store therefore holds secrets.
    ///
    /// Another process sharing the store may create a log (and append to it)
    /// while this one runs; this one sees it on first use.
    fn create_log(&self, tenant: &str, signer: &SignerKey) -> Result<(), StoreError>;

    /// The signing key stored with `tenant`'s log.
    fn signer(&self, tenant: &str) -> Result<SignerKey, StoreError>;

    /// Every tenant that has a log, sorted (by bytes).
    fn tenants(&self) -> Result<Vec<String>, StoreError>;

    /// Appends `drafts` as consecutive entries of `tenant`'s log. Concurrent
    /// appends are committed together; each append's entries stay contiguous.
    fn append(&self, tenant: &str, drafts: Vec<EntryDraft>) -> AppendTicket {
        self.append_with_state(tenant, drafts, Vec::new())
    }

    /// Appends entries and writes state rows in one transaction: both or neither.
    /// Rows of later appends overwrite earlier ones (last writer wins, in log order).
    ///
    /// Within one append, rows apply in the order given, so a later row of the
    /// same kind and key wins. An append that fails (an invalid draft, an
    /// unknown tenant, rows without drafts, a row too large) writes none of its
    /// entries and none of its rows; deleting a row that does not exist is no
    /// error.
    fn append_with_state(&self, tenant: &str, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket;

    /// All rows of a tenant (optionally one kind), ordered by (kind, key).
    ///
    /// The values are always `Some`; the rows come from one snapshot of the
    /// committed store.
    fn state_rows(&self, tenant: &str, kind: Option<&str>) -> Result<Vec<StateRow>, StoreError>;

    /// The number of committed entries.
    fn size(&self, tenant: &str) -> Result<u64, StoreError>;

    /// For each of `keys`, the newest committed entry stored with it
    /// ([`EntryDraft::with_keys`]), read from one snapshot.
    fn find(&self, tenant: &str, keys: &[EntryKey]) -> Result<Vec<Option<u64>>, StoreError>;

    /// The first index from which every entry's keys are stored: 0, except
    /// for a log written by a Mandate that stored no keys, until
    /// [`Ledger::backfill_keys`] gives its older entries theirs.
    fn keyed_from(&self, tenant: &str) -> Result<u64, StoreError>;

    /// Stores keys for entries below [`Ledger::keyed_from`] (where a key is
    /// stored already, the newer entry stays), then marks the whole log
    /// keyed, in one transaction. Safe to repeat, and beside appends.
    fn backfill_keys(&self, tenant: &str, keys: Vec<(EntryKey, u64)>) -> Result<(), StoreError>;

    /// Entries `[start, end)`, at most [`ENTRIES_PAGE_MAX`].
    fn entries(&self, tenant: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError>;

    /// The root of the first `size` entries.
    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError>;

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    fn inclusion_proof(&self, tenant: &str, index: u64, size: u64) -> Result<Vec<Hash>, StoreError>;

    /// The consistency proof between the trees of `from` and `to` entries.
    fn consistency_proof(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Hash>, StoreError>;

    /// The committed entries of `tenant` that match `query`, in ascending
    /// index order, read from one snapshot.
    ///
    /// One call examines about [`SEARCH_EXAMINED_MAX`] candidate entries at
    /// most (those of the identity, when one is given, found through an
    /// index; otherwise every entry after the cursor), so a page may hold
    /// fewer than `limit` entries, even none, while more matches lie further
    /// on: continue with `after = page.next` while `next` is `Some`. Paging
    /// this way returns every match exactly once.
    fn search(&self, tenant: &str, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// The last checkpoint signed, if any.
    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// Signs a checkpoint of everything committed, after proving it consistent
    /// with the last one signed, and persists it. Returns the last one when
    /// nothing was appended since.
    fn sign_checkpoint(&self, tenant: &str, signer: Arc<SignerKey>) -> Result<SignedCheckpoint, StoreError>;

    /// Holds `tenant`'s log for one read-decide-append step: the caller reads
    /// what was appended since it last looked, at `known` entries (the first
    /// page of it comes with the hold, [`LogHold::take_fetched`], and the
    /// rest through [`LogHold::entries`]), decides
    /// on a state that includes it, and appends ([`LogHold::commit`]), and
    /// nobody appends in between, in this process or (PostgreSQL) any other.
    ///
    /// INVARIANT (held-head): while a hold lives, no other hold of the same
    /// log is granted, and its commit lands at exactly [`LogHold::size`] or
    /// fails with [`StoreError::Stale`]. Dropping a hold releases it without
    /// writing. A hold waits for the one before it; hold one log at a time.
    fn hold(&self, tenant: &str, known: u64) -> HoldFuture;

    /// Whether other processes may append to this store's logs while this
    /// one runs (PostgreSQL shared by several servers): a reader of the
    /// state it folds from a log must then look for their entries first.
    fn shared(&self) -> bool {
        false
    }
}

/// A pending [`Ledger::hold`].
pub type HoldFuture = Pin<Box<dyn Future<Output = Result<Box<dyn LogHold>, StoreError>> + Send>>;

/// A pending [`LogHold::find`].
pub type FindFuture = Pin<Box<dyn Future<Output = Result<Vec<Option<u64>>, StoreError>> + Send>>;

/// A pending read of entries through a [`LogHold`].
pub type EntriesFuture = Pin<Box<dyn Future<Output = Result<Vec<StoredEntry>, StoreError>> + Send>>;

/// A log held for one append ([`Ledger::hold`]).
pub trait LogHold: Send {
    /// The log's size when the hold was granted; it stays so until the commit.
    fn size(&self) -> u64;

    /// The entries from the `known` index the hold was asked with, read as
    /// it was granted: all of them up to [`LogHold::size`], or the first
    /// [`ENTRIES_PAGE_MAX`]. Empty when `known` is not below the size, and
    /// on every call after the first.
    fn take_fetched(&mut self) -> Vec<StoredEntry>;

    /// Entries `[start, end)` of the held log (`end` at most [`LogHold::size`],
    /// at most [`ENTRIES_PAGE_MAX`] of them).
    fn entries(&mut self, start: u64, end: u64) -> EntriesFuture;

    /// [`Ledger::find`] in the held log: every entry appended before the
    /// hold was granted counts, in this process or any other.
    fn find(&mut self, keys: Vec<EntryKey>) -> FindFuture;

    /// Appends `drafts` and `rows` (as [`Ledger::append_with_state`]) at
    /// [`LogHold::size`], commits, and releases the hold.
    fn commit(self: Box<Self>, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket;
}

/// Calls `f` with each of the first `size` entries of `tenant`'s log, in
/// order, reading a page ([`ENTRIES_PAGE_MAX`]) at a time: the one loop for
/// folding or exporting a whole log.
pub fn for_each_entry<E: From<StoreError>>(
    ledger: &dyn Ledger,
    tenant: &str,
    size: u64,
    mut f: impl FnMut(StoredEntry) -> Result<(), E>,
) -> Result<(), E> {
    let mut start = 0;
    while start < size {
        let end = size.min(start.saturating_add(ENTRIES_PAGE_MAX));
        for entry in ledger.entries(tenant, start, end)? {
            f(entry)?;
        }
        start = end;
    }
    Ok(())
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

/// A stored structure is not what the store wrote.
pub(crate) fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { reason: reason.into() }
}

/// A proof's failure as a store error.
pub(crate) fn prove_error(error: mandate_log::tree::ProveError<StoreError>) -> StoreError {
    match error {
        mandate_log::tree::ProveError::Range(range) => StoreError::Range(range),
        mandate_log::tree::ProveError::Source(source) => source,
    }
}

/// Refuses to sign for a log smaller than the last signed checkpoint: the
/// log was rolled back. Every backend calls it before proving consistency.
pub(crate) fn check_not_rolled_back(last: &SignedCheckpoint, size: u64) -> Result<(), StoreError> {
    let old = &last.checkpoint;
    if old.size > size {
        return Err(corrupt(format!("the log has {size} entries but a checkpoint of size {} was signed", old.size)));
    }
    Ok(())
}

/// The checkpoint to answer for a log of `size` entries with `root`, given
/// the last one persisted and the consistency `proof` from it: the last one
/// again (`Ok(None)`: same size and signer, nothing to persist), or a newly
/// signed one to persist (`Ok(Some)`).
///
/// INVARIANT (consistent-checkpoints): nothing is signed unless the proof
/// shows the log extends what was signed before. The one rule, for every
/// backend.
pub(crate) fn next_checkpoint(
    last: Option<&SignedCheckpoint>,
    size: u64,
    root: Hash,
    proof: &[Hash],
    signer: &SignerKey,
) -> Result<Option<SignedCheckpoint>, StoreError> {
    if let Some(last) = last {
        check_not_rolled_back(last, size)?;
        let old = &last.checkpoint;
        if !mandate_log::tree::verify_consistency(old.size, size, &old.root, &root, proof) {
            return Err(corrupt(format!(
                "the log of size {size} is not consistent with the checkpoint of size {} signed before",
                old.size
            )));
        }
        if old.size == size && old.origin == signer.name() {
            return Ok(None);
        }
    }
    mandate_log::Checkpoint { origin: signer.name().to_owned(), size, root }
        .sign(signer)
        .map(Some)
        .map_err(|error| StoreError::Database { message: format!("signing: {error}") })
}
