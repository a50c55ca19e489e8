//! `tenant-agent`: restore brain.db, serve the agent contract, save brain.db on SIGTERM/SIGINT.

use std::io::IsTerminal;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tenant_agent::brain::{self, Brain};
use tenant_agent::config::Config;
use tenant_agent::http::{self as agent_http, AppState};
use tenant_agent::service::Agent;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let restored = brain::restore(&config.state_dir, &config.data_dir)?;
    let agent = Agent::new(Brain::open(&config.data_dir)?, config.reply_delay);
    tracing::info!(
        tenant = %config.tenant_id,
        restored,
        bot_token_set = config.bot_token.is_some(),
        agent_token_set = config.agent_token.is_some(),
        "agent starting"
    );
    if let Some(dir) = &config.config_dir {
        tenant_agent::tenant_config::log_summary(dir);
    }

    let stopped_early = tokio::select! {
        _ = tokio::time::sleep(config.startup_delay) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    if !stopped_early {
        let state = web::Data::new(AppState {
            tenant_id: config.tenant_id.clone(),
            agent: agent.clone(),
            agent_token: config.agent_token.clone(),
            accept_any_caller: config.accept_any_caller,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(agent_http::routes)
        })
        .disable_signals()
        .shutdown_timeout(20)
        .bind((config.host.as_str(), config.port))
        .with_context(|| format!("binding {}:{}", config.host, config.port))?
        .run();
        let handle = server.handle();
        tracing::info!(port = config.port, "agent listening");
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown signal received, finishing the message in flight");
            handle.stop(true).await;
        };
        let (served, ()) = tokio::join!(server, stop);
        served?;
    }

    let generation = agent
        .save(&config.state_dir)
        .await
        .context("saving brain.db to the state directory")?;
    tracing::info!(dir = %config.state_dir.display(), generation, "brain.db saved");
    Ok(())
}

/// `RUST_LOG` filter, `LOG_FORMAT=json` for JSON lines, colour only on a terminal.
fn init_logging() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn")),
        )
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    // A bad value falls back to text here: the agent must start to answer at all.
    if common::config::LogFormat::from_env().unwrap_or_default() == common::config::LogFormat::Json
    {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
