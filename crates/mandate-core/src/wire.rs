//! The JSON wire forms of identities and grants, as the HTTP API and the CLI
//! read and write them (SPEC §2, §4). Pure: objects in, domain values out.
//!
//! Wire forms are a contract, kept apart from the domain types: a field may
//! be added here, never renamed. Parsing is strict, so that a typo is an
//! error rather than a silently ignored field:
//!
//! - every field a client may not send is refused, naming it; fields the
//!   server sets (`status` of an identity; `id`, `revoked` and `signed` of a
//!   grant) are refused too, with a message saying so;
//! - an optional field that is `null` counts as absent;
//! - every error is a [`FieldError`] naming where it is, as a dotted path
//!   (`actions[1]`, `limits.usd_cents`, `attributes.team`), so that the server
//!   can answer an RFC 9457 problem pointing at the field.
//!
//! Keys and signatures travel as standard base64 with padding (RFC 4648 §4);
//! times as RFC 3339 strings, written in UTC with `Z` and the shortest exact
//! fraction of a second, as [`Grant::signing_bytes`] writes them.
//!
//! The round trips hold: [`identity_from_json`] of [`identity_to_json`] without
//! `status` gives back an active identity, and [`grant_from_json`] of
//! [`grant_to_json`] without `id`, `revoked` and `signed` gives back an
//! unrevoked grant, signature included.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::VerifyingKey;
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::grant::Grant;
use crate::identity::{Identity, IdentityId, Kind, Status};
use crate::pattern::{ActionPattern, ResourcePattern};

/// The most action patterns, and separately the most resource patterns, one
/// grant may list. Attenuation checks every pair, so the product is bounded.
pub const GRANT_PATTERNS_MAX: usize = 64;

/// The most dimensions one grant may limit.
pub const GRANT_LIMITS_MAX: usize = 32;

/// The longest dimension name, in bytes.
pub const DIMENSION_BYTES_MAX: usize = 64;

/// The most characters of client text (an unknown field's name, a bad value)
/// quoted back in an error.
const QUOTE_CHARS_MAX: usize = 64;

/// A field of a request that is missing, unknown or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {message}")]
pub struct FieldError {
    /// Where the problem is: a field name, then `.key` for an object member
    /// and `[n]` for an array position, such as `actions[1]` or
    /// `limits.usd_cents`.
    pub field: String,
    /// What is wrong with it, in lowercase, client text in backticks.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// The fields a client may send to create an identity.
const IDENTITY_FIELDS: &[&str] = &["id", "kind", "parent", "public_key", "attributes"];

/// The fields of an identity only the server sets.
const IDENTITY_SERVER_FIELDS: &[&str] = &["status"];

/// The fields a client may send to create a grant.
const GRANT_FIELDS: &[&str] =
    &["grantee", "grantor", "actions", "resources", "limits", "not_before", "expires_at", "signature"];

/// The fields of a grant only the server sets.
const GRANT_SERVER_FIELDS: &[&str] = &["id", "revoked", "signed"];

/// Parses a new identity as a client sends it: `id` and `kind` (`human`,
/// `agent` or `service`) required; `parent` (an identity id), `public_key`
/// (base64 of the 32-byte Ed25519 key) and `attributes` (an object of values
/// Cedar can hold) optional. The identity is active.
///
/// Only the form is checked here; whether a human has no parent and an agent
/// one, and whether the parent exists, is `Directory::insert`'s question.
pub fn identity_from_json(object: &Map<String, Value>) -> Result<Identity, FieldError> {
    check_fields(object, IDENTITY_FIELDS, IDENTITY_SERVER_FIELDS, "an identity")?;
    let id = identity_id("id", required(object, "id")?)?;
    let kind = match string("kind", required(object, "kind")?)? {
        "human" => Kind::Human,
        "agent" => Kind::Agent,
        "service" => Kind::Service,
        other => {
            return Err(FieldError::new(
                "kind",
                format!("`{}` is not a kind; expected `human`, `agent` or `service`", quote(other)),
            ));
        }
    };
    let parent = optional(object, "parent").map(|value| identity_id("parent", value)).transpose()?;
    let public_key = optional(object, "public_key").map(public_key).transpose()?;
    let attributes = match optional(object, "attributes") {
        None => Map::new(),
        Some(Value::Object(attributes)) => {
            crate::policy::check_attributes(attributes)
                .map_err(|error| FieldError::new(error.path, error.problem.to_string()))?;
            attributes.clone()
        }
        Some(other) => return Err(wrong_type("attributes", "an object", other)),
    };
    Ok(Identity { id, kind, parent, status: Status::Active, public_key, attributes })
}

/// An identity as the server shows it: `id`, `kind`, `parent` (`null` for a
/// human), `status`, `public_key` (base64; omitted when none) and
/// `attributes`.
pub fn identity_to_json(identity: &Identity) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("id".into(), Value::String(identity.id.to_string()));
    object.insert("kind".into(), Value::String(identity.kind.as_str().to_owned()));
    object.insert("parent".into(), identity.parent.as_ref().map_or(Value::Null, |parent| parent.to_string().into()));
    object.insert("status".into(), Value::String(identity.status.as_str().to_owned()));
    if let Some(key) = &identity.public_key {
        object.insert("public_key".into(), Value::String(BASE64.encode(key.as_bytes())));
    }
    object.insert("attributes".into(), Value::Object(identity.attributes.clone()));
    object
}

/// Parses a new grant as a client sends it, giving it the server's `id`:
/// `grantee` and `grantor` (identity ids), `actions` and `resources`
/// (non-empty arrays of patterns, at most [`GRANT_PATTERNS_MAX`] each)
/// required; `limits` (dimension → integer 0 to 2^53 − 1), `not_before` and
/// `expires_at` (RFC 3339; `not_before` strictly first), and `signature`
/// (base64 of the 64-byte Ed25519 signature) optional. The grant is not
/// revoked.
///
/// The signature is carried, not checked: only the server holds the
/// grantor's key ([`Grant::verify_signature`]). Whether the grantor is the
/// grantee's parent and holds the authority it delegates is for
/// `check_grantor` and `check_attenuation`.
pub fn grant_from_json(object: &Map<String, Value>, id: String) -> Result<Grant, FieldError> {
    check_fields(object, GRANT_FIELDS, GRANT_SERVER_FIELDS, "a grant")?;
    let grantee = identity_id("grantee", required(object, "grantee")?)?;
    let grantor = identity_id("grantor", required(object, "grantor")?)?;
    let actions = patterns("actions", required(object, "actions")?, ActionPattern::parse)?;
    let resources = patterns("resources", required(object, "resources")?, ResourcePattern::parse)?;
    let limits = optional(object, "limits").map(limits).transpose()?.unwrap_or_default();
    let not_before = optional(object, "not_before").map(|value| timestamp("not_before", value)).transpose()?;
    let expires_at = optional(object, "expires_at").map(|value| timestamp("expires_at", value)).transpose()?;
    if let (Some(not_before), Some(expires_at)) = (not_before, expires_at)
        && not_before >= expires_at
    {
        return Err(FieldError::new(
            "expires_at",
            format!("`{expires_at}` must be after not_before `{not_before}`; the grant would never be live"),
        ));
    }
    let signature = optional(object, "signature").map(|value| base64_array::<64>("signature", value)).transpose()?;
    Ok(Grant { id, grantee, grantor, actions, resources, limits, not_before, expires_at, signature, revoked: false })
}

/// A grant as the server shows it: `id`, `grantee`, `grantor`, `actions`,
/// `resources`, `limits` (`{}` when none), `not_before` and `expires_at`
/// (RFC 3339 or `null`), `signature` (base64 or `null`), `revoked`, and
/// `signed` (whether it carries a signature, checked or not).
pub fn grant_to_json(grant: &Grant) -> Map<String, Value> {
    let texts = |patterns: Vec<String>| Value::Array(patterns.into_iter().map(Value::String).collect());
    let time = |time: Option<Timestamp>| time.map_or(Value::Null, |time| Value::String(time.to_string()));
    let mut object = Map::new();
    object.insert("id".into(), Value::String(grant.id.clone()));
    object.insert("grantee".into(), Value::String(grant.grantee.to_string()));
    object.insert("grantor".into(), Value::String(grant.grantor.to_string()));
    object.insert("actions".into(), texts(grant.actions.iter().map(ToString::to_string).collect()));
    object.insert("resources".into(), texts(grant.resources.iter().map(ToString::to_string).collect()));
    let limits = grant.limits.iter().map(|(dimension, &limit)| (dimension.clone(), Value::from(limit))).collect();
    object.insert("limits".into(), Value::Object(limits));
    object.insert("not_before".into(), time(grant.not_before));
    object.insert("expires_at".into(), time(grant.expires_at));
    let signature = grant.signature.as_ref().map_or(Value::Null, |signature| BASE64.encode(signature).into());
    object.insert("signature".into(), signature);
    object.insert("revoked".into(), Value::Bool(grant.revoked));
    object.insert("signed".into(), Value::Bool(grant.signature.is_some()));
    object
}

/// Whether `name` can name a dimension of limits, amounts and budgets: 1 to
/// [`DIMENSION_BYTES_MAX`] characters of `a-z`, `0-9` and `_`, such as
/// `usd_cents`.
pub fn is_dimension(name: &str) -> bool {
    (1..=DIMENSION_BYTES_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Refuses the first field that is not in `allowed`: with its own message
/// when the server sets it, else listing what is allowed.
fn check_fields(
    object: &Map<String, Value>,
    allowed: &[&str],
    server_set: &[&str],
    what: &str,
) -> Result<(), FieldError> {
    let Some(field) = object.keys().find(|field| !allowed.contains(&field.as_str())) else { return Ok(()) };
    if server_set.contains(&field.as_str()) {
        return Err(FieldError::new(field.as_str(), "is set by the server and cannot be sent"));
    }
    let field = quote(field);
    Err(FieldError::new(field, format!("is not a field of {what}; expected one of {}", allowed.join(", "))))
}

/// The value of a field that must be present and not `null`.
fn required<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a Value, FieldError> {
    optional(object, field).ok_or_else(|| FieldError::new(field, "is required"))
}

/// The value of an optional field; `null` counts as absent.
fn optional<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

fn string<'a>(field: &str, value: &'a Value) -> Result<&'a str, FieldError> {
    value.as_str().ok_or_else(|| wrong_type(field, "a string", value))
}

fn identity_id(field: &str, value: &Value) -> Result<IdentityId, FieldError> {
    IdentityId::parse(string(field, value)?).map_err(|error| FieldError::new(field, error.to_string()))
}

fn public_key(value: &Value) -> Result<VerifyingKey, FieldError> {
    let bytes = base64_array::<32>("public_key", value)?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| FieldError::new("public_key", "is not an Ed25519 public key (not a point on the curve)"))?;
    // A small-order key would make every strict verification fail, so no
    // grant of this identity could ever count as signed: refuse it now.
    if key.is_weak() {
        return Err(FieldError::new("public_key", "is a weak (small-order) Ed25519 key"));
    }
    Ok(key)
}

/// A non-empty array of patterns, each parsed by `parse`.
fn patterns<P, E: std::fmt::Display>(
    field: &str,
    value: &Value,
    parse: impl Fn(&str) -> Result<P, E>,
) -> Result<Vec<P>, FieldError> {
    let Value::Array(items) = value else { return Err(wrong_type(field, "an array of patterns", value)) };
    if items.is_empty() {
        return Err(FieldError::new(field, "must hold at least one pattern"));
    }
    if items.len() > GRANT_PATTERNS_MAX {
        return Err(FieldError::new(
            field,
            format!("holds {} patterns, over the limit of {GRANT_PATTERNS_MAX}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let field = format!("{field}[{index}]");
            let text = string(&field, item)?;
            parse(text).map_err(|error| FieldError::new(field, error.to_string()))
        })
        .collect()
}

fn limits(value: &Value) -> Result<BTreeMap<String, u64>, FieldError> {
    let Value::Object(object) = value else { return Err(wrong_type("limits", "an object", value)) };
    if object.len() > GRANT_LIMITS_MAX {
        return Err(FieldError::new(
            "limits",
            format!("has {} dimensions, over the limit of {GRANT_LIMITS_MAX}", object.len()),
        ));
    }
    let mut limits = BTreeMap::new();
    for (dimension, limit) in object {
        if !is_dimension(dimension) {
            return Err(FieldError::new(
                "limits",
                format!("dimension `{}` must be 1-{DIMENSION_BYTES_MAX} characters of a-z 0-9 _", quote(dimension)),
            ));
        }
        let field = format!("limits.{dimension}");
        let limit = limit
            .as_u64()
            .filter(|&limit| limit <= mandate_log::json::SAFE_INTEGER_MAX)
            .ok_or_else(|| wrong_type(&field, "an integer from 0 to 2^53 - 1", limit))?;
        limits.insert(dimension.clone(), limit);
    }
    Ok(limits)
}

/// An RFC 3339 time (`2026-01-01T00:00:00Z`, `2026-01-01T09:30:00.5+02:00`)
/// whose UTC form falls in years 0000–9999, so that the signing bytes can
/// spell it.
fn timestamp(field: &str, value: &Value) -> Result<Timestamp, FieldError> {
    let text = string(field, value)?;
    let refused =
        || FieldError::new(field, format!("`{}` is not an RFC 3339 time such as `2026-01-01T00:00:00Z`", quote(text)));
    // jiff also reads forms RFC 3339 does not have (a space for the `T`,
    // bracketed time zones, offsets without minutes): hold the shape first.
    if !is_rfc3339(text) {
        return Err(refused());
    }
    let time: Timestamp = text.parse().map_err(|_| refused())?;
    if mandate_log::entry::check_time(&time.to_string()).is_err() {
        return Err(FieldError::new(field, format!("`{}` is outside years 0000-9999 in UTC", quote(text))));
    }
    Ok(time)
}

/// Whether `text` has the shape of RFC 3339 `date-time` (§5.6): digits and
/// separators in place, a fraction of one or more digits, then `Z` or an
/// offset `±HH:MM`. Ranges are left to the parser.
fn is_rfc3339(text: &str) -> bool {
    let Some((head, rest)) = text.as_bytes().split_at_checked(19) else { return false };
    let head_ok = head.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        10 => matches!(b, b'T' | b't'),
        13 | 16 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    let offset = match rest {
        [b'.', after @ ..] => {
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            after.get(digits..).unwrap_or_default()
        }
        _ => rest,
    };
    let offset_ok = match offset {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    head_ok && offset_ok
}

/// Standard base64 with padding of exactly `N` bytes.
fn base64_array<const N: usize>(field: &str, value: &Value) -> Result<[u8; N], FieldError> {
    let text = string(field, value)?;
    let refused = || FieldError::new(field, format!("must be standard base64 (with padding) of {N} bytes"));
    // Checking the length first bounds the work on hostile input.
    if text.len() != N.div_ceil(3) * 4 {
        return Err(refused());
    }
    let bytes = BASE64.decode(text).map_err(|_| refused())?;
    bytes.try_into().map_err(|_| refused())
}

fn wrong_type(field: &str, expected: &str, value: &Value) -> FieldError {
    let found = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    // A number of the wrong range is still a number: say which.
    let found = match value {
        Value::Number(number) => format!("{found} `{}`", quote(&number.to_string())),
        _ => found.to_owned(),
    };
    FieldError::new(field, format!("must be {expected}, not {found}"))
}

/// Client text cut to [`QUOTE_CHARS_MAX`] characters, marked when cut.
fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(QUOTE_CHARS_MAX).collect();
    if chars.next().is_some() {
        quoted.push('…');
    }
    quoted
}
