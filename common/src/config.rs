//! Reading configuration from the environment: a malformed value stops start-up with a message
//! naming the variable.

use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error)]
#[error("invalid value for {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

/// The variable's value, with empty treated as unset.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn string(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// Parses a variable; the error names the variable and the value (never use this for secrets).
pub fn parse<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name: name.to_owned(),
            reason: format!("{v:?}: {e}"),
        }),
    }
}

pub fn flag(name: &str) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError {
            name: name.to_owned(),
            reason: format!("{v:?} is not a boolean (true or false)"),
        }),
    }
}

/// A secret from the environment; empty or blank counts as missing.
pub fn secret(name: &str) -> Option<crate::Secret> {
    var(name).map(crate::Secret::new)
}

/// True inside Kubernetes: `RUNTIME=kubernetes`, or `KUBERNETES_SERVICE_HOST` set by the kubelet.
pub fn on_kubernetes() -> bool {
    var("RUNTIME").is_some_and(|r| r.trim().eq_ignore_ascii_case("kubernetes"))
        || var("KUBERNETES_SERVICE_HOST").is_some()
}

/// Fail closed: on Kubernetes a missing or empty secret stops start-up (the error names the first
/// one) unless `ALLOW_INSECURE=true`; elsewhere, and with that flag, each missing one is returned to
/// be warned about. `secrets` are (variable, is set).
pub fn require_secrets<'a>(
    on_kubernetes: bool,
    allow_insecure: bool,
    secrets: &[(&'a str, bool)],
) -> Result<Vec<&'a str>, ConfigError> {
    let missing: Vec<&str> = secrets
        .iter()
        .filter(|(_, set)| !set)
        .map(|(name, _)| *name)
        .collect();
    match missing.first() {
        Some(name) if on_kubernetes && !allow_insecure => Err(ConfigError {
            name: (*name).to_owned(),
            reason: "missing or empty; it is required on Kubernetes \
                     (set ALLOW_INSECURE=true to run without it)"
                .into(),
        }),
        _ => Ok(missing),
    }
}

/// An http(s) URL without a trailing slash.
pub fn url(name: &str, default: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(v) = var(name).or(default.map(str::to_owned)) else {
        return Ok(None);
    };
    check_url(&v).map_err(|reason| ConfigError {
        name: name.to_owned(),
        reason,
    })?;
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

pub fn check_url(v: &str) -> Result<(), String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| format!("{v:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{v:?} has no host"));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{v:?} has a bad port"));
        }
    }
    Ok(())
}

/// Where a service's shared state (the router's inbox and endpoint cache, the orchestrator's wake
/// lock and endpoint cache) lives: `REDIS_ADDR`, else this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedBackend {
    /// May carry the Redis password (`redis://:password@host`), hence a `Secret`.
    Redis { url: crate::Secret },
    /// In-process (the router's inbox: a SQLite file in `DATA_DIR`): one replica only.
    Local,
}

impl SharedBackend {
    pub fn from_env() -> Self {
        match secret("REDIS_ADDR") {
            Some(url) => SharedBackend::Redis { url },
            None => SharedBackend::Local,
        }
    }
}

/// `LOG_FORMAT`: `text` (default) or `json` lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// Any other value stops start-up with a message naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        match var("LOG_FORMAT")
            .map(|f| f.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(ConfigError {
                name: "LOG_FORMAT".into(),
                reason: format!("{other:?} is not text or json"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_fail_closed_on_kubernetes_only() {
        let both = [("API_TOKEN", true), ("WEBHOOK_SECRET", true)];
        let none = [("API_TOKEN", false), ("WEBHOOK_SECRET", false)];
        let hook = [("API_TOKEN", true), ("WEBHOOK_SECRET", false)];
        assert!(require_secrets(true, false, &both).unwrap().is_empty());
        let e = require_secrets(true, false, &none).unwrap_err();
        assert_eq!(e.name, "API_TOKEN");
        let e = require_secrets(true, false, &hook).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value for WEBHOOK_SECRET: missing or empty"),
            "{e}"
        );
        assert_eq!(
            require_secrets(true, true, &none).unwrap(),
            ["API_TOKEN", "WEBHOOK_SECRET"]
        );
        assert_eq!(
            require_secrets(false, false, &hook).unwrap(),
            ["WEBHOOK_SECRET"]
        );
    }

    #[test]
    fn urls() {
        assert!(check_url("http://localhost:8080").is_ok());
        assert!(check_url("https://example.com/x").is_ok());
        assert!(check_url("localhost:8080").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://host:port").is_err());
    }
}
