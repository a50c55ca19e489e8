//! Agent configuration from the environment; a malformed value names the variable.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
#[error("invalid value for {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

#[derive(Clone)]
pub struct Config {
    pub tenant_id: String,
    /// Kept only so the agent could talk to Telegram; never logged (Config has no Debug on purpose).
    pub bot_token: Option<String>,
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub reply_delay: Duration,
    pub startup_delay: Duration,
    /// `AGENT_TOKEN`: the only bearer `POST /webhook` and `GET /api/health` accept; without it
    /// every such request is refused (pairing required, nothing paired). Never logged.
    pub agent_token: Option<String>,
    /// `AGENT_REQUIRE_CREDENTIAL=false`: accept callers without the credential, as the Go
    /// platform's agents did (the cut-over drill plays one).
    pub accept_any_caller: bool,
    /// `AGENT_CONFIG_DIR`: where the runtime put `tenant.json`.
    pub config_dir: Option<PathBuf>,
    /// `AGENT_WARM=1`: a warm-pool agent, waiting for `POST /assign` (no tenant until then).
    pub warm: bool,
    /// `ASSIGN_TOKEN`: the pool credential `POST /assign` requires (warm agents only). Never logged.
    pub assign_token: Option<String>,
    /// `ORCHESTRATOR_URL`: where the agent reports its own activity during long tasks and, when
    /// warm, renews its state grants; unset, it does neither.
    pub orchestrator_url: Option<String>,
    /// `AGENT_ACTIVITY_EVERY_MS` (default 60 s): how often it reports while busy; keep it well
    /// under the tenant's idle timeout.
    pub activity_every: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads the configuration through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let tenant_id = get("TENANT_ID").ok_or(ConfigError {
            name: "TENANT_ID",
            reason: "required".into(),
        })?;
        Ok(Config {
            tenant_id,
            bot_token: get("TELEGRAM_BOT_TOKEN"),
            host: get("AGENT_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: number(&get, "AGENT_PORT", 3000)?,
            data_dir: get("DATA_DIR")
                .unwrap_or_else(|| "/zeroclaw-data".into())
                .into(),
            state_dir: get("STATE_DIR")
                .unwrap_or_else(|| "/s3-state".into())
                .into(),
            reply_delay: Duration::from_millis(number(&get, "AGENT_DELAY_MS", 0)?),
            startup_delay: Duration::from_millis(number(&get, "AGENT_STARTUP_MS", 0)?),
            agent_token: get("AGENT_TOKEN"),
            accept_any_caller: get("AGENT_REQUIRE_CREDENTIAL").as_deref() == Some("false"),
            config_dir: get("AGENT_CONFIG_DIR").map(PathBuf::from),
            warm: get("AGENT_WARM").as_deref() == Some("1"),
            assign_token: get(common::assignment::POOL_TOKEN_ENV),
            orchestrator_url: get("ORCHESTRATOR_URL"),
            activity_every: Duration::from_millis(
                number(&get, "AGENT_ACTIVITY_EVERY_MS", 60_000u64)?.max(100),
            ),
        })
    }
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: format!("{v:?}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_lookup(|n| (n == "TENANT_ID").then(|| "bob".to_string())).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.data_dir, PathBuf::from("/zeroclaw-data"));
        assert_eq!(c.state_dir, PathBuf::from("/s3-state"));
        assert_eq!(c.reply_delay, Duration::ZERO);

        let err = Config::from_lookup(|_| None).err().unwrap();
        assert_eq!(err.name, "TENANT_ID");
        let err = Config::from_lookup(|n| match n {
            "TENANT_ID" => Some("bob".into()),
            "AGENT_PORT" => Some("http".into()),
            _ => None,
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("AGENT_PORT"), "{err}");
    }
}
