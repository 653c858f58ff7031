//! A single-pass check that bytes are already an RFC 8785 canonical entry,
//! without building a JSON tree: the fast path of log verification.
//!
//! [`scan_entry`] answers `Some` only when the slow path — [`crate::json::parse_strict`],
//! re-canonicalize, compare, then [`crate::Entry::parse`]'s field checks —
//! would accept the same bytes with the same header; for anything it is not
//! sure of (floats, escapes in keys, any error) it answers `None` and the
//! caller takes the slow path, which also words the error. The property test
//! below and the `entry_fast_path` fuzz target hold the two paths to agreement.
//!
//! Canonical form, as checked here: no whitespace; `"`, `\` and control
//! characters escaped (`\b \f \n \r \t`, otherwise `\u00xx` in lowercase) and
//! nothing else escaped; integers in shortest form within ±(2^53 − 1);
//! object keys in strictly increasing UTF-16 order (so no duplicates).

use crate::entry::{self, ENTRY_BYTES_MAX, ENTRY_VERSION};
use crate::hash::Hash;
use crate::json::{JSON_DEPTH_MAX, SAFE_INTEGER_MAX};

/// The fields log verification needs, borrowed from the entry's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader<'a> {
    /// The entry's index.
    pub index: u64,
    /// The tenant.
    pub tenant: &'a str,
    /// The leaf hash of the entry before.
    pub prev: Hash,
}

/// Checks that `bytes` are a canonical entry and returns its header, or
/// `None` when the slow path must decide.
pub fn scan_entry(bytes: &[u8]) -> Option<EntryHeader<'_>> {
    if bytes.len() > ENTRY_BYTES_MAX {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut scanner = Scanner { bytes, at: 0 };
    let fields = scanner.top_object()?;
    if scanner.at != bytes.len() {
        return None;
    }
    let [body, index, prev, tenant, time, entry_type, version] = fields;
    let raw = |range: (usize, usize)| text.get(range.0..range.1);
    if !raw(body)?.starts_with('{') || integer(raw(version)?)? != ENTRY_VERSION {
        return None;
    }
    let index = integer(raw(index)?)?;
    let tenant = plain_string(raw(tenant)?)?;
    entry::check_tenant(tenant).ok()?;
    entry::check_time(plain_string(raw(time)?)?).ok()?;
    entry::check_entry_type(plain_string(raw(entry_type)?)?).ok()?;
    let prev = Hash::from_hex(plain_string(raw(prev)?)?).ok()?;
    Some(EntryHeader { index, tenant, prev })
}

/// A non-negative integer in canonical form (the slow path reads `index` and
/// `v` with `as_u64`, so negatives are not entries).
fn integer(text: &str) -> Option<u64> {
    let digits = text.as_bytes();
    let canonical = match digits {
        [] => false,
        [b'0'] => true,
        [first, ..] => *first != b'0' && digits.len() <= 16 && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    // At most 16 digits: cannot overflow a u64.
    let value = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (value <= SAFE_INTEGER_MAX).then_some(value)
}

/// Byte equality for the short keys of entries, without a call to `memcmp`.
fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// `a < b` for short keys, without a call to `memcmp`.
fn bytes_less(a: &[u8], b: &[u8]) -> bool {
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => x < y,
        None => a.len() < b.len(),
    }
}

/// The content of a string value. Its escapes need no decoding here: every
/// field read through this (tenant, time, type, prev) refuses a backslash.
fn plain_string(raw: &str) -> Option<&str> {
    raw.strip_prefix('"')?.strip_suffix('"')
}

/// The position of the first `"`, `\` or control character, eight bytes at a
/// time (SWAR): string contents are most of an entry's bytes.
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // A byte is flagged when it is zero after the xor (a quote or a
        // backslash) or below 0x20. The lowest flag is exact; borrows can only
        // add false flags above it.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let flags = zero(v ^ (ONES * u64::from(b'"')))
            | zero(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGHS);
        if flags != 0 {
            return Some(offset + (flags.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks.remainder().iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map(|i| offset + i)
}

/// The entry's top-level fields, in canonical key order.
const FIELDS: [&[u8]; 7] = [b"body", b"index", b"prev", b"tenant", b"time", b"type", b"v"];

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The top-level object: exactly the entry's fields, each value's byte range.
    fn top_object(&mut self) -> Option<[(usize, usize); 7]> {
        let mut fields = [(0, 0); 7];
        self.eat(b'{')?;
        // Exactly the entry's fields, in FIELDS order: that is both the
        // canonical order and the set the slow path demands.
        for (i, (field, slot)) in FIELDS.iter().zip(fields.iter_mut()).enumerate() {
            if i > 0 {
                self.eat(b',')?;
            }
            if !bytes_equal(self.plain_key()?, field) {
                return None;
            }
            self.eat(b':')?;
            let start = self.at;
            self.value(1)?;
            *slot = (start, self.at);
        }
        self.eat(b'}')?;
        Some(fields)
    }

    /// A key made only of printable ASCII with no escapes (what entries use).
    fn plain_key(&mut self) -> Option<&[u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => return None,
                0x20..=0x7e => self.at += 1,
                _ => return None,
            }
        }
        let key = self.bytes.get(start..self.at)?;
        self.at += 1;
        Some(key)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string(false).map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.bytes.get(self.at..self.at + word.len())? == word).then(|| self.at += word.len())
    }

    /// Integers only; any fraction or exponent goes to the slow path.
    fn number(&mut self) -> Option<()> {
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let digits_start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.bytes.get(digits_start..self.at)?;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) || digits.is_empty() || digits.len() > 16 {
            return None;
        }
        if digits.len() > 1 && digits.first() == Some(&b'0') {
            return None;
        }
        let value = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if value > SAFE_INTEGER_MAX || (negative && value == 0) {
            return None;
        }
        Some(())
    }

    /// A canonical string. For a key (`is_key`), returns whether its content is
    /// plain ASCII without escapes (so that keys compare as bytes).
    fn string(&mut self, is_key: bool) -> Option<bool> {
        self.eat(b'"')?;
        let mut plain_ascii = true;
        loop {
            // Skip ordinary bytes in one pass; stop at a quote, a backslash or
            // a control character.
            let rest = self.bytes.get(self.at..)?;
            let run = special_byte(rest)?;
            if is_key {
                plain_ascii &= rest.get(..run)?.is_ascii();
            }
            self.at += run;
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => return Some(plain_ascii),
                b'\\' => {
                    plain_ascii = false;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// The rest of an escape after its backslash: only the forms RFC 8785
    /// writes.
    fn escape(&mut self) -> Option<()> {
        let escape = self.peek()?;
        self.at += 1;
        match escape {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                // Only control characters without a short escape.
                let hex = self.bytes.get(self.at..self.at + 4)?;
                self.at += 4;
                let [b'0', b'0', high @ (b'0' | b'1'), low] = *hex else { return None };
                let low = match low {
                    b'0'..=b'9' => low - b'0',
                    b'a'..=b'f' => low - b'a' + 10,
                    _ => return None,
                };
                let code = (high - b'0') * 16 + low;
                (!matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(())
            }
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth >= JSON_DEPTH_MAX - 1 {
            return None;
        }
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth + 1)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth >= JSON_DEPTH_MAX - 1 {
            return None;
        }
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut previous: Option<(usize, usize)> = None;
        loop {
            let start = self.at;
            // Keys with escapes or non-ASCII need UTF-16 ordering: slow path.
            if !self.string(true)? {
                return None;
            }
            let key = (start + 1, self.at - 1);
            if let Some(previous) = previous {
                let (a, b) = (self.bytes.get(previous.0..previous.1)?, self.bytes.get(key.0..key.1)?);
                if !bytes_less(a, b) {
                    return None;
                }
            }
            previous = Some(key);
            self.eat(b':')?;
            self.value(depth + 1)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn entry_with(body: Value) -> Vec<u8> {
        let Value::Object(body) = body else { panic!("not an object") };
        Entry {
            tenant: "default".into(),
            index: 42,
            time: "2026-11-22T10:00:00Z".into(),
            entry_type: "decision".into(),
            prev: Hash::digest(b"p"),
            body,
        }
        .to_canonical()
        .unwrap()
        .bytes
    }

    /// The property: the fast path never accepts what the slow path refuses,
    /// and agrees on the header when both accept.
    fn agrees(bytes: &[u8]) {
        if let Some(header) = scan_entry(bytes) {
            let entry = Entry::parse(bytes).unwrap_or_else(|error| {
                panic!("fast path accepted what the slow path refuses ({error}): {}", String::from_utf8_lossy(bytes))
            });
            assert_eq!((header.index, header.tenant, header.prev), (entry.index, entry.tenant.as_str(), entry.prev));
        }
    }

    #[test]
    fn typical_entries_take_the_fast_path() {
        let bytes = entry_with(json!({"a": [1, -2, true, null, {"b": "x\ny\u{1}é"}], "z": {}, "": []}));
        assert_eq!(scan_entry(&bytes).map(|h| h.index), Some(42));
        agrees(&bytes);
    }

    #[test]
    fn uncertain_or_invalid_entries_fall_back() {
        let base = String::from_utf8(entry_with(json!({"n": 1}))).unwrap();
        for altered in [
            base.replace(r#""n":1"#, r#""n":1.5"#),
            base.replace(r#""n":1"#, r#""n":01"#),
            base.replace(r#""n":1"#, r#""n":-0"#),
            base.replace(r#""n":1"#, r#""n":9007199254740992"#),
            base.replace(r#""n":1"#, r#""n":"\/""#),
            base.replace(r#""n":1"#, r#""n":"\u000a""#),
            base.replace(r#""n":1"#, r#""n":"\u001F""#),
            base.replace(r#""n":1"#, r#""b":1,"a":2"#),
            base.replace(r#""n":1"#, r#""a":1,"a":2"#),
            base.replace(r#"{"body""#, r#" {"body""#),
            base.replace(r#""v":1"#, r#""v":1,"w":2"#),
            base.replace(r#""v":1"#, r#""v":2"#),
            // Found by the fuzzer: a long value where an integer belongs
            // overflowed while being read as digits.
            base.replace(r#""index":42"#, r#""index":"99999999999999999999999""#),
            base.replace(r#""v":1"#, r#""v":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]"#),
        ] {
            assert_eq!(scan_entry(altered.as_bytes()), None, "{altered}");
            agrees(altered.as_bytes());
        }
    }

    proptest! {
        #[test]
        fn special_byte_finds_the_first_quote_backslash_or_control(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(special_byte(&bytes), bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20));
        }

        #[test]
        fn fast_and_slow_paths_agree_on_random_entries(body in crate::json::tests::arbitrary_json(true), cut in 0usize..600, byte in any::<u8>()) {
            let bytes = entry_with(json!({"x": body}));
            agrees(&bytes);
            // And on damaged copies of them.
            let mut damaged = bytes.clone();
            if let Some(slot) = damaged.get_mut(cut % bytes.len()) {
                *slot = byte;
            }
            agrees(&damaged);
            agrees(&bytes[..cut.min(bytes.len())]);
        }
    }
}
