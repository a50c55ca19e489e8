//! The platform's agent environment, read once at start; a missing or malformed value names the
//! variable (never its value: several are secrets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent_config::{RenderedAgentConfig, CONFIG_FILE};
use common::secret::Secret;
use thiserror::Error;

/// Provider used when neither the tenant's configuration nor `LLM_PROVIDER` names one.
pub const DEFAULT_PROVIDER: &str = "llamacpp";
/// Model used when neither the tenant's configuration nor `LLM_MODEL` names one (an
/// OpenAI-compatible local server such as llama.cpp serves whatever it loaded under any name).
pub const DEFAULT_MODEL: &str = "default";
/// ZeroClaw's own default temperature.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid tenant configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} is for tenant {found:?}, not {expected:?}")]
    WrongTenant {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Everything the launcher needs from its environment. No `Debug`: it holds secrets.
pub struct Settings {
    pub tenant_id: String,
    pub host: String,
    pub port: u16,
    /// The per-tenant agent credential; ZeroClaw gets only its SHA-256.
    pub agent_token: Secret,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub agent_config_dir: Option<PathBuf>,
    pub llm_provider: String,
    pub llm_api_url: Option<String>,
    pub llm_model: String,
    pub llm_api_key: Option<Secret>,
    pub zeroclaw_bin: PathBuf,
    /// ZeroClaw's config directory (`config.toml`, `workspace/`).
    pub zeroclaw_config_dir: PathBuf,
    /// How long ZeroClaw gets to exit after the forwarded signal before it is killed; the rest of
    /// the pod's 30 s grace is for the save.
    pub stop_timeout: Duration,
    /// `AGENT_WARM=1`: a warm-pool launcher, waiting for `POST /assign` before ZeroClaw starts.
    pub warm: bool,
    /// `ASSIGN_TOKEN`, the pool credential of `POST /assign` (required when warm).
    pub assign_token: Option<Secret>,
    /// `ORCHESTRATOR_URL`: where an assigned warm launcher renews its state grants before it
    /// saves; unset, it saves with the grants it holds.
    pub orchestrator_url: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads the settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let required = |name: &'static str| get(name).ok_or(SettingsError::Missing { name });
        let tenant_id = required("TENANT_ID")?;
        let warm = get("AGENT_WARM").is_some_and(|v| v == "1");
        let assign_token = get(common::assignment::POOL_TOKEN_ENV).map(Secret::new);
        if warm && assign_token.is_none() {
            return Err(SettingsError::Missing {
                name: common::assignment::POOL_TOKEN_ENV,
            });
        }
        let agent_token = match get("AGENT_TOKEN") {
            Some(token) => Secret::new(token),
            // A warm-pool pod has no tenant until its assignment brings the credential.
            None if warm => random_token()?,
            None => {
                return Err(SettingsError::Missing {
                    name: "AGENT_TOKEN",
                })
            }
        };
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "/zeroclaw-data".into()));
        let zeroclaw_config_dir = get("ZEROCLAW_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("zeroclaw"));
        Ok(Settings {
            tenant_id,
            host: get("AGENT_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: number(&get, "AGENT_PORT", 3000)?,
            agent_token,
            state_dir: get("STATE_DIR")
                .unwrap_or_else(|| "/s3-state".into())
                .into(),
            agent_config_dir: get("AGENT_CONFIG_DIR").map(PathBuf::from),
            llm_provider: get("LLM_PROVIDER").unwrap_or_else(|| DEFAULT_PROVIDER.into()),
            llm_api_url: get("LLM_API_URL"),
            llm_model: get("LLM_MODEL").unwrap_or_else(|| DEFAULT_MODEL.into()),
            llm_api_key: get("LLM_API_KEY").map(Secret::new),
            zeroclaw_bin: get("ZEROCLAW_BIN")
                .unwrap_or_else(|| "zeroclaw".into())
                .into(),
            zeroclaw_config_dir,
            data_dir,
            stop_timeout: Duration::from_millis(number(&get, "LAUNCHER_STOP_TIMEOUT_MS", 10_000)?),
            warm,
            assign_token,
            orchestrator_url: get("ORCHESTRATOR_URL"),
        })
    }

    /// ZeroClaw's workspace: persona files and `memory/brain.db`.
    pub fn workspace(&self) -> PathBuf {
        self.zeroclaw_config_dir.join("workspace")
    }

    /// ZeroClaw's `HOME`.
    pub fn home(&self) -> PathBuf {
        self.data_dir.join("home")
    }

    /// The tenant's configuration: `$AGENT_CONFIG_DIR/tenant.json` when present, else the
    /// platform defaults from `LLM_*`.
    pub fn agent_config(&self) -> Result<RenderedAgentConfig, SettingsError> {
        let file = self
            .agent_config_dir
            .as_deref()
            .map(|d| d.join(CONFIG_FILE));
        match file {
            Some(path) if path.exists() => self.read_agent_config(&path),
            _ => Ok(RenderedAgentConfig {
                tenant_id: self.tenant_id.clone(),
                provider: self.llm_provider.clone(),
                api_url: self.llm_api_url.clone(),
                model: self.llm_model.clone(),
                temperature: DEFAULT_TEMPERATURE,
                files: Default::default(),
                agents: Default::default(),
            }),
        }
    }

    fn read_agent_config(&self, path: &Path) -> Result<RenderedAgentConfig, SettingsError> {
        let bytes = std::fs::read(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: RenderedAgentConfig =
            serde_json::from_slice(&bytes).map_err(|source| SettingsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        // A configuration mounted for another tenant would give this agent someone else's persona.
        if config.tenant_id != self.tenant_id {
            return Err(SettingsError::WrongTenant {
                path: path.to_owned(),
                found: config.tenant_id,
                expected: self.tenant_id.clone(),
            });
        }
        Ok(config)
    }
}

/// 32 random bytes from the kernel, hex-encoded.
fn random_token() -> Result<Secret, SettingsError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| SettingsError::Read {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(Secret::new(hex::encode(bytes)))
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, SettingsError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e: T::Err| SettingsError::Invalid {
                name,
                reason: format!("{v:?}: {e}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_and_required_values() {
        let s =
            Settings::from_lookup(lookup(&[("TENANT_ID", "bob"), ("AGENT_TOKEN", "t0k")])).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 3000));
        assert_eq!(s.data_dir, PathBuf::from("/zeroclaw-data"));
        assert_eq!(s.state_dir, PathBuf::from("/s3-state"));
        assert_eq!(
            s.workspace(),
            PathBuf::from("/zeroclaw-data/zeroclaw/workspace")
        );
        assert_eq!(s.zeroclaw_bin, PathBuf::from("zeroclaw"));
        let c = s.agent_config().unwrap();
        assert_eq!(
            (c.provider.as_str(), c.model.as_str()),
            ("llamacpp", "default")
        );

        for missing in ["TENANT_ID", "AGENT_TOKEN"] {
            let pairs: Vec<_> = [("TENANT_ID", "bob"), ("AGENT_TOKEN", "t0k")]
                .into_iter()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = Settings::from_lookup(lookup(&pairs)).err().unwrap();
            assert_eq!(err.to_string(), format!("{missing} is required"));
        }
        // A warm-pool pod has no Secret: a random credential nobody knows.
        let warm = |flag| {
            Settings::from_lookup(lookup(&[
                ("TENANT_ID", "warm-pool"),
                ("AGENT_WARM", flag),
                ("ASSIGN_TOKEN", "pool"),
            ]))
        };
        let (a, b) = (warm("1").unwrap(), warm("1").unwrap());
        assert!(a.warm);
        assert_eq!(a.agent_token.expose().len(), 64);
        assert_ne!(a.agent_token.expose(), b.agent_token.expose());
        assert!(warm("0").is_err());
        // A warm launcher without the pool credential could never be assigned.
        let err = Settings::from_lookup(lookup(&[("TENANT_ID", "warm-pool"), ("AGENT_WARM", "1")]))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "ASSIGN_TOKEN is required");

        let err = Settings::from_lookup(lookup(&[
            ("TENANT_ID", "bob"),
            ("AGENT_TOKEN", "t0k"),
            ("AGENT_PORT", "http"),
        ]))
        .err()
        .unwrap();
        assert!(err.to_string().contains("AGENT_PORT"), "{err}");
    }

    #[test]
    fn the_tenant_file_wins_over_the_defaults_and_must_name_this_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_dir = dir.path().to_str().unwrap();
        let s = Settings::from_lookup(lookup(&[
            ("TENANT_ID", "bob"),
            ("AGENT_TOKEN", "t0k"),
            ("AGENT_CONFIG_DIR", cfg_dir),
            ("LLM_MODEL", "platform-model"),
        ]))
        .unwrap();
        // No file yet: the platform defaults.
        assert_eq!(s.agent_config().unwrap().model, "platform-model");

        let file = dir.path().join(CONFIG_FILE);
        std::fs::write(
            &file,
            r#"{"tenant_id":"bob","provider":"llamacpp","model":"bob-model","temperature":0.2,
                "files":{"SOUL.md":"calm"}}"#,
        )
        .unwrap();
        let c = s.agent_config().unwrap();
        assert_eq!((c.model.as_str(), c.temperature), ("bob-model", 0.2));
        assert_eq!(c.files["SOUL.md"], "calm");

        std::fs::write(
            &file,
            r#"{"tenant_id":"alice","provider":"x","model":"y","temperature":0.2}"#,
        )
        .unwrap();
        let err = s.agent_config().err().unwrap();
        assert!(matches!(err, SettingsError::WrongTenant { .. }), "{err}");
        std::fs::write(&file, "{").unwrap();
        assert!(matches!(
            s.agent_config().err().unwrap(),
            SettingsError::Parse { .. }
        ));
    }
}
