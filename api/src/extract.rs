//! Request extractors whose rejections are problem+json: a body without a JSON
//! content type is 415, malformed JSON (trailing data included) is 400, a body of the
//! wrong shape (unknown field, wrong type, a key given twice) is 422 naming the field,
//! a body over the limit is 413, and a bad query parameter is 422 naming it.
//!
//! Every string of a JSON body — object keys included, at any depth — and every
//! query-string name and value is checked for NUL, which PostgreSQL cannot store in
//! text or JSONB (it failed there with a 500, after part of the change was written, and
//! was silently accepted by SQLite): it is refused with 422 on both databases.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldProblem};

/// A required JSON body.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    /// The body of a handler that also needs the raw bytes (to hash them, for an
    /// idempotency key): the same checks as the extractor.
    pub fn from_bytes(headers: &axum::http::HeaderMap, bytes: &[u8]) -> Result<Self, ApiError> {
        if !is_json_headers(headers) {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(bytes).map(Self)
    }
}

/// Whether the request says its body is JSON: `application/json` or
/// `application/<something>+json`, with any parameters.
fn is_json(req: &Request) -> bool {
    is_json_headers(req.headers())
}

fn is_json_headers(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// An optional JSON body: an empty body is `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(Self)
    }
}

/// The query string, deserialized; a problem is a 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let mut seen = std::collections::HashSet::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.contains('\0') || value.contains('\0') {
                let field = if name.contains('\0') {
                    "query"
                } else {
                    name.as_ref()
                };
                return Err(ApiError::field(field, NUL_MESSAGE));
            }
            // Every parameter of this API takes one value.
            if !seen.insert(name.clone()) {
                return Err(ApiError::field(&name, "is given more than once"));
            }
        }
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "query".to_owned()
            } else {
                path
            };
            ApiError::field(&field, e.into_inner().to_string())
        })
    }
}

const NUL_MESSAGE: &str = "must not contain NUL characters";

/// A JSON body read with the checks of [`ApiJson`] but whatever its content type (a
/// webhook from the cloud, whose signature covers the raw bytes).
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let problem = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue {
        path: String::new(),
        problem: &problem,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    let value = match value {
        Ok(v) => v,
        Err(e) => {
            return Err(match problem.into_inner() {
                Some(p) => ApiError::Validation(vec![p]),
                None => ApiError::BadRequest(format!("malformed JSON: {e}")),
            });
        }
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::field(&field, e.into_inner().to_string())
    })
}

/// Reads a JSON document into a [`Value`], refusing NUL in any string or key; the
/// first problem is kept in `problem` with its path (`a.b[2].c`), as
/// `serde_path_to_error` names fields.
struct StrictValue<'a> {
    path: String,
    problem: &'a std::cell::RefCell<Option<FieldProblem>>,
}

impl StrictValue<'_> {
    fn child(&self, step: &str) -> String {
        if self.path.is_empty() {
            step.to_owned()
        } else {
            format!("{}.{step}", self.path)
        }
    }

    fn fail<E: serde::de::Error>(&self, field: String, message: &str) -> E {
        let field = if field.is_empty() {
            "body".to_owned()
        } else {
            field
        };
        *self.problem.borrow_mut() = Some(FieldProblem {
            field: field.clone(),
            message: message.to_owned(),
        });
        E::custom(format!("{field}: {message}"))
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON (and JSON Schema's `integer`) does not tell 60.0 from 60: a number with
        // no fraction is an integer, exactly, within the range a double holds exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Value::from(v as i64));
        }
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(self.fail(self.path.clone(), NUL_MESSAGE));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(self.fail(self.path.clone(), NUL_MESSAGE));
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = StrictValue {
                path: format!("{}[{}]", self.path, items.len()),
                problem: self.problem,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                return Err(self.fail(self.path.clone(), "keys must not contain NUL characters"));
            }
            if out.contains_key(&key) {
                // JSON parsers disagree on which one wins; refuse to guess.
                return Err(self.fail(self.child(&key), "appears more than once"));
            }
            let seed = StrictValue {
                path: self.child(&key),
                problem: self.problem,
            };
            let value = map.next_value_seed(seed)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The `{id}` segment of a route as a UUID; anything else is 400 problem+json, answered
/// from this one place for every route.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("the path needs one id".into()))?;
        crate::routes::common::parse_id(&raw).map(Self)
    }
}

/// The caller and the integration named by `{id}`, loaded for the caller's workspace: a
/// handler that takes it cannot forget the scoping. Another workspace's integration is
/// 404, exactly as one that does not exist.
pub struct Scoped {
    pub caller: crate::auth::Caller,
    pub integration: entity::integrations::Model,
}

impl FromRequestParts<crate::state::AppState> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = crate::auth::Caller::from_request_parts(parts, state).await?;
        let PathId(id) = PathId::from_request_parts(parts, state).await?;
        let integration = crate::routes::common::load(state, &caller, id).await?;
        Ok(Self {
            caller,
            integration,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problem(body: &str) -> (String, String) {
        match parse::<Value>(body.as_bytes()) {
            Err(ApiError::Validation(p)) => (p[0].field.clone(), p[0].message.clone()),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_and_trailing_data_are_refused() {
        assert_eq!(problem(r#"{"a":1,"a":2}"#).0, "a");
        assert_eq!(
            problem(r#"{"a":{"b":1,"c":[{"d":1,"d":1}]}}"#).0,
            "a.c[0].d"
        );
        for bad in [r#"{"a":1} x"#, "{}{}", "[1] [2]", "{} ,"] {
            assert!(
                matches!(parse::<Value>(bad.as_bytes()), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn nul_is_refused_anywhere_with_its_path() {
        assert_eq!(problem(r#"{"a":"x\u0000"}"#).0, "a");
        assert_eq!(problem(r#"{"a":{"b":[1,"\u0000"]}}"#).0, "a.b[1]");
        assert_eq!(problem(r#"{"a":{"k\u0000":1}}"#).0, "a");
        assert_eq!(problem(r#""\u0000""#).0, "body");
        let v: Value = parse(br#"{"a":["ok",{"b":null}],"c":1.5,"d":60.0,"e":-0.0}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":["ok",{"b":null}],"c":1.5,"d":60,"e":0})
        );
    }
}
