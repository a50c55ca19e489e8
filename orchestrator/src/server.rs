//! Serving: the HTTP server on a bound listener, the background loops, and graceful shutdown when
//! the caller's shutdown future resolves.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::HttpServer;
use common::service::Http;

use crate::api::{self, ApiConfig};
use crate::app::App;
use crate::{lifecycle, reconciler};

/// Everything after the signal must fit in this (Kubernetes' default grace is 30 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(28);
/// How long in-flight HTTP requests get to finish once the server stops accepting.
const DRAIN: u64 = 10;

/// Runs the API on `listener` and the loops until `shutdown` resolves (the binary passes
/// [`common::service::shutdown_signal`]), then shuts down in order: readiness off and in-progress
/// wakes abandoned (lock released), HTTP drained, loops stopped, agents stopped (local runtime),
/// owned tasks awaited.
pub async fn serve(
    app: Arc<App>,
    api: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
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
        .listen(listener)?
        .run()
    };
    let mut http = Http::spawn(server);

    app.tasks.spawn(lifecycle::run_idle_controller(app.clone()));
    app.tasks.spawn(reconciler::run(app.clone()));
    {
        let (leader, shutdown) = (app.leader.clone(), app.shutdown.clone());
        app.tasks.spawn(async move { leader.run(shutdown).await });
    }
    tracing::info!(%addr, "orchestrator listening");

    if let Some(exited) = http.until(shutdown).await {
        app.shutdown.cancel();
        app.tasks.close();
        return exited;
    }
    tracing::info!("shutdown: signal received, draining");
    app.shutdown.cancel();
    let ordered = async {
        let _ = http.drain().await;
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use common::lock::WakeLock;

    use super::*;
    use crate::testing::*;

    /// The orchestrator started in-process on a listener the test bound (port 0) and stopped by a
    /// future, no binary and no signal: a wake in flight when shutdown starts is answered (503,
    /// its lock released), `serve` returns, and the port is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_on_a_bound_listener_answers_a_wake_in_flight_and_stops_on_the_shutdown_future() {
        let t = test_app(
            FakeRuntime::new(Duration::from_secs(60)),
            quick_settings(),
            "http://127.0.0.1:9",
        );
        let id = add_tenant(&t.app, "bob").await;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            t.app.clone(),
            ApiConfig { api_token: None },
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::Client::new();
        let health = http.get(format!("http://{addr}/healthz")).send().await;
        assert_eq!(health.unwrap().status(), 200);
        let wake = tokio::spawn({
            let http = http.clone();
            async move { http.post(format!("http://{addr}/wake/bob")).send().await }
        });
        let key = common::wake_lock_key(&id);
        let ttl = Duration::from_secs(10);
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.lock.try_acquire(&key, "probe", ttl).await.unwrap() {
            t.lock.release(&key, "probe").await.unwrap();
            assert!(Instant::now() < deadline, "the wake never took its lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        let resp = wake.await.unwrap().expect("the wake in flight is answered");
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "shutting down", "{body}");
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("serve returns after the shutdown future")
            .unwrap()
            .expect("serve ends cleanly");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing listens once serve returned"
        );
        assert!(
            t.lock.try_acquire(&key, "probe", ttl).await.unwrap(),
            "the abandoned wake released its lock"
        );
    }
}
