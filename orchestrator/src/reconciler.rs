//! The reconciler (every replica): makes the registry and the runtime agree.
//!
//! One runtime listing and one registry listing per pass; every correction re-reads the record under
//! the tenant's lock and skips tenants whose lock is busy (a wake or stop is deciding for them).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::registry::StatusUpdate;
use common::{TenantId, TenantStatus};

use crate::app::App;
use crate::error::Error;
use crate::events;
use crate::lifecycle::stop_locked;
use crate::runtime::AgentInfo;
use crate::tenant_lock::TenantGuard;
use common::lifecycle::NewEvent;

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Running records whose agent was gone, now idle.
    pub reset: Vec<TenantId>,
    /// Provisioning records left by a crashed wake, now idle.
    pub unstuck: Vec<TenantId>,
    /// Agents without a running record, stopped.
    pub orphans_stopped: Vec<TenantId>,
    /// Suspended tenants whose agent still ran (a suspend interrupted by a crash), stopped.
    pub suspended_stopped: Vec<TenantId>,
    /// Deletions a crashed replica left half done, finished.
    pub deletions_finished: Vec<TenantId>,
}

/// Every `reconcile_interval` until shutdown.
pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.settings.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        if let Err(e) = reconcile(&app).await {
            tracing::warn!(error = %e, "reconciler: pass failed; retrying next tick");
        }
    }
}

#[derive(Clone, Copy)]
enum Fix {
    /// `running` record, agent not listed.
    Missing,
    /// `provisioning` record; stale if its lock is free.
    Stuck,
    /// Listed agent, no running/provisioning record.
    Orphan,
    /// Suspended record with an agent listed or a status other than idle.
    Suspended,
    /// Record marked `deleting` whose lock is free: the deleting replica is gone.
    Deleting,
}

pub async fn reconcile(app: &App) -> Result<Report, Error> {
    let agents = app.runtime.list().await?;
    let records = app
        .registry
        .list(None)
        .await
        .map_err(Error::store("registry list"))?;
    let listed: HashSet<&TenantId> = agents.iter().map(|a| &a.tenant).collect();
    let statuses: HashMap<&TenantId, TenantStatus> =
        records.iter().map(|r| (&r.tenant_id, r.status)).collect();
    app.metrics.set_running(
        records
            .iter()
            .filter(|r| r.status == TenantStatus::Running)
            .count(),
    );

    // Where the runtime says each agent answers: a running record pointing elsewhere (its pod was
    // replaced, its address reused by another tenant) is checked like a missing one.
    let addresses: HashMap<&TenantId, (&str, Option<u16>)> = agents
        .iter()
        .filter_map(|a| {
            let addr = a.address.as_ref()?;
            Some((&a.tenant, (addr.pod_ip.as_str(), addr.agent_port)))
        })
        .collect();
    let moved = |r: &common::TenantRecord| {
        addresses
            .get(&r.tenant_id)
            .is_some_and(|(ip, port)| *ip != r.pod_ip || *port != r.agent_port)
    };

    let mut todo: Vec<(TenantId, Fix)> = Vec::new();
    for r in &records {
        if r.deleting {
            todo.push((r.tenant_id.clone(), Fix::Deleting));
            continue;
        }
        if r.suspended && (r.status != TenantStatus::Idle || listed.contains(&r.tenant_id)) {
            todo.push((r.tenant_id.clone(), Fix::Suspended));
            continue;
        }
        match r.status {
            TenantStatus::Running if !listed.contains(&r.tenant_id) || moved(r) => {
                todo.push((r.tenant_id.clone(), Fix::Missing))
            }
            TenantStatus::Provisioning => todo.push((r.tenant_id.clone(), Fix::Stuck)),
            _ => {}
        }
    }
    let flagged: HashSet<&TenantId> = records
        .iter()
        .filter(|r| r.suspended || r.deleting)
        .map(|r| &r.tenant_id)
        .collect();
    for a in agents.iter().filter(|a| !flagged.contains(&a.tenant)) {
        let active = matches!(
            statuses.get(&a.tenant),
            Some(TenantStatus::Running | TenantStatus::Provisioning)
        );
        if !active {
            todo.push((a.tenant.clone(), Fix::Orphan));
        }
    }

    let mut report = Report::default();
    for (id, fix) in todo {
        if app.shutdown.is_cancelled() {
            break;
        }
        let guard = match app.locks.try_lock(&id).await {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "reconciler: wake lock unavailable");
                continue;
            }
        };
        let seen: Vec<AgentInfo> = agents.iter().filter(|a| a.tenant == id).cloned().collect();
        let result = apply(app, &guard, &id, fix, &seen).await;
        guard.release().await;
        match result {
            Ok(false) => {}
            Ok(true) => match fix {
                Fix::Missing => report.reset.push(id),
                Fix::Stuck => report.unstuck.push(id),
                Fix::Orphan => report.orphans_stopped.push(id),
                Fix::Suspended => report.suspended_stopped.push(id),
                Fix::Deleting => report.deletions_finished.push(id),
            },
            Err(e) => tracing::warn!(tenant = %id, error = %e, "reconciler: correction failed"),
        }
    }
    Ok(report)
}

/// Applies one correction if the re-read record still calls for it; true when it did.
async fn apply(
    app: &App,
    guard: &TenantGuard,
    id: &TenantId,
    fix: Fix,
    seen: &[AgentInfo],
) -> Result<bool, Error> {
    let agent_listed = !seen.is_empty();
    let rec = app
        .registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?;
    let status = rec.as_ref().map(|r| r.status);
    match fix {
        Fix::Missing => {
            let Some(rec) = rec.filter(|r| r.status == TenantStatus::Running) else {
                return Ok(false);
            };
            // A wake may have finished since the listing: the tenant's own agent answering is not
            // missing (another tenant's agent at a reused address is).
            if let Some(ep) = rec.endpoint(app.runtime.agent_port()) {
                if app.agent_is(&ep, &rec.agent_token).await {
                    return Ok(false);
                }
            }
            tracing::warn!(tenant = %id, pod = %rec.pod_name, "reconciler: pod missing, resetting state");
            app.registry
                .set_status(
                    id,
                    TenantStatus::Running,
                    &StatusUpdate::idle().fenced(guard.fence()),
                )
                .await
                .map_err(Error::store("registry set_status"))?;
            app.metrics
                .running_tenants
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            app.forget_endpoint(id).await;
            let message = format!("agent {} gone while running; reset to idle", rec.pod_name);
            events::record(app, id, NewEvent::warning(events::reason::RESET, message)).await;
            Ok(true)
        }
        Fix::Stuck => {
            if status != Some(TenantStatus::Provisioning) {
                return Ok(false);
            }
            // Its lock was free: the replica that was waking it is gone.
            tracing::warn!(tenant = %id, "reconciler: stale provisioning, resetting state");
            if agent_listed {
                stop_locked(app, guard, id, "reconcile").await?;
            } else {
                app.registry
                    .set_status(
                        id,
                        TenantStatus::Provisioning,
                        &StatusUpdate::idle().fenced(guard.fence()),
                    )
                    .await
                    .map_err(Error::store("registry set_status"))?;
                app.forget_endpoint(id).await;
            }
            let message = "provisioning left by a wake that never finished; reset to idle";
            events::record(app, id, NewEvent::warning(events::reason::RESET, message)).await;
            Ok(true)
        }
        Fix::Orphan => {
            if matches!(
                status,
                Some(TenantStatus::Running | TenantStatus::Provisioning)
            ) {
                return Ok(false);
            }
            tracing::warn!(tenant = %id, "reconciler: agent without a running tenant, stopping it");
            // Only the agent this pass listed: one a wake started since is not an orphan.
            app.runtime.stop_listed(id, seen).await?;
            app.metrics.agent_stopped("orphan");
            Ok(true)
        }
        Fix::Suspended => {
            if !rec.is_some_and(|r| r.suspended && !r.deleting) {
                return Ok(false);
            }
            tracing::warn!(tenant = %id, "reconciler: suspended tenant's agent still runs, stopping it");
            stop_locked(app, guard, id, "suspend").await?;
            Ok(true)
        }
        Fix::Deleting => {
            if !rec.is_some_and(|r| r.deleting) {
                return Ok(false);
            }
            tracing::warn!(tenant = %id, "reconciler: finishing a deletion left half done");
            // Whether the state was to be purged is not recorded: it is kept (rerun delete to purge).
            crate::tenants::delete_locked(app, guard, id, false).await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::*;
    use crate::wake::wake;

    #[tokio::test]
    async fn resets_a_running_tenant_whose_agent_died() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let dead = add_tenant(&t.app, "dead").await;
        let alive = add_tenant(&t.app, "alive").await;
        wake(&t.app, &dead).await.unwrap();
        wake(&t.app, &alive).await.unwrap();
        t.runtime.kill(&dead);

        let report = reconcile(&t.app).await.unwrap();
        assert_eq!(report.reset, vec![dead.clone()]);
        let rec = t.app.registry.get(&dead).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Idle);
        assert!(rec.pod_ip.is_empty());
        assert_eq!(t.app.cache.get(&dead).await.unwrap(), None);
        assert_eq!(
            t.app.registry.get(&alive).await.unwrap().unwrap().status,
            TenantStatus::Running
        );
        // The next wake starts a new agent.
        wake(&t.app, &dead).await.unwrap();
        assert!(t.runtime.running(&dead));
    }

    #[tokio::test]
    async fn stops_an_agent_with_no_running_record() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        // An agent whose record says idle (e.g. a crashed replica started it), and one with no record.
        t.app
            .runtime
            .start(&rec, Duration::from_secs(1))
            .await
            .unwrap();
        let mut ghost = rec.clone();
        ghost.tenant_id = tid("ghost");
        t.app
            .runtime
            .start(&ghost, Duration::from_secs(1))
            .await
            .unwrap();

        let mut report = reconcile(&t.app).await.unwrap();
        report.orphans_stopped.sort();
        assert_eq!(report.orphans_stopped, vec![id.clone(), tid("ghost")]);
        assert!(!t.runtime.running(&id));
        assert!(!t.runtime.running(&tid("ghost")));
    }

    #[tokio::test]
    async fn resets_provisioning_left_by_a_crashed_wake_but_not_one_in_progress() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let id = add_tenant(&t.app, "bob").await;
        t.app
            .registry
            .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
            .await
            .unwrap();
        let guard = t.app.locks.try_lock(&id).await.unwrap().unwrap();
        assert!(
            reconcile(&t.app).await.unwrap().unstuck.is_empty(),
            "a wake holds the lock"
        );
        guard.release().await;
        assert_eq!(reconcile(&t.app).await.unwrap().unstuck, vec![id.clone()]);
        assert_eq!(
            t.app.registry.get(&id).await.unwrap().unwrap().status,
            TenantStatus::Idle
        );
    }
}
