//! Errors as clients see them: a stable code from [`ErrorCode`], a message that says what to
//! do, and whether a retry may help. Internals never leak.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquy_engine::EngineError;
use colloquy_store::StoreError;
use serde::Serialize;

/// Every error code the gateway sends, on REST and on the socket: clients branch on these, so
/// they only ever grow. docs/protocol.md has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Malformed input.
    BadJson,
    InvalidFrame,
    UnknownFrame,
    FrameTooLarge,
    BinaryNotSupported,
    BadBody,
    InvalidBody,
    UnsupportedMediaType,
    BodyTooLarge,
    InvalidPath,
    InvalidQuery,
    TooDeep,
    // Content and requests the engine refuses.
    EmptyMessage,
    ForbiddenPart,
    InvalidContent,
    InvalidClientMsgId,
    InvalidConversation,
    InvalidEdit,
    InvalidCursor,
    InvalidAccountName,
    WeakApiKey,
    SeqOutOfRange,
    NoSender,
    NoAgent,
    NotAnAgent,
    UnknownTool,
    UnknownProvider,
    UnknownModel,
    NotSubscribed,
    // Identity and permission.
    Unauthenticated,
    Forbidden,
    NotAParticipant,
    // Things that do not exist.
    NotFound,
    MethodNotAllowed,
    ConversationNotFound,
    ParticipantNotFound,
    MessageNotFound,
    AccountNotFound,
    ApiKeyNotFound,
    ApprovalNotFound,
    // State conflicts.
    ConversationNotActive,
    ParticipantAlreadyPresent,
    AccountExists,
    InvalidStatusChange,
    Busy,
    LeaseHeld,
    StaleLease,
    // Limits.
    RateLimited,
    QueueFull,
    TooManyConnections,
    TooManySubscriptions,
    NotAWebsocket,
    // The server.
    ConversationUnavailable,
    Timeout,
    DatabaseUnavailable,
    ShuttingDown,
    Internal,
}

/// A client-facing error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// Stable, machine-readable: clients branch on it.
    pub code: ErrorCode,
    /// For people: what was wrong and what to do.
    pub message: String,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
    /// For `rate_limited` and `queue_full`: how long to wait before trying again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The request's `x-request-id`, to quote when reporting a problem (REST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    status: StatusCode,
}

/// The body of every REST error: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ApiError,
}

impl ApiError {
    /// An error with this status and code; retryable when the status says so (5xx, 429).
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        Self { code, message: message.into(), retryable, retry_after_ms: None, request_id: None, status }
    }

    /// A caller error with this code.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// An unknown resource.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A conflict with the resource's state (not retryable unless said).
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Too many of something: retry after `wait`.
    pub fn too_many(code: ErrorCode, message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        error.retry_after_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        error
    }

    /// `401 unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message)
    }

    /// `403 forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A failure inside the server: logged in full, shown as `internal`.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the server failed to handle this request; it was logged, retry later",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match &error {
            StoreError::ConversationNotFound(_) => Self::not_found(ErrorCode::ConversationNotFound, message),
            StoreError::ParticipantNotFound { .. } => Self::not_found(ErrorCode::ParticipantNotFound, message),
            StoreError::MessageNotFound { .. } => Self::not_found(ErrorCode::MessageNotFound, message),
            StoreError::ApiKeyNotFound(_) => Self::not_found(ErrorCode::ApiKeyNotFound, message),
            StoreError::AccountNotFound(_) => Self::not_found(ErrorCode::AccountNotFound, message),
            StoreError::NotAnAgent(_) => Self::bad_request(ErrorCode::NotAnAgent, message),
            StoreError::SeqOutOfRange { .. } => Self::bad_request(ErrorCode::SeqOutOfRange, message),
            StoreError::InvalidCursor(_) => Self::bad_request(ErrorCode::InvalidCursor, message),
            StoreError::WeakApiKey { .. } => Self::bad_request(ErrorCode::WeakApiKey, message),
            StoreError::InvalidAccountName(_) => Self::bad_request(ErrorCode::InvalidAccountName, message),
            StoreError::TooDeep { .. } => Self::bad_request(ErrorCode::TooDeep, message),
            StoreError::ConversationNotActive(_) => Self::conflict(ErrorCode::ConversationNotActive, message),
            StoreError::ParticipantAlreadyPresent { .. } => {
                Self::conflict(ErrorCode::ParticipantAlreadyPresent, message)
            }
            StoreError::AccountExists(_) => Self::conflict(ErrorCode::AccountExists, message),
            StoreError::InvalidStatusChange { .. } => Self::conflict(ErrorCode::InvalidStatusChange, message),
            StoreError::LeaseHeld { .. } => Self { retryable: true, ..Self::conflict(ErrorCode::LeaseHeld, message) },
            StoreError::StaleLease(_) => Self::conflict(ErrorCode::StaleLease, message),
            StoreError::SchemaBehind { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::DatabaseUnavailable, message)
            }
            StoreError::UnsupportedUrl(_) | StoreError::Database(_) | StoreError::Corrupt { .. } => {
                Self::internal(&error)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::Store(store) => store.into(),
            EngineError::NotAParticipant { .. } => {
                Self::new(StatusCode::FORBIDDEN, ErrorCode::NotAParticipant, message)
            }
            EngineError::Busy(_) => Self { retryable: true, ..Self::conflict(ErrorCode::Busy, message) },
            EngineError::QueueFull { .. } => {
                Self::too_many(ErrorCode::QueueFull, message, std::time::Duration::from_secs(1))
            }
            EngineError::NoSender(_) => Self::bad_request(ErrorCode::NoSender, message),
            EngineError::InvalidEdit(_) => Self::bad_request(ErrorCode::InvalidEdit, message),
            EngineError::NoAgent(_) => Self::bad_request(ErrorCode::NoAgent, message),
            EngineError::UnknownTool(_) => Self::bad_request(ErrorCode::UnknownTool, message),
            EngineError::ApprovalNotPending { .. } => Self::not_found(ErrorCode::ApprovalNotFound, message),
            EngineError::UnknownProvider { .. } => Self::bad_request(ErrorCode::UnknownProvider, message),
            EngineError::UnknownModel { .. } => Self::bad_request(ErrorCode::UnknownModel, message),
            EngineError::EmptyMessage | EngineError::EmptyPart { .. } => {
                Self::bad_request(ErrorCode::EmptyMessage, message)
            }
            EngineError::ForbiddenPart { .. } => Self::bad_request(ErrorCode::ForbiddenPart, message),
            EngineError::InvalidContent(_) => Self::bad_request(ErrorCode::InvalidContent, message),
            EngineError::InvalidClientMsgId(_) => Self::bad_request(ErrorCode::InvalidClientMsgId, message),
            EngineError::InvalidConversation(_) => Self::bad_request(ErrorCode::InvalidConversation, message),
            EngineError::Unavailable { .. } => Self {
                retryable: false,
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ConversationUnavailable, message)
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self }))).into_response();
        if let Some(wait) = self.retry_after_ms {
            let seconds = wait.div_ceil(1000).to_string();
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    /// The codes are clients' contract: each must be explained in docs/protocol.md.
    #[test]
    fn every_error_code_is_documented() {
        let source = include_str!("error.rs");
        let protocol = include_str!("../../../docs/protocol.md");
        let start = source.find("pub enum ErrorCode {").unwrap_or_default();
        let body = &source[start..start + source[start..].find('}').unwrap_or_default()];
        let variants: Vec<&str> = body
            .lines()
            .skip(1)
            .map(|line| line.trim().trim_end_matches(','))
            .filter(|line| line.chars().next().is_some_and(char::is_uppercase))
            .collect();
        assert!(variants.len() > 40, "the enum was not found: {variants:?}");
        let snake = |name: &str| {
            name.chars().enumerate().fold(String::new(), |mut out, (i, c)| {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
                out
            })
        };
        let missing: Vec<String> =
            variants.iter().map(|v| snake(v)).filter(|code| !protocol.contains(&format!("`{code}`"))).collect();
        assert!(missing.is_empty(), "error codes missing from docs/protocol.md: {missing:?}");
    }
}
