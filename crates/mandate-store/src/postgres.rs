//! The shared backend: PostgreSQL through tokio-postgres and deadpool-postgres.
//!
//! Several processes (several `mandate serve` instances) may share one
//! database. The ledger owns a small tokio runtime, which runs the connection
//! pool, the writer's transactions and every read; the synchronous [`Ledger`]
//! methods hand their work to that runtime and wait for the answer on a plain
//! channel, so they work outside any runtime, on a `spawn_blocking` thread,
//! and never start a runtime inside another.
//!
//! Appends reach the writer (on the ledger's own thread) through a bounded
//! queue; it drains whatever is waiting (up to
//! [`PostgresOptions::batch_entries_max`]) and writes the batch in one
//! transaction: it locks the `logs` row of every tenant of the batch
//! (`SELECT … FOR UPDATE`, in tenant order, so two processes never deadlock),
//! reads each log's size under that lock and builds on its cached head only
//! when the size still matches (`INVARIANT (fresh-head)`: another process may
//! have appended meanwhile), then inserts entries (with their search terms),
//! tree nodes and state rows, updates the sizes and commits. Only then does it
//! answer the appends (`INVARIANT (ack-after-commit)`). A commit whose answer
//! is lost (the connection drops during it) is reported as failed although it
//! may have happened; the next batch re-reads every head, so the log stays
//! gapless either way.
//!
//! Checkpoints are signed holding the same row lock, after proving the new
//! tree consistent with the last checkpoint persisted, so two processes
//! signing at once never produce two inconsistent checkpoints.
//!
//! Tables (created at connect, under a transaction-scoped advisory lock, so
//! two processes starting together migrate once):
//! - `mandate_schema(version)`: the schema version.
//! - `logs(id, tenant, size, signer, keyed_from)`: one row per tenant log,
//!   the lock that sequences its appends; `keyed_from` is the first index from
//!   which every entry's keys are in `entry_keys` (a log older than version 2
//!   keeps its size at migration until [`Ledger::backfill_keys`]).
//! - `entries(log, idx, leaf, bytes, type, identity, decision, time_us)`:
//!   each entry with its search terms; `(log, identity, idx)` is indexed for
//!   searches by identity.
//! - `nodes(log, at, hash)`: every complete subtree of level ≥ 1, keyed as in
//!   the SQLite backend (`at = last leaf << 6 | level`).
//! - `checkpoints(log, size, root, note)`: the last checkpoint signed.
//! - `state(log, kind, key, value)`: the state rows ([`crate::StateRow`]).
//! - `entry_keys(log, key, entry)`: the newest entry stored with each key
//!   ([`crate::EntryKey`]), written in the entry's transaction.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use mandate_log::tree::{self, NodeId};
use mandate_log::{Checkpoint, EntryHead, Frontier, Hash, SignedCheckpoint, SignerKey};
use tokio_postgres::NoTls;

use crate::{
    AppendTicket, Appended, ENTRIES_PAGE_MAX, EntriesFuture, EntryDraft, EntryKey, FindFuture, HoldFuture, Ledger,
    LogHold, SEARCH_EXAMINED_MAX, SEARCH_PAGE_MAX, SearchPage, SearchQuery, StateRow, StoreError, StoredEntry,
    check_not_rolled_back, corrupt, next_checkpoint, packed, prove_error,
};

/// The schema version in `mandate_schema`. Version 2 added `entry_keys` and
/// `logs.keyed_from`; version 3 keeps new entries packed (`packed.rs`),
/// which a version-2 mandate cannot read; version 4 packs them with
/// dictionary 2, which a version-3 one cannot.
const SCHEMA_VERSION: i32 = 4;

/// The key of the advisory lock held while migrating (`"mandate"` in ASCII).
const MIGRATION_LOCK: i64 = 0x006d_616e_6461_7465;

/// How long opening (or checking) one connection may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a call waits for a free connection of the pool.
const POOL_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a statement waits for a row lock (a held log) before failing.
const LOCK_TIMEOUT_MS: u64 = 10_000;

/// How long a transaction may sit idle (a hold whose holder stopped
/// answering) before the database ends it and releases its locks.
const IDLE_IN_TRANSACTION_MS: u64 = 10_000;

/// Indexes must fit the same range as the SQLite backend's: 2^40 per log.
const INDEX_BITS: u32 = 40;

/// The schema of version 1; [`KEYS_SCHEMA`] completes version 2.
const SCHEMA: &str = "
CREATE TABLE logs (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL CHECK (size >= 0),
    signer TEXT NOT NULL
);
CREATE TABLE entries (
    log BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    leaf BYTEA NOT NULL CHECK (length(leaf) = 32),
    bytes BYTEA NOT NULL,
    type TEXT NOT NULL,
    identity TEXT,
    decision TEXT,
    time_us BIGINT NOT NULL,
    PRIMARY KEY (log, idx)
);
CREATE INDEX entries_identity ON entries (log, identity, idx) WHERE identity IS NOT NULL;
CREATE TABLE nodes (
    log BIGINT NOT NULL,
    at BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (log, at)
);
CREATE TABLE checkpoints (
    log BIGINT PRIMARY KEY,
    size BIGINT NOT NULL,
    root BYTEA NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE state (
    log BIGINT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (log, kind, key)
);
";

/// The key index and `logs.keyed_from`: version 2, in new databases and when
/// migrating from version 1.
const KEYS_SCHEMA: &str = "
CREATE TABLE entry_keys (
    log BIGINT NOT NULL,
    key BYTEA NOT NULL CHECK (length(key) = 16),
    entry BIGINT NOT NULL,
    PRIMARY KEY (log, key)
);
ALTER TABLE logs ADD COLUMN keyed_from BIGINT NOT NULL DEFAULT 0;
";

/// Stores the keys of a batch's entries. Appends come in log order under the
/// log's lock, so the entry written now is the newest with its key.
const INSERT_KEYS_SQL: &str = "INSERT INTO entry_keys (log, key, entry)
SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::int8[])
ON CONFLICT (log, key) DO UPDATE SET entry = excluded.entry";

/// The entry stored with each of `$2`, in the order given (NULL for none).
const FIND_KEYS_SQL: &str = "SELECT entry_keys.entry FROM UNNEST($2::bytea[]) WITH ORDINALITY AS wanted (key, n)
LEFT JOIN entry_keys ON entry_keys.log = $1 AND entry_keys.key = wanted.key ORDER BY wanted.n";

/// Inserts the entries of a batch, one array per column.
const INSERT_ENTRIES_SQL: &str = "INSERT INTO entries (log, idx, leaf, bytes, type, identity, decision, time_us)
SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::text[], $8::int8[])";

/// The filters of a search, as one SQL boolean over `$3`…`$6`: NULL (a filter
/// on a term the entry lacks) counts as no match.
const FILTERS: &str = "COALESCE(($3::text IS NULL OR type = $3::text) AND ($4::text IS NULL OR decision = $4::text)
  AND ($5::int8 IS NULL OR time_us >= $5::int8) AND ($6::int8 IS NULL OR time_us < $6::int8), false)";

/// Tuning for [`PostgresLedger`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The most entries committed in one transaction.
    pub batch_entries_max: usize,
    /// The most appends waiting for the writer; further appends block their
    /// caller (back-pressure rather than unbounded memory).
    pub queue_appends_max: usize,
    /// The most connections in the pool.
    pub connections_max: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions { batch_entries_max: 4_096, queue_appends_max: 8_192, connections_max: 16 }
    }
}

/// Where an append's outcome goes.
type AppendReply = tokio::sync::oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// An append waiting for the writer.
struct PendingAppend {
    tenant: String,
    drafts: Vec<EntryDraft>,
    rows: Vec<StateRow>,
    reply: AppendReply,
}

/// The PostgreSQL ledger. Share it behind an `Arc`.
pub struct PostgresLedger {
    pool: Pool,
    /// The heads last committed through holds, for the next hold's commit.
    hold_heads: Arc<Mutex<HashMap<String, Head>>>,
    runtime: tokio::runtime::Handle,
    appends: Option<std_mpsc::SyncSender<PendingAppend>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedger").finish_non_exhaustive()
    }
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database { message: error.to_string() }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn hash_from_blob(blob: &[u8]) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(blob).map(Hash).map_err(|_| corrupt("a stored hash is not 32 bytes"))
}

/// A node's key, as in the SQLite backend: the index of its last leaf, then
/// its level.
fn node_key(id: NodeId) -> i64 {
    let last_leaf = ((u128::from(id.index) + 1) << id.level) - 1;
    i64::try_from((last_leaf << 6) | u128::from(id.level)).unwrap_or(i64::MAX)
}

/// The tree algorithms read nodes through a synchronous callback, and which
/// nodes they read depends only on the sizes and indexes asked for: `run`
/// once to learn the node ids, fetch them all in one query, then run again
/// on the fetched hashes.
async fn with_nodes<C: GenericClient, T>(
    client: &C,
    log: i64,
    mut run: impl FnMut(&mut dyn FnMut(NodeId) -> Result<Hash, StoreError>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut wanted = Vec::new();
    run(&mut |id| {
        wanted.push(id);
        Ok(Hash::ZERO)
    })?;
    let hashes = read_nodes(client, log, &wanted).await?;
    run(&mut |id| {
        hashes.get(&id).copied().ok_or_else(|| corrupt(format!("tree node {}/{} is missing", id.level, id.index)))
    })
}

/// Reads the hashes of `ids` (leaves from `entries`, the rest from `nodes`).
///
/// These statements are not cached: a cached statement soon gets a generic
/// plan, and PostgreSQL's generic plan for `= ANY($2)` scanned the whole log
/// (measured: appends from two ledgers fell from ~7,500/s to ~1,000/s).
async fn read_nodes<C: GenericClient>(
    client: &C,
    log: i64,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let mut found = HashMap::with_capacity(ids.len());
    let leaves: Vec<i64> = ids.iter().filter(|id| id.level == 0).map(|id| to_i64(id.index)).collect();
    let inner: Vec<NodeId> = ids.iter().filter(|id| id.level > 0).copied().collect();
    if !leaves.is_empty() {
        for row in client
            .query("SELECT idx, leaf FROM entries WHERE log = $1 AND idx = ANY($2)", &[&log, &leaves])
            .await
            .map_err(db_error)?
        {
            let index: i64 = row.get(0);
            found.insert(NodeId { level: 0, index: to_u64(index) }, hash_from_blob(row.get(1))?);
        }
    }
    if !inner.is_empty() {
        let keys: HashMap<i64, NodeId> = inner.iter().map(|id| (node_key(*id), *id)).collect();
        let wanted: Vec<i64> = keys.keys().copied().collect();
        for row in client
            .query("SELECT at, hash FROM nodes WHERE log = $1 AND at = ANY($2)", &[&log, &wanted])
            .await
            .map_err(db_error)?
        {
            let at: i64 = row.get(0);
            if let Some(id) = keys.get(&at) {
                found.insert(*id, hash_from_blob(row.get(1))?);
            }
        }
    }
    Ok(found)
}

/// The statement for `sql`, prepared once per connection.
async fn cached<C: GenericClient>(client: &C, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(db_error)
}

/// The log row of `tenant`: its id and size, optionally locked.
async fn log_row<C: GenericClient>(client: &C, tenant: &str, lock: bool) -> Result<(i64, u64), StoreError> {
    if tenant.contains('\0') {
        // PostgreSQL text cannot hold it, and no tenant has it.
        return Err(StoreError::UnknownTenant { tenant: tenant.to_owned() });
    }
    let sql = if lock {
        "SELECT id, size FROM logs WHERE tenant = $1 FOR UPDATE"
    } else {
        "SELECT id, size FROM logs WHERE tenant = $1"
    };
    let row = client.query_opt(&cached(client, sql).await?, &[&tenant]).await.map_err(db_error)?;
    let row = row.ok_or_else(|| StoreError::UnknownTenant { tenant: tenant.to_owned() })?;
    Ok((row.get(0), to_u64(row.get(1))))
}

impl PostgresLedger {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// or key=value text), creating or migrating the schema.
    pub fn connect(url: &str) -> Result<PostgresLedger, StoreError> {
        PostgresLedger::connect_with(url, PostgresOptions::default())
    }

    /// Connects with explicit tuning.
    pub fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresLedger, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|error| db_error(format!("the database address does not parse: {error}")))?;
        // A process that stops answering while it holds a log (or waits for
        // one) must not stop every other process: its transaction ends and
        // its hold is released after these.
        let session_options = format!(
            "{} -c lock_timeout={LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            config.get_options().unwrap_or_default()
        );
        config.options(session_options.trim_start());
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mandate-pg")
            .enable_all()
            .build()
            .map_err(|error| db_error(format!("starting the runtime: {error}")))?;
        let handle = runtime.handle().clone();
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(options.connections_max.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                // An unreachable database fails calls instead of hanging them.
                .create_timeout(Some(CONNECT_TIMEOUT))
                .wait_timeout(Some(POOL_WAIT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|error| db_error(format!("building the pool: {error}")))?
        };
        let (appends, queue) = std_mpsc::sync_channel(options.queue_appends_max.max(1));
        let mut writer =
            Writer { pool: pool.clone(), heads: HashMap::new(), batch_entries_max: options.batch_entries_max.max(1) };
        let thread = std::thread::Builder::new()
            .name("mandate-pg-ledger".into())
            .spawn(move || {
                writer.run(&runtime, &queue);
                // Reads still running end with the runtime, answering WriterStopped.
                runtime.shutdown_background();
            })
            .map_err(|error| db_error(format!("starting the ledger thread: {error}")))?;
        let ledger = PostgresLedger {
            pool,
            hold_heads: Arc::new(Mutex::new(HashMap::new())),
            runtime: handle,
            appends: Some(appends),
            thread: Some(thread),
        };
        ledger.run(|pool| async move { migrate(&pool).await })?;
        Ok(ledger)
    }

    /// Runs `work` on the ledger's runtime and waits for its answer, from any
    /// thread (it never blocks inside the runtime it waits for).
    fn run<T, F>(&self, work: impl FnOnce(Pool) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (reply, answer) = std_mpsc::sync_channel(1);
        let future = work(self.pool.clone());
        self.runtime.spawn(async move {
            let _ = reply.send(future.await);
        });
        answer.recv().unwrap_or(Err(StoreError::WriterStopped))
    }

    /// Runs `f` on a read-only repeatable-read transaction on `tenant`'s
    /// log, so every row it reads comes from one snapshot.
    fn read_log<T, F>(&self, tenant: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a deadpool_postgres::Transaction<'a>,
                i64,
                u64,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>
            + Send
            + 'static,
    {
        let tenant = tenant.to_owned();
        self.run(move |pool| async move {
            let mut client = pool.get().await.map_err(db_error)?;
            let transaction = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db_error)?;
            let (log, size) = log_row(&transaction, &tenant, false).await?;
            f(&transaction, log, size).await
        })
    }
}

impl Drop for PostgresLedger {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish the batches already sent.
        self.appends.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Creates or migrates the schema holding a transaction-scoped advisory lock,
/// so that two processes connecting at once migrate it once.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_error)?;
    let exists = transaction
        .query_one("SELECT to_regclass('mandate_schema') IS NOT NULL", &[])
        .await
        .map_err(db_error)?
        .get::<_, bool>(0);
    let version: i32 = if exists {
        transaction
            .query_opt("SELECT version FROM mandate_schema", &[])
            .await
            .map_err(db_error)?
            .map_or(0, |row| row.get(0))
    } else {
        transaction.batch_execute("CREATE TABLE mandate_schema (version INTEGER NOT NULL)").await.map_err(db_error)?;
        0
    };
    match version {
        0 => {
            transaction.batch_execute(SCHEMA).await.map_err(db_error)?;
            transaction.batch_execute(KEYS_SCHEMA).await.map_err(db_error)?;
            transaction
                .execute("INSERT INTO mandate_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
                .await
                .map_err(db_error)?;
        }
        1 => {
            // The entries written so far have no keys: each log is keyed from
            // its present size until the server backfills them.
            transaction.batch_execute(KEYS_SCHEMA).await.map_err(db_error)?;
            transaction
                .batch_execute("UPDATE logs SET keyed_from = size; UPDATE mandate_schema SET version = 4")
                .await
                .map_err(db_error)?;
        }
        2 | 3 => {
            // Rows written before stay as they are (plain before version 3,
            // packed with dictionary 1 before 4), which version 4 reads too.
            transaction.batch_execute("UPDATE mandate_schema SET version = 4").await.map_err(db_error)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(db_error(format!(
                "the database schema is version {other}, which this mandate ({SCHEMA_VERSION}) cannot use"
            )));
        }
    }
    transaction.commit().await.map_err(db_error)
}

/// The in-memory head of one log: what the next append builds on.
#[derive(Debug, Clone)]
struct Head {
    log: i64,
    frontier: Frontier,
    last_leaf: Hash,
}

/// The writer task's state.
struct Writer {
    pool: Pool,
    heads: HashMap<String, Head>,
    batch_entries_max: usize,
}

/// One append of a batch and its outcome, to be sent after the commit.
struct Staged {
    reply: AppendReply,
    result: Result<Vec<Appended>, StoreError>,
}

/// The entries of a batch, ready to insert, one vector per column, and
/// their keys.
#[derive(Default)]
struct Rows {
    log: Vec<i64>,
    idx: Vec<i64>,
    leaf: Vec<Vec<u8>>,
    bytes: Vec<Vec<u8>>,
    entry_type: Vec<String>,
    identity: Vec<Option<String>>,
    decision: Vec<Option<String>>,
    time_us: Vec<i64>,
    /// Each key of each entry: log, key, entry index.
    keys: Vec<(i64, EntryKey, i64)>,
}

impl Rows {
    /// Where the rows end now, for [`Rows::truncate`].
    fn mark(&self) -> (usize, usize) {
        (self.idx.len(), self.keys.len())
    }

    fn truncate(&mut self, (len, keys): (usize, usize)) {
        self.keys.truncate(keys);
        self.log.truncate(len);
        self.idx.truncate(len);
        self.leaf.truncate(len);
        self.bytes.truncate(len);
        self.entry_type.truncate(len);
        self.identity.truncate(len);
        self.decision.truncate(len);
        self.time_us.truncate(len);
    }
}

impl Writer {
    /// Waits for appends on the ledger's own thread (a plain blocking
    /// queue, so a full queue holds its callers back) and writes each batch
    /// on the runtime.
    fn run(&mut self, runtime: &tokio::runtime::Runtime, queue: &std_mpsc::Receiver<PendingAppend>) {
        while let Ok(first) = queue.recv() {
            let mut entries = first.drafts.len();
            let mut appends = vec![first];
            // Group commit: take everything already waiting, up to the batch limit.
            while entries < self.batch_entries_max {
                match queue.try_recv() {
                    Ok(append) => {
                        entries += append.drafts.len();
                        appends.push(append);
                    }
                    Err(_) => break,
                }
            }
            runtime.block_on(self.commit_appends(appends));
        }
    }

    /// Writes every append of a batch in one transaction, then answers them.
    async fn commit_appends(&mut self, appends: Vec<PendingAppend>) {
        let mut staged = Vec::with_capacity(appends.len());
        let outcome = self.write_batch(appends, &mut staged).await;
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

    async fn write_batch(&mut self, appends: Vec<PendingAppend>, staged: &mut Vec<Staged>) -> Result<(), StoreError> {
        let fail_all = |appends: Vec<PendingAppend>, staged: &mut Vec<Staged>| {
            staged.extend(appends.into_iter().map(|append| Staged { reply: append.reply, result: Ok(Vec::new()) }));
        };
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                fail_all(appends, staged);
                return Err(db_error(error));
            }
        };
        let transaction = match client.transaction().await {
            Ok(transaction) => transaction,
            Err(error) => {
                fail_all(appends, staged);
                return Err(db_error(error));
            }
        };
        // Lock every log of the batch, in tenant order (so that two processes
        // locking overlapping sets never deadlock), and read its committed
        // head under the lock.
        let tenants: BTreeSet<String> = appends.iter().map(|append| append.tenant.clone()).collect();
        let mut moved: HashMap<String, Result<Head, StoreError>> = HashMap::new();
        for tenant in tenants {
            let head = match current_head(&transaction, &self.heads, &tenant).await {
                Ok(head) => Ok(head),
                Err(error @ StoreError::UnknownTenant { .. }) => Err(error),
                Err(error) => {
                    fail_all(appends, staged);
                    return Err(error);
                }
            };
            moved.insert(tenant, head);
        }
        let mut rows = Rows::default();
        let mut nodes: NodeRows = (Vec::new(), Vec::new(), Vec::new());
        let mut state: Vec<(i64, StateRow)> = Vec::new();
        for PendingAppend { tenant, drafts, rows: state_rows, reply } in appends {
            let head = moved
                .get(&tenant)
                .cloned()
                .unwrap_or_else(|| Err(StoreError::UnknownTenant { tenant: tenant.clone() }));
            let result = head.and_then(|head| stage(&tenant, head, drafts, &mut rows, &mut nodes));
            let result = match result {
                Ok((head, appended)) => {
                    state.extend(state_rows.into_iter().map(|row| (head.log, row)));
                    moved.insert(tenant, Ok(head));
                    Ok(appended)
                }
                Err(error) => Err(error),
            };
            staged.push(Staged { reply, result });
        }
        let moved: HashMap<String, Head> =
            moved.into_iter().filter_map(|(tenant, head)| head.ok().map(|head| (tenant, head))).collect();
        insert_staged(&transaction, &rows, &nodes, &state, moved.values(), false)
            .await
            .map_err(|(Ended(error) | Unended(error))| error)?;
        transaction.commit().await.map_err(db_error)?;
        self.heads.extend(moved);
        Ok(())
    }
}

/// Node rows of a batch, one vector per column: log, key, hash.
type NodeRows = (Vec<i64>, Vec<i64>, Vec<Vec<u8>>);

/// State rows to write or delete, one vector per column (`value` empty for
/// deletions).
#[derive(Default)]
struct StateColumns<'a> {
    log: Vec<i64>,
    kind: Vec<&'a str>,
    key: Vec<&'a str>,
    value: Vec<&'a [u8]>,
}

/// Why [`insert_staged`] failed, and whether the transaction is over.
enum InsertError {
    /// The transaction is still open: the caller rolls it back.
    Unended(StoreError),
    /// The `COMMIT` sent with the statements was answered, so the database
    /// rolled the transaction back after the failed statement.
    Ended(StoreError),
}

use InsertError::{Ended, Unended};

impl From<StoreError> for InsertError {
    fn from(error: StoreError) -> InsertError {
        Unended(error)
    }
}

/// Inserts a batch's staged entries (with their keys), tree nodes and state
/// rows and moves the sizes of the logs to their new `heads`; with `commit`,
/// commits too.
///
/// The statements are independent, so they are sent together (pipelined on
/// the one connection): one round trip instead of one per statement, while
/// the log is held. With `commit`, the `COMMIT` goes in the same round trip,
/// last. That is safe only because every statement's own result is checked:
/// behind a failed statement PostgreSQL answers `COMMIT` by rolling back,
/// without an error, so success is every statement's success and the
/// `COMMIT`'s.
async fn insert_staged<'h, C: GenericClient>(
    transaction: &C,
    rows: &Rows,
    nodes: &NodeRows,
    state: &[(i64, StateRow)],
    heads: impl Iterator<Item = &'h Head>,
    commit: bool,
) -> Result<(), InsertError> {
    let insert_entries = cached(transaction, INSERT_ENTRIES_SQL).await?;
    let insert_nodes = cached(
        transaction,
        "INSERT INTO nodes (log, at, hash) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::bytea[])",
    )
    .await?;
    let upsert = cached(
        transaction,
        "INSERT INTO state (log, kind, key, value)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::bytea[])
         ON CONFLICT (log, kind, key) DO UPDATE SET value = excluded.value",
    )
    .await?;
    let delete = cached(
        transaction,
        "DELETE FROM state USING UNNEST($1::int8[], $2::text[], $3::text[]) AS gone (log, kind, key)
         WHERE state.log = gone.log AND state.kind = gone.kind AND state.key = gone.key",
    )
    .await?;
    let insert_keys = cached(transaction, INSERT_KEYS_SQL).await?;
    let update_size = cached(
        transaction,
        "UPDATE logs SET size = moved.size FROM UNNEST($1::int8[], $2::int8[]) AS moved (id, size)
         WHERE logs.id = moved.id",
    )
    .await?;
    // The last write of each key wins (rows come in log order), so keep only
    // that one; then one statement writes them all and one deletes.
    let mut last: HashMap<(i64, &str, &str), Option<&Vec<u8>>> = HashMap::with_capacity(state.len());
    for (log, StateRow { kind, key, value }) in state {
        last.insert((*log, kind, key), value.as_ref());
    }
    let (mut upserts, mut deletes) = (StateColumns::default(), StateColumns::default());
    for ((log, kind, key), value) in last {
        let columns = if value.is_some() { &mut upserts } else { &mut deletes };
        columns.log.push(log);
        columns.kind.push(kind);
        columns.key.push(key);
        if let Some(value) = value {
            columns.value.push(value);
        }
    }
    // One statement may not write a key twice: keep each key's last entry.
    let mut newest: HashMap<(i64, EntryKey), i64> = HashMap::with_capacity(rows.keys.len());
    for &(log, key, entry) in &rows.keys {
        let stored = newest.entry((log, key)).or_insert(entry);
        *stored = (*stored).max(entry);
    }
    let (mut key_logs, mut keys, mut key_entries) = (Vec::new(), Vec::new(), Vec::new());
    for ((log, key), entry) in &newest {
        key_logs.push(*log);
        keys.push(key.as_slice());
        key_entries.push(*entry);
    }
    let (ids, sizes): (Vec<i64>, Vec<i64>) = heads.map(|head| (head.log, to_i64(head.frontier.size()))).unzip();
    let entries_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &rows.log,
        &rows.idx,
        &rows.leaf,
        &rows.bytes,
        &rows.entry_type,
        &rows.identity,
        &rows.decision,
        &rows.time_us,
    ];
    let skip = || async { Ok::<u64, tokio_postgres::Error>(0) };
    let (entries, nodes, keyed, upserted, deleted, sized, committed) = tokio::join!(
        async {
            if rows.idx.is_empty() { skip().await } else { transaction.execute(&insert_entries, &entries_params).await }
        },
        async {
            if nodes.0.is_empty() {
                skip().await
            } else {
                transaction.execute(&insert_nodes, &[&nodes.0, &nodes.1, &nodes.2]).await
            }
        },
        async {
            if keys.is_empty() {
                skip().await
            } else {
                transaction.execute(&insert_keys, &[&key_logs, &keys, &key_entries]).await
            }
        },
        async {
            if upserts.log.is_empty() {
                skip().await
            } else {
                transaction.execute(&upsert, &[&upserts.log, &upserts.kind, &upserts.key, &upserts.value]).await
            }
        },
        async {
            if deletes.log.is_empty() {
                skip().await
            } else {
                transaction.execute(&delete, &[&deletes.log, &deletes.kind, &deletes.key]).await
            }
        },
        async { if ids.is_empty() { skip().await } else { transaction.execute(&update_size, &[&ids, &sizes]).await } },
        async { if commit { transaction.batch_execute("COMMIT").await.map(Some) } else { Ok(None) } },
    );
    let statements =
        [entries, nodes, keyed, upserted, deleted, sized].into_iter().try_for_each(|outcome| outcome.map(drop));
    match (statements, committed) {
        (Ok(()), Ok(_)) => Ok(()),
        // The COMMIT was answered: the transaction is over either way.
        (Err(error), Ok(Some(()))) => Err(Ended(db_error(error))),
        (Err(error), _) | (Ok(()), Err(error)) => Err(Unended(db_error(error))),
    }
}

/// The head of `tenant`'s log as committed, its row locked for this
/// transaction: the cached one when the size in the database still matches
/// it, else loaded afresh (first use, or another process appended).
async fn current_head<C: GenericClient>(
    client: &C,
    heads: &HashMap<String, Head>,
    tenant: &str,
) -> Result<Head, StoreError> {
    // INVARIANT (fresh-head): read under the row lock, so it is the committed
    // size and nobody else can move it before this transaction ends.
    let (log, size) = log_row(client, tenant, true).await?;
    head_at(client, heads, tenant, log, size).await
}

/// The head of `tenant`'s log (`log`, of `size` entries): the cached one
/// when it has that size, else loaded.
async fn head_at<C: GenericClient>(
    client: &C,
    heads: &HashMap<String, Head>,
    tenant: &str,
    log: i64,
    size: u64,
) -> Result<Head, StoreError> {
    if let Some(head) = heads.get(tenant)
        && head.log == log
        && head.frontier.size() == size
    {
        return Ok(head.clone());
    }
    let mut wanted: Vec<NodeId> = Frontier::node_ids(size).collect();
    if let Some(last) = size.checked_sub(1) {
        wanted.push(NodeId { level: 0, index: last });
    }
    let hashes = read_nodes(client, log, &wanted).await?;
    let mut get = |id: NodeId| {
        hashes.get(&id).copied().ok_or_else(|| corrupt(format!("tree node {}/{} is missing", id.level, id.index)))
    };
    let frontier = Frontier::load(size, &mut get)?;
    let last_leaf = match size.checked_sub(1) {
        Some(last) => get(NodeId { level: 0, index: last })?,
        None => Hash::ZERO,
    };
    Ok(Head { log, frontier, last_leaf })
}

/// Turns one append's drafts into rows on top of `head`; returns the moved head.
fn stage(
    tenant: &str,
    mut head: Head,
    drafts: Vec<EntryDraft>,
    rows: &mut Rows,
    nodes: &mut NodeRows,
) -> Result<(Head, Vec<Appended>), StoreError> {
    let (rows_before, nodes_before) = (rows.mark(), nodes.0.len());
    let undo = |rows: &mut Rows, nodes: &mut NodeRows| {
        rows.truncate(rows_before);
        nodes.0.truncate(nodes_before);
        nodes.1.truncate(nodes_before);
        nodes.2.truncate(nodes_before);
    };
    let mut appended = Vec::with_capacity(drafts.len());
    for (position, draft) in drafts.into_iter().enumerate() {
        let index = head.frontier.size();
        if index >> INDEX_BITS != 0 {
            undo(rows, nodes);
            return Err(corrupt(format!("tenant `{tenant}`'s log is full ({index} entries)")));
        }
        let EntryDraft { entry_type, time, time_us, body, compressed_body, identity, decision, keys } = draft;
        let entry_head = EntryHead { tenant, index, time: &time, entry_type: &entry_type, prev: head.last_leaf };
        let canonical = match entry_head.encode(&body) {
            Ok(canonical) => canonical,
            Err(error) => {
                // All or nothing per append: drop the rows staged for it.
                undo(rows, nodes);
                return Err(StoreError::InvalidEntry { position, error });
            }
        };
        let log = head.log;
        head.frontier.push(canonical.leaf_hash, |id, hash| {
            if id.level > 0 {
                nodes.0.push(log);
                nodes.1.push(node_key(id));
                nodes.2.push(hash.as_bytes().to_vec());
            }
        });
        head.last_leaf = canonical.leaf_hash;
        rows.log.push(log);
        rows.idx.push(to_i64(index));
        rows.leaf.push(canonical.leaf_hash.as_bytes().to_vec());
        rows.bytes.push(packed::stored_form(canonical.bytes, &entry_head, compressed_body.as_deref()));
        rows.entry_type.push(entry_type);
        rows.identity.push(identity);
        rows.decision.push(decision);
        rows.time_us.push(time_us);
        rows.keys.extend(keys.into_iter().map(|key| (log, key, to_i64(index))));
        appended.push(Appended { index, leaf_hash: canonical.leaf_hash });
    }
    Ok((head, appended))
}

/// Work for a hold's session.
enum HoldCommand {
    Entries { start: u64, end: u64, reply: tokio::sync::oneshot::Sender<Result<Vec<StoredEntry>, StoreError>> },
    Find { keys: Vec<EntryKey>, reply: tokio::sync::oneshot::Sender<Result<Vec<Option<u64>>, StoreError>> },
    Commit { drafts: Vec<EntryDraft>, rows: Vec<StateRow>, reply: AppendReply },
}

/// A held PostgreSQL log: its session (a task on the ledger's runtime) holds
/// a transaction with the log's row locked until it commits or the hold is
/// dropped (the channel closes, the transaction rolls back).
struct PostgresHold {
    size: u64,
    fetched: Vec<StoredEntry>,
    commands: tokio::sync::mpsc::UnboundedSender<HoldCommand>,
}

impl LogHold for PostgresHold {
    fn size(&self) -> u64 {
        self.size
    }

    fn take_fetched(&mut self) -> Vec<StoredEntry> {
        std::mem::take(&mut self.fetched)
    }

    fn entries(&mut self, start: u64, end: u64) -> EntriesFuture {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.commands.send(HoldCommand::Entries { start, end, reply });
        Box::pin(async move {
            sent.map_err(|_| StoreError::WriterStopped)?;
            answer.await.unwrap_or(Err(StoreError::WriterStopped))
        })
    }

    fn find(&mut self, keys: Vec<EntryKey>) -> FindFuture {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.commands.send(HoldCommand::Find { keys, reply });
        Box::pin(async move {
            sent.map_err(|_| StoreError::WriterStopped)?;
            answer.await.unwrap_or(Err(StoreError::WriterStopped))
        })
    }

    fn commit(self: Box<Self>, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket {
        if let Err(error) = crate::check_append(&drafts, &rows).and_then(|()| check_text(&drafts, &rows)) {
            return AppendTicket::done(Err(error));
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        match self.commands.send(HoldCommand::Commit { drafts, rows, reply }) {
            Ok(()) => AppendTicket::waiting(receiver),
            Err(_) => AppendTicket::done(Err(StoreError::WriterStopped)),
        }
    }
}

/// One hold: locks `tenant`'s log row in a transaction, reports its size
/// and the entries from `known` on, then serves reads (entries, keys) and at
/// most one commit, all inside that transaction.
///
/// INVARIANT (held-head): the row lock is held from the size reported to
/// the commit, so the commit lands at that size in every process.
async fn hold_session(
    pool: Pool,
    heads: Arc<Mutex<HashMap<String, Head>>>,
    tenant: String,
    known: u64,
    opened: tokio::sync::oneshot::Sender<Result<(u64, Vec<StoredEntry>), StoreError>>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<HoldCommand>,
) {
    let client = match pool.get().await {
        Ok(client) => InTransaction(Some(client)),
        Err(error) => {
            let _ = opened.send(Err(db_error(error)));
            return;
        }
    };
    let Some(transaction) = client.0.as_ref() else { return };
    let (log, size, fetched) = match lock_and_fetch(transaction, &tenant, known).await {
        Ok(locked) => locked,
        Err(error) => {
            let _ = opened.send(Err(error));
            client.end().await;
            return;
        }
    };
    if let Some(heads) = heads.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&tenant) {
        advance_head(heads, log, known, &fetched);
    }
    if opened.send(Ok((size, fetched))).is_err() {
        return;
    }
    while let Some(command) = commands.recv().await {
        match command {
            HoldCommand::Entries { start, end, reply } => {
                let read = read_entries(transaction, &tenant, log, size, start, end).await;
                if let Ok(entries) = &read
                    && let Some(head) = heads.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&tenant)
                {
                    advance_head(head, log, start, entries);
                }
                let _ = reply.send(read);
            }
            // After the lock, in read committed: every entry committed before
            // the hold was granted counts, and nobody commits one since.
            HoldCommand::Find { keys, reply } => {
                let _ = reply.send(find_keys(transaction, log, &keys).await);
            }
            HoldCommand::Commit { drafts, rows, reply } => {
                let cached = heads.lock().unwrap_or_else(PoisonError::into_inner).get(&tenant).cloned();
                let (outcome, ended) = commit_held(transaction, cached, &tenant, log, size, drafts, rows).await;
                let result = outcome.map(|(head, appended)| {
                    heads.lock().unwrap_or_else(PoisonError::into_inner).insert(tenant.clone(), head);
                    appended
                });
                if ended {
                    client.finished();
                } else {
                    client.end().await;
                }
                // INVARIANT (ack-after-commit): the answer goes out only now.
                let _ = reply.send(result);
                return;
            }
        }
    }
    // The hold was dropped without a commit.
    client.end().await;
}

/// A pooled connection with a transaction the hold's session opened by hand
/// (so that `BEGIN` and `COMMIT` can travel with other statements). Unless
/// the transaction was ended ([`InTransaction::end`] rolls it back,
/// [`InTransaction::finished`] says it ended), dropping this takes the
/// connection out of the pool and closes it, so that no later user of the
/// pool inherits an open transaction (the session was cancelled midway).
struct InTransaction(Option<deadpool_postgres::Client>);

impl InTransaction {
    /// Rolls the transaction back and returns the connection to the pool;
    /// a connection that cannot roll back is closed instead.
    async fn end(mut self) {
        if let Some(client) = self.0.take() {
            if client.batch_execute("ROLLBACK").await.is_ok() {
                drop(client);
            } else {
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }

    /// The transaction ended (committed, or rolled back by the database):
    /// the connection goes back to the pool.
    fn finished(mut self) {
        drop(self.0.take());
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// Begins a transaction on `client`, locks `tenant`'s log row in it and
/// reads the entries from `known` on (at most a page): the log's id, size
/// and those entries.
///
/// The statements are prepared first and then sent together, `BEGIN`, then
/// the lock: the second runs after the first has the lock, with a snapshot of
/// its own (read committed), so it sees every entry committed before the
/// lock was granted, and none can come after. Should it still come back
/// short, the rest is read again now that the lock is certainly held.
async fn lock_and_fetch(
    client: &deadpool_postgres::Client,
    tenant: &str,
    known: u64,
) -> Result<(i64, u64, Vec<StoredEntry>), StoreError> {
    let transaction = client;
    if tenant.contains('\0') {
        return Err(StoreError::UnknownTenant { tenant: tenant.to_owned() });
    }
    let lock = cached(transaction, "SELECT id, size FROM logs WHERE tenant = $1 FOR UPDATE").await?;
    let fetch = cached(
        transaction,
        "SELECT idx, leaf, bytes FROM entries WHERE log = (SELECT id FROM logs WHERE tenant = $1)
         AND idx >= $2 ORDER BY idx LIMIT $3",
    )
    .await?;
    let page = to_i64(ENTRIES_PAGE_MAX);
    let start = to_i64(known);
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
    let fetch_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&tenant, &start, &page];
    let (begun, locked, fetched) = tokio::join!(
        transaction.batch_execute("BEGIN"),
        transaction.query_opt(&lock, &lock_params),
        transaction.query(&fetch, &fetch_params)
    );
    begun.map_err(db_error)?;
    let row = locked.map_err(db_error)?.ok_or_else(|| StoreError::UnknownTenant { tenant: tenant.to_owned() })?;
    let (log, size): (i64, u64) = (row.get(0), to_u64(row.get(1)));
    let mut entries = Vec::new();
    for (expected, row) in (known..).zip(&fetched.map_err(db_error)?) {
        let entry = stored_entry(tenant, row)?;
        if entry.index != expected || expected >= size {
            return Err(corrupt(format!("entry {expected} is missing or beyond the log")));
        }
        entries.push(entry);
    }
    let wanted = size.min(known.saturating_add(ENTRIES_PAGE_MAX));
    let have = known + entries.len() as u64;
    if have < wanted {
        entries.extend(read_entries(transaction, tenant, log, size, have, wanted).await?);
    }
    Ok((log, size, entries))
}

/// What another process appended, read in order from `start`, moves the
/// cached head along, so that the commit need not load it.
fn advance_head(head: &mut Head, log: i64, start: u64, entries: &[StoredEntry]) {
    if head.log == log && head.frontier.size() == start {
        for entry in entries {
            head.frontier.push(entry.leaf_hash, |_, _| {});
            head.last_leaf = entry.leaf_hash;
        }
    }
}

/// Appends a hold's drafts and rows on the head at `size` and commits.
///
/// Returns whether the transaction ended (the `COMMIT` was answered: it
/// committed, or, after a failed statement, the database rolled it back);
/// if not, the caller rolls it back.
async fn commit_held(
    client: &deadpool_postgres::Client,
    cached: Option<Head>,
    tenant: &str,
    log: i64,
    size: u64,
    drafts: Vec<EntryDraft>,
    state_rows: Vec<StateRow>,
) -> (Result<(Head, Vec<Appended>), StoreError>, bool) {
    let cached: HashMap<String, Head> = cached.map(|head| (tenant.to_owned(), head)).into_iter().collect();
    let head = match head_at(client, &cached, tenant, log, size).await {
        Ok(head) => head,
        Err(error) => return (Err(error), false),
    };
    let (mut rows, mut nodes) = (Rows::default(), (Vec::new(), Vec::new(), Vec::new()));
    let (head, appended) = match stage(tenant, head, drafts, &mut rows, &mut nodes) {
        Ok(staged) => staged,
        Err(error) => return (Err(error), false),
    };
    let state: Vec<(i64, StateRow)> = state_rows.into_iter().map(|row| (log, row)).collect();
    match insert_staged(client, &rows, &nodes, &state, std::iter::once(&head), true).await {
        Ok(()) => (Ok((head, appended)), true),
        Err(Unended(error)) => (Err(error), false),
        Err(Ended(error)) => (Err(error), true),
    }
}

/// Signs a checkpoint of `tenant`'s committed log holding its row lock, after
/// proving it consistent with the last one persisted.
async fn sign(pool: &Pool, tenant: &str, signer: &SignerKey) -> Result<SignedCheckpoint, StoreError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    let (log, size) = log_row(&transaction, tenant, true).await?;
    let root = with_nodes(&transaction, log, |get| tree::root(size, &mut |id| get(id))).await?;
    let last = read_checkpoint(&transaction, log).await?;
    let proof = match &last {
        Some(last) => {
            check_not_rolled_back(last, size)?;
            let from = last.checkpoint.size;
            with_nodes(&transaction, log, |get| {
                tree::consistency_proof(from, size, &mut |id| get(id)).map_err(prove_error)
            })
            .await?
        }
        None => Vec::new(),
    };
    let Some(signed) = next_checkpoint(last.as_ref(), size, root, &proof, signer)? else {
        return last.ok_or_else(|| corrupt("no checkpoint to answer"));
    };
    transaction
        .execute(
            "INSERT INTO checkpoints (log, size, root, note) VALUES ($1, $2, $3, $4)
             ON CONFLICT (log) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note",
            &[&log, &to_i64(size), &root.as_bytes().as_slice(), &signed.note],
        )
        .await
        .map_err(db_error)?;
    transaction.commit().await.map_err(db_error)?;
    Ok(signed)
}

async fn read_checkpoint<C: GenericClient>(client: &C, log: i64) -> Result<Option<SignedCheckpoint>, StoreError> {
    let row = client
        .query_opt(&cached(client, "SELECT size, root, note FROM checkpoints WHERE log = $1").await?, &[&log])
        .await
        .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let (size, root, note): (i64, &[u8], String) = (row.get(0), row.get(1), row.get(2));
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

/// Entries `[start, end)` of log `log` (`tenant`'s) of `size` committed entries.
async fn read_entries<C: GenericClient>(
    client: &C,
    tenant: &str,
    log: i64,
    size: u64,
    start: u64,
    end: u64,
) -> Result<Vec<StoredEntry>, StoreError> {
    if start > end || end > size || end - start > ENTRIES_PAGE_MAX {
        return Err(StoreError::EntryRange { start, end, size });
    }
    let rows = client
        .query(
            "SELECT idx, leaf, bytes FROM entries WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
            &[&log, &to_i64(start), &to_i64(end)],
        )
        .await
        .map_err(db_error)?;
    let mut entries = Vec::with_capacity(rows.len());
    for (expected, row) in (start..end).zip(&rows) {
        let entry = stored_entry(tenant, row)?;
        if entry.index != expected {
            return Err(corrupt(format!("entry {expected} is missing")));
        }
        entries.push(entry);
    }
    if entries.len() as u64 != end - start {
        return Err(corrupt(format!("entries [{start}, {end}) are incomplete")));
    }
    Ok(entries)
}

/// The newest entry stored with each of `keys` in log `log`, in their order.
async fn find_keys<C: GenericClient>(client: &C, log: i64, keys: &[EntryKey]) -> Result<Vec<Option<u64>>, StoreError> {
    let wanted: Vec<&[u8]> = keys.iter().map(|key| key.as_slice()).collect();
    let rows = client.query(&cached(client, FIND_KEYS_SQL).await?, &[&log, &wanted]).await.map_err(db_error)?;
    if rows.len() != keys.len() {
        return Err(db_error(format!("{} keys looked up, {} answers", keys.len(), rows.len())));
    }
    rows.iter()
        .map(|row| {
            let entry: Option<i64> = row.get(0);
            entry.map(|entry| u64::try_from(entry).map_err(|_| corrupt("a key names a negative entry"))).transpose()
        })
        .collect()
}

/// The most keys one statement of [`backfill_keys`] writes.
const BACKFILL_CHUNK: usize = 50_000;

/// Stores `keys` of entries already in `tenant`'s log (where a key is stored
/// already, the newer entry stays) and marks the log keyed from 0.
///
/// It locks the log's row first, as an append does, so it never waits on a
/// key an append has written while that append waits on the row (a deadlock).
async fn backfill_keys(pool: &Pool, tenant: &str, keys: Vec<(EntryKey, u64)>) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    let (log, size) = log_row(&transaction, tenant, true).await?;
    // One statement may not write a key twice: keep each key's newest entry.
    let mut newest: HashMap<EntryKey, u64> = HashMap::with_capacity(keys.len());
    for (key, entry) in keys {
        if entry >= size {
            return Err(StoreError::EntryRange { start: entry, end: entry.saturating_add(1), size });
        }
        let stored = newest.entry(key).or_insert(entry);
        *stored = (*stored).max(entry);
    }
    let mut newest: Vec<(EntryKey, u64)> = newest.into_iter().collect();
    newest.sort_unstable();
    let insert = cached(
        &transaction,
        "INSERT INTO entry_keys (log, key, entry) SELECT $1, * FROM UNNEST($2::bytea[], $3::int8[])
         ON CONFLICT (log, key) DO UPDATE SET entry = GREATEST(entry_keys.entry, excluded.entry)",
    )
    .await?;
    for chunk in newest.chunks(BACKFILL_CHUNK) {
        let (keys, entries): (Vec<&[u8]>, Vec<i64>) =
            chunk.iter().map(|(key, entry)| (key.as_slice(), to_i64(*entry))).unzip();
        transaction.execute(&insert, &[&log, &keys, &entries]).await.map_err(db_error)?;
    }
    transaction.execute("UPDATE logs SET keyed_from = 0 WHERE id = $1", &[&log]).await.map_err(db_error)?;
    transaction.commit().await.map_err(db_error)
}

fn stored_entry(tenant: &str, row: &tokio_postgres::Row) -> Result<StoredEntry, StoreError> {
    let index = to_u64(row.get(0));
    let bytes = packed::canonical_bytes(tenant, index, row.get(2))?;
    Ok(StoredEntry { index, leaf_hash: hash_from_blob(row.get(1))?, bytes })
}

/// One page of a search in log `log` (`tenant`'s) of `size` committed entries.
///
/// Without an identity the candidates are the next [`SEARCH_EXAMINED_MAX`]
/// entries after the cursor (a range of the primary key); with one, the
/// identity's next [`SEARCH_EXAMINED_MAX`] entries (through its index).
async fn search_log<C: GenericClient>(
    client: &C,
    tenant: &str,
    log: i64,
    size: u64,
    query: &SearchQuery,
) -> Result<SearchPage, StoreError> {
    let limit = query.limit.clamp(1, SEARCH_PAGE_MAX);
    let start = query.after.map_or(0, |after| after.saturating_add(1));
    let unmatchable = [&query.identity, &query.entry_type, &query.decision]
        .into_iter()
        .any(|filter| filter.as_deref().is_some_and(|text| text.contains('\0')));
    if start >= size || unmatchable {
        return Ok(SearchPage { entries: Vec::new(), next: None });
    }
    let (entry_type, decision, since, until) = (&query.entry_type, &query.decision, &query.since_us, &query.until_us);
    let limit_i64 = to_i64(limit as u64);
    let (entries, last_examined) = match &query.identity {
        None => {
            let end = size.min(start.saturating_add(SEARCH_EXAMINED_MAX));
            let sql = format!(
                "SELECT idx, leaf, bytes FROM entries WHERE log = $1 AND idx >= $2 AND idx < $7 AND {FILTERS}
                 ORDER BY idx LIMIT $8"
            );
            let rows = client
                .query(
                    &cached(client, &sql).await?,
                    &[&log, &to_i64(start), entry_type, decision, since, until, &to_i64(end), &limit_i64],
                )
                .await
                .map_err(db_error)?;
            let entries = rows.iter().map(|row| stored_entry(tenant, row)).collect::<Result<Vec<_>, _>>()?;
            (entries, end - 1)
        }
        Some(identity) => {
            let sql = format!(
                "WITH candidates AS (
                   SELECT idx, {FILTERS} AS hit FROM entries
                   WHERE log = $1 AND identity = $9 AND idx >= $2 AND idx < $7 ORDER BY idx LIMIT $10
                 ), hits AS (SELECT idx FROM candidates WHERE hit ORDER BY idx LIMIT $8)
                 SELECT (SELECT count(*) FROM candidates), (SELECT max(idx) FROM candidates),
                        (SELECT coalesce(array_agg(idx ORDER BY idx), '{{}}') FROM hits)"
            );
            let examined_max = to_i64(SEARCH_EXAMINED_MAX);
            let row = client
                .query_one(
                    &cached(client, &sql).await?,
                    &[
                        &log,
                        &to_i64(start),
                        entry_type,
                        decision,
                        since,
                        until,
                        &to_i64(size),
                        &limit_i64,
                        identity,
                        &examined_max,
                    ],
                )
                .await
                .map_err(db_error)?;
            let (count, max, hits): (i64, Option<i64>, Vec<i64>) = (row.get(0), row.get(1), row.get(2));
            let rows = if hits.is_empty() {
                Vec::new()
            } else {
                client
                    .query(
                        "SELECT idx, leaf, bytes FROM entries WHERE log = $1 AND idx = ANY($2) ORDER BY idx",
                        &[&log, &hits],
                    )
                    .await
                    .map_err(db_error)?
            };
            let entries = rows.iter().map(|row| stored_entry(tenant, row)).collect::<Result<Vec<_>, _>>()?;
            if entries.len() != hits.len() {
                return Err(corrupt("a search found entries that cannot be read"));
            }
            let last = match max {
                Some(max) if count >= examined_max => to_u64(max),
                _ => size - 1,
            };
            (entries, last)
        }
    };
    let next = match entries.last() {
        Some(entry) if entries.len() == limit => Some(entry.index),
        _ => Some(last_examined).filter(|&last| last + 1 < size),
    };
    Ok(SearchPage { entries, next })
}

/// PostgreSQL text cannot hold NUL: an append whose search terms or state
/// row names hold one fails alone, before it reaches a batch.
fn check_text(drafts: &[EntryDraft], rows: &[StateRow]) -> Result<(), StoreError> {
    for (position, draft) in drafts.iter().enumerate() {
        for (field, term) in [("identity", &draft.identity), ("decision", &draft.decision)] {
            if term.as_deref().is_some_and(|term| term.contains('\0')) {
                let reason = format!("the {field} search term holds a NUL character");
                return Err(StoreError::InvalidEntry {
                    position,
                    error: mandate_log::EntryError::InvalidField { field, reason },
                });
            }
        }
    }
    for (position, row) in rows.iter().enumerate() {
        if row.kind.contains('\0') || row.key.contains('\0') {
            return Err(StoreError::InvalidStateRow {
                position,
                reason: "its kind or key holds a NUL character".to_owned(),
            });
        }
    }
    Ok(())
}

impl Ledger for PostgresLedger {
    fn create_log(&self, tenant: &str, signer: &SignerKey) -> Result<(), StoreError> {
        mandate_log::entry::check_tenant(tenant).map_err(|error| StoreError::InvalidEntry { position: 0, error })?;
        let (tenant, signer) = (tenant.to_owned(), signer.to_private_text());
        self.run(move |pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            let inserted = client
                .execute(
                    "INSERT INTO logs (tenant, size, signer) VALUES ($1, 0, $2) ON CONFLICT (tenant) DO NOTHING",
                    &[&tenant, &signer],
                )
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(StoreError::TenantExists { tenant });
            }
            Ok(())
        })
    }

    fn signer(&self, tenant: &str) -> Result<SignerKey, StoreError> {
        if tenant.contains('\0') {
            return Err(StoreError::UnknownTenant { tenant: tenant.to_owned() });
        }
        let owned = tenant.to_owned();
        let text = self.run(move |pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            let row =
                client.query_opt("SELECT signer FROM logs WHERE tenant = $1", &[&owned]).await.map_err(db_error)?;
            row.map(|row| row.get::<_, String>(0)).ok_or(StoreError::UnknownTenant { tenant: owned })
        })?;
        if text.is_empty() {
            return Err(StoreError::NoSigner { tenant: tenant.to_owned() });
        }
        SignerKey::parse(&text)
            .map_err(|error| corrupt(format!("the signing key stored for tenant `{tenant}` does not parse: {error}")))
    }

    fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            // By bytes, whatever the database's collation.
            let rows =
                client.query("SELECT tenant FROM logs ORDER BY tenant COLLATE \"C\"", &[]).await.map_err(db_error)?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn append_with_state(&self, tenant: &str, drafts: Vec<EntryDraft>, rows: Vec<StateRow>) -> AppendTicket {
        if let Err(error) = crate::check_append(&drafts, &rows).and_then(|()| check_text(&drafts, &rows)) {
            return AppendTicket::done(Err(error));
        }
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let append = PendingAppend { tenant: tenant.to_owned(), drafts, rows, reply };
        match self.appends.as_ref().map(|appends| appends.send(append)) {
            Some(Ok(())) => AppendTicket::waiting(receiver),
            _ => AppendTicket::done(Err(StoreError::WriterStopped)),
        }
    }

    fn state_rows(&self, tenant: &str, kind: Option<&str>) -> Result<Vec<StateRow>, StoreError> {
        if kind.is_some_and(|kind| kind.contains('\0')) {
            // No kind holds NUL (PostgreSQL text cannot): this one has no rows.
            return self.read_log(tenant, |_, _, _| Box::pin(async { Ok(Vec::new()) }));
        }
        let kind = kind.map(str::to_owned);
        self.read_log(tenant, move |transaction, log, _| {
            Box::pin(async move {
                let rows = transaction
                    .query(
                        "SELECT kind, key, value FROM state WHERE log = $1 AND ($2::text IS NULL OR kind = $2::text)
                     ORDER BY kind COLLATE \"C\", key COLLATE \"C\"",
                        &[&log, &kind],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(rows
                    .iter()
                    .map(|row| StateRow { kind: row.get(0), key: row.get(1), value: Some(row.get(2)) })
                    .collect())
            })
        })
    }

    fn size(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            log_row(&client, &tenant, false).await.map(|(_, size)| size)
        })
    }

    fn find(&self, tenant: &str, keys: &[EntryKey]) -> Result<Vec<Option<u64>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read_log(tenant, move |transaction, log, _| {
            Box::pin(async move { find_keys(transaction, log, &keys).await })
        })
    }

    fn keyed_from(&self, tenant: &str) -> Result<u64, StoreError> {
        if tenant.contains('\0') {
            return Err(StoreError::UnknownTenant { tenant: tenant.to_owned() });
        }
        let tenant = tenant.to_owned();
        self.run(move |pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            let row = client
                .query_opt(&cached(&client, "SELECT keyed_from FROM logs WHERE tenant = $1").await?, &[&tenant])
                .await
                .map_err(db_error)?;
            let from: i64 = row.ok_or(StoreError::UnknownTenant { tenant })?.get(0);
            u64::try_from(from).map_err(|_| corrupt("`keyed_from` is negative"))
        })
    }

    fn backfill_keys(&self, tenant: &str, keys: Vec<(EntryKey, u64)>) -> Result<(), StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |pool| async move { backfill_keys(&pool, &tenant, keys).await })
    }

    fn entries(&self, tenant: &str, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        let owned = tenant.to_owned();
        self.read_log(tenant, move |transaction, log, size| {
            Box::pin(async move { read_entries(transaction, &owned, log, size, start, end).await })
        })
    }

    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError> {
        self.read_log(tenant, move |transaction, log, log_size| {
            Box::pin(async move {
                if size > log_size {
                    return Err(StoreError::EntryRange { start: 0, end: size, size: log_size });
                }
                with_nodes(transaction, log, |get| tree::root(size, &mut |id| get(id))).await
            })
        })
    }

    fn inclusion_proof(&self, tenant: &str, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.read_log(tenant, move |transaction, log, log_size| {
            Box::pin(async move {
                if size > log_size {
                    return Err(StoreError::EntryRange { start: 0, end: size, size: log_size });
                }
                with_nodes(transaction, log, |get| {
                    tree::inclusion_proof(index, size, &mut |id| get(id)).map_err(prove_error)
                })
                .await
            })
        })
    }

    fn consistency_proof(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        self.read_log(tenant, move |transaction, log, log_size| {
            Box::pin(async move {
                if to > log_size {
                    return Err(StoreError::EntryRange { start: 0, end: to, size: log_size });
                }
                with_nodes(transaction, log, |get| {
                    tree::consistency_proof(from, to, &mut |id| get(id)).map_err(prove_error)
                })
                .await
            })
        })
    }

    fn search(&self, tenant: &str, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        let (query, owned) = (query.clone(), tenant.to_owned());
        self.read_log(tenant, move |transaction, log, size| {
            Box::pin(async move { search_log(transaction, &owned, log, size, &query).await })
        })
    }

    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError> {
        self.read_log(tenant, |transaction, log, _| Box::pin(async move { read_checkpoint(transaction, log).await }))
    }

    fn sign_checkpoint(&self, tenant: &str, signer: Arc<SignerKey>) -> Result<SignedCheckpoint, StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |pool| async move { sign(&pool, &tenant, &signer).await })
    }

    fn shared(&self) -> bool {
        true
    }

    fn hold(&self, tenant: &str, known: u64) -> HoldFuture {
        let (opened, granted) = tokio::sync::oneshot::channel();
        let (commands, queue) = tokio::sync::mpsc::unbounded_channel();
        let session = hold_session(self.pool.clone(), self.hold_heads.clone(), tenant.to_owned(), known, opened, queue);
        self.runtime.spawn(session);
        Box::pin(async move {
            let (size, fetched) = granted.await.unwrap_or(Err(StoreError::WriterStopped))?;
            Ok(Box::new(PostgresHold { size, fetched, commands }) as Box<dyn LogHold>)
        })
    }
}
