//! A tenant's agent configuration (`GET/PUT /tenants/{id}/config`): persona files, model, provider,
//! temperature and delegate agents. The orchestrator stores and validates it; the runtime hands it
//! to the agent as one JSON file, [`CONFIG_FILE`] in `AGENT_CONFIG_DIR`; the launcher renders it
//! into ZeroClaw's `config.toml` and workspace files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// File name of the rendered configuration in the agent's `AGENT_CONFIG_DIR`.
pub const CONFIG_FILE: &str = "tenant.json";

/// Persona files ZeroClaw puts into the model's system prompt, in the order it reads them.
pub const PERSONA_FILES: [&str; 6] = [
    "AGENTS.md",
    "SOUL.md",
    "TOOLS.md",
    "IDENTITY.md",
    "USER.md",
    "MEMORY.md",
];

/// What an operator sets for one tenant; every field is optional and falls back to the
/// platform-wide defaults (`LLM_PROVIDER`, `LLM_API_URL`, `LLM_MODEL` of the orchestrator).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Persona files by name (one of [`PERSONA_FILES`]) → content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Native delegate agents (`[agents.<slug>]` in ZeroClaw's config).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, DelegateAgent>,
}

/// One delegate agent: its own model and persona.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Persona and skill files of this delegate, by name → content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// The file the runtime writes for the agent: the tenant's configuration with the platform
/// defaults already applied, so the agent needs no other source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderedAgentConfig {
    pub tenant_id: String,
    pub provider: String,
    /// OpenAI-compatible base URL (`http://host:port/v1`) for providers that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    pub model: String,
    pub temperature: f64,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub agents: BTreeMap<String, DelegateAgent>,
}
