//! The orchestrator's metrics (rendering in `common::metrics`), one instance shared by every component.
//!
//! Labels are bounded sets (results, reasons, route templates, statuses), never tenant ids.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::metrics::{counter_by, gauge, CounterVec, Histogram, LATENCY_BUCKETS};

use crate::runtime::WarmPoolClaims;

pub struct Metrics {
    /// `result`: `ready` (already running), `started`, `joined` (another caller's wake), `not_found`, `failed`, `timeout`.
    pub wakes: CounterVec,
    /// Wakes that started an agent, from the request to the agent answering.
    pub wake_duration: Histogram,
    pub agent_starts: CounterVec,
    /// `reason`: `sleep`, `idle`, `delete`, `reconcile`, `orphan`, `shutdown`, `aborted`.
    pub agent_stops: CounterVec,
    pub running_tenants: AtomicI64,
    /// `method` (`setWebhook`, `deleteWebhook`), `result` (`ok`, `error`).
    pub telegram_calls: CounterVec,
    /// `method`, `route` (template, e.g. `/tenants/{id}`), `status`.
    pub http_requests: CounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            wakes: CounterVec::new(
                "orchestrator_wakes_total",
                "Wake requests by result.",
                &["result"],
            ),
            wake_duration: Histogram::new(
                "orchestrator_wake_duration_seconds",
                "Time of wakes that started an agent.",
                LATENCY_BUCKETS,
            ),
            agent_starts: CounterVec::new(
                "orchestrator_agent_starts_total",
                "Agents started.",
                &[],
            ),
            agent_stops: CounterVec::new(
                "orchestrator_agent_stops_total",
                "Agents stopped by reason.",
                &["reason"],
            ),
            running_tenants: AtomicI64::new(0),
            telegram_calls: CounterVec::new(
                "orchestrator_telegram_calls_total",
                "Telegram Bot API calls, by method and result.",
                &["method", "result"],
            ),
            http_requests: CounterVec::new(
                "orchestrator_http_requests_total",
                "HTTP requests by method, route template and status.",
                &["method", "route", "status"],
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records how long a wake that started an agent took.
    pub fn observe_wake(&self, took: Duration) {
        self.wake_duration.observe(took);
    }

    pub fn agent_started(&self) {
        self.agent_starts.inc(&[]);
    }

    pub fn agent_stopped(&self, reason: &str) {
        self.agent_stops.inc(&[reason]);
    }

    pub fn set_running(&self, n: usize) {
        self.running_tenants.store(n as i64, Ordering::Relaxed);
    }

    /// The exposition text; `warm_pool` comes from the runtime (`None` when it has no warm pool).
    pub fn render(&self, warm_pool: Option<WarmPoolClaims>) -> String {
        let mut out = String::new();
        common::metrics::build_info(&mut out, "orchestrator");
        self.wakes.render(&mut out);
        self.wake_duration.render(&mut out);
        if let Some(w) = warm_pool {
            counter_by(
                &mut out,
                "orchestrator_warm_pool_claims_total",
                "Agent starts that claimed a warm pod (hit) or started cold (miss).",
                "result",
                &[("hit", w.hits), ("miss", w.misses)],
            );
        }
        self.agent_starts.render(&mut out);
        self.agent_stops.render(&mut out);
        gauge(
            &mut out,
            "orchestrator_running_tenants",
            "Tenants whose record says running.",
            self.running_tenants.load(Ordering::Relaxed),
        );
        self.telegram_calls.render(&mut out);
        self.http_requests.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.wakes.inc(&["started"]);
        m.wakes.inc(&["started"]);
        m.agent_stopped("idle");
        m.http_requests.inc(&["GET", "/tenants/{id}", "200"]);
        m.observe_wake(Duration::from_millis(300));
        let text = m.render(Some(WarmPoolClaims { hits: 2, misses: 1 }));
        assert!(text.contains("orchestrator_wakes_total{result=\"started\"} 2"));
        assert!(text.contains("orchestrator_agent_stops_total{reason=\"idle\"} 1"));
        assert!(text.contains(
            "orchestrator_http_requests_total{method=\"GET\",route=\"/tenants/{id}\",status=\"200\"} 1"
        ));
        assert!(text.contains("# TYPE orchestrator_running_tenants gauge"));
        assert!(text.contains("orchestrator_wake_duration_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("orchestrator_warm_pool_claims_total{result=\"hit\"} 2"));
        assert!(text.contains("orchestrator_warm_pool_claims_total{result=\"miss\"} 1"));
    }
}
