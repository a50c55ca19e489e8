//! The tenant's persona files in ZeroClaw's workspace, where its system prompt reads them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use common::agent_config::{RenderedAgentConfig, PERSONA_FILES};
use thiserror::Error;

/// Where a delegate agent's files go: `agents/<slug>/<file>` under the workspace.
pub const DELEGATES_DIR: &str = "agents";

#[derive(Debug, Error)]
pub enum PersonaError {
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PersonaError + '_ {
    move |source| PersonaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A single path component: no separator, no `.`/`..`, no NUL, not hidden.
fn plain_name(name: &str) -> Result<&str, PersonaError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255;
    ok.then_some(name)
        .ok_or_else(|| PersonaError::BadName(name.to_owned()))
}

/// Writes `content` to `path` through a temp file and a rename (local disk), mode 0600.
pub fn write_file(path: &Path, content: &[u8]) -> Result<(), PersonaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.launcher-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(content).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes the configured persona files into `workspace` and removes the persona files the
/// configuration no longer has (a local data directory outlives a configuration change);
/// delegate files go to `agents/<slug>/`, replaced as a whole.
pub fn write(workspace: &Path, config: &RenderedAgentConfig) -> Result<(), PersonaError> {
    // Every name is checked before anything is written.
    for name in config.files.keys() {
        plain_name(name)?;
    }
    for (slug, agent) in &config.agents {
        plain_name(slug)?;
        for name in agent.files.keys() {
            plain_name(name)?;
        }
    }
    fs::create_dir_all(workspace).map_err(io_err(workspace))?;
    for (name, content) in &config.files {
        write_file(&workspace.join(plain_name(name)?), content.as_bytes())?;
    }
    for name in PERSONA_FILES {
        if !config.files.contains_key(name) {
            let path = workspace.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
    }
    let delegates = workspace.join(DELEGATES_DIR);
    match fs::remove_dir_all(&delegates) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&delegates)(e)),
        _ => {}
    }
    for (slug, agent) in &config.agents {
        let dir = delegates.join(plain_name(slug)?);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for (name, content) in &agent.files {
            write_file(&dir.join(plain_name(name)?), content.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::agent_config::DelegateAgent;

    fn config(files: &[(&str, &str)]) -> RenderedAgentConfig {
        RenderedAgentConfig {
            tenant_id: "bob".into(),
            provider: "llamacpp".into(),
            api_url: None,
            model: "m".into(),
            temperature: 0.7,
            files: files
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            agents: Default::default(),
        }
    }

    #[test]
    fn files_are_written_and_dropped_ones_removed() {
        let ws = tempfile::tempdir().unwrap();
        write(
            ws.path(),
            &config(&[("SOUL.md", "kind"), ("IDENTITY.md", "Bob")]),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(ws.path().join("SOUL.md")).unwrap(),
            "kind"
        );
        // Memory and other files ZeroClaw keeps in the workspace are left alone.
        fs::create_dir_all(ws.path().join("memory")).unwrap();
        fs::write(ws.path().join("memory/brain.db"), b"db").unwrap();

        write(ws.path(), &config(&[("SOUL.md", "stern")])).unwrap();
        assert_eq!(
            fs::read_to_string(ws.path().join("SOUL.md")).unwrap(),
            "stern"
        );
        assert!(!ws.path().join("IDENTITY.md").exists());
        assert!(ws.path().join("memory/brain.db").exists());
        let leftovers: Vec<_> = fs::read_dir(ws.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn delegate_files_go_under_agents_and_are_replaced_as_a_whole() {
        let ws = tempfile::tempdir().unwrap();
        let mut cfg = config(&[]);
        let mut agent = DelegateAgent::default();
        agent.files.insert("SKILL.md".into(), "search".into());
        cfg.agents.insert("research".into(), agent);
        write(ws.path(), &cfg).unwrap();
        assert_eq!(
            fs::read_to_string(ws.path().join("agents/research/SKILL.md")).unwrap(),
            "search"
        );
        cfg.agents.clear();
        write(ws.path(), &cfg).unwrap();
        assert!(!ws.path().join("agents/research").exists());
    }

    #[test]
    fn a_name_that_leaves_the_workspace_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        for bad in ["../x.md", "a/b.md", "..", ".hidden", ""] {
            let err = write(ws.path(), &config(&[(bad, "x")])).err();
            assert!(matches!(err, Some(PersonaError::BadName(_))), "{bad:?}");
        }
        let mut cfg = config(&[]);
        cfg.agents.insert("../up".into(), DelegateAgent::default());
        assert!(matches!(
            write(ws.path(), &cfg),
            Err(PersonaError::BadName(_))
        ));
    }
}
