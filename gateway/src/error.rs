//! Every error the HTTP API answers, as an RFC 9457 problem document with the `code` of API.md.
//!
//! Handlers return `Result<_, ApiError>`; this is the one `IntoResponse` for errors, so the shape
//! of an error cannot differ between routes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: status, machine-readable code, human detail, and the extras some codes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// For `out_of_stock`, `not_found` and `not_deliverable`: the SKUs concerned.
    pub skus: Option<Vec<String>>,
    /// For `rate_limited` and `overloaded`: seconds to wait.
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), skus: None, retry_after_seconds: None }
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn not_found_skus(skus: Vec<String>) -> Self {
        let mut error = Self::not_found(format!("unknown SKU: {}", skus.join(", ")));
        error.skus = Some(skus);
        error
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn out_of_stock(skus: Vec<String>) -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "out_of_stock",
            format!("not enough units of {}", skus.join(", ")),
        );
        error.skus = Some(skus);
        error
    }

    pub fn not_deliverable(skus: Vec<String>) -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "not_deliverable",
            format!("no warehouse delivers {} to that postal code", skus.join(", ")),
        );
        error.skus = Some(skus);
        error
    }

    pub fn purchase_limit_exceeded(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "purchase_limit_exceeded", detail)
    }

    pub fn price_changed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "price_changed", detail)
    }

    pub fn idempotency_key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )
    }

    pub fn not_purchased() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not_purchased",
            "only buyers of the product may review it",
        )
    }

    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        let mut error =
            Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests");
        error.retry_after_seconds = Some(retry_after_seconds);
        error
    }

    pub fn overloaded() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the engine queue is full; retry shortly",
        );
        error.retry_after_seconds = Some(1);
        error
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
    }

    /// An operating error. The detail is logged, not shown: it may name files or queries.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ApiError {
    /// The problem document.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "type": format!("https://surge.invalid/problems/{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(skus) = &self.skus {
            body["skus"] = json!(skus);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(error: rusqlite::Error) -> Self {
        Self::internal(error)
    }
}
