//! The registry of tools an agent can be offered, each with its compiled argument schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use colloquy_core_model::ToolSpec;

use crate::Tool;

/// Why a tool could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Tool names must be usable by every provider.
    #[error("tool name `{0}` is invalid: use 1 to 64 letters, digits, `_` or `-`")]
    InvalidName(String),
    /// Two tools with one name.
    #[error("a tool named `{0}` is already registered: give the new one another name")]
    Duplicate(String),
    /// The tool's parameters are not a valid JSON Schema.
    #[error("tool `{name}` has an invalid parameters schema: {detail}")]
    InvalidSchema {
        /// The tool.
        name: String,
        /// What the schema compiler said.
        detail: String,
    },
}

pub(crate) struct RegisteredTool {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) validator: jsonschema::Validator,
    pub(crate) spec: ToolSpec,
}

/// Named tools with their compiled schemas. Built once at start and shared by `Arc`.
#[derive(Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, RegisteredTool>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry").field("tools", &self.tools.keys().collect::<Vec<_>>()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every built-in tool.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        for tool in crate::builtin::all() {
            // Built-ins have fixed, tested names and schemas.
            if let Err(error) = registry.register_arc(tool) {
                tracing::error!(%error, "built-in tool failed to register");
            }
        }
        registry
    }

    /// Adds a tool, compiling its schema (remote `$ref`s are never fetched).
    pub fn register(&mut self, tool: impl Tool) -> Result<(), RegistryError> {
        self.register_arc(Arc::new(tool))
    }

    /// Adds a shared tool.
    pub fn register_arc(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let name = tool.name().to_owned();
        let valid_name =
            (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(RegistryError::InvalidName(name));
        }
        if self.tools.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        let parameters = tool.parameters();
        let validator = jsonschema::validator_for(&parameters)
            .map_err(|e| RegistryError::InvalidSchema { name: name.clone(), detail: e.to_string() })?;
        let spec = ToolSpec { name: name.clone(), description: tool.description().to_owned(), parameters };
        self.tools.insert(name, RegisteredTool { tool, validator, spec });
        Ok(())
    }

    /// Every registered tool's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Whether a tool of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The specs of the named tools that are registered, in the order given.
    pub fn specs<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<ToolSpec> {
        names.into_iter().filter_map(|name| self.tools.get(name).map(|t| t.spec.clone())).collect()
    }

    /// Whether the named tool is registered and may be re-run after a crash.
    pub fn is_replay_safe(&self, name: &str) -> bool {
        self.tools.get(name).is_some_and(|t| t.tool.replay_safe())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredTool> {
        self.tools.get(name)
    }
}
