//! Prometheus text exposition, hand-rolled: a few counters, one histogram, gauges read at scrape.
//! Labels are bounded sets (route templates, results, methods), never tenant ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::inbox::{now_ms, InboxStats};

/// A counter family keyed by label values.
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        CounterVec {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, label_values: &[&str]) {
        debug_assert_eq!(label_values.len(), self.labels.len());
        let key = label_values.iter().map(|v| (*v).to_owned()).collect();
        *self.lock().entry(key).or_insert(0) += 1;
    }

    pub fn get(&self, label_values: &[&str]) -> u64 {
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        self.lock().get(&key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<String>, u64>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (values, n) in self.lock().iter() {
            let _ = writeln!(out, "{}{{{}}} {n}", self.name, labels(self.labels, values));
        }
    }
}

fn labels(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// A histogram of durations in seconds with fixed buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Histogram {
            name,
            help,
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{}_bucket{{le=\"{bound}\"}} {}",
                self.name,
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {count}", self.name);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{}_sum {sum}", self.name);
        let _ = writeln!(out, "{}_count {count}", self.name);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

pub struct Metrics {
    /// result: delivered | skipped | failed | dropped
    pub deliveries: CounterVec,
    pub forward_latency: Histogram,
    /// kind: wake | agent | reconnect | telegram | inbox
    pub retries: CounterVec,
    /// result: hit | miss | error
    pub cache: CounterVec,
    /// result: ok | not_found | failed
    pub wakes: CounterVec,
    /// method: sendMessage | setWebhook | deleteWebhook; result: ok | error
    pub telegram_calls: CounterVec,
    /// route: the route template (`/tg/{id}`), status: the HTTP status code
    pub http_requests: CounterVec,
    pub active_workers: AtomicU64,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            deliveries: CounterVec::new(
                "router_deliveries_total",
                "Inbox entries finished, by result.",
                &["result"],
            ),
            forward_latency: Histogram::new(
                "router_forward_duration_seconds",
                "Time the agent took to answer a forwarded message.",
                LATENCY_BUCKETS,
            ),
            retries: CounterVec::new(
                "router_retries_total",
                "Retries of wakes, agent calls, re-wakes after connection failures, Telegram calls and inbox operations.",
                &["kind"],
            ),
            cache: CounterVec::new(
                "router_endpoint_cache_lookups_total",
                "Endpoint cache lookups, by result.",
                &["result"],
            ),
            wakes: CounterVec::new("router_wakes_total", "Wake calls, by result.", &["result"]),
            telegram_calls: CounterVec::new(
                "router_telegram_calls_total",
                "Telegram Bot API calls, by method and result.",
                &["method", "result"],
            ),
            http_requests: CounterVec::new(
                "router_http_requests_total",
                "HTTP requests served, by route template and status.",
                &["route", "status"],
            ),
            active_workers: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The exposition text; `inbox` is read by the caller at scrape time (`None` when unavailable).
    pub fn render(&self, inbox: Option<InboxStats>) -> String {
        let mut out = String::new();
        match inbox {
            Some(s) => {
                gauge(
                    &mut out,
                    "router_inbox_depth",
                    "Undelivered inbox entries.",
                    s.depth,
                );
                let age = s
                    .oldest_received_at_ms
                    .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                gauge(
                    &mut out,
                    "router_inbox_oldest_age_seconds",
                    "Age of the oldest undelivered inbox entry.",
                    age,
                );
                gauge(
                    &mut out,
                    "router_inbox_up",
                    "Whether the inbox answered.",
                    1,
                );
            }
            None => gauge(
                &mut out,
                "router_inbox_up",
                "Whether the inbox answered.",
                0,
            ),
        }
        gauge(
            &mut out,
            "router_delivery_workers",
            "Tenants being delivered by this replica.",
            self.active_workers.load(Ordering::Relaxed),
        );
        self.deliveries.render(&mut out);
        self.forward_latency.render(&mut out);
        self.retries.render(&mut out);
        self.cache.render(&mut out);
        self.wakes.render(&mut out);
        self.telegram_calls.render(&mut out);
        self.http_requests.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.deliveries.inc(&["delivered"]);
        m.deliveries.inc(&["delivered"]);
        m.http_requests.inc(&["/tg/{id}", "200"]);
        m.forward_latency.observe(Duration::from_millis(30));
        let text = m.render(Some(InboxStats {
            depth: 3,
            oldest_received_at_ms: Some(now_ms()),
        }));
        assert!(text.contains("router_deliveries_total{result=\"delivered\"} 2"));
        assert!(text.contains("router_http_requests_total{route=\"/tg/{id}\",status=\"200\"} 1"));
        assert!(text.contains("router_forward_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("router_forward_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("router_forward_duration_seconds_count 1"));
        assert!(text.contains("router_inbox_depth 3"));
    }
}
