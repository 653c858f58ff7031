//! `json::parse_strict` never panics; whatever it accepts canonicalizes, the
//! canonical bytes are accepted again, and canonicalizing them changes
//! nothing (RFC 8785 output is a fixed point).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_log::json::{canonicalize, parse_strict};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_strict(data) else { return };
    let once = match canonicalize(&value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("a strictly parsed value does not canonicalize: {error}"),
    };
    let reparsed = match parse_strict(&once) {
        Ok(value) => value,
        Err(error) => panic!("canonical output is refused by parse_strict: {error}"),
    };
    let twice = match canonicalize(&reparsed) {
        Ok(bytes) => bytes,
        Err(error) => panic!("re-parsed canonical output does not canonicalize: {error}"),
    };
    assert_eq!(once, twice, "canonicalization is not idempotent");
});
