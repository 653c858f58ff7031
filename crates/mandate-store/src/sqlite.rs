//! The embedded backend: SQLite (bundled) in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only write connection. Appends reach it through
//! a bounded queue; it drains whatever is waiting (up to
//! [`SqliteOptions::batch_entries_max`]), assigns indexes and `prev` hashes,
//! writes entries, tree nodes, search rows and the appends' state rows in one
//! transaction, commits (one fsync), and only then answers every append of the
//! batch. Readers use their own connections: WAL lets them read the last
//! commit while the writer works.
//!
//! The file holds every tenant's signing key, so it is created readable by
//! its owner only. Several processes may share it (a server, and a command
//! creating a tenant while the server runs): every write takes SQLite's write
//! lock, and the writer re-reads a log's size under that lock before building
//! on its cached head, so it never appends on top of a stale one
//! (`INVARIANT (fresh-head)`).
//!
//! Tables:
//! - `logs(id, tenant, size, signer, indexed)`: one row per tenant log;
//!   `size` is the number of committed entries, `signer` the tenant's signer
//!   key text (empty for logs created before schema version 2), `indexed` how
//!   many entries `search_identity` covers.
//! - `entries(key, leaf, bytes)`: `key = log id << 40 | index`, so the rowid
//!   B-tree is the (log, index) index and costs nothing extra.
//! - `nodes(log, at, hash)`: every complete subtree of level ≥ 1 (level 0 is
//!   `entries.leaf`), keyed by the leaf that completes it and its level
//!   (`at = last leaf << 6 | level`), so that nodes are inserted in key order
//!   and the B-tree fills its pages instead of splitting them in half.
//! - `checkpoints(log, size, root, note)`: the last checkpoint signed.
//! - `search(key, type, identity, decision, time_us)`: one narrow row per
//!   entry (same key), written in the entry's transaction, so that a search
//!   scans ~50-byte rows rather than whole entries.
//! - `search_identity(segment, identity, key, type, decision, time_us)`: the
//!   same rows (those with an identity) ordered by `(identity, key)` within
//!   segments of [`SEGMENT_ENTRIES`] entries (`segment = key >> SEGMENT_BITS`).
//! - `state(log, kind, key, value)`: the state rows of each log
//!   ([`crate::StateRow`]), the current value of each object, written (or
//!   deleted) in the transaction of the entries that changed it; appends are
//!   applied in log order, so the last writer wins.
//! - `entry_keys(log, key, entry)`: the newest entry stored with each key
//!   ([`crate::EntryKey`]), written in the entry's transaction; `logs.keyed_from`
//!   is the first index from which every entry's keys are here (the size at
//!   migration to version 4, until [`crate::Ledger::backfill_keys`]).
//!
//! Why segments: an index ordered by identity alone takes every append to a
//! different leaf page per identity, and SQLite writes whole pages to the WAL
//! at each commit, so with a thousand active identities appends cost about
//! twice the CPU. Instead the writer copies a segment's rows into
//! `search_identity`, sorted, when the segment is complete, in the transaction
//! of the batch that completes it: the rows land together, in order, and each
//! page is written about once. A search by identity seeks the identity in
//! each complete segment after the cursor and scans the unfolded tail (fewer
//! than [`SEGMENT_ENTRIES`] rows of `search`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mandate_log::tree::{self, NodeId};
use mandate_log::{Checkpoint, Entry, EntryHead, Frontier, Hash, SignedCheckpoint, SignerKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use tokio::sync::OwnedMutexGuard;

use crate::{
    AppendTicket, Appended, ENTRIES_PAGE_MAX, EntriesFuture, EntryDraft, HoldFuture, Ledger, LogHold,
    SEARCH_EXAMINED_MAX, SEARCH_PAGE_MAX, SearchPage, SearchQuery, StateRow, StoreError, StoredEntry,
    check_not_rolled_back, corrupt, next_checkpoint, packed, prove_error,
};

/// Indexes occupy the low 40 bits of an entry's key: 1.1 trillion entries per
/// tenant log.
const INDEX_BITS: u32 = 40;

/// The schema version in `PRAGMA user_version`. Version 2 added
/// `logs.signer` and the `search` tables; version 3 the `state` table;
/// version 4 the `entry_keys` table and `logs.keyed_from`; version 5 keeps
/// new entries packed (`packed.rs`), which a version-4 mandate cannot read;
/// version 6 packs them with dictionary 2, which a version-5 one cannot.
const SCHEMA_VERSION: i64 = 6;

/// Entries per segment of `search_identity`, as a power of two: 4,096, so
/// that the unfolded tail a search by identity scans stays under a
/// millisecond, and a scan of a 10-million-entry log probes 2,442 segments.
const SEGMENT_BITS: u32 = 12;

/// Entries per segment of `search_identity`.
const SEGMENT_ENTRIES: u64 = 1 << SEGMENT_BITS;

/// What seeking one segment of `search_identity` counts for against
/// [`SEARCH_EXAMINED_MAX`], in candidates: a seek costs about as much as
/// stepping through a dozen rows.
const SEGMENT_PROBE_COST: u64 = 16;

/// How many idle read connections are kept.
const READERS_IDLE_MAX: usize = 8;

/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// How often the checkpointer copies the WAL into the database file.
const WAL_CHECKPOINT_INTERVAL_MS: u64 = 200;

/// The size the WAL is cut back to once reused (`journal_size_limit`):
/// above what 200 ms of appends write at full speed, so that a WAL that
/// keeps up is never cut and regrown.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// SQLite's page size (its default), and the header of each WAL frame.
const PAGE_SIZE_BYTES: i64 = 4096;
const WAL_FRAME_HEADER_BYTES: i64 = 24;

/// The page cache of the writer's connection, in KiB: the pages every
/// append touches (the ends of the tables' B-trees, the tree's frontier,
/// the upper levels of the random-keyed indexes); the operating system
/// caches the rest of the file. Not larger: when a B-tree rebalance
/// renumbers pages, SQLite parks one at the page after the lock-byte page,
/// and the commit then walks the whole cache to drop it. With 16 MiB that
/// walk cost about 150 µs on a lone commit, and the server's memory was 12
/// MiB more, for no gain in throughput (docs/benchmarks.md, "The writer's
/// page cache").
const WRITER_PAGE_CACHE_KIB: i64 = 4 * 1024;

/// The page cache of each reader's connection (at most [`READERS_IDLE_MAX`]
/// are kept) and of the checkpointer's, in KiB. Small: the operating
/// system caches the file as well, and a cache per connection, each filled
/// by a long export, would otherwise make the server's memory grow with
/// the number of connections (8 × 16 MiB).
const READER_PAGE_CACHE_KIB: i64 = 2 * 1024;

/// A new database.
const SCHEMA: &str = "
CREATE TABLE logs (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL CHECK (size >= 0),
    signer TEXT NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE entries (
    key INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL CHECK (length(leaf) = 32),
    bytes BLOB NOT NULL
);
CREATE TABLE nodes (
    log INTEGER NOT NULL,
    at INTEGER NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (log, at)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    log INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL
);
";

/// The search table, in new databases and when migrating from version 1.
const SEARCH_SCHEMA: &str = "
CREATE TABLE search (
    key INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    identity TEXT,
    decision TEXT,
    time_us INTEGER NOT NULL
);
CREATE TABLE search_identity (
    segment INTEGER NOT NULL,
    identity TEXT NOT NULL,
    key INTEGER NOT NULL,
    type TEXT NOT NULL,
    decision TEXT,
    time_us INTEGER NOT NULL,
    PRIMARY KEY (segment, identity, key)
) WITHOUT ROWID;
";

/// The state table, in new databases and when migrating from version 2 (or 1).
const STATE_SCHEMA: &str = "
CREATE TABLE state (
    log INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (log, kind, key)
) WITHOUT ROWID;
";

/// The key index, in new databases and when migrating from version 3 (or
/// earlier); `logs.keyed_from` comes with it.
const KEYS_SCHEMA: &str = "
CREATE TABLE entry_keys (
    log INTEGER NOT NULL,
    key BLOB NOT NULL,
    entry INTEGER NOT NULL,
    PRIMARY KEY (log, key)
) WITHOUT ROWID;
ALTER TABLE logs ADD COLUMN keyed_from INTEGER NOT NULL DEFAULT 0;
";

/// Stores one key of one entry; a later entry with the same key wins.
const INSERT_KEY_SQL: &str = "INSERT INTO entry_keys (log, key, entry) VALUES (?1, ?2, ?3)
ON CONFLICT (log, key) DO UPDATE SET entry = max(entry, excluded.entry)";

/// Copies the search rows with an identity of keys `[?1, ?2)`, one complete
/// segment, into `search_identity` as segment `?3`, in index order.
const FOLD_SEGMENT_SQL: &str = "INSERT INTO search_identity (segment, identity, key, type, decision, time_us)
SELECT ?3, identity, key, type, decision, time_us FROM search
WHERE key >= ?1 AND key < ?2 AND identity IS NOT NULL ORDER BY identity, key";

/// The first `?8` matches in the key range `[?1, ?2)` of `search`, filtered
/// inside SQLite (about twice as fast as stepping every row out).
const SEARCH_RANGE_SQL: &str = "SELECT key FROM search WHERE key >= ?1 AND key < ?2
  AND (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR decision = ?4)
  AND (?5 IS NULL OR time_us >= ?5) AND (?6 IS NULL OR time_us < ?6)
  AND (?7 IS NULL OR identity = ?7)
ORDER BY key LIMIT ?8";

/// The entries of identity `?2` in segment `?1` from key `?3` on, each with
/// whether it matches the other filters: every candidate comes out, so that
/// the caller can count them.
const SEARCH_SEGMENT_SQL: &str = "SELECT key,
  (?4 IS NULL OR type = ?4) AND (?5 IS NULL OR decision = ?5)
  AND (?6 IS NULL OR time_us >= ?6) AND (?7 IS NULL OR time_us < ?7)
FROM search_identity WHERE segment = ?1 AND identity = ?2 AND key >= ?3 ORDER BY key";

/// Tuning for [`SqliteLedger`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The most entries committed in one transaction.
    pub batch_entries_max: usize,
    /// The most appends waiting for the writer; further appends block their
    /// caller (back-pressure rather than unbounded memory).
    pub queue_appends_max: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { batch_entries_max: 4_096, queue_appends_max: 8_192 }
    }
}

/// Where an append's outcome goes.
type AppendReply = tokio::sync::oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// An append waiting for the writer.
struct PendingAppend {
    tenant: String,
    drafts: Vec<EntryDraft>,
    /// Written with the entries, or not at all.
    rows: Vec<StateRow>,
    reply: AppendReply,
    /// The hold it commits, if any: the log's size it must land at, and the
    /// guard that keeps other holds out until the commit is over.
    hold: Option<(u64, OwnedMutexGuard<()>)>,
}

/// Work for the writer thread.
enum Command {
    Append(PendingAppend),
    /// `signer` is the key's private text.
    CreateLog {
        tenant: String,
        signer: String,
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
    Sign {
        tenant: String,
        signer: Arc<SignerKey>,
        reply: mpsc::SyncSender<Result<SignedCheckpoint, StoreError>>,
    },
    BackfillKeys {
        tenant: String,
        keys: Vec<(crate::EntryKey, u64)>,
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
}

/// The embedded ledger. Cloning is not needed: share it behind an `Arc`.
pub struct SqliteLedger {
    path: PathBuf,
    commands: Option<SyncSender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// Dropping this sender stops the checkpointer.
    checkpointer_stop: Option<SyncSender<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    /// One lock per tenant for [`Ledger::hold`]; the data directory's lock
    /// keeps other servers out, so holds need only exclude each other here.
    holds: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Idle read connections, shared with holds.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_connection(&self.path, READER_PAGE_CACHE_KIB)?,
        };
        let result = f(&connection);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < READERS_IDLE_MAX {
            idle.push(connection);
        }
        result
    }

    /// The newest committed entry stored with each key.
    fn find(&self, tenant: &str, keys: &[crate::EntryKey]) -> Result<Vec<Option<u64>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read_log(tenant, |connection, log, _| {
            let mut statement = connection
                .prepare_cached("SELECT entry FROM entry_keys WHERE log = ?1 AND key = ?2")
                .map_err(db_error)?;
            keys.iter()
                .map(|key| {
                    let entry: Option<i64> = statement
                        .query_row(params![log, key.as_slice()], |row| row.get(0))
                        .optional()
                        .map_err(db_error)?;
                    entry
                        .map(|entry| u64::try_from(entry).map_err(|_| corrupt("a key names a negative entry")))
                        .transpose()
                })
                .collect()
        })
    }

    /// A consistent read of one log: the rows read inside `f` all come from
    /// one snapshot.
    fn read_log<T>(
        &self,
        tenant: &str,
        f: impl FnOnce(&Connection, i64, u64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read(|connection| {
            let transaction = connection.unchecked_transaction().map_err(db_error)?;
            let (log, size) = log_row(&transaction, tenant)?;
            let result = f(&transaction, log, size);
            transaction.finish().map_err(db_error)?;
            result
        })
    }

    /// Entries `[start, end)` of `tenant`'s log as committed.
    fn entries(&self, tenant: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.read_log(tenant, |connection, log, size| {
            if start > end || end > size || end - start > ENTRIES_PAGE_MAX {
                return Err(StoreError::EntryRange { start, end, size });
            }
            let mut statement = connection
                .prepare_cached("SELECT key, leaf, bytes FROM entries WHERE key >= ?1 AND key < ?2 ORDER BY key")
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![entry_key(log, start), entry_key(log, end)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, Vec<u8>>(2)?))
                })
                .map_err(db_error)?;
            let mut entries = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
            for (expected, row) in (start..end).zip(rows) {
                let (key, leaf, bytes) = row.map_err(db_error)?;
                if key != entry_key(log, expected) {
                    return Err(corrupt(format!("entry {expected} is missing")));
                }
                let bytes = packed::canonical_bytes(tenant, expected, bytes)?;
                entries.push(StoredEntry { index: expected, leaf_hash: hash_from_blob(leaf)?, bytes });
            }
            if entries.len() as u64 != end - start {
                return Err(corrupt(format!("entries [{start}, {end}) are incomplete")));
            }
            Ok(entries)
        })
    }
}

/// A held SQLite log: the tenant's hold lock, and the size it was granted at.
struct SqliteHold {
    tenant: String,
    size: u64,
    fetched: Vec<StoredEntry>,
    guard: OwnedMutexGuard<()>,
    readers: Arc<Readers>,
    commands: Option<SyncSender<Command>>,
}

impl LogHold for SqliteHold {
    fn size(&self) -> u64 {
        self.size
    }

    fn take_fetched(&mut self) -> Vec<StoredEntry> {
        std::mem::take(&mut self.fetched)
    }

    fn entries(&mut self, start: u64, end: u64) -> EntriesFuture {
        let result = if end > self.size {
            Err(StoreError::EntryRange { start, end, size: self.size })
        } else {
            self.readers.entries(&self.tenant, start, end)
        };
        Box::pin(std::future::ready(result))
    }

    fn find(&mut self, keys: Vec<crate::EntryKey>) -> crate::FindFuture {
        // Nothing is appended while the hold lives, so the committed log is the held one.
        Box::pin(std::future::ready(self.readers.find(&self.tenant, &keys)))
    }

    fn commit(self: Box<Self>, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket {
        let SqliteHold { tenant, size, guard, commands, .. } = *self;
        if let Err(error) = crate::check_append(&drafts, &rows) {
            return AppendTicket::done(Err(error));
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let append = PendingAppend { tenant, drafts, rows, reply, hold: Some((size, guard)) };
        match commands.map(|commands| commands.send(Command::Append(append))) {
            Some(Ok(())) => AppendTicket::waiting(receiver),
            _ => AppendTicket::done(Err(StoreError::WriterStopped)),
        }
    }
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database { message: error.to_string() }
}

fn open_connection(path: &Path, cache_kib: i64) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(db_error)?;
    connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db_error)?;
    // INVARIANT (durable-commit): WAL with synchronous=FULL fsyncs the WAL on
    // every commit, so a committed append survives power loss.
    connection.pragma_update(None, "journal_mode", "WAL").map_err(db_error)?;
    connection.pragma_update(None, "synchronous", "FULL").map_err(db_error)?;
    connection.pragma_update(None, "cache_size", -cache_kib).map_err(db_error)?;
    // The checkpointer thread moves the WAL into the database, so the writer
    // never stalls on it.
    connection.pragma_update(None, "wal_autocheckpoint", 0).map_err(db_error)?;
    // The WAL is reused from its start after each complete checkpoint, but a
    // burst that outran the checkpointer would otherwise leave it at its
    // largest size for good: cut back at the first commit after a restart.
    connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES).map_err(db_error)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

fn hash_from_blob(blob: Vec<u8>) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(blob).map(Hash).map_err(|_| corrupt("a stored hash is not 32 bytes"))
}

fn entry_key(log: i64, index: u64) -> i64 {
    (log << INDEX_BITS) | index as i64
}

/// The index part of an entry's key.
fn key_index(key: i64) -> u64 {
    (key as u64) & ((1 << INDEX_BITS) - 1)
}

/// A node's key: the index of its last leaf, then its level. Nodes are
/// completed in this order, so inserts always go to the end of the log's range.
fn node_key(id: NodeId) -> i64 {
    // In u128 so that no id can overflow; a key past i64 is simply not found.
    let last_leaf = ((u128::from(id.index) + 1) << id.level) - 1;
    i64::try_from((last_leaf << 6) | u128::from(id.level)).unwrap_or(i64::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads complete tree nodes of one log.
fn read_node(connection: &Connection, log: i64, id: NodeId) -> Result<Hash, StoreError> {
    let blob: Option<Vec<u8>> = if id.level == 0 {
        connection.prepare_cached("SELECT leaf FROM entries WHERE key = ?1").and_then(|mut statement| {
            statement.query_row(params![entry_key(log, id.index)], |row| row.get(0)).optional()
        })
    } else {
        connection
            .prepare_cached("SELECT hash FROM nodes WHERE log = ?1 AND at = ?2")
            .and_then(|mut statement| statement.query_row(params![log, node_key(id)], |row| row.get(0)).optional())
    }
    .map_err(db_error)?;
    hash_from_blob(blob.ok_or_else(|| corrupt(format!("tree node {}/{} is missing", id.level, id.index)))?)
}

fn log_row(connection: &Connection, tenant: &str) -> Result<(i64, u64), StoreError> {
    connection
        .prepare_cached("SELECT id, size FROM logs WHERE tenant = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![tenant], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))).optional()
        })
        .map_err(db_error)?
        .map(|(id, size)| (id, u64::try_from(size).unwrap_or(0)))
        .ok_or_else(|| StoreError::UnknownTenant { tenant: tenant.to_owned() })
}

/// How many entries of log `log` `search_identity` covers.
fn indexed_size(connection: &Connection, log: i64) -> Result<u64, StoreError> {
    let indexed: i64 = connection
        .prepare_cached("SELECT indexed FROM logs WHERE id = ?1")
        .and_then(|mut statement| statement.query_row(params![log], |row| row.get(0)))
        .map_err(db_error)?;
    Ok(u64::try_from(indexed).unwrap_or(0))
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteLedger, StoreError> {
        SqliteLedger::open_with(path, SqliteOptions::default())
    }

    /// Opens the ledger with explicit tuning.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteLedger, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_owner_only(&path)?;
        let mut connection = open_connection(&path, WRITER_PAGE_CACHE_KIB)?;
        migrate(&mut connection)?;
        let (commands, queue) = mpsc::sync_channel(options.queue_appends_max.max(1));
        let wal_too_long = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
            connection,
            heads: HashMap::new(),
            batch_entries_max: options.batch_entries_max.max(1),
            wal_too_long: wal_too_long.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("mandate-ledger-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|error| StoreError::Database { message: format!("starting the writer thread: {error}") })?;
        let (checkpointer_stop, stop) = mpsc::sync_channel(0);
        let checkpointer_connection = open_connection(&path, READER_PAGE_CACHE_KIB)?;
        let checkpointer = std::thread::Builder::new()
            .name("mandate-ledger-checkpointer".into())
            .spawn(move || checkpoint_wal_until_stopped(&checkpointer_connection, &stop, &wal_too_long))
            .map_err(|error| StoreError::Database { message: format!("starting the checkpointer thread: {error}") })?;
        Ok(SqliteLedger {
            path: path.clone(),
            commands: Some(commands),
            writer: Some(handle),
            checkpointer_stop: Some(checkpointer_stop),
            checkpointer: Some(checkpointer),
            readers: Arc::new(Readers { path: path.clone(), idle: Mutex::new(Vec::new()) }),
            holds: Mutex::new(HashMap::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.readers.read(f)
    }

    /// A consistent read of one log: the rows read inside `f` all come from
    /// one snapshot.
    fn read_log<T>(
        &self,
        tenant: &str,
        f: impl FnOnce(&Connection, i64, u64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.readers.read_log(tenant, f)
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands.as_ref().ok_or(StoreError::WriterStopped)?.send(command).map_err(|_| StoreError::WriterStopped)
    }
}

impl Drop for SqliteLedger {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish the batches already sent.
        self.commands.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.checkpointer_stop.take();
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

/// Copies committed WAL frames into the database file every
/// [`WAL_CHECKPOINT_INTERVAL_MS`] without blocking the writer (PASSIVE), and
/// once more, truncating the WAL, when the ledger closes.
///
/// Under appends without a pause a passive checkpoint never reaches the
/// WAL's end (new frames land while it copies), so the WAL is never reused
/// from its start and grows for as long as the load lasts (640 MB in 15 s
/// of a server flat out). Past [`WAL_SIZE_LIMIT_BYTES`] it sets
/// `wal_too_long`, and the writer, between two batches, copies the few
/// frames left itself, so that its next commit starts the WAL again from
/// the beginning. (A RESTART checkpoint from this thread would wait for a
/// gap between commits that a busy writer never leaves.)
fn checkpoint_wal_until_stopped(connection: &Connection, stop: &Receiver<()>, wal_too_long: &AtomicBool) {
    let interval = Duration::from_millis(WAL_CHECKPOINT_INTERVAL_MS);
    let restart_frames = WAL_SIZE_LIMIT_BYTES / (PAGE_SIZE_BYTES + WAL_FRAME_HEADER_BYTES);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // A failed checkpoint loses nothing: the frames stay in the WAL.
        // Its row: (busy, frames in the WAL, frames copied).
        let frames = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1));
        if frames.is_ok_and(|frames| frames > restart_frames) {
            wal_too_long.store(true, Ordering::Relaxed);
        }
    }
    // Without waiting: another process using the file would make it wait
    // for that process's writes, and a WAL left behind loses nothing.
    let _ = connection.busy_timeout(Duration::ZERO);
    let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Creates the database file readable and writable by its owner only (it
/// holds signing keys); SQLite gives its WAL and shared-memory files the same
/// mode. An existing file is left as it is.
fn create_owner_only(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Database { message: format!("creating `{}`: {error}", path.display()) }),
    }
}

fn schema_version(connection: &Connection) -> Result<i64, StoreError> {
    connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db_error)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, holding the
/// write lock so that two processes opening the file at once migrate it once.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    if schema_version(connection)? == SCHEMA_VERSION {
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
    let mut version = schema_version(&transaction)?;
    if version == 0 {
        // Version 1 created its tables before setting the version.
        let has_logs: bool = transaction
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'logs')",
                [],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        if has_logs {
            version = 1;
        }
    }
    match version {
        0 => {
            transaction
                .execute_batch(SCHEMA)
                .and_then(|()| transaction.execute_batch(SEARCH_SCHEMA))
                .and_then(|()| transaction.execute_batch(STATE_SCHEMA))
                .and_then(|()| transaction.execute_batch(KEYS_SCHEMA))
                .map_err(db_error)?;
        }
        SCHEMA_VERSION => return Ok(()), // another process migrated it meanwhile
        newer if newer > SCHEMA_VERSION => {
            return Err(StoreError::Database {
                message: format!("the database schema is version {newer}, newer than this mandate ({SCHEMA_VERSION})"),
            });
        }
        _ => {
            // One step per version, each from the one before.
            if version == 1 {
                migrate_1_to_2(&transaction)?;
                version = 2;
            }
            if version == 2 {
                // Logs written before version 3 have no state rows: whoever
                // writes them starts with the next append.
                transaction.execute_batch(STATE_SCHEMA).map_err(db_error)?;
                version = 3;
            }
            if version == 3 {
                // Entries written before version 4 have no keys until the
                // server backfills them (it folds the log at start anyway).
                transaction.execute_batch(KEYS_SCHEMA).map_err(db_error)?;
                transaction.execute("UPDATE logs SET keyed_from = size", []).map_err(db_error)?;
                version = 4;
            }
            if version == 4 {
                // Rows written before stay plain, which version 5 reads too.
                version = 5;
            }
            if version == 5 {
                // Rows packed with dictionary 1 stay so; version 6 reads both.
                version = 6;
            }
            if version != SCHEMA_VERSION {
                return Err(StoreError::Database {
                    message: format!("the database schema is version {version}, which this mandate cannot migrate"),
                });
            }
        }
    }
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_error)?;
    transaction.commit().map_err(db_error)
}

/// Version 2: each log keeps its signer key (empty for the logs that exist
/// already), and every entry has a search row.
fn migrate_1_to_2(transaction: &Connection) -> Result<(), StoreError> {
    transaction
        .execute_batch(
            "ALTER TABLE logs ADD COLUMN signer TEXT NOT NULL DEFAULT '';
             ALTER TABLE logs ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;",
        )
        .map_err(db_error)?;
    transaction.execute_batch(SEARCH_SCHEMA).map_err(db_error)?;
    index_existing_entries(transaction)?;
    // Those rows have no identity: whole segments count as folded.
    transaction
        .execute("UPDATE logs SET indexed = size - size % ?1", params![to_i64(SEGMENT_ENTRIES)])
        .map_err(db_error)?;
    Ok(())
}

/// Gives every entry written before schema version 2 its search row: its type
/// and time, read back from its bytes. Those entries have no identity or
/// decision terms (nobody gave them), so only type and time find them.
fn index_existing_entries(connection: &Connection) -> Result<(), StoreError> {
    let mut select = connection.prepare("SELECT key, bytes FROM entries ORDER BY key").map_err(db_error)?;
    let mut insert =
        connection.prepare("INSERT INTO search (key, type, time_us) VALUES (?1, ?2, ?3)").map_err(db_error)?;
    let mut rows = select.query([]).map_err(db_error)?;
    while let Some(row) = rows.next().map_err(db_error)? {
        let key: i64 = row.get(0).map_err(db_error)?;
        let bytes = row.get_ref(1).and_then(|value| Ok(value.as_blob()?)).map_err(db_error)?;
        let unreadable = |error: mandate_log::EntryError| corrupt(format!("entry key {key} does not parse: {error}"));
        let entry = Entry::parse(bytes).map_err(unreadable)?;
        let time_us = crate::time_us(&entry.time).map_err(unreadable)?;
        insert.execute(params![key, entry.entry_type, time_us]).map_err(db_error)?;
    }
    Ok(())
}

impl Ledger for SqliteLedger {
    fn create_log(&self, tenant: &str, signer: &SignerKey) -> Result<(), StoreError> {
        mandate_log::entry::check_tenant(tenant).map_err(|error| StoreError::InvalidEntry { position: 0, error })?;
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Command::CreateLog { tenant: tenant.to_owned(), signer: signer.to_private_text(), reply })?;
        result.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    fn signer(&self, tenant: &str) -> Result<SignerKey, StoreError> {
        let text: String = self
            .read(|connection| {
                connection
                    .prepare_cached("SELECT signer FROM logs WHERE tenant = ?1")
                    .and_then(|mut statement| statement.query_row(params![tenant], |row| row.get(0)).optional())
                    .map_err(db_error)
            })?
            .ok_or_else(|| StoreError::UnknownTenant { tenant: tenant.to_owned() })?;
        if text.is_empty() {
            return Err(StoreError::NoSigner { tenant: tenant.to_owned() });
        }
        SignerKey::parse(&text)
            .map_err(|error| corrupt(format!("the signing key stored for tenant `{tenant}` does not parse: {error}")))
    }

    fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT tenant FROM logs ORDER BY tenant").map_err(db_error)?;
            let tenants = statement.query_map([], |row| row.get(0)).map_err(db_error)?;
            tenants.collect::<Result<Vec<String>, _>>().map_err(db_error)
        })
    }

    fn append_with_state(&self, tenant: &str, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket {
        if let Err(error) = crate::check_append(&drafts, &rows) {
            return AppendTicket::done(Err(error));
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let append = PendingAppend { tenant: tenant.to_owned(), drafts, rows, reply, hold: None };
        match self.send(Command::Append(append)) {
            Ok(()) => AppendTicket::waiting(receiver),
            Err(error) => AppendTicket::done(Err(error)),
        }
    }

    fn state_rows(&self, tenant: &str, kind: Option<&str>) -> Result<Vec<StateRow>, StoreError> {
        self.read_log(tenant, |connection, log, _| {
            let mut statement = match kind {
                None => {
                    connection.prepare_cached("SELECT kind, key, value FROM state WHERE log = ?1 ORDER BY kind, key")
                }
                Some(_) => connection.prepare_cached(
                    "SELECT kind, key, value FROM state WHERE log = ?1 AND kind = ?2 ORDER BY kind, key",
                ),
            }
            .map_err(db_error)?;
            let read = |row: &rusqlite::Row<'_>| {
                // Values are written as BLOBs; one edited by hand may come
                // back as TEXT, and is still read, so that a replay can name
                // it as a difference instead of failing.
                let value = match row.get_ref(2)? {
                    rusqlite::types::ValueRef::Text(bytes) | rusqlite::types::ValueRef::Blob(bytes) => bytes.to_vec(),
                    other => other.as_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                };
                Ok(StateRow { kind: row.get(0)?, key: row.get(1)?, value: Some(value) })
            };
            let rows = match kind {
                None => statement.query_map(params![log], read),
                Some(kind) => statement.query_map(params![log, kind], read),
            }
            .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn size(&self, tenant: &str) -> Result<u64, StoreError> {
        self.read(|connection| log_row(connection, tenant).map(|(_, size)| size))
    }

    fn entries(&self, tenant: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.readers.entries(tenant, start, end)
    }

    fn find(&self, tenant: &str, keys: &[crate::EntryKey]) -> Result<Vec<Option<u64>>, StoreError> {
        self.readers.find(tenant, keys)
    }

    fn keyed_from(&self, tenant: &str) -> Result<u64, StoreError> {
        self.read_log(tenant, |connection, log, _| {
            let from: i64 = connection
                .prepare_cached("SELECT keyed_from FROM logs WHERE id = ?1")
                .and_then(|mut statement| statement.query_row(params![log], |row| row.get(0)))
                .map_err(db_error)?;
            u64::try_from(from).map_err(|_| corrupt("`keyed_from` is negative"))
        })
    }

    fn backfill_keys(&self, tenant: &str, keys: Vec<(crate::EntryKey, u64)>) -> Result<(), StoreError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Command::BackfillKeys { tenant: tenant.to_owned(), keys, reply })?;
        result.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError> {
        self.read_log(tenant, |connection, log, log_size| {
            if size > log_size {
                return Err(StoreError::EntryRange { start: 0, end: size, size: log_size });
            }
            tree::root(size, &mut |id| read_node(connection, log, id))
        })
    }

    fn inclusion_proof(&self, tenant: &str, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.read_log(tenant, |connection, log, log_size| {
            if size > log_size {
                return Err(StoreError::EntryRange { start: 0, end: size, size: log_size });
            }
            tree::inclusion_proof(index, size, &mut |id| read_node(connection, log, id)).map_err(prove_error)
        })
    }

    fn consistency_proof(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        self.read_log(tenant, |connection, log, log_size| {
            if to > log_size {
                return Err(StoreError::EntryRange { start: 0, end: to, size: log_size });
            }
            tree::consistency_proof(from, to, &mut |id| read_node(connection, log, id)).map_err(prove_error)
        })
    }

    fn search(&self, tenant: &str, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        self.read_log(tenant, |connection, log, size| search_log(connection, tenant, log, size, query))
    }

    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.read_log(tenant, |connection, log, _| read_checkpoint(connection, log))
    }

    fn sign_checkpoint(&self, tenant: &str, signer: Arc<SignerKey>) -> Result<SignedCheckpoint, StoreError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Command::Sign { tenant: tenant.to_owned(), signer, reply })?;
        result.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    fn hold(&self, tenant: &str, known: u64) -> HoldFuture {
        let lock =
            self.holds.lock().unwrap_or_else(PoisonError::into_inner).entry(tenant.to_owned()).or_default().clone();
        let (tenant, readers, commands) = (tenant.to_owned(), self.readers.clone(), self.commands.clone());
        Box::pin(async move {
            let guard = lock.lock_owned().await;
            let size = readers.read(|connection| log_row(connection, &tenant).map(|(_, size)| size))?;
            let fetched = if known < size {
                readers.entries(&tenant, known, size.min(known.saturating_add(ENTRIES_PAGE_MAX)))?
            } else {
                Vec::new()
            };
            Ok(Box::new(SqliteHold { tenant, size, fetched, guard, readers, commands }) as Box<dyn LogHold>)
        })
    }
}

/// One page of a search in the log `log` (`tenant`'s) of `size` committed entries.
///
/// Without an identity the candidates are the next [`SEARCH_EXAMINED_MAX`]
/// entries after the cursor, filtered inside SQLite; with one, see
/// [`identity_candidates`]. Then it reads the matching entries.
fn search_log(
    connection: &Connection,
    tenant: &str,
    log: i64,
    size: u64,
    query: &SearchQuery,
) -> Result<SearchPage, StoreError> {
    let limit = query.limit.clamp(1, SEARCH_PAGE_MAX);
    let start = query.after.map_or(0, |after| after.saturating_add(1));
    if start >= size {
        return Ok(SearchPage { entries: Vec::new(), next: None });
    }
    let found = match &query.identity {
        None => {
            let end = size.min(start.saturating_add(SEARCH_EXAMINED_MAX));
            let matches = range_matches(connection, query, entry_key(log, start), entry_key(log, end), limit)?;
            Candidates { matches, last_examined: end - 1 }
        }
        Some(identity) => identity_candidates(connection, log, size, start, identity, query, limit)?,
    };
    let mut read_entry =
        connection.prepare_cached("SELECT leaf, bytes FROM entries WHERE key = ?1").map_err(db_error)?;
    let mut entries = Vec::with_capacity(found.matches.len());
    for key in found.matches {
        let (leaf, bytes) = read_entry
            .query_row(params![key], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)))
            .optional()
            .map_err(db_error)?
            .ok_or_else(|| corrupt(format!("entry {} has a search row but no entry", key_index(key))))?;
        let bytes = packed::canonical_bytes(tenant, key_index(key), bytes)?;
        entries.push(StoredEntry { index: key_index(key), leaf_hash: hash_from_blob(leaf)?, bytes });
    }
    let next = match entries.last() {
        Some(entry) if entries.len() == limit => Some(entry.index),
        // The page is not full: everything up to the last candidate examined
        // has been seen, and there is more only if the log goes on.
        _ => Some(found.last_examined).filter(|&last| last + 1 < size),
    };
    Ok(SearchPage { entries, next })
}

/// What one search call found.
struct Candidates {
    /// The keys of the matches, ascending.
    matches: Vec<i64>,
    /// The index of the last entry examined: every entry from the cursor up
    /// to it that matches is in `matches` (unless the page filled first).
    last_examined: u64,
}

/// The first `limit` matches of `query` (its identity included, if any) in
/// the key range `[from, to)` of `search`.
fn range_matches(
    connection: &Connection,
    query: &SearchQuery,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<i64>, StoreError> {
    let mut statement = connection.prepare_cached(SEARCH_RANGE_SQL).map_err(db_error)?;
    statement
        .query_map(
            params![
                from,
                to,
                query.entry_type,
                query.decision,
                query.since_us,
                query.until_us,
                query.identity,
                to_i64(limit as u64)
            ],
            |row| row.get(0),
        )
        .and_then(Iterator::collect)
        .map_err(db_error)
}

/// The candidates of a search by identity from index `start`: the identity's
/// entries in each complete segment of `search_identity` (each seek counting
/// [`SEGMENT_PROBE_COST`]), until `limit` matches or [`SEARCH_EXAMINED_MAX`]
/// candidates, then the unfolded tail of `search`, filtered inside SQLite.
fn identity_candidates(
    connection: &Connection,
    log: i64,
    size: u64,
    start: u64,
    identity: &str,
    query: &SearchQuery,
    limit: usize,
) -> Result<Candidates, StoreError> {
    let indexed = indexed_size(connection, log)?.min(size);
    let mut probe = connection.prepare_cached(SEARCH_SEGMENT_SQL).map_err(db_error)?;
    let mut matches = Vec::new();
    let mut examined = 0;
    let mut position = start;
    while position < indexed {
        if examined >= SEARCH_EXAMINED_MAX {
            return Ok(Candidates { matches, last_examined: position - 1 });
        }
        examined += SEGMENT_PROBE_COST;
        let from = entry_key(log, position);
        let mut rows = probe
            .query(params![
                from >> SEGMENT_BITS,
                identity,
                from,
                query.entry_type,
                query.decision,
                query.since_us,
                query.until_us
            ])
            .map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            let key: i64 = row.get(0).map_err(db_error)?;
            // NULL (a filter on a term the entry lacks) is no match.
            if row.get::<_, Option<bool>>(1).map_err(db_error)? == Some(true) {
                matches.push(key);
            }
            examined += 1;
            if matches.len() == limit || examined >= SEARCH_EXAMINED_MAX {
                return Ok(Candidates { matches, last_examined: key_index(key) });
            }
        }
        position = ((position >> SEGMENT_BITS) + 1) << SEGMENT_BITS;
    }
    let tail = range_matches(connection, query, entry_key(log, position), entry_key(log, size), limit - matches.len())?;
    matches.extend(tail);
    Ok(Candidates { matches, last_examined: size - 1 })
}

fn read_checkpoint(connection: &Connection, log: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
    let row: Option<(i64, Vec<u8>, String)> = connection
        .prepare_cached("SELECT size, root, note FROM checkpoints WHERE log = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![log], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).optional()
        })
        .map_err(db_error)?;
    let Some((size, root, note)) = row else { return Ok(None) };
    let parsed = mandate_log::note::Note::parse(note.as_bytes())
        .ok()
        .and_then(|note| Checkpoint::parse_text(&note.text).ok())
        .ok_or_else(|| corrupt("the stored checkpoint does not parse"))?;
    let root = hash_from_blob(root)?;
    if parsed.size != u64::try_from(size).unwrap_or(u64::MAX) || parsed.root != root {
        return Err(corrupt("the stored checkpoint's note differs from its size and root"));
    }
    Ok(Some(SignedCheckpoint { checkpoint: parsed, note }))
}

/// The in-memory head of one log: what the next append builds on.
#[derive(Debug, Clone)]
struct Head {
    log: i64,
    frontier: Frontier,
    last_leaf: Hash,
    /// How many entries `search_identity` covers: whole segments.
    indexed: u64,
}

/// The writer thread's state.
struct Writer {
    connection: Connection,
    heads: HashMap<String, Head>,
    batch_entries_max: usize,
    /// Set by the checkpointer: the WAL is past its limit and must be
    /// checkpointed to its end between two batches.
    wal_too_long: Arc<AtomicBool>,
}

/// One append of a batch and its outcome, to be sent after the commit.
struct Staged {
    reply: AppendReply,
    result: Result<Vec<Appended>, StoreError>,
    /// Released once the batch is over, committed or not.
    guard: Option<OwnedMutexGuard<()>>,
}

impl Writer {
    fn run(&mut self, queue: Receiver<Command>) {
        while let Ok(command) = queue.recv() {
            let mut appends = Vec::new();
            let mut entries = 0;
            let mut next = Some(command);
            // Group commit: take everything already waiting, up to the batch limit.
            while let Some(command) = next.take() {
                match command {
                    Command::Append(append) => {
                        entries += append.drafts.len();
                        appends.push(append);
                    }
                    Command::CreateLog { tenant, signer, reply } => {
                        self.commit_appends(std::mem::take(&mut appends));
                        let _ = reply.send(self.create_log(&tenant, &signer));
                    }
                    Command::Sign { tenant, signer, reply } => {
                        self.commit_appends(std::mem::take(&mut appends));
                        let _ = reply.send(self.sign(&tenant, &signer));
                    }
                    Command::BackfillKeys { tenant, keys, reply } => {
                        self.commit_appends(std::mem::take(&mut appends));
                        let _ = reply.send(self.backfill_keys(&tenant, &keys));
                    }
                }
                if entries < self.batch_entries_max {
                    next = queue.try_recv().ok();
                }
            }
            self.commit_appends(appends);
            if self.wal_too_long.swap(false, Ordering::Relaxed) {
                // Nothing is written meanwhile, so this one reaches the end
                // (unless another process writes or reads an old snapshot:
                // then the checkpointer asks again).
                let _ = self.connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        }
    }

    /// Inserts the log row with its signer key in one statement, so that the
    /// log never exists without its key.
    fn create_log(&mut self, tenant: &str, signer: &str) -> Result<(), StoreError> {
        let inserted = self
            .connection
            .execute(
                "INSERT INTO logs (tenant, size, signer) VALUES (?1, 0, ?2) ON CONFLICT (tenant) DO NOTHING",
                params![tenant, signer],
            )
            .map_err(db_error)?;
        if inserted == 0 {
            return Err(StoreError::TenantExists { tenant: tenant.to_owned() });
        }
        Ok(())
    }

    /// Stores keys of entries written before keys were, and marks the log
    /// keyed from 0, in one transaction.
    fn backfill_keys(&mut self, tenant: &str, keys: &[(crate::EntryKey, u64)]) -> Result<(), StoreError> {
        let transaction =
            self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        let (log, size) = log_row(&transaction, tenant)?;
        {
            let mut insert_key = transaction.prepare_cached(INSERT_KEY_SQL).map_err(db_error)?;
            for (key, index) in keys {
                if *index >= size {
                    return Err(StoreError::EntryRange { start: *index, end: index.saturating_add(1), size });
                }
                insert_key.execute(params![log, key.as_slice(), to_i64(*index)]).map_err(db_error)?;
            }
        }
        transaction.execute("UPDATE logs SET keyed_from = 0 WHERE id = ?1", params![log]).map_err(db_error)?;
        transaction.commit().map_err(db_error)
    }

    /// Writes every append of a batch in one transaction, then answers them.
    fn commit_appends(&mut self, appends: Vec<PendingAppend>) {
        if appends.is_empty() {
            return;
        }
        let mut staged = Vec::with_capacity(appends.len());
        let outcome = self.write_batch(appends, &mut staged);
        if let Err(error) = outcome {
            // Nothing of the batch is committed: forget the heads it moved.
            self.heads.clear();
            for Staged { reply, guard, .. } in staged {
                drop(guard);
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        // INVARIANT (ack-after-commit): replies go out only now.
        for Staged { reply, result, guard } in staged {
            // The hold goes first: the reply wakes its holder, whose next
            // hold would otherwise wait until this thread runs again (on a
            // busy machine, up to a scheduler tick).
            drop(guard);
            let _ = reply.send(result);
        }
    }

    fn write_batch(&mut self, appends: Vec<PendingAppend>, staged: &mut Vec<Staged>) -> Result<(), StoreError> {
        // The write lock first: heads are checked against the database under
        // it, so no other process can move a log between check and commit.
        let transaction = match self.connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(transaction) => transaction,
            Err(error) => {
                // Every append of the batch gets this error (the result is
                // replaced by it).
                staged.extend(appends.into_iter().map(|append| Staged {
                    reply: append.reply,
                    result: Ok(Vec::new()),
                    guard: append.hold.map(|(_, guard)| guard),
                }));
                return Err(db_error(error));
            }
        };
        let mut moved: HashMap<String, Head> = HashMap::new();
        let mut rows = Vec::new();
        let mut nodes = Vec::new();
        // The state rows of the appends that succeed, in log order.
        let mut state: Vec<(i64, StateRow)> = Vec::new();
        for PendingAppend { tenant, drafts, rows: state_rows, reply, hold } in appends {
            let head = match moved.get(&tenant) {
                Some(head) => Ok(head.clone()),
                None => current_head(&transaction, &mut self.heads, &tenant),
            };
            let (held, guard) = hold.map_or((None, None), |(size, guard)| (Some(size), Some(guard)));
            let head = head.and_then(|head| match held {
                // INVARIANT (held-head): a hold's commit lands where it was granted.
                Some(held) if held != head.frontier.size() => {
                    Err(StoreError::Stale { tenant: tenant.clone(), held, size: head.frontier.size() })
                }
                _ => Ok(head),
            });
            let result = head.and_then(|head| stage(&tenant, head, drafts, &mut rows, &mut nodes));
            let result = match result {
                Ok((head, appended)) => {
                    // A failed append never gets here: its rows are dropped.
                    state.extend(state_rows.into_iter().map(|row| (head.log, row)));
                    moved.insert(tenant, head);
                    Ok(appended)
                }
                Err(error) => Err(error),
            };
            staged.push(Staged { reply, result, guard });
        }
        {
            let mut insert_entry = transaction
                .prepare_cached("INSERT INTO entries (key, leaf, bytes) VALUES (?1, ?2, ?3)")
                .map_err(db_error)?;
            for row in &rows {
                insert_entry.execute(params![row.key, row.leaf.as_bytes(), row.bytes]).map_err(db_error)?;
            }
            insert_search_rows(&transaction, &rows)?;
            let mut insert_key = transaction.prepare_cached(INSERT_KEY_SQL).map_err(db_error)?;
            for row in rows.iter().filter(|row| !row.keys.is_empty()) {
                let (log, index) = (row.key >> INDEX_BITS, to_i64(key_index(row.key)));
                for key in &row.keys {
                    insert_key.execute(params![log, key.as_slice(), index]).map_err(db_error)?;
                }
            }
            let mut insert_node = transaction
                .prepare_cached("INSERT INTO nodes (log, at, hash) VALUES (?1, ?2, ?3)")
                .map_err(db_error)?;
            for (log, id, hash) in &nodes {
                insert_node.execute(params![log, node_key(*id), hash.as_bytes()]).map_err(db_error)?;
            }
            if !state.is_empty() {
                write_state_rows(&transaction, &state)?;
            }
            let mut fold = transaction.prepare_cached(FOLD_SEGMENT_SQL).map_err(db_error)?;
            let mut update_log = transaction
                .prepare_cached("UPDATE logs SET size = ?1, indexed = ?2 WHERE id = ?3")
                .map_err(db_error)?;
            for head in moved.values_mut() {
                // Every segment the batch completed goes into search_identity.
                while head.indexed + SEGMENT_ENTRIES <= head.frontier.size() {
                    let (from, to) =
                        (entry_key(head.log, head.indexed), entry_key(head.log, head.indexed + SEGMENT_ENTRIES));
                    fold.execute(params![from, to, from >> SEGMENT_BITS]).map_err(db_error)?;
                    head.indexed += SEGMENT_ENTRIES;
                }
                update_log
                    .execute(params![to_i64(head.frontier.size()), to_i64(head.indexed), head.log])
                    .map_err(db_error)?;
            }
        }
        transaction.commit().map_err(db_error)?;
        self.heads.extend(moved);
        Ok(())
    }

    /// Signs a checkpoint of the committed log after proving it consistent
    /// with the last one signed.
    fn sign(&mut self, tenant: &str, signer: &SignerKey) -> Result<SignedCheckpoint, StoreError> {
        let transaction =
            self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        let (log, size) = log_row(&transaction, tenant)?;
        let root = tree::root(size, &mut |id| read_node(&transaction, log, id))?;
        let last = read_checkpoint(&transaction, log)?;
        let proof = match &last {
            Some(last) => {
                check_not_rolled_back(last, size)?;
                tree::consistency_proof(last.checkpoint.size, size, &mut |id| read_node(&transaction, log, id))
                    .map_err(prove_error)?
            }
            None => Vec::new(),
        };
        let Some(signed) = next_checkpoint(last.as_ref(), size, root, &proof, signer)? else {
            return last.ok_or_else(|| corrupt("no checkpoint to answer"));
        };
        transaction
            .execute(
                "INSERT INTO checkpoints (log, size, root, note) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (log) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note",
                params![log, to_i64(size), root.as_bytes(), signed.note],
            )
            .map_err(db_error)?;
        transaction.commit().map_err(db_error)?;
        Ok(signed)
    }
}

/// The head of `tenant`'s log as committed: the cached one when the log's
/// size in the database still matches it, else loaded afresh (the first use
/// of a log, or another process appended to it). Call it holding the write
/// lock.
fn current_head(connection: &Connection, heads: &mut HashMap<String, Head>, tenant: &str) -> Result<Head, StoreError> {
    // INVARIANT (fresh-head): the size read here, under the write lock, is
    // the committed one; another process's appends (and folds) change it.
    let (log, size) = log_row(connection, tenant)?;
    if let Some(head) = heads.get(tenant)
        && head.log == log
        && head.frontier.size() == size
    {
        return Ok(head.clone());
    }
    let frontier = Frontier::load(size, &mut |id| read_node(connection, log, id))?;
    let last_leaf = match size.checked_sub(1) {
        Some(last) => read_node(connection, log, NodeId { level: 0, index: last })?,
        None => Hash::ZERO,
    };
    let head = Head { log, frontier, last_leaf, indexed: indexed_size(connection, log)? };
    heads.insert(tenant.to_owned(), head.clone());
    Ok(head)
}

/// Search rows per `INSERT` statement: one statement per row costs about as
/// much in statement overhead as in the insert itself.
const SEARCH_ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO search … VALUES` with [`SEARCH_ROWS_PER_INSERT`] rows.
static INSERT_SEARCH_ROWS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values = vec!["(?, ?, ?, ?, ?)"; SEARCH_ROWS_PER_INSERT].join(", ");
    format!("INSERT INTO search (key, type, identity, decision, time_us) VALUES {values}")
});

/// Writes the search row of every entry of a batch.
fn insert_search_rows(connection: &Connection, rows: &[Row]) -> Result<(), StoreError> {
    fn values(row: &Row) -> [&dyn rusqlite::ToSql; 5] {
        [&row.key, &row.entry_type, &row.identity, &row.decision, &row.time_us]
    }
    let mut chunks = rows.chunks_exact(SEARCH_ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut insert_many = connection.prepare_cached(&INSERT_SEARCH_ROWS_SQL).map_err(db_error)?;
        for chunk in chunks.by_ref() {
            insert_many.execute(rusqlite::params_from_iter(chunk.iter().flat_map(values))).map_err(db_error)?;
        }
    }
    let mut insert_one = connection
        .prepare_cached("INSERT INTO search (key, type, identity, decision, time_us) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(db_error)?;
    for row in chunks.remainder() {
        insert_one.execute(values(row)).map_err(db_error)?;
    }
    Ok(())
}

/// Applies the state rows of a batch in order (so the last write of a key
/// wins): a value replaces the row, `None` deletes it.
fn write_state_rows(connection: &Connection, rows: &[(i64, StateRow)]) -> Result<(), StoreError> {
    let mut upsert = connection
        .prepare_cached(
            "INSERT INTO state (log, kind, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (log, kind, key) DO UPDATE SET value = excluded.value",
        )
        .map_err(db_error)?;
    let mut delete =
        connection.prepare_cached("DELETE FROM state WHERE log = ?1 AND kind = ?2 AND key = ?3").map_err(db_error)?;
    for (log, StateRow { kind, key, value }) in rows {
        match value {
            Some(value) => upsert.execute(params![log, kind, key, value]),
            None => delete.execute(params![log, kind, key]),
        }
        .map_err(db_error)?;
    }
    Ok(())
}

/// One entry of a batch, ready to insert.
struct Row {
    key: i64,
    leaf: Hash,
    bytes: Vec<u8>,
    entry_type: String,
    identity: Option<String>,
    decision: Option<String>,
    time_us: i64,
    keys: Vec<crate::EntryKey>,
}

/// Turns one append's drafts into rows on top of `head`; returns the moved head.
fn stage(
    tenant: &str,
    mut head: Head,
    drafts: Vec<EntryDraft>,
    rows: &mut Vec<Row>,
    nodes: &mut Vec<(i64, NodeId, Hash)>,
) -> Result<(Head, Vec<Appended>), StoreError> {
    let (rows_before, nodes_before) = (rows.len(), nodes.len());
    let mut appended = Vec::with_capacity(drafts.len());
    for (position, draft) in drafts.into_iter().enumerate() {
        let index = head.frontier.size();
        if index >> INDEX_BITS != 0 {
            rows.truncate(rows_before);
            nodes.truncate(nodes_before);
            return Err(StoreError::Corrupt { reason: format!("tenant `{tenant}`'s log is full ({index} entries)") });
        }
        let EntryDraft { entry_type, time, time_us, body, compressed_body, identity, decision, keys } = draft;
        let entry_head = EntryHead { tenant, index, time: &time, entry_type: &entry_type, prev: head.last_leaf };
        let canonical = match entry_head.encode(&body) {
            Ok(canonical) => canonical,
            Err(error) => {
                // All or nothing per append: drop the rows staged for it.
                rows.truncate(rows_before);
                nodes.truncate(nodes_before);
                return Err(StoreError::InvalidEntry { position, error });
            }
        };
        let log = head.log;
        head.frontier.push(canonical.leaf_hash, |id, hash| {
            if id.level > 0 {
                nodes.push((log, id, hash));
            }
        });
        head.last_leaf = canonical.leaf_hash;
        rows.push(Row {
            key: entry_key(log, index),
            leaf: canonical.leaf_hash,
            bytes: packed::stored_form(canonical.bytes, &entry_head, compressed_body.as_deref()),
            entry_type,
            identity,
            decision,
            time_us,
            keys,
        });
        appended.push(Appended { index, leaf_hash: canonical.leaf_hash });
    }
    Ok((head, appended))
}
