//! Activity reports to the orchestrator (`PUT /tenants/{id}/activity`), at most one per tenant per
//! interval, sent by a background task so delivery never waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use common::TenantId;
use tokio::sync::mpsc;

use crate::orchestrator_client::OrchestratorClient;

/// Decides whether a tenant's activity is due: the first time, then once per `interval`.
pub struct ActivityThrottle {
    interval: Duration,
    last: Mutex<HashMap<TenantId, Instant>>,
}

impl ActivityThrottle {
    pub fn new(interval: Duration) -> Self {
        ActivityThrottle {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn should_report(&self, id: &TenantId, now: Instant) -> bool {
        self.should_report_within(id, now, self.interval)
    }

    /// Like [`should_report`](Self::should_report) with a shorter gap (a forward in flight).
    pub fn should_report_within(&self, id: &TenantId, now: Instant, gap: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last.get(id) {
            if now.saturating_duration_since(*t) < gap {
                return false;
            }
        }
        if last.len() >= 4096 {
            let interval = self.interval;
            last.retain(|_, t| now.saturating_duration_since(*t) < interval);
        }
        last.insert(id.clone(), now);
        true
    }

    /// Forgets the tenant's last report, so that the next touch sends one: a report that was
    /// dropped or failed must not count as sent.
    pub fn forget(&self, id: &TenantId) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The delivery side's handle: `touch` never blocks; a full queue drops the report.
pub struct Activity {
    throttle: ActivityThrottle,
    tx: mpsc::Sender<TenantId>,
}

impl Activity {
    /// The handle and the queue the reporter task drains (see [`report`]).
    pub fn new(interval: Duration) -> (Arc<Activity>, mpsc::Receiver<TenantId>) {
        let (tx, rx) = mpsc::channel(1024);
        let a = Activity {
            throttle: ActivityThrottle::new(interval),
            tx,
        };
        (Arc::new(a), rx)
    }

    pub fn touch(&self, id: &TenantId) {
        self.touch_within(id, self.throttle.interval);
    }

    fn touch_within(&self, id: &TenantId, gap: Duration) {
        if self.throttle.should_report_within(id, Instant::now(), gap)
            && self.tx.try_send(id.clone()).is_err()
        {
            self.throttle.forget(id);
        }
    }

    /// Runs `work` (a forward to the agent) while keeping the tenant's `last_active_at` fresh: a
    /// report when it starts and every half interval while it runs, so the idle controller never
    /// sees an agent as idle while it is working on a reply (the shortest idle timeout is 10 s,
    /// the default interval 10 s).
    pub async fn while_busy<F: std::future::Future>(&self, id: &TenantId, work: F) -> F::Output {
        let half = (self.throttle.interval / 2).max(Duration::from_millis(100));
        self.touch_within(id, half);
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(Instant::now() + half, half);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.touch_within(id, half),
            }
        }
    }
}

/// Sends queued reports until the queue closes; a failed report is logged and un-counted, so the
/// tenant's next touch reports again.
pub async fn report(
    mut rx: mpsc::Receiver<TenantId>,
    orch: Arc<OrchestratorClient>,
    activity: Arc<Activity>,
) {
    while let Some(id) = rx.recv().await {
        if let Err(e) = orch.activity(&id).await {
            activity.throttle.forget(&id);
            tracing::warn!(tenant = %id, error = %e, "activity report failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_once_per_interval_per_tenant() {
        let t = ActivityThrottle::new(Duration::from_secs(10));
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let t0 = Instant::now();
        assert!(t.should_report(&a, t0));
        assert!(!t.should_report(&a, t0 + Duration::from_secs(1)));
        assert!(!t.should_report(&a, t0 + Duration::from_millis(9_999)));
        assert!(
            t.should_report(&b, t0 + Duration::from_secs(1)),
            "tenants are independent"
        );
        assert!(t.should_report(&a, t0 + Duration::from_secs(10)));
        assert!(!t.should_report(&a, t0 + Duration::from_secs(15)));
    }

    #[test]
    fn a_forgotten_report_is_due_again_at_once() {
        let t = ActivityThrottle::new(Duration::from_secs(10));
        let a = TenantId::parse("a").unwrap();
        let t0 = Instant::now();
        assert!(t.should_report(&a, t0));
        t.forget(&a);
        assert!(t.should_report(&a, t0 + Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn a_long_forward_keeps_reporting_while_it_runs() {
        // Interval 200 ms: a report at the start and one every 100 ms while the forward runs.
        let (activity, mut rx) = Activity::new(Duration::from_millis(200));
        let a = TenantId::parse("a").unwrap();
        activity
            .while_busy(&a, tokio::time::sleep(Duration::from_millis(1000)))
            .await;
        let mut reports = 0;
        while rx.try_recv().is_ok() {
            reports += 1;
        }
        // The plain throttle would allow 1 (a touch after the reply): the forward in flight
        // sends ~10; a loaded machine may delay ticks, so only a floor is asserted.
        assert!(reports >= 4, "{reports} reports during a 1 s forward");
    }
}
