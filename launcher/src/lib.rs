//! `zeroclaw-launcher`: the agent image's entrypoint. It turns the platform's agent contract
//! (env `TENANT_ID`, `AGENT_PORT`, `AGENT_TOKEN`, `DATA_DIR`, `STATE_DIR`, `AGENT_CONFIG_DIR`)
//! into ZeroClaw's (`config.toml`, workspace persona files, `memory/brain.db`), runs
//! `zeroclaw gateway`, and saves its memory after it stops. With `AGENT_WARM=1` it first waits for
//! its tenant (`POST /assign`, [`warm`]), then takes the same path with memory through the grants.

pub mod persona;
pub mod render;
pub mod settings;
pub mod state;
pub mod supervise;
pub mod warm;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::assignment::{self, AssignError, AssignResponse, Assignment, Renewer, StateGrants};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::process::Command;

use settings::{Settings, SettingsError};
use supervise::{Outcome, Stops};

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
    #[error("installing the stop signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("listening on port {port} for the assignment: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the assigned tenant.json: {0}")]
    AssignedConfig(#[source] std::io::Error),
    #[error("restoring brain.db through the state grant: {0}")]
    RestoreGrant(#[source] assignment::GrantError),
    #[error("saving brain.db through the state grant: {0}")]
    SaveGrant(#[source] assignment::GrantError),
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
    configure(settings)?;
    let brain = state::brain_path(&settings.workspace());
    match state::restore(&settings.state_dir, &brain).map_err(LaunchError::Restore)? {
        Some(generation) => tracing::info!(generation, "brain.db restored"),
        None => tracing::info!("no saved brain.db, starting with the local one (if any)"),
    }
    Ok(())
}

/// Writes `config.toml` and the persona files from the tenant's configuration.
fn configure(settings: &Settings) -> Result<(), LaunchError> {
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
/// `Ok` only for a requested stop whose save succeeded (or a warm launcher stopped unassigned).
pub async fn run(settings: &Settings) -> Result<(), LaunchError> {
    let mut stops = Stops::install().map_err(LaunchError::Signals)?;
    if settings.warm {
        return run_warm(settings, &mut stops).await;
    }
    prepare(settings)?;
    let outcome = supervise::run_with(
        zeroclaw_command(settings),
        settings.stop_timeout,
        &mut stops,
        std::future::ready(()),
    )
    .await
    .map_err(|source| LaunchError::Spawn {
        bin: display(&settings.zeroclaw_bin),
        source,
    })?;
    finish(outcome, save(settings))
}

/// The end shared by both modes: the outcome logged, the save's result kept.
fn finish(outcome: Outcome, saved: Result<(), LaunchError>) -> Result<(), LaunchError> {
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

/// Warm mode: serve `POST /assign` on the agent port, then become the assigned tenant's agent
/// (config from the assignment, memory through its grants) on the same path as a cold start.
async fn run_warm(settings: &Settings, stops: &mut Stops) -> Result<(), LaunchError> {
    let pool_token = settings
        .assign_token
        .clone()
        .ok_or(SettingsError::Missing {
            name: assignment::POOL_TOKEN_ENV,
        })?;
    let listener = tokio::net::TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .map_err(|source| LaunchError::Bind {
            port: settings.port,
            source,
        })?;
    tracing::info!(
        port = settings.port,
        "warm launcher waiting for an assignment"
    );
    let Some(warm::Admitted {
        assignment,
        mut conn,
        others: _others,
    }) = warm::wait_for_assignment(listener, pool_token, stops).await
    else {
        return Ok(());
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("static reqwest configuration");
    let grants = assignment.state.clone();
    let renewer = settings.orchestrator_url.as_deref().map(|url| {
        Renewer::new(
            url,
            &assignment.tenant_id,
            assignment.agent_token.clone(),
            &assignment.state,
        )
    });
    let (settings, restored) = match assume(settings, assignment, &http).await {
        Ok(assumed) => assumed,
        Err(e) => {
            warm::answer(&mut conn, Err(AssignError::Failed(e.to_string()))).await;
            return Err(e);
        }
    };
    let brain = state::brain_path(&settings.workspace());
    let host = match settings.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1",
        h => h,
    };
    let probe = format!(
        "http://{host}:{}{}",
        settings.port,
        common::wire::AGENT_PAIRED_HEALTH_PATH
    );
    // The memory as ZeroClaw serves it at assignment: a stop with nothing new saves nothing, so a
    // pod whose claim was interrupted never writes over a newer save by the tenant's next pod.
    let mut baseline = None;
    let started = async {
        warm::until_paired(&http, &probe, &settings.agent_token).await;
        baseline = Some(digest(&brain, &settings.data_dir));
        tracing::info!(tenant = %settings.tenant_id, restored_generation = ?restored, "warm launcher assigned, zeroclaw serving");
        let answer = AssignResponse {
            tenant_id: settings.tenant_id.clone(),
            restored_generation: restored,
        };
        warm::answer(&mut conn, Ok(answer)).await;
    };
    let outcome = supervise::run_with(
        zeroclaw_command(&settings),
        settings.stop_timeout,
        stops,
        started,
    )
    .await
    .map_err(|source| LaunchError::Spawn {
        bin: display(&settings.zeroclaw_bin),
        source,
    })?;
    let saved = save_through(
        &http,
        (&grants, renewer.as_ref()),
        &brain,
        &settings.data_dir,
        baseline,
    )
    .await;
    finish(outcome, saved)
}

/// The settings of the assigned tenant, its configuration rendered and its memory restored
/// through the grants; returns them and the generation restored.
async fn assume(
    warm: &Settings,
    a: Assignment,
    http: &reqwest::Client,
) -> Result<(Settings, Option<u64>), LaunchError> {
    let config_dir = warm.data_dir.join("config");
    let json = serde_json::to_vec_pretty(&a.config).map_err(std::io::Error::other);
    std::fs::create_dir_all(&config_dir)
        .and_then(|()| std::fs::write(config_dir.join(common::agent_config::CONFIG_FILE), json?))
        .map_err(LaunchError::AssignedConfig)?;
    let settings = Settings {
        tenant_id: a.tenant_id,
        agent_token: a.agent_token,
        agent_config_dir: Some(config_dir),
        warm: false,
        assign_token: None,
        orchestrator_url: warm.orchestrator_url.clone(),
        host: warm.host.clone(),
        data_dir: warm.data_dir.clone(),
        state_dir: warm.state_dir.clone(),
        llm_provider: warm.llm_provider.clone(),
        llm_api_url: warm.llm_api_url.clone(),
        llm_model: warm.llm_model.clone(),
        llm_api_key: warm.llm_api_key.clone(),
        zeroclaw_bin: warm.zeroclaw_bin.clone(),
        zeroclaw_config_dir: warm.zeroclaw_config_dir.clone(),
        ..*warm
    };
    configure(&settings)?;
    let brain = state::brain_path(&settings.workspace());
    state::remove_side_files(&brain).map_err(LaunchError::Restore)?;
    let restored = assignment::restore(http, &a.state, &brain)
        .await
        .map_err(LaunchError::RestoreGrant)?;
    match restored {
        Some(generation) => tracing::info!(generation, "brain.db restored through the grant"),
        None => tracing::info!("no saved brain.db for this tenant"),
    }
    Ok((settings, restored))
}

/// SHA-256 of a consistent copy of `brain`, `None` when there is none (or it cannot be read).
fn digest(brain: &Path, scratch: &Path) -> Option<[u8; 32]> {
    if !brain.is_file() {
        return None;
    }
    let tmp = scratch.join(format!(".brain.db.digest-{}", std::process::id()));
    let bytes = state::snapshot(brain, &tmp).and_then(|()| {
        std::fs::read(&tmp).map_err(|source| state::StateError::Io {
            what: "reading",
            path: tmp.clone(),
            source,
        })
    });
    let _ = std::fs::remove_file(&tmp);
    bytes.ok().map(|b| Sha256::digest(b).into())
}

/// Saves a consistent copy of `brain` through the save grant (renewed when due or refused, see
/// `assignment::save_renewing`), unless it holds nothing new since `baseline` (the memory at
/// assignment).
async fn save_through(
    http: &reqwest::Client,
    (grants, renewer): (&StateGrants, Option<&Renewer>),
    brain: &Path,
    scratch: &Path,
    baseline: Option<Option<[u8; 32]>>,
) -> Result<(), LaunchError> {
    let Some(baseline) = baseline else {
        tracing::info!("zeroclaw never served the tenant, brain.db not saved");
        return Ok(());
    };
    if !brain.is_file() {
        tracing::info!("no brain.db to save");
        return Ok(());
    }
    let tmp = scratch.join(format!(".brain.db.save-{}", std::process::id()));
    state::snapshot(brain, &tmp).map_err(LaunchError::Save)?;
    let result = async {
        let bytes = std::fs::read(&tmp).map_err(|source| {
            LaunchError::Save(state::StateError::Io {
                what: "reading",
                path: tmp.clone(),
                source,
            })
        })?;
        let now: [u8; 32] = Sha256::digest(bytes).into();
        if baseline == Some(now) {
            tracing::info!("nothing new since the assignment, brain.db not saved");
            return Ok(());
        }
        let generation = assignment::save_renewing(http, grants, renewer, &tmp)
            .await
            .map_err(LaunchError::SaveGrant)?;
        tracing::info!(generation, "brain.db saved through the grant");
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}
