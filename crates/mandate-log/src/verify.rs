//! Offline verification of an exported log, one line at a time.
//!
//! [`LogVerifier`] keeps O(log n) state (the tree's [`Frontier`], the last leaf
//! hash), so a log of any length verifies in constant memory. It checks, in
//! order: each line is a canonical entry; indexes run gapless from 0; one
//! tenant throughout; each `prev` is the leaf hash of the entry before; and at
//! the end, the recomputed roots equal the signed checkpoints'.
//!
//! When a `prev` does not match, the verifier looks one entry further to say
//! *which* entry was altered: if the next entry's `prev` matches this entry,
//! the earlier entry was changed; otherwise this entry's `prev` was.

use std::borrow::Cow;
use std::fmt;

use crate::canonical;
use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryError};
use crate::hash::{Hash, empty_root, leaf_hash};
use crate::tree::Frontier;

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFault {
    /// The first bad index, when an entry is at fault; `None` when only a
    /// checkpoint can be blamed (a history rewritten with every hash recomputed).
    pub index: Option<u64>,
    /// What is wrong.
    pub kind: FaultKind,
}

/// What is wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultKind {
    /// The line is not a canonical entry.
    #[error("{0}")]
    Entry(#[from] EntryError),
    /// The last line has no newline: the export was cut short mid-write.
    #[error("torn last line: it does not end with a newline")]
    TornLine,
    /// An entry is missing: the next line carries a later index.
    #[error("entry is missing (the next line is index {found})")]
    Missing {
        /// The index found instead.
        found: u64,
    },
    /// An index appears again (an inserted, duplicated or moved entry).
    #[error("a second entry claims this index (inserted or duplicated)")]
    Repeated,
    /// The line's index is not the one due here.
    #[error("entry is out of order: found index {found} at position {position}")]
    OutOfOrder {
        /// The index in the entry.
        found: u64,
        /// Its position in the file.
        position: u64,
    },
    /// The entry belongs to another tenant's log.
    #[error("entry belongs to tenant `{found}`, not `{expected}`")]
    TenantChanged {
        /// The log's tenant.
        expected: String,
        /// The entry's tenant.
        found: String,
    },
    /// The entry was altered: the next entry's `prev` no longer matches it.
    #[error("entry was altered: its hash no longer matches `prev` of the entry after it")]
    Altered,
    /// The entry's `prev` does not match the entry before it.
    #[error("`prev` does not match the leaf hash of the entry before it")]
    PrevMismatch,
    /// The log has fewer entries than the checkpoint commits to.
    #[error("entry is missing: the checkpoint commits to {size} entries but the log ends here (truncated)")]
    Truncated {
        /// The checkpoint's size.
        size: u64,
    },
    /// The recomputed root differs from the checkpoint's.
    #[error(
        "checkpoint of size {size}: the log's root {computed} differs from the signed root {signed} (entries were changed)"
    )]
    RootMismatch {
        /// The checkpoint's size.
        size: u64,
        /// The root recomputed from the log.
        computed: Hash,
        /// The signed root.
        signed: Hash,
    },
    /// The log does not extend the earlier checkpoint: history was rewritten.
    #[error("previous checkpoint of size {size}: the log is not consistent with it (history was rewritten)")]
    Inconsistent {
        /// The earlier checkpoint's size.
        size: u64,
    },
    /// The earlier checkpoint is newer than the current one.
    #[error(
        "the previous checkpoint (size {previous}) is larger than the checkpoint (size {current}): the log was rolled back"
    )]
    RolledBack {
        /// The earlier checkpoint's size.
        previous: u64,
        /// The current checkpoint's size.
        current: u64,
    },
    /// The checkpoint is for another log.
    #[error("checkpoint origin `{origin}` is not the log of tenant `{tenant}`")]
    WrongLog {
        /// The checkpoint's origin.
        origin: String,
        /// The entries' tenant.
        tenant: String,
    },
}

impl fmt::Display for LogFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "index {index}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for LogFault {}

/// What one line says about itself, checked without the rest of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLine<'a> {
    /// The entry's `index`.
    pub index: u64,
    /// The entry's `tenant`.
    pub tenant: Cow<'a, str>,
    /// The entry's `prev`.
    pub prev: Hash,
    /// The line's leaf hash.
    pub leaf_hash: Hash,
}

/// Checks one line alone: a canonical entry, with its header and leaf hash.
///
/// The fast path reads the header without building a JSON tree; the slow
/// path decides (and words the error) whenever the fast one is unsure.
pub fn check_line(line: &[u8]) -> Result<CheckedLine<'_>, EntryError> {
    let (index, tenant, prev) = match canonical::scan_entry(line) {
        Some(header) => (header.index, Cow::Borrowed(header.tenant), header.prev),
        None => {
            let entry = Entry::parse(line)?;
            (entry.index, Cow::Owned(entry.tenant), entry.prev)
        }
    };
    Ok(CheckedLine { index, tenant, prev, leaf_hash: leaf_hash(line) })
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLog {
    /// The number of entries read.
    pub size: u64,
    /// The root of all of them.
    pub root: Hash,
    /// The tenant, if the log is not empty.
    pub tenant: Option<String>,
}

/// A streaming log verifier. Feed it lines with [`LogVerifier::push`], then
/// call [`LogVerifier::finish`] with the checkpoints.
#[derive(Debug, Clone)]
pub struct LogVerifier {
    frontier: Frontier,
    last_leaf: Hash,
    tenant: Option<String>,
    /// A `prev` mismatch at this index, waiting for the next entry to tell
    /// which of the two entries was altered.
    suspect: Option<u64>,
    /// Tree sizes whose roots the checkpoints need, with the roots once seen.
    wanted_roots: Vec<(u64, Option<Hash>)>,
}

impl LogVerifier {
    /// A verifier that will remember the roots at `sizes` (the checkpoints').
    pub fn new(sizes: &[u64]) -> LogVerifier {
        LogVerifier {
            frontier: Frontier::new(),
            last_leaf: Hash::ZERO,
            tenant: None,
            suspect: None,
            wanted_roots: sizes.iter().map(|&size| (size, (size == 0).then(empty_root))).collect(),
        }
    }

    /// The number of entries accepted so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// A fault at the next index (for a torn line, say).
    pub fn fault_here(&self, kind: FaultKind) -> LogFault {
        LogFault { index: Some(self.size()), kind }
    }

    /// Checks the next line (without its newline).
    pub fn push(&mut self, line: &[u8]) -> Result<(), LogFault> {
        self.push_checked(check_line(line))
    }

    /// Takes the next line already checked alone by [`check_line`] (which a
    /// caller may run on several threads) and checks its place in the log.
    pub fn push_checked(&mut self, checked: Result<CheckedLine<'_>, EntryError>) -> Result<(), LogFault> {
        let position = self.size();
        let CheckedLine { index, tenant, prev, leaf_hash: leaf } =
            checked.map_err(|error| self.fault_here(error.into()))?;
        let tenant = tenant.as_ref();
        if index != position {
            return Err(self.misplaced(index));
        }
        match &self.tenant {
            None => self.tenant = Some(tenant.to_owned()),
            Some(expected) if expected != tenant => {
                let kind = FaultKind::TenantChanged { expected: expected.clone(), found: tenant.to_owned() };
                return Err(self.fault_here(kind));
            }
            Some(_) => {}
        }
        if let Some(suspect) = self.suspect.take() {
            // `suspect`'s prev did not match the entry before it. If this
            // entry's prev matches `suspect`, only the entry before was changed.
            return Err(if prev == self.last_leaf {
                LogFault { index: suspect.checked_sub(1), kind: FaultKind::Altered }
            } else {
                LogFault { index: Some(suspect), kind: FaultKind::PrevMismatch }
            });
        }
        if prev != self.last_leaf {
            if position == 0 {
                return Err(self.fault_here(FaultKind::PrevMismatch));
            }
            self.suspect = Some(position);
        }
        self.frontier.push(leaf, |_, _| {});
        self.last_leaf = leaf;
        let size = self.frontier.size();
        for (wanted, root) in &mut self.wanted_roots {
            if *wanted == size {
                *root = Some(self.frontier.root());
            }
        }
        Ok(())
    }

    fn misplaced(&self, found: u64) -> LogFault {
        let position = self.size();
        let kind = if found > position {
            FaultKind::Missing { found }
        } else if found + 1 == position {
            return LogFault { index: Some(found), kind: FaultKind::Repeated };
        } else {
            FaultKind::OutOfOrder { found, position }
        };
        self.fault_here(kind)
    }

    /// Ends the log and checks it against the signed `checkpoint` and an
    /// earlier `previous` one. Their signatures are the caller's to check
    /// first (see [`crate::SignedCheckpoint::open`]).
    pub fn finish(
        self,
        checkpoint: Option<&Checkpoint>,
        previous: Option<&Checkpoint>,
    ) -> Result<VerifiedLog, LogFault> {
        if let Some(suspect) = self.suspect {
            return Err(LogFault { index: Some(suspect), kind: FaultKind::PrevMismatch });
        }
        let size = self.size();
        let log_fault = |kind| LogFault { index: None, kind };
        for checkpoint in checkpoint.iter().chain(previous.iter()) {
            if let Some(tenant) = &self.tenant
                && !checkpoint.origin.ends_with(&format!("/{tenant}"))
            {
                return Err(log_fault(FaultKind::WrongLog {
                    origin: checkpoint.origin.clone(),
                    tenant: tenant.clone(),
                }));
            }
        }
        if let (Some(current), Some(previous)) = (checkpoint, previous) {
            if previous.size > current.size {
                return Err(log_fault(FaultKind::RolledBack { previous: previous.size, current: current.size }));
            }
            if previous.origin != current.origin {
                return Err(log_fault(FaultKind::WrongLog {
                    origin: previous.origin.clone(),
                    tenant: current.origin.clone(),
                }));
            }
        }
        if let Some(checkpoint) = checkpoint {
            if checkpoint.size > size {
                return Err(LogFault { index: Some(size), kind: FaultKind::Truncated { size: checkpoint.size } });
            }
            let computed = self.root_at(checkpoint.size);
            if computed != Some(checkpoint.root) {
                let computed = computed.unwrap_or_default();
                return Err(log_fault(FaultKind::RootMismatch {
                    size: checkpoint.size,
                    computed,
                    signed: checkpoint.root,
                }));
            }
        }
        if let Some(previous) = previous {
            if previous.size > size {
                return Err(LogFault { index: Some(size), kind: FaultKind::Truncated { size: previous.size } });
            }
            // With every entry at hand, the root at the old size is the
            // strongest consistency check there is: it is what a consistency
            // proof would establish.
            if self.root_at(previous.size) != Some(previous.root) {
                return Err(log_fault(FaultKind::Inconsistent { size: previous.size }));
            }
        }
        Ok(VerifiedLog { size, root: self.frontier.root(), tenant: self.tenant })
    }

    fn root_at(&self, size: u64) -> Option<Hash> {
        self.wanted_roots.iter().find(|(wanted, _)| *wanted == size).and_then(|(_, root)| *root)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::tree::MemoryTree;

    fn log(n: u64) -> (Vec<Vec<u8>>, MemoryTree) {
        let mut tree = MemoryTree::new();
        let mut prev = Hash::ZERO;
        let mut lines = Vec::new();
        for index in 0..n {
            let mut body = serde_json::Map::new();
            body.insert("n".into(), index.into());
            let entry = Entry {
                tenant: "t".into(),
                index,
                time: "2026-11-22T00:00:00Z".into(),
                entry_type: "test".into(),
                prev,
                body,
            };
            let canonical = entry.to_canonical().unwrap();
            tree.push(canonical.leaf_hash);
            prev = canonical.leaf_hash;
            lines.push(canonical.bytes);
        }
        (lines, tree)
    }

    fn run(
        lines: &[Vec<u8>],
        checkpoint: Option<&Checkpoint>,
        previous: Option<&Checkpoint>,
    ) -> Result<VerifiedLog, LogFault> {
        let sizes: Vec<u64> = checkpoint.iter().chain(previous.iter()).map(|c| c.size).collect();
        let mut verifier = LogVerifier::new(&sizes);
        for line in lines {
            verifier.push(line)?;
        }
        verifier.finish(checkpoint, previous)
    }

    fn checkpoint(tree: &MemoryTree, size: u64) -> Checkpoint {
        Checkpoint { origin: "mandate.test/t".into(), size, root: tree.root_at(size).unwrap() }
    }

    #[test]
    fn an_intact_log_verifies() {
        let (lines, tree) = log(20);
        let verified = run(&lines, Some(&checkpoint(&tree, 20)), Some(&checkpoint(&tree, 7))).unwrap();
        assert_eq!(verified.size, 20);
        assert_eq!(verified.root, tree.root());
    }

    #[test]
    fn an_altered_body_is_blamed_on_its_entry() {
        let (mut lines, _) = log(10);
        // Keep the entry canonical so that only the hash chain can tell.
        let text = String::from_utf8(lines[4].clone()).unwrap().replace(r#""n":4"#, r#""n":5"#);
        lines[4] = text.into_bytes();
        assert_eq!(run(&lines, None, None).unwrap_err(), LogFault { index: Some(4), kind: FaultKind::Altered });
    }

    #[test]
    fn an_altered_prev_is_blamed_on_its_entry() {
        let (mut lines, _) = log(10);
        let text = String::from_utf8(lines[4].clone()).unwrap();
        let prev_start = text.find(r#""prev":""#).unwrap() + 8;
        let mut bytes = text.into_bytes();
        bytes[prev_start] = if bytes[prev_start] == b'a' { b'b' } else { b'a' };
        lines[4] = bytes;
        assert_eq!(run(&lines, None, None).unwrap_err(), LogFault { index: Some(4), kind: FaultKind::PrevMismatch });
    }

    #[test]
    fn deletions_repeats_and_swaps_name_the_index() {
        let (lines, tree) = log(10);
        let mut deleted = lines.clone();
        deleted.remove(3);
        assert_eq!(
            run(&deleted, None, None).unwrap_err(),
            LogFault { index: Some(3), kind: FaultKind::Missing { found: 4 } }
        );
        let mut repeated = lines.clone();
        repeated.insert(3, lines[3].clone());
        assert_eq!(run(&repeated, None, None).unwrap_err(), LogFault { index: Some(3), kind: FaultKind::Repeated });
        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(run(&swapped, None, None).unwrap_err().index, Some(3));
        let truncated = &lines[..8];
        assert_eq!(
            run(truncated, Some(&checkpoint(&tree, 10)), None).unwrap_err(),
            LogFault { index: Some(8), kind: FaultKind::Truncated { size: 10 } }
        );
    }

    #[test]
    fn a_rewritten_history_fails_the_checkpoints() {
        let (lines, tree) = log(10);
        // Recomputing every hash after the change hides it from the chain, not from the root.
        let (mut relinked, _) = log(10);
        let mut prev = Hash::ZERO;
        for (i, line) in relinked.iter_mut().enumerate() {
            let mut entry = Entry::parse(line).unwrap();
            if i == 5 {
                entry.body.insert("n".into(), 500.into());
            }
            entry.prev = prev;
            let canonical = entry.to_canonical().unwrap();
            prev = canonical.leaf_hash;
            *line = canonical.bytes;
        }
        let fault = run(&relinked, Some(&checkpoint(&tree, 10)), None).unwrap_err();
        assert!(matches!(fault.kind, FaultKind::RootMismatch { size: 10, .. }));
        let fault = run(&relinked, None, Some(&checkpoint(&tree, 8))).unwrap_err();
        assert_eq!(fault.kind, FaultKind::Inconsistent { size: 8 });
        // And an older checkpoint newer than the current one is a rollback.
        let fault = run(&lines, Some(&checkpoint(&tree, 5)), Some(&checkpoint(&tree, 9))).unwrap_err();
        assert!(matches!(fault.kind, FaultKind::RolledBack { .. }));
    }
}
