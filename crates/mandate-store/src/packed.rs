//! How an entry is kept in a store: packed to about a fifth of its bytes.
//!
//! An entry's canonical bytes are its body, which the caller wrote, spliced
//! into a head of index, `prev`, tenant, time, type and version
//! ([`EntryHead::splice`]). A store keeps the parts instead, with the body
//! compressed by zstd against a built-in dictionary of typical bodies
//! ([`DICTIONARY_2`]): a decision of `mandate bench` (1,145 bytes) is kept
//! in about 300. The index is the row's key and the tenant the log's, so
//! only `prev`, time and type are kept beside the body; reading puts the
//! same bytes back together, so exports, proofs and verification see
//! exactly what was hashed.
//!
//! ```text
//! stored   := plain | packed
//! plain    := the canonical entry bytes, which begin with `{` (every entry
//!             written before version 5 of the SQLite schema, or 3 of the
//!             PostgreSQL one, and any entry that packing would not shrink)
//! packed   := tag  prev (32 bytes)  u8 time length  time  u8 type length  type
//!             zstd frame of the body, compressed with the tag's dictionary
//! tag      := 0x01 (dictionary 1, rows written before 2026-12-04)
//!           | 0x02 (dictionary 2, what is written now)
//! ```
//!
//! Nothing here is trusted on the way back: a packed row that was altered
//! unpacks into other bytes (or into none, which is [`StoreError::Corrupt`]
//! naming the entry), and the leaf hash kept beside it, the next entry's
//! `prev` and the signed checkpoints then locate the change as for a plain
//! row. (Rarely, an altered frame decodes to the very same bytes, as two
//! frames can: then nothing in the log changed.)
//!
//! The body is compressed when the draft is made, on the caller's thread
//! (about 1.3 µs for a decision), so the single writer only copies the parts.
//!
//! Public for tools that read a store's rows themselves (and for the
//! `stored_entry` fuzz target); the stores are its only writers.

use std::cell::RefCell;
use std::sync::LazyLock;

use mandate_log::entry::ENTRY_BYTES_MAX;
use mandate_log::{EntryHead, Hash};
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::{StoreError, corrupt};

/// The first byte of a packed row names its layout and its dictionary,
/// `DICTIONARIES[tag - 1]`; a plain row begins with `{`. Tag 1: rows
/// written before 2026-12-04.
const PACKED_1: u8 = 0x01;
/// The tag new rows are packed with.
const PACKED_2: u8 = 0x02;

/// Dictionary 1: bodies of every common entry type, as `mandate demo` and
/// `mandate bench` wrote them on 2026-12-03, one per line, the most common
/// (a decision) last, where zstd reaches it most cheaply. Rows packed with
/// it can only be read with these very bytes: never edit this file (a test
/// pins its hash); a better dictionary is a new file under a new tag.
const DICTIONARY_1: &[u8] = include_bytes!("entry-dictionary-1.jsonl");

/// Dictionary 2: dictionary 1's bytes as content, with zstd's entropy
/// tables in front, made once by `ZDICT_finalizeDictionary` (zstd 1.5.7)
/// with dictionary 1's own lines as the samples, `compressionLevel` -3 and
/// `dictID` 2. Dictionary 1 was content only, so zstd built three FSE
/// tables for every body it compressed; with tables in the dictionary it
/// reuses them. A decision's body of 943 bytes: 1.85 µs to compress
/// against 1.25 µs, kept in 238 bytes against 231 (`cargo bench -p
/// mandate-store --bench store -- pack`; docs/benchmarks.md, "Entries kept
/// packed"). Frozen like dictionary 1.
const DICTIONARY_2: &[u8] = include_bytes!("entry-dictionary-2.zdict");

/// zstd's level for bodies. A fast (negative) level leaves literals
/// without entropy coding: about 1.4 µs to compress a body and 0.2 µs to
/// read it back, against 3.5 µs and 1.5 µs at level 1, for rows about a
/// quarter longer (hex digests are what entropy coding would halve).
/// Reading is what exports and verification from the store pay per entry.
const LEVEL: i32 = -3;

/// The dictionaries, by tag − 1.
const DICTIONARIES: [&[u8]; 2] = [DICTIONARY_1, DICTIONARY_2];

static ENCODER: LazyLock<EncoderDictionary<'static>> = LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_2, LEVEL));
static DECODERS: LazyLock<[DecoderDictionary<'static>; 2]> =
    LazyLock::new(|| DICTIONARIES.map(DecoderDictionary::copy));

thread_local! {
    // A context per thread and dictionary: zstd's contexts are reused, not shared.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSORS: RefCell<[Option<Decompressor<'static>>; 2]> = const { RefCell::new([None, None]) };
}

/// `body` (canonical JSON) compressed with dictionary 2, or `None` when
/// zstd fails, which leaves the entry to be stored plain.
pub fn compress_body(body: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(Compressor::with_prepared_dictionary(&ENCODER).ok()?);
        }
        cell.as_mut()?.compress(body).ok()
    })
}

/// What a store keeps for the entry `canonical` made of `head` around a
/// body that compressed to `compressed`: packed if that is shorter.
pub fn stored_form(canonical: Vec<u8>, head: &EntryHead<'_>, compressed: Option<&[u8]>) -> Vec<u8> {
    let (Some(compressed), Ok(time_len), Ok(type_len)) =
        (compressed, u8::try_from(head.time.len()), u8::try_from(head.entry_type.len()))
    else {
        return canonical;
    };
    let packed_len = 1 + 32 + 1 + head.time.len() + 1 + head.entry_type.len() + compressed.len();
    if packed_len >= canonical.len() {
        return canonical;
    }
    let mut packed = Vec::with_capacity(packed_len);
    packed.push(PACKED_2);
    packed.extend_from_slice(head.prev.as_bytes());
    packed.push(time_len);
    packed.extend_from_slice(head.time.as_bytes());
    packed.push(type_len);
    packed.extend_from_slice(head.entry_type.as_bytes());
    packed.extend_from_slice(compressed);
    packed
}

/// The canonical bytes of entry `index` of `tenant`'s log from what the
/// store kept.
pub fn canonical_bytes(tenant: &str, index: u64, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let dictionary = match stored.first() {
        Some(b'{') => return Ok(stored),
        Some(&tag @ (PACKED_1 | PACKED_2)) => usize::from(tag - 1),
        _ => return Err(corrupt(format!("entry {index} is kept in an unknown form"))),
    };
    unpack(tenant, index, stored.get(1..).unwrap_or_default(), dictionary)
        .ok_or_else(|| corrupt(format!("entry {index} is kept in a form that does not unpack")))
}

/// A packed row after its tag, whose body was compressed with
/// `DICTIONARIES[dictionary]`.
fn unpack(tenant: &str, index: u64, packed: &[u8], dictionary: usize) -> Option<Vec<u8>> {
    let (prev, rest) = packed.split_first_chunk::<32>()?;
    let (time, rest) = length_prefixed(rest)?;
    let (entry_type, compressed) = length_prefixed(rest)?;
    if compressed.is_empty() {
        return None;
    }
    let body = DECOMPRESSORS.with(|cells| {
        let mut cells = cells.borrow_mut();
        let decompressor = match cells.get_mut(dictionary)? {
            Some(decompressor) => decompressor,
            empty => empty.insert(Decompressor::with_prepared_dictionary(DECODERS.get(dictionary)?).ok()?),
        };
        decompressor.decompress(compressed, ENTRY_BYTES_MAX).ok()
    })?;
    let head = EntryHead {
        tenant,
        index,
        time: std::str::from_utf8(time).ok()?,
        entry_type: std::str::from_utf8(entry_type).ok()?,
        prev: Hash(*prev),
    };
    head.splice(&body).ok()
}

/// A `u8` length, that many bytes, and the rest.
fn length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use mandate_log::entry::CanonicalBody;
    use serde_json::json;

    use super::*;

    fn head<'a>(time: &'a str, entry_type: &'a str) -> EntryHead<'a> {
        EntryHead { tenant: "acme", index: 41, time, entry_type, prev: Hash([7; 32]) }
    }

    fn decision_body() -> CanonicalBody {
        let body = json!({
            "approval": null, "chain": ["agent:buyer", "user:alice"], "decision": "allow",
            "decision_id": "019ad6b2-0000-7000-8000-000000000001",
            "policies": {"determining": ["permit-team"], "errors": []}, "reasons": [],
            "request": {"action": "payments.charge", "identity": "agent:buyer", "resource": "merchant://books/1"},
        });
        CanonicalBody::new(body.as_object().unwrap()).unwrap()
    }

    #[test]
    fn the_dictionaries_are_the_ones_rows_were_packed_with() {
        assert_eq!(
            Hash::digest(DICTIONARY_1).to_hex(),
            "385d5cf9a86c0a973ecc64f2546e5777433345b8b2ea995853f8fc74eee48ac5"
        );
        assert_eq!(
            Hash::digest(DICTIONARY_2).to_hex(),
            "ce3f873ccc94944e03d916cd618bb215cf138aa34542ebe311a692d21d63d6bd"
        );
        // Dictionary 2 carries dictionary 1 whole, after its tables.
        assert!(DICTIONARY_2.ends_with(DICTIONARY_1));
    }

    /// A decision packed as rows were before dictionary 2: tag 1, and the
    /// body compressed against dictionary 1.
    fn packed_with_dictionary_1() -> (Vec<u8>, Vec<u8>) {
        let body = decision_body();
        let head = head("2026-12-03T07:43:14.147830Z", "decision");
        let canonical = head.encode(&body).unwrap().bytes;
        let encoder = EncoderDictionary::copy(DICTIONARY_1, LEVEL);
        let compressed = Compressor::with_prepared_dictionary(&encoder).unwrap().compress(body.as_bytes()).unwrap();
        let mut stored = stored_form(canonical.clone(), &head, Some(&compressed));
        stored[0] = PACKED_1;
        (canonical, stored)
    }

    #[test]
    fn rows_packed_with_dictionary_1_still_unpack() {
        let (canonical, stored) = packed_with_dictionary_1();
        assert_eq!(canonical_bytes("acme", 41, stored.clone()).unwrap(), canonical);
        // Under the other tag: a frame made with dictionary 2 names it (and
        // uses its tables), so dictionary 1 cannot read it; a frame made with
        // dictionary 1 reads the same under 2, which holds 1's bytes whole.
        let (_, mut current) = packed_decision();
        current[0] = PACKED_1;
        assert!(matches!(canonical_bytes("acme", 41, current), Err(StoreError::Corrupt { .. })));
        let mut old = stored;
        old[0] = PACKED_2;
        assert_eq!(canonical_bytes("acme", 41, old).unwrap(), canonical);
    }

    /// A decision entry's canonical bytes and what a store keeps of them.
    fn packed_decision() -> (Vec<u8>, Vec<u8>) {
        let body = decision_body();
        let head = head("2026-12-03T07:43:14.147830Z", "decision");
        let canonical = head.encode(&body).unwrap().bytes;
        let stored = stored_form(canonical.clone(), &head, compress_body(body.as_bytes()).as_deref());
        (canonical, stored)
    }

    #[test]
    fn a_packed_entry_unpacks_to_its_canonical_bytes() {
        let (canonical, stored) = packed_decision();
        assert_eq!(stored[0], PACKED_2);
        assert!(stored.len() * 2 < canonical.len(), "{} of {}", stored.len(), canonical.len());
        assert_eq!(canonical_bytes("acme", 41, stored).unwrap(), canonical);
    }

    #[test]
    fn an_entry_that_cannot_be_packed_is_kept_plain() {
        let body = decision_body();
        let head = head("2026-12-03T07:43:14Z", "decision");
        let canonical = head.encode(&body).unwrap().bytes;
        // zstd failed. (Times and names always fit their length bytes.)
        assert_eq!(stored_form(canonical.clone(), &head, None), canonical);
        assert_eq!(canonical_bytes("acme", 41, canonical.clone()).unwrap(), canonical);
    }

    #[test]
    fn an_altered_packed_row_unpacks_to_other_bytes_or_is_named_corrupt() {
        for (canonical, stored) in [packed_decision(), packed_with_dictionary_1()] {
            each_alteration_is_seen(&canonical, &stored);
        }
    }

    fn each_alteration_is_seen(canonical: &[u8], stored: &[u8]) {
        let mut no_ops = 0;
        for position in 0..stored.len() {
            for flip in [0x01, 0x80] {
                let mut altered = stored.to_vec();
                altered[position] ^= flip;
                match canonical_bytes("acme", 41, altered) {
                    // Other bytes are what the leaf hash kept beside the row
                    // catches. The same bytes are no change to the log: two
                    // frames can decode alike (a match may point at either
                    // of two equal stretches of the dictionary).
                    Ok(bytes) => no_ops += usize::from(bytes == canonical),
                    Err(StoreError::Corrupt { reason }) => assert!(reason.contains("entry 41"), "{reason}"),
                    Err(other) => panic!("{other:?}"),
                }
            }
        }
        // The head is kept plain and the frame is dense: nearly every flip shows.
        assert!(no_ops <= 2, "{no_ops} flips read back as the same entry");
        for cut in 0..stored.len() {
            let unpacked = canonical_bytes("acme", 41, stored[..cut].to_vec());
            assert!(unpacked.is_err(), "cut at {cut}: {unpacked:?}");
        }
    }
}
