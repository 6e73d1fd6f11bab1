//! Leases: which node runs a conversation's turns, with a fencing token that every append by
//! that node carries so that a node which lost its lease cannot write any more.

use colloquy_core_model::{ConversationId, Timestamp};

/// A number that grows each time a conversation's lease is taken. An append fenced with a token
/// that is not the current lease's is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// A conversation's lease as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who holds it (a node name).
    pub holder: String,
    /// The token its appends carry.
    pub token: FencingToken,
    /// When another holder may take it unless it is renewed.
    pub expires_at: Timestamp,
}
