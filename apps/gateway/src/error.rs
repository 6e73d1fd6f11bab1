//! Errors as clients see them: a stable code, a message that says what to do, and whether a
//! retry may help. Internals never leak.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquy_engine::EngineError;
use colloquy_store::StoreError;
use serde::Serialize;

/// A client-facing error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// Stable, machine-readable: clients branch on it.
    pub code: &'static str,
    /// For people: what was wrong and what to do.
    pub message: String,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
    #[serde(skip)]
    status: StatusCode,
}

impl ApiError {
    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        Self { code, message: message.into(), retryable, status }
    }

    /// A caller error with this code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retryable: false, status: StatusCode::BAD_REQUEST }
    }

    /// An unknown resource.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retryable: false, status: StatusCode::NOT_FOUND }
    }

    fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, "internal error");
        Self {
            code: "internal",
            message: "the server failed to handle this request; it was logged, retry later".to_owned(),
            retryable: true,
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let conflict = |code| Self { code, message: error.to_string(), retryable: false, status: StatusCode::CONFLICT };
        match &error {
            StoreError::ConversationNotFound(_) => Self::not_found("conversation_not_found", error.to_string()),
            StoreError::ParticipantNotFound { .. } => Self::not_found("participant_not_found", error.to_string()),
            StoreError::MessageNotFound { .. } => Self::not_found("message_not_found", error.to_string()),
            StoreError::ApiKeyNotFound(_) => Self::not_found("api_key_not_found", error.to_string()),
            StoreError::NotAnAgent(_) => Self::bad_request("not_an_agent", error.to_string()),
            StoreError::SeqOutOfRange { .. } => Self::bad_request("seq_out_of_range", error.to_string()),
            StoreError::InvalidCursor(_) => Self::bad_request("invalid_cursor", error.to_string()),
            StoreError::WeakApiKey { .. } => Self::bad_request("weak_api_key", error.to_string()),
            StoreError::TooDeep { .. } => Self::bad_request("too_deep", error.to_string()),
            StoreError::ConversationNotActive(_) => conflict("conversation_not_active"),
            StoreError::ParticipantAlreadyPresent { .. } => conflict("participant_already_present"),
            StoreError::InvalidStatusChange { .. } => conflict("invalid_status_change"),
            StoreError::LeaseHeld { .. } => Self { retryable: true, ..conflict("lease_held") },
            StoreError::StaleLease(_) => conflict("stale_lease"),
            StoreError::UnsupportedUrl(_) | StoreError::Database(_) | StoreError::Corrupt { .. } => {
                Self::internal(&error)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Store(store) => store.into(),
            EngineError::NotAParticipant { .. } => Self {
                code: "not_a_participant",
                message: error.to_string(),
                retryable: false,
                status: StatusCode::FORBIDDEN,
            },
            EngineError::Busy(_) => {
                Self { code: "busy", message: error.to_string(), retryable: true, status: StatusCode::CONFLICT }
            }
            EngineError::NoSender(_) => Self::bad_request("no_sender", error.to_string()),
            EngineError::InvalidEdit(_) => Self::bad_request("invalid_edit", error.to_string()),
            EngineError::NoAgent(_) => Self::bad_request("no_agent", error.to_string()),
            EngineError::UnknownTool(_) => Self::bad_request("unknown_tool", error.to_string()),
            EngineError::EmptyMessage | EngineError::EmptyPart { .. } => {
                Self::bad_request("empty_message", error.to_string())
            }
            EngineError::ForbiddenPart { .. } => Self::bad_request("forbidden_part", error.to_string()),
            EngineError::InvalidContent(_) => Self::bad_request("invalid_content", error.to_string()),
            EngineError::InvalidClientMsgId(_) => Self::bad_request("invalid_client_msg_id", error.to_string()),
            EngineError::InvalidConversation(_) => Self::bad_request("invalid_conversation", error.to_string()),
            EngineError::Unavailable { .. } => Self {
                code: "conversation_unavailable",
                message: error.to_string(),
                retryable: false,
                status: StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self }))).into_response()
    }
}
