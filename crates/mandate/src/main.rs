//! `mandate`: authority, budgets and a verifiable audit log for AI agents.
//!
//! This binary is thin: it parses the command line and calls the libraries.
//! Every failure prints one line on stderr and exits non-zero; nothing here
//! panics on any input.

mod bench;
mod connection;
mod demo;
mod hook;
mod import;
mod keys;
mod mcp_gateway;
mod replay;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: the server allocates and frees
/// many small objects per request (JSON values, Cedar's evaluation), which
/// glibc's malloc made about a tenth of the server's CPU time (perf, flat
/// out); see docs/benchmarks.md. Built `no_thp`: with transparent huge pages
/// its arenas grew the server's peak memory from 48 to 57 MiB over 100,000
/// decisions (bench/peers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Authority, budgets and a verifiable audit log for AI agents.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tell Mandate's story on a fresh embedded store: identities, grants, a
    /// Cedar rule, decisions allowed and denied, revocation, and the
    /// verifiable log.
    Demo(DemoArgs),
    /// Verify an exported log or a receipt offline, trusting only a public key.
    ///
    /// Exits 0 when everything verifies. Otherwise prints one line naming the
    /// first bad index (or the checkpoint) and why, and exits 1.
    Verify(VerifyArgs),
    /// Ed25519 keys for signing grants, made and kept on your machine.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Delegation grants, offline: sign one with its grantor's key.
    #[command(subcommand)]
    Grant(keys::GrantCommand),
    /// Run the HTTP server on the embedded store (SQLite in the data
    /// directory), or on a PostgreSQL database that several servers share
    /// (`--database`). The first start creates the tenant `default` and
    /// prints its admin key once (also written to `<data>/admin.key` on the
    /// embedded store).
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Rebuild every tenant's budgets, reservations and approvals from the
    /// log alone and compare them with the store; exit 1 on any difference.
    Replay(ReplayArgs),
    /// Load a server (or several sharing a database) with decisions and
    /// report throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// A coding agent's tool-call hook (Claude Code, Codex, Gemini CLI):
    /// authorize each call before it runs (failing closed) and record its
    /// outcome after; `hook install claude-code|codex|gemini` writes the
    /// client's settings entry.
    #[command(subcommand)]
    Hook(hook::HookCommand),
    /// A stdio MCP proxy: authorize each `tools/call` before the server
    /// sees it (failing closed), list only the tools the agent may call,
    /// and record each outcome.
    McpGateway(mcp_gateway::McpGatewayArgs),
    /// Import a coding agent's transcript into the log: each tool call
    /// becomes an `event.imported` entry, so that past runs become
    /// verifiable history.
    ///
    /// CLIENT is `claude` (Claude Code: `claude -p --output-format
    /// stream-json --verbose`), `codex` (`codex exec --json`) or `gemini`
    /// (Gemini CLI `--output-format stream-json`); FILE is the transcript,
    /// or `-` for stdin. Each call is recorded with its action as the hook
    /// would ask for it (`tool.Bash`, `mcp.<server>.<tool>`), the SHA-256 of
    /// its input and output, its outcome (`success`, `failure`, `denied` by
    /// a hook or permission rule, or `unknown` without a result), session
    /// and time.
    ///
    /// The server is `MANDATE_URL` (default http://127.0.0.1:8420) and the
    /// credential `MANDATE_TOKEN`: an agent token (`mt_…`) imports as its
    /// own identity; an admin key (`mk_…`) needs `--identity`. Importing
    /// the same file again writes nothing and says `already imported`, so
    /// an interrupted import can simply be run again.
    Import(import::ImportArgs),
}

/// The default data directory.
pub const DEFAULT_DATA: &str = "./mandate-data";

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// Where the store is: the data directory, or a shared PostgreSQL database.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The data directory (the embedded store, SQLite).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// A PostgreSQL database instead of the data directory
    /// (`postgres://user:password@host:port/database`), which several
    /// servers may share.
    #[arg(long, value_name = "URL", conflicts_with = "data")]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where to listen (`127.0.0.1:0` picks a free port; the address is printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8420")]
    addr: String,
    /// The host part of new tenants' log names (`<host>/<tenant>`), which
    /// checkpoints carry as their origin.
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    origin_host: String,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its admin key (works while the server runs).
    Create {
        /// The tenant's name (`a-z0-9._-:/@`).
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        /// The host part of the tenant's log name.
        #[arg(long, value_name = "HOST", default_value = "localhost")]
        origin_host: String,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where to keep the demo's store and files (default: a new directory
    /// under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// How many decisions the concurrent burst makes.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    entries: u64,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["log", "receipt"])))]
struct VerifyArgs {
    /// The exported log: one canonical entry per line (JSONL).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["receipt", "entry"])]
    log: Option<PathBuf>,
    /// The log's verifier key (`name+id+key`), or a file holding it.
    #[arg(long, value_name = "VKEY")]
    key: String,
    /// A signed checkpoint the log must match (its size may be smaller than
    /// the log: the entries after it are then only chain-checked).
    #[arg(long, value_name = "FILE", requires = "log")]
    checkpoint: Option<PathBuf>,
    /// An earlier signed checkpoint the log must extend (catches a rewritten
    /// or rolled-back history).
    #[arg(long, value_name = "FILE", requires = "log")]
    previous_checkpoint: Option<PathBuf>,
    /// A `c2sp.org/tlog-proof@v1` receipt for one entry.
    #[arg(long, value_name = "FILE", requires = "entry")]
    receipt: Option<PathBuf>,
    /// The entry the receipt is for, as its canonical JSON line.
    #[arg(long, value_name = "FILE", requires = "receipt")]
    entry: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args.data, args.entries),
        Command::Verify(args) => run_verify(args),
        Command::Key(command) => keys::run_key(command),
        Command::Grant(command) => keys::run_grant(command),
        Command::Serve(args) => serve::serve(args.store, args.addr, args.origin_host),
        Command::Tenant(TenantCommand::Create { name, store, origin_host }) => serve::create(store, name, origin_host),
        Command::Replay(args) => replay::run(&args.store),
        Command::Bench(args) => bench::run(args),
        Command::Hook(command) => return hook::run(command),
        Command::McpGateway(args) => return mcp_gateway::run(args),
        Command::Import(args) => import::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One readable line: the chain of causes joined, no backtrace.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("mandate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = verify::read_key(&args.key)?;
    let target = match (args.log, args.receipt, args.entry) {
        (Some(log), _, _) => {
            verify::Target::Log { log, checkpoint: args.checkpoint, previous: args.previous_checkpoint }
        }
        (None, Some(receipt), Some(entry)) => verify::Target::Receipt { receipt, entry },
        _ => anyhow::bail!("give --log FILE, or --receipt FILE with --entry FILE"),
    };
    let summary = verify::run(&target, &key).map_err(|error| match error.downcast::<verify::Failed>() {
        Ok(failed) => anyhow::anyhow!("verification failed: {failed}"),
        Err(other) => other,
    })?;
    println!("{summary}");
    Ok(())
}
