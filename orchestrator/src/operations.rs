//! Operator actions beyond create/update/delete: suspend and resume, the event history, logs.

use common::lifecycle::{NewEvent, TenantEvent, EVENTS_KEPT};
use common::{StoreError, TenantId};
use tokio::time::Instant;

use crate::app::App;
use crate::error::Error;
use crate::events::{self, reason};
use crate::lifecycle::stop_locked;
use crate::runtime::LogQuery;

/// Stops the agent (state saved) and keeps it stopped: wakes answer `Suspended` until `resume`.
/// The flag is set before the stop, under the tenant's lock, so no wake can slip in between; a
/// crash between the two leaves a suspended record with an agent, which the reconciler stops.
pub async fn suspend(app: &App, id: &TenantId) -> Result<(), Error> {
    let deadline = Instant::now() + app.settings.wake_wait();
    let guard = app
        .locks
        .lock(id, deadline)
        .await
        .map_err(Error::store("wake lock"))?
        .ok_or_else(|| Error::Busy(id.clone()))?;
    let result = async {
        let before = app
            .registry
            .get(id)
            .await
            .map_err(Error::store("registry get"))?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        app.registry
            .set_suspended(id, true)
            .await
            .map_err(|e| not_found_or(id, e))?;
        if !before.suspended {
            tracing::info!(tenant = %id, "tenant suspended");
            let event = NewEvent::normal(reason::SUSPENDED, "suspended by an operator");
            events::record(app, id, event).await;
        }
        stop_locked(app, &guard, id, "suspend").await
    }
    .await;
    guard.release().await;
    result
}

/// Lets the next message wake the tenant as usual; a no-op when it is not suspended.
pub async fn resume(app: &App, id: &TenantId) -> Result<(), Error> {
    let before = app
        .registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?
        .ok_or_else(|| Error::NotFound(id.clone()))?;
    app.registry
        .set_suspended(id, false)
        .await
        .map_err(|e| not_found_or(id, e))?;
    if before.suspended {
        tracing::info!(tenant = %id, "tenant resumed");
        let event = NewEvent::normal(reason::RESUMED, "resumed; the next message wakes it");
        events::record(app, id, event).await;
    }
    Ok(())
}

/// The tenant's newest events (at most `limit`, at most `EVENTS_KEPT`) after `after`, oldest
/// first. A deleted tenant's history stays readable.
pub async fn events(
    app: &App,
    id: &TenantId,
    after: u64,
    limit: Option<usize>,
) -> Result<Vec<TenantEvent>, Error> {
    let limit = limit
        .unwrap_or(EVENTS_KEPT as usize)
        .min(EVENTS_KEPT as usize);
    app.registry
        .events(id, after, limit)
        .await
        .map_err(Error::store("registry events"))
}

/// The agent's recent output from the runtime.
pub async fn logs(app: &App, id: &TenantId, query: &LogQuery) -> Result<String, Error> {
    app.registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?
        .ok_or_else(|| Error::NotFound(id.clone()))?;
    app.runtime.logs(id, query).await?.ok_or_else(|| {
        Error::BadRequest(format!(
            "the {} runtime keeps no agent logs",
            app.runtime.name()
        ))
    })
}

fn not_found_or(id: &TenantId, e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound(id.clone()),
        other => Error::store("registry set_suspended")(other),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use common::TenantStatus;

    use super::*;
    use crate::testing::*;
    use crate::wake::wake;

    #[tokio::test]
    async fn a_suspended_tenant_is_stopped_never_woken_and_wakes_after_resume() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        wake(&t.app, &id).await.unwrap();
        suspend(&t.app, &id).await.unwrap();
        assert!(!t.runtime.running(&id), "agent stopped");
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Idle);
        assert!(rec.suspended);
        assert_eq!(t.app.cache.get(&id).await.unwrap(), None);
        let err = wake(&t.app, &id).await.unwrap_err();
        assert!(matches!(err, Error::Suspended(_)), "{err:?}");
        assert_eq!(err.to_string(), "tenant \"bob\" is suspended");
        assert_eq!(t.runtime.starts(), 1, "no start while suspended");
        suspend(&t.app, &id).await.unwrap(); // idempotent
        resume(&t.app, &id).await.unwrap();
        wake(&t.app, &id).await.unwrap();
        assert_eq!(t.runtime.starts(), 2);
        let reasons: Vec<String> = events(&t.app, &id, 0, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(
            reasons,
            ["Woke", "Suspended", "Slept", "Resumed", "Woke"],
            "one Suspended for two suspends"
        );
        assert!(matches!(
            suspend(&t.app, &tid("ghost")).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            resume(&t.app, &tid("ghost")).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suspend_during_a_wake_waits_for_it_then_stops_the_agent() {
        let t = test_app(
            FakeRuntime::new(Duration::from_millis(300)),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        let waking = {
            let (app, id) = (t.app.clone(), id.clone());
            tokio::spawn(async move { wake(&app, &id).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while t.app.registry.get(&id).await.unwrap().unwrap().status != TenantStatus::Provisioning {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        suspend(&t.app, &id).await.unwrap();
        let _ = waking.await.unwrap();
        assert!(!t.runtime.running(&id), "no agent outlives the suspend");
        assert!(matches!(wake(&t.app, &id).await, Err(Error::Suspended(_))));
    }

    #[tokio::test]
    async fn a_failed_start_is_the_last_error_until_a_start_succeeds() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        *t.runtime.fail_with.lock().unwrap() = Some("pod zeroclaw-bob: ErrImagePull".into());
        wake(&t.app, &id).await.unwrap_err();
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        let err = rec.last_error.clone().expect("last error");
        assert_eq!(err.reason, "ImagePullFailed");
        assert!(err.message.contains("ErrImagePull"), "{}", err.message);
        assert_eq!(rec.phase(), common::lifecycle::Phase::Error);
        let evs = events(&t.app, &id, 0, None).await.unwrap();
        assert_eq!(evs.last().unwrap().reason, "StartFailed");
        *t.runtime.fail_with.lock().unwrap() = None;
        wake(&t.app, &id).await.unwrap();
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.last_error, None);
        assert_eq!(rec.phase(), common::lifecycle::Phase::Ready);
    }
}
