//! Serving: the HTTP server, the background loops, and graceful shutdown on SIGTERM / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::HttpServer;

use crate::api::{self, ApiConfig};
use crate::app::App;
use crate::{lifecycle, reconciler};

/// Everything after the signal must fit in this (Kubernetes' default grace is 30 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(28);
/// How long in-flight HTTP requests get to finish once the server stops accepting.
const DRAIN: u64 = 10;

/// Runs the API on `0.0.0.0:port` and the loops until SIGTERM or SIGINT, then shuts down in order:
/// readiness off and in-progress wakes abandoned (lock released), HTTP drained, loops stopped,
/// agents stopped (local runtime), owned tasks awaited.
pub async fn serve(app: Arc<App>, api: ApiConfig, port: u16) -> std::io::Result<()> {
    let server = {
        let app = app.clone();
        HttpServer::new(move || {
            actix_web::App::new()
                .wrap(from_fn(crate::compat::go_responses))
                .wrap(from_fn(api::require_token))
                .wrap(from_fn(api::track))
                .configure(api::configure(app.clone(), api.clone()))
        })
        .disable_signals()
        .shutdown_timeout(DRAIN)
        .bind(("0.0.0.0", port))?
        .run()
    };
    let http = server.handle();
    let mut http_task = tokio::spawn(server);

    app.tasks.spawn(lifecycle::run_idle_controller(app.clone()));
    app.tasks.spawn(reconciler::run(app.clone()));
    {
        let (leader, shutdown) = (app.leader.clone(), app.shutdown.clone());
        app.tasks.spawn(async move { leader.run(shutdown).await });
    }
    tracing::info!(port, "orchestrator listening");

    tokio::select! {
        () = signal() => {}
        r = &mut http_task => {
            app.shutdown.cancel();
            app.tasks.close();
            return r.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        }
    }
    tracing::info!("shutdown: signal received, draining");
    app.shutdown.cancel();
    let ordered = async {
        http.stop(true).await;
        let _ = http_task.await;
        if app.settings.stop_agents_on_shutdown {
            lifecycle::stop_all_agents(&app, SHUTDOWN_BUDGET - Duration::from_secs(DRAIN + 2))
                .await;
        }
        app.tasks.close();
        app.tasks.wait().await;
    };
    if tokio::time::timeout(SHUTDOWN_BUDGET, ordered)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: did not finish in time, exiting anyway");
    } else {
        tracing::info!("shutdown: complete");
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
