//! What there is to use: search over the caller's messages, the registered tools, the
//! configured providers and their models.

use axum::Json;
use axum::extract::State;
use colloquy_core_model::{Message, ToolSpec};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Errors;
use crate::AppState;
use crate::auth::Caller;
use crate::config::ProviderConfig;
use crate::error::ApiError;
use crate::extract::{ApiQuery, page_limit};

/// Query of `GET /v1/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words that must all be in a message.
    q: String,
    /// At most this many (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

/// Search hits.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHits {
    /// Newest first.
    messages: Vec<Message>,
}

/// `GET /v1/search?q=`: messages containing every word, in the caller's conversations (an
/// admin's: all), newest first.
#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "messages",
    params(SearchQuery),
    responses((status = 200, body = SearchHits), Errors),
    security(("bearer" = []))
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchHits>, ApiError> {
    let limit = page_limit(query.limit, 20, 100)?;
    let account = (!caller.is_admin()).then_some(caller.account.id);
    let messages = state.engine.search_messages(account, &query.q, limit).await?;
    Ok(Json(SearchHits { messages }))
}

/// `GET /v1/tools`: the tools agents may be given, with their JSON Schemas.
#[utoipa::path(get, path = "/v1/tools", tag = "discovery", responses((status = 200, body = Vec<ToolSpec>), Errors), security(("bearer" = [])))]
pub async fn tools(State(state): State<AppState>, _caller: Caller) -> Json<Vec<ToolSpec>> {
    Json(state.engine.tool_specs())
}

/// A configured provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// The name agents use (`agent.provider`).
    name: String,
    /// `openai_compatible`, `anthropic`, `a2a`, `scripted`, or `unconfigured`.
    kind: &'static str,
    /// The model agents get when they name none.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_model: Option<String>,
    /// The models it serves, when it can tell; absent when it cannot (any name is tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
}

/// `GET /v1/providers`: the configured providers and their models.
#[utoipa::path(get, path = "/v1/providers", tag = "discovery", responses((status = 200, body = Vec<ProviderView>), Errors), security(("bearer" = [])))]
pub async fn providers(State(state): State<AppState>, _caller: Caller) -> Json<Vec<ProviderView>> {
    let mut out = Vec::new();
    for (name, models) in state.engine.providers().await {
        let (kind, default_model) = match state.config.providers.get(&name) {
            Some(ProviderConfig::OpenaiCompatible { default_model, .. }) => {
                ("openai_compatible", default_model.clone())
            }
            Some(ProviderConfig::Anthropic { default_model, .. }) => ("anthropic", default_model.clone()),
            Some(ProviderConfig::Scripted { .. }) => ("scripted", None),
            Some(ProviderConfig::A2a { .. }) => ("a2a", None),
            None if name == "ollama" => ("openai_compatible", None),
            None => ("unconfigured", None),
        };
        let default_model =
            default_model.or_else(|| (state.default_agent.provider == name).then(|| state.default_agent.model.clone()));
        out.push(ProviderView { name, kind, default_model, models });
    }
    Json(out)
}
