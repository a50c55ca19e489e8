//! Activity reports to the orchestrator (`PUT /tenants/{id}/activity`), at most one per tenant per
//! interval, sent by a background task so delivery never waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last.get(id) {
            if now.saturating_duration_since(*t) < self.interval {
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
        if self.throttle.should_report(id, Instant::now()) {
            let _ = self.tx.try_send(id.clone());
        }
    }
}

/// Sends queued reports until the queue closes; failures are logged and forgotten.
pub async fn report(mut rx: mpsc::Receiver<TenantId>, orch: Arc<OrchestratorClient>) {
    while let Some(id) = rx.recv().await {
        if let Err(e) = orch.activity(&id).await {
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
}
