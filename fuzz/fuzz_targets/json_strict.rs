//! `json::parse_strict` never panics; whatever it accepts canonicalizes to the
//! same bytes as the independent `serde_json_canonicalizer`; the canonical
//! bytes are accepted again; and canonicalizing them changes nothing (RFC 8785
//! output is a fixed point).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_log::json::{canonicalize, parse_strict};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_strict(data) else { return };
    let once = match canonicalize(&value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("a strictly parsed value does not canonicalize: {error}"),
    };
    match serde_json_canonicalizer::to_vec(&value) {
        Ok(oracle) => assert!(
            once == oracle,
            "canonical bytes differ from serde_json_canonicalizer's:\n  ours:   {}\n  oracle: {}",
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&oracle)
        ),
        Err(error) => panic!("serde_json_canonicalizer refuses a strictly parsed value: {error}"),
    }
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
