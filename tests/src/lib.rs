//! Test support shared by Colloquy's crates: a local server that speaks the OpenAI chat
//! completions wire format, so the real HTTP clients are exercised without any network.

pub mod mock_openai;
