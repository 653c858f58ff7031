//! RFC 9457 problem details: every error the API answers.
//!
//! `type` is the relative URI `/problems/<code>`, `code` is the stable
//! machine name clients switch on, and a validation error names its `field`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The stable problem codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The body is not JSON, not I-JSON, or not an object.
    InvalidJson,
    /// A field is missing, of the wrong type or out of range.
    InvalidField,
    /// The body, or the log entry it would make, is larger than the server accepts.
    PayloadTooLarge,
    /// The credential has as many requests in flight as it may: retry after
    /// the `Retry-After` seconds.
    TooManyRequests,
    /// No or an unknown bearer token.
    Unauthorized,
    /// The token's role may not do this.
    Forbidden,
    /// No such object in this tenant, or no such path.
    NotFound,
    /// The path exists but does not take this method.
    MethodNotAllowed,
    /// The object exists already, or the change conflicts with the state.
    Conflict,
    /// A grant wider than its grantor's own authority.
    GrantExceedsGrantor,
    /// A grant from someone other than the grantee's parent.
    GrantorNotParent,
    /// An identity that cannot be placed in the tree (parent unknown or revoked, too deep).
    InvalidIdentity,
    /// A policy set that does not parse or validate.
    InvalidPolicy,
    /// A grant whose signature does not verify under its grantor's key.
    GrantSignatureInvalid,
    /// The server cannot answer now (shutting down, storage failed, the
    /// request took too long).
    Unavailable,
    /// A defect: the request may be retried.
    Internal,
}

impl Code {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidJson => "invalid_json",
            Code::InvalidField => "invalid_field",
            Code::PayloadTooLarge => "payload_too_large",
            Code::TooManyRequests => "too_many_requests",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::GrantExceedsGrantor => "grant_exceeds_grantor",
            Code::GrantorNotParent => "grantor_not_parent",
            Code::InvalidIdentity => "invalid_identity",
            Code::InvalidPolicy => "invalid_policy",
            Code::GrantSignatureInvalid => "grant_signature_invalid",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::InvalidJson | Code::InvalidField => StatusCode::BAD_REQUEST,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::GrantExceedsGrantor
            | Code::GrantorNotParent
            | Code::InvalidIdentity
            | Code::InvalidPolicy
            | Code::GrantSignatureInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Code::InvalidJson => "The request body is not acceptable JSON",
            Code::InvalidField => "A field of the request is invalid",
            Code::PayloadTooLarge => "The request body is too large",
            Code::TooManyRequests => "Too many requests in flight for this key",
            Code::Unauthorized => "Authentication is required",
            Code::Forbidden => "This key may not do that",
            Code::NotFound => "Not found",
            Code::MethodNotAllowed => "Method not allowed",
            Code::Conflict => "The request conflicts with the current state",
            Code::GrantExceedsGrantor => "The grant exceeds its grantor's authority",
            Code::GrantorNotParent => "The grantor is not the grantee's parent",
            Code::InvalidIdentity => "The identity cannot be registered",
            Code::InvalidPolicy => "The policy set is invalid",
            Code::GrantSignatureInvalid => "The grant's signature does not verify under its grantor's key",
            Code::Unavailable => "The server cannot answer now",
            Code::Internal => "Internal error",
        }
    }
}

/// An RFC 9457 problem. Boxed, so that `Result<_, Problem>` stays one word
/// wide on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem(Box<Details>);

#[derive(Debug, Clone, PartialEq)]
struct Details {
    code: Code,
    detail: String,
    field: Option<String>,
    /// More members (e.g. `errors` of a policy set).
    extra: Map<String, Value>,
}

impl Problem {
    /// A problem with a detail sentence.
    pub fn new(code: Code, detail: impl Into<String>) -> Problem {
        Problem(Box::new(Details { code, detail: detail.into(), field: None, extra: Map::new() }))
    }

    /// A problem about one field.
    pub fn field(code: Code, field: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem(Box::new(Details { code, detail: detail.into(), field: Some(field.into()), extra: Map::new() }))
    }

    /// Adds a member.
    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.0.extra.insert(key.to_owned(), value);
        self
    }

    /// Not found, in words that do not tell whether it exists elsewhere.
    pub fn not_found(what: &str) -> Problem {
        Problem::new(Code::NotFound, format!("no {what} here"))
    }

    /// The stable code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// What happened, for people.
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.code.status()
    }

    /// The JSON body.
    pub fn to_json(&self) -> Map<String, Value> {
        let details = &self.0;
        let mut object = details.extra.clone();
        object.insert("type".into(), Value::from(format!("/problems/{}", details.code.as_str())));
        object.insert("title".into(), Value::from(details.code.title()));
        object.insert("status".into(), Value::from(self.status().as_u16()));
        object.insert("code".into(), Value::from(details.code.as_str()));
        object.insert("detail".into(), Value::from(details.detail.clone()));
        if let Some(field) = &details.field {
            object.insert("field".into(), Value::from(field.clone()));
        }
        object
    }
}

impl From<mandate_core::wire::FieldError> for Problem {
    fn from(error: mandate_core::wire::FieldError) -> Problem {
        let detail = format!("`{}` {}", error.field, error.message);
        Problem::field(Code::InvalidField, error.field, detail)
    }
}

impl From<mandate_store::StoreError> for Problem {
    fn from(error: mandate_store::StoreError) -> Problem {
        use mandate_store::StoreError;
        match error {
            StoreError::Range(_) | StoreError::EntryRange { .. } => Problem::new(Code::InvalidField, error.to_string()),
            StoreError::UnknownTenant { .. } => Problem::not_found("log"),
            other => {
                tracing::error!(error = %other, "storage");
                Problem::new(Code::Unavailable, format!("storage: {other}"))
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Value::Object(self.to_json())).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.code() == Code::TooManyRequests {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::limits::RETRY_AFTER_S));
        }
        response
    }
}
