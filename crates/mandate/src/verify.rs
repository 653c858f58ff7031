//! `mandate verify`: check an exported log, or one receipt, offline, trusting
//! nothing but the verifier key.
//!
//! The log is streamed line by line through [`LogVerifier`], so memory stays
//! constant however long the log is. The first fault ends the run with one
//! line naming the index (or the checkpoint) and why.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mandate_log::entry::{ENTRY_BYTES_MAX, EntryError};
use mandate_log::{CheckedLine, FaultKind, LogFault, LogVerifier, Receipt, SignedCheckpoint, VerifierKey};

/// How much of the log is read and checked at a time.
const BLOCK_BYTES: usize = 4 << 20;

/// The most threads that check lines.
const THREADS_MAX: usize = 8;

/// What `verify` was asked to check.
#[derive(Debug)]
pub enum Target {
    /// A whole exported log, with optional checkpoints.
    Log {
        /// The JSONL export.
        log: PathBuf,
        /// The signed checkpoint the log must match.
        checkpoint: Option<PathBuf>,
        /// An earlier signed checkpoint the log must extend.
        previous: Option<PathBuf>,
    },
    /// One receipt for one entry.
    Receipt {
        /// The `c2sp.org/tlog-proof@v1` file.
        receipt: PathBuf,
        /// The entry's canonical bytes.
        entry: PathBuf,
    },
}

/// A verification that failed: the one line to print, and exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// Reads a verifier key given as text or as a file holding it.
pub fn read_key(key: &str) -> Result<VerifierKey> {
    let text = if Path::new(key).is_file() {
        std::fs::read_to_string(key).with_context(|| format!("reading the key file `{key}`"))?
    } else {
        key.to_owned()
    };
    VerifierKey::parse(text.trim()).map_err(|error| anyhow::Error::new(Failed(format!("key: {error}"))))
}

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>> {
    const SMALL_FILE_BYTES_MAX: u64 = 1 << 20;
    let file = File::open(path).with_context(|| format!("opening the {what} `{}`", path.display()))?;
    let mut bytes = Vec::new();
    file.take(SMALL_FILE_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > SMALL_FILE_BYTES_MAX {
        bail!(Failed(format!("the {what} `{}` is larger than 1 MiB", path.display())));
    }
    Ok(bytes)
}

fn open_checkpoint(path: &Path, key: &VerifierKey, what: &str) -> Result<SignedCheckpoint> {
    let bytes = read_small(path, what)?;
    SignedCheckpoint::open(&bytes, std::slice::from_ref(key)).map_err(|error| Failed(format!("{what}: {error}")).into())
}

/// Runs the verification and returns the success summary.
pub fn run(target: &Target, key: &VerifierKey) -> Result<String> {
    match target {
        Target::Log { log, checkpoint, previous } => {
            let checkpoint = checkpoint.as_deref().map(|path| open_checkpoint(path, key, "checkpoint")).transpose()?;
            let previous =
                previous.as_deref().map(|path| open_checkpoint(path, key, "previous checkpoint")).transpose()?;
            verify_log(log, checkpoint.as_ref(), previous.as_ref())
        }
        Target::Receipt { receipt, entry } => {
            let receipt_bytes = read_small(receipt, "receipt")?;
            let mut entry_bytes = read_small(entry, "entry")?;
            if entry_bytes.last() == Some(&b'\n') {
                entry_bytes.pop();
            }
            let receipt = Receipt::parse(&receipt_bytes).map_err(|error| Failed(error.to_string()))?;
            let signed = receipt
                .verify(&entry_bytes, std::slice::from_ref(key))
                .map_err(|error| Failed(format!("index {}: {error}", receipt.index)))?;
            Ok(format!(
                "ok: entry {} is in the log `{}` of {} entries (root {}), signed by {}",
                receipt.index,
                signed.checkpoint.origin,
                signed.checkpoint.size,
                signed.checkpoint.root.to_base64(),
                key.name()
            ))
        }
    }
}

fn verify_log(
    path: &Path,
    checkpoint: Option<&SignedCheckpoint>,
    previous: Option<&SignedCheckpoint>,
) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening the log `{}`", path.display()))?;
    let progress = progress_bar(file.metadata().map(|m| m.len()).unwrap_or(0));
    let sizes: Vec<u64> = checkpoint.iter().chain(previous.iter()).map(|signed| signed.checkpoint.size).collect();
    let mut verifier = LogVerifier::new(&sizes);
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(THREADS_MAX);
    // INVARIANT (constant-memory): the buffer holds at most one block plus
    // one partial line, whatever the file's size.
    let mut buffer: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + ENTRY_BYTES_MAX + 2);
    let mut bytes_read = 0u64;
    loop {
        let kept = buffer.len();
        buffer.resize(kept + BLOCK_BYTES, 0);
        let read = read_full(&mut file, buffer.get_mut(kept..).unwrap_or_default())?;
        buffer.truncate(kept + read);
        bytes_read += read as u64;
        let complete = buffer.iter().rposition(|&b| b == b'\n').map_or(0, |last| last + 1);
        let lines: Vec<&[u8]> = buffer.get(..complete).unwrap_or_default().split(|&b| b == b'\n').collect();
        let lines = lines.split_last().map_or(&[][..], |(_, lines)| lines);
        for checked in check_in_parallel(lines, threads) {
            verifier.push_checked(checked).map_err(|fault| fail(&progress, fault))?;
        }
        buffer.drain(..complete);
        if read == 0 {
            if !buffer.is_empty() {
                return Err(fail(&progress, verifier.fault_here(FaultKind::TornLine)));
            }
            break;
        }
        if buffer.len() > ENTRY_BYTES_MAX + 1 {
            // A line longer than any entry can be: stop before it grows.
            let fault = verifier.fault_here(EntryError::TooLarge { bytes: buffer.len() }.into());
            return Err(fail(&progress, fault));
        }
        progress.set_position(bytes_read);
    }
    let verified = verifier
        .finish(checkpoint.map(|s| &s.checkpoint), previous.map(|s| &s.checkpoint))
        .map_err(|fault| fail(&progress, fault))?;
    progress.finish_and_clear();
    let tenant = verified.tenant.as_deref().unwrap_or("(empty log)");
    let mut summary = format!("ok: {} entries of tenant `{tenant}`, root {}", verified.size, verified.root.to_base64());
    match checkpoint {
        Some(signed) if signed.checkpoint.size < verified.size => summary.push_str(&format!(
            "; the checkpoint covers the first {} (the {} after it are chained but not yet signed)",
            signed.checkpoint.size,
            verified.size - signed.checkpoint.size
        )),
        Some(signed) => summary.push_str(&format!("; matches the checkpoint signed by `{}`", signed.checkpoint.origin)),
        None => summary.push_str("; no checkpoint given, so only the entries' own chain was checked"),
    }
    if let Some(previous) = previous {
        summary.push_str(&format!("; extends the previous checkpoint of size {}", previous.checkpoint.size));
    }
    Ok(summary)
}

/// Reads until `buffer` is full or the file ends.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Checks each line alone (canonical form, header, leaf hash) on `threads`
/// threads; the results come back in line order.
fn check_in_parallel<'a>(lines: &[&'a [u8]], threads: usize) -> Vec<Result<CheckedLine<'a>, EntryError>> {
    let per_thread = lines.len().div_ceil(threads.max(1)).max(1);
    let check = |chunk: &[&'a [u8]]| -> Vec<Result<CheckedLine<'a>, EntryError>> {
        chunk.iter().map(|line| mandate_log::check_line(line)).collect()
    };
    std::thread::scope(|scope| {
        let mut chunks = lines.chunks(per_thread);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks.map(|chunk| scope.spawn(move || check(chunk))).collect();
        let mut results = check(first);
        for other in others {
            // Checking cannot panic on input (the log crate's lints and fuzz
            // targets hold it to that); were it to, the line is refused.
            match other.join() {
                Ok(more) => results.extend(more),
                Err(_) => results.push(Err(EntryError::NotCanonical)),
            }
        }
        results
    })
}

fn fail(progress: &ProgressBar, fault: LogFault) -> anyhow::Error {
    progress.finish_and_clear();
    Failed(fault.to_string()).into()
}

/// A byte-based progress bar on a terminal; hidden otherwise.
fn progress_bar(total_bytes: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    if let Ok(style) = ProgressStyle::with_template("verifying {bar:40} {binary_bytes}/{binary_total_bytes} {eta}") {
        bar.set_style(style);
    }
    bar
}
