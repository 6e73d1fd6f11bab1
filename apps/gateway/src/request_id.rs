//! `x-request-id`: taken from the request or made up, echoed in the response, in every log
//! line of the request (its span) and in error bodies, so a user's report and the logs meet.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Error bodies are small; anything larger is passed on untouched.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The span of one HTTP request, with its id.
pub fn span(request: &Request<Body>) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
}

/// Adds `"request_id"` to the `error` object of JSON error responses.
pub async fn errors_carry_it(request: Request, next: Next) -> Response {
    let id = request.headers().get("x-request-id").cloned();
    let response = next.run(request).await;
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(id) = id.filter(|_| response.status().as_u16() >= 400 && is_json) else { return response };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, ERROR_BODY_LIMIT).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(json) => json,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if let Some(error) = json.get_mut("error").and_then(serde_json::Value::as_object_mut) {
        error.insert("request_id".to_owned(), serde_json::Value::String(id.to_str().unwrap_or_default().to_owned()));
    }
    let body = json.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(length) = HeaderValue::from_str(&body.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, length);
    }
    Response::from_parts(parts, Body::from(body))
}
