//! The peer comparison's workload on Mandate (`bench/peers/`): append N
//! recorded actions, each acknowledged only once it is durable, then sign a
//! checkpoint, export the log as JSONL and verify the export with
//! `mandate verify`.
//!
//! ```sh
//! cargo build --release -p mandate --example peer_workload
//! # the library: an embedded store in DIR, appended to from many tasks
//! cargo run --release -p mandate --example peer_workload -- --entries 100000 --dir DIR
//! # the server: N `POST /v1/authorize` from keep-alive connections
//! cargo run --release -p mandate --example peer_workload -- --entries 100000 --dir DIR \
//!     --url http://127.0.0.1:8420 --key mk_… [--server-pid PID]
//! ```
//!
//! **Library** (the default). It opens a [`SqliteLedger`] in `DIR`, creates
//! a tenant log, and appends N `event.recorded` entries (an action, a
//! resource, an outcome, a duration and digests of the tool's input and
//! output, about what the peers record per call) from `--tasks` tokio tasks
//! on two worker threads, the way the server submits them: each task awaits
//! its append's ticket, which resolves only after the group commit holding
//! it (WAL, `synchronous=FULL`). The drafts are made (canonicalized) inside
//! the timed section, on the tasks, as the server does.
//!
//! **Server** (`--url`, `--key`). It sets up a human and an agent with a
//! grant from one to the other through the HTTP API, then sends N
//! `POST /v1/authorize` from `--connections` keep-alive connections; each
//! answer comes after its decision entry is durable. With `--server-pid` it
//! also reads the server's CPU time and peak resident memory from `/proc`.
//!
//! Both then sign a checkpoint (`GET /v1/log/checkpoint` for the server),
//! export the whole log and the verifier key to `DIR/log.jsonl`,
//! `DIR/checkpoint` and `DIR/log.pub`, and, unless `--no-verify`, run
//! `mandate verify --log … --key … --checkpoint …` on them (the binary next
//! to this example's directory, or `--mandate`). It prints one JSON object:
//! the append phase, the export and the verification, each timed alone.
//! `bench/peers/run.py` runs the verification itself instead
//! (`--no-verify`), so that it is a process of its own whose CPU time and
//! peak memory it can read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[path = "../src/connection.rs"]
mod connection;
use connection::Connection;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use mandate_log::SignerKey;
use mandate_store::{ENTRIES_PAGE_MAX, EntryDraft, Ledger, SqliteLedger};
use serde_json::{Map, Value, json};

/// The allocator `mandate` itself runs with (`crates/mandate/src/main.rs`):
/// a program embedding the library chooses its own, and this one chooses
/// what the server does, so the library and the server are measured alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tenant the library mode appends to.
const TENANT: &str = "peers";
/// The library log's name (`<host>/<tenant>`, as `mandate serve` names it).
const LOG_NAME: &str = "localhost/peers";
/// A fixed seed: this is a benchmark log, not a secret.
const SEED: [u8; 32] = [7; 32];
/// The human and the agent the server mode sets up.
const HUMAN: &str = "user:peers-alice";
const AGENT: &str = "agent:peers-buyer";
/// The `/proc/<pid>/stat` clock: 100 ticks a second on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Options.
#[derive(Debug, Parser)]
#[command(about = "Mandate's side of the peer comparison (bench/peers/)")]
struct Args {
    /// How many actions to record.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Where the store (library mode) and the exported log go.
    #[arg(long)]
    dir: PathBuf,
    /// Library mode: concurrent appending tasks (the server's shape).
    #[arg(long, default_value_t = 512)]
    tasks: u64,
    /// Server mode: the server to record through.
    #[arg(long)]
    url: Option<String>,
    /// Server mode: the tenant's admin key.
    #[arg(long)]
    key: Option<String>,
    /// Server mode: keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Server mode: the server's process id, to read its CPU time and peak
    /// memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Skip the verification (the caller runs `mandate verify` itself).
    #[arg(long)]
    no_verify: bool,
    /// The `mandate` binary to verify with (default: `../mandate` from this
    /// example's directory, `target/release/mandate`).
    #[arg(long)]
    mandate: Option<PathBuf>,
}

/// CPU seconds (user + system) and peak resident memory of one process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_s: f64,
    peak_rss_kib: u64,
}

impl Usage {
    /// Reads `/proc/<pid>` (`self` for this process).
    fn of(pid: &str) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The fields after the command name, which ends at the last `)`:
        // state is field 3, utime 14 and stime 15 (proc(5)).
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("no `)` in /proc/PID/stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields.get(i).context("a short /proc/PID/stat")?.parse::<u64>()? as f64)
        };
        let cpu_s = (ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let peak_rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .context("no VmHWM in /proc/PID/status")?
            .parse()?;
        Ok(Usage { cpu_s, peak_rss_kib })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating `{}`", args.dir.display()))?;
    let mut report = match (&args.url, &args.key) {
        (Some(url), Some(key)) => server(&args, url, key)?,
        (None, None) => library(&args)?,
        _ => bail!("--url and --key go together"),
    };
    if !args.no_verify {
        let mandate = match &args.mandate {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .and_then(Path::parent)
                .context("this example is not in a target directory")?
                .join("mandate"),
        };
        report.insert("verify".into(), verify(&mandate, &args.dir)?);
    }
    println!("{}", Value::Object(report));
    Ok(())
}

/// One recorded action's body: about what each peer records per tool call.
fn action_body(n: u64) -> Map<String, Value> {
    let outcome = if n.is_multiple_of(100) { "failure" } else { "success" };
    let body = json!({
        "id": format!("01JD7Q8R3T{n:016}"),
        "identity": AGENT,
        "action": "payments.charge",
        "resource": format!("merchant://books/{n}"),
        "outcome": outcome,
        "duration_ms": n % 250,
        "input_digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "output_digest": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn now_text() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The library: N durable appends from many tasks, then a checkpoint and
/// the export.
fn library(args: &Args) -> anyhow::Result<Map<String, Value>> {
    let db = args.dir.join("mandate.db");
    if db.exists() {
        bail!("`{}` already holds a store: give --dir an empty directory", args.dir.display());
    }
    let ledger = Arc::new(SqliteLedger::open(&db)?);
    let signer = Arc::new(SignerKey::from_seed(LOG_NAME, SEED)?);
    ledger.create_log(TENANT, &signer)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (tasks, entries) = (args.tasks.max(1), args.entries);
    let before = Usage::of("self")?;
    let started = Instant::now();
    runtime.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (ledger, next) = (ledger.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= entries {
                            return anyhow::Ok(());
                        }
                        let draft = EntryDraft::new("event.recorded", now_text(), &action_body(n))?
                            .with_terms(Some(AGENT), None);
                        ledger.append(TENANT, vec![draft]).await?;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await??;
        }
        anyhow::Ok(())
    })?;
    let append_s = started.elapsed().as_secs_f64();
    let after = Usage::of("self")?;

    let started = Instant::now();
    let signed = ledger.sign_checkpoint(TENANT, signer.clone())?;
    std::fs::write(args.dir.join("checkpoint"), &signed.note)?;
    std::fs::write(args.dir.join("log.pub"), format!("{}\n", signer.verifier()))?;
    let size = export_store(ledger.as_ref(), &args.dir.join("log.jsonl"))?;
    let export_s = started.elapsed().as_secs_f64();
    let db_bytes = ["mandate.db", "mandate.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(args.dir.join(name)).ok())
        .map(|meta| meta.len())
        .sum::<u64>();
    Ok(object(json!({
        "system": "mandate-library",
        "entries": entries,
        "log_size": size,
        "tasks": tasks,
        "append": {
            "seconds": append_s,
            "per_second": entries as f64 / append_s,
            "cpu_s": after.cpu_s - before.cpu_s,
            "peak_rss_kib": after.peak_rss_kib,
        },
        "export": {"seconds": export_s},
        "store_bytes": db_bytes,
    })))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Writes the whole log of `TENANT` as JSONL; returns its size.
fn export_store(ledger: &dyn Ledger, path: &Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let size = ledger.size(TENANT)?;
    mandate_store::for_each_entry(ledger, TENANT, size, |entry| -> anyhow::Result<()> {
        file.write_all(&entry.bytes)?;
        Ok(file.write_all(b"\n")?)
    })?;
    file.flush()?;
    Ok(size)
}

/// Runs `mandate verify` on the export in `dir` and times it.
fn verify(mandate: &Path, dir: &Path) -> anyhow::Result<Value> {
    let started = Instant::now();
    let output = Command::new(mandate)
        .arg("verify")
        .arg("--log")
        .arg(dir.join("log.jsonl"))
        .arg("--key")
        .arg(dir.join("log.pub"))
        .arg("--checkpoint")
        .arg(dir.join("checkpoint"))
        .output()
        .with_context(|| format!("running `{}`", mandate.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("mandate verify failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(json!({"seconds": seconds, "summary": String::from_utf8_lossy(&output.stdout).trim()}))
}

/// The server: set up, N decisions from keep-alive connections, then the
/// checkpoint, the entries and the key over HTTP.
fn server(args: &Args, url: &str, key: &str) -> anyhow::Result<Map<String, Value>> {
    let addr = url.strip_prefix("http://").with_context(|| format!("`{url}` is not an http:// URL"))?;
    let addr = addr.trim_end_matches('/').to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        set_up(&addr, key).await?;
        let server_pid = args.server_pid.map(|pid| pid.to_string());
        let server_before = server_pid.as_deref().map(Usage::of).transpose()?;
        let before = Usage::of("self")?;
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                let (addr, key, next, entries) = (addr.clone(), key.to_owned(), next.clone(), args.entries);
                tokio::spawn(async move { drive(&addr, &key, &next, entries).await })
            })
            .collect();
        for handle in handles {
            handle.await??;
        }
        let append_s = started.elapsed().as_secs_f64();
        let after = Usage::of("self")?;
        let server_after = server_pid.as_deref().map(Usage::of).transpose()?;

        let started = Instant::now();
        let size = export_http(&addr, key, &args.dir).await?;
        let export_s = started.elapsed().as_secs_f64();
        let server = match (server_before, server_after) {
            (Some(before), Some(after)) => {
                json!({"cpu_s": after.cpu_s - before.cpu_s, "peak_rss_kib": after.peak_rss_kib})
            }
            _ => Value::Null,
        };
        anyhow::Ok(object(json!({
            "system": "mandate-server",
            "entries": args.entries,
            "log_size": size,
            "connections": args.connections,
            "append": {
                "seconds": append_s,
                "per_second": args.entries as f64 / append_s,
                "server": server,
                "driver": {"cpu_s": after.cpu_s - before.cpu_s, "peak_rss_kib": after.peak_rss_kib},
            },
            "export": {"seconds": export_s},
        })))
    })
}

/// A human, an agent below it and a grant from one to the other; the new
/// tenant's permit-all policy does the rest.
async fn set_up(addr: &str, key: &str) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    let grant =
        json!({"grantee": AGENT, "grantor": HUMAN, "actions": ["payments.charge"], "resources": ["merchant://*"]});
    for (path, body) in [
        ("/v1/identities", json!({"id": HUMAN, "kind": "human"})),
        ("/v1/identities", json!({"id": AGENT, "kind": "agent", "parent": HUMAN})),
        ("/v1/grants", grant),
    ] {
        let (status, answer) = connection.call("POST", path, key, Some(&body)).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: {status} {}", String::from_utf8_lossy(&answer));
        }
    }
    Ok(())
}

/// One connection's share: decisions until `entries` have been handed out.
async fn drive(addr: &str, key: &str, next: &AtomicU64, entries: u64) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= entries {
            return Ok(());
        }
        let request = json!({
            "identity": AGENT, "action": "payments.charge", "resource": format!("merchant://books/{n}"),
            "context": {"tool": "charge"},
        });
        let (status, answer) = connection.call_json("POST", "/v1/authorize", key, &request).await?;
        if status != 200 || answer.get("decision").and_then(Value::as_str) != Some("allow") {
            bail!("POST /v1/authorize: {status} {answer}");
        }
    }
}

/// Fetches the checkpoint first, then every entry it covers, and the key.
async fn export_http(addr: &str, key: &str, dir: &Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut connection = Connection::open(addr).await?;
    let mut get = async |path: &str| -> anyhow::Result<Bytes> {
        let (status, body) = connection.call("GET", path, key, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    };
    let checkpoint = get("/v1/log/checkpoint").await?;
    std::fs::write(dir.join("checkpoint"), &checkpoint)?;
    std::fs::write(dir.join("log.pub"), get("/v1/log/public-key").await?)?;
    // A checkpoint's second line is its tree size (C2SP tlog-checkpoint).
    let size: u64 =
        String::from_utf8_lossy(&checkpoint).lines().nth(1).context("a checkpoint without a size")?.parse()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("log.jsonl"))?);
    let mut start = 0;
    while start < size {
        let end = (start + ENTRIES_PAGE_MAX).min(size);
        file.write_all(&get(&format!("/v1/log/entries?start={start}&end={end}")).await?)?;
        start = end;
    }
    file.flush()?;
    Ok(size)
}
