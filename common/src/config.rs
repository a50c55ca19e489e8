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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://localhost:8080").is_ok());
        assert!(check_url("https://example.com/x").is_ok());
        assert!(check_url("localhost:8080").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://host:port").is_err());
    }
}
