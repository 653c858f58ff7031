//! Log entries (SPEC §5): one JSON object per change or decision, stored and
//! exported as its RFC 8785 canonical bytes.
//!
//! ```text
//! {"body":{…},"index":N,"prev":"<hex leaf hash of entry N-1>","tenant":"…","time":"…Z","type":"…","v":1}
//! ```
//!
//! An entry is parsed, never merely validated: [`Entry::parse`] accepts only
//! bytes that are already canonical, so an entry that parses has exactly one
//! byte form and one leaf hash.

use serde_json::{Map, Value};

use crate::hash::{Hash, HashParseError, clip, leaf_hash};
use crate::json::{self, JsonError};

/// The format version written in every entry's `v`.
pub const ENTRY_VERSION: u64 = 1;

/// The largest canonical entry, in bytes.
pub const ENTRY_BYTES_MAX: usize = 65_535;

/// The longest `type` and `tenant`, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// The fields of an entry, in canonical order.
const FIELDS: [&str; 7] = ["body", "index", "prev", "tenant", "time", "type", "v"];

/// One log entry, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The tenant whose log this is.
    pub tenant: String,
    /// The position in the log, from 0, gapless.
    pub index: u64,
    /// When the entry was appended: RFC 3339 in UTC, ending in `Z`.
    pub time: String,
    /// What happened: `identity.created`, `decision`, … (lowercase, dotted).
    pub entry_type: String,
    /// The leaf hash of entry `index - 1`, or [`Hash::ZERO`] for entry 0.
    pub prev: Hash,
    /// The entry's content.
    pub body: Map<String, Value>,
}

/// An entry's canonical bytes with its leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEntry {
    /// The RFC 8785 bytes (no trailing newline).
    pub bytes: Vec<u8>,
    /// `SHA-256(0x00 || bytes)`.
    pub leaf_hash: Hash,
}

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Longer than [`ENTRY_BYTES_MAX`].
    #[error("entry is {bytes} bytes, more than the {ENTRY_BYTES_MAX} allowed")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Not I-JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// Valid JSON, but not in its RFC 8785 canonical form.
    #[error("entry is not in RFC 8785 canonical form")]
    NotCanonical,
    /// Not a JSON object.
    #[error("entry is not a JSON object")]
    NotAnObject,
    /// A field is missing.
    #[error("entry has no `{field}` field")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field that entries do not have.
    #[error("entry has an unknown field `{field}`")]
    UnknownField {
        /// The field, clipped.
        field: String,
    },
    /// A field has the wrong type or shape.
    #[error("entry field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `v` is not a version this code reads.
    #[error("entry version {version} is not supported (expected {ENTRY_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u64,
    },
}

/// An entry body already in canonical form: made once, on the caller's
/// thread, so that the log's single writer only splices bytes and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBody(Vec<u8>);

impl CanonicalBody {
    /// Checks the body's numbers (I-JSON) and writes its RFC 8785 bytes.
    pub fn new(body: &Map<String, Value>) -> Result<CanonicalBody, EntryError> {
        body.values().try_for_each(json::check_numbers)?;
        let bytes = json::canonicalize_object(body)?;
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryError::TooLarge { bytes: bytes.len() });
        }
        Ok(CanonicalBody(bytes))
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Everything of an entry but its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHead<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The index.
    pub index: u64,
    /// RFC 3339 UTC time.
    pub time: &'a str,
    /// The entry type.
    pub entry_type: &'a str,
    /// The leaf hash of the entry before.
    pub prev: Hash,
}

impl EntryHead<'_> {
    /// The canonical bytes and leaf hash of the entry with this head and body.
    pub fn encode(&self, body: &CanonicalBody) -> Result<CanonicalEntry, EntryError> {
        let bytes = self.splice(&body.0)?;
        Ok(CanonicalEntry { leaf_hash: leaf_hash(&bytes), bytes })
    }

    /// The bytes of the entry with this head around `body`, which must be a
    /// canonical JSON object (a store that kept only an entry's parts puts
    /// it back together with this; if the parts were altered, so are the
    /// bytes, and verification says where).
    pub fn splice(&self, body: &[u8]) -> Result<Vec<u8>, EntryError> {
        check_name("tenant", self.tenant)?;
        check_name("type", self.entry_type)?;
        check_time(self.time)?;
        if self.index > json::SAFE_INTEGER_MAX {
            return Err(invalid("index", "beyond 2^53 - 1"));
        }
        // The fields were just checked to hold nothing that canonical form
        // escapes, and the keys are written in RFC 8785 order.
        let mut bytes = Vec::with_capacity(body.len() + 220);
        bytes.extend_from_slice(b"{\"body\":");
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b",\"index\":");
        bytes.extend_from_slice(self.index.to_string().as_bytes());
        bytes.extend_from_slice(b",\"prev\":\"");
        bytes.extend_from_slice(self.prev.to_hex().as_bytes());
        bytes.extend_from_slice(b"\",\"tenant\":\"");
        bytes.extend_from_slice(self.tenant.as_bytes());
        bytes.extend_from_slice(b"\",\"time\":\"");
        bytes.extend_from_slice(self.time.as_bytes());
        bytes.extend_from_slice(b"\",\"type\":\"");
        bytes.extend_from_slice(self.entry_type.as_bytes());
        bytes.extend_from_slice(b"\",\"v\":1}");
        const _: () = assert!(ENTRY_VERSION == 1, "the literal above writes version 1");
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryError::TooLarge { bytes: bytes.len() });
        }
        Ok(bytes)
    }
}

impl Entry {
    /// The canonical bytes and leaf hash of this entry.
    pub fn to_canonical(&self) -> Result<CanonicalEntry, EntryError> {
        let head = EntryHead {
            tenant: &self.tenant,
            index: self.index,
            time: &self.time,
            entry_type: &self.entry_type,
            prev: self.prev,
        };
        head.encode(&CanonicalBody::new(&self.body)?)
    }

    /// Parses an entry from its canonical bytes (without a trailing newline).
    pub fn parse(bytes: &[u8]) -> Result<Entry, EntryError> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryError::TooLarge { bytes: bytes.len() });
        }
        let value = json::parse_strict(bytes)?;
        if json::canonicalize(&value)? != bytes {
            return Err(EntryError::NotCanonical);
        }
        let Value::Object(mut object) = value else { return Err(EntryError::NotAnObject) };
        if let Some(field) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(EntryError::UnknownField { field: clip(field) });
        }
        let version = take_u64(&mut object, "v")?;
        if version != ENTRY_VERSION {
            return Err(EntryError::UnsupportedVersion { version });
        }
        let tenant = take_string(&mut object, "tenant")?;
        check_name("tenant", &tenant)?;
        let entry_type = take_string(&mut object, "type")?;
        check_name("type", &entry_type)?;
        let time = take_string(&mut object, "time")?;
        check_time(&time)?;
        let index = take_u64(&mut object, "index")?;
        let prev = Hash::from_hex(&take_string(&mut object, "prev")?)
            .map_err(|HashParseError { .. }| invalid("prev", "not 64 lowercase hex digits"))?;
        let Value::Object(body) = take(&mut object, "body")? else {
            return Err(invalid("body", "not a JSON object"));
        };
        Ok(Entry { tenant, index, time, entry_type, prev, body })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EntryError {
    EntryError::InvalidField { field, reason: reason.into() }
}

fn take(object: &mut Map<String, Value>, field: &'static str) -> Result<Value, EntryError> {
    object.remove(field).ok_or(EntryError::MissingField { field })
}

fn take_string(object: &mut Map<String, Value>, field: &'static str) -> Result<String, EntryError> {
    match take(object, field)? {
        Value::String(text) => Ok(text),
        _ => Err(invalid(field, "not a string")),
    }
}

fn take_u64(object: &mut Map<String, Value>, field: &'static str) -> Result<u64, EntryError> {
    take(object, field)?.as_u64().ok_or_else(|| invalid(field, "not a non-negative integer"))
}

/// Checks a tenant name as entries hold it: 1–128 bytes of `a-z0-9._-:/@`.
pub fn check_tenant(name: &str) -> Result<(), EntryError> {
    check_name("tenant", name)
}

/// Checks an entry type as entries hold it: the same alphabet as tenants.
pub fn check_entry_type(name: &str) -> Result<(), EntryError> {
    check_name("type", name)
}

/// Tenant names and entry types: 1–128 bytes of `a-z0-9._-` (and `:` `/` `@`
/// for tenants' sake), so that they read the same in every tool.
fn check_name(field: &'static str, name: &str) -> Result<(), EntryError> {
    let allowed = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':' | b'/' | b'@');
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.as_bytes().iter().all(allowed) {
        return Err(invalid(field, format!("`{}` is not 1-{NAME_BYTES_MAX} of a-z 0-9 . _ - : / @", clip(name))));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: RFC 3339 in UTC, the one spelling of a
/// time that sorts as text.
pub fn check_time(time: &str) -> Result<(), EntryError> {
    let error = || invalid("time", format!("`{}` is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.fff]Z)", clip(time)));
    let bytes = time.as_bytes();
    let (Some(head), Some(rest)) = (bytes.get(..19), bytes.get(19..)) else { return Err(error()) };
    let shape_ok = head.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 => *b == b'T',
        13 | 16 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    let fraction_ok = match rest {
        [b'Z'] => true,
        [b'.', digits @ .., b'Z'] => (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !shape_ok || !fraction_ok {
        return Err(error());
    }
    let number = |range: std::ops::Range<usize>| -> u32 {
        head.get(range).unwrap_or_default().iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (month, day, hour, minute, second) =
        (number(5..7), number(8..10), number(11..13), number(14..16), number(17..19));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sample() -> Entry {
        let Value::Object(body) = json!({"id": "user:alice", "kind": "human", "n": 3}) else { unreachable!() };
        Entry {
            tenant: "default".into(),
            index: 0,
            time: "2026-11-22T10:00:00.123Z".into(),
            entry_type: "identity.created".into(),
            prev: Hash::ZERO,
            body,
        }
    }

    #[test]
    fn canonical_bytes_round_trip() {
        let entry = sample();
        let canonical = entry.to_canonical().unwrap();
        assert_eq!(
            String::from_utf8(canonical.bytes.clone()).unwrap(),
            format!(
                r#"{{"body":{{"id":"user:alice","kind":"human","n":3}},"index":0,"prev":"{}","tenant":"default","time":"2026-11-22T10:00:00.123Z","type":"identity.created","v":1}}"#,
                "0".repeat(64)
            )
        );
        assert_eq!(canonical.leaf_hash, leaf_hash(&canonical.bytes));
        assert_eq!(Entry::parse(&canonical.bytes).unwrap(), entry);
    }

    #[test]
    fn non_canonical_and_malformed_entries_are_refused() {
        let bytes = sample().to_canonical().unwrap().bytes;
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(Entry::parse(format!(" {text}").as_bytes()), Err(EntryError::NotCanonical));
        assert_eq!(Entry::parse(text.replace(r#""n":3"#, r#""n":3.0"#).as_bytes()), Err(EntryError::NotCanonical));
        assert!(matches!(
            Entry::parse(text.replace(r#""v":1"#, r#""v":2"#).as_bytes()),
            Err(EntryError::UnsupportedVersion { version: 2 })
        ));
        assert!(matches!(Entry::parse(b"[]"), Err(EntryError::NotAnObject)));
        assert!(matches!(Entry::parse(b"{\"x\":1}"), Err(EntryError::UnknownField { .. })));
        assert!(matches!(Entry::parse(&vec![b' '; ENTRY_BYTES_MAX + 1]), Err(EntryError::TooLarge { .. })));
        let bad_time = text.replace("10:00:00.123Z", "10:00:00+01:00");
        assert!(matches!(Entry::parse(bad_time.as_bytes()), Err(EntryError::InvalidField { field: "time", .. })));
    }

    #[test]
    fn times_are_checked() {
        for good in ["2026-01-01T00:00:00Z", "2026-12-31T23:59:60.5Z", "2026-11-22T10:00:00.123456789Z"] {
            assert!(check_time(good).is_ok(), "{good}");
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "",
            "2026-01-01T24:00:00Z",
        ] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_entries_are_refused_when_built() {
        let mut entry = sample();
        entry.body.insert("big".into(), Value::String("x".repeat(ENTRY_BYTES_MAX)));
        assert!(matches!(entry.to_canonical(), Err(EntryError::TooLarge { .. })));
        entry.body.insert("big".into(), json!(1u64 << 60));
        assert!(matches!(entry.to_canonical(), Err(EntryError::Json(JsonError::NumberOutOfRange { .. }))));
    }
}
