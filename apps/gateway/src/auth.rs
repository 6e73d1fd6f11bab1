//! Who is calling: API keys, presented as `Authorization: Bearer <key>` or (browsers, which
//! cannot set headers on a WebSocket) as the subprotocol `colloquy.key.<key>`; the caller a key
//! identifies; new secrets; and keys revoked by another process, noticed within a poll.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine as _;
use colloquy_core_model::{Account, AccountId, AccountKind, Timestamp};
use colloquy_engine::Engine;
use colloquy_store::ApiKeyId;
use tokio::sync::broadcast;

use crate::AppState;
use crate::config::AuthMode;
use crate::error::ApiError;

/// The subprotocol a WebSocket client asks for; the server selects it.
pub const SUBPROTOCOL: &str = "colloquy.v1";
/// A browser passes its key as a second subprotocol with this prefix (never echoed back).
pub const KEY_SUBPROTOCOL_PREFIX: &str = "colloquy.key.";
/// How often keys revoked elsewhere (`colloquy keys revoke`) are looked for.
const REVOCATION_POLL: Duration = Duration::from_millis(250);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is.
    pub account: Account,
    /// The key it presented; `None` when auth is off.
    pub key: Option<ApiKeyId>,
    /// When that key stops working.
    pub expires_at: Option<Timestamp>,
}

impl Caller {
    /// Whether it may do everything.
    pub fn is_admin(&self) -> bool {
        self.account.kind == AccountKind::Admin
    }

    /// Everyone, when auth is off: one local admin.
    fn local() -> Self {
        let account = Account {
            id: AccountId::from_uuid(uuid::Uuid::nil()),
            name: "local".to_owned(),
            kind: AccountKind::Admin,
            display_name: "user".to_owned(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        };
        Self { account, key: None, expires_at: None }
    }
}

/// A new secret: 256 random bits, base64url, with a prefix that says what it is.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("ck_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Checks keys; shared by every route and connection.
#[derive(Debug)]
pub struct Auth {
    mode: AuthMode,
    engine: Engine,
    /// Keys known to be revoked, so a connection's frames are refused without a query.
    revoked: Mutex<HashSet<ApiKeyId>>,
    /// Tells open connections that a key was revoked.
    revocations: broadcast::Sender<ApiKeyId>,
}

impl Auth {
    pub fn new(mode: AuthMode, engine: Engine) -> Self {
        Self { mode, engine, revoked: Mutex::default(), revocations: broadcast::channel(256).0 }
    }

    /// Whether keys are checked.
    pub fn is_on(&self) -> bool {
        self.mode == AuthMode::On
    }

    /// The caller a request's key identifies: from `Authorization: Bearer`, or for WebSocket
    /// upgrades from the `colloquy.key.` subprotocol.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Caller::local());
        }
        let Some(secret) = presented_key(headers) else {
            return Err(ApiError::unauthenticated(
                "this needs an API key: send `Authorization: Bearer <key>` (browsers opening a WebSocket: the \
                 subprotocols `colloquy.v1, colloquy.key.<key>`); an admin creates keys with `colloquy keys create`",
            ));
        };
        match self.engine.authenticate(&secret, chrono::Utc::now()).await? {
            Some((key, account)) => Ok(Caller { account, key: Some(key.id), expires_at: key.expires_at }),
            None => {
                Err(ApiError::unauthenticated("the API key is unknown, revoked or expired: ask an admin for a new one"))
            }
        }
    }

    /// Whether a key is known to be revoked (by this process, or found by the poll).
    pub fn is_revoked(&self, key: ApiKeyId) -> bool {
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).contains(&key)
    }

    /// Revocations as they happen.
    pub fn revocations(&self) -> broadcast::Receiver<ApiKeyId> {
        self.revocations.subscribe()
    }

    /// Records a revocation and tells open connections.
    pub fn revoked(&self, key: ApiKeyId) {
        if self.revoked.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            let _ = self.revocations.send(key);
        }
    }

    /// Polls the store for keys revoked by other processes, until the server stops.
    pub fn watch_revocations(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let auth = Arc::clone(self);
        tokio::spawn(async move {
            if !auth.is_on() {
                return;
            }
            let mut since = chrono::Utc::now() - chrono::Duration::seconds(1);
            let mut tick = tokio::time::interval(REVOCATION_POLL);
            loop {
                tick.tick().await;
                match auth.engine.api_keys_revoked_since(since).await {
                    Ok(revoked) => {
                        for (key, at) in revoked {
                            // Clocks of two processes may differ a little: look back a second.
                            since = since.max(at - chrono::Duration::seconds(1));
                            auth.revoked(key);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not look for revoked keys"),
                }
            }
        })
    }
}

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(|key| key.trim().to_owned());
    bearer.or_else(|| {
        headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|protocol| protocol.trim().strip_prefix(KEY_SUBPROTOCOL_PREFIX).map(str::to_owned))
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = state.auth.authenticate(&parts.headers).await?;
        state.limits.check_request(&caller)?;
        Ok(caller)
    }
}
