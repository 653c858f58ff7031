//! `mandate verify`: check an exported log, or one receipt, offline, trusting
//! nothing but the verifier key.
//!
//! The log is streamed line by line through [`LogVerifier`], so memory stays
//! constant however long the log is. The first fault ends the run with one
//! line naming the index (or the checkpoint) and why.

use std::borrow::Cow;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mandate_log::entry::{ENTRY_BYTES_MAX, EntryError};
use mandate_log::{
    CheckedLine, FaultKind, Hash, LogFault, LogVerifier, Receipt, SignedCheckpoint, VerifierKey, check_line,
};

/// How much of the log is read and checked at a time.
const BLOCK_BYTES: usize = 1 << 20;

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
    let file = File::open(path).with_context(|| format!("opening the log `{}`", path.display()))?;
    let progress = progress_bar(file.metadata().map(|m| m.len()).unwrap_or(0));
    let sizes: Vec<u64> = checkpoint.iter().chain(previous.iter()).map(|signed| signed.checkpoint.size).collect();
    let mut verifier = LogVerifier::new(&sizes);
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, THREADS_MAX);
    let mut reader = BlockReader { file, leftover: Vec::new(), bytes_read: 0 };
    let ending = check_pipelined(&mut reader, threads, &progress, |checked| verifier.push_checked(checked)).map_err(
        |error| match error {
            PipelineError::Fault(fault) => fail(&progress, fault),
            PipelineError::Io(error) => anyhow::Error::new(error).context("reading the log"),
        },
    )?;
    match ending {
        Ending::Clean => {}
        Ending::TornLine => return Err(fail(&progress, verifier.fault_here(FaultKind::TornLine))),
        Ending::Oversized { bytes } => {
            return Err(fail(&progress, verifier.fault_here(EntryError::TooLarge { bytes }.into())));
        }
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

/// How the file ended, once every whole line was checked.
enum Ending {
    /// After a newline.
    Clean,
    /// In the middle of a line.
    TornLine,
    /// In a line longer than any entry can be (reading stopped there).
    Oversized { bytes: usize },
}

enum PipelineError {
    Fault(LogFault),
    Io(std::io::Error),
}

/// Reads the log as blocks of whole lines.
struct BlockReader {
    file: File,
    /// The start of a line that the last block cut.
    leftover: Vec<u8>,
    bytes_read: u64,
}

/// What the reader found next.
enum Next {
    /// Whole lines, each ending in a newline.
    Lines(Vec<u8>),
    /// The end of the file, or a line too long to be an entry.
    End(Ending),
}

impl BlockReader {
    /// Fills `block` (a recycled buffer) with the next whole lines.
    fn next(&mut self, mut block: Vec<u8>) -> std::io::Result<Next> {
        block.clear();
        loop {
            // INVARIANT (constant-memory): a block is at most BLOCK_BYTES plus
            // one partial line, whatever the file's size.
            block.append(&mut self.leftover);
            let read = (&mut self.file).take(BLOCK_BYTES as u64).read_to_end(&mut block)?;
            self.bytes_read += read as u64;
            let complete = memchr::memrchr(b'\n', &block).map_or(0, |last| last + 1);
            self.leftover.extend_from_slice(block.get(complete..).unwrap_or_default());
            block.truncate(complete);
            if complete > 0 {
                return Ok(Next::Lines(block));
            }
            if read == 0 {
                let ending = if self.leftover.is_empty() { Ending::Clean } else { Ending::TornLine };
                return Ok(Next::End(ending));
            }
            if self.leftover.len() > ENTRY_BYTES_MAX + 1 {
                return Ok(Next::End(Ending::Oversized { bytes: self.leftover.len() }));
            }
        }
    }
}

/// One line checked by a worker. The tenant is carried only when it differs
/// from the line before, which spares an allocation per line.
struct Checked {
    index: u64,
    prev: Hash,
    leaf_hash: Hash,
    new_tenant: Option<Box<str>>,
}

/// A block's lines checked, with the block's buffer to reuse.
struct CheckedBlock {
    sequence: u64,
    buffer: Vec<u8>,
    lines: Vec<Result<Checked, EntryError>>,
}

/// Checks every line of a block alone (canonical form, header, leaf hash).
fn check_block(sequence: u64, buffer: Vec<u8>) -> CheckedBlock {
    let mut lines = Vec::with_capacity(buffer.len() / 256);
    let mut last_tenant: Option<&str> = None;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &buffer) {
        let line = buffer.get(start..end).unwrap_or_default();
        start = end + 1;
        lines.push(check_line(line).map(|checked| {
            let new_tenant = match (last_tenant, &checked.tenant) {
                (Some(last), tenant) if last == tenant.as_ref() => None,
                (_, tenant) => Some(Box::from(tenant.as_ref())),
            };
            if new_tenant.is_some() {
                last_tenant = match checked.tenant {
                    Cow::Borrowed(tenant) => Some(tenant),
                    Cow::Owned(_) => None,
                };
            }
            Checked { index: checked.index, prev: checked.prev, leaf_hash: checked.leaf_hash, new_tenant }
        }));
    }
    CheckedBlock { sequence, buffer, lines }
}

/// Checks the log's lines on `threads` worker threads while this thread reads
/// blocks and hands each line's result, in order, to `push`.
fn check_pipelined(
    reader: &mut BlockReader,
    threads: usize,
    progress: &ProgressBar,
    mut push: impl FnMut(Result<CheckedLine<'_>, EntryError>) -> Result<(), LogFault>,
) -> Result<Ending, PipelineError> {
    let (work, jobs) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
    let jobs = std::sync::Mutex::new(jobs);
    let (done, results) = std::sync::mpsc::channel::<CheckedBlock>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (jobs, done) = (&jobs, done.clone());
            scope.spawn(move || {
                while let Ok((sequence, block)) =
                    jobs.lock().map_err(|_| ()).and_then(|jobs| jobs.recv().map_err(|_| ()))
                {
                    if done.send(check_block(sequence, block)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done);
        // Blocks in flight are bounded, so memory is too; their buffers are
        // reused rather than freed and faulted in again.
        let in_flight_max = 2 * threads as u64;
        let (mut sent, mut pushed) = (0u64, 0u64);
        let mut waiting = std::collections::BTreeMap::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut tenant = String::new();
        let mut ending = None;
        loop {
            while ending.is_none() && sent - pushed < in_flight_max {
                let buffer = spare.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK_BYTES + ENTRY_BYTES_MAX + 2));
                match reader.next(buffer).map_err(PipelineError::Io)? {
                    Next::Lines(block) => {
                        if work.send((sent, block)).is_err() {
                            break;
                        }
                        sent += 1;
                    }
                    Next::End(end) => ending = Some(end),
                }
            }
            if sent == pushed {
                break;
            }
            let Ok(block) = results.recv() else { break };
            waiting.insert(block.sequence, block);
            while let Some(block) = waiting.remove(&pushed) {
                for line in block.lines {
                    let line = line.map(|checked| {
                        if let Some(new_tenant) = checked.new_tenant {
                            tenant = new_tenant.into();
                        }
                        CheckedLine {
                            index: checked.index,
                            tenant: Cow::Borrowed(tenant.as_str()),
                            prev: checked.prev,
                            leaf_hash: checked.leaf_hash,
                        }
                    });
                    push(line).map_err(PipelineError::Fault)?;
                }
                spare.push(block.buffer);
                pushed += 1;
            }
            progress.set_position(reader.bytes_read);
        }
        drop(work);
        Ok(ending.unwrap_or(Ending::Clean))
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
