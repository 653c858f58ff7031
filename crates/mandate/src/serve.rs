//! `mandate serve` and `mandate tenant create`: the server on the embedded
//! store or a shared PostgreSQL database, and tenants made beside running
//! servers.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mandate_server::{Bound, CreateTenantError, create_tenant};
use mandate_store::{Ledger, PostgresLedger, SqliteLedger};

use crate::StoreArgs;

/// The tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "mandate.db";

/// The file holding the first admin key.
const ADMIN_KEY_FILE: &str = "admin.key";

/// Opens (creating, owner-only) the data directory's ledger.
fn open_ledger(data: &Path) -> anyhow::Result<SqliteLedger> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    SqliteLedger::open(data.join(DATABASE_FILE))
        .with_context(|| format!("opening {}", data.join(DATABASE_FILE).display()))
}

/// Opens the store `store` names: PostgreSQL when a database is given, else
/// the data directory's SQLite file.
pub fn open_store(store: &StoreArgs) -> anyhow::Result<Arc<dyn Ledger>> {
    Ok(match &store.database {
        Some(url) => Arc::new(PostgresLedger::connect(url).context("connecting to the PostgreSQL database")?),
        None => Arc::new(open_ledger(&store.data)?),
    })
}

/// Writes the admin key where only the owner can read it.
fn write_admin_key(path: &Path, key: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // The mode applies only to a new file: make an old one owner-only too.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    Ok(())
}

/// The lock file that keeps a second server off a data directory.
const LOCK_FILE: &str = "serve.lock";

/// Takes the data directory's server lock for as long as the returned file
/// lives. A tenant's sequencer assumes it is its log's only writer of
/// decisions: two servers on one store would each decide against a state
/// missing the other's entries (and could overspend a budget between them).
/// The operating system releases the lock when the process ends, however it
/// ends.
fn lock_data_directory(data: &Path) -> anyhow::Result<fs::File> {
    let path = data.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another `mandate serve` is using {}; stop it first", data.display())
        }
        Err(fs::TryLockError::Error(error)) => Err(error).with_context(|| format!("locking {}", path.display())),
    }
}

/// Sends the server's diagnostics to stderr: `MANDATE_LOG` filters them
/// (`tracing` directives such as `warn` or `mandate_server=debug`; default
/// `info`). Nothing the server logs carries a key, token or request body.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MANDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// `mandate serve`.
///
/// On the data directory, one server at a time (its lock file says so). On
/// PostgreSQL, any number: each tenant's log is held for every batch of
/// decisions, and each server folds in what the others appended first.
pub fn serve(store: StoreArgs, addr: String, origin_host: String) -> anyhow::Result<()> {
    init_logging();
    let ledger = open_store(&store)?;
    let _lock = match &store.database {
        Some(_) => None,
        None => Some(lock_data_directory(&store.data)?),
    };
    let needs_default =
        !ledger.tenants()?.iter().any(|name| name == DEFAULT_TENANT) || ledger.size(DEFAULT_TENANT)? == 0;
    if needs_default {
        match create_tenant(ledger.as_ref(), DEFAULT_TENANT, &origin_host) {
            Ok(key) if store.database.is_some() => {
                println!("Created tenant `{DEFAULT_TENANT}`. Its admin key, shown once:");
                println!("{}", key.token);
            }
            Ok(key) => {
                let path = store.data.join(ADMIN_KEY_FILE);
                write_admin_key(&path, &key.token)?;
                println!("Created tenant `{DEFAULT_TENANT}`. Its admin key, shown once (also in {}):", path.display());
                println!("{}", key.token);
            }
            // Another server sharing the database created it first.
            Err(CreateTenantError::Exists(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let place = match &store.database {
        Some(_) => "data in PostgreSQL".to_owned(),
        None => format!("data in {}", store.data.display()),
    };
    runtime.block_on(async move {
        let bound = Bound::bind(ledger, &addr).await?;
        let local = bound.local_addr().map_or(addr.clone(), |local| local.to_string());
        println!("mandate: listening on http://{local} ({place})");
        let _ = std::io::stdout().flush();
        bound.serve(shutdown_signal()).await?;
        eprintln!("mandate: stopped");
        anyhow::Ok(())
    })?;
    // Stopping the runtime and then dropping the ledger finishes the
    // writer's last batch. A blocking task still running after the grace
    // (a long read) is left behind rather than waited for.
    runtime.shutdown_timeout(mandate_server::limits::SHUTDOWN_GRACE);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// `mandate tenant create NAME`: works while servers run on the same store,
/// which start serving the tenant on its first request.
pub fn create(store: StoreArgs, name: String, origin_host: String) -> anyhow::Result<()> {
    let ledger = open_store(&store)?;
    match create_tenant(ledger.as_ref(), &name, &origin_host) {
        Ok(key) => {
            eprintln!("Created tenant `{name}`. Its admin key, shown once:");
            println!("{}", key.token);
            Ok(())
        }
        Err(CreateTenantError::Exists(name)) => anyhow::bail!("tenant `{name}` already exists"),
        Err(error) => Err(error.into()),
    }
}
