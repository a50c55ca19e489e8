//! `ztm tenant config get|set|edit`: the tenant's agent configuration, read and written whole
//! through `GET/PUT /tenants/{id}/config` (the orchestrator validates it before storing it).

use std::path::{Path, PathBuf};

use common::agent_config::{AgentConfig, PERSONA_FILES};
use serde_json::Value;

use crate::api::{tenant_id, Api};
use crate::cli::ConfigCommand;
use crate::commands::Outcome;
use crate::error::ZtmError;
use crate::output;

pub async fn run(c: ConfigCommand, api: &Api<'_>) -> Result<Outcome, ZtmError> {
    match c {
        ConfigCommand::Get { id } => {
            let id = tenant_id(&id)?;
            Ok(report(&api.get_config(&id).await?))
        }
        ConfigCommand::Set {
            id,
            files,
            dir,
            model,
            provider,
            temperature,
            from_json,
        } => {
            let id = tenant_id(&id)?;
            let mut config = match &from_json {
                Some(path) => parse(&read(path)?, path)?,
                None => api.get_config(&id).await?,
            };
            if let Some(dir) = &dir {
                read_dir(dir, &mut config)?;
            }
            for (name, path) in files {
                config.files.insert(name, read(&path)?);
            }
            if let Some(m) = model {
                config.model = Some(m);
            }
            if let Some(p) = provider {
                config.provider = Some(p);
            }
            if let Some(t) = temperature {
                config.temperature = Some(t);
            }
            Ok(report(&api.put_config(&id, &config).await?))
        }
        ConfigCommand::Edit { id } => {
            let id = tenant_id(&id)?;
            let current = api.get_config(&id).await?;
            // YAML to edit (JSON is YAML too, so either may be saved).
            let text = output::yaml(&current);
            let file =
                std::env::temp_dir().join(format!("ztm-config-{id}-{}.yaml", std::process::id()));
            std::fs::write(&file, &text)
                .map_err(|e| ZtmError::Input(format!("{}: {e}", file.display())))?;
            let edited = edit(&file);
            let _ = std::fs::remove_file(&file);
            let edited = edited?;
            if edited == text {
                let mut out = report(&current);
                if let Outcome::Report { text, .. } = &mut out {
                    *text = "no changes\n".into();
                }
                return Ok(out);
            }
            let config = parse(&edited, &file)?;
            Ok(report(&api.put_config(&id, &config).await?))
        }
    }
}

fn report(config: &AgentConfig) -> Outcome {
    let data = serde_json::to_value(config).unwrap_or(Value::Null);
    let text = output::yaml(config);
    Outcome::Report { data, text }
}

fn read(path: &Path) -> Result<String, ZtmError> {
    std::fs::read_to_string(path).map_err(|e| ZtmError::Input(format!("{}: {e}", path.display())))
}

/// A configuration in JSON or YAML (JSON is YAML); unknown keys and bad values are refused here
/// already, so a typo never reaches the server. Then the same checks the server makes.
fn parse(text: &str, from: &Path) -> Result<AgentConfig, ZtmError> {
    let config: AgentConfig = serde_yaml::from_str(text).map_err(|e| {
        ZtmError::Input(format!(
            "{}: not a valid configuration: {e}",
            from.display()
        ))
    })?;
    config
        .validate()
        .map_err(|e| ZtmError::Input(format!("{}: {e}", from.display())))?;
    Ok(config)
}

/// Persona files at the top of `dir`, delegate files in `dir/agents/<slug>/*.md`. Any other
/// `.md` file at the top is an error (a misspelt persona file would otherwise be dropped).
fn read_dir(dir: &Path, config: &mut AgentConfig) -> Result<(), ZtmError> {
    let entries = list(dir)?;
    let mut found = false;
    for path in entries {
        let name = file_name(&path);
        if path.is_dir() {
            continue;
        }
        if PERSONA_FILES.contains(&name.as_str()) {
            config.files.insert(name, read(&path)?);
            found = true;
        } else if name.ends_with(".md") {
            return Err(ZtmError::Input(format!(
                "{}: not a persona file (expected one of {})",
                path.display(),
                PERSONA_FILES.join(", ")
            )));
        }
    }
    let agents = dir.join("agents");
    if agents.is_dir() {
        for sub in list(&agents)? {
            if !sub.is_dir() {
                continue;
            }
            let slug = file_name(&sub);
            let delegate = config.agents.entry(slug).or_default();
            for f in list(&sub)? {
                let name = file_name(&f);
                if f.is_file() && name.ends_with(".md") {
                    delegate.files.insert(name, read(&f)?);
                    found = true;
                }
            }
        }
    }
    if !found {
        return Err(ZtmError::Input(format!(
            "{}: no persona files ({}) and no agents/<slug>/*.md",
            dir.display(),
            PERSONA_FILES.join(", ")
        )));
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, ZtmError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ZtmError::Input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `$VISUAL`, else `$EDITOR`, else `vi` on `file` and returns what was saved.
fn edit(file: &Path) -> Result<String, ZtmError> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".into());
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(words)
        .arg(file)
        .status()
        .map_err(|e| ZtmError::Input(format!("cannot run the editor {program:?}: {e}")))?;
    if !status.success() {
        return Err(ZtmError::Input(format!(
            "the editor {program:?} failed ({status}); nothing stored"
        )));
    }
    read(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gives_persona_and_delegate_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("SOUL.md"), "soul").unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        std::fs::create_dir_all(d.path().join("agents/coder")).unwrap();
        std::fs::write(d.path().join("agents/coder/skill.md"), "rust").unwrap();
        let mut c = AgentConfig::default();
        read_dir(d.path(), &mut c).unwrap();
        assert_eq!(c.files["SOUL.md"], "soul");
        assert_eq!(c.agents["coder"].files["skill.md"], "rust");
        std::fs::write(d.path().join("SOULS.md"), "typo").unwrap();
        let e = read_dir(d.path(), &mut c).unwrap_err().to_string();
        assert!(e.contains("SOULS.md: not a persona file"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(read_dir(empty.path(), &mut c).is_err());
    }

    #[test]
    fn parse_refuses_unknown_keys_and_bad_values() {
        let p = Path::new("x.yaml");
        assert!(parse("model: m\ntemperature: 0.5\n", p).is_ok());
        let e = parse("modle: m\n", p).unwrap_err().to_string();
        assert!(e.contains("unknown field `modle`"), "{e}");
        let e = parse("temperature: 9\n", p).unwrap_err().to_string();
        assert!(
            e.contains("temperature must be a number from 0 to 2"),
            "{e}"
        );
    }
}
