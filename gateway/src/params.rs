//! Path segments and query strings: decoded strictly, refused with a problem document.
//!
//! axum's own extractors fall short of API.md in two ways. Its `Path` answers a segment that is
//! not UTF-8 once percent-decoded (`/v1/orders/%FF`) with `400 text/plain`. Its `Query` decodes
//! such escapes into U+FFFD, which the search then drops like punctuation, so `q=laptop%FF`
//! answered the results for `laptop`. These two wrap axum's and refuse both with
//! `422 validation_failed` naming the parameter ("malformed input", API.md). Every route takes
//! path segments and query strings through them.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The path parameters of a route, strictly decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => match error.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => {
                    Err(ApiError::validation(format!("{key}: not valid UTF-8")))
                }
                kind => Err(ApiError::validation(format!("path: {kind}"))),
            },
            // The route and the handler disagree about the parameters: a programmer error.
            Err(rejection) => Err(ApiError::internal(rejection.body_text())),
        }
    }
}

/// The query string of a request, strictly decoded into `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        check_utf8(parts.uri.query().unwrap_or_default())?;
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::validation(format!("query: {}", rejection.body_text())))
    }
}

/// Refuses a query string whose names or values are not UTF-8 once decoded, naming the parameter.
fn check_utf8(query: &str) -> Result<(), ApiError> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(decode(name))
            .map_err(|_| ApiError::validation("query: a parameter name is not valid UTF-8"))?;
        if std::str::from_utf8(&decode(value)).is_err() {
            return Err(ApiError::validation(format!("{name}: not valid UTF-8")));
        }
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding to bytes, as `form_urlencoded` does it: `+` is a
/// space, `%XX` a byte, and a `%` not followed by two hex digits stands for itself.
fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = match bytes[index] {
            b'%' => bytes.get(index + 1..index + 3).and_then(|hex| {
                let hex = std::str::from_utf8(hex).ok()?;
                u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            }),
            _ => None,
        };
        match (escaped, bytes[index]) {
            (Some(byte), _) => {
                decoded.push(byte);
                index += 3;
            }
            (None, b'+') => {
                decoded.push(b' ');
                index += 1;
            }
            (None, byte) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_form_urlencoding() {
        assert_eq!(decode("a+b%20c"), b"a b c");
        assert_eq!(decode("100%"), b"100%");
        assert_eq!(decode("%zz%4"), b"%zz%4");
        assert_eq!(decode("%+1"), b"% 1", "a sign is not a hex digit");
        assert_eq!(decode("%C3%A9"), "é".as_bytes());
    }

    #[test]
    fn names_and_values_must_be_utf8() {
        assert!(check_utf8("q=caf%C3%A9&size=2&&flag").is_ok());
        let error = check_utf8("size=2&q=laptop%FF").unwrap_err();
        assert_eq!(
            (error.code, error.detail.as_str()),
            ("validation_failed", "q: not valid UTF-8")
        );
        assert!(check_utf8("%FF=1").is_err());
    }
}
