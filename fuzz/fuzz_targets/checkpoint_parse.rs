//! Checkpoint parsing never panics; a parsed checkpoint prints to text that
//! parses back to it (and, without extension lines, to the input itself); and
//! `SignedCheckpoint::open` with the fixture key never panics and agrees with
//! `parse_text` on what it opened.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_log::note::VerifierKey;
use mandate_log::{Checkpoint, SignedCheckpoint};

static KEYS: LazyLock<[VerifierKey; 1]> = LazyLock::new(|| [mandate_fuzz::verifier()]);

fuzz_target!(|data: &[u8]| {
    if let Ok(opened) = SignedCheckpoint::open(data, &*KEYS) {
        assert_eq!(opened.checkpoint.origin, mandate_fuzz::ORIGIN);
        assert_eq!(opened.note.as_bytes(), data);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(checkpoint) = Checkpoint::parse_text(text) else { return };
    let printed = checkpoint.to_text();
    assert_eq!(Checkpoint::parse_text(&printed).as_ref(), Ok(&checkpoint));
    if text.matches('\n').count() == 3 {
        assert_eq!(printed, text, "a checkpoint without extension lines does not print as parsed");
    }
});
