//! Stopping agents: the shared stop step, the idle controller (leader only) and the shutdown sweep.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::registry::StatusUpdate;
use common::{TenantId, TenantRecord, TenantStatus};
use tokio::time::Instant;

use crate::app::App;
use crate::error::Error;
use crate::events;
use crate::tenant_lock::TenantGuard;
use common::lifecycle::NewEvent;

/// Stops the tenant's agent (it saves its state), then marks the record idle and drops the cached
/// endpoint. The guard proves the caller holds the tenant's lock.
pub async fn stop_locked(
    app: &App,
    guard: &TenantGuard,
    id: &TenantId,
    reason: &str,
) -> Result<(), Error> {
    let rec = app
        .registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?;
    // A newer lock generation wrote since we took the lock (ours lapsed): the tenant is theirs.
    if rec.as_ref().is_some_and(|r| r.fence > guard.fence()) {
        tracing::warn!(tenant = %id, "stop abandoned: a newer wake lock holder owns the tenant");
        return Err(Error::Busy(id.clone()));
    }
    app.runtime.stop(id).await?;
    app.metrics.agent_stopped(reason);
    if let Some(rec) = rec {
        if rec.status != TenantStatus::Idle {
            app.registry
                .set_status(id, rec.status, &StatusUpdate::idle().fenced(guard.fence()))
                .await
                .map_err(Error::store("registry set_status"))?;
            if rec.status == TenantStatus::Running {
                app.metrics.running_tenants.fetch_sub(1, Ordering::Relaxed);
            }
            let event = NewEvent::normal(events::reason::SLEPT, events::sleep_message(reason));
            events::record(app, id, event).await;
        }
    }
    app.forget_endpoint(id).await;
    Ok(())
}

/// True when the tenant has been inactive for longer than its idle timeout by `now`'s clock. Not
/// what the idle controller uses ([`crate::idle_clock`]: stamps come from other replicas' clocks).
pub fn is_expired(rec: &TenantRecord, now: DateTime<Utc>) -> bool {
    (now - rec.last_active_at).num_seconds() > rec.idle_timeout_s as i64
}

/// Every `idle_check_interval` until shutdown: stops tenants idle past their timeout, when leader.
pub async fn run_idle_controller(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.settings.idle_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        if let Err(e) = idle_check(&app).await {
            tracing::warn!(error = %e, "idle check failed; retrying next tick");
        }
    }
}

/// One pass of the idle controller; returns how many agents it stopped.
pub async fn idle_check(app: &App) -> Result<usize, Error> {
    if !app.leader.is_leader() {
        return Ok(0);
    }
    let running = app
        .registry
        .list(Some(TenantStatus::Running))
        .await
        .map_err(Error::store("registry list"))?;
    app.metrics.set_running(running.len());
    app.idle_clock.retain(&running);
    let mut stopped = 0;
    for rec in running.iter().filter(|r| app.idle_clock.expired(r)) {
        if app.shutdown.is_cancelled() || !app.leader.is_leader() {
            break;
        }
        let id = &rec.tenant_id;
        let guard = match app.locks.try_lock(id).await {
            Ok(Some(g)) => g,
            Ok(None) => continue, // a wake or stop is under way; look again next tick
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "idle check: wake lock unavailable");
                continue;
            }
        };
        let result = stop_if_still_idle(app, &guard, id).await;
        guard.release().await;
        match result {
            Ok(true) => stopped += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "idle check: stopping tenant failed")
            }
        }
    }
    Ok(stopped)
}

/// Re-reads the record under the lock: activity or a stop may have happened since the listing.
async fn stop_if_still_idle(app: &App, guard: &TenantGuard, id: &TenantId) -> Result<bool, Error> {
    let Some(rec) = app
        .registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?
    else {
        return Ok(false);
    };
    // Activity since the listing changed the stamp, which starts its count again.
    if rec.status != TenantStatus::Running || !app.idle_clock.expired(&rec) {
        return Ok(false);
    }
    tracing::info!(
        tenant = %id,
        idle_s = app.idle_clock.idle_for(&rec).as_secs(),
        idle_timeout_s = rec.idle_timeout_s,
        "idle check: terminating idle tenant"
    );
    stop_locked(app, guard, id, "idle").await?;
    Ok(true)
}

/// Shutdown with the local runtime: stops every agent (state saved) and marks its tenant idle, so
/// that no agent outlives the orchestrator. Agents are stopped concurrently within `budget`.
pub async fn stop_all_agents(app: &App, budget: Duration) {
    let agents = match app.runtime.list().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "shutdown: cannot list agents to stop them");
            return;
        }
    };
    if agents.is_empty() {
        return;
    }
    tracing::info!(agents = agents.len(), "shutdown: stopping agents");
    let deadline = Instant::now() + budget;
    let stops = agents.iter().map(|a| async move {
        let id = &a.tenant;
        match app.locks.lock(id, deadline).await {
            Ok(Some(guard)) => {
                if let Err(e) = stop_locked(app, &guard, id, "shutdown").await {
                    tracing::warn!(tenant = %id, error = %e, "shutdown: stopping agent failed");
                }
                guard.release().await;
            }
            Ok(None) => tracing::warn!(tenant = %id, "shutdown: tenant busy, agent left running"),
            Err(e) => tracing::warn!(tenant = %id, error = %e, "shutdown: wake lock unavailable, agent left running"),
        }
    });
    futures::future::join_all(stops).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::*;
    use crate::wake::wake;

    #[tokio::test]
    async fn idle_controller_stops_only_expired_tenants_and_only_when_leader() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let old = add_tenant(&t.app, "old").await;
        let fresh = add_tenant(&t.app, "fresh").await;
        wake(&t.app, &old).await.unwrap();
        wake(&t.app, &fresh).await.unwrap();
        assert_eq!(idle_check(&t.app).await.unwrap(), 0, "first sight is fresh");
        // The leader has watched both unchanged past their timeout; then `fresh` is active again.
        t.app.idle_clock.age(Duration::from_secs(301));
        let later = Utc::now() + chrono::Duration::seconds(5);
        t.app.registry.touch(&fresh, later).await.unwrap();

        t.leader.0.store(false, Ordering::SeqCst);
        assert_eq!(idle_check(&t.app).await.unwrap(), 0);
        assert!(t.runtime.running(&old), "a follower stops nothing");

        t.leader.0.store(true, Ordering::SeqCst);
        assert_eq!(idle_check(&t.app).await.unwrap(), 1);
        assert!(!t.runtime.running(&old));
        assert!(t.runtime.running(&fresh));
        let status = |rec: Option<TenantRecord>| rec.unwrap().status;
        assert_eq!(
            status(t.app.registry.get(&old).await.unwrap()),
            TenantStatus::Idle
        );
        assert_eq!(
            status(t.app.registry.get(&fresh).await.unwrap()),
            TenantStatus::Running
        );
        assert_eq!(
            t.app.cache.get(&old).await.unwrap(),
            None,
            "cache entry dropped"
        );
    }

    #[tokio::test]
    async fn idle_controller_skips_a_tenant_whose_lock_is_held() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        wake(&t.app, &id).await.unwrap();
        assert_eq!(idle_check(&t.app).await.unwrap(), 0);
        t.app.idle_clock.age(Duration::from_secs(400));
        let guard = t.app.locks.try_lock(&id).await.unwrap().unwrap();
        assert_eq!(idle_check(&t.app).await.unwrap(), 0);
        guard.release().await;
        assert_eq!(idle_check(&t.app).await.unwrap(), 1);
    }

    /// A stop whose lock was superseded (a successor's generation is stored: our lock lapsed
    /// while we held it) leaves the agent and the record alone.
    #[tokio::test]
    async fn a_stop_under_a_superseded_lock_leaves_the_agent_alone() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        wake(&t.app, &id).await.unwrap();
        let stale = t.app.locks.try_lock(&id).await.unwrap().unwrap();
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert!(
            stale.fence() > rec.fence,
            "a new acquisition's token is above the stored one"
        );
        // The successor re-records the agent under its own, newer generation.
        let successor =
            StatusUpdate::running(rec.pod_name.clone(), rec.pod_ip.clone(), rec.agent_port)
                .fenced(stale.fence() + 1);
        t.app
            .registry
            .set_status(&id, TenantStatus::Running, &successor)
            .await
            .unwrap();
        let result = stop_locked(&t.app, &stale, &id, "idle").await;
        assert!(matches!(result, Err(Error::Busy(_))), "{result:?}");
        assert!(t.runtime.running(&id), "the agent still runs");
        assert_eq!(
            t.app.registry.get(&id).await.unwrap().unwrap().status,
            TenantStatus::Running
        );
        stale.release().await;
    }

    #[test]
    fn expiry_is_strictly_after_the_timeout() {
        let now = Utc::now();
        let mut rec = TenantRecord::new(
            TenantId::parse("a").unwrap(),
            common::Secret::new("t"),
            60,
            "tenants",
            now,
        );
        rec.last_active_at = now - chrono::Duration::seconds(60);
        assert!(!is_expired(&rec, now));
        rec.last_active_at = now - chrono::Duration::seconds(61);
        assert!(is_expired(&rec, now));
    }
}
