//! Integration tests of colloquy-llm-providers: the real HTTP clients against local mock servers
//! that speak each provider's wire format.

mod anthropic;
mod llama_cpp;
mod openai;
mod scenarios;
mod support;
