//! Request bodies: strict JSON in, problem documents for everything that is not.
//!
//! `Json<T>` replaces axum's extractor so that a wrong content type, malformed JSON, a wrong type,
//! a missing field or an unknown field (request types carry `#[serde(deny_unknown_fields)]`) all
//! answer `422 validation_failed` naming the field, and a body over the limit answers `413`.
//!
//! Every request body goes through [`parse`], which also insists that a struct is a JSON object:
//! serde binds a struct's fields from an array by position as readily as from an object by name,
//! so `["Evil", "999", "addr"]` set a profile's name, postal code and address, past
//! `deny_unknown_fields` and past every field name a client was meant to spell.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

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
    let objects = objects::Objects(&mut deserializer);
    let value = serde_path_to_error::deserialize(objects).map_err(|error| {
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

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: tells a field
/// given as `null` (`Some(None)`) from a missing one (`None`, through `default`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A deserializer that refuses an array where a struct is expected, at any depth.
///
/// serde's derived structs accept both a map and a sequence, and `serde_json` offers no switch, so
/// this wraps its deserializer: a struct is asked for with a visitor that refuses `visit_seq`, and
/// everything else is passed through, wrapped again on the way down (seeds, elements, entries,
/// `Some`, newtypes, enum variants) so the rule holds inside nested values too. (Content that
/// serde buffers first, for untagged enums or `flatten`, escapes it; no request type has any.)
mod objects {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
    use serde::de::{VariantAccess, Visitor};

    pub struct Objects<D>(pub D);

    /// A visitor passed through; `object` when it builds a struct, so a sequence is refused.
    struct Wrap<V> {
        visitor: V,
        object: bool,
    }

    fn wrap<V>(visitor: V) -> Wrap<V> {
        Wrap { visitor, object: false }
    }

    struct Seed<S>(S);
    struct Seq<A>(A);
    struct Map<A>(A);
    struct Enum<A>(A);
    struct Variant<A>(A);

    macro_rules! forward_deserialize {
        ($($method:ident)*) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(wrap(visitor))
            }
        )*};
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Objects<D> {
        type Error = D::Error;

        forward_deserialize! {
            deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
            deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
            deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
            deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
            deserialize_option deserialize_unit deserialize_seq deserialize_map
            deserialize_identifier deserialize_ignored_any
        }

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_unit_struct(name, wrap(visitor))
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_newtype_struct(name, wrap(visitor))
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple(len, wrap(visitor))
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple_struct(name, len, wrap(visitor))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_struct(name, fields, Wrap { visitor, object: true })
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_enum(name, variants, wrap(visitor))
        }

        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    }

    macro_rules! forward_visit {
        ($($method:ident: $type:ty)*) => {$(
            fn $method<E: de::Error>(self, value: $type) -> Result<V::Value, E> {
                self.visitor.$method(value)
            }
        )*};
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
        type Value = V::Value;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.object {
                formatter.write_str("a JSON object")
            } else {
                self.visitor.expecting(formatter)
            }
        }

        forward_visit! {
            visit_bool: bool visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64
            visit_i128: i128 visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64
            visit_u128: u128 visit_f32: f32 visit_f64: f64 visit_char: char visit_str: &str
            visit_borrowed_str: &'de str visit_string: String visit_bytes: &[u8]
            visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
        }

        fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
            self.visitor.visit_none()
        }

        fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
            self.visitor.visit_unit()
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
            self.visitor.visit_some(Objects(deserializer))
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<V::Value, D::Error> {
            self.visitor.visit_newtype_struct(Objects(deserializer))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
            if self.object {
                return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
            }
            self.visitor.visit_seq(Seq(seq))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
            self.visitor.visit_map(Map(map))
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
            self.visitor.visit_enum(Enum(data))
        }
    }

    impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
        type Value = S::Value;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
            self.0.deserialize(Objects(deserializer))
        }
    }

    impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
        type Error = A::Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, A::Error> {
            self.0.next_element_seed(Seed(seed))
        }

        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
        type Error = A::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            self.0.next_key_seed(Seed(seed))
        }

        fn next_value_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.next_value_seed(Seed(seed))
        }

        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
        type Error = A::Error;
        type Variant = Variant<A::Variant>;

        fn variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<(T::Value, Self::Variant), A::Error> {
            self.0.variant_seed(Seed(seed)).map(|(value, variant)| (value, Variant(variant)))
        }
    }

    impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
        type Error = A::Error;

        fn unit_variant(self) -> Result<(), A::Error> {
            self.0.unit_variant()
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.newtype_variant_seed(Seed(seed))
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            self.0.tuple_variant(len, wrap(visitor))
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            self.0.struct_variant(fields, Wrap { visitor, object: true })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
        b: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        maybe: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        free: BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        pair: Option<(u32, String)>,
    }

    fn detail<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        parse::<T>(text.as_bytes()).unwrap_err().detail
    }

    #[test]
    fn structs_are_objects_at_every_depth() {
        let parsed: Outer = parse(
            br#"{"inner": {"a": 1, "b": "x"}, "maybe": {"a": 2, "b": "y"}, "list": [{"a": 3, "b": "z"}],
                "free": {"k": [1, {"n": null}]}, "pair": [4, "w"]}"#,
        )
        .unwrap();
        assert_eq!(parsed.list, [Inner { a: 3, b: "z".to_owned() }]);
        assert_eq!(parsed.free["k"], serde_json::json!([1, {"n": null}]));
        assert_eq!(parsed.pair, Some((4, "w".to_owned())), "a tuple is an array");
        for (text, path) in [
            (r#"[{"a": 1, "b": "x"}]"#, "body"),
            (r#"{"inner": [1, "x"]}"#, "inner"),
            (r#"{"inner": {"a": 1, "b": "x"}, "maybe": [2, "y"]}"#, "maybe"),
            (r#"{"inner": {"a": 1, "b": "x"}, "list": [{"a": 3, "b": "z"}, [4, "v"]]}"#, "list[1]"),
        ] {
            let detail = detail::<Outer>(text);
            assert!(detail.starts_with(&format!("{path}: invalid type: sequence")), "{detail}");
            assert!(detail.contains("expected a JSON object"), "{detail}");
        }
        assert!(detail::<Outer>(r#"{"inner": {"a": 1, "b": "x", "c": 0}}"#).contains("inner.c"));
        assert!(detail::<Outer>(r#"{"inner": {"a": 1, "b": "x"}} {}"#).starts_with("body:"));
    }
}
