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

/// Largest single persona, skill or system-prompt text.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Largest sum of every text in one configuration.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;
/// Most delegate agents per tenant.
pub const MAX_DELEGATES: usize = 32;
/// Longest provider or model name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest delegate file name (before `.md`).
const MAX_DELEGATE_FILE_STEM: usize = 64;

/// Why a configuration was refused; the message names the field and never repeats file contents.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("files: {0:?} is not a persona file (expected one of {files})", files = PERSONA_FILES.join(", "))]
    UnknownPersonaFile(String),
    #[error("{field}: {bytes} bytes is over the limit of {MAX_FILE_BYTES} bytes")]
    FileTooLarge { field: String, bytes: usize },
    #[error("configuration holds {0} bytes of text, over the limit of {MAX_TOTAL_BYTES} bytes")]
    TooLarge(usize),
    #[error("agents: {0:?} is not a valid delegate name (lowercase letters, digits, '-' and '_', at most 32, starting with a letter or digit)")]
    BadDelegateName(String),
    #[error("agents: at most {MAX_DELEGATES} delegate agents, got {0}")]
    TooManyDelegates(usize),
    #[error("{field}: {name:?} is not a valid file name (letters, digits, '.', '-', '_', ending in .md)")]
    BadDelegateFile { field: String, name: String },
    #[error("{field}: temperature must be a number from 0 to 2, got {value}")]
    BadTemperature { field: String, value: f64 },
    #[error("{field}: must be 1 to {MAX_NAME_LEN} characters with no control characters or spaces at either end")]
    BadName { field: String },
    #[error("the configuration does not render: {0}")]
    Render(String),
}

/// Platform-wide defaults (the orchestrator's `LLM_PROVIDER`, `LLM_API_URL`, `LLM_MODEL`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformDefaults {
    pub provider: String,
    pub api_url: Option<String>,
    pub model: String,
    pub temperature: f64,
}

impl Default for PlatformDefaults {
    fn default() -> Self {
        PlatformDefaults {
            provider: "llamacpp".into(),
            api_url: None,
            model: "local-model".into(),
            temperature: 0.7,
        }
    }
}

fn check_name(field: &str, v: &Option<String>) -> Result<(), ConfigError> {
    let Some(v) = v else { return Ok(()) };
    let ok = !v.is_empty()
        && v.chars().count() <= MAX_NAME_LEN
        && v.trim() == v
        && !v.chars().any(char::is_control);
    ok.then_some(()).ok_or_else(|| ConfigError::BadName {
        field: field.to_owned(),
    })
}

fn check_temperature(field: &str, v: Option<f64>) -> Result<(), ConfigError> {
    match v {
        Some(t) if !(0.0..=2.0).contains(&t) || !t.is_finite() => {
            Err(ConfigError::BadTemperature {
                field: field.to_owned(),
                value: t,
            })
        }
        _ => Ok(()),
    }
}

fn check_size(field: String, text: &str, total: &mut usize) -> Result<(), ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ConfigError::FileTooLarge {
            field,
            bytes: text.len(),
        });
    }
    *total += text.len();
    Ok(())
}

/// `^[a-z0-9][a-z0-9_-]{0,31}$`
pub fn valid_delegate_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 32 && ok(b[0]) && b.iter().all(|&c| ok(c) || c == b'-' || c == b'_')
}

/// A plain `*.md` file name (no path): letters, digits, `.`, `-`, `_`.
fn valid_delegate_file(s: &str) -> bool {
    let Some(stem) = s.strip_suffix(".md") else {
        return false;
    };
    let b = stem.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_DELEGATE_FILE_STEM
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

impl AgentConfig {
    /// Checks names, sizes and ranges; a configuration that passes renders and is stored as is.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("provider", &self.provider)?;
        check_name("model", &self.model)?;
        check_temperature("temperature", self.temperature)?;
        let mut total = 0;
        for (name, text) in &self.files {
            if !PERSONA_FILES.contains(&name.as_str()) {
                return Err(ConfigError::UnknownPersonaFile(name.clone()));
            }
            check_size(format!("files.{name}"), text, &mut total)?;
        }
        if self.agents.len() > MAX_DELEGATES {
            return Err(ConfigError::TooManyDelegates(self.agents.len()));
        }
        for (slug, agent) in &self.agents {
            if !valid_delegate_name(slug) {
                return Err(ConfigError::BadDelegateName(slug.clone()));
            }
            let at = |f: &str| format!("agents.{slug}.{f}");
            check_name(&at("provider"), &agent.provider)?;
            check_name(&at("model"), &agent.model)?;
            check_temperature(&at("temperature"), agent.temperature)?;
            if let Some(p) = &agent.system_prompt {
                check_size(at("system_prompt"), p, &mut total)?;
            }
            for (name, text) in &agent.files {
                if !valid_delegate_file(name) {
                    return Err(ConfigError::BadDelegateFile {
                        field: at("files"),
                        name: name.clone(),
                    });
                }
                check_size(at(&format!("files.{name}")), text, &mut total)?;
            }
        }
        if total > MAX_TOTAL_BYTES {
            return Err(ConfigError::TooLarge(total));
        }
        Ok(())
    }

    /// Validates, then applies the platform defaults: the file the agent reads.
    pub fn render(
        &self,
        tenant_id: &str,
        defaults: &PlatformDefaults,
    ) -> Result<RenderedAgentConfig, ConfigError> {
        self.validate()?;
        let rendered = RenderedAgentConfig {
            tenant_id: tenant_id.to_owned(),
            provider: self
                .provider
                .clone()
                .unwrap_or_else(|| defaults.provider.clone()),
            api_url: defaults.api_url.clone(),
            model: self.model.clone().unwrap_or_else(|| defaults.model.clone()),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            files: self.files.clone(),
            agents: self.agents.clone(),
        };
        // The agent reads it back with the same types: prove that it does before it is stored.
        let json = serde_json::to_vec(&rendered).map_err(|e| ConfigError::Render(e.to_string()))?;
        serde_json::from_slice::<RenderedAgentConfig>(&json)
            .map_err(|e| ConfigError::Render(e.to_string()))?;
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(name: &str, text: &str) -> AgentConfig {
        AgentConfig {
            files: BTreeMap::from([(name.to_owned(), text.to_owned())]),
            ..Default::default()
        }
    }

    #[test]
    fn good_configs_render_with_defaults() {
        let mut c = with_file("SOUL.md", "You are kind.");
        c.agents.insert(
            "research-1".into(),
            DelegateAgent {
                files: BTreeMap::from([("skill_web.md".into(), "search".into())]),
                temperature: Some(0.0),
                ..Default::default()
            },
        );
        let d = PlatformDefaults {
            api_url: Some("http://127.0.0.1:8081/v1".into()),
            ..Default::default()
        };
        let r = c.render("bob", &d).unwrap();
        assert_eq!(
            (r.provider.as_str(), r.model.as_str(), r.temperature),
            ("llamacpp", "local-model", 0.7)
        );
        assert_eq!(r.api_url, d.api_url);
        assert_eq!(r.files["SOUL.md"], "You are kind.");
        c.model = Some("qwen2.5".into());
        c.temperature = Some(2.0);
        let r = c.render("bob", &d).unwrap();
        assert_eq!((r.model.as_str(), r.temperature), ("qwen2.5", 2.0));
        assert!(AgentConfig::default().render("bob", &d).is_ok());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let big = "x".repeat(MAX_FILE_BYTES + 1);
        let cases: Vec<(AgentConfig, &str)> = vec![
            (
                with_file("EVIL.md", "x"),
                "\"EVIL.md\" is not a persona file",
            ),
            (with_file("../SOUL.md", "x"), "not a persona file"),
            (with_file("SOUL.md", &big), "files.SOUL.md: 65537 bytes"),
            (
                AgentConfig {
                    temperature: Some(2.5),
                    ..Default::default()
                },
                "temperature must be a number from 0 to 2, got 2.5",
            ),
            (
                AgentConfig {
                    temperature: Some(-0.1),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                AgentConfig {
                    model: Some(String::new()),
                    ..Default::default()
                },
                "model: must be 1 to 200",
            ),
            (
                AgentConfig {
                    provider: Some("a\u{7}b".into()),
                    ..Default::default()
                },
                "provider: must be",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        let mut c = AgentConfig::default();
        c.agents.insert("Bad Name".into(), DelegateAgent::default());
        assert!(matches!(c.validate(), Err(ConfigError::BadDelegateName(_))));
        let mut c = AgentConfig::default();
        c.agents.insert(
            "ok".into(),
            DelegateAgent {
                files: BTreeMap::from([("../x.md".into(), "x".into())]),
                ..Default::default()
            },
        );
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("agents.ok.files"));
        // Each file under the limit, all of them over the total.
        let mut c = AgentConfig::default();
        for name in PERSONA_FILES.iter().take(5) {
            c.files
                .insert((*name).into(), "y".repeat(MAX_FILE_BYTES - 1));
        }
        assert!(matches!(c.validate(), Err(ConfigError::TooLarge(_))));
        assert!(serde_json::from_str::<AgentConfig>(r#"{"modle":"x"}"#).is_err());
    }

    #[test]
    fn delegate_names() {
        for ok in ["a", "0", "a-b_c", &"a".repeat(32)] {
            assert!(valid_delegate_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", &"a".repeat(33), "a/b"] {
            assert!(!valid_delegate_name(bad), "{bad}");
        }
    }
}
