//! The streaming verifier never panics on any export: the input is split into
//! lines at `\n` and pushed until the first fault, then finished both without
//! checkpoints and against the fixture log's signed checkpoints. A log it
//! accepts has the root that an independently built tree gives its lines.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_log::{Checkpoint, LogVerifier, MemoryTree, leaf_hash};

/// The fixture log's checkpoints at its full size and at an earlier one.
static CHECKPOINTS: LazyLock<(Checkpoint, Checkpoint)> = LazyLock::new(|| {
    let current = mandate_fuzz::signed_checkpoint(mandate_fuzz::LOG_SIZE).checkpoint;
    let previous = mandate_fuzz::signed_checkpoint(7).checkpoint;
    (current, previous)
});

fuzz_target!(|data: &[u8]| {
    let (current, previous) = &*CHECKPOINTS;
    let mut verifier = LogVerifier::new(&[current.size, previous.size]);
    // An export ends in a newline: the empty piece after it is not a line.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut lines = Vec::new();
    if !data.is_empty() {
        for line in body.split(|byte| *byte == b'\n') {
            if verifier.push(line).is_err() {
                return;
            }
            lines.push(line);
        }
    }
    assert_eq!(verifier.size(), lines.len() as u64);
    if let Ok(verified) = verifier.clone().finish(None, None) {
        let mut tree = MemoryTree::new();
        for line in &lines {
            tree.push(leaf_hash(line));
        }
        assert_eq!(verified.size, tree.size());
        assert_eq!(verified.root, tree.root(), "the verifier's root differs from the tree's");
    }
    if let Ok(verified) = verifier.finish(Some(current), Some(previous)) {
        assert_eq!(verified.size, lines.len() as u64);
        assert!(verified.size >= current.size);
    }
});
