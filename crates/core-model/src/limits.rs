//! Limits on what clients may hand in, shared by every layer that checks them: the gateway at
//! the edge, the engine for library callers, and the store, which refuses to write what it
//! could not read back.

/// How deeply a JSON document from a client (a WebSocket frame, a REST body, a custom content
/// part, `Options::context`) may nest arrays and objects. Stored events wrap what a client sent
/// in a few more levels, and every reader (serde_json, sqlx) stops at 128, so this leaves a wide
/// margin: what is accepted can always be read back.
pub const MAX_JSON_DEPTH: usize = 32;

/// How deeply any JSON value the store writes may nest; beyond it a row could become
/// unreadable (readers stop at 128 levels).
pub const MAX_STORED_JSON_DEPTH: usize = 100;

/// How many participants a conversation may be created with.
pub const MAX_PARTICIPANTS: usize = 256;

/// The longest `client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 256;

/// How many arrays and objects are nested at the deepest point of `value`: 0 for a scalar, 1
/// for `[]` or `{"a": 1}`, 2 for `[[1]]`. Iterative, so a deep value cannot overflow the stack.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0_usize)];
    while let Some((value, above)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let depth = above + 1;
        deepest = deepest.max(depth);
        pending.extend(children.map(|child| (child, depth)));
    }
    deepest
}
