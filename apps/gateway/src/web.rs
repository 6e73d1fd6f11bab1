//! The chat page at `/` and its assets under `/assets/`, embedded in the binary at build time
//! (`apps/gateway/web/`), so running Colloquy needs nothing but the binary. The page is a
//! client like any other: it speaks the WebSocket protocol and REST API with the key the person
//! signs in with. Nothing here carries data, so these routes are public, like `/healthz`; they
//! are not part of the REST API and not in the OpenAPI document.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script, no other origin),
//! as defence in depth behind the page's own sanitizing of Markdown.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// `apps/gateway/web/`: `index.html` and `assets/`.
#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// Scripts and styles only from the gateway itself, never inline; connections (REST and the
/// WebSocket) only to it; images only from it or `data:` (a model's `<img src=https://…>` is not
/// fetched); no plugins, no framing, no `<base>`, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'; object-src 'none'";

/// The page's routes, `(method, path)`: public, outside the OpenAPI document.
pub const ROUTES: [(&str, &str); 2] = [("GET", "/"), ("GET", "/assets/{*path}")];

/// The page's routes, merged into the gateway's router.
pub fn router() -> Router<AppState> {
    Router::new().route(ROUTES[0].1, get(index)).route(ROUTES[1].1, get(asset))
}

/// `GET /`: the chat page.
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /assets/{path}`: a script, style sheet, icon or licence of the page.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{path}"), &headers)
}

/// One embedded file with its type, an ETag (its SHA-256) and the page's security headers; 304
/// when the browser has it already.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("there is no asset `/{path}`: the chat page is at `/`"),
        )
        .into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()));
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|sent| sent.as_bytes() == etag.as_bytes());
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { file.data.into_owned().into_response() };
    let headers = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, mime);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    // Always revalidated, so a new binary's page is never mixed with an old one's scripts.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
