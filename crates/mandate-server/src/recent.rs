//! What the last 24 h of decisions answer for: a retried `request_id` gets
//! its first answer, `POST /v1/events` follows a recent `decision_id`, and a
//! reservation resolved in the last 24 h answers a repeated settlement (or
//! void) and `GET /v1/reservations/{id}` as it was resolved.
//!
//! None of it is kept in memory between batches: a busy tenant makes tens
//! of millions of decisions a day. Each decision entry is stored with keys
//! ([`entry_keys`]: its decision id, and the hash of its acting identity and
//! request id), and a batch asks the store ([`mandate_store::LogHold::find`])
//! for the keys its operations name before it is decided, reads the entries
//! found, and keeps them ([`Recent`]) with the batch's own decisions until
//! it commits. A reservation leaves the state when it is resolved; its
//! decision entry (key [`reservation_key`]) and the entry that resolved it
//! ([`resolution_key`]) tell it again. The store answers with the newest
//! entry per key; the entry
//! itself then says whether it matches (a hash could collide) and whether it
//! is recent, at the batch's time, so the answer depends on the log alone.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use mandate_core::budget::{self, RESOLVED_RETENTION, Resolution};
use mandate_core::identity::IdentityId;
use mandate_store::EntryKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How long a `request_id` is remembered.
pub const REQUEST_ID_RETENTION: SignedDuration = SignedDuration::from_hours(24);

/// How long a decision can be followed by events (`POST /v1/events`).
pub const DECISION_RETENTION: SignedDuration = SignedDuration::from_hours(24);

/// A decision of the last [`DECISION_RETENTION`]: whose it is, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentDecision {
    /// The acting identity.
    pub identity: IdentityId,
    /// The decision's entry.
    pub log_index: u64,
    /// Its entry's time.
    pub at: Timestamp,
}

/// A request id seen: its answer's entry and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The decision's entry, whose answer a retry gets.
    pub log_index: u64,
    /// Its decision id.
    pub decision_id: String,
    /// When.
    pub at: Timestamp,
    /// SHA-256 of the request (without its ids), so a reused id with another
    /// request is refused rather than answered with someone else's answer.
    pub fingerprint: [u8; 32],
}

/// A reservation resolved within [`RESOLVED_RETENTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedReservation {
    /// It, as resolved.
    pub reservation: budget::Reservation,
    /// The entry that resolved it.
    pub log_index: u64,
}

/// The decisions one batch knows of: those the store found for its
/// operations' keys, and its own.
#[derive(Debug, Default)]
pub struct Recent {
    requests: HashMap<(IdentityId, String), SeenRequest>,
    decisions: HashMap<String, RecentDecision>,
    reservations: HashMap<String, ResolvedReservation>,
}

impl Recent {
    /// The request seen with this id from this identity, within 24 h of `now`.
    pub fn seen(&self, identity: &IdentityId, request_id: &str, now: Timestamp) -> Option<&SeenRequest> {
        self.requests
            .get(&(identity.clone(), request_id.to_owned()))
            .filter(|seen| now.duration_since(seen.at) < REQUEST_ID_RETENTION)
    }

    /// The decision with this id, if it was made within
    /// [`DECISION_RETENTION`] of `now`.
    pub fn decision(&self, decision_id: &str, now: Timestamp) -> Option<&RecentDecision> {
        self.decisions.get(decision_id).filter(|decision| now.duration_since(decision.at) < DECISION_RETENTION)
    }

    /// The reservation `id`, if it was resolved within [`RESOLVED_RETENTION`]
    /// of `now`.
    pub fn resolved(&self, id: &str, now: Timestamp) -> Option<&ResolvedReservation> {
        self.reservations.get(id).filter(|resolved| {
            resolved.reservation.resolved_at.is_some_and(|at| now.duration_since(at) < RESOLVED_RETENTION)
        })
    }

    /// Remembers a reservation resolved by the entry at `index`.
    pub fn remember_resolved(&mut self, reservation: budget::Reservation, log_index: u64) {
        self.reservations.insert(reservation.id.clone(), ResolvedReservation { reservation, log_index });
    }

    /// Remembers reservation `id` from the decision entry that made it and
    /// the entry that resolved it (`decision` and `resolution`: index, type,
    /// time, body). Entries that do not tell of `id` are passed over.
    pub fn remember_from_entries(
        &mut self,
        id: &str,
        decision: &mandate_log::Entry,
        resolution: &mandate_log::Entry,
    ) -> Result<(), String> {
        use crate::state::types;
        if decision.entry_type != types::DECISION {
            return Ok(());
        }
        let Some(mut reservation) = crate::spend::decided_reservation(&decision.body)? else { return Ok(()) };
        let status = match resolution.entry_type.as_str() {
            types::RESERVATION_SETTLED => Resolution::Settle(crate::spend::amounts(
                resolution.body.get("amounts").unwrap_or(&Value::Null),
                "amounts",
            )?)
            .status(),
            types::RESERVATION_VOIDED | types::APPROVAL_DENIED => budget::Status::Voided,
            types::RESERVATION_EXPIRED | types::APPROVAL_EXPIRED => budget::Status::Expired,
            _ => return Ok(()),
        };
        if reservation.id != id {
            return Ok(());
        }
        reservation.status = status;
        reservation.resolved_at = Some(resolution.time.parse().map_err(|e: jiff::Error| e.to_string())?);
        self.remember_resolved(reservation, resolution.index);
        Ok(())
    }

    /// Remembers the decision entry at `index` (body `body`, time `at`); a
    /// later entry with the same ids replaces an earlier one.
    pub fn remember(&mut self, index: u64, body: &Map<String, Value>, at: Timestamp) -> Result<(), String> {
        let request = body.get("request").and_then(Value::as_object).ok_or("`request` is missing")?;
        let identity = acting_identity(request)?;
        let decision_id = body.get("decision_id").and_then(Value::as_str).ok_or("`decision_id` is missing")?;
        if let Some(request_id) = request.get("request_id").and_then(Value::as_str) {
            let seen = SeenRequest {
                log_index: index,
                decision_id: decision_id.to_owned(),
                at,
                fingerprint: fingerprint(request),
            };
            self.requests.insert((identity.clone(), request_id.to_owned()), seen);
        }
        self.decisions.insert(decision_id.to_owned(), RecentDecision { identity, log_index: index, at });
        Ok(())
    }
}

/// What a batch (or a read) asks the store for: request ids, decision ids
/// and resolved reservations. [`Wanted::keys`] are looked up in one call;
/// [`Wanted::recall`] reads the entries found into a [`Recent`]. The one
/// way to recall, whether through a hold or from what is committed.
#[derive(Debug, Default)]
pub struct Wanted {
    keys: Vec<EntryKey>,
    reservations: Vec<String>,
}

impl Wanted {
    /// The decision `identity` asked for with `request_id`.
    pub fn request(&mut self, identity: &IdentityId, request_id: &str) {
        self.keys.push(request_key(identity, request_id));
    }

    /// The decision `decision_id`.
    pub fn decision(&mut self, decision_id: &str) {
        self.keys.push(decision_key(decision_id));
    }

    /// Reservation `id`, if it is resolved: its decision and the entry that
    /// resolved it.
    pub fn reservation(&mut self, id: &str) {
        self.reservations.push(id.to_owned());
    }

    /// Every key to look up, in the order [`Wanted::recall`] expects.
    pub fn keys(&self) -> Vec<EntryKey> {
        let pairs = self.reservations.iter().flat_map(|id| [reservation_key(id), resolution_key(id)]);
        self.keys.iter().copied().chain(pairs).collect()
    }

    /// What the entries found for [`Wanted::keys`] (`found`, in that order)
    /// tell, given the entries read at those indexes. An entry that does not
    /// tell of what was asked (a hash collision, another type) is passed
    /// over: the fold has applied it already, so it is only not recalled.
    pub fn recall(&self, found: &[Option<u64>], entries: &BTreeMap<u64, mandate_log::Entry>) -> Recent {
        let mut recent = Recent::default();
        let (asked, pairs) = found.split_at(self.keys.len().min(found.len()));
        for index in asked.iter().flatten() {
            if let Some(entry) = entries.get(index)
                && entry.entry_type == crate::state::types::DECISION
                && let Ok(at) = entry.time.parse::<Timestamp>()
            {
                let _ = recent.remember(*index, &entry.body, at);
            }
        }
        for (id, pair) in self.reservations.iter().zip(pairs.chunks(2)) {
            if let [Some(made), Some(resolved)] = pair
                && let (Some(decision), Some(resolution)) = (entries.get(made), entries.get(resolved))
            {
                let _ = recent.remember_from_entries(id, decision, resolution);
            }
        }
        recent
    }
}

/// The keys a decision entry is stored with: its decision id, its request
/// id (with the acting identity) when it has one, and its reservation's id
/// when it made one.
pub fn entry_keys(body: &Map<String, Value>) -> Vec<EntryKey> {
    let mut keys = Vec::with_capacity(3);
    if let Some(decision_id) = body.get("decision_id").and_then(Value::as_str) {
        keys.push(decision_key(decision_id));
    }
    if let Some(id) = body.get("reservation").and_then(|r| r.get("id")).and_then(Value::as_str) {
        keys.push(reservation_key(id));
    }
    let request = body.get("request").and_then(Value::as_object);
    if let Some(request) = request
        && let (Ok(identity), Some(request_id)) =
            (acting_identity(request), request.get("request_id").and_then(Value::as_str))
    {
        keys.push(request_key(&identity, request_id));
    }
    keys
}

/// A decision id's key: its 16 bytes when it is a UUID (the server's are
/// UUIDv7, which grow with time, so the key index is written at its end),
/// else a hash.
pub fn decision_key(decision_id: &str) -> EntryKey {
    uuid_or_hashed(b"decision", decision_id)
}

/// The key of the decision entry that made reservation `id`: its 16 bytes
/// when it is a UUID (the server's are UUIDv7: written at the index's end,
/// and never equal to a decision's), else a hash.
pub fn reservation_key(id: &str) -> EntryKey {
    uuid_or_hashed(b"reservation", id)
}

/// An id's 16 bytes if it is a UUID, else the hash of `tag` and the id.
fn uuid_or_hashed(tag: &[u8], id: &str) -> EntryKey {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => uuid.into_bytes(),
        Err(_) => hashed(&[tag, id.as_bytes()]),
    }
}

/// The key of the entry that resolved reservation `id` (a settlement, a
/// void, an expiry, or an approval's denial or expiry).
pub fn resolution_key(id: &str) -> EntryKey {
    hashed(&[b"resolution", id.as_bytes()])
}

/// A request id's key: a hash of the acting identity and the request id
/// (request ids are scoped to the identity that sends them).
pub fn request_key(identity: &IdentityId, request_id: &str) -> EntryKey {
    hashed(&[b"request", identity.as_str().as_bytes(), request_id.as_bytes()])
}

/// The first 16 bytes of SHA-256 over length-prefixed parts, so that no two
/// lists of parts hash the same bytes.
fn hashed(parts: &[&[u8]]) -> EntryKey {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let mut key = [0; 16];
    for (byte, digested) in key.iter_mut().zip(digest) {
        *byte = digested;
    }
    key
}

fn acting_identity(request: &Map<String, Value>) -> Result<IdentityId, String> {
    let identity = request.get("identity").and_then(Value::as_str).ok_or("`request.identity` is missing")?;
    IdentityId::parse(identity).map_err(|error| error.to_string())
}

/// The fingerprint of a decision's recorded request, without the ids that
/// label it (a retry with another token of the same identity is the same
/// request).
pub fn fingerprint(request: &Map<String, Value>) -> [u8; 32] {
    let mut object = request.clone();
    for label in ["request_id", "session_id", "trace_id", "token_id"] {
        object.remove(label);
    }
    // Everything here holds only integers within ±2^53 (amounts are checked
    // on the way in), so the fallback is never taken; it keeps a defect from
    // becoming a panic.
    let bytes = mandate_log::json::canonicalize_object(&object)
        .unwrap_or_else(|_| serde_json::to_vec(&object).unwrap_or_default());
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn decision(id: &str, request_id: Option<&str>) -> Map<String, Value> {
        let mut request = serde_json::json!({"identity": "agent:a", "action": "x", "resource": "y"});
        if let Some(request_id) = request_id {
            request["request_id"] = Value::from(request_id);
        }
        serde_json::json!({"decision": "deny", "decision_id": id, "request": request}).as_object().unwrap().clone()
    }

    /// Decisions and request ids answer for 24 h from their entry's time.
    #[test]
    fn recent_decisions_answer_for_24_h() {
        let mut recent = Recent::default();
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        recent.remember(7, &decision("d1", Some("r1")), at).unwrap();
        let almost = at.checked_add(DECISION_RETENTION - SignedDuration::from_micros(1)).unwrap();
        let found = recent.decision("d1", almost).unwrap();
        assert_eq!((found.identity.to_string(), found.log_index, found.at), ("agent:a".to_owned(), 7, at));
        assert!(recent.decision("d2", almost).is_none());
        let agent = IdentityId::parse("agent:a").unwrap();
        assert_eq!(recent.seen(&agent, "r1", almost).unwrap().log_index, 7);
        assert!(recent.seen(&IdentityId::parse("agent:b").unwrap(), "r1", almost).is_none());
        let due = at.checked_add(DECISION_RETENTION).unwrap();
        assert!(recent.decision("d1", due).is_none());
        assert!(recent.seen(&agent, "r1", due).is_none());
    }

    /// A resolved reservation answers for 24 h from its resolution, told by
    /// its decision entry and the entry that resolved it.
    #[test]
    fn resolved_reservations_answer_for_24_h() {
        let entry = |index: u64, entry_type: &str, body: Value| mandate_log::Entry {
            tenant: "t".into(),
            index,
            time: "2026-01-01T00:00:00.000000Z".into(),
            entry_type: entry_type.into(),
            prev: mandate_log::Hash::ZERO,
            body: body.as_object().unwrap().clone(),
        };
        let decision = entry(
            3,
            "decision",
            serde_json::json!({"decision": "allow", "decision_id": "d1",
                "request": {"identity": "agent:a", "action": "x", "resource": "y", "amounts": {"usd_cents": 5}},
                "budgets": [{"id": "b", "dimension": "usd_cents", "limit": 10, "before": 0, "after": 5}],
                "reservation": {"id": "r1", "expires_at": "2026-01-01T00:05:00.000000Z"}}),
        );
        let settled = entry(9, "reservation.settled", serde_json::json!({"id": "r1", "amounts": {"usd_cents": 2}}));
        let mut recent = Recent::default();
        recent.remember_from_entries("other", &decision, &settled).unwrap();
        assert!(recent.reservations.is_empty(), "entries of another reservation are passed over");
        recent.remember_from_entries("r1", &decision, &settled).unwrap();
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let found = recent.resolved("r1", at.checked_add(RESOLVED_RETENTION - SignedDuration::from_micros(1)).unwrap());
        let found = found.unwrap();
        assert_eq!(found.log_index, 9);
        assert_eq!(found.reservation.identity.as_str(), "agent:a");
        assert_eq!(
            found.reservation.holds.iter().map(|h| (h.budget.as_str(), h.amount)).collect::<Vec<_>>(),
            [("b", 5)]
        );
        assert_eq!(found.reservation.status, Resolution::Settle([("usd_cents".to_owned(), 2)].into()).status());
        assert!(recent.resolved("r1", at.checked_add(RESOLVED_RETENTION).unwrap()).is_none());
    }

    /// A decision is stored under its UUID's bytes, its request id's hash
    /// and its reservation's UUID; the hash separates identities and the
    /// parts' boundaries.
    #[test]
    fn keys_name_the_decision_and_the_request() {
        let id = uuid::Uuid::now_v7().to_string();
        let keys = entry_keys(&decision(&id, Some("r1")));
        let agent = IdentityId::parse("agent:a").unwrap();
        assert_eq!(keys, vec![uuid::Uuid::parse_str(&id).unwrap().into_bytes(), request_key(&agent, "r1")]);
        assert_eq!(entry_keys(&decision(&id, None)).len(), 1);
        assert_ne!(request_key(&agent, "r1"), request_key(&IdentityId::parse("agent:b").unwrap(), "r1"));
        assert_ne!(hashed(&[b"ab", b"c"]), hashed(&[b"a", b"bc"]));
        assert_ne!(decision_key("not-a-uuid"), decision_key("not-a-uuid2"));
        // A decision that reserved: its reservation's UUID too; the
        // resolving entry's key is another.
        let reservation = uuid::Uuid::now_v7();
        let mut body = decision(&id, None);
        body.insert("reservation".into(), serde_json::json!({"id": reservation.to_string()}));
        assert_eq!(entry_keys(&body)[1], reservation.into_bytes());
        assert_ne!(resolution_key(&reservation.to_string()), reservation_key(&reservation.to_string()));
        assert_ne!(reservation_key("r-1"), resolution_key("r-1"));
    }
}
