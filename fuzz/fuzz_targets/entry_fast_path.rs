//! The verifier's fast path never accepts what the slow path refuses:
//! whenever `canonical::scan_entry` returns a header, `Entry::parse` accepts
//! the same bytes and reads the same index, tenant and `prev`. (`None` is
//! always allowed: it only sends the line to the slow path.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_log::Entry;
use mandate_log::canonical::scan_entry;

fuzz_target!(|data: &[u8]| {
    let Some(header) = scan_entry(data) else { return };
    let entry = match Entry::parse(data) {
        Ok(entry) => entry,
        Err(error) => panic!("the fast path accepts an entry the slow path refuses: {error}"),
    };
    assert_eq!(header.index, entry.index);
    assert_eq!(header.tenant, entry.tenant);
    assert_eq!(header.prev, entry.prev);
});
