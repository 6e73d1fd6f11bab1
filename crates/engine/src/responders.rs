//! Who answers (DESIGN §4): finds the next message that awaits an answer and the agents that
//! answer it, by conversation kind and responder policy.

use std::collections::HashMap;
use std::sync::Arc;

use colloquy_core_model::{
    AgentSpec, ContentPart, Conversation, ConversationKind, Message, MessageRole, Participant, ParticipantId,
    ParticipantKind, ResponderPolicy, ToolChoice,
};
use colloquy_llm_providers::{LlmRequest, RequestMessage, ResponseAccumulator};
use futures::StreamExt;

use crate::inner::{ProviderRegistry, REMOTE_A2A_PROVIDER};
use crate::state::Loaded;

/// An agent that can answer, with how it answers.
pub(crate) type Agent = (Participant, AgentSpec);

/// The next message to answer and who answers it.
pub(crate) struct Plan {
    pub(crate) conversation: Conversation,
    /// Display names by participant, for prefixing other speakers' messages; `None` in
    /// `user_agent` conversations, where there is only one other side.
    pub(crate) names: Option<Arc<HashMap<ParticipantId, String>>>,
    /// The stored history at planning time.
    pub(crate) history: Vec<Message>,
    /// The message being answered.
    pub(crate) trigger: u64,
    /// In order; each runs one turn.
    pub(crate) responders: Vec<Agent>,
}

/// How `participant` answers, if it does: an agent by its spec; a service that is a remote A2A
/// agent by what that agent says (no prompt, no tools of Colloquy's).
fn answers(participant: &Participant) -> Option<Agent> {
    let spec = match participant.kind {
        ParticipantKind::Agent => participant.agent.clone()?,
        ParticipantKind::Service if participant.a2a_url.is_some() => AgentSpec {
            provider: REMOTE_A2A_PROVIDER.to_owned(),
            model: REMOTE_A2A_PROVIDER.to_owned(),
            system_prompt: None,
            tools: Vec::new(),
        },
        _ => return None,
    };
    Some((participant.clone(), spec))
}

/// Display names when the conversation has more than two sides.
pub(crate) fn names(
    kind: ConversationKind,
    participants: &[Participant],
) -> Option<Arc<HashMap<ParticipantId, String>>> {
    (kind != ConversationKind::UserAgent)
        .then(|| Arc::new(participants.iter().map(|p| (p.id, p.display_name.clone())).collect()))
}

/// Finds the first message after `answered_through` (or, for a fresh runner, after the newest
/// `agent_start`: everything before it was considered by an earlier runner) that some agent
/// should answer.
///
/// With `force` and nothing awaiting an answer, the first agent answers anyway: it continues
/// from the history as it is (the seeds' `continue`).
///
/// Works on the loaded state alone (no store reads); only the `selector` policy asks a model.
pub(crate) async fn plan(
    providers: &ProviderRegistry,
    loaded: &Loaded,
    answered_through: Option<u64>,
    force: bool,
) -> Option<Plan> {
    let (record, participants, history) = (&loaded.conversation, &loaded.participants, &loaded.history);
    let agents: Vec<Agent> = participants.iter().filter(|p| p.left_at.is_none()).filter_map(answers).collect();
    if agents.is_empty() {
        return None;
    }
    let is_agent = |id: Option<ParticipantId>| id.is_some_and(|id| agents.iter().any(|(a, _)| a.id == id));
    let threshold = match answered_through {
        Some(seq) => seq,
        None => loaded.last_turn_start.unwrap_or(0),
    };
    let names = names(record.kind, participants);
    let plan = |trigger, responders| Plan {
        conversation: record.clone(),
        names: names.clone(),
        history: history.clone(),
        trigger,
        responders,
    };
    for (position, message) in history.iter().enumerate().filter(|(_, m)| m.seq > threshold) {
        if !is_trigger(record, message, &history[..position], &is_agent) {
            continue;
        }
        let responders = responders(providers, record, message, &history[..=position], &agents, names.as_deref()).await;
        if !responders.is_empty() {
            return Some(plan(message.seq, responders));
        }
    }
    if force {
        let trigger = history.last().map_or(0, |m| m.seq);
        return Some(plan(trigger, agents.into_iter().take(1).collect()));
    }
    None
}

/// Whether a message asks for an answer: any human or service message; in agent-to-agent and
/// (for `mention` and `selector`) multi-party conversations also an agent's final reply, until
/// `max_exchanges` agent replies in a row or a reply with the stop marker.
fn is_trigger(
    conversation: &Conversation,
    message: &Message,
    before: &[Message],
    is_agent: &dyn Fn(Option<ParticipantId>) -> bool,
) -> bool {
    let from_agent = is_agent(message.sender);
    match message.role {
        MessageRole::User => !from_agent,
        MessageRole::Assistant if from_agent && message.tool_calls().next().is_none() => {
            let options = &conversation.options;
            let chains = match conversation.kind {
                ConversationKind::UserAgent => false,
                ConversationKind::AgentAgent => true,
                ConversationKind::MultiParty => {
                    matches!(options.responder_policy, ResponderPolicy::Mention | ResponderPolicy::Selector)
                }
            };
            let stopped = options.stop_marker.as_deref().is_some_and(|marker| message.text().contains(marker));
            let replies_in_a_row = 1 + before
                .iter()
                .rev()
                .take_while(|m| m.role != MessageRole::User || is_agent(m.sender))
                .filter(|m| m.role == MessageRole::Assistant && m.tool_calls().next().is_none())
                .count();
            chains && !stopped && replies_in_a_row < options.max_exchanges as usize
        }
        _ => false,
    }
}

/// The agents that answer `message`, in order.
async fn responders(
    providers: &ProviderRegistry,
    conversation: &Conversation,
    message: &Message,
    history: &[Message],
    agents: &[Agent],
    names: Option<&HashMap<ParticipantId, String>>,
) -> Vec<Agent> {
    let others: Vec<&Agent> = agents.iter().filter(|(a, _)| Some(a.id) != message.sender).collect();
    let next_after = |speaker: Option<ParticipantId>| -> Option<&Agent> {
        let start = agents.iter().position(|(a, _)| Some(a.id) == speaker).map_or(0, |i| i + 1);
        (0..agents.len()).map(|i| &agents[(start + i) % agents.len()]).find(|(a, _)| Some(a.id) != message.sender)
    };
    let picked: Vec<&Agent> = match conversation.kind {
        ConversationKind::UserAgent => agents.first().into_iter().collect(),
        ConversationKind::AgentAgent => next_after(message.sender).into_iter().collect(),
        ConversationKind::MultiParty => match conversation.options.responder_policy {
            ResponderPolicy::Mention => {
                let text = message.text().to_lowercase();
                others
                    .into_iter()
                    .filter(|(a, _)| text.contains(&format!("@{}", a.display_name.to_lowercase())))
                    .collect()
            }
            ResponderPolicy::All => others,
            ResponderPolicy::RoundRobin => {
                let last_speaker =
                    history.iter().rev().find(|m| m.role == MessageRole::Assistant).and_then(|m| m.sender);
                next_after(last_speaker).into_iter().collect()
            }
            ResponderPolicy::Selector => {
                let chosen = select_speaker(providers, &others, history, names).await;
                chosen.or_else(|| next_after(message.sender)).into_iter().collect()
            }
        },
    };
    picked.into_iter().cloned().collect()
}

/// Asks the first candidate's model who should speak next; `None` if it fails or names nobody.
async fn select_speaker<'a>(
    providers: &ProviderRegistry,
    candidates: &[&'a Agent],
    history: &[Message],
    names: Option<&HashMap<ParticipantId, String>>,
) -> Option<&'a Agent> {
    let (_, spec) = candidates.first()?;
    let provider = providers.get(&spec.provider)?;
    let name_of = |id: Option<ParticipantId>| {
        id.and_then(|id| names.and_then(|n| n.get(&id)).cloned()).unwrap_or_else(|| "someone".to_owned())
    };
    let transcript: Vec<String> = history
        .iter()
        .rev()
        .filter(|m| matches!(m.role, MessageRole::User | MessageRole::Assistant) && !m.text().is_empty())
        .take(20)
        .map(|m| format!("{}: {}", name_of(m.sender), m.text()))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let choices: Vec<&str> = candidates.iter().map(|(a, _)| a.display_name.as_str()).collect();
    let request = LlmRequest {
        model: spec.model.clone(),
        system_prompt: Some(format!(
            "You choose who speaks next in a group conversation. Answer with exactly one name from: {}.",
            choices.join(", ")
        )),
        messages: vec![RequestMessage {
            role: MessageRole::User,
            content: vec![ContentPart::text(format!("{}\n\nWho speaks next?", transcript.join("\n")))],
        }],
        tools: Vec::new(),
        tool_choice: ToolChoice::None,
        temperature: Some(0.0),
        max_tokens: Some(20),
        conversation: None,
        provider_state: None,
    };
    let mut stream = provider.stream(request);
    let mut accumulator = ResponseAccumulator::new();
    while let Some(event) = stream.next().await {
        accumulator.push(&event.ok()?);
    }
    let answer = accumulator.finish().content.iter().find_map(|p| match p {
        ContentPart::Text { text } => Some(text.to_lowercase()),
        _ => None,
    })?;
    candidates.iter().copied().find(|(a, _)| answer.contains(&a.display_name.to_lowercase()))
}
