//! Test support shared by Colloquy's crates: local servers that speak the OpenAI chat
//! completions and Anthropic Messages wire formats, so the real HTTP clients are exercised without
//! any network.

pub mod mock_anthropic;
pub mod mock_openai;
mod server;
