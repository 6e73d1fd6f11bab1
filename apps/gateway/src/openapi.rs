//! The OpenAPI description of every route (`GET /openapi.json`), made from the handlers' own
//! annotations, and the metrics endpoint.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Colloquy",
        description = "Stateful, multi-turn, tool-using LLM conversations. The WebSocket protocol is in docs/protocol.md.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&BearerKeys),
    tags(
        (name = "conversations", description = "Create, list, change, archive, fork and export conversations"),
        (name = "messages", description = "The history: pages, sending, edits, token budgets, search"),
        (name = "events", description = "The event log, and its live stream as Server-Sent Events"),
        (name = "participants", description = "Who takes part, and agents' specs"),
        (name = "approvals", description = "Tool calls waiting for an owner's answer"),
        (name = "turns", description = "Cancel or continue a conversation's turn"),
        (name = "accounts", description = "Accounts and API keys (admins), and the caller's own account"),
        (name = "discovery", description = "Tools and providers"),
        (name = "websocket", description = "The live protocol"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// API keys, as bearer tokens.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, `ck_...` (`colloquy keys create`)"))
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`: this description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

/// The document as JSON, made once.
pub fn json() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, document) = routes().split_for_parts();
        document.to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    })
}

/// Every route with its description: the REST and WebSocket routes, this document, metrics.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<crate::AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::rest::router())
        .routes(routes!(document))
        .routes(routes!(metrics))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render())
}
