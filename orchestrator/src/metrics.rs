//! The orchestrator's metrics (`common::metrics` on prometheus-client), one instance shared by
//! every component. Labels are typed closed sets (results, reasons, route templates, statuses),
//! never tenant ids; a new metric: a label set below, a field, one line in `Default`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::metrics::{
    counter, gauge, variant_named, Counter, Counters, EncodeLabelSet, EncodeLabelValue, HttpMethod,
    Registry, Seconds, LATENCY_BUCKETS,
};

use crate::runtime::WarmPoolClaims;

/// `orchestrator_wakes_total{result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WakeResult {
    /// Already running (fast path).
    ready,
    started,
    /// Another caller's wake was running.
    joined,
    not_found,
    suspended,
    failed,
    timeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeLabels {
    pub result: WakeResult,
}

impl From<WakeResult> for WakeLabels {
    fn from(result: WakeResult) -> Self {
        WakeLabels { result }
    }
}

/// `orchestrator_agent_stops_total{reason}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StopReason {
    sleep,
    idle,
    delete,
    reconcile,
    orphan,
    shutdown,
    aborted,
    suspend,
}

impl StopReason {
    const ALL: &[StopReason] = &[
        Self::sleep,
        Self::idle,
        Self::delete,
        Self::reconcile,
        Self::orphan,
        Self::shutdown,
        Self::aborted,
        Self::suspend,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StopLabels {
    pub reason: StopReason,
}

/// `orchestrator_telegram_calls_total{method,result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TelegramMethod {
    setWebhook,
    deleteWebhook,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CallResult {
    ok,
    error,
}

impl CallResult {
    pub fn of(ok: bool) -> Self {
        if ok {
            Self::ok
        } else {
            Self::error
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TelegramLabels {
    pub method: TelegramMethod,
    pub result: CallResult,
}

/// `orchestrator_http_requests_total{method,route,status}`: `route` is the route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: HttpMethod,
    pub route: String,
    pub status: u16,
}

/// `orchestrator_warm_pool_claims_total{result}`, read from the runtime at scrape time.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Claim {
    hit,
    miss,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    result: Claim,
}

pub struct Metrics {
    registry: Registry,
    pub wakes: Counters<WakeLabels>,
    /// Wakes that started an agent, from the request to the agent answering.
    pub wake_duration: Seconds,
    pub agent_starts: Counter,
    pub agent_stops: Counters<StopLabels>,
    pub running_tenants: AtomicI64,
    pub telegram_calls: Counters<TelegramLabels>,
    pub http_requests: Counters<HttpLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        common::metrics::build_info(r, "orchestrator");
        Metrics {
            wakes: Counters::new(r, "orchestrator_wakes_total", "Wake requests by result."),
            wake_duration: Seconds::new(
                r,
                "orchestrator_wake_duration_seconds",
                "Time of wakes that started an agent.",
                LATENCY_BUCKETS,
            ),
            agent_starts: counter(r, "orchestrator_agent_starts_total", "Agents started."),
            agent_stops: Counters::new(
                r,
                "orchestrator_agent_stops_total",
                "Agents stopped by reason.",
            ),
            running_tenants: AtomicI64::new(0),
            telegram_calls: Counters::new(
                r,
                "orchestrator_telegram_calls_total",
                "Telegram Bot API calls, by method and result.",
            ),
            http_requests: Counters::new(
                r,
                "orchestrator_http_requests_total",
                "HTTP requests by method, route template and status.",
            ),
            registry,
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
        self.agent_starts.inc();
    }

    /// `reason` is one of [`StopReason`]'s names (the lifecycle passes it on to events too).
    pub fn agent_stopped(&self, reason: &str) {
        match variant_named(StopReason::ALL, reason) {
            Some(reason) => {
                self.agent_stops.inc(StopLabels { reason });
            }
            None => debug_assert!(false, "stop reason {reason} is not a StopReason"),
        }
    }

    pub fn telegram_call(&self, method: TelegramMethod, ok: bool) {
        self.telegram_calls.inc(TelegramLabels {
            method,
            result: CallResult::of(ok),
        });
    }

    pub fn set_running(&self, n: usize) {
        self.running_tenants.store(n as i64, Ordering::Relaxed);
    }

    /// The exposition text; `warm_pool` comes from the runtime (`None` when it has no warm pool).
    pub fn render(&self, warm_pool: Option<WarmPoolClaims>) -> String {
        let mut scrape = Registry::default();
        if let Some(w) = warm_pool {
            let claims = Counters::<ClaimLabels>::new(
                &mut scrape,
                "orchestrator_warm_pool_claims_total",
                "Agent starts that claimed a warm pod (hit) or started cold (miss).",
            );
            claims.inc_by(ClaimLabels { result: Claim::hit }, w.hits);
            claims.inc_by(
                ClaimLabels {
                    result: Claim::miss,
                },
                w.misses,
            );
        }
        gauge(
            &mut scrape,
            "orchestrator_running_tenants",
            "Tenants whose record says running.",
            self.running_tenants.load(Ordering::Relaxed),
        );
        common::metrics::render(&[&self.registry, &scrape])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.wakes.inc(WakeResult::started);
        m.wakes.inc(WakeResult::started);
        m.agent_stopped("idle");
        m.http_requests.inc(HttpLabels {
            method: HttpMethod::GET,
            route: "/tenants/{id}".into(),
            status: 200,
        });
        m.observe_wake(Duration::from_millis(300));
        let text = m.render(Some(WarmPoolClaims { hits: 2, misses: 1 }));
        assert!(text.contains("orchestrator_wakes_total{result=\"started\"} 2"));
        assert!(text.contains("orchestrator_agent_stops_total{reason=\"idle\"} 1"));
        assert!(text.contains(
            "orchestrator_http_requests_total{method=\"GET\",route=\"/tenants/{id}\",status=\"200\"} 1"
        ));
        assert!(text.contains("# TYPE orchestrator_running_tenants gauge"));
        assert!(text.contains("# TYPE orchestrator_agent_starts_total counter"));
        assert!(text.contains("orchestrator_agent_starts_total 0"));
        assert!(text.contains("orchestrator_wake_duration_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("orchestrator_warm_pool_claims_total{result=\"hit\"} 2"));
        assert!(text.contains("orchestrator_warm_pool_claims_total{result=\"miss\"} 1"));
        assert!(text.contains("orchestrator_build_info{version="));
    }

    #[test]
    fn every_stop_reason_the_lifecycle_passes_is_counted() {
        let m = Metrics::new();
        for r in StopReason::ALL {
            m.agent_stopped(&format!("{r:?}"));
        }
        assert_eq!(
            m.agent_stops.get(StopLabels {
                reason: StopReason::suspend
            }),
            1
        );
    }
}
