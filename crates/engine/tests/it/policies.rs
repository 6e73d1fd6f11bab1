//! Who answers: user-agent, agent-agent and each multi-party responder policy, snapshot as
//! transcripts of the durable event log.

use colloquy_core_model::{ConversationKind, MessageRole, Options, ResponderPolicy};
use colloquy_llm_providers::ScriptStep;

use crate::support::Fixture;

fn policy(responder_policy: ResponderPolicy) -> Options {
    Options { responder_policy, ..Options::default() }
}

#[tokio::test]
async fn agent_agent_takes_turns_until_max_exchanges() -> anyhow::Result<()> {
    let script = ["Hi Bob, shall we plan?", "Yes Alice, step one.", "Step two.", "never said"].map(ScriptStep::text);
    let options = Options { max_exchanges: 3, ..Options::default() };
    let fixture =
        Fixture::party(ConversationKind::AgentAgent, options, &["ada"], &["alice", "bob"], script.to_vec()).await?;
    fixture.say("ada", "Plan a picnic together.").await?;
    insta::assert_snapshot!("agent_agent_max_exchanges", fixture.transcript().await?);
    // Bob saw Alice's words as user input with her name, never as his own.
    let bob_request = &fixture.provider.requests()[1];
    let roles: Vec<MessageRole> = bob_request.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [MessageRole::User, MessageRole::User]);
    assert_eq!(
        bob_request.messages[1].content,
        vec![colloquy_core_model::ContentPart::text("[alice]: Hi Bob, shall we plan?")]
    );
    Ok(())
}

#[tokio::test]
async fn agent_agent_stops_at_the_stop_marker() -> anyhow::Result<()> {
    let script = ["Let's go.", "Agreed. DONE", "never said"].map(ScriptStep::text);
    let options = Options { stop_marker: Some("DONE".into()), ..Options::default() };
    let fixture =
        Fixture::party(ConversationKind::AgentAgent, options, &["ada"], &["alice", "bob"], script.to_vec()).await?;
    fixture.say("ada", "Decide something.").await?;
    assert_eq!(fixture.provider.requests().len(), 2);
    insta::assert_snapshot!("agent_agent_stop_marker", fixture.transcript().await?);
    Ok(())
}

#[tokio::test]
async fn mention_wakes_only_the_named_agents_also_when_an_agent_names_another() -> anyhow::Result<()> {
    let script = ["@bob what do you think?", "I think yes."].map(ScriptStep::text);
    let fixture = Fixture::party(
        ConversationKind::MultiParty,
        policy(ResponderPolicy::Mention),
        &["ada", "cy"],
        &["alice", "bob"],
        script.to_vec(),
    )
    .await?;
    fixture.say("ada", "Morning all, nobody needs to answer this.").await?;
    fixture.say("cy", "@Alice can you ask around?").await?;
    insta::assert_snapshot!("multi_party_mention", fixture.transcript().await?);
    Ok(())
}

#[tokio::test]
async fn round_robin_gives_each_human_message_to_the_next_agent() -> anyhow::Result<()> {
    let script = ["alice here", "bob here", "alice again"].map(ScriptStep::text);
    let fixture = Fixture::party(
        ConversationKind::MultiParty,
        policy(ResponderPolicy::RoundRobin),
        &["ada"],
        &["alice", "bob"],
        script.to_vec(),
    )
    .await?;
    for text in ["one", "two", "three"] {
        fixture.say("ada", text).await?;
    }
    insta::assert_snapshot!("multi_party_round_robin", fixture.transcript().await?);
    Ok(())
}

#[tokio::test]
async fn all_lets_every_agent_answer_each_human_message() -> anyhow::Result<()> {
    let script = ["alice's view", "bob's view"].map(ScriptStep::text);
    let fixture = Fixture::party(
        ConversationKind::MultiParty,
        policy(ResponderPolicy::All),
        &["ada"],
        &["alice", "bob"],
        script.to_vec(),
    )
    .await?;
    fixture.say("ada", "Opinions?").await?;
    insta::assert_snapshot!("multi_party_all", fixture.transcript().await?);
    Ok(())
}

#[tokio::test]
async fn selector_asks_a_model_who_speaks_next() -> anyhow::Result<()> {
    let script = vec![
        ScriptStep::text("bob"),                // selection after ada's message
        ScriptStep::text("Bob answering."),     // bob's turn
        ScriptStep::text("alice"),              // selection after bob's reply
        ScriptStep::text("Alice adds a note."), // alice's turn
        ScriptStep::text("nobody"),             // selection names no one: round robin picks bob
        ScriptStep::text("Bob wraps up."),
    ];
    let options = Options { responder_policy: ResponderPolicy::Selector, max_exchanges: 3, ..Options::default() };
    let fixture = Fixture::party(ConversationKind::MultiParty, options, &["ada"], &["alice", "bob"], script).await?;
    fixture.say("ada", "Who knows about trains?").await?;
    insta::assert_snapshot!("multi_party_selector", fixture.transcript().await?);
    let selection = &fixture.provider.requests()[0];
    assert!(selection.system_prompt.as_deref().is_some_and(|p| p.contains("alice, bob")), "{selection:?}");
    Ok(())
}
