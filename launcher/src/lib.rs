//! `zeroclaw-launcher`: the agent image's entrypoint. It turns the platform's agent contract
//! (env `TENANT_ID`, `AGENT_PORT`, `AGENT_TOKEN`, `DATA_DIR`, `STATE_DIR`, `AGENT_CONFIG_DIR`)
//! into ZeroClaw's (`config.toml`, workspace persona files, `memory/brain.db`), runs
//! `zeroclaw gateway`, and saves its memory after it stops.

pub mod persona;
pub mod render;
pub mod settings;
pub mod state;
pub mod supervise;

use std::path::Path;
use std::process::Stdio;

use thiserror::Error;
use tokio::process::Command;

use settings::{Settings, SettingsError};
use supervise::Outcome;

/// Variables ZeroClaw may inherit from the launcher: what a process needs to run, and nothing of
/// the platform's (bot token, agent credential) nor the generic names ZeroClaw would let override
/// its config (`PORT`, `HOST`, `MODEL`, `PROVIDER`, `API_KEY`).
const INHERITED_ENV: [&str; 11] = [
    "PATH",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NO_PROXY",
];

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("tenant configuration: {0}")]
    Render(#[from] render::RenderError),
    #[error("persona files: {0}")]
    Persona(#[from] persona::PersonaError),
    #[error("restoring brain.db: {0}")]
    Restore(#[source] state::StateError),
    #[error("saving brain.db: {0}")]
    Save(#[source] state::StateError),
    #[error("starting {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("zeroclaw exited on its own ({0}); the agent is down")]
    Died(String),
}

impl LaunchError {
    /// The process exit code: 2 for a missing or malformed variable (a usage error), 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::Settings(
                SettingsError::Missing { .. } | SettingsError::Invalid { .. },
            ) => 2,
            _ => 1,
        }
    }
}

/// Writes `config.toml` and the persona files and restores `brain.db`: everything ZeroClaw
/// reads at start.
pub fn prepare(settings: &Settings) -> Result<(), LaunchError> {
    let config = settings.agent_config()?;
    let text = render::render(
        &config,
        &render::Gateway {
            host: &settings.host,
            port: settings.port,
            agent_token: settings.agent_token.expose(),
        },
    )?;
    let workspace = settings.workspace();
    persona::write(&workspace, &config)?;
    let home = settings.home();
    std::fs::create_dir_all(&home).map_err(|source| persona::PersonaError::Io {
        path: home.clone(),
        source,
    })?;
    persona::write_file(
        &settings.zeroclaw_config_dir.join("config.toml"),
        text.as_bytes(),
    )?;
    let brain = state::brain_path(&workspace);
    match state::restore(&settings.state_dir, &brain).map_err(LaunchError::Restore)? {
        Some(generation) => tracing::info!(generation, "brain.db restored"),
        None => tracing::info!("no saved brain.db, starting with the local one (if any)"),
    }
    tracing::info!(
        tenant = %settings.tenant_id,
        provider = %config.provider,
        model = %config.model,
        persona_files = config.files.len(),
        delegates = config.agents.len(),
        "zeroclaw configured"
    );
    Ok(())
}

/// `zeroclaw gateway` with its environment reduced to [`INHERITED_ENV`] plus what it needs. Its
/// `HOME` is under `DATA_DIR`: the image's home may not be writable by the pod's uid.
pub fn zeroclaw_command(settings: &Settings) -> Command {
    let mut cmd = Command::new(&settings.zeroclaw_bin);
    cmd.arg("gateway")
        .arg("--host")
        .arg(&settings.host)
        .arg("--port")
        .arg(settings.port.to_string())
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .env("ZEROCLAW_CONFIG_DIR", &settings.zeroclaw_config_dir)
        .env("HOME", settings.home())
        .stdin(Stdio::null());
    if let Some(key) = &settings.llm_api_key {
        cmd.env("ZEROCLAW_API_KEY", key.expose());
    }
    cmd
}

fn save(settings: &Settings) -> Result<(), LaunchError> {
    let brain = state::brain_path(&settings.workspace());
    match state::save(&brain, &settings.data_dir, &settings.state_dir).map_err(LaunchError::Save)? {
        Some(generation) => tracing::info!(generation, "brain.db saved"),
        None => tracing::info!("no brain.db to save"),
    }
    Ok(())
}

/// The whole life of an agent: prepare, run ZeroClaw until it exits or a stop signal, save.
/// `Ok` only for a requested stop whose save succeeded.
pub async fn run(settings: &Settings) -> Result<(), LaunchError> {
    prepare(settings)?;
    let outcome = supervise::run(zeroclaw_command(settings), settings.stop_timeout)
        .await
        .map_err(|source| LaunchError::Spawn {
            bin: display(&settings.zeroclaw_bin),
            source,
        })?;
    let died = match outcome {
        Outcome::Stopped {
            signal,
            status,
            killed,
        } => {
            tracing::info!(signal, %status, killed, "zeroclaw stopped");
            None
        }
        Outcome::Died(status) => {
            tracing::error!(%status, "zeroclaw exited on its own");
            Some(status.to_string())
        }
    };
    // Saved whatever the reason it ended: memory written before a crash is still worth keeping.
    let saved = save(settings);
    match (died, saved) {
        (Some(status), Err(e)) => {
            tracing::error!(error = %e, "saving after the crash failed too");
            Err(LaunchError::Died(status))
        }
        (Some(status), Ok(())) => Err(LaunchError::Died(status)),
        (None, saved) => saved,
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
