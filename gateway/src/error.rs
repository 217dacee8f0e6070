//! Every error the HTTP API answers, as an RFC 9457 problem document with the `code` of API.md.
//!
//! Handlers return `Result<_, ApiError>`; this is the one `IntoResponse` for errors, so the shape
//! of an error cannot differ between routes. Answers made outside the handlers (axum's `405`, a
//! rejection of one of its extractors, a layer) are turned into problem documents on the way out
//! by [`problem_responses`], so no error leaves the gateway in another shape.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
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

    /// `405`: the path exists, the method does not (the `Allow` header lists those that do).
    pub fn method_not_allowed(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on this path; Allow lists the methods that are"),
        )
    }

    /// A request that ran past the gateway's request timeout: `503 overloaded`, retried like load
    /// shedding. What it submitted to the engine may still happen (a checkout is replayed under
    /// its key).
    pub fn timed_out(limit: Duration) -> Self {
        let mut error = Self::overloaded();
        error.detail = format!("no answer within {} ms; retry shortly", limit.as_millis());
        error
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

/// The largest body of a foreign error answer whose text becomes the problem's `detail`.
const FOREIGN_DETAIL_BYTES_MAX: usize = 1024;

/// Middleware: any error answer that is not a problem document yet becomes one, with the code its
/// status stands for in API.md (`400` is malformed input: `422 validation_failed`), its text as
/// the detail, and its headers (`Allow` of a `405`, `Retry-After`) kept. The handlers' own errors
/// pass unchanged.
pub async fn problem_responses(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FOREIGN_DETAIL_BYTES_MAX)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let detail = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let error = match status.as_u16() {
        401 => ApiError::unauthorized(detail),
        403 => ApiError::forbidden(detail),
        404 => ApiError::not_found(detail),
        405 => ApiError::method_not_allowed(&method),
        409 => ApiError::conflict(detail),
        413 => ApiError::payload_too_large(detail),
        429 => ApiError::rate_limited(1),
        503 => {
            let mut error = ApiError::overloaded();
            error.detail = detail;
            error
        }
        _ if status.is_client_error() => ApiError::validation(detail),
        _ => ApiError::internal(detail),
    };
    let mut converted = error.into_response();
    let kept: Vec<&HeaderName> = parts
        .headers
        .keys()
        .filter(|name| **name != header::CONTENT_TYPE && **name != header::CONTENT_LENGTH)
        .collect();
    for name in kept {
        converted.headers_mut().remove(name);
        for value in parts.headers.get_all(name) {
            converted.headers_mut().append(name.clone(), value.clone());
        }
    }
    converted
}

impl From<rusqlite::Error> for ApiError {
    fn from(error: rusqlite::Error) -> Self {
        Self::internal(error)
    }
}
