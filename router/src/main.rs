//! Composition root: read config, build the adapters, serve until SIGTERM/SIGINT.

use anyhow::Context;
use router::config::Config;

/// HTTP is served by actix's own worker threads; delivery is I/O-bound and runs on this one thread,
/// which spares it the cross-thread wake-ups of a work-stealing runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _telemetry = common::service::start("router");
    // A configuration error is one line naming the variable (no log record besides it).
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("router: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(config).await {
        tracing::error!(error = format!("{e:#}"), "router failed");
        eprintln!("router: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let (inbox, cache) = router::adapters::build(&config).await?;
    let replica = config.replica_id();
    tracing::info!(
        version = common::VERSION,
        inbox = inbox.name(),
        endpoint_cache = cache.name(),
        orchestrator = %config.orchestrator_addr,
        replica = %replica,
        "adapters selected"
    );
    if config.api_token.is_none() {
        tracing::warn!(
            "API_TOKEN is not set: /chat and /admin are open to anyone who can reach the router"
        );
    }
    if config.webhook_secret.is_some() && config.webhook_secret_optional {
        tracing::warn!("WEBHOOK_SECRET_OPTIONAL=true: /tg accepts updates without a secret token (cut-over window)");
    }
    if config.webhook_secret.is_none() {
        tracing::warn!("WEBHOOK_SECRET is not set: /tg accepts updates without a secret token");
    }
    let listener = common::service::listen(config.port)
        .with_context(|| format!("listening on port {}", config.port))?;
    router::app::serve(
        config,
        replica,
        inbox,
        cache,
        listener,
        common::service::shutdown_signal(),
    )
    .await?;
    Ok(())
}
