//! Hand-rolled Prometheus metrics: a few atomic counters and gauges rendered as text.
//!
//! Labels are bounded sets (results, reasons, route templates, statuses), never tenant ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter per label-value tuple.
#[derive(Default)]
pub struct LabeledCounter {
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl LabeledCounter {
    pub fn inc(&self, labels: &[&str]) {
        let key = labels.iter().map(|l| (*l).to_owned()).collect();
        *self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (labels, v) in values.iter() {
            let pairs: Vec<String> = label_names
                .iter()
                .zip(labels)
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {v}", pairs.join(","));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The orchestrator's metrics; one instance shared by every component.
#[derive(Default)]
pub struct Metrics {
    /// `result`: `ready` (already running), `started`, `joined` (another caller's wake), `not_found`, `failed`, `timeout`.
    pub wakes: LabeledCounter,
    wake_seconds_sum_ms: AtomicU64,
    wake_seconds_count: AtomicU64,
    pub agent_starts: AtomicU64,
    /// `reason`: `sleep`, `idle`, `delete`, `reconcile`, `orphan`, `shutdown`, `aborted`.
    pub agent_stops: LabeledCounter,
    pub running_tenants: AtomicI64,
    /// `method`, `route` (template, e.g. `/tenants/{id}`), `status`.
    pub http_requests: LabeledCounter,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records how long a wake that started an agent took.
    pub fn observe_wake(&self, took: Duration) {
        self.wake_seconds_sum_ms
            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        self.wake_seconds_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn agent_started(&self) {
        self.agent_starts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn agent_stopped(&self, reason: &str) {
        self.agent_stops.inc(&[reason]);
    }

    pub fn set_running(&self, n: usize) {
        self.running_tenants.store(n as i64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.wakes.render(
            &mut out,
            "orchestrator_wakes_total",
            "Wake requests by result.",
            &["result"],
        );
        let sum = self.wake_seconds_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let count = self.wake_seconds_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP orchestrator_wake_start_seconds Time of wakes that started an agent.\n\
             # TYPE orchestrator_wake_start_seconds summary\n\
             orchestrator_wake_start_seconds_sum {sum}\n\
             orchestrator_wake_start_seconds_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP orchestrator_agent_starts_total Agents started.\n\
             # TYPE orchestrator_agent_starts_total counter\n\
             orchestrator_agent_starts_total {}",
            self.agent_starts.load(Ordering::Relaxed)
        );
        self.agent_stops.render(
            &mut out,
            "orchestrator_agent_stops_total",
            "Agents stopped by reason.",
            &["reason"],
        );
        let _ = writeln!(
            out,
            "# HELP orchestrator_running_tenants Tenants whose record says running.\n\
             # TYPE orchestrator_running_tenants gauge\n\
             orchestrator_running_tenants {}",
            self.running_tenants.load(Ordering::Relaxed)
        );
        self.http_requests.render(
            &mut out,
            "orchestrator_http_requests_total",
            "HTTP requests by method, route template and status.",
            &["method", "route", "status"],
        );
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
        let text = m.render();
        assert!(text.contains("orchestrator_wakes_total{result=\"started\"} 2"));
        assert!(text.contains("orchestrator_agent_stops_total{reason=\"idle\"} 1"));
        assert!(text.contains(
            "orchestrator_http_requests_total{method=\"GET\",route=\"/tenants/{id}\",status=\"200\"} 1"
        ));
        assert!(text.contains("# TYPE orchestrator_running_tenants gauge"));
    }
}
