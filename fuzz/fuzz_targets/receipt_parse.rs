//! Receipt parsing never panics; a parsed receipt prints to text that parses
//! back to an equal receipt; and `Receipt::verify` against the fixture key
//! and entry never panics and only passes receipts for that entry's index.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_log::Receipt;
use mandate_log::note::VerifierKey;

static KEYS: LazyLock<[VerifierKey; 1]> = LazyLock::new(|| [mandate_fuzz::verifier()]);
static ENTRY: LazyLock<Vec<u8>> = LazyLock::new(mandate_fuzz::receipt_entry);

fuzz_target!(|data: &[u8]| {
    let Ok(receipt) = Receipt::parse(data) else { return };
    let printed = receipt.to_text();
    match Receipt::parse(printed.as_bytes()) {
        Ok(again) => assert_eq!(again, receipt, "a receipt's text parses to another receipt"),
        Err(error) => panic!("a receipt's own text does not parse: {error}"),
    }
    if let Ok(signed) = receipt.verify(&ENTRY, &*KEYS) {
        assert_eq!(receipt.index, mandate_fuzz::RECEIPT_INDEX);
        assert!(receipt.index < signed.checkpoint.size);
    }
});
