//! The embedded backend: SQLite (bundled) in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only write connection. Appends reach it through
//! a bounded queue; it drains whatever is waiting (up to
//! [`SqliteOptions::batch_entries_max`]), assigns indexes and `prev` hashes,
//! writes entries and tree nodes in one transaction, commits (one fsync), and
//! only then answers every append of the batch. Readers use their own
//! connections: WAL lets them read the last commit while the writer works.
//!
//! Tables:
//! - `logs(id, tenant, size)`: one row per tenant log; `size` is the number of
//!   committed entries.
//! - `entries(key, leaf, bytes)`: `key = log id << 40 | index`, so the rowid
//!   B-tree is the (log, index) index and costs nothing extra.
//! - `nodes(log, at, hash)`: every complete subtree of level ≥ 1 (level 0 is
//!   `entries.leaf`), keyed by the leaf that completes it and its level
//!   (`at = last leaf << 6 | level`), so that nodes are inserted in key order
//!   and the B-tree fills its pages instead of splitting them in half.
//! - `checkpoints(log, size, root, note)`: the last checkpoint signed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mandate_log::tree::{self, NodeId, ProveError};
use mandate_log::{Checkpoint, EntryHead, Frontier, Hash, SignedCheckpoint, SignerKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{
    APPEND_ENTRIES_MAX, AppendTicket, Appended, ENTRIES_PAGE_MAX, EntryDraft, Ledger, StoreError, StoredEntry,
};

/// Indexes occupy the low 40 bits of an entry's key: 1.1 trillion entries per
/// tenant log.
const INDEX_BITS: u32 = 40;

/// The schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// How many idle read connections are kept.
const READERS_IDLE_MAX: usize = 8;

/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// How often the checkpointer copies the WAL into the database file.
const WAL_CHECKPOINT_INTERVAL_MS: u64 = 200;

/// The page cache of each connection, in KiB.
const PAGE_CACHE_KIB: i64 = 16 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL CHECK (size >= 0)
);
CREATE TABLE IF NOT EXISTS entries (
    key INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL CHECK (length(leaf) = 32),
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    log INTEGER NOT NULL,
    at INTEGER NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (log, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    log INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL
);
";

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
    reply: AppendReply,
}

/// Work for the writer thread.
enum Command {
    Append(PendingAppend),
    CreateLog { tenant: String, reply: mpsc::SyncSender<Result<(), StoreError>> },
    Sign { tenant: String, signer: Arc<SignerKey>, reply: mpsc::SyncSender<Result<SignedCheckpoint, StoreError>> },
}

/// The embedded ledger. Cloning is not needed: share it behind an `Arc`.
pub struct SqliteLedger {
    path: PathBuf,
    commands: Option<SyncSender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// Dropping this sender stops the checkpointer.
    checkpointer_stop: Option<SyncSender<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_error(error: rusqlite::Error) -> StoreError {
    StoreError::Database { message: error.to_string() }
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { reason: reason.into() }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(db_error)?;
    connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db_error)?;
    // INVARIANT (durable-commit): WAL with synchronous=FULL fsyncs the WAL on
    // every commit, so a committed append survives power loss.
    connection.pragma_update(None, "journal_mode", "WAL").map_err(db_error)?;
    connection.pragma_update(None, "synchronous", "FULL").map_err(db_error)?;
    connection.pragma_update(None, "cache_size", -PAGE_CACHE_KIB).map_err(db_error)?;
    // The checkpointer thread moves the WAL into the database, so the writer
    // never stalls on it.
    connection.pragma_update(None, "wal_autocheckpoint", 0).map_err(db_error)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

fn hash_from_blob(blob: Vec<u8>) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(blob).map(Hash).map_err(|_| corrupt("a stored hash is not 32 bytes"))
}

fn entry_key(log: i64, index: u64) -> i64 {
    (log << INDEX_BITS) | index as i64
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

fn prove_error(error: ProveError<StoreError>) -> StoreError {
    match error {
        ProveError::Range(range) => StoreError::Range(range),
        ProveError::Source(source) => source,
    }
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteLedger, StoreError> {
        SqliteLedger::open_with(path, SqliteOptions::default())
    }

    /// Opens the ledger with explicit tuning.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteLedger, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = open_connection(&path)?;
        migrate(&connection)?;
        let (commands, queue) = mpsc::sync_channel(options.queue_appends_max.max(1));
        let mut writer =
            Writer { connection, heads: HashMap::new(), batch_entries_max: options.batch_entries_max.max(1) };
        let handle = std::thread::Builder::new()
            .name("mandate-ledger-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|error| StoreError::Database { message: format!("starting the writer thread: {error}") })?;
        let (checkpointer_stop, stop) = mpsc::sync_channel(0);
        let checkpointer_connection = open_connection(&path)?;
        let checkpointer = std::thread::Builder::new()
            .name("mandate-ledger-checkpointer".into())
            .spawn(move || checkpoint_wal_until_stopped(&checkpointer_connection, &stop))
            .map_err(|error| StoreError::Database { message: format!("starting the checkpointer thread: {error}") })?;
        Ok(SqliteLedger {
            path,
            commands: Some(commands),
            writer: Some(handle),
            checkpointer_stop: Some(checkpointer_stop),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_connection(&self.path)?,
        };
        let result = f(&connection);
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < READERS_IDLE_MAX {
            idle.push(connection);
        }
        result
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
fn checkpoint_wal_until_stopped(connection: &Connection, stop: &Receiver<()>) {
    let interval = Duration::from_millis(WAL_CHECKPOINT_INTERVAL_MS);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // A failed checkpoint loses nothing: the frames stay in the WAL.
        let _ = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
    let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(db_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Database {
            message: format!("the database schema is version {version}, newer than this mandate ({SCHEMA_VERSION})"),
        });
    }
    connection.execute_batch(SCHEMA).map_err(db_error)?;
    connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_error)
}

impl Ledger for SqliteLedger {
    fn create_log(&self, tenant: &str) -> Result<(), StoreError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Command::CreateLog { tenant: tenant.to_owned(), reply })?;
        result.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    fn append(&self, tenant: &str, drafts: Vec<EntryDraft>) -> AppendTicket {
        if drafts.is_empty() || drafts.len() > APPEND_ENTRIES_MAX {
            return AppendTicket::done(Err(StoreError::AppendSize { count: drafts.len() }));
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        match self.send(Command::Append(PendingAppend { tenant: tenant.to_owned(), drafts, reply })) {
            Ok(()) => AppendTicket::waiting(receiver),
            Err(error) => AppendTicket::done(Err(error)),
        }
    }

    fn size(&self, tenant: &str) -> Result<u64, StoreError> {
        self.read(|connection| log_row(connection, tenant).map(|(_, size)| size))
    }

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
                entries.push(StoredEntry { index: expected, leaf_hash: hash_from_blob(leaf)?, bytes });
            }
            if entries.len() as u64 != end - start {
                return Err(corrupt(format!("entries [{start}, {end}) are incomplete")));
            }
            Ok(entries)
        })
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

    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.read_log(tenant, |connection, log, _| read_checkpoint(connection, log))
    }

    fn sign_checkpoint(&self, tenant: &str, signer: Arc<SignerKey>) -> Result<SignedCheckpoint, StoreError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.send(Command::Sign { tenant: tenant.to_owned(), signer, reply })?;
        result.recv().unwrap_or(Err(StoreError::WriterStopped))
    }
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
}

/// The writer thread's state.
struct Writer {
    connection: Connection,
    heads: HashMap<String, Head>,
    batch_entries_max: usize,
}

/// One append of a batch and its outcome, to be sent after the commit.
struct Staged {
    reply: AppendReply,
    result: Result<Vec<Appended>, StoreError>,
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
                    Command::CreateLog { tenant, reply } => {
                        self.commit_appends(std::mem::take(&mut appends));
                        let _ = reply.send(self.create_log(&tenant));
                    }
                    Command::Sign { tenant, signer, reply } => {
                        self.commit_appends(std::mem::take(&mut appends));
                        let _ = reply.send(self.sign(&tenant, &signer));
                    }
                }
                if entries < self.batch_entries_max {
                    next = queue.try_recv().ok();
                }
            }
            self.commit_appends(appends);
        }
    }

    fn create_log(&mut self, tenant: &str) -> Result<(), StoreError> {
        mandate_log::entry::check_tenant(tenant).map_err(|error| StoreError::InvalidEntry { position: 0, error })?;
        let inserted = self
            .connection
            .execute("INSERT INTO logs (tenant, size) VALUES (?1, 0) ON CONFLICT (tenant) DO NOTHING", params![tenant])
            .map_err(db_error)?;
        if inserted == 0 {
            return Err(StoreError::TenantExists { tenant: tenant.to_owned() });
        }
        Ok(())
    }

    fn head(&mut self, tenant: &str) -> Result<Head, StoreError> {
        if let Some(head) = self.heads.get(tenant) {
            return Ok(head.clone());
        }
        let connection = &self.connection;
        let (log, size) = log_row(connection, tenant)?;
        let frontier = Frontier::load(size, &mut |id| read_node(connection, log, id))?;
        let last_leaf = match size.checked_sub(1) {
            Some(last) => read_node(connection, log, NodeId { level: 0, index: last })?,
            None => Hash::ZERO,
        };
        let head = Head { log, frontier, last_leaf };
        self.heads.insert(tenant.to_owned(), head.clone());
        Ok(head)
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
            for append in staged {
                let _ = append.reply.send(Err(error.clone()));
            }
            return;
        }
        // INVARIANT (ack-after-commit): replies go out only now.
        for append in staged {
            let _ = append.reply.send(append.result);
        }
    }

    fn write_batch(&mut self, appends: Vec<PendingAppend>, staged: &mut Vec<Staged>) -> Result<(), StoreError> {
        let mut moved: HashMap<String, Head> = HashMap::new();
        let mut rows = Vec::new();
        let mut nodes = Vec::new();
        for PendingAppend { tenant, drafts, reply } in appends {
            let head = match moved.get(&tenant) {
                Some(head) => Ok(head.clone()),
                None => self.head(&tenant),
            };
            let result = head.and_then(|head| stage(&tenant, head, drafts, &mut rows, &mut nodes));
            let result = match result {
                Ok((head, appended)) => {
                    moved.insert(tenant, head);
                    Ok(appended)
                }
                Err(error) => Err(error),
            };
            staged.push(Staged { reply, result });
        }
        let transaction =
            self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        {
            let mut insert_entry = transaction
                .prepare_cached("INSERT INTO entries (key, leaf, bytes) VALUES (?1, ?2, ?3)")
                .map_err(db_error)?;
            for (key, leaf, bytes) in &rows {
                insert_entry.execute(params![key, leaf.as_bytes(), bytes]).map_err(db_error)?;
            }
            let mut insert_node = transaction
                .prepare_cached("INSERT INTO nodes (log, at, hash) VALUES (?1, ?2, ?3)")
                .map_err(db_error)?;
            for (log, id, hash) in &nodes {
                insert_node.execute(params![log, node_key(*id), hash.as_bytes()]).map_err(db_error)?;
            }
            let mut update_size =
                transaction.prepare_cached("UPDATE logs SET size = ?1 WHERE id = ?2").map_err(db_error)?;
            for head in moved.values() {
                update_size.execute(params![to_i64(head.frontier.size()), head.log]).map_err(db_error)?;
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
        if let Some(last) = &last {
            let old = &last.checkpoint;
            if old.size > size {
                return Err(corrupt(format!(
                    "the log has {size} entries but a checkpoint of size {} was signed",
                    old.size
                )));
            }
            // INVARIANT (consistent-checkpoints): prove before signing.
            let proof = tree::consistency_proof(old.size, size, &mut |id| read_node(&transaction, log, id))
                .map_err(prove_error)?;
            if !tree::verify_consistency(old.size, size, &old.root, &root, &proof) {
                return Err(corrupt(format!(
                    "the log of size {size} is not consistent with the checkpoint of size {} signed before",
                    old.size
                )));
            }
            if old.size == size && old.origin == signer.name() {
                return Ok(last.clone());
            }
        }
        let signed = Checkpoint { origin: signer.name().to_owned(), size, root }
            .sign(signer)
            .map_err(|error| StoreError::Database { message: format!("signing: {error}") })?;
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

/// Turns one append's drafts into rows on top of `head`; returns the moved head.
fn stage(
    tenant: &str,
    mut head: Head,
    drafts: Vec<EntryDraft>,
    rows: &mut Vec<(i64, Hash, Vec<u8>)>,
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
        let entry_head =
            EntryHead { tenant, index, time: &draft.time, entry_type: &draft.entry_type, prev: head.last_leaf };
        let canonical = match entry_head.encode(&draft.body) {
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
        rows.push((entry_key(log, index), canonical.leaf_hash, canonical.bytes));
        appended.push(Appended { index, leaf_hash: canonical.leaf_hash });
    }
    Ok((head, appended))
}
