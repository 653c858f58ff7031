//! `mandate demo`: the verifiable log in one screen, on a fresh embedded store.
//!
//! It appends entries from concurrent writers (group commit), signs a
//! checkpoint, writes a receipt for one decision and checks it offline,
//! exports the log and verifies it, then alters one byte of a copy and shows
//! verification naming the altered entry. Every file it writes stays in the
//! data directory so the reader can run `mandate verify` on them by hand.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use mandate_log::{Entry, Receipt, SignerKey};
use mandate_store::{ENTRIES_PAGE_MAX, EntryDraft, Ledger, SqliteLedger};
use serde_json::{Value, json};

use crate::verify;

const TENANT: &str = "default";
const ORIGIN: &str = "mandate.local/default";
const WRITERS: u64 = 32;

/// Terminal styling, only when stdout is a terminal.
struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: impl Display) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    fn bold(&self, text: impl Display) -> String {
        self.paint("1", text)
    }
    fn good(&self, text: impl Display) -> String {
        self.paint("32", text)
    }
    fn bad(&self, text: impl Display) -> String {
        self.paint("31", text)
    }
    fn dim(&self, text: impl Display) -> String {
        self.paint("2", text)
    }
}

/// Runs the demo in `data` (or a new temporary directory) with `entries` entries.
pub fn run(data: Option<PathBuf>, entries: u64) -> Result<()> {
    let dir = match data {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
            dir
        }
        None => tempfile::Builder::new().prefix("mandate-demo-").tempdir()?.keep(),
    };
    let db = dir.join("mandate.db");
    if db.exists() {
        anyhow::bail!("`{}` already holds a demo store: give --data an empty directory", dir.display());
    }
    let style = Style { color: std::io::stdout().is_terminal() };
    let out = &mut std::io::stdout().lock();
    writeln!(
        out,
        "{} {}",
        style.bold("Mandate demo: the verifiable log"),
        style.dim(format!("(files in {})", dir.display()))
    )?;

    let ledger = Arc::new(SqliteLedger::open(&db)?);
    ledger.create_log(TENANT)?;
    let signer = Arc::new(generate_key(&dir)?);

    let started = Instant::now();
    append_concurrently(&ledger, entries)?;
    let elapsed = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "\n{} appended {entries} entries from {WRITERS} concurrent writers in {:.2} s ({:.0} entries/s), each durable before it was acknowledged",
        style.bold("1."),
        elapsed,
        entries as f64 / elapsed.max(1e-9)
    )?;

    let checkpoint = ledger.sign_checkpoint(TENANT, signer.clone())?;
    std::fs::write(dir.join("checkpoint"), &checkpoint.note)?;
    writeln!(out, "\n{} signed a checkpoint (C2SP signed note, Ed25519):", style.bold("2."))?;
    for line in checkpoint.note.lines() {
        writeln!(out, "     {}", style.dim(line))?;
    }

    let exported = dir.join("log.jsonl");
    export(&ledger, &exported)?;
    let key = signer.verifier().clone();
    let target =
        verify::Target::Log { log: exported.clone(), checkpoint: Some(dir.join("checkpoint")), previous: None };
    let summary = verify::run(&target, &key)?;
    writeln!(
        out,
        "\n{} exported the log to log.jsonl and verified it offline:\n     {}",
        style.bold("3."),
        style.good(summary)
    )?;

    let (index, line) = pick_decision(&ledger, checkpoint.checkpoint.size)?;
    let receipt = Receipt {
        extra: None,
        index,
        proof: ledger.inclusion_proof(TENANT, index, checkpoint.checkpoint.size)?,
        checkpoint_note: checkpoint.note.clone(),
    };
    let receipt_path = dir.join(format!("receipt-{index}.tlog-proof"));
    let entry_path = dir.join(format!("entry-{index}.json"));
    std::fs::write(&receipt_path, receipt.to_text())?;
    std::fs::write(&entry_path, [line.as_slice(), b"\n"].concat())?;
    let summary = verify::run(&verify::Target::Receipt { receipt: receipt_path, entry: entry_path }, &key)?;
    writeln!(
        out,
        "\n{} wrote a receipt for decision {index} ({} proof hashes + the checkpoint) and checked it alone:\n     {}",
        style.bold("4."),
        receipt.proof.len(),
        style.good(summary)
    )?;

    let tampered = dir.join("tampered.jsonl");
    let (before, after) = tamper(&exported, &tampered, index)?;
    let target = verify::Target::Log { log: tampered, checkpoint: Some(dir.join("checkpoint")), previous: None };
    let caught = match verify::run(&target, &key) {
        Ok(summary) => anyhow::bail!("the tampered log verified, which must never happen: {summary}"),
        Err(error) => error.to_string(),
    };
    writeln!(
        out,
        "\n{} changed one byte in a copy ({before} -> {after} in entry {index}) and verified again:\n     {}",
        style.bold("5."),
        style.bad(format!("verification failed: {caught}"))
    )?;

    let d = dir.display();
    writeln!(out, "\n{}", style.bold("Try it yourself:"))?;
    writeln!(out, "  mandate verify --log {d}/log.jsonl --key {d}/log.pub --checkpoint {d}/checkpoint")?;
    writeln!(out, "  mandate verify --log {d}/tampered.jsonl --key {d}/log.pub --checkpoint {d}/checkpoint")?;
    writeln!(
        out,
        "  mandate verify --receipt {d}/receipt-{index}.tlog-proof --entry {d}/entry-{index}.json --key {d}/log.pub"
    )?;
    Ok(())
}

/// A fresh log key, its public half written to `log.pub` and its private half
/// to `log.key` (owner-only).
fn generate_key(dir: &Path) -> Result<SignerKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| anyhow::anyhow!("reading the system's random source: {error}"))?;
    let signer = SignerKey::from_seed(ORIGIN, seed)?;
    std::fs::write(dir.join("log.pub"), format!("{}\n", signer.verifier()))?;
    write_private(&dir.join("log.key"), &signer.to_private_text())?;
    Ok(signer)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{text}")?;
    Ok(())
}

/// Realistic entry bodies: what the authority engine will write.
fn body(writer: u64, seq: u64) -> (String, serde_json::Map<String, Value>) {
    let agent = format!("agent:buyer-{writer}");
    let (entry_type, value) = match seq % 4 {
        0 | 1 => (
            "decision",
            json!({
                "decision": if seq % 8 == 1 { "deny" } else { "allow" },
                "identity": agent,
                "chain": [agent, "user:alice"],
                "action": "payments.charge",
                "resource": format!("merchant://books/{seq}"),
                "amounts": {"usd_cents": 1_000 + (seq * 37) % 9_000},
                "reasons": if seq % 8 == 1 { json!([{"code": "budget_exceeded"}]) } else { json!([]) },
                "policies": {"determining": ["allow-books"], "errors": []},
            }),
        ),
        2 => ("reservation.settled", json!({"identity": agent, "amounts": {"usd_cents": 990}})),
        _ => ("event.recorded", json!({"identity": agent, "outcome": "success", "duration_ms": 120 + seq % 50})),
    };
    let Value::Object(map) = value else { return (entry_type.into(), serde_json::Map::new()) };
    (entry_type.into(), map)
}

fn append_concurrently(ledger: &Arc<SqliteLedger>, entries: u64) -> Result<()> {
    let per_writer = entries.div_ceil(WRITERS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                scope.spawn(move || -> Result<()> {
                    let first = writer * per_writer;
                    for seq in first..(first + per_writer).min(entries) {
                        let (entry_type, body) = body(writer, seq);
                        let time = jiff::Timestamp::now().to_string();
                        ledger.append(TENANT, vec![EntryDraft::new(entry_type, time, &body)?]).wait()?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| worker.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?)
    })
}

fn export(ledger: &SqliteLedger, path: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let size = ledger.size(TENANT)?;
    let mut start = 0;
    while start < size {
        let end = (start + ENTRIES_PAGE_MAX).min(size);
        for entry in ledger.entries(TENANT, start, end)? {
            file.write_all(&entry.bytes)?;
            file.write_all(b"\n")?;
        }
        start = end;
    }
    file.flush()?;
    Ok(())
}

/// The first allowed decision in the second half of the log.
fn pick_decision(ledger: &SqliteLedger, size: u64) -> Result<(u64, Vec<u8>)> {
    let start = size / 2;
    for entry in ledger.entries(TENANT, start, size.min(start + 100))? {
        let parsed = Entry::parse(&entry.bytes)?;
        if parsed.entry_type == "decision" && parsed.body.get("decision") == Some(&json!("allow")) {
            return Ok((entry.index, entry.bytes));
        }
    }
    anyhow::bail!("no decision found to make a receipt for")
}

/// Copies the log, adding one cent to the amount of entry `index`.
fn tamper(from: &Path, to: &Path, index: u64) -> Result<(String, String)> {
    let text = std::fs::read_to_string(from)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = lines.get_mut(usize::try_from(index)?).context("the entry to alter is missing")?;
    let start = line.find("\"usd_cents\":").context("the entry has no amount")? + "\"usd_cents\":".len();
    let digits: String = line.get(start..).unwrap_or_default().chars().take_while(char::is_ascii_digit).collect();
    let altered = (digits.parse::<u64>()? + 1).to_string();
    line.replace_range(start..start + digits.len(), &altered);
    std::fs::write(to, lines.join("\n") + "\n")?;
    Ok((format!("usd_cents {digits}"), format!("usd_cents {altered}")))
}
