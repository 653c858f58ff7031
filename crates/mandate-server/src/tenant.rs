//! One tenant at run time: its state in memory and the sequencer that alone
//! changes it.
//!
//! Every request that writes an entry (each change and each decision) goes to
//! the tenant's sequencer through a bounded queue. The sequencer takes a batch
//! of whatever is waiting, reads the clock once, evaluates each operation in
//! order against the state *as changed by the earlier operations of the same
//! batch*, folds each resulting entry into the state, appends all entries in
//! one ledger append (one transaction, one fsync), and only then answers. So
//! two spends in one batch see each other, an answer is never given before its
//! entry is durable, and the state is always `fold(apply, log)`.
//!
//! Readers take the state's read lock for a moment and then wait until
//! everything they read is committed (`Tenant::read`), so nobody sees a change
//! that might still be lost. If a commit fails, the sequencer rebuilds the
//! state from the log and fails the whole batch.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use jiff::{SignedDuration, Timestamp};
use mandate_core::budget::{self, Budget, Resolution, Resolve};
use mandate_core::decision;
use mandate_core::grant::{self, Grant};
use mandate_core::identity::{Identity, IdentityId, Kind};
use mandate_core::pattern::ActionPattern;
use mandate_core::policy::PolicySet;
use mandate_core::wire;
use mandate_log::SignerKey;
use mandate_store::{EntryDraft, Ledger, LogHold, StateRow, StoreError, StoredEntry};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::{COMMIT_OPS_MAX, EXPIRIES_PER_BATCH_MAX, SEQUENCER_QUEUE_MAX};
use crate::problem::{Code, Problem};
use crate::recent::{self, Recent, Wanted};
use crate::spend::{self, ApprovalStatus};
use crate::state::{self, Cause, Role, TenantSettings, TenantState, types};

/// How often a long poll on a shared store looks for changes made through
/// other servers.
const SHARED_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// How often the expiry timer looks for what is due.
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The most batches of expiries the timer runs on one tick: with
/// [`EXPIRIES_PER_BATCH_MAX`] each, about 65,000 expiries a second, above
/// what the server decides (so reservations expire as fast as they are made).
const EXPIRY_BATCHES_PER_TICK: usize = 64;

/// One change or decision for the sequencer.
#[derive(Debug)]
pub enum Op {
    /// A decision (SPEC §3).
    Authorize(Box<AuthorizeRequest>),
    /// Register an identity.
    CreateIdentity(Identity),
    /// Revoke an identity and so all its descendants.
    RevokeIdentity(IdentityId),
    /// Store a grant (its id already assigned).
    CreateGrant(Grant),
    /// Revoke a grant.
    RevokeGrant(String),
    /// Install a new policy set version, compiled by the caller.
    PutPolicies(PolicySet),
    /// Change settings (the fields given).
    UpdateSettings(Map<String, Value>),
    /// Issue an admin key (the secret stays with the caller).
    CreateAdminKey {
        /// The key's public id.
        key_id: String,
        /// Its role.
        role: Role,
        /// SHA-256 of its secret.
        secret_sha256: [u8; 32],
    },
    /// Revoke an admin key.
    RevokeAdminKey(String),
    /// Issue an agent token (the secret stays with the caller).
    CreateToken {
        /// The token's public id.
        token_id: String,
        /// The identity it acts as.
        identity: IdentityId,
        /// How long it works from its issue.
        ttl: SignedDuration,
        /// The actions it may ask about; `None`: every action.
        scopes: Option<Vec<ActionPattern>>,
        /// SHA-256 of its secret.
        secret_sha256: [u8; 32],
    },
    /// Revoke an agent token.
    RevokeToken(String),
    /// An operation asked with an agent token. The sequencer checks, at the
    /// batch's time and in log order, that the token is still active, and
    /// that the operation is one an agent may ask as its identity: a
    /// decision for that identity within the token's scopes (recorded with
    /// the token's id), the settlement or void of that identity's own
    /// reservation, or an event after that identity's own decision (any
    /// other reservation or decision is not found). Anything else is
    /// forbidden.
    AsAgent {
        /// The token's id.
        token_id: String,
        /// The operation.
        op: Box<Op>,
    },
    /// An operation asked with an admin key, which the sequencer checks is
    /// still active (not revoked) in log order: on a shared store another
    /// server may have revoked it after this one authenticated the request.
    AsAdmin {
        /// The key's id.
        key_id: String,
        /// The operation.
        op: Box<Op>,
    },
    /// Set a budget.
    CreateBudget(Budget),
    /// Change a budget's limit.
    UpdateBudget {
        /// The budget.
        id: String,
        /// Its new limit.
        limit: u64,
    },
    /// Settle a reservation with its actual amounts.
    Settle {
        /// The reservation.
        id: String,
        /// What was actually spent, by dimension.
        amounts: BTreeMap<String, u64>,
    },
    /// Void a reservation.
    Void(String),
    /// Record a tool's outcome after a decision of the last 24 h.
    RecordEvent(Box<EventRequest>),
    /// Record one tool call read from a coding agent's transcript.
    ImportCall(Box<ImportCall>),
    /// Answer a pending decision.
    ResolveApproval {
        /// The approval.
        id: String,
        /// Approve, or deny.
        approve: bool,
        /// Who answers: a human on the chain, or the admin key.
        by: String,
    },
}

impl Op {
    /// The operation inside an [`Op::AsAgent`] or [`Op::AsAdmin`].
    fn unwrapped(&self) -> &Op {
        match self {
            Op::AsAgent { op, .. } | Op::AsAdmin { op, .. } => op.unwrapped(),
            op => op,
        }
    }
}

/// An event (`POST /v1/events`), checked by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRequest {
    /// The decision it follows.
    pub decision_id: String,
    /// `success`, `failure` or `error`.
    pub outcome: String,
    /// How long the tool ran.
    pub duration_ms: Option<u64>,
    /// A digest of the tool's output (`sha256:<hex>`, say).
    pub output_digest: Option<String>,
    /// Free attributes.
    pub attributes: Option<Map<String, Value>>,
}

/// One tool call of an imported transcript (`POST /v1/imports`), checked
/// by the HTTP layer. Its entry's body is `fields` plus `identity`, `part`,
/// `position` and `calls_in_part`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportCall {
    /// Whose run the transcript records.
    pub identity: IdentityId,
    /// The SHA-256 of the whole transcript, hex.
    pub transcript_sha256: String,
    /// Which part of the transcript the request carried.
    pub part: u64,
    /// The call's place in its part.
    pub position: u64,
    /// How many calls the part holds.
    pub calls_in_part: u64,
    /// The call as recorded: `source`, `transcript_sha256`, `tool`,
    /// `action`, `input_digest`, `outcome`, and the optional fields.
    pub fields: Map<String, Value>,
}

/// A decision request, checked by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizeRequest {
    /// The acting identity.
    pub identity: IdentityId,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The caller's context (without the reserved keys).
    pub context: Map<String, Value>,
    /// Amounts by dimension.
    pub amounts: BTreeMap<String, u64>,
    /// The tool's raw input, if given.
    pub input: Option<Value>,
    /// Hex SHA-256 of the canonical input, if given.
    pub input_sha256: Option<String>,
    /// Idempotency key: a retry within 24 h gets the first answer.
    pub request_id: Option<String>,
    /// How long a reservation (or approval) is held; default 300 s, at most 24 h.
    pub reservation_ttl: Option<SignedDuration>,
    /// The agent run.
    pub session_id: Option<String>,
    /// W3C trace id.
    pub trace_id: Option<String>,
}

/// What one operation answers: the JSON for the client (with `log_index`
/// added when it wrote an entry), or a problem.
pub type OpResult = Result<Map<String, Value>, Problem>;

struct Submission {
    ops: Vec<Op>,
    reply: oneshot::Sender<Vec<OpResult>>,
}

/// How far the log is committed, and which incarnation of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    size: u64,
    /// Bumped whenever a commit fails (the state is then rebuilt).
    epoch: u64,
    /// A commit failed and the state, which may hold changes the log does
    /// not, is not rebuilt yet (the store is unreachable): nothing may read
    /// it until the next batch rebuilds it.
    stale: bool,
}

/// A tenant being served.
pub struct Tenant {
    name: String,
    ledger: Arc<dyn Ledger>,
    state: Arc<RwLock<TenantState>>,
    queue: mpsc::Sender<Submission>,
    committed: watch::Receiver<Committed>,
    signer: Arc<SignerKey>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Why a tenant could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry does not parse.
    #[error("entry {index} does not parse: {reason}")]
    Entry {
        /// Its index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// An entry does not apply.
    #[error(transparent)]
    Apply(#[from] state::ApplyError),
    /// The default policy set failed to compile.
    #[error(transparent)]
    Policy(#[from] mandate_core::policy::PolicyError),
}

/// Folds a tenant's whole log into its state.
///
/// A log written before entries had keys (`recent.rs`) gets its decisions
/// of the last 24 h keyed on the way, once, so that their request ids and
/// events still answer after the upgrade.
pub fn load_state(ledger: &dyn Ledger, tenant: &str) -> Result<TenantState, LoadError> {
    let size = ledger.size(tenant)?;
    let keyed_from = ledger.keyed_from(tenant)?;
    if keyed_from == 0 {
        return fold_log(ledger, tenant, size);
    }
    let now = Timestamp::now();
    let mut keys = Vec::new();
    let mut state = TenantState::new(tenant)?;
    mandate_store::for_each_entry(ledger, tenant, size, |stored| {
        apply_stored(&mut state, &stored)?;
        if stored.index < keyed_from
            && let Ok(entry) = mandate_log::Entry::parse(&stored.bytes)
            && entry.entry_type == types::DECISION
            && entry.time.parse::<Timestamp>().is_ok_and(|at| now.duration_since(at) < recent::DECISION_RETENTION)
        {
            keys.extend(recent::entry_keys(&entry.body).into_iter().map(|key| (key, stored.index)));
        }
        Ok::<(), LoadError>(())
    })?;
    tracing::info!(tenant, keys = keys.len(), "keyed the decisions of the last 24 h written before keys were");
    ledger.backfill_keys(tenant, keys)?;
    Ok(state)
}

/// Folds the first `size` entries of a tenant's log into a state.
pub fn fold_log(ledger: &dyn Ledger, tenant: &str, size: u64) -> Result<TenantState, LoadError> {
    let mut state = TenantState::new(tenant)?;
    mandate_store::for_each_entry(ledger, tenant, size, |stored| apply_stored(&mut state, &stored))?;
    Ok(state)
}

/// Folds the log's next entry into the state. It must be the entry its index
/// and `prev` say: an entry edited in the database, moved, or from another
/// tenant stops the fold rather than being acted on.
pub fn apply_stored(state: &mut TenantState, stored: &StoredEntry) -> Result<(), LoadError> {
    let bad = |reason: String| LoadError::Entry { index: stored.index, reason };
    let entry = mandate_log::Entry::parse(&stored.bytes).map_err(|error| bad(error.to_string()))?;
    if entry.index != stored.index || entry.index != state.applied || entry.tenant != state.name {
        return Err(bad(format!(
            "it says it is entry {} of `{}`, where entry {} of `{}` was expected",
            entry.index, entry.tenant, state.applied, state.name
        )));
    }
    if entry.prev != state.last_leaf {
        return Err(bad("its `prev` is not the hash of the entry before it: the log was altered".into()));
    }
    let leaf = mandate_log::hash::leaf_hash(&stored.bytes);
    if leaf != stored.leaf_hash {
        return Err(bad("its bytes do not hash to the leaf the tree holds: the log was altered".into()));
    }
    state.apply(entry.index, &entry.time, &entry.entry_type, &entry.body)?;
    state.last_leaf = leaf;
    Ok(())
}

impl Tenant {
    /// Loads `name`'s state from the log and starts its sequencer on the
    /// current tokio runtime.
    pub fn start(ledger: Arc<dyn Ledger>, name: &str) -> Result<Arc<Tenant>, LoadError> {
        let state = load_state(ledger.as_ref(), name)?;
        let signer = Arc::new(ledger.signer(name)?);
        let committed = Committed { size: state.applied, epoch: 0, stale: false };
        metrics::gauge!("mandate_log_entries", "tenant" => name.to_owned()).set(state.applied as f64);
        let state = Arc::new(RwLock::new(state));
        let (queue, submissions) = mpsc::channel(SEQUENCER_QUEUE_MAX);
        let (committed_tx, committed_rx) = watch::channel(committed);
        let sequencer = Sequencer {
            tenant: name.to_owned(),
            ledger: ledger.clone(),
            state: state.clone(),
            committed: committed_tx,
        };
        tokio::spawn(sequencer.run(submissions));
        let tenant = Arc::new(Tenant { name: name.to_owned(), ledger, state, queue, committed: committed_rx, signer });
        tokio::spawn(expiry_timer(Arc::downgrade(&tenant)));
        Ok(tenant)
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key the tenant's checkpoints are signed with.
    pub fn signer(&self) -> Arc<SignerKey> {
        self.signer.clone()
    }

    /// Submits operations; answers once they are committed (or refused).
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, Problem> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Submission { ops, reply })
            .await
            .map_err(|_| Problem::new(Code::Unavailable, "the tenant's sequencer has stopped"))?;
        let answers =
            answer.await.map_err(|_| Problem::new(Code::Unavailable, "the tenant's sequencer has stopped"))?;
        let mut resolved = Vec::with_capacity(answers.len());
        for answer in answers {
            resolved.push(match answer {
                Ok(answer) => match answer.get(REPLAY_OF).and_then(Value::as_u64) {
                    Some(index) => self.earlier_answer(index).await,
                    None => Ok(answer),
                },
                Err(problem) => Err(problem),
            });
        }
        Ok(resolved)
    }

    /// The answer of the decision at `index`, for a retried `request_id`:
    /// its entry's body without the request, with `replayed: true`.
    pub async fn earlier_answer(&self, index: u64) -> OpResult {
        let ledger = self.ledger.clone();
        let tenant = self.name.clone();
        let stored = tokio::task::spawn_blocking(move || ledger.entries(&tenant, index, index + 1))
            .await
            .map_err(|_| Problem::new(Code::Internal, "reading an earlier answer failed"))??;
        let entry = stored
            .first()
            .and_then(|stored| mandate_log::Entry::parse(&stored.bytes).ok())
            .ok_or_else(|| Problem::new(Code::Internal, format!("entry {index} cannot be read")))?;
        let mut answer = entry.body;
        answer.remove("request");
        answer.insert("log_index".into(), Value::from(index));
        answer.insert("replayed".into(), Value::Bool(true));
        Ok(answer)
    }

    /// The id of the decision `identity` asked for with `request_id` in the
    /// last 24 h, found in the store by its key (every server's committed
    /// decisions count).
    pub async fn recent_request(&self, identity: &IdentityId, request_id: &str) -> Result<Option<String>, Problem> {
        let mut wanted = Wanted::default();
        wanted.request(identity, request_id);
        let recent = self.recall_committed(wanted).await?;
        Ok(recent.seen(identity, request_id, Timestamp::now()).map(|seen| seen.decision_id.clone()))
    }

    /// The view of reservation `id` if it was resolved in the last 24 h
    /// (held ones are in the state), told again by its entries.
    pub async fn resolved_reservation(&self, id: &str) -> Result<Option<Map<String, Value>>, Problem> {
        let mut wanted = Wanted::default();
        wanted.reservation(id);
        let recent = self.recall_committed(wanted).await?;
        Ok(recent.resolved(id, Timestamp::now()).map(|resolved| spend::reservation_view(&resolved.reservation)))
    }

    /// [`Wanted::recall`] from what is committed (outside the sequencer).
    async fn recall_committed(&self, wanted: Wanted) -> Result<Recent, Problem> {
        let (ledger, tenant) = (self.ledger.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || {
            let found = ledger.find(&tenant, &wanted.keys())?;
            let mut entries = BTreeMap::new();
            for index in found.iter().flatten() {
                if entries.contains_key(index) {
                    continue;
                }
                for stored in ledger.entries(&tenant, *index, index + 1)? {
                    if let Ok(entry) = mandate_log::Entry::parse(&stored.bytes) {
                        entries.insert(stored.index, entry);
                    }
                }
            }
            Ok::<_, StoreError>(wanted.recall(&found, &entries))
        })
        .await
        .map_err(|_| Problem::new(Code::Internal, "looking up recent entries failed"))?
        .map_err(Problem::from)
    }

    /// On a store other servers append to ([`Ledger::shared`]): folds in
    /// what they appended before this call, so that what the caller reads
    /// next includes every change acknowledged anywhere before it asked
    /// (read-your-writes across servers). One query when nothing is new.
    pub async fn sync(&self) -> Result<(), Problem> {
        if !self.ledger.shared() {
            return Ok(());
        }
        let (ledger, name) = (self.ledger.clone(), self.name.clone());
        let size = tokio::task::spawn_blocking(move || ledger.size(&name))
            .await
            .map_err(|_| Problem::new(Code::Internal, "reading the log's size failed"))??;
        if size > self.committed.borrow().size {
            // An empty batch holds the log and folds in what is new.
            for answer in self.submit(Vec::new()).await? {
                answer?;
            }
        }
        Ok(())
    }

    /// Waits until the state changes (or `timeout` passes): for long polls.
    /// On a shared store a change may come from another server, which this
    /// one only sees by looking: it looks every [`SHARED_POLL`].
    pub async fn changed(&self, timeout: std::time::Duration) {
        let mut committed = self.committed.clone();
        if !self.ledger.shared() {
            let _ = tokio::time::timeout(timeout, committed.changed()).await;
            return;
        }
        let _ = tokio::time::timeout(timeout.min(SHARED_POLL), committed.changed()).await;
        if let Err(problem) = self.sync().await {
            tracing::debug!(tenant = %self.name, detail = %problem.detail(), "a long poll could not look for changes");
        }
    }

    /// Submits one operation.
    pub async fn submit_one(&self, op: Op) -> OpResult {
        self.submit(vec![op]).await?.pop().unwrap_or_else(|| Err(Problem::new(Code::Internal, "no answer")))
    }

    /// Reads the state, then waits until what was read is committed.
    pub async fn read<T>(&self, f: impl FnOnce(&TenantState) -> T) -> Result<T, Problem> {
        let rebuilding = || Problem::new(Code::Unavailable, "a write failed and the state is being rebuilt; retry");
        let (value, version, epoch) = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let committed = *self.committed.borrow();
            if committed.stale {
                return Err(rebuilding());
            }
            (f(&state), state.applied, committed.epoch)
        };
        let mut committed = self.committed.clone();
        let reached = committed
            .wait_for(|committed| committed.size >= version || committed.epoch != epoch)
            .await
            .map_err(|_| Problem::new(Code::Unavailable, "the tenant's sequencer has stopped"))?;
        if reached.epoch != epoch {
            return Err(rebuilding());
        }
        Ok(value)
    }

    /// Reads the state without waiting: for authentication, which only
    /// needs keys, and may see a key whose creation is still committing
    /// (its creator has not been answered, so nobody else holds it).
    pub fn peek<T>(&self, f: impl FnOnce(&TenantState) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Makes sure reservations and approvals expire when nobody calls: when
/// something is due, an empty submission makes the sequencer run a batch,
/// which writes the expiries. Stops with the tenant.
async fn expiry_timer(tenant: std::sync::Weak<Tenant>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tenant) = tenant.upgrade() else { return };
        // A batch writes at most EXPIRIES_PER_BATCH_MAX expiries: after a
        // burst of reservations, the next ones follow at once, while each
        // batch writes something, a bounded number of batches per tick (a
        // batch that fails retries on the next tick, not in a loop).
        for _ in 0..EXPIRY_BATCHES_PER_TICK {
            let Some(size) =
                tenant.peek(|state| state.spending.anything_due(Timestamp::now()).then_some(state.applied))
            else {
                break;
            };
            let _ = tenant.submit(Vec::new()).await;
            if tenant.peek(|state| state.applied) == size {
                break;
            }
        }
    }
}

struct Sequencer {
    tenant: String,
    ledger: Arc<dyn Ledger>,
    state: Arc<RwLock<TenantState>>,
    committed: watch::Sender<Committed>,
}

/// What an evaluated operation leaves for after the commit.
struct Staged {
    result: Result<(Map<String, Value>, Option<usize>), Problem>,
}

impl Sequencer {
    async fn run(self, mut submissions: mpsc::Receiver<Submission>) {
        while let Some(first) = submissions.recv().await {
            let mut ops = first.ops.len();
            let mut batch = vec![first];
            while ops < COMMIT_OPS_MAX {
                match submissions.try_recv() {
                    Ok(submission) => {
                        ops += submission.ops.len();
                        batch.push(submission);
                    }
                    Err(_) => break,
                }
            }
            if !self.run_batch(batch).await {
                // The state could not be rebuilt: stop, so that every later
                // request is answered "unavailable" instead of decided
                // against a state the log does not hold.
                return;
            }
        }
    }

    /// Runs one batch; false when the tenant must stop.
    ///
    /// The batch holds the tenant's log ([`Ledger::hold`]) from before it
    /// reads the state to after its commit: first it folds in what other
    /// processes appended since (PostgreSQL), then it decides on that state,
    /// so that a revocation or a spend made through another server counts in
    /// this one's very next decision. INVARIANT (decide-on-the-log): every
    /// batch is decided on `fold(apply, log[0..n])` where `n` is the size its
    /// entries are appended at.
    async fn run_batch(&self, batch: Vec<Submission>) -> bool {
        if self.committed.borrow().stale {
            match self.rebuild() {
                Ok(()) => {}
                Err(Rebuild::Later(problem)) => return fail_batch(batch, &problem, true),
                Err(Rebuild::Never(problem)) => return fail_batch(batch, &problem, false),
            }
        }
        let started = std::time::Instant::now();
        let known = self.state.read().unwrap_or_else(PoisonError::into_inner).applied;
        let mut hold = match self.ledger.hold(&self.tenant, known).await {
            Ok(hold) => hold,
            Err(error) => return fail_batch(batch, &Problem::from(error), true),
        };
        let held = std::time::Instant::now();
        if let Err(error) = self.catch_up(hold.as_mut(), known).await {
            return match error {
                LoadError::Store(error) => fail_batch(batch, &Problem::from(error), true),
                other => {
                    tracing::error!(tenant = %self.tenant, error = %other, "cannot fold the log's new entries; the tenant stops");
                    fail_batch(batch, &Problem::new(Code::Unavailable, "the tenant's log cannot be applied"), false)
                }
            };
        }
        let mut recent = match self.recall(hold.as_mut(), &batch).await {
            Ok(recent) => recent,
            Err(error) => return fail_batch(batch, &Problem::from(error), true),
        };
        let recalled = std::time::Instant::now();
        // INVARIANT (one-clock-per-batch): every entry of a batch carries the
        // same time, read once here.
        let mut drafts: Vec<EntryDraft> = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        let base;
        let rows: Vec<StateRow>;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            base = state.applied;
            // Entry times have microseconds, and the fold reads them back:
            // decide at exactly that instant, and never before the last entry.
            let clock = Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap_or(Timestamp::UNIX_EPOCH);
            let now = state.last_time.map_or(clock, |last| clock.max(last));
            let time = entry_time(now);
            // Expiries first: what is due is released before anyone decides.
            expire_due(&mut state, &mut recent, now, &time, &mut drafts);
            for Submission { ops, reply } in batch {
                let staged: Vec<Staged> = ops
                    .into_iter()
                    .map(|op| Staged { result: evaluate(&mut state, &mut recent, op, now, &time, &mut drafts) })
                    .collect();
                replies.push((reply, staged));
            }
            rows = state
                .spending
                .take_dirty()
                .into_iter()
                .map(|(kind, key, value)| StateRow { kind: kind.to_owned(), key, value })
                .collect();
        }
        let decided = std::time::Instant::now();
        let entries = drafts.len();
        let outcome = if drafts.is_empty() {
            // Nothing to write: the hold is released unused.
            drop(hold);
            Ok(Vec::new())
        } else {
            let count = drafts.len() as u64;
            // INVARIANT (rows-with-entries): the rows the batch changed are
            // written in the same transaction as its entries.
            match hold.commit(drafts, rows).await {
                // The hold makes the store's indexes the ones the state
                // assumed; if not, the state is rebuilt.
                Ok(appended) if appended.first().map(|a| a.index) == Some(base) && appended.len() as u64 == count => {
                    if let Some(last) = appended.last() {
                        self.state.write().unwrap_or_else(PoisonError::into_inner).last_leaf = last.leaf_hash;
                    }
                    self.committed.send_modify(|committed| committed.size = base + count);
                    metrics::gauge!("mandate_log_entries", "tenant" => self.tenant.clone()).set((base + count) as f64);
                    Ok(appended)
                }
                Ok(_) => Err(Problem::new(Code::Unavailable, "the log moved under this server; state rebuilt")),
                Err(error) => Err(Problem::from(error)),
            }
        };
        // Where a batch's time goes, for profiling (`MANDATE_LOG=mandate_server=trace`):
        // waiting for the hold, catching up and recalling recent entries,
        // deciding (and drafting the entries), committing.
        tracing::trace!(
            tenant = %self.tenant,
            entries,
            caught_up = base - known,
            hold_us = (held - started).as_micros() as u64,
            recall_us = (recalled - held).as_micros() as u64,
            decide_us = (decided - recalled).as_micros() as u64,
            commit_us = decided.elapsed().as_micros() as u64,
            "batch"
        );
        match outcome {
            Ok(appended) => {
                for (reply, staged) in replies {
                    let answers = staged
                        .into_iter()
                        .map(|staged| {
                            staged.result.map(|(mut answer, position)| {
                                if let Some(appended) = position.and_then(|position| appended.get(position)) {
                                    answer.insert("log_index".into(), Value::from(appended.index));
                                }
                                answer
                            })
                        })
                        .collect();
                    let _ = reply.send(answers);
                }
                true
            }
            Err(problem) => {
                tracing::error!(tenant = %self.tenant, detail = %problem.detail(), "commit failed; rebuilding the state");
                // Readers in flight fail (the epoch moves), and nobody reads
                // the state until it is rebuilt.
                self.committed.send_modify(|committed| {
                    committed.epoch += 1;
                    committed.stale = true;
                });
                for (reply, staged) in replies {
                    let answers = staged.into_iter().map(|_| Err(problem.clone())).collect();
                    let _ = reply.send(answers);
                }
                // If the store is unreachable, the next batch tries again.
                !matches!(self.rebuild(), Err(Rebuild::Never(_)))
            }
        }
    }

    /// Folds in the entries other processes appended since this state was
    /// last brought up to date, reading them through the hold (so nothing
    /// more can be appended meanwhile). A store failure leaves the state at
    /// a prefix of the log, which is still sound; anything else is fatal.
    /// `known` is the state's size when the hold was asked for (only this
    /// sequencer changes the state, so it still is).
    async fn catch_up(&self, hold: &mut dyn LogHold, known: u64) -> Result<(), LoadError> {
        let size = hold.size();
        let mut applied = known;
        if size < applied {
            return Err(LoadError::Entry {
                index: size,
                reason: format!("the log holds {size} entries but {applied} were applied: it was rolled back"),
            });
        }
        // The first page came with the hold; the rest is read through it.
        let mut fetched = hold.take_fetched();
        while applied < size {
            let page = if fetched.is_empty() {
                hold.entries(applied, size.min(applied + mandate_store::ENTRIES_PAGE_MAX)).await?
            } else {
                std::mem::take(&mut fetched)
            };
            let end = applied + page.len() as u64;
            {
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                for stored in &page {
                    apply_stored(&mut state, stored)?;
                }
            }
            applied = end;
            self.committed.send_modify(|committed| committed.size = end);
            metrics::gauge!("mandate_log_entries", "tenant" => self.tenant.clone()).set(end as f64);
            metrics::counter!("mandate_entries_caught_up_total", "tenant" => self.tenant.clone())
                .increment(page.len() as u64);
        }
        Ok(())
    }

    /// The decisions the batch's operations name (by request id, by decision
    /// id) and the resolved reservations they settle or void, found in the
    /// held log by their keys: see `recent.rs`. A store failure fails the
    /// batch.
    async fn recall(&self, hold: &mut dyn LogHold, batch: &[Submission]) -> Result<Recent, StoreError> {
        let mut wanted = Wanted::default();
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            for op in batch.iter().flat_map(|submission| &submission.ops) {
                match op.unwrapped() {
                    Op::Authorize(request) => {
                        if let Some(request_id) = &request.request_id {
                            wanted.request(&request.identity, request_id);
                        }
                    }
                    Op::RecordEvent(event) => wanted.decision(&event.decision_id),
                    // Only held reservations are in the state.
                    Op::Settle { id, .. } | Op::Void(id) if !state.spending.budgets.knows_reservation(id) => {
                        wanted.reservation(id);
                    }
                    Op::ResolveApproval { id, approve: true, .. } => {
                        let reservation = state.spending.approvals.get(id).and_then(|a| a.reservation.as_ref());
                        if let Some(reservation) = reservation
                            && !state.spending.budgets.knows_reservation(reservation)
                        {
                            wanted.reservation(reservation);
                        }
                    }
                    _ => {}
                }
            }
        }
        let keys = wanted.keys();
        if keys.is_empty() {
            return Ok(Recent::default());
        }
        let found = hold.find(keys).await?;
        let mut entries = BTreeMap::new();
        for index in found.iter().flatten() {
            if entries.contains_key(index) {
                continue;
            }
            for stored in hold.entries(*index, index + 1).await? {
                if let Ok(entry) = mandate_log::Entry::parse(&stored.bytes) {
                    entries.insert(stored.index, entry);
                }
            }
        }
        Ok(wanted.recall(&found, &entries))
    }

    /// After a failed commit the state may hold changes that are not in the
    /// log: fold the log again.
    fn rebuild(&self) -> Result<(), Rebuild> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match load_state(self.ledger.as_ref(), &self.tenant) {
            Ok(fresh) => {
                *state = fresh;
                let size = state.applied;
                self.committed.send_modify(|committed| {
                    committed.size = size;
                    committed.stale = false;
                });
                tracing::info!(tenant = %self.tenant, size, "state rebuilt from the log");
                Ok(())
            }
            Err(LoadError::Store(error)) => {
                tracing::warn!(tenant = %self.tenant, %error, "cannot rebuild the state yet; the next batch retries");
                Err(Rebuild::Later(Problem::from(error)))
            }
            Err(error) => {
                tracing::error!(tenant = %self.tenant, %error, "cannot rebuild the state; the tenant stops");
                Err(Rebuild::Never(Problem::new(Code::Unavailable, "the tenant's log cannot be applied")))
            }
        }
    }
}

/// Why the state could not be rebuilt.
enum Rebuild {
    /// The store failed: try again with the next batch.
    Later(Problem),
    /// The log does not fold: the tenant stops.
    Never(Problem),
}

/// Answers every operation of a batch that could not run with `problem`;
/// returns `keep_going` (false: the tenant stops).
fn fail_batch(batch: Vec<Submission>, problem: &Problem, keep_going: bool) -> bool {
    for Submission { ops, reply } in batch {
        let _ = reply.send(ops.iter().map(|_| Err(problem.clone())).collect());
    }
    keep_going
}

/// An entry's time: RFC 3339 UTC with microseconds, so that times sort as text.
pub fn entry_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Evaluates one operation against the state, folds its entry in, and queues
/// the entry's draft. Returns the answer and the draft's position.
fn evaluate(
    state: &mut TenantState,
    recent: &mut Recent,
    op: Op,
    now: Timestamp,
    time: &str,
    drafts: &mut Vec<EntryDraft>,
) -> Result<(Map<String, Value>, Option<usize>), Problem> {
    let index = state.applied;
    let (op, token_id) = match op {
        Op::AsAgent { token_id, op } => {
            check_agent_op(state, recent, &token_id, &op, now)?;
            (*op, Some(token_id))
        }
        Op::AsAdmin { key_id, op } => {
            if state.admin_keys.get(&key_id).is_none_or(|key| key.revoked) {
                return Err(Problem::new(Code::Unauthorized, "the bearer token is not a valid key"));
            }
            (*op, None)
        }
        op => (op, None),
    };
    let (entry_type, body, terms, prepared_policies) = match op {
        Op::AsAgent { .. } | Op::AsAdmin { .. } => {
            return Err(Problem::new(Code::Internal, "an operation wrapped twice"));
        }
        Op::Authorize(request) => {
            let mut recorded = request_body(state, &request);
            if let Some(token_id) = token_id {
                recorded.insert("token_id".into(), Value::from(token_id));
            }
            if let Some(request_id) = &request.request_id
                && let Some(seen) = recent.seen(&request.identity, request_id, now)
            {
                if seen.fingerprint != recent::fingerprint(&recorded) {
                    return Err(Problem::field(
                        Code::Conflict,
                        "request_id",
                        format!("`request_id` `{request_id}` was used within 24 h for a different request"),
                    ));
                }
                // The first answer, read back from its entry by the caller.
                let mut replay = Map::new();
                replay.insert(REPLAY_OF.into(), Value::from(seen.log_index));
                return Ok((replay, None));
            }
            let (body, outcome) = decide(state, &request, recorded, now);
            (types::DECISION, body, (Some(request.identity.to_string()), Some(outcome)), None)
        }
        Op::CreateBudget(budget) => {
            if state.authority.directory.get(&budget.identity).is_none() {
                return Err(Problem::field(
                    Code::InvalidField,
                    "identity",
                    format!("no identity `{}`", budget.identity),
                ));
            }
            state.spending.check_budget(&budget).map_err(|error| match error {
                budget::BudgetError::Duplicate { .. } => Problem::field(Code::Conflict, "id", error.to_string()),
                other => Problem::new(Code::Conflict, other.to_string()),
            })?;
            let subject = budget.identity.to_string();
            (types::BUDGET_CREATED, spend::budget_body(&budget), (Some(subject), None), None)
        }
        Op::UpdateBudget { id, limit } => {
            let Some(budget) = state.spending.budgets.get(&id) else { return Err(Problem::not_found("budget")) };
            let subject = budget.identity.to_string();
            let mut body = Map::new();
            body.insert("id".into(), Value::from(id));
            body.insert("limit".into(), Value::from(limit));
            (types::BUDGET_UPDATED, body, (Some(subject), None), None)
        }
        Op::Settle { id, amounts } => {
            if let Some(approval) = state.spending.approval_of(&id)
                && approval.status != ApprovalStatus::Approved
            {
                return Err(Problem::new(
                    Code::Conflict,
                    format!(
                        "reservation `{id}` waits on approval `{}`, which is {}",
                        approval.id,
                        approval.status.as_str()
                    ),
                ));
            }
            let resolution = Resolution::Settle(amounts.clone());
            if !state.spending.budgets.knows_reservation(&id) {
                return answer_resolved(recent, &id, &resolution, now);
            }
            resolve_check(state, &id, &resolution)?;
            let mut body = Map::new();
            body.insert(
                "amounts".into(),
                Value::Object(amounts.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect()),
            );
            body.insert("id".into(), Value::from(id.as_str()));
            (types::RESERVATION_SETTLED, body, (reservation_subject(state, &id), None), None)
        }
        Op::Void(id) => {
            if !state.spending.budgets.knows_reservation(&id) {
                return answer_resolved(recent, &id, &Resolution::Void, now);
            }
            resolve_check(state, &id, &Resolution::Void)?;
            let mut body = Map::new();
            body.insert("id".into(), Value::from(id.as_str()));
            (types::RESERVATION_VOIDED, body, (reservation_subject(state, &id), None), None)
        }
        Op::RecordEvent(event) => {
            let decision =
                recent.decision(&event.decision_id, now).ok_or_else(|| no_recent_decision(&event.decision_id))?;
            let identity = decision.identity.to_string();
            let mut body = Map::new();
            if let Some(attributes) = event.attributes {
                body.insert("attributes".into(), Value::Object(attributes));
            }
            body.insert("decision_id".into(), Value::from(event.decision_id));
            if let Some(duration_ms) = event.duration_ms {
                body.insert("duration_ms".into(), Value::from(duration_ms));
            }
            body.insert("id".into(), Value::from(uuid::Uuid::now_v7().to_string()));
            body.insert("identity".into(), Value::from(identity.as_str()));
            body.insert("outcome".into(), Value::from(event.outcome));
            if let Some(digest) = event.output_digest {
                body.insert("output_digest".into(), Value::from(digest));
            }
            (types::EVENT_RECORDED, body, (Some(identity), None), None)
        }
        Op::ImportCall(call) => {
            let ImportCall { identity, transcript_sha256, part, position, calls_in_part, mut fields } = *call;
            if state.authority.directory.get(&identity).is_none() {
                return Err(Problem::field(Code::NotFound, "identity", format!("no identity `{identity}`")));
            }
            // The first import of a part stands: asked again, each call
            // answers with its entry and nothing is written. (The calls of
            // one request are one batch, so a part is never half written.)
            let imported = state.imports.get(&(identity.clone(), transcript_sha256, part));
            if let Some(imported) = imported
                && !imported.indexes.is_empty()
            {
                if imported.calls != calls_in_part {
                    return Err(Problem::field(
                        Code::Conflict,
                        "calls",
                        format!("part {part} of this transcript was imported with {} calls", imported.calls),
                    ));
                }
                if let Some(&earlier) = imported.indexes.get(position as usize) {
                    let mut answer = Map::new();
                    answer.insert("log_index".into(), Value::from(earlier));
                    answer.insert("replayed".into(), Value::Bool(true));
                    return Ok((answer, None));
                }
            }
            if position != imported.map_or(0, |imported| imported.indexes.len() as u64) || position >= calls_in_part {
                return Err(Problem::field(
                    Code::Conflict,
                    "calls",
                    "the calls of a part are imported together and in order",
                ));
            }
            let subject = identity.to_string();
            fields.insert("calls_in_part".into(), Value::from(calls_in_part));
            fields.insert("identity".into(), Value::from(subject.as_str()));
            fields.insert("part".into(), Value::from(part));
            fields.insert("position".into(), Value::from(position));
            (types::EVENT_IMPORTED, fields, (Some(subject), None), None)
        }
        Op::ResolveApproval { id, approve, by } => {
            let Some(approval) = state.spending.approvals.get(&id) else { return Err(Problem::not_found("approval")) };
            let wanted = if approve { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
            if approval.status == wanted {
                return Ok((repeated(spend::approval_view(approval), approval.resolved_log_index), None));
            }
            if approval.status != ApprovalStatus::Pending {
                return Err(Problem::new(
                    Code::Conflict,
                    format!("approval `{id}` is already {}", approval.status.as_str()),
                ));
            }
            // Approving gives authority now: the chain must still have it.
            if approve
                && let Some(acting) = approval.chain.first()
                && let Err(error) = state.authority.directory.chain(acting)
            {
                return Err(Problem::new(Code::Conflict, format!("approval `{id}` cannot be given: {error}")));
            }
            // Approving a decision whose reservation is no longer held (its
            // caller voided it, say, after giving up waiting) would approve
            // nothing the caller still waits for.
            // (Only held reservations are in the state; a resolved one is
            // recalled from its entries.)
            if approve
                && let Some(reservation) = approval.reservation.as_deref()
                && !state.spending.budgets.knows_reservation(reservation)
            {
                let status =
                    recent.resolved(reservation, now).map_or("no longer held", |r| r.reservation.status.as_str());
                return Err(Problem::new(
                    Code::Conflict,
                    format!("approval `{id}` cannot be given: its reservation `{reservation}` is {status}"),
                ));
            }
            let subject = approval.chain.first().map(ToString::to_string);
            let mut body = Map::new();
            body.insert("by".into(), Value::from(by));
            body.insert("id".into(), Value::from(id));
            let entry_type = if approve { types::APPROVAL_APPROVED } else { types::APPROVAL_DENIED };
            (entry_type, body, (subject, None), None)
        }
        Op::CreateIdentity(identity) => {
            if state.authority.directory.get(&identity.id).is_some() {
                return Err(Problem::field(Code::Conflict, "id", format!("identity `{}` already exists", identity.id)));
            }
            let subject = identity.id.to_string();
            // Created identities are active; the body holds what the client sent.
            let mut body = wire::identity_to_json(&identity);
            body.remove("status");
            (types::IDENTITY_CREATED, body, (Some(subject), None), None)
        }
        Op::RevokeIdentity(id) => {
            let Some(identity) = state.authority.directory.get(&id) else {
                return Err(Problem::not_found("identity"));
            };
            if identity.status == mandate_core::identity::Status::Revoked {
                return Ok((identity_view(state, &id)?, None));
            }
            let descendants: Vec<Value> =
                state.authority.directory.descendants(&id).iter().map(|d| Value::from(d.to_string())).collect();
            let mut body = Map::new();
            body.insert("descendants".into(), Value::Array(descendants));
            body.insert("id".into(), Value::from(id.to_string()));
            (types::IDENTITY_REVOKED, body, (Some(id.to_string()), None), None)
        }
        Op::CreateGrant(grant) => {
            check_new_grant(state, &grant, now)?;
            let mut body = wire::grant_to_json(&grant);
            body.remove("revoked");
            body.remove("signed");
            let subject = grant.grantee.to_string();
            (types::GRANT_CREATED, body, (Some(subject), None), None)
        }
        Op::RevokeGrant(id) => {
            let Some(held) = state.grant(&id) else { return Err(Problem::not_found("grant")) };
            if held.grant.revoked {
                return Ok((grant_view(held), None));
            }
            let subject = held.grant.grantee.to_string();
            let mut body = Map::new();
            body.insert("id".into(), Value::from(id));
            (types::GRANT_REVOKED, body, (Some(subject), None), None)
        }
        Op::PutPolicies(set) => {
            let mut body = Map::new();
            body.insert("policies".into(), Value::from(set.policies_text()));
            body.insert("policy_hash".into(), Value::from(set.version_hash()));
            body.insert("schema".into(), set.schema_text().map_or(Value::Null, Value::from));
            body.insert("version".into(), Value::from(state.policy_versions.len() as u64 + 1));
            (types::POLICY_UPDATED, body, (None, None), Some(set))
        }
        Op::UpdateSettings(fields) => {
            let settings = TenantSettings::from_json(&fields, &state.settings)?;
            let mut body = Map::new();
            body.insert("settings".into(), Value::Object(settings.to_json()));
            (types::SETTINGS_UPDATED, body, (None, None), None)
        }
        Op::CreateAdminKey { key_id, role, secret_sha256 } => {
            let mut body = Map::new();
            body.insert("key_id".into(), Value::from(key_id));
            body.insert("role".into(), Value::from(role.as_str()));
            body.insert("secret_sha256".into(), Value::from(state::hex(&secret_sha256)));
            (types::ADMIN_KEY_CREATED, body, (None, None), None)
        }
        Op::RevokeAdminKey(key_id) => {
            let Some(key) = state.admin_keys.get(&key_id) else { return Err(Problem::not_found("admin key")) };
            if key.revoked {
                return Ok((admin_key_view(&key_id, key), None));
            }
            let mut body = Map::new();
            body.insert("key_id".into(), Value::from(key_id));
            (types::ADMIN_KEY_REVOKED, body, (None, None), None)
        }
        Op::CreateToken { token_id, identity, ttl, scopes, secret_sha256 } => {
            check_token_identity(state, &identity)?;
            if state.tokens.contains_key(&token_id) {
                return Err(Problem::new(Code::Conflict, format!("token `{token_id}` exists")));
            }
            let expires_at = now
                .checked_add(ttl)
                .map_err(|_| Problem::field(Code::InvalidField, "ttl_s", "`ttl_s` reaches past the end of time"))?;
            let mut body = Map::new();
            body.insert("expires_at".into(), Value::from(entry_time(expires_at)));
            body.insert("id".into(), Value::from(token_id));
            body.insert("identity".into(), Value::from(identity.to_string()));
            body.insert(
                "scopes".into(),
                scopes.map_or(Value::Null, |scopes| {
                    Value::Array(scopes.iter().map(|scope| Value::from(scope.to_string())).collect())
                }),
            );
            body.insert("secret_sha256".into(), Value::from(state::hex(&secret_sha256)));
            (types::TOKEN_CREATED, body, (Some(identity.to_string()), None), None)
        }
        Op::RevokeToken(token_id) => {
            let Some(token) = state.token(&token_id, now) else { return Err(Problem::not_found("token")) };
            if token.revoked_log_index.is_some() {
                return Ok((repeated(token_view(&token_id, token), token.revoked_log_index), None));
            }
            let subject = token.identity.to_string();
            let mut body = Map::new();
            body.insert("id".into(), Value::from(token_id));
            (types::TOKEN_REVOKED, body, (Some(subject), None), None)
        }
    };
    let draft = EntryDraft::new(entry_type, time, &body)
        .map_err(|error| Problem::new(Code::PayloadTooLarge, format!("the log entry cannot be written: {error}")))?
        .with_terms(terms.0.as_deref(), terms.1);
    // Later batches find the entry in the store by its keys; this one in `recent`.
    let mut keys = if entry_type == types::DECISION { recent::entry_keys(&body) } else { Vec::new() };
    match prepared_policies {
        Some(set) => state.install_policies(index, time, set),
        None => state.apply(index, time, entry_type, &body).map_err(apply_problem)?,
    }
    if entry_type == types::DECISION {
        recent.remember(index, &body, now).map_err(|reason| Problem::new(Code::Internal, reason))?;
    }
    keys.extend(remember_resolved(state, recent, index));
    drafts.push(draft.with_keys(keys));
    let answer = answer_for(state, recent, now, entry_type, body)?;
    Ok((answer, Some(drafts.len() - 1)))
}

/// The checks of [`Op::AsAgent`], at `now`, against the state as the
/// batch's earlier operations left it.
fn check_agent_op(
    state: &TenantState,
    recent: &Recent,
    token_id: &str,
    op: &Op,
    now: Timestamp,
) -> Result<(), Problem> {
    let token = state
        .token(token_id, now)
        .ok_or_else(|| Problem::new(Code::Unauthorized, "the bearer token is not a valid agent token"))?;
    if let Some(inactive) = state.token_inactive(token, now) {
        return Err(Problem::new(Code::Unauthorized, crate::registry::inactive_detail(token, &inactive)));
    }
    match op {
        Op::Authorize(request) => {
            if request.identity != token.identity {
                return Err(Problem::field(
                    Code::Forbidden,
                    "identity",
                    format!("an agent token acts only as its identity `{}`", token.identity),
                ));
            }
            if !token.allows(&request.action) {
                return Err(scope_problem(token, &request.action, "action"));
            }
            Ok(())
        }
        // Another identity's reservation is answered as if it did not exist.
        Op::Settle { id, .. } | Op::Void(id) => {
            let owner = match state.spending.budgets.reservation_identity(id) {
                Some(identity) => Some(identity),
                None => recent.resolved(id, now).map(|resolved| &resolved.reservation.identity),
            };
            match owner {
                Some(owner) if *owner != token.identity => Err(Problem::not_found("reservation")),
                _ => Ok(()),
            }
        }
        // Another identity's decision is answered as if it did not exist.
        Op::RecordEvent(event) => match recent.decision(&event.decision_id, now) {
            Some(decision) if decision.identity != token.identity => Err(no_recent_decision(&event.decision_id)),
            _ => Ok(()),
        },
        Op::ImportCall(call) if call.identity != token.identity => Err(Problem::field(
            Code::Forbidden,
            "identity",
            format!("an agent token acts only as its identity `{}`", token.identity),
        )),
        Op::ImportCall(_) => Ok(()),
        _ => Err(Problem::new(Code::Forbidden, "an agent token may not do this")),
    }
}

/// 404 for a decision that is unknown, older than
/// [`recent::DECISION_RETENTION`], or (to an agent token) another identity's:
/// the same answer for all three.
fn no_recent_decision(decision_id: &str) -> Problem {
    Problem::new(Code::NotFound, format!("no decision `{decision_id}` in the last 24 h"))
}

/// 403 for an action outside an agent token's scopes, naming them.
pub fn scope_problem(token: &state::AgentToken, action: &str, field: &str) -> Problem {
    Problem::field(
        Code::Forbidden,
        field,
        format!("`{action}` is outside the agent token's scopes (`{}`)", token.scope_text()),
    )
    .with("scopes", Value::Array(token.scope_text().split(' ').map(Value::from).collect()))
}

/// A token may be issued for an identity that exists and is effective.
fn check_token_identity(state: &TenantState, identity: &IdentityId) -> Result<(), Problem> {
    match state.authority.directory.chain(identity) {
        Ok(_) => Ok(()),
        Err(mandate_core::identity::ChainError::Unknown { .. }) => {
            Err(Problem::field(Code::InvalidField, "identity", format!("no identity `{identity}`")))
        }
        Err(error) => Err(Problem::field(Code::InvalidField, "identity", error.to_string())),
    }
}

/// The key of an answer that is a retry of an earlier decision: its value
/// is the earlier decision's log index. Only the sequencer sets it, and
/// `Tenant::submit` replaces it with the earlier answer.
const REPLAY_OF: &str = "\u{0}replay_of";

/// Writes the expiry entries due at `now`, at most [`EXPIRIES_PER_BATCH_MAX`]
/// (the rest are the next batch's: the expiry timer runs batches until
/// nothing is due), each folded in before the next is written.
fn expire_due(state: &mut TenantState, recent: &mut Recent, now: Timestamp, time: &str, drafts: &mut Vec<EntryDraft>) {
    if !state.spending.anything_due(now) {
        return;
    }
    for (entry_type, id) in state.spending.due(now, EXPIRIES_PER_BATCH_MAX) {
        if !state.spending.still_due(entry_type, &id) {
            // Expired with its approval, earlier in this loop.
            continue;
        }
        let mut body = Map::new();
        body.insert("id".into(), Value::from(id.as_str()));
        let index = state.applied;
        let draft = EntryDraft::new(entry_type, time, &body);
        match (draft, state.apply(index, time, entry_type, &body)) {
            (Ok(draft), Ok(())) => {
                let keys = remember_resolved(state, recent, index).into_iter().collect();
                drafts.push(draft.with_keys(keys));
            }
            (draft, applied) => {
                // Not reached: the bodies are tiny and the ids come from the
                // state. Stop rather than loop on an entry that will not apply.
                tracing::error!(tenant = %state.name, %id, ?applied, draft_ok = draft.is_ok(), "cannot expire");
                return;
            }
        }
    }
}

fn resolve_check(state: &TenantState, id: &str, resolution: &Resolution) -> Result<Resolve, Problem> {
    state.spending.budgets.check_resolution(id, resolution).map_err(|error| match error {
        budget::ResolveError::Unknown { .. } => Problem::not_found("reservation"),
        budget::ResolveError::Conflict { .. } => Problem::new(Code::Conflict, error.to_string()),
        budget::ResolveError::UnknownDimension { ref dimension, .. }
        | budget::ResolveError::OverReserved { ref dimension, .. } => {
            Problem::field(Code::InvalidField, format!("amounts.{dimension}"), error.to_string())
        }
    })
}

fn reservation_subject(state: &TenantState, id: &str) -> Option<String> {
    state.spending.budgets.reservation_identity(id).map(ToString::to_string)
}

/// The answer to a repeated resolution: the same as the first, whose entry
/// it names.
fn repeated(mut answer: Map<String, Value>, index: Option<u64>) -> Map<String, Value> {
    if let Some(index) = index {
        answer.insert("log_index".into(), Value::from(index));
    }
    answer
}

fn apply_problem(error: state::ApplyError) -> Problem {
    use mandate_core::identity::IdentityError;
    match error.cause {
        Cause::Identity(IdentityError::Duplicate { id }) => {
            Problem::field(Code::Conflict, "id", format!("identity `{id}` already exists"))
        }
        Cause::Identity(error) => {
            let field = match error {
                IdentityError::HumanWithParent { .. }
                | IdentityError::ParentMissing { .. }
                | IdentityError::ParentUnknown { .. }
                | IdentityError::ParentRevoked { .. } => "parent",
                _ => "id",
            };
            Problem::field(Code::InvalidIdentity, field, error.to_string())
        }
        Cause::Policy(error) => Problem::field(Code::InvalidPolicy, "policies", error.to_string()),
        Cause::Field(error) => error.into(),
        Cause::Malformed(reason) => Problem::new(Code::Internal, reason),
    }
}

/// The answer to a change, from the state after it.
/// If the entry just folded in resolved a reservation (which left the
/// state), remembers it for the rest of the batch; returns the key its
/// entry is then stored with.
fn remember_resolved(state: &mut TenantState, recent: &mut Recent, index: u64) -> Option<mandate_store::EntryKey> {
    let resolved = state.spending.take_just_resolved()?;
    let key = recent::resolution_key(&resolved.id);
    recent.remember_resolved(resolved, index);
    Some(key)
}

/// The answer to settling or voiding a reservation that is no longer held:
/// the first answer if it was resolved so within 24 h, else 409 (resolved
/// otherwise) or 404.
fn answer_resolved(
    recent: &Recent,
    id: &str,
    resolution: &Resolution,
    now: Timestamp,
) -> Result<(Map<String, Value>, Option<usize>), Problem> {
    let resolved = recent.resolved(id, now).ok_or_else(|| Problem::not_found("reservation"))?;
    let status = &resolved.reservation.status;
    if *status != resolution.status() {
        let conflict = budget::ResolveError::Conflict { id: id.to_owned(), status: status.as_str() };
        return Err(Problem::new(Code::Conflict, conflict.to_string()));
    }
    Ok((repeated(spend::reservation_view(&resolved.reservation), Some(resolved.log_index)), None))
}

fn answer_for(
    state: &TenantState,
    recent: &Recent,
    now: Timestamp,
    entry_type: &str,
    body: Map<String, Value>,
) -> Result<Map<String, Value>, Problem> {
    let id = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    match entry_type {
        types::IDENTITY_CREATED | types::IDENTITY_REVOKED => {
            let identity = IdentityId::parse(&id("id")).map_err(|e| Problem::new(Code::Internal, e.to_string()))?;
            let mut view = identity_view(state, &identity)?;
            if let Some(descendants) = body.get("descendants") {
                view.insert("revoked_descendants".into(), descendants.clone());
            }
            Ok(view)
        }
        types::GRANT_CREATED | types::GRANT_REVOKED => {
            state.grant(&id("id")).map(grant_view).ok_or_else(|| Problem::new(Code::Internal, "grant vanished"))
        }
        types::POLICY_UPDATED => Ok(policies_view(state)),
        types::SETTINGS_UPDATED => Ok(state.settings.to_json()),
        types::ADMIN_KEY_CREATED | types::ADMIN_KEY_REVOKED => {
            let key_id = id("key_id");
            state
                .admin_keys
                .get(&key_id)
                .map(|key| admin_key_view(&key_id, key))
                .ok_or_else(|| Problem::new(Code::Internal, "key vanished"))
        }
        types::TOKEN_CREATED | types::TOKEN_REVOKED => {
            let token_id = id("id");
            state
                .tokens
                .get(&token_id)
                .map(|token| token_view(&token_id, token))
                .ok_or_else(|| Problem::new(Code::Internal, "token vanished"))
        }
        types::BUDGET_CREATED | types::BUDGET_UPDATED => {
            let now = state.last_time.unwrap_or(Timestamp::UNIX_EPOCH);
            state
                .spending
                .budgets
                .get(&id("id"))
                .map(|budget| spend::budget_view(budget, now))
                .ok_or_else(|| Problem::new(Code::Internal, "budget vanished"))
        }
        types::RESERVATION_SETTLED | types::RESERVATION_VOIDED => recent
            .resolved(&id("id"), now)
            .map(|resolved| spend::reservation_view(&resolved.reservation))
            .ok_or_else(|| Problem::new(Code::Internal, "the reservation resolved is not remembered")),
        // The entry's body, with the optional fields not given as null.
        types::EVENT_RECORDED => {
            let mut answer = body;
            for field in ["attributes", "duration_ms", "output_digest"] {
                answer.entry(field).or_insert(Value::Null);
            }
            Ok(answer)
        }
        types::APPROVAL_APPROVED | types::APPROVAL_DENIED => state
            .spending
            .approvals
            .get(&id("id"))
            .map(spend::approval_view)
            .ok_or_else(|| Problem::new(Code::Internal, "approval vanished")),
        // A decision's answer is its body without the request.
        _ => {
            let mut answer = body;
            answer.remove("request");
            Ok(answer)
        }
    }
}

/// Creation-time checks of a grant (SPEC §2): the grantee exists and is not
/// a human, the grantor is its parent and effective, the signature (if any)
/// verifies under the grantor's registered key, and the grant is no wider
/// than the grantor's own live grants.
fn check_new_grant(state: &TenantState, grant: &Grant, now: Timestamp) -> Result<(), Problem> {
    let directory = &state.authority.directory;
    if state.grant_owners.contains_key(&grant.id) {
        return Err(Problem::new(Code::Conflict, format!("grant `{}` exists", grant.id)));
    }
    grant::check_grantor(grant, directory).map_err(|error| match error {
        grant::GrantorError::GranteeUnknown { .. } => Problem::field(Code::InvalidField, "grantee", error.to_string()),
        grant::GrantorError::GranteeIsHuman { .. } => Problem::field(Code::InvalidField, "grantee", error.to_string()),
        grant::GrantorError::NotParent { .. } => Problem::field(Code::GrantorNotParent, "grantor", error.to_string()),
    })?;
    let grantor = directory
        .get(&grant.grantor)
        .ok_or_else(|| Problem::field(Code::GrantorNotParent, "grantor", "the grantor does not exist"))?;
    if let Err(error) = directory.chain(&grant.grantor) {
        return Err(Problem::field(
            Code::GrantExceedsGrantor,
            "grantor",
            format!("the grantor has no authority to delegate: {error}"),
        ));
    }
    if grant.signature.is_some() {
        let verifies = grantor.public_key.is_some_and(|key| grant.verify_signature(&key));
        if !verifies {
            let detail = match grantor.public_key {
                None => format!("the grant is signed but `{}` has no registered public key", grant.grantor),
                Some(_) => format!("the signature does not verify under `{}`'s registered key", grant.grantor),
            };
            return Err(Problem::field(Code::GrantSignatureInvalid, "signature", detail));
        }
    }
    // It verifies, so it is this very grant again.
    if let Some(earlier) = grant.signature.and_then(|signature| state.grant_signatures.get(&signature)) {
        return Err(Problem::field(
            Code::Conflict,
            "signature",
            format!(
                "this signature was already used for grant `{earlier}`; a signature is good for one grant: to grant it again, change it (its expiry, say) and sign that"
            ),
        ));
    }
    let grantor_grants: Vec<&Grant> = state
        .authority
        .grants
        .get(&grant.grantor)
        .into_iter()
        .flatten()
        .filter(|held| decision_counts(state, held))
        .map(|held| &held.grant)
        .collect();
    grant::check_attenuation(grant, &grantor_grants, grantor.kind == Kind::Human, now).map_err(|error| {
        let field = match &error {
            // The action is the culprit unless some live grant of the
            // grantor covers it, in which case the resource is.
            grant::AttenuationError::NotCovered { action, .. } => {
                let action_held = grantor_grants
                    .iter()
                    .any(|held| held.is_live(now) && held.actions.iter().any(|pattern| pattern.covers(action)));
                if action_held { "resources" } else { "actions" }
            }
            grant::AttenuationError::StartsEarlier { .. } => "not_before",
            grant::AttenuationError::ExpiresLater { .. } | grant::AttenuationError::ExpiryMissing { .. } => {
                "expires_at"
            }
            grant::AttenuationError::LimitExceeded { .. } | grant::AttenuationError::LimitMissing { .. } => "limits",
        };
        Problem::field(Code::GrantExceedsGrantor, field, error.to_string())
    })
}

/// Whether a grantor's grant counts as its authority: when the tenant
/// requires signed grants, only validly signed ones do.
fn decision_counts(state: &TenantState, held: &decision::HeldGrant) -> bool {
    match held.signature {
        decision::SignatureCheck::Valid => true,
        decision::SignatureCheck::Invalid => false,
        decision::SignatureCheck::Unsigned => !state.settings.require_signed_grants,
    }
}

/// Decides and builds the decision entry's body: the answer plus the request.
fn decide(
    state: &TenantState,
    request: &AuthorizeRequest,
    recorded: Map<String, Value>,
    now: Timestamp,
) -> (Map<String, Value>, &'static str) {
    let core_request = decision::Request {
        identity: &request.identity,
        action: &request.action,
        resource: &request.resource,
        context: &request.context,
        amounts: &request.amounts,
        at: now,
    };
    let decided = decision::decide(&state.authority, &core_request, &state.spending.budgets);
    let ttl = request.reservation_ttl.unwrap_or(budget::RESERVATION_TTL_DEFAULT);
    let expires_at = entry_time(now.checked_add(ttl).unwrap_or(now));
    let held = |answer: bool| -> Value {
        if !answer {
            return Value::Null;
        }
        let mut object = Map::new();
        object.insert("expires_at".into(), Value::from(expires_at.as_str()));
        object.insert("id".into(), Value::from(uuid::Uuid::now_v7().to_string()));
        Value::Object(object)
    };
    let going_ahead = decided.outcome != decision::Outcome::Deny;
    let mut body = Map::new();
    body.insert("approval".into(), held(decided.outcome == decision::Outcome::Pending));
    body.insert("budgets".into(), Value::Array(decided.budgets.iter().map(spend::touch_json).collect()));
    body.insert("chain".into(), Value::Array(decided.chain.iter().map(|id| Value::from(id.to_string())).collect()));
    body.insert("decision".into(), Value::from(decided.outcome.as_str()));
    body.insert("decision_id".into(), Value::from(uuid::Uuid::now_v7().to_string()));
    let mut policies = Map::new();
    policies.insert(
        "determining".into(),
        Value::Array(decided.determining_policies.iter().map(|p| Value::from(p.as_str())).collect()),
    );
    policies.insert(
        "errors".into(),
        Value::Array(
            decided
                .policy_errors
                .iter()
                .map(|error| {
                    let mut object = Map::new();
                    object.insert("message".into(), Value::from(error.message.as_str()));
                    object.insert("policy".into(), Value::from(error.policy.as_str()));
                    Value::Object(object)
                })
                .collect(),
        ),
    );
    body.insert("policies".into(), Value::Object(policies));
    body.insert("policy_version".into(), Value::from(decided.policy_version.as_str()));
    body.insert(
        "reasons".into(),
        Value::Array(
            decided
                .reasons
                .iter()
                .map(|reason| {
                    let mut object = Map::new();
                    object.insert("code".into(), Value::from(reason.code.as_str()));
                    if let Some(identity) = &reason.identity {
                        object.insert("identity".into(), Value::from(identity.to_string()));
                    }
                    object.insert("message".into(), Value::from(reason.message.as_str()));
                    if let Some(shortfall) = &reason.shortfall {
                        let mut budget = Map::new();
                        budget.insert("dimension".into(), Value::from(shortfall.dimension.as_str()));
                        budget.insert("id".into(), Value::from(shortfall.budget.as_str()));
                        budget.insert("limit".into(), Value::from(shortfall.limit));
                        budget.insert("period".into(), Value::from(shortfall.period.as_str()));
                        budget.insert("remaining".into(), Value::from(shortfall.remaining));
                        object.insert("budget".into(), Value::Object(budget));
                    }
                    if !reason.policies.is_empty() {
                        object.insert(
                            "policies".into(),
                            Value::Array(reason.policies.iter().map(|p| Value::from(p.as_str())).collect()),
                        );
                    }
                    Value::Object(object)
                })
                .collect(),
        ),
    );
    body.insert("request".into(), Value::Object(recorded));
    body.insert("reservation".into(), held(going_ahead && decided.budgets.iter().any(budget::Touch::is_held)));
    (body, decided.outcome.as_str())
}

/// The request as the log records it: the input only as its digest unless
/// the tenant records inputs in full.
fn request_body(state: &TenantState, request: &AuthorizeRequest) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("action".into(), Value::from(request.action.as_str()));
    if !request.amounts.is_empty() {
        let amounts = request.amounts.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
        object.insert("amounts".into(), Value::Object(amounts));
    }
    if !request.context.is_empty() {
        object.insert("context".into(), Value::Object(request.context.clone()));
    }
    object.insert("identity".into(), Value::from(request.identity.to_string()));
    if let Some(input) = &request.input
        && state.settings.record_inputs == state::RecordInputs::Full
    {
        object.insert("input".into(), input.clone());
    }
    if let Some(digest) = &request.input_sha256 {
        object.insert("input_sha256".into(), Value::from(digest.as_str()));
    }
    for (key, value) in
        [("request_id", &request.request_id), ("session_id", &request.session_id), ("trace_id", &request.trace_id)]
    {
        if let Some(value) = value {
            object.insert(key.into(), Value::from(value.as_str()));
        }
    }
    object.insert("resource".into(), Value::from(request.resource.as_str()));
    object
}

/// An identity as the API shows it: its fields, whether it is effective, and
/// which ancestor's revocation cut it off.
pub fn identity_view(state: &TenantState, id: &IdentityId) -> Result<Map<String, Value>, Problem> {
    let identity = state.authority.directory.get(id).ok_or_else(|| Problem::not_found("identity"))?;
    let mut view = wire::identity_to_json(identity);
    match state.authority.directory.chain(id) {
        Ok(chain) => {
            view.insert("effective".into(), Value::Bool(true));
            view.insert("chain".into(), Value::Array(chain.ids().map(|id| Value::from(id.to_string())).collect()));
        }
        Err(mandate_core::identity::ChainError::Revoked { revoked, .. }) => {
            view.insert("effective".into(), Value::Bool(false));
            view.insert("revoked_by".into(), Value::from(revoked.to_string()));
        }
        Err(_) => {
            view.insert("effective".into(), Value::Bool(false));
        }
    }
    if let Some((created, revoked)) = state.identity_entries.get(id) {
        view.insert("created_log_index".into(), Value::from(*created));
        if let Some(revoked) = revoked {
            view.insert("revoked_log_index".into(), Value::from(*revoked));
        }
    }
    Ok(view)
}

/// A grant as the API shows it.
pub fn grant_view(held: &decision::HeldGrant) -> Map<String, Value> {
    let mut view = wire::grant_to_json(&held.grant);
    let signature = match held.signature {
        decision::SignatureCheck::Unsigned => "unsigned",
        decision::SignatureCheck::Valid => "valid",
        decision::SignatureCheck::Invalid => "invalid",
    };
    view.insert("signature_status".into(), Value::from(signature));
    view
}

/// The current policy set as the API shows it.
pub fn policies_view(state: &TenantState) -> Map<String, Value> {
    let set = &state.authority.policies;
    let mut view = Map::new();
    view.insert("policies".into(), Value::from(set.policies_text()));
    view.insert("policy_hash".into(), Value::from(set.version_hash()));
    view.insert("schema".into(), set.schema_text().map_or(Value::Null, Value::from));
    view.insert("version".into(), Value::from(state.policy_versions.last().map_or(0, |v| v.version)));
    view
}

/// An admin key as the API shows it (never its secret or hash).
pub fn admin_key_view(key_id: &str, key: &state::AdminKey) -> Map<String, Value> {
    let mut view = Map::new();
    view.insert("id".into(), Value::from(key_id));
    view.insert("revoked".into(), Value::Bool(key.revoked));
    view.insert("role".into(), Value::from(key.role.as_str()));
    view
}

/// An agent token as the API shows it (never its secret or hash).
pub fn token_view(token_id: &str, token: &state::AgentToken) -> Map<String, Value> {
    let mut view = Map::new();
    view.insert("created_log_index".into(), Value::from(token.log_index));
    view.insert("expires_at".into(), Value::from(entry_time(token.expires_at)));
    view.insert("id".into(), Value::from(token_id));
    view.insert("identity".into(), Value::from(token.identity.to_string()));
    view.insert("issued_at".into(), Value::from(entry_time(token.issued_at)));
    view.insert("revoked".into(), Value::Bool(token.revoked_log_index.is_some()));
    if let Some(index) = token.revoked_log_index {
        view.insert("revoked_log_index".into(), Value::from(index));
    }
    view.insert(
        "scopes".into(),
        token.scopes.as_ref().map_or(Value::Null, |scopes| {
            Value::Array(scopes.iter().map(|scope| Value::from(scope.to_string())).collect())
        }),
    );
    view
}

/// RFC 7662 introspection of `token` at `now`: `{"active": false}` for
/// anything that is not an active agent token of this tenant (malformed,
/// unknown, another tenant's, wrong secret, revoked, expired, identity not
/// effective); otherwise `active`, `sub`, `exp`, `iat`, `scope`,
/// `token_type`, `token_id`, and the identity `chain` as an extension.
pub fn introspection(state: &TenantState, token: &str, now: Timestamp) -> Map<String, Value> {
    let mut view = Map::new();
    view.insert("active".into(), Value::Bool(false));
    let Some((token_id, secret)) = crate::registry::split_agent_token(token) else { return view };
    let Some(held) = state.token(token_id, now) else { return view };
    if !crate::registry::secret_matches(secret, &held.secret_sha256) || state.token_inactive(held, now).is_some() {
        return view;
    }
    let Ok(chain) = state.authority.directory.chain(&held.identity) else { return view };
    view.insert("active".into(), Value::Bool(true));
    view.insert("chain".into(), Value::Array(chain.ids().map(|id| Value::from(id.to_string())).collect()));
    view.insert("exp".into(), Value::from(held.expires_at.as_second()));
    view.insert("expires_at".into(), Value::from(entry_time(held.expires_at)));
    view.insert("iat".into(), Value::from(held.issued_at.as_second()));
    view.insert("scope".into(), Value::from(held.scope_text()));
    view.insert("sub".into(), Value::from(held.identity.to_string()));
    view.insert("token_id".into(), Value::from(token_id));
    view.insert("token_type".into(), Value::from("Bearer"));
    view
}
