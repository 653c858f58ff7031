//! I-JSON input (RFC 7493) and RFC 8785 canonical output.
//!
//! Mandate hashes JSON, so two parsers must never read one document two ways.
//! Input is therefore held to I-JSON: duplicate object keys, numbers beyond
//! the doubles' exact-integer range (±(2^53 − 1)) and lone surrogates are
//! refused rather than silently resolved. Output is the RFC 8785 (JCS)
//! canonical form: one document, one byte string.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest integer magnitude a double holds exactly: 2^53 − 1.
pub const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// The deepest nesting of arrays and objects accepted.
pub const JSON_DEPTH_MAX: usize = 64;

/// Why a JSON document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all, or trailing bytes after the document.
    #[error("invalid JSON: {message}")]
    Syntax {
        /// The parser's message, with line and column.
        message: String,
    },
    /// An object names one key twice (RFC 7493 §2.3).
    #[error("duplicate key `{key}`")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A number outside ±(2^53 − 1) (RFC 7493 §2.2).
    #[error("number `{number}` is beyond ±(2^53 - 1)")]
    NumberOutOfRange {
        /// The number as parsed.
        number: String,
    },
    /// Arrays and objects nested deeper than [`JSON_DEPTH_MAX`].
    #[error("JSON nested deeper than {JSON_DEPTH_MAX} levels")]
    TooDeep,
}

/// Parses one I-JSON document.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let violation = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed { depth: 0, violation: &violation }.deserialize(&mut deserializer);
    let result = parsed.and_then(|value| deserializer.end().map(|()| value));
    match (result, violation.take()) {
        (_, Some(violation)) => Err(violation),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(JsonError::Syntax { message: error.to_string() }),
    }
}

/// The RFC 8785 canonical bytes of a value.
///
/// Written here rather than taken from `serde_json_canonicalizer` because it
/// is on every append's path and the crate allocates per key and per value
/// (it measured ~10x slower on a decision entry; see docs/benchmarks.md). The
/// crate stays as the test oracle: a property test holds the two to the same
/// bytes on random values.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value)?;
    Ok(out)
}

/// The RFC 8785 canonical bytes of an object.
pub fn canonicalize_object(object: &Map<String, Value>) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, object)?;
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), JsonError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number)?,
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(object) => write_object(out, object)?,
    }
    Ok(())
}

fn write_object(out: &mut Vec<u8>, object: &Map<String, Value>) -> Result<(), JsonError> {
    // Sort here whatever order the map keeps: serde_json's `preserve_order`
    // feature (which any crate in the build may turn on) keeps insertion
    // order. RFC 8785 sorts by UTF-16 code units, which equals byte order
    // unless a key holds a character at or above U+E000 (surrogate pairs sort
    // below U+E000..U+FFFF in UTF-16).
    let mut entries: Vec<(&String, &Value)> = object.iter().collect();
    if entries.iter().any(|(key, _)| key.chars().any(|c| c >= '\u{e000}')) {
        entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    } else if !entries.is_sorted_by(|(a, _), (b, _)| a <= b) {
        entries.sort_unstable_by_key(|(key, _)| *key);
    }
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_number(out: &mut Vec<u8>, number: &Number) -> Result<(), JsonError> {
    // Integers a double holds exactly print as themselves; everything else is
    // a double printed as ECMAScript's Number.prototype.toString does
    // (RFC 8785 §3.2.2.3), which is what JSON numbers mean to RFC 8785.
    match (number.as_u64(), number.as_i64()) {
        (Some(n), _) if n <= SAFE_INTEGER_MAX + 1 => out.extend_from_slice(n.to_string().as_bytes()),
        (_, Some(n)) if n.unsigned_abs() <= SAFE_INTEGER_MAX + 1 => out.extend_from_slice(n.to_string().as_bytes()),
        _ => {
            let n = number
                .as_f64()
                .filter(|n| n.is_finite())
                .ok_or_else(|| JsonError::NumberOutOfRange { number: number.to_string() })?;
            out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
        }
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(clean_from..i).unwrap_or_default());
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(bytes.get(clean_from..).unwrap_or_default());
    out.push(b'"');
}

/// Checks that a value built in code (not parsed) obeys I-JSON's number range,
/// so that what Mandate writes it would also accept back.
pub fn check_numbers(value: &Value) -> Result<(), JsonError> {
    match value {
        Value::Number(number) => check_number(number),
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

fn check_number(number: &Number) -> Result<(), JsonError> {
    let in_range = if let Some(n) = number.as_u64() {
        n <= SAFE_INTEGER_MAX
    } else if let Some(n) = number.as_i64() {
        n.unsigned_abs() <= SAFE_INTEGER_MAX
    } else {
        number.as_f64().is_some_and(|n| n.is_finite() && n.abs() <= SAFE_INTEGER_MAX as f64)
    };
    if in_range { Ok(()) } else { Err(JsonError::NumberOutOfRange { number: number.to_string() }) }
}

/// Deserializes a [`Value`] while recording the first I-JSON violation.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    depth: usize,
    violation: &'a Cell<Option<JsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, violation: JsonError) -> E {
        let message = violation.to_string();
        self.violation.set(Some(violation));
        E::custom(message)
    }

    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= JSON_DEPTH_MAX {
            return Err(self.fail(JsonError::TooDeep));
        }
        Ok(StrictSeed { depth: self.depth + 1, violation: self.violation })
    }

    fn number<E: de::Error>(&self, number: Number) -> Result<Value, E> {
        check_number(&number).map_err(|violation| self.fail(violation))?;
        Ok(Value::Number(number))
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.number(Number::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.number(Number::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(number) => self.number(number),
            None => Err(self.fail(JsonError::NumberOutOfRange { number: v.to_string() })),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // A container at the depth limit is refused even when empty, so that
        // arrays and objects obey one rule.
        let nested = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(nested)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let nested = self.nested()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateKey { key: crate::hash::clip(&key) }));
            }
            let value = map.next_value_seed(nested)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canonical(text: &str) -> String {
        String::from_utf8(canonicalize(&parse_strict(text.as_bytes()).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn rfc8785_vectors() {
        // RFC 8785 §3.2.2 and Appendix B examples.
        assert_eq!(
            canonical(
                r#"{"numbers": [333333333.33333329, 1E3, 4.50, 2e-3, 0.000000000000000000000000001], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#
            ),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1000,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        // Keys sort by UTF-16 code units, not by UTF-8 bytes.
        assert_eq!(
            canonical("{\"\u{20ac}\":1,\"\\r\":2,\"\u{1f600}\":3,\"1\":4,\"\u{80}\":5,\"\u{fb33}\":6}"),
            "{\"\\r\":2,\"1\":4,\"\u{80}\":5,\"\u{20ac}\":1,\"\u{1f600}\":3,\"\u{fb33}\":6}"
        );
        assert_eq!(canonical("-0"), "0");
        assert_eq!(canonical("1.0e2"), "100");
        assert_eq!(canonical("[1e-7, 123456789012, 0.1]"), "[1e-7,123456789012,0.1]");
    }

    #[test]
    fn rfc8785_appendix_b_numbers() {
        // IEEE 754 bit patterns and their canonical text, from RFC 8785 Appendix B.
        let vectors: [(u64, &str); 24] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in vectors {
            let value = Value::from(f64::from_bits(bits));
            assert_eq!(String::from_utf8(canonicalize(&value).unwrap()).unwrap(), expected, "{bits:#018x}");
        }
    }

    #[test]
    fn canonicalization_is_idempotent() {
        let once = canonical(r#"{ "b": [1, 2.5, "x"], "a": {"z": null, "y": true} }"#);
        assert_eq!(canonical(&once), once);
    }

    /// Random JSON, with strings and keys full of what canonical form must
    /// escape or sort specially. With `safe_numbers`, numbers stay within
    /// I-JSON's range, so that the value could be an entry's.
    pub(crate) fn arbitrary_json(safe_numbers: bool) -> impl Strategy<Value = Value> {
        let safe = -(SAFE_INTEGER_MAX as i64)..=SAFE_INTEGER_MAX as i64;
        let number = if safe_numbers {
            prop_oneof![
                safe.prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite() && f.abs() < 1e15).prop_map(Value::from),
            ]
            .boxed()
        } else {
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ]
            .boxed()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            "[\\PC\u{0}-\u{1f}\u{7f}\u{2028}\u{fffd}\u{e000}\u{1F600}\"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\u{e9}\u{1F600}\u{fb33}\u{e000}\u{0}\"]{0,4}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// serde_json_canonicalizer is the independent oracle for RFC 8785.
        #[test]
        fn canonical_bytes_match_the_reference_implementation(value in arbitrary_json(false)) {
            let ours = canonicalize(&value).unwrap();
            prop_assert_eq!(&ours, &serde_json_canonicalizer::to_vec(&value).unwrap());
            // And what we write, we read back to the same value (idempotent).
            if check_numbers(&value).is_ok() {
                prop_assert_eq!(canonicalize(&parse_strict(&ours).unwrap()).unwrap(), ours);
            }
        }
    }

    #[test]
    fn keys_are_sorted_whatever_order_the_map_keeps() {
        // Built in reverse: with serde_json's `preserve_order` the map keeps it.
        let mut object = Map::new();
        for key in ["z", "b", "a", "\u{e000}", "\u{1f600}"] {
            object.insert(key.to_owned(), Value::from(1));
        }
        let text = String::from_utf8(canonicalize_object(&object).unwrap()).unwrap();
        assert_eq!(text, "{\"a\":1,\"b\":1,\"z\":1,\"\u{1f600}\":1,\"\u{e000}\":1}");
        let ascii: Map<String, Value> =
            ["z", "b", "a"].into_iter().map(|key| (key.to_owned(), Value::from(1))).collect();
        assert_eq!(canonicalize_object(&ascii).unwrap(), b"{\"a\":1,\"b\":1,\"z\":1}");
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(parse_strict(br#"{"a":1,"a":2}"#), Err(JsonError::DuplicateKey { key: "a".into() }));
        assert!(matches!(parse_strict(br#"{"x":[{"b":1,"b":1}]}"#), Err(JsonError::DuplicateKey { .. })));
    }

    #[test]
    fn numbers_beyond_safe_integers_are_refused() {
        assert!(parse_strict(b"9007199254740991").is_ok());
        assert!(parse_strict(b"-9007199254740991").is_ok());
        for text in ["9007199254740992", "-9007199254740992", "1e20", "18446744073709551616", "1e400"] {
            assert!(parse_strict(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn lone_surrogates_and_junk_are_refused() {
        assert!(matches!(parse_strict(br#""\ud800""#), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse_strict(br#""\udc00x""#), Err(JsonError::Syntax { .. })));
        assert!(parse_strict(br#""\ud83d\ude00""#).is_ok());
        assert!(matches!(parse_strict(b"\xff\xfe"), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse_strict(b"{} {}"), Err(JsonError::Syntax { .. })));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(JSON_DEPTH_MAX + 1) + &"]".repeat(JSON_DEPTH_MAX + 1);
        assert_eq!(parse_strict(deep.as_bytes()), Err(JsonError::TooDeep));
        let ok = "[".repeat(JSON_DEPTH_MAX) + &"]".repeat(JSON_DEPTH_MAX);
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }
}
