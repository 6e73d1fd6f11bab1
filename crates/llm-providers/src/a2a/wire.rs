//! The A2A wire format in both versions peers speak: 1.0 (the current specification: unions by
//! which field is present, `TASK_STATE_*`, `ROLE_*`, `SendMessage`) and 0.3 (`kind`
//! discriminators, `working`, `user`, `message/send`). Colloquy works in 1.0 shapes and converts
//! at the edge: [`to_v03`] what it sends a 0.3 peer, [`from_v03`] what a 0.3 peer sent. The A2A
//! server in the gateway uses the same conversions as the client here.

use colloquy_core_model::{ContentPart, MediaSource};
use serde_json::{Map, Value, json};

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A2A 1.0.
    V1,
    /// A2A 0.3.
    V03,
}

/// The JSON-RPC methods a task needs, by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Send a message and get the task (or a message) back.
    Send,
    /// Send a message and follow its task over SSE.
    Stream,
    /// Read a task.
    Get,
    /// Cancel a task.
    Cancel,
    /// Follow a task's stream again.
    Subscribe,
}

impl Method {
    const ALL: [Self; 5] = [Self::Send, Self::Stream, Self::Get, Self::Cancel, Self::Subscribe];

    /// The method's name in `version`.
    pub const fn name(self, version: Version) -> &'static str {
        match (version, self) {
            (Version::V1, Self::Send) => "SendMessage",
            (Version::V1, Self::Stream) => "SendStreamingMessage",
            (Version::V1, Self::Get) => "GetTask",
            (Version::V1, Self::Cancel) => "CancelTask",
            (Version::V1, Self::Subscribe) => "SubscribeToTask",
            (Version::V03, Self::Send) => "message/send",
            (Version::V03, Self::Stream) => "message/stream",
            (Version::V03, Self::Get) => "tasks/get",
            (Version::V03, Self::Cancel) => "tasks/cancel",
            (Version::V03, Self::Subscribe) => "tasks/resubscribe",
        }
    }

    /// The method a name stands for, and the version it belongs to.
    pub fn parse(name: &str) -> Option<(Self, Version)> {
        [Version::V1, Version::V03]
            .into_iter()
            .find_map(|version| Self::ALL.into_iter().find(|m| m.name(version) == name).map(|m| (m, version)))
    }
}

/// Content as A2A 1.0 parts: text; images and files by `url` or inline `raw` bytes; application
/// JSON (`custom`) as `data`. Tool calls and results are the agent's own business: none.
pub fn parts_of(content: &[ContentPart]) -> Vec<Value> {
    let media = |source: &MediaSource, mut part: Value| {
        match source {
            MediaSource::Url { url } => part["url"] = json!(url),
            MediaSource::Base64 { mime_type, data } => {
                part["raw"] = json!(data);
                part["mediaType"] = json!(mime_type);
            }
        }
        part
    };
    content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(json!({ "text": text })),
            ContentPart::Image { source } => Some(media(source, json!({}))),
            ContentPart::File { name, source } => Some(media(source, json!({ "filename": name }))),
            ContentPart::Custom { value } => Some(json!({ "data": value })),
            ContentPart::ToolCall { .. } | ContentPart::ToolResult { .. } => None,
        })
        .collect()
}

/// Task states: 1.0 name and 0.3 name.
const STATES: [(&str, &str); 9] = [
    ("TASK_STATE_SUBMITTED", "submitted"),
    ("TASK_STATE_WORKING", "working"),
    ("TASK_STATE_INPUT_REQUIRED", "input-required"),
    ("TASK_STATE_COMPLETED", "completed"),
    ("TASK_STATE_CANCELED", "canceled"),
    ("TASK_STATE_FAILED", "failed"),
    ("TASK_STATE_REJECTED", "rejected"),
    ("TASK_STATE_AUTH_REQUIRED", "auth-required"),
    ("TASK_STATE_UNSPECIFIED", "unknown"),
];

const ROLES: [(&str, &str); 2] = [("ROLE_USER", "user"), ("ROLE_AGENT", "agent")];

fn rename(value: &mut Value, table: &[(&str, &str)], to_v03: bool) {
    if let Some(name) = value.as_str()
        && let Some((v1, v03)) = table.iter().find(|(v1, v03)| name == if to_v03 { *v1 } else { *v03 })
    {
        *value = Value::from(if to_v03 { *v03 } else { *v1 });
    }
}

fn each(value: &mut Value, key: &str, convert: fn(&mut Value)) {
    if let Some(list) = value.get_mut(key).and_then(Value::as_array_mut) {
        list.iter_mut().for_each(convert);
    }
}

fn one(value: &mut Value, key: &str, convert: fn(&mut Value)) {
    if let Some(inner) = value.get_mut(key).filter(|v| !v.is_null()) {
        convert(inner);
    }
}

/// A 1.0 part (`text`, `raw`, `url` or `data`, with `mediaType` and `filename`) as 0.3 has it.
fn part_to_v03(part: &mut Value) {
    let Some(fields) = part.as_object_mut() else { return };
    let metadata = fields.remove("metadata");
    let mut out = if let Some(text) = fields.remove("text") {
        json!({ "kind": "text", "text": text })
    } else if let Some(data) = fields.remove("data") {
        // 0.3 data is an object.
        let data = if data.is_object() { data } else { json!({ "value": data }) };
        json!({ "kind": "data", "data": data })
    } else {
        let mut file = Map::new();
        if let Some(raw) = fields.remove("raw") {
            file.insert("bytes".to_owned(), raw);
        }
        if let Some(url) = fields.remove("url") {
            file.insert("uri".to_owned(), url);
        }
        if let Some(media) = fields.remove("mediaType") {
            file.insert("mimeType".to_owned(), media);
        }
        if let Some(name) = fields.remove("filename") {
            file.insert("name".to_owned(), name);
        }
        json!({ "kind": "file", "file": file })
    };
    if let Some(metadata) = metadata {
        out["metadata"] = metadata;
    }
    *part = out;
}

/// A 0.3 part (`kind` text, file or data) as 1.0 has it.
fn part_from_v03(part: &mut Value) {
    let Some(fields) = part.as_object_mut() else { return };
    if fields.remove("kind").is_none() && !fields.contains_key("file") {
        return; // already 1.0
    }
    let mut out = Map::new();
    if let Some(file) = fields.remove("file") {
        for (from, to) in [("bytes", "raw"), ("uri", "url"), ("mimeType", "mediaType"), ("name", "filename")] {
            if let Some(value) = file.get(from).filter(|v| !v.is_null()) {
                out.insert(to.to_owned(), value.clone());
            }
        }
    }
    out.extend(std::mem::take(fields));
    *part = Value::Object(out);
}

fn message_to_v03(message: &mut Value) {
    each(message, "parts", part_to_v03);
    one(message, "role", |role| rename(role, &ROLES, true));
    message["kind"] = "message".into();
}

fn message_from_v03(message: &mut Value) {
    each(message, "parts", part_from_v03);
    one(message, "role", |role| rename(role, &ROLES, false));
    if let Some(fields) = message.as_object_mut() {
        fields.remove("kind");
    }
}

fn status_to_v03(status: &mut Value) {
    one(status, "state", |state| rename(state, &STATES, true));
    one(status, "message", message_to_v03);
}

fn status_from_v03(status: &mut Value) {
    one(status, "state", |state| rename(state, &STATES, false));
    one(status, "message", message_from_v03);
}

fn artifact_to_v03(artifact: &mut Value) {
    each(artifact, "parts", part_to_v03);
}

fn artifact_from_v03(artifact: &mut Value) {
    each(artifact, "parts", part_from_v03);
}

fn task_to_v03(task: &mut Value) {
    one(task, "status", status_to_v03);
    each(task, "history", message_to_v03);
    each(task, "artifacts", artifact_to_v03);
    task["kind"] = "task".into();
}

fn task_from_v03(task: &mut Value) {
    one(task, "status", status_from_v03);
    each(task, "history", message_from_v03);
    each(task, "artifacts", artifact_from_v03);
    if let Some(fields) = task.as_object_mut() {
        fields.remove("kind");
    }
}

/// Whether a 1.0 state ends the stream of a 0.3 status update (`final`).
fn is_final(state: &str) -> bool {
    !matches!(state, "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING" | "TASK_STATE_UNSPECIFIED")
}

/// A 1.0 result as a 0.3 peer expects it: a stream response (`{"task": ...}`,
/// `{"statusUpdate": ...}`, `{"artifactUpdate": ...}`, `{"message": ...}`) or a bare task
/// becomes the object with its `kind`.
pub fn to_v03(mut result: Value) -> Value {
    let Some(fields) = result.as_object_mut() else { return result };
    if let Some(mut task) = fields.remove("task") {
        task_to_v03(&mut task);
        return task;
    }
    if let Some(mut message) = fields.remove("message") {
        message_to_v03(&mut message);
        return message;
    }
    if let Some(mut update) = fields.remove("statusUpdate") {
        let state = update["status"]["state"].as_str().unwrap_or_default().to_owned();
        one(&mut update, "status", status_to_v03);
        update["final"] = is_final(&state).into();
        update["kind"] = "status-update".into();
        return update;
    }
    if let Some(mut update) = fields.remove("artifactUpdate") {
        one(&mut update, "artifact", artifact_to_v03);
        update["kind"] = "artifact-update".into();
        return update;
    }
    if fields.contains_key("status") {
        task_to_v03(&mut result);
    }
    result
}

/// A 0.3 result (an object with a `kind`) as the 1.0 stream response it stands for; a result
/// without a `kind` is taken as 1.0 already.
pub fn from_v03(mut result: Value) -> Value {
    let kind = result.get("kind").and_then(Value::as_str).map(str::to_owned);
    let (key, convert): (&str, fn(&mut Value)) = match kind.as_deref() {
        Some("task") => ("task", task_from_v03),
        Some("message") => ("message", message_from_v03),
        Some("status-update") => ("statusUpdate", |update| one(update, "status", status_from_v03)),
        Some("artifact-update") => ("artifactUpdate", |update| one(update, "artifact", artifact_from_v03)),
        _ => return result,
    };
    convert(&mut result);
    if let Some(fields) = result.as_object_mut() {
        fields.remove("kind");
        fields.remove("final");
    }
    json!({ key: result })
}

/// A 0.3 message a peer sent (`message/send` params) in 1.0 shape.
pub fn message_params_from_v03(params: &mut Value) {
    one(params, "message", message_from_v03);
    // 0.3 waits unless told `blocking: false`; 1.0 waits unless told `returnImmediately`.
    if let Some(configuration) = params.get_mut("configuration").and_then(Value::as_object_mut)
        && let Some(blocking) = configuration.remove("blocking")
    {
        configuration.insert("returnImmediately".to_owned(), Value::Bool(blocking == Value::Bool(false)));
    }
}

/// A 1.0 `SendMessage` params as a 0.3 peer takes them.
pub fn message_params_to_v03(params: &mut Value) {
    one(params, "message", message_to_v03);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_and_its_updates_round_trip_through_v03() {
        let task = json!({ "task": {
            "id": "t", "contextId": "c",
            "status": { "state": "TASK_STATE_COMPLETED", "message": {
                "messageId": "m", "role": "ROLE_AGENT", "parts": [{ "text": "hi" }] } },
            "history": [{ "messageId": "u", "role": "ROLE_USER", "parts": [
                { "text": "look" },
                { "url": "https://example.com/a.png", "mediaType": "image/png", "filename": "a.png" },
                { "data": { "n": 1 } },
            ] }],
            "artifacts": [{ "artifactId": "a", "parts": [{ "text": "hi" }] }],
        } });
        let old = to_v03(task.clone());
        assert_eq!(old["kind"], "task");
        assert_eq!(old["status"]["state"], "completed");
        assert_eq!(old["status"]["message"]["role"], "agent");
        assert_eq!(old["history"][0]["parts"][0], json!({ "kind": "text", "text": "look" }));
        assert_eq!(
            old["history"][0]["parts"][1],
            json!({ "kind": "file", "file": { "uri": "https://example.com/a.png", "mimeType": "image/png", "name": "a.png" } })
        );
        assert_eq!(old["history"][0]["parts"][2], json!({ "kind": "data", "data": { "n": 1 } }));
        // `kind` is gone again, and every field is where 1.0 has it.
        assert_eq!(from_v03(old), task);

        let update =
            json!({ "statusUpdate": { "taskId": "t", "contextId": "c", "status": { "state": "TASK_STATE_WORKING" } } });
        let old = to_v03(update.clone());
        assert_eq!((old["kind"].as_str(), old["final"].as_bool()), (Some("status-update"), Some(false)));
        assert_eq!(from_v03(old), update);
        let artifact = json!({ "artifactUpdate": { "taskId": "t", "contextId": "c", "append": true,
            "artifact": { "artifactId": "a", "parts": [{ "text": "x" }] } } });
        assert_eq!(from_v03(to_v03(artifact.clone())), artifact);
    }

    #[test]
    fn method_names_tell_their_version() {
        assert_eq!(Method::parse("message/stream"), Some((Method::Stream, Version::V03)));
        assert_eq!(Method::parse("SubscribeToTask"), Some((Method::Subscribe, Version::V1)));
        assert_eq!(Method::parse("tasks/resubscribe"), Some((Method::Subscribe, Version::V03)));
        assert_eq!(Method::parse("tasks/list"), None);
    }

    #[test]
    fn v03_blocking_false_is_return_immediately() {
        let mut params = json!({ "message": { "kind": "message", "role": "user", "messageId": "m",
            "parts": [{ "kind": "text", "text": "hi" }] }, "configuration": { "blocking": false } });
        message_params_from_v03(&mut params);
        assert_eq!(params["configuration"]["returnImmediately"], true);
        assert_eq!(params["message"], json!({ "role": "ROLE_USER", "messageId": "m", "parts": [{ "text": "hi" }] }));
    }
}
