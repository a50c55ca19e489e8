//! ZeroClaw's `config.toml` (schema of zeroclaw 0.1.7, `src/config/schema.rs`) from the tenant's
//! configuration and the platform's gateway settings.

use std::collections::BTreeMap;

use common::agent_config::{DelegateAgent, RenderedAgentConfig, PERSONA_FILES};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("temperature {0} is outside 0.0..=2.0")]
    Temperature(f64),
    #[error("{field} is empty")]
    Empty { field: String },
    #[error("rendering config.toml: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// Where and how the gateway listens.
pub struct Gateway<'a> {
    pub host: &'a str,
    pub port: u16,
    /// The tenant's agent credential, in the clear; only its hash is written.
    pub agent_token: &'a str,
}

/// The SHA-256 (lowercase hex) ZeroClaw's pairing guard stores for a bearer token: written
/// instead of the token so the credential is not on disk, and so a token that happens to look like
/// a hash (64 hex digits) is not taken for one.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Serialize)]
struct ConfigToml<'a> {
    default_provider: &'a str,
    default_model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_url: Option<&'a str>,
    default_temperature: f64,
    gateway: GatewayToml<'a>,
    memory: MemoryToml,
    reliability: ReliabilityToml,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    agents: BTreeMap<&'a str, DelegateToml<'a>>,
}

#[derive(Serialize)]
struct GatewayToml<'a> {
    host: &'a str,
    port: u16,
    allow_public_bind: bool,
    require_pairing: bool,
    paired_tokens: Vec<String>,
    /// 0 = unlimited: every request comes from the router's address, so a per-client limit would
    /// be a per-tenant cap on the router (default 60 a minute).
    webhook_rate_limit_per_minute: u32,
    /// Pairing is never used (the token is preset); keep `/pair` guessing slow.
    pair_rate_limit_per_minute: u32,
    trust_forwarded_headers: bool,
    /// ZeroClaw answers a repeated `X-Idempotency-Key` with no reply at all; the router's inbox
    /// already dedupes, and it repeats a key only after a failed attempt, which must be answered.
    idempotency_ttl_secs: u64,
}

#[derive(Serialize)]
struct MemoryToml {
    backend: &'static str,
    auto_save: bool,
}

#[derive(Serialize)]
struct ReliabilityToml {
    /// One retry, so a failing model is reported well inside the gateway's fixed 30 s cut.
    provider_retries: u32,
    provider_backoff_ms: u64,
}

#[derive(Serialize)]
struct DelegateToml<'a> {
    provider: &'a str,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
}

fn check_temperature(t: f64) -> Result<f64, RenderError> {
    if (0.0..=2.0).contains(&t) {
        Ok(t)
    } else {
        Err(RenderError::Temperature(t))
    }
}

fn non_empty<'a>(value: &'a str, field: &str) -> Result<&'a str, RenderError> {
    if value.trim().is_empty() {
        Err(RenderError::Empty {
            field: field.to_owned(),
        })
    } else {
        Ok(value)
    }
}

/// A delegate's system prompt: its own prompt, then its persona files (ZeroClaw's order first,
/// then the others by name), each under its file name.
fn delegate_prompt(agent: &DelegateAgent) -> Option<String> {
    let mut parts: Vec<String> = agent.system_prompt.iter().cloned().collect();
    let known = PERSONA_FILES
        .iter()
        .filter_map(|n| agent.files.get_key_value(*n));
    let others = agent
        .files
        .iter()
        .filter(|(n, _)| !PERSONA_FILES.contains(&n.as_str()));
    for (name, content) in known.chain(others) {
        parts.push(format!("### {name}\n\n{}", content.trim()));
    }
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// Renders `config.toml`. The LLM API key is not in it: the launcher hands it to ZeroClaw in its
/// environment, so the file holds no secret.
pub fn render(config: &RenderedAgentConfig, gateway: &Gateway<'_>) -> Result<String, RenderError> {
    let mut agents = BTreeMap::new();
    for (slug, agent) in &config.agents {
        non_empty(slug, "agent name")?;
        agents.insert(
            slug.as_str(),
            DelegateToml {
                provider: non_empty(
                    agent.provider.as_deref().unwrap_or(&config.provider),
                    &format!("agents.{slug}.provider"),
                )?,
                model: non_empty(
                    agent.model.as_deref().unwrap_or(&config.model),
                    &format!("agents.{slug}.model"),
                )?,
                temperature: agent.temperature.map(check_temperature).transpose()?,
                system_prompt: delegate_prompt(agent),
            },
        );
    }
    let doc = ConfigToml {
        default_provider: non_empty(&config.provider, "provider")?,
        default_model: non_empty(&config.model, "model")?,
        api_url: config.api_url.as_deref().filter(|u| !u.trim().is_empty()),
        default_temperature: check_temperature(config.temperature)?,
        gateway: GatewayToml {
            host: gateway.host,
            port: gateway.port,
            allow_public_bind: true,
            require_pairing: true,
            paired_tokens: vec![token_hash(gateway.agent_token)],
            webhook_rate_limit_per_minute: 0,
            pair_rate_limit_per_minute: 5,
            trust_forwarded_headers: false,
            idempotency_ttl_secs: 1,
        },
        memory: MemoryToml {
            backend: "sqlite",
            auto_save: true,
        },
        reliability: ReliabilityToml {
            provider_retries: 1,
            provider_backoff_ms: 500,
        },
        agents,
    };
    Ok(toml::to_string(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> RenderedAgentConfig {
        RenderedAgentConfig {
            tenant_id: "bob".into(),
            provider: "llamacpp".into(),
            api_url: Some("http://127.0.0.1:8081/v1".into()),
            model: "qwen".into(),
            temperature: 0.3,
            files: Default::default(),
            agents: Default::default(),
        }
    }

    const GW: Gateway<'static> = Gateway {
        host: "0.0.0.0",
        port: 3000,
        agent_token: "s3cret-agent-token",
    };

    fn parse(text: &str) -> toml::Table {
        text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_gateway_listens_publicly_and_accepts_only_the_tenant_credential() {
        let text = render(&tenant(), &GW).unwrap();
        let doc = parse(&text);
        assert_eq!(doc["default_provider"].as_str(), Some("llamacpp"));
        assert_eq!(doc["default_model"].as_str(), Some("qwen"));
        assert_eq!(doc["api_url"].as_str(), Some("http://127.0.0.1:8081/v1"));
        assert_eq!(doc["default_temperature"].as_float(), Some(0.3));
        let gw = doc["gateway"].as_table().unwrap();
        assert_eq!(gw["host"].as_str(), Some("0.0.0.0"));
        assert_eq!(gw["port"].as_integer(), Some(3000));
        assert_eq!(gw["allow_public_bind"].as_bool(), Some(true));
        assert_eq!(gw["require_pairing"].as_bool(), Some(true));
        assert_eq!(gw["webhook_rate_limit_per_minute"].as_integer(), Some(0));
        let tokens = gw["paired_tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 1);
        // ZeroClaw's pairing guard keeps 64-hex values as hashes of the bearer token.
        let hash = tokens[0].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, token_hash("s3cret-agent-token"));
        assert_ne!(hash, token_hash("another-tenant-token"));
        assert!(
            !text.contains("s3cret-agent-token"),
            "the credential itself is never written:\n{text}"
        );
        assert_eq!(doc["memory"]["backend"].as_str(), Some("sqlite"));
    }

    #[test]
    fn delegates_get_their_own_model_and_persona() {
        let mut cfg = tenant();
        cfg.api_url = None;
        let mut files = BTreeMap::new();
        files.insert("notes.md".to_string(), "extra".to_string());
        files.insert("SOUL.md".to_string(), "  careful researcher  ".to_string());
        cfg.agents.insert(
            "research-bot".into(),
            DelegateAgent {
                model: Some("big".into()),
                temperature: Some(0.1),
                system_prompt: Some("You research.".into()),
                files,
                ..Default::default()
            },
        );
        cfg.agents.insert("plain".into(), DelegateAgent::default());
        let doc = parse(&render(&cfg, &GW).unwrap());
        assert!(doc.get("api_url").is_none());
        let r = doc["agents"]["research-bot"].as_table().unwrap();
        assert_eq!(r["provider"].as_str(), Some("llamacpp"));
        assert_eq!(r["model"].as_str(), Some("big"));
        assert_eq!(r["temperature"].as_float(), Some(0.1));
        assert_eq!(
            r["system_prompt"].as_str(),
            Some("You research.\n\n### SOUL.md\n\ncareful researcher\n\n### notes.md\n\nextra")
        );
        let p = doc["agents"]["plain"].as_table().unwrap();
        assert_eq!(p["model"].as_str(), Some("qwen"));
        assert!(p.get("system_prompt").is_none());
    }

    #[test]
    fn quotes_and_newlines_in_values_stay_values() {
        let mut cfg = tenant();
        cfg.model = "m\"odel\"\nother = 1".into();
        cfg.agents.insert(
            "a.b] x".into(),
            DelegateAgent {
                system_prompt: Some("line1\n\"\"\"\nline3 \\ end".into()),
                ..Default::default()
            },
        );
        let doc = parse(&render(&cfg, &GW).unwrap());
        assert_eq!(doc["default_model"].as_str(), Some("m\"odel\"\nother = 1"));
        assert!(doc.get("other").is_none());
        assert_eq!(
            doc["agents"]["a.b] x"]["system_prompt"].as_str(),
            Some("line1\n\"\"\"\nline3 \\ end")
        );
    }

    #[test]
    fn out_of_range_or_empty_values_are_refused() {
        let mut cfg = tenant();
        cfg.temperature = 2.5;
        assert!(matches!(
            render(&cfg, &GW),
            Err(RenderError::Temperature(_))
        ));
        cfg.temperature = f64::NAN;
        assert!(matches!(
            render(&cfg, &GW),
            Err(RenderError::Temperature(_))
        ));
        let mut cfg = tenant();
        cfg.model = " ".into();
        assert!(matches!(render(&cfg, &GW), Err(RenderError::Empty { .. })));
    }
}
