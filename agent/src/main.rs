//! `tenant-agent`: restore brain.db, serve the agent contract, save brain.db on SIGTERM/SIGINT.

use std::io::IsTerminal;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tenant_agent::activity::Reporter;
use tenant_agent::brain::{self, Brain};
use tenant_agent::config::Config;
use tenant_agent::http::{self as agent_http, AppState, Serving};
use tenant_agent::service::Agent;
use tenant_agent::warm::Warm;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let config = Config::from_env()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let mut reporting = None;
    let state = if config.warm {
        let token = config
            .assign_token
            .clone()
            .context("AGENT_WARM=1 needs ASSIGN_TOKEN (the warm pool's credential)")?;
        tracing::info!("warm agent waiting for an assignment");
        AppState::warm(
            Warm::new(
                common::Secret::new(token),
                config.data_dir.clone(),
                config.startup_delay,
                config.reply_delay,
            )
            .with_orchestrator_url(config.orchestrator_url.clone()),
        )
    } else {
        let restored = brain::restore(&config.state_dir, &config.data_dir)?;
        let mut agent = Agent::new(Brain::open(&config.data_dir)?, config.reply_delay);
        // Reports its own activity during long tasks, when it knows where and has a credential.
        if let (Some(url), Some(token)) = (&config.orchestrator_url, &config.agent_token) {
            let reporter = std::sync::Arc::new(Reporter::new(
                url,
                &config.tenant_id,
                token.clone(),
                config.activity_every,
            ));
            agent = agent.with_activity(reporter.clone());
            reporting = Some(tokio::spawn(async move { reporter.run().await }));
        }
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
        AppState::serving(
            Serving {
                tenant_id: config.tenant_id.clone(),
                agent,
                agent_token: config.agent_token.clone(),
            },
            config.accept_any_caller,
        )
    };
    let state = web::Data::new(state);

    // A warm agent pays its own start at assignment, once its tenant's memory is in place.
    let startup = if config.warm {
        std::time::Duration::ZERO
    } else {
        config.startup_delay
    };
    let stopped_early = tokio::select! {
        _ = tokio::time::sleep(startup) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    if !stopped_early {
        let server_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
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
    if let Some(task) = reporting {
        task.abort();
    }

    match (state.warm_slot(), state.current()) {
        (Some(warm), Some(serving)) => match warm
            .save(&serving.agent)
            .await
            .context("saving brain.db through the state grant")?
        {
            Some(generation) => tracing::info!(generation, "brain.db saved"),
            None => tracing::info!("nothing new since the restore, brain.db not saved"),
        },
        (Some(_), None) => tracing::info!("warm agent stopped unassigned"),
        (None, Some(serving)) => {
            let generation = serving
                .agent
                .save(&config.state_dir)
                .await
                .context("saving brain.db to the state directory")?;
            tracing::info!(dir = %config.state_dir.display(), generation, "brain.db saved");
        }
        (None, None) => {}
    }
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
