//! `Entry::parse` never panics, and an entry that parses has exactly one byte
//! form: `to_canonical` gives back the very bytes it was parsed from, with
//! their leaf hash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_log::{Entry, leaf_hash};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = Entry::parse(data) else { return };
    let canonical = match entry.to_canonical() {
        Ok(canonical) => canonical,
        Err(error) => panic!("a parsed entry does not serialize: {error}"),
    };
    assert_eq!(canonical.bytes, data, "to_canonical does not reproduce the parsed bytes");
    assert_eq!(canonical.leaf_hash, leaf_hash(data));
    assert_eq!(Entry::parse(&canonical.bytes).as_ref(), Ok(&entry));
});
