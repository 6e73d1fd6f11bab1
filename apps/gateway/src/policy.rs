//! Who may do what: the one authorization policy of every route and frame.
//!
//! An admin may do everything. Anyone else must be an active participant of the conversation,
//! bound to their account: `owner` and `member` read and post, `observer` only reads; only an
//! `owner` manages the conversation (participants, settings). A caller who may not see a
//! conversation gets `404 conversation_not_found`, exactly as for one that does not exist, so
//! ids cannot be probed; a participant who may see it but not do this gets `403 forbidden`.

use colloquy_core_model::{ConversationId, Participant, ParticipantId, ParticipantKind, ParticipantRole};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

/// What a caller wants to do with a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read it: get, messages, subscribe.
    Read,
    /// Post into it, and steer its turns (cancel).
    Post,
    /// Change who takes part and how it runs.
    Manage,
}

/// The caller's standing in one conversation.
#[derive(Debug, Clone)]
pub struct Access {
    /// The caller's own participant, if it has one.
    pub participant: Option<Participant>,
    /// Whether the caller is an admin.
    pub admin: bool,
}

/// The one policy function: may `caller` do `action` in the conversation with these
/// participants?
pub fn authorize(
    caller: &Caller,
    conversation: ConversationId,
    participants: &[Participant],
    action: Action,
) -> Result<Access, ApiError> {
    let own = participants.iter().find(|p| p.left_at.is_none() && p.account == Some(caller.account.id)).cloned();
    if caller.is_admin() {
        return Ok(Access { participant: own, admin: true });
    }
    let Some(participant) = own else {
        return Err(not_found(conversation));
    };
    let allowed = match action {
        Action::Read => true,
        Action::Post => participant.role != ParticipantRole::Observer,
        Action::Manage => participant.role == ParticipantRole::Owner,
    };
    if !allowed {
        let what = match action {
            Action::Read => "read",
            Action::Post => "post into or steer",
            Action::Manage => "manage",
        };
        return Err(ApiError::forbidden(format!(
            "your participant in conversation {conversation} is {:?} and may not {what} it: ask its owner for another role",
            participant.role
        )));
    }
    Ok(Access { participant: Some(participant), admin: false })
}

/// The participant a `send` posts as: the caller's own, or `requested` when the caller is an
/// admin or `requested` is a service or agent participant bound to the caller's account.
pub fn sender(
    caller: &Caller,
    access: &Access,
    participants: &[Participant],
    requested: Option<ParticipantId>,
) -> Result<Option<ParticipantId>, ApiError> {
    let own = access.participant.as_ref().map(|p| p.id);
    let Some(requested) = requested else {
        // An admin without a participant of its own posts as the conversation's first user.
        return Ok(own);
    };
    if Some(requested) == own || access.admin {
        return Ok(Some(requested));
    }
    let owned = participants.iter().any(|p| {
        p.id == requested
            && p.left_at.is_none()
            && p.account == Some(caller.account.id)
            && matches!(p.kind, ParticipantKind::Service | ParticipantKind::Agent)
    });
    if owned {
        Ok(Some(requested))
    } else {
        Err(ApiError::forbidden(format!(
            "you may not post as participant {requested}: leave `sender` out to post as yourself"
        )))
    }
}

/// Whether `caller` may have the gateway call the remote A2A agent at `url` (a service
/// participant's `a2a_url`): admins may; others only at the URL prefixes the operator lists in
/// `a2a_allowed_urls`, since otherwise anyone could make the gateway send requests into the
/// network it runs in.
pub fn may_call_remote_agent(config: &crate::Config, caller: &Caller, url: &str) -> Result<(), ApiError> {
    if caller.is_admin() || config.a2a_allowed_urls.iter().any(|prefix| url.starts_with(prefix.as_str())) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "only an admin may add a remote A2A agent at {url}: ask the operator to list its URL in a2a_allowed_urls"
    )))
}

/// Admin-only routes (accounts, keys).
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() { Ok(()) } else { Err(ApiError::forbidden("only an admin may manage accounts and keys")) }
}

fn not_found(conversation: ConversationId) -> ApiError {
    ApiError::not_found(
        ErrorCode::ConversationNotFound,
        format!("conversation {conversation} does not exist: create it first, or check the id"),
    )
}
