//! The OpenAPI document is generated from the code; this pins it, so that a
//! change to the API shows up in review as a change to `openapi.json`.
//!
//! After an intended change: `MANDATE_UPDATE_OPENAPI=1 cargo nextest run -p
//! mandate-server --test openapi`, then review and commit the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn openapi_document_matches_the_committed_snapshot() {
    let generated = format!("{}\n", mandate_server::api::openapi_text());
    let path = snapshot_path();
    if std::env::var_os("MANDATE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "the OpenAPI document changed; if intended, run with MANDATE_UPDATE_OPENAPI=1 and commit {}",
        path.display()
    );
}

#[test]
fn openapi_document_describes_every_route() {
    let document: serde_json::Value = serde_json::from_str(&mandate_server::api::openapi_text()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/identities",
        "/v1/identities/{id}",
        "/v1/identities/{id}/revoke",
        "/v1/grants",
        "/v1/grants/{id}/revoke",
        "/v1/policies",
        "/v1/authorize",
        "/v1/authorize/batch",
        "/v1/events",
        "/v1/log/checkpoint",
        "/v1/log/entries",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
        "/v1/log/receipt",
        "/v1/log/public-key",
        "/v1/log/search",
        "/v1/budgets",
        "/v1/budgets/{id}",
        "/v1/reservations/{id}/settle",
        "/v1/reservations/{id}/void",
        "/v1/approvals",
        "/v1/approvals/{id}/approve",
        "/v1/approvals/{id}/deny",
        "/v1/tokens",
        "/v1/tokens/introspect",
        "/v1/tokens/revoke",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the OpenAPI document");
    }
}
