//! Request extractors whose every rejection is the documented JSON error: bodies (content
//! type, size, depth, shape), path segments and query strings.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A JSON body of type `T`. An empty body reads as JSON `null`, so `ApiJson<Option<T>>` makes
/// the body optional.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::BodyTooLarge,
                    "the request body is larger than the server accepts (limits.max_body_bytes): send less per request",
                )
            } else {
                ApiError::bad_request(ErrorCode::BadBody, format!("the request body could not be read: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return parse(serde_json::Value::Null).map(Self);
        }
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON: send it with `content-type: application/json`",
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            if e.to_string().starts_with("recursion limit exceeded") {
                too_deep("more than 127")
            } else {
                ApiError::bad_request(ErrorCode::BadJson, format!("the request body is not valid JSON ({e})"))
            }
        })?;
        let depth = json_depth(&value);
        if depth > MAX_JSON_DEPTH {
            return Err(too_deep(&depth.to_string()));
        }
        parse(value).map(Self)
    }
}

fn parse<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidBody, format!("the request body is not what this endpoint takes: {e}"))
    })
}

fn too_deep(depth: &str) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidBody,
        format!(
            "the request body nests {depth} levels of arrays and objects, more than the limit of {MAX_JSON_DEPTH}: \
             send flatter JSON"
        ),
    )
}

/// Path segments of type `T` (ids), refused with `invalid_path` when they do not parse.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state).await.map(|Path(value)| Self(value)).map_err(
            |rejection: PathRejection| {
                ApiError::bad_request(
                    ErrorCode::InvalidPath,
                    format!("{}: check the ids in the URL", rejection.body_text()),
                )
            },
        )
    }
}

/// A query string of type `T`, refused with `invalid_query` when it does not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| Self(value)).map_err(
            |rejection: QueryRejection| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("{}: see docs/protocol.md", rejection.body_text()),
                )
            },
        )
    }
}

/// A page size from a query: `default` when absent, `invalid_query` outside `1..=max`.
pub fn page_limit(limit: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(ErrorCode::InvalidQuery, format!("limit must be between 1 and {max}")))
    }
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field of a
/// PATCH body: absent is `None` (unchanged), `null` is `Some(None)` (removed).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}
