//! Wake: make a tenant's agent run and return its address (DESIGN.md "Wake").

use std::sync::Arc;

use common::cache::ENDPOINT_TTL;
use common::registry::StatusUpdate;
use common::{StoreError, TenantId, TenantRecord, TenantStatus};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::App;
use crate::error::Error;
use crate::tenant_lock::{TenantGuard, RETRY_EVERY};

/// Where the woken agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Woken {
    pub pod_ip: String,
    /// `host:port`.
    pub endpoint: String,
}

/// Wakes the tenant (or finds it running) and returns its address. Exactly one agent starts however
/// many callers, in this process or other replicas, wake the same tenant at once.
pub async fn wake(app: &Arc<App>, id: &TenantId) -> Result<Woken, Error> {
    if app.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let rec = get(app, id).await?;
    if let Some(w) = ready(app, &rec).await {
        app.metrics.wakes.inc(&["ready"]);
        return Ok(w);
    }
    let result = wake_slow(app, id).await;
    let outcome = match &result {
        Ok(_) => None,
        Err(Error::NotFound(_)) => Some("not_found"),
        Err(Error::WakeTimeout(_)) => Some("timeout"),
        Err(_) => Some("failed"),
    };
    if let Some(o) = outcome {
        app.metrics.wakes.inc(&[o]);
    }
    result
}

/// Waits for this process's turn, then either takes the shared lock and starts the agent, or sees
/// another holder's wake finish.
async fn wake_slow(app: &Arc<App>, id: &TenantId) -> Result<Woken, Error> {
    let deadline = Instant::now() + app.settings.wake_wait();
    let mut turn = tokio::select! {
        t = app.locks.wait_turn(id, deadline) => t.ok_or_else(|| Error::WakeTimeout(id.clone()))?,
        _ = app.shutdown.cancelled() => return Err(Error::ShuttingDown),
    };
    loop {
        let rec = get(app, id).await?;
        if let Some(w) = ready(app, &rec).await {
            app.metrics.wakes.inc(&["joined"]);
            return Ok(w);
        }
        match app
            .locks
            .try_shared(turn)
            .await
            .map_err(Error::store("wake lock"))?
        {
            Ok(guard) => {
                let result = wake_locked(app, id, &guard).await;
                guard.release().await;
                return result;
            }
            Err(t) => turn = t,
        }
        if Instant::now() + RETRY_EVERY > deadline {
            return Err(Error::WakeTimeout(id.clone()));
        }
        if app.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The wake proper, under the tenant's lock.
async fn wake_locked(app: &Arc<App>, id: &TenantId, guard: &TenantGuard) -> Result<Woken, Error> {
    let rec = get(app, id).await?;
    if let Some(w) = ready(app, &rec).await {
        app.metrics.wakes.inc(&["joined"]);
        return Ok(w);
    }
    let rec = app
        .registry
        .set_status(id, rec.status, &StatusUpdate::provisioning())
        .await
        .map_err(|e| lost_race(id, e))?;
    let began = Instant::now();
    let lost = guard.lost();
    let started = tokio::select! {
        r = app.runtime.start(&rec, app.settings.pod_ready_wait) => r.map_err(|e| Error::WakeFailed(e.to_string())),
        _ = lost.cancelled() => Err(Error::WakeFailed("wake lock lost while starting the agent".into())),
        _ = app.shutdown.cancelled() => Err(Error::ShuttingDown),
    };
    let addr = match started {
        Ok(addr) => addr,
        Err(e) => {
            tracing::warn!(tenant = %id, reason = %e, "wake failed");
            // A start that failed or was interrupted may have left an agent half up.
            stop_quietly(app, id, "aborted").await;
            if let Err(se) = app
                .registry
                .set_status(id, TenantStatus::Provisioning, &StatusUpdate::idle())
                .await
            {
                tracing::warn!(tenant = %id, error = %se, "wake failed: could not reset status to idle");
            }
            return Err(e);
        }
    };
    let running =
        StatusUpdate::running(addr.pod_name.clone(), addr.pod_ip.clone(), addr.agent_port);
    if let Err(e) = app
        .registry
        .set_status(id, TenantStatus::Provisioning, &running)
        .await
    {
        // Deleted or taken over meanwhile: the agent we started belongs to nobody.
        let err = lost_race(id, e);
        tracing::warn!(tenant = %id, reason = %err, "wake failed");
        stop_quietly(app, id, "aborted").await;
        return Err(err);
    }
    let endpoint = addr.endpoint(app.runtime.agent_port());
    if let Err(e) = app.cache.set(id, &endpoint, ENDPOINT_TTL).await {
        tracing::warn!(tenant = %id, error = %e, "endpoint cache set failed");
    }
    app.metrics.wakes.inc(&["started"]);
    app.metrics.agent_started();
    app.metrics.observe_wake(began.elapsed());
    app.metrics
        .running_tenants
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(tenant = %id, endpoint = %endpoint, took_ms = began.elapsed().as_millis() as u64, "wake: agent running");
    Ok(Woken {
        pod_ip: addr.pod_ip,
        endpoint,
    })
}

async fn get(app: &App, id: &TenantId) -> Result<TenantRecord, Error> {
    app.registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?
        .ok_or_else(|| Error::NotFound(id.clone()))
}

/// The record's address if it says running and the agent answers.
async fn ready(app: &App, rec: &TenantRecord) -> Option<Woken> {
    let endpoint = rec.endpoint(app.runtime.agent_port())?;
    app.agent_healthy(&endpoint).await.then(|| Woken {
        pod_ip: rec.pod_ip.clone(),
        endpoint,
    })
}

fn lost_race(id: &TenantId, e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound(id.clone()),
        StoreError::Conflict(why) => {
            Error::WakeFailed(format!("tenant changed during the wake: {why}"))
        }
        other => Error::store("registry set_status")(other),
    }
}

async fn stop_quietly(app: &App, id: &TenantId, reason: &str) {
    match app.runtime.stop(id).await {
        Ok(()) => app.metrics.agent_stopped(reason),
        Err(e) => {
            tracing::warn!(tenant = %id, error = %e, "could not stop the agent of a failed wake")
        }
    }
}
