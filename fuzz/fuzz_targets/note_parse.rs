//! The signed-note and key parsers never panic; a parsed key prints to text
//! that parses back to the same key; and a note signed by the fixture key
//! opens again to the same text.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_log::note::{self, NOTE_BYTES_MAX, Note, SignerKey, VerifierKey};

static SIGNER: LazyLock<SignerKey> = LazyLock::new(mandate_fuzz::signer);
static KEYS: LazyLock<[VerifierKey; 1]> = LazyLock::new(|| [mandate_fuzz::verifier()]);

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = Note::parse(data) {
        let _ = parsed.verify(&*KEYS);
    }
    if let Ok(opened) = note::open(data, &*KEYS) {
        assert!(opened.text.ends_with('\n'));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = VerifierKey::parse(text) {
        assert_eq!(VerifierKey::parse(&key.to_string()).as_ref(), Ok(&key));
    }
    if let Ok(key) = SignerKey::parse(text) {
        let again = match SignerKey::parse(&key.to_private_text()) {
            Ok(again) => again,
            Err(error) => panic!("a signer key's own text does not parse: {error}"),
        };
        assert_eq!(again.verifier(), key.verifier());
    }
    // What we sign we can open, right up to the size limit.
    if let Ok(signed) = note::sign(text, &[&*SIGNER]) {
        assert!(signed.len() <= NOTE_BYTES_MAX);
        match note::open(signed.as_bytes(), &*KEYS) {
            Ok(opened) => assert_eq!(opened.text, text),
            Err(error) => panic!("a note signed by the fixture key does not open: {error}"),
        }
    }
});
