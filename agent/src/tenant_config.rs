//! The tenant's configuration (`$AGENT_CONFIG_DIR/tenant.json`). This echo agent has no model to
//! give it to, so it only reports what it got: persona and delegate names, never their contents.

use std::path::Path;

use serde::Deserialize;
use std::collections::BTreeMap;

/// The parts of `tenant.json` worth a log line (names and settings, not texts).
#[derive(Debug, Deserialize)]
pub struct Summary {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub files: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub agents: BTreeMap<String, serde_json::Value>,
}

/// Reads `tenant.json` in `dir`.
pub fn read(dir: &Path) -> Result<Summary, String> {
    let path = dir.join("tenant.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Logs `agent configuration loaded` with the persona file names, or why it could not be read.
pub fn log_summary(dir: &Path) {
    match read(dir) {
        Ok(s) => tracing::info!(
            persona_files = %s.files.keys().cloned().collect::<Vec<_>>().join(","),
            delegates = %s.agents.keys().cloned().collect::<Vec<_>>().join(","),
            provider = %s.provider,
            model = %s.model,
            "agent configuration loaded"
        ),
        Err(e) => tracing::warn!(error = %e, "agent configuration not readable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tenant.json"),
            r#"{"tenant_id":"bob","provider":"llamacpp","model":"m","temperature":0.7,
               "files":{"SOUL.md":"secret persona","IDENTITY.md":"x"},"agents":{"coder":{}}}"#,
        )
        .unwrap();
        let s = read(dir.path()).unwrap();
        assert_eq!(
            s.files.keys().collect::<Vec<_>>(),
            ["IDENTITY.md", "SOUL.md"]
        );
        assert_eq!(s.agents.keys().collect::<Vec<_>>(), ["coder"]);
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
