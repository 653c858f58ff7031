//! A row as a store keeps it (`mandate_store::packed`) unpacks or is refused
//! as corrupt, whatever its bytes, and never panics; and any body a draft
//! can hold packs and unpacks to the very bytes of its entry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_log::{CanonicalBody, EntryHead, Hash};
use mandate_store::{StoreError, packed};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match packed::canonical_bytes("default", 7, data.to_vec()) {
        Ok(_) | Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("a row is refused with {other:?}, not as corrupt"),
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else { return };
    let Ok(body) = CanonicalBody::new(&body) else { return };
    let head = EntryHead {
        tenant: "default",
        index: 7,
        time: "2026-12-03T07:43:14.147830Z",
        entry_type: "decision",
        prev: Hash([9; 32]),
    };
    let Ok(entry) = head.encode(&body) else { return };
    let stored = packed::stored_form(entry.bytes.clone(), &head, packed::compress_body(body.as_bytes()).as_deref());
    match packed::canonical_bytes("default", 7, stored) {
        Ok(bytes) => assert_eq!(bytes, entry.bytes),
        Err(error) => panic!("a packed entry does not unpack: {error}"),
    }
});
