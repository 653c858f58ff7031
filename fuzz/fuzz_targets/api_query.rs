//! The server's decoding of query strings (`api::decode_search`,
//! `decode_identity_page`, `decode_entries_range`, `decode_approval_wait`:
//! the functions the handlers call) never panics. A refusal is 400
//! `invalid_field` naming the parameter; what is accepted is within the
//! page, range and wait limits of `mandate_server::limits`.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mandate_fuzz::api::check_problem;
use mandate_server::api::{decode_approval_wait, decode_entries_range, decode_identity_page, decode_search};
use mandate_server::limits::{APPROVAL_WAIT_MAX_S, ENTRIES_RESPONSE_MAX, IDENTITIES_PAGE_MAX, SEARCH_PAGE_MAX};
use mandate_server::problem::Code;

const FIELD: &[Code] = &[Code::InvalidField];

fuzz_target!(|data: &[u8]| {
    // A URI's query is text: the HTTP layer hands over nothing else.
    let Ok(query) = std::str::from_utf8(data) else { return };
    match decode_search(query) {
        Ok(search) => assert!((1..=SEARCH_PAGE_MAX).contains(&search.limit), "{search:?}"),
        Err(problem) => check_problem("search", &problem, FIELD, data),
    }
    match decode_identity_page(query) {
        Ok(page) => assert!((1..=IDENTITIES_PAGE_MAX).contains(&page.limit), "{page:?}"),
        Err(problem) => check_problem("identities", &problem, FIELD, data),
    }
    match decode_entries_range(query) {
        Ok((start, end)) => assert!(start <= end && end - start <= ENTRIES_RESPONSE_MAX, "{start}..{end}"),
        Err(problem) => check_problem("entries", &problem, FIELD, data),
    }
    match decode_approval_wait(query) {
        Ok(wait) => assert!(wait <= Duration::from_secs(APPROVAL_WAIT_MAX_S), "{wait:?}"),
        Err(problem) => check_problem("approval wait", &problem, FIELD, data),
    }
});
