//! What the HTTP providers share: reading a refused request's status, headers and body into a
//! classified [`ProviderError`], `Retry-After` in both of its forms, and short error texts.

use std::time::{Duration, SystemTime};

use crate::ProviderError;

/// How much of an error body is read; the rest (a proxy's HTML page, say) says nothing more.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// How much of a provider's text goes into an error message.
const MAX_MESSAGE_CHARS: usize = 500;

/// The error for a non-2xx answer, read while its status, headers and body are at hand. A body
/// cut short still leaves the status to classify by.
pub(crate) async fn refused(mut response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok());
    let retry_after = retry_after(header("retry-after-ms"), header("retry-after"), SystemTime::now());
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    http_error(status.as_u16(), status.canonical_reason(), retry_after, &body)
}

/// When the provider said to retry: `Retry-After-Ms` (OpenAI's, in milliseconds) first, then
/// `Retry-After` in seconds or as an HTTP date (a date already past means now).
pub(crate) fn retry_after(millis: Option<&str>, retry_after: Option<&str>, now: SystemTime) -> Option<Duration> {
    let parse = |value: Option<&str>, scale: f64| {
        value
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|value| value.is_finite() && *value >= 0.0)
            .and_then(|value| Duration::try_from_secs_f64(value / scale).ok())
    };
    let date = || {
        let date = httpdate::parse_http_date(retry_after?.trim()).ok()?;
        Some(date.duration_since(now).unwrap_or(Duration::ZERO))
    };
    parse(millis, 1000.0).or_else(|| parse(retry_after, 1.0)).or_else(date)
}

/// What an error body says, whichever of the common shapes it has.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ErrorDetails {
    pub(crate) message: String,
    pub(crate) code: Option<String>,
    pub(crate) kind: Option<String>,
}

impl ErrorDetails {
    /// Reads `{"error": {"message", "type", "code"}}` (OpenAI, Anthropic, llama.cpp),
    /// `{"error": "..."}` (Ollama), `{"message", "type", "code"}` (vLLM) and `{"detail": ...}`
    /// (FastAPI servers).
    pub(crate) fn from_json(json: &serde_json::Value) -> Self {
        let text = |value: Option<&serde_json::Value>| match value {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
        };
        let object = match json.get("error") {
            Some(serde_json::Value::String(message)) => return Self { message: excerpt(message), ..Self::default() },
            Some(error @ serde_json::Value::Object(_)) => error,
            _ => json,
        };
        let message =
            text(object.get("message")).or_else(|| text(object.get("detail"))).unwrap_or_else(|| object.to_string());
        Self { message: excerpt(&message), code: text(object.get("code")), kind: text(object.get("type")) }
    }

    pub(crate) fn is(&self, value: &str) -> bool {
        self.code.as_deref() == Some(value) || self.kind.as_deref() == Some(value)
    }

    pub(crate) fn is_context_length(&self) -> bool {
        // Codes from OpenAI and llama.cpp, then the words of servers that send no code (vLLM,
        // and Anthropic's "prompt is too long: 208310 tokens > 200000 maximum").
        if self.is("context_length_exceeded") || self.is("exceed_context_size_error") {
            return true;
        }
        let message = self.message.to_lowercase();
        [
            "maximum context length",
            "context length exceeded",
            "exceeds the available context size",
            "context window",
            "prompt is too long",
        ]
        .iter()
        .any(|words| message.contains(words))
    }
}

/// The error for a non-2xx answer with this status and body.
pub(crate) fn http_error(
    status: u16,
    reason: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let details = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => ErrorDetails::from_json(&json),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                format!("HTTP {status} {}", reason.unwrap_or("")).trim_end().to_owned()
            } else {
                excerpt(text)
            };
            ErrorDetails { message, ..ErrorDetails::default() }
        }
    };
    classify(status, retry_after, details)
}

/// The error for an HTTP status and what the body said.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, details: ErrorDetails) -> ProviderError {
    let message = details.message.clone();
    match status {
        401 | 403 => ProviderError::Auth { message },
        // Out of credit is no rate limit: waiting does not help, the account needs attention.
        429 if details.is("insufficient_quota") => ProviderError::Auth { message },
        429 => ProviderError::RateLimited { retry_after, message },
        400..=499 if details.is_context_length() => ProviderError::ContextLengthExceeded { message },
        400..=499 => ProviderError::InvalidRequest { message },
        500..=599 => ProviderError::Server { status, message },
        _ => ProviderError::MalformedResponse { message: format!("unexpected HTTP status {status}: {message}") },
    }
}

/// An error and its sources, as reqwest's own message ("error sending request") hides the cause.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.ends_with(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

/// At most [`MAX_MESSAGE_CHARS`] characters of `text`.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether `key` can be sent in an HTTP header; a key read from a file may end in a line break.
pub(crate) fn key_problem(key: &str) -> Option<ProviderError> {
    (!key.bytes().all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte))).then(|| ProviderError::Auth {
        message: "the API key contains characters that cannot be sent in an HTTP header, such as a line break"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_other_servers_are_understood() {
        // Ollama: the error is a bare string.
        assert_eq!(
            http_error(404, Some("Not Found"), None, br#"{"error":"model \"nope\" not found, try pulling it first"}"#),
            ProviderError::InvalidRequest { message: "model \"nope\" not found, try pulling it first".into() }
        );
        // llama.cpp: a numeric code and its own type for context overflow.
        assert_eq!(
            http_error(
                400,
                Some("Bad Request"),
                None,
                br#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#
            ),
            ProviderError::ContextLengthExceeded { message: "the request exceeds the available context size".into() }
        );
        // Anthropic: its envelope and its words for context overflow.
        assert_eq!(
            http_error(
                400,
                Some("Bad Request"),
                None,
                br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#
            ),
            ProviderError::ContextLengthExceeded { message: "prompt is too long: 208310 tokens > 200000 maximum".into() }
        );
        // A proxy's plain-text answer, and an empty one.
        assert_eq!(
            http_error(403, Some("Forbidden"), None, b"forbidden by proxy\n"),
            ProviderError::Auth { message: "forbidden by proxy".into() }
        );
        assert_eq!(
            http_error(502, Some("Bad Gateway"), None, b""),
            ProviderError::Server { status: 502, message: "HTTP 502 Bad Gateway".into() }
        );
        // Out of credit is not worth retrying.
        assert_eq!(
            http_error(429, None, Some(Duration::from_secs(1)), br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#),
            ProviderError::Auth { message: "You exceeded your current quota".into() }
        );
    }

    #[test]
    fn retry_after_reads_milliseconds_then_seconds_then_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(retry_after(Some("1500"), Some("9"), now), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(None, Some("2"), now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(None, Some("Wed, 21 Oct 2015 07:28:30 GMT"), now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(None, Some("Wed, 21 Oct 2015 07:00:00 GMT"), now), Some(Duration::ZERO));
        assert_eq!(retry_after(None, Some("soon"), now), None);
        assert_eq!(retry_after(Some("-1"), None, now), None);
    }

    #[test]
    fn long_texts_are_cut() {
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        assert_eq!(excerpt(&long).chars().count(), MAX_MESSAGE_CHARS + 3);
        assert_eq!(excerpt("short"), "short");
    }
}
