//! Wake: make a tenant's agent run and return its address (docs/architecture.md, "A wake").

use std::sync::Arc;

use common::cache::ENDPOINT_TTL;
use common::registry::StatusUpdate;
use common::wire::{Endpoint, WakeAnswer};
use common::{StoreError, TenantId, TenantRecord, TenantStatus};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::App;
use crate::error::Error;
use crate::events::{self, reason};
use crate::metrics::WakeResult;
use crate::runtime::RuntimeError;
use crate::tenant_lock::{TenantGuard, RETRY_EVERY};
use common::lifecycle::NewEvent;

/// Where the woken agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Woken {
    pub pod_ip: String,
    pub endpoint: Endpoint,
}

impl From<Woken> for WakeAnswer {
    fn from(w: Woken) -> Self {
        WakeAnswer {
            pod_ip: Some(w.pod_ip).filter(|ip| !ip.is_empty()),
            endpoint: Some(w.endpoint),
        }
    }
}

/// Wakes the tenant (or finds it running) and returns its address. Exactly one agent starts however
/// many callers, in this process or other replicas, wake the same tenant at once.
#[tracing::instrument(name = "wake", skip_all, fields(tenant = %id, trace_id = tracing::field::Empty))]
pub async fn wake(app: &Arc<App>, id: &TenantId) -> Result<Woken, Error> {
    common::telemetry::record_trace_id(&tracing::Span::current());
    if app.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let rec = get(app, id).await?;
    refuse_suspended(&rec)?;
    if let Some(w) = ready(app, &rec).await {
        app.metrics.wakes.inc(WakeResult::ready);
        return Ok(w);
    }
    let result = wake_slow(app, id).await;
    let outcome = match &result {
        Ok(_) => None,
        Err(Error::NotFound(_)) => Some(WakeResult::not_found),
        Err(Error::Suspended(_)) => Some(WakeResult::suspended),
        Err(Error::WakeTimeout(_)) => Some(WakeResult::timeout),
        Err(_) => Some(WakeResult::failed),
    };
    if let Some(o) = outcome {
        app.metrics.wakes.inc(o);
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
        refuse_suspended(&rec)?;
        if let Some(w) = ready(app, &rec).await {
            app.metrics.wakes.inc(WakeResult::joined);
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
    // Re-read under the lock: a suspend that finished before we got it is seen here.
    refuse_suspended(&rec)?;
    if let Some(w) = ready(app, &rec).await {
        app.metrics.wakes.inc(WakeResult::joined);
        return Ok(w);
    }
    let rec = ensure_agent_token(app, rec).await?;
    let fence = guard.fence();
    let mut rec = app
        .registry
        .set_status(id, rec.status, &StatusUpdate::provisioning().fenced(fence))
        .await
        .map_err(|e| lost_race(id, e))?;
    // The runtime starts the agent with every resource set: the tenant's, else the platform's.
    rec.resources = rec.resources.over(&app.settings.agent_resources);
    let began = Instant::now();
    let lost = guard.lost();
    // A failure carries what `last_error` records (`None`: not the tenant's fault, e.g. shutdown).
    let started = tokio::select! {
        r = app.runtime.start(&rec, app.settings.pod_ready_wait) => r.map_err(|e| {
            let failure = e.last_error();
            (start_error(e), Some(failure))
        }),
        // The lock's backend failed (or was slow) under us: an outage, not the agent's fault.
        _ = lost.cancelled() => Err((lock_lost(), None)),
        _ = app.shutdown.cancelled() => Err((Error::ShuttingDown, None)),
    };
    let addr = match started {
        Ok(addr) => addr,
        Err((e, failure)) => {
            tracing::warn!(tenant = %id, reason = %e, "wake failed");
            if lost.is_cancelled() || superseded(app, id, fence).await {
                // Another replica may hold the lock by now and have adopted this agent: stopping
                // it or writing the record would undo that wake. What nobody finishes, the
                // reconciler repairs (a stuck `provisioning` record, an agent nobody records).
                return Err(e);
            }
            // A start that failed or was interrupted may have left an agent half up.
            stop_quietly(app, id, "aborted").await;
            let update = match &failure {
                Some(f) => StatusUpdate::failed(f.clone()),
                None => StatusUpdate::idle(),
            }
            .fenced(fence);
            if let Err(se) = app
                .registry
                .set_status(id, TenantStatus::Provisioning, &update)
                .await
            {
                tracing::warn!(tenant = %id, error = %se, "wake failed: could not reset status to idle");
            }
            if let Some(f) = failure {
                let message = format!("{}: {}", f.reason, f.message);
                events::record(app, id, NewEvent::warning(reason::START_FAILED, message)).await;
            }
            return Err(e);
        }
    };
    if lost.is_cancelled() {
        tracing::warn!(tenant = %id, "wake failed: wake lock lost before the agent was recorded; leaving it to the lock's new holder");
        return Err(lock_lost());
    }
    let running =
        StatusUpdate::running(addr.pod_name.clone(), addr.pod_ip.clone(), addr.agent_port)
            .fenced(fence);
    if let Err(e) = app
        .registry
        .set_status(id, TenantStatus::Provisioning, &running)
        .await
    {
        // Deleted or taken over meanwhile: the agent we started belongs to nobody, unless the
        // lock passed to another replica, whose wake owns it now.
        let err = lost_race(id, e);
        tracing::warn!(tenant = %id, reason = %err, "wake failed");
        if !lost.is_cancelled() && !superseded(app, id, fence).await {
            stop_quietly(app, id, "aborted").await;
        }
        return Err(err);
    }
    let endpoint = addr.endpoint(app.runtime.agent_port());
    if let Err(e) = app.cache.set(id, &endpoint.to_string(), ENDPOINT_TTL).await {
        tracing::warn!(tenant = %id, error = %e, "endpoint cache set failed");
    }
    app.metrics.wakes.inc(WakeResult::started);
    app.metrics.agent_started();
    app.metrics.observe_wake(began.elapsed());
    app.metrics
        .running_tenants
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let took_ms = began.elapsed().as_millis() as u64;
    tracing::info!(tenant = %id, endpoint = %endpoint, took_ms, "wake: agent running");
    let start = match addr.warm {
        Some(true) => ", warm pool hit",
        Some(false) => ", warm pool miss",
        None => "",
    };
    let message = format!("agent started in {took_ms} ms{start}");
    events::record(app, id, NewEvent::normal(reason::WOKE, message)).await;
    Ok(Woken {
        pod_ip: addr.pod_ip,
        endpoint,
    })
}

/// The lock's backend failed (or was slow) under a wake: an outage, not the agent's fault, so the
/// caller retries (503) and the next wake finds the agent up or the lock's new holder's record.
fn lock_lost() -> Error {
    Error::Store {
        what: "wake lock",
        source: StoreError::unavailable_msg("lock lost while starting the agent"),
    }
}

/// Whether a newer lock generation than `fence` wrote the tenant's record (our lock lapsed and a
/// successor took the tenant over, possibly adopting the agent we started). Unreadable: assume so,
/// since stopping an agent that may be serving is the worse mistake.
async fn superseded(app: &App, id: &TenantId, fence: u64) -> bool {
    match app.registry.get(id).await {
        Ok(Some(rec)) => rec.fence > fence,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(tenant = %id, error = %e, "wake: cannot read the record's fence");
            true
        }
    }
}

/// A suspended tenant is never woken; a tenant being deleted is as good as gone.
fn refuse_suspended(rec: &TenantRecord) -> Result<(), Error> {
    if rec.deleting {
        return Err(Error::NotFound(rec.tenant_id.clone()));
    }
    if rec.suspended {
        return Err(Error::Suspended(rec.tenant_id.clone()));
    }
    Ok(())
}

async fn get(app: &App, id: &TenantId) -> Result<TenantRecord, Error> {
    app.registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?
        .ok_or_else(|| Error::NotFound(id.clone()))
}

/// Gives a record without an agent credential (one the Go platform wrote, or one from before
/// credentials) its own, with a conditional write so that racing replicas agree on one.
async fn ensure_agent_token(app: &App, rec: TenantRecord) -> Result<TenantRecord, Error> {
    if !rec.agent_token.is_empty() {
        return Ok(rec);
    }
    let id = rec.tenant_id.clone();
    let rec = app
        .registry
        .set_agent_token_if_absent(&id, &common::tenant::new_agent_token())
        .await
        .map_err(|e| lost_race(&id, e))?;
    tracing::info!(tenant = %id, "wake: agent credential generated for a record without one");
    Ok(rec)
}

/// The record's address if it says running and the agent there proves to be this tenant's.
async fn ready(app: &App, rec: &TenantRecord) -> Option<Woken> {
    let endpoint = rec.endpoint(app.runtime.agent_port())?;
    app.agent_is(&endpoint, &rec.agent_token)
        .await
        .then(|| Woken {
            pod_ip: rec.pod_ip.clone(),
            endpoint,
        })
}

fn lost_race(id: &TenantId, e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound(id.clone()),
        // Changed under us (a stop, another replica): worth another try, not a failed start.
        StoreError::Conflict(why) => {
            tracing::info!(tenant = %id, reason = %why, "tenant changed during the wake");
            Error::Busy(id.clone())
        }
        other => Error::store("registry set_status")(other),
    }
}

/// The agent's own failures (image, crash, not healthy in time) are definitive; a runtime backend
/// that is unavailable (Kubernetes API, state store) is an outage the caller retries.
fn start_error(e: RuntimeError) -> Error {
    match e {
        RuntimeError::Unavailable { .. } => Error::Runtime(e),
        other => Error::WakeFailed(other),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use common::lock::WakeLock;
    use common::TenantStatus;

    use super::*;
    use crate::app::Settings;
    use crate::testing::*;

    const NO_TELEGRAM: &str = "http://127.0.0.1:1";

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_wakes_start_exactly_one_agent() {
        let t = test_app(
            FakeRuntime::new(Duration::from_millis(300)),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = add_tenant(&t.app, "bob").await;
        let wakes = (0..20).map(|_| {
            let (app, id) = (t.app.clone(), id.clone());
            tokio::spawn(async move { wake(&app, &id).await })
        });
        let results = futures::future::join_all(wakes).await;
        let endpoints: Vec<Endpoint> = results
            .into_iter()
            .map(|r| r.unwrap().expect("every wake succeeds").endpoint)
            .collect();
        assert_eq!(t.runtime.starts(), 1, "exactly one agent started");
        assert!(endpoints.iter().all(|e| *e == endpoints[0]));
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Running);
        assert_eq!(rec.endpoint(3000).as_ref(), Some(&endpoints[0]));
        assert_eq!(
            t.app.cache.get(&id).await.unwrap(),
            Some(endpoints[0].to_string())
        );
        // Awake and healthy: the next wake takes the fast path.
        wake(&t.app, &id).await.unwrap();
        assert_eq!(t.runtime.starts(), 1);
    }

    #[tokio::test]
    async fn unknown_tenant_is_not_found_and_not_created() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = tid("ghost");
        assert!(matches!(wake(&t.app, &id).await, Err(Error::NotFound(_))));
        assert_eq!(t.runtime.starts(), 0);
        assert!(t.app.registry.get(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn start_failure_leaves_tenant_idle_and_lock_free() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = add_tenant(&t.app, "bob").await;
        *t.runtime.fail_with.lock().unwrap() = Some("image pull failed".into());
        match wake(&t.app, &id).await {
            Err(Error::WakeFailed(why)) => {
                // The runtime's own error, kept whole: what the event and `last_error` record.
                assert!(matches!(why, RuntimeError::StartFailed { .. }), "{why:?}");
                assert!(why.to_string().contains("image pull failed"), "{why}")
            }
            other => panic!("expected WakeFailed, got {other:?}"),
        }
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Idle);
        let key = common::wake_lock_key(&id);
        assert!(
            t.lock
                .try_acquire(&key, "probe", Duration::from_secs(1))
                .await
                .unwrap(),
            "lock released"
        );
        t.lock.release(&key, "probe").await.unwrap();
        // The next wake starts it.
        *t.runtime.fail_with.lock().unwrap() = None;
        wake(&t.app, &id).await.unwrap();
        assert_eq!(
            t.app.registry.get(&id).await.unwrap().unwrap().status,
            TenantStatus::Running
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_during_start_loses_the_status_cas_and_stops_the_agent() {
        let t = test_app(
            FakeRuntime::new(Duration::from_millis(300)),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = add_tenant(&t.app, "bob").await;
        let waking = {
            let (app, id) = (t.app.clone(), id.clone());
            tokio::spawn(async move { wake(&app, &id).await })
        };
        // Another replica deletes the record while the agent starts (bypassing our lock).
        wait_for_status(&t.app, &id, TenantStatus::Provisioning).await;
        assert!(t.app.registry.delete(&id).await.unwrap());
        let result = waking.await.unwrap();
        assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
        assert_eq!(t.runtime.starts(), 1);
        assert!(!t.runtime.running(&id), "the orphaned agent was stopped");
        assert!(
            t.app.registry.get(&id).await.unwrap().is_none(),
            "not re-created"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_for_another_replicas_wake_instead_of_starting() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = add_tenant(&t.app, "bob").await;
        let key = common::wake_lock_key(&id);
        assert!(t
            .lock
            .try_acquire(&key, "replica-2", Duration::from_secs(30))
            .await
            .unwrap());
        let waking = {
            let (app, id) = (t.app.clone(), id.clone());
            tokio::spawn(async move { wake(&app, &id).await })
        };
        // "replica-2" finishes: its agent answers and the record says running.
        let agent = StubServer::json("{}");
        t.app
            .registry
            .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
            .await
            .unwrap();
        let running = StatusUpdate::running(id.pod_name(), "127.0.0.1".into(), Some(agent.port()));
        t.app
            .registry
            .set_status(&id, TenantStatus::Provisioning, &running)
            .await
            .unwrap();
        let woken = waking.await.unwrap().unwrap();
        assert_eq!(
            woken.endpoint.to_string(),
            format!("127.0.0.1:{}", agent.port())
        );
        assert_eq!(t.runtime.starts(), 0, "no second agent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sleep_waits_for_a_wake_in_progress() {
        let t = test_app(
            FakeRuntime::new(Duration::from_millis(300)),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = add_tenant(&t.app, "bob").await;
        let waking = {
            let (app, id) = (t.app.clone(), id.clone());
            tokio::spawn(async move { wake(&app, &id).await })
        };
        wait_for_status(&t.app, &id, TenantStatus::Provisioning).await;
        crate::tenants::sleep(&t.app, &id).await.unwrap();
        waking.await.unwrap().unwrap();
        // The stop ran after the start completed, never concurrently with it.
        assert_eq!(t.runtime.starts(), 1);
        assert_eq!(t.runtime.stops.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!t.runtime.running(&id));
        assert_eq!(
            t.app.registry.get(&id).await.unwrap().unwrap().status,
            TenantStatus::Idle
        );
    }

    /// A record the Go platform wrote has no credential: the wake gives it one (conditionally, so
    /// a racing replica's wins), and the agent starts with it.
    #[tokio::test]
    async fn a_record_without_a_credential_gets_one_at_its_wake() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            NO_TELEGRAM,
        );
        let id = tid("legacy");
        let rec = TenantRecord::new(
            id.clone(),
            common::Secret::new("1:go"),
            300,
            "tenants",
            chrono::Utc::now(),
        );
        t.app.registry.create(&rec).await.unwrap();
        wake(&t.app, &id).await.unwrap();
        let after = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(after.agent_token.expose().len(), 64);
        assert_eq!(after.status, TenantStatus::Running);
        // The fast path now confirms the agent with that credential; it stays the same.
        wake(&t.app, &id).await.unwrap();
        assert_eq!(t.runtime.starts(), 1);
        assert_eq!(
            t.app.registry.get(&id).await.unwrap().unwrap().agent_token,
            after.agent_token
        );
    }

    async fn wait_for_status(app: &App, id: &TenantId, want: TenantStatus) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.registry.get(id).await.unwrap().map(|r| r.status) != Some(want) {
            assert!(Instant::now() < deadline, "status never became {want}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_that_lost_its_lock_leaves_the_agent_to_the_replica_that_took_over() {
        let runtime = FakeRuntime::new(Duration::from_millis(1000));
        let settings = Settings {
            wake_lock_ttl: Duration::from_millis(600),
            ..quick_settings()
        };
        let (a, b, lock, _dir) = two_replicas(runtime.clone(), settings);
        let id = add_tenant(&a, "bob").await;
        let first = tokio::spawn({
            let (a, id) = (a.clone(), id.clone());
            async move { wake(&a, &id).await }
        });
        wait_for_status(&a, &id, TenantStatus::Provisioning).await;
        // Replica A is cut off past the lock's TTL while its agent starts; B takes the lock over.
        lock.lapse();
        let second = wake(&b, &id).await;
        let first = first.await.unwrap();

        assert!(first.is_err(), "the wake that lost its lock fails");
        let woken = second.expect("the replica that took the lock over wakes the tenant");
        let rec = b.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Running);
        assert_eq!(rec.endpoint(3000), Some(woken.endpoint));
        assert!(runtime.running(&id), "the adopted agent still runs");
    }

    /// Storage-level fencing: replica A's lock is gone (a Redis failover lost the key) but A does
    /// not know it; B takes the lock and the wake over. A's start finishes first: its `running`
    /// write carries the older lock generation and is refused, and A does not stop the agent that
    /// B adopts. Without the fence A's write lands and B, finding the status moved, stops the agent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_lock_holder_cannot_overwrite_its_successor_or_stop_its_agent() {
        let runtime = FakeRuntime::new(Duration::from_millis(600));
        let (a, b, _dir) = split_brain_replicas(runtime.clone(), quick_settings());
        let id = add_tenant(&a, "bob").await;
        let first = tokio::spawn({
            let (a, id) = (a.clone(), id.clone());
            async move { wake(&a, &id).await }
        });
        wait_for_status(&a, &id, TenantStatus::Provisioning).await;
        let a_fence = b.registry.get(&id).await.unwrap().unwrap().fence;
        let second = tokio::spawn({
            let (b, id) = (b.clone(), id.clone());
            async move { wake(&b, &id).await }
        });
        let first = first.await.unwrap();
        let second = second.await.unwrap();

        assert!(first.is_err(), "the stale holder's wake fails: {first:?}");
        let woken = second.expect("the successor wakes the tenant");
        let rec = b.registry.get(&id).await.unwrap().unwrap();
        assert!(rec.fence > a_fence, "the successor's generation is stored");
        assert_eq!(rec.status, TenantStatus::Running);
        assert_eq!(rec.endpoint(3000), Some(woken.endpoint.clone()));
        assert!(runtime.running(&id), "the serving agent still runs");
        assert_eq!(
            runtime.stops.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing stopped"
        );
    }
}
