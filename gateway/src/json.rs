//! Request bodies: strict JSON in, problem documents for everything that is not.
//!
//! `Json<T>` replaces axum's extractor so that a wrong content type, malformed JSON, a wrong type,
//! a missing field or an unknown field (request types carry `#[serde(deny_unknown_fields)]`) all
//! answer `422 validation_failed` naming the field, and a body over the limit answers `413`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// The largest request body accepted, in bytes. Bulk uploads have their own, larger limit.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::validation("Content-Type must be application/json"));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(format!("the body exceeds {BODY_BYTES_MAX} bytes"))
            } else {
                ApiError::validation(format!("could not read the body: {rejection}"))
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, naming the offending field on failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            ApiError::validation(format!("body: {inner}"))
        } else {
            ApiError::validation(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|error| ApiError::validation(format!("body: {error}")))?;
    Ok(value)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
