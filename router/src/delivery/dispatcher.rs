//! The dispatcher: runs one worker per tenant with pending work (rung by the HTTP side, and a
//! periodic scan for entries nobody is delivering), releases each claim when its worker ends, and
//! stops them all on shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::TenantId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Delivery;

/// Tenants with new entries, rung by the HTTP side: a burst of webhooks for one tenant wakes the
/// dispatcher once instead of once per update.
#[derive(Default)]
struct Doorbell {
    tenants: std::sync::Mutex<Tenants>,
    bell: tokio::sync::Notify,
}

/// Who has news and who is being delivered, under one lock: a ring for a tenant whose worker is
/// running only marks it (the dispatcher restarts the worker when it ends), so a busy tenant's
/// webhooks do not wake the dispatcher once each.
#[derive(Default)]
struct Tenants {
    waiting: HashSet<TenantId>,
    running: HashMap<TenantId, Slot>,
}

impl Doorbell {
    fn ring(&self, tenant: &TenantId) {
        let first = {
            let mut t = self.lock();
            if let Some(slot) = t.running.get_mut(tenant) {
                slot.again = true;
                return;
            }
            let was_empty = t.waiting.is_empty();
            t.waiting.insert(tenant.clone()) && was_empty
        };
        if first {
            self.bell.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tenants> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle the HTTP side uses to announce new entries, and to stop delivery.
pub struct Dispatcher {
    doorbell: Arc<Doorbell>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dispatcher {
    /// Starts the dispatcher (and the activity reporter draining `activity_rx`) on the current runtime.
    pub fn start(
        delivery: Arc<Delivery>,
        activity_rx: mpsc::Receiver<TenantId>,
        grace: Duration,
    ) -> Dispatcher {
        let doorbell = Arc::new(Doorbell::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            delivery,
            doorbell.clone(),
            activity_rx,
            cancel.clone(),
            grace,
        ));
        Dispatcher {
            doorbell,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// A new entry is in the inbox for `tenant`.
    pub fn notify(&self, tenant: &TenantId) {
        self.doorbell.ring(tenant);
    }

    /// Stops delivery: workers finish their update in flight within the grace period or leave it in
    /// the inbox; claims are released.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "dispatcher task failed");
            }
        }
    }
}

/// Per-tenant bookkeeping of the dispatcher.
struct Slot {
    task: tokio::task::Id,
    /// Notified while the worker ran: the worker may have missed it, run again when it ends.
    again: bool,
}

async fn run(
    d: Arc<Delivery>,
    doorbell: Arc<Doorbell>,
    activity_rx: mpsc::Receiver<TenantId>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let reporter = tokio::spawn(crate::activity::report(
        activity_rx,
        d.orch.clone(),
        d.activity.clone(),
    ));
    let mut workers: JoinSet<()> = JoinSet::new();
    let mut tenants_of: HashMap<tokio::task::Id, TenantId> = HashMap::new();
    let mut scan = tokio::time::interval(d.cfg.scan_interval);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Runs a worker for `t`, or marks its running worker to run again.
    let start = |t: TenantId,
                 running: &mut HashMap<TenantId, Slot>,
                 workers: &mut JoinSet<()>,
                 tenants_of: &mut HashMap<tokio::task::Id, TenantId>| {
        if let Some(slot) = running.get_mut(&t) {
            slot.again = true;
            return;
        }
        let (d, stop, tenant) = (d.clone(), cancel.clone(), t.clone());
        let handle = workers.spawn(async move { d.work(&tenant, &stop).await });
        tenants_of.insert(handle.id(), t.clone());
        running.insert(
            t,
            Slot {
                task: handle.id(),
                again: false,
            },
        );
    };

    loop {
        d.metrics
            .active_workers
            .store(doorbell.lock().running.len() as u64, Ordering::Relaxed);
        tokio::select! {
            // Shutdown first, then finished workers (so `running` is current), then new work.
            biased;
            _ = cancel.cancelled() => break,
            Some(done) = workers.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "delivery worker failed");
                        e.id()
                    }
                };
                let Some(tenant) = tenants_of.remove(&id) else { continue };
                // From here a ring sees the tenant not running and wakes the dispatcher; one
                // before was recorded in `again`.
                let again = {
                    let mut t = doorbell.lock();
                    match t.running.get(&tenant) {
                        Some(slot) if slot.task == id => {
                            let again = slot.again;
                            t.running.remove(&tenant);
                            again
                        }
                        _ => false,
                    }
                };
                if let Err(e) = d.inbox.release_claim(&tenant, &d.replica).await {
                    tracing::warn!(tenant = %tenant, error = %e, "claim release failed");
                }
                if again && !cancel.is_cancelled() {
                    start(tenant, &mut doorbell.lock().running, &mut workers, &mut tenants_of);
                }
            }
            _ = doorbell.bell.notified() => {
                let mut t = doorbell.lock();
                let t = &mut *t;
                for tenant in std::mem::take(&mut t.waiting) {
                    start(tenant, &mut t.running, &mut workers, &mut tenants_of);
                }
            },
            _ = scan.tick() => match d.inbox.tenants().await {
                Ok(ts) => {
                    let mut t = doorbell.lock();
                    for tenant in ts {
                        start(tenant, &mut t.running, &mut workers, &mut tenants_of);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inbox scan failed"),
            },
        }
    }

    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = workers.join_next() => if done.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(workers = workers.len(), "shutdown grace over, leaving in-flight updates in the inbox");
                workers.shutdown().await;
                break;
            }
        }
    }
    let running: Vec<TenantId> = doorbell.lock().running.drain().map(|(t, _)| t).collect();
    for tenant in &running {
        if let Err(e) = d.inbox.release_claim(tenant, &d.replica).await {
            tracing::warn!(tenant = %tenant, error = %e, "claim release failed");
        }
    }
    reporter.abort();
    let _ = reporter.await;
    d.metrics.active_workers.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_webhook_for_a_tenant_being_delivered_marks_it_without_waking_the_dispatcher() {
        let bell = Doorbell::default();
        let (busy, idle) = (
            TenantId::parse("busy").unwrap(),
            TenantId::parse("idle").unwrap(),
        );
        let task = tokio::spawn(async {}).id();
        bell.lock()
            .running
            .insert(busy.clone(), Slot { task, again: false });

        bell.ring(&busy);
        assert!(
            bell.lock().running[&busy].again,
            "the running worker runs again"
        );
        assert!(bell.lock().waiting.is_empty());
        assert!(bell.bell.notified().now_or_never().is_none(), "no wake-up");

        bell.ring(&idle);
        bell.ring(&idle);
        assert_eq!(bell.lock().waiting, HashSet::from([idle]));
        assert!(bell.bell.notified().now_or_never().is_some(), "one wake-up");
        assert!(bell.bell.notified().now_or_never().is_none());
    }
}
