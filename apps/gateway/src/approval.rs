//! Which tool calls wait for a conversation owner's answer: those of the tools listed in
//! `tools.require_approval`.

use std::collections::HashSet;

use async_trait::async_trait;
use colloquy_tools::{Approval, ApprovalHook, ToolCallRequest, ToolContext};

/// Asks for every call of the listed tools, allows the rest.
#[derive(Debug)]
pub struct RequireApproval {
    tools: HashSet<String>,
}

impl RequireApproval {
    pub fn new(tools: &[String]) -> Self {
        Self { tools: tools.iter().cloned().collect() }
    }
}

#[async_trait]
impl ApprovalHook for RequireApproval {
    async fn review(&self, call: &ToolCallRequest, _: &ToolContext) -> Approval {
        if self.tools.contains(&call.name) { Approval::Ask } else { Approval::Allow }
    }
}
