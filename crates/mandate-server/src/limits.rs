//! Every limit the server holds a request to, in one place (SPEC §6.6;
//! `docs/threat-model.md`, "Hostile input"), and the two that are enforced
//! around the handlers rather than in them: the time a request may take and
//! the requests one credential may have in flight.
//!
//! A request over a limit is answered with an RFC 9457 problem and changes
//! nothing: every limit below is checked before the request reaches its
//! tenant's sequencer, except the size of the log entry it would write, which
//! the sequencer checks before anything is applied or appended.
//!
//! | limit | answer |
//! |---|---|
//! | [`BODY_BYTES_MAX`] | 413 `payload_too_large` |
//! | [`JSON_DEPTH_MAX`], duplicate keys, lone surrogates, numbers beyond [`INTEGER_MAX`] | 400 `invalid_json` |
//! | string lengths, counts, TTLs, [`AUTHORIZE_BATCH_MAX`], page sizes, [`APPROVAL_WAIT_MAX_S`], [`EVENT_OUTPUT_DIGEST_BYTES_MAX`], [`EVENT_ATTRIBUTES_BYTES_MAX`] | 400 `invalid_field`, naming the field |
//! | [`ENTRY_BYTES_MAX`] (the entry a change would write) | 413 `payload_too_large` |
//! | [`IN_FLIGHT_PER_KEY_MAX`] | 429 `too_many_requests` with `Retry-After: 1` |
//! | [`REQUEST_TIME_MAX`] | 503 `unavailable` |
//!
//! Values over a maximum are refused, never clamped, so that a client learns
//! the limit instead of silently getting less than it asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::{Code, Problem};

// ---------------------------------------------------------------- bodies

/// The most bytes a request body may have (413 `payload_too_large`).
pub const BODY_BYTES_MAX: usize = 256 * 1024;

/// The deepest nesting of arrays and objects in a body, the body's own
/// object included (400 `invalid_json`).
pub use mandate_log::json::JSON_DEPTH_MAX;

/// The largest magnitude of a number in a body, and of any amount or limit:
/// 2^53 − 1, the doubles' exact-integer range (400 `invalid_json`, or
/// `invalid_field` for an amount).
pub use mandate_log::json::SAFE_INTEGER_MAX as INTEGER_MAX;

/// The most bytes of one log entry: a change whose entry would be larger
/// (an identity with huge attributes, a policy set with its schema) is
/// refused with 413 `payload_too_large` before anything is applied.
pub use mandate_log::entry::ENTRY_BYTES_MAX;

// ---------------------------------------------------------------- strings and counts

/// The longest identity id, in bytes (`identity`, `id`, `parent`, `grantee`,
/// `grantor`, `approver`).
pub use mandate_core::identity::IDENTITY_ID_BYTES_MAX;

/// The longest `action` of a decision, in bytes.
pub const ACTION_BYTES_MAX: usize = 1024;

/// The longest `resource` of a decision, in bytes.
pub const RESOURCE_BYTES_MAX: usize = 1024;

/// The longest `request_id` and `session_id` of a decision, in bytes.
pub const SHORT_TEXT_BYTES_MAX: usize = 256;

/// The longest `output_digest` of an event (`POST /v1/events`), in bytes.
pub const EVENT_OUTPUT_DIGEST_BYTES_MAX: usize = 128;

/// The largest `attributes` of an event (`POST /v1/events`), in bytes of
/// its RFC 8785 form.
pub const EVENT_ATTRIBUTES_BYTES_MAX: usize = 4 * 1024;

/// The most tool calls in one request of `POST /v1/imports` (a part of a
/// transcript; `mandate import` sends longer transcripts in parts).
pub const IMPORT_CALLS_MAX: usize = 100;

/// The largest tool `input` (RFC 8785 form) or `output` text of an imported
/// call, in bytes: with its other fields, one call stays well inside an
/// entry's 65,535 bytes.
pub const IMPORT_CONTENT_BYTES_MAX: usize = 16 * 1024;

/// The largest imported call in its RFC 8785 form (escapes can make a
/// 16 KiB output six times longer): what the entry adds around it (its
/// header, identity, part and position) fits in the rest of
/// [`ENTRY_BYTES_MAX`].
pub const IMPORT_CALL_BYTES_MAX: usize = ENTRY_BYTES_MAX - 1024;

/// The clients whose transcripts `POST /v1/imports` takes.
pub const IMPORT_SOURCES: [&str; 3] = ["claude-code", "codex", "gemini"];

/// The largest body of `POST /v1/hooks/claude-code` with an agent token: a
/// hook payload carries the whole tool input, and the endpoint must read it
/// to answer with a block rather than fail (which would let Claude Code run
/// the tool). Without a valid token it reads at most [`BODY_BYTES_MAX`].
pub const HOOK_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The longest budget id, in bytes.
pub const BUDGET_ID_BYTES_MAX: usize = 128;

/// The longest dimension name (`usd_cents`), in bytes.
pub use mandate_core::wire::DIMENSION_BYTES_MAX;

/// The longest action pattern of a grant or a token scope, in bytes.
pub use mandate_core::pattern::ACTION_PATTERN_BYTES_MAX;

/// The longest resource pattern of a grant, in bytes.
pub use mandate_core::pattern::RESOURCE_PATTERN_BYTES_MAX;

/// The most action patterns, and the most resource patterns, of one grant.
pub use mandate_core::wire::GRANT_PATTERNS_MAX;

/// The most dimensions one grant may limit.
pub use mandate_core::wire::GRANT_LIMITS_MAX;

/// The most policies in one policy set (422 `invalid_policy`).
pub use mandate_core::policy::POLICIES_MAX;

/// The longest chain from a human to an identity (422 `invalid_identity`).
pub use mandate_core::identity::CHAIN_DEPTH_MAX;

/// The longest a reservation (or approval) may be held, in seconds
/// (`reservation_ttl_s`).
pub const RESERVATION_TTL_MAX_S: u64 = mandate_core::budget::RESERVATION_TTL_MAX.as_secs().unsigned_abs();

/// The longest an agent token may live, in seconds (`ttl_s`): 30 days.
pub const TOKEN_TTL_MAX_S: u64 = 30 * 86_400;

/// The most scopes one agent token may have.
pub const TOKEN_SCOPES_MAX: usize = 32;

// ---------------------------------------------------------------- batches and pages

/// The most requests in one `POST /v1/authorize/batch` (`requests`).
pub const AUTHORIZE_BATCH_MAX: usize = 30;

/// The page size of `GET /v1/identities` and `GET /v1/log/search` when
/// `limit` is not given.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// The largest `limit` of `GET /v1/identities`.
pub const IDENTITIES_PAGE_MAX: usize = 1_000;

/// The largest `limit` of `GET /v1/log/search`.
pub const SEARCH_PAGE_MAX: usize = mandate_store::SEARCH_PAGE_MAX;

/// The most entries one `GET /v1/log/entries` answers (`end - start`).
pub const ENTRIES_RESPONSE_MAX: u64 = 100_000;

// ---------------------------------------------------------------- time and concurrency

/// The longest long poll of `GET /v1/approvals/{id}` (`wait_s`), in seconds.
/// Below [`REQUEST_TIME_MAX`], so that a long poll ends with its answer,
/// not with a timeout.
pub const APPROVAL_WAIT_MAX_S: u64 = 60;

/// The longest a request may take, from the end of its head to its answer
/// (a streamed answer, `GET /v1/log/entries`, counts until its first
/// bytes): past it, 503 `unavailable`. A change the request asked for may
/// still commit after the answer; retry it with the same `request_id`.
/// `MANDATE_REQUEST_TIMEOUT_S` (whole seconds, read at start) overrides it,
/// for tests.
pub const REQUEST_TIME_MAX: Duration = Duration::from_secs(75);

/// After the server is asked to stop (SIGTERM, Ctrl-C), how long requests
/// in flight may take to finish before they are cut off. Long polls answer
/// at once; without a bound, one client sending its body slowly would hold
/// the shutdown for [`REQUEST_TIME_MAX`], past the usual grace of a
/// supervisor (systemd and Kubernetes then kill the process).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The environment variable that overrides [`REQUEST_TIME_MAX`].
pub const REQUEST_TIMEOUT_ENV: &str = "MANDATE_REQUEST_TIMEOUT_S";

/// The most requests one credential (an admin key or an agent token) may
/// have in its handlers at once; one more is refused with 429
/// `too_many_requests` and `Retry-After: `[`RETRY_AFTER_S`]. Counted from
/// the moment the credential is verified, so only its holder can use up its
/// share; failed authentications count for nobody. High enough for one key
/// to drive the sequencer's group commit at full speed (a few dozen
/// requests in flight fill a commit; `budgets.rs` drives one key with 104), low
/// enough that one key cannot hold thousands of requests (and their bodies)
/// on the server.
pub const IN_FLIGHT_PER_KEY_MAX: usize = 256;

/// The `Retry-After` of a 429, in seconds.
pub const RETRY_AFTER_S: u64 = 1;

// ---------------------------------------------------------------- the sequencer

/// The most submissions waiting for a tenant's sequencer; further requests
/// wait for room (back-pressure, not unbounded memory), within
/// [`REQUEST_TIME_MAX`].
pub const SEQUENCER_QUEUE_MAX: usize = 4_096;

/// The most operations a tenant's sequencer evaluates and commits together.
pub const COMMIT_OPS_MAX: usize = 512;

/// The most expiry entries (reservations, approvals) one batch writes
/// before its operations; the rest are written by the batches after it.
/// Without a bound, a burst of reservations expiring together made a batch
/// longer than an append may be: its commit failed, and so did every later
/// one, on the same expiries.
pub const EXPIRIES_PER_BATCH_MAX: usize = 256;

// The long poll ends with its answer, not with a timeout; the default page
// fits in every page; a batch fits in one commit.
const _: () = assert!(APPROVAL_WAIT_MAX_S < REQUEST_TIME_MAX.as_secs());
const _: () = assert!(SEARCH_PAGE_MAX >= PAGE_LIMIT_DEFAULT && IDENTITIES_PAGE_MAX >= PAGE_LIMIT_DEFAULT);
const _: () = assert!(AUTHORIZE_BATCH_MAX <= COMMIT_OPS_MAX);
// A batch's entries (its expiries, then one per operation, and a submission
// of an authorize batch past the operations' limit) fit in one append.
const _: () =
    assert!(EXPIRIES_PER_BATCH_MAX + COMMIT_OPS_MAX + AUTHORIZE_BATCH_MAX <= mandate_store::APPEND_ENTRIES_MAX);

// ---------------------------------------------------------------- enforcement

/// [`REQUEST_TIME_MAX`], or the whole seconds in [`REQUEST_TIMEOUT_ENV`].
pub fn request_time_from_env() -> Result<Duration, String> {
    match std::env::var(REQUEST_TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(REQUEST_TIME_MAX),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
            _ => Err(format!("{REQUEST_TIMEOUT_ENV} must be a whole number of seconds above 0, not `{text}`")),
        },
        Err(error) => Err(format!("{REQUEST_TIMEOUT_ENV}: {error}")),
    }
}

/// Cuts a request off at `limit` with 503 `unavailable` (the middleware
/// around every route).
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            Code::Unavailable,
            format!(
                "the request took longer than {} s; a change it asked for may still commit: retry it with the same \
                 `request_id`",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The Prometheus gauge of authenticated requests in flight, all
/// credentials together.
pub const IN_FLIGHT_METRIC: &str = "mandate_requests_in_flight";

/// The requests each credential has in flight.
#[derive(Debug)]
pub struct InFlight {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One request counted against its credential until dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    credential: String,
}

impl InFlight {
    /// At most `max` requests in flight per credential.
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight { max, counts: Mutex::new(HashMap::new()) })
    }

    /// Counts one more request of `credential` (an admin key's or agent
    /// token's id, with its prefix), or refuses it with 429 when it already
    /// has the most.
    pub fn enter(self: &Arc<InFlight>, credential: &str) -> Result<InFlightGuard, Problem> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(credential.to_owned()).or_insert(0);
        if *count >= self.max {
            return Err(Problem::new(
                Code::TooManyRequests,
                format!("this key has {} requests in flight, the most allowed; retry later", self.max),
            ));
        }
        *count += 1;
        metrics::gauge!(IN_FLIGHT_METRIC).increment(1.0);
        Ok(InFlightGuard { owner: self.clone(), credential: credential.to_owned() })
    }

    /// The requests `credential` has in flight.
    pub fn count(&self, credential: &str) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(credential).copied().unwrap_or(0)
    }

    /// How many credentials have requests in flight.
    pub fn credentials(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT_METRIC).decrement(1.0);
        let mut counts = self.owner.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.credential) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // No entry outlives its last request: the map holds only
                // credentials with requests in flight.
                counts.remove(&self.credential);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_credential_gets_at_most_its_share_and_others_are_unaffected() {
        let in_flight = InFlight::new(3);
        let held: Vec<InFlightGuard> = (0..3).map(|_| in_flight.enter("mk_a").unwrap()).collect();
        let refused = in_flight.enter("mk_a").unwrap_err();
        assert_eq!(refused.code(), Code::TooManyRequests);
        assert_eq!(refused.status().as_u16(), 429);
        let other = in_flight.enter("mt_b").unwrap();
        assert_eq!((in_flight.count("mk_a"), in_flight.count("mt_b")), (3, 1));
        drop(held);
        assert_eq!(in_flight.count("mk_a"), 0);
        let again = in_flight.enter("mk_a").unwrap();
        drop((again, other));
        assert_eq!(in_flight.credentials(), 0, "no entry outlives its last request");
    }

    #[test]
    fn a_429_carries_retry_after() {
        let in_flight = InFlight::new(0);
        let response = in_flight.enter("mk_a").unwrap_err().into_response();
        assert_eq!(response.status().as_u16(), 429);
        let retry_after = response.headers().get(axum::http::header::RETRY_AFTER).unwrap();
        assert_eq!(retry_after.to_str().unwrap(), RETRY_AFTER_S.to_string());
        let content_type = response.headers().get(axum::http::header::CONTENT_TYPE).unwrap();
        assert_eq!(content_type, "application/problem+json");
    }

    #[test]
    fn the_reservation_ttl_is_a_day() {
        assert_eq!(RESERVATION_TTL_MAX_S, 86_400);
    }

    #[tokio::test]
    async fn a_request_past_the_time_limit_is_a_503_problem() {
        use axum::routing::get;
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        };
        let app = axum::Router::new()
            .route("/slow", get(slow))
            .route("/quick", get(|| async { "quick" }))
            .layer(axum::middleware::from_fn_with_state(Duration::from_millis(200), time_limit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let quick = client.get(format!("http://{addr}/quick")).send().await.unwrap();
        assert_eq!(quick.status().as_u16(), 200);
        assert_eq!(quick.text().await.unwrap(), "quick");
        let cut = client.get(format!("http://{addr}/slow")).send().await.unwrap();
        assert_eq!(cut.status().as_u16(), 503);
        assert_eq!(cut.headers()[axum::http::header::CONTENT_TYPE], "application/problem+json");
        let problem: serde_json::Value = cut.json().await.unwrap();
        assert_eq!(problem["code"], "unavailable", "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("took longer than"), "{problem}");
    }

    #[test]
    fn the_request_time_comes_from_the_environment_only_when_set() {
        // Only this test touches the variable in this process.
        assert_eq!(std::env::var_os(REQUEST_TIMEOUT_ENV), None);
        assert_eq!(request_time_from_env(), Ok(REQUEST_TIME_MAX));
    }
}
