//! The router's metrics (rendering in `common::metrics`); inbox gauges are read at scrape time.
//! Labels are bounded sets (route templates, results, methods), never tenant ids.

use std::sync::atomic::{AtomicU64, Ordering};

use common::inbox::{now_ms, InboxStats};
use common::metrics::{gauge, CounterVec, Histogram, LATENCY_BUCKETS};

pub struct Metrics {
    /// result: delivered | skipped | failed | dropped | expired
    pub deliveries: CounterVec,
    pub forward_latency: Histogram,
    /// kind: wake | agent | reconnect | telegram | flood | token | inbox
    pub retries: CounterVec,
    /// result: hit | miss | error
    pub cache: CounterVec,
    /// result: ok | not_found | failed (the agent could not start) | unavailable (an outage)
    pub wakes: CounterVec,
    /// method: sendMessage | setWebhook | deleteWebhook; result: ok | error
    pub telegram_calls: CounterVec,
    /// method; reason: one of `common::telegram::REFUSAL_REASONS`
    pub telegram_refusals: CounterVec,
    /// route: the route template (`/tg/{id}`), status: the HTTP status code
    pub http_requests: CounterVec,
    /// result: accepted | duplicate | over_cap | unauthorized | unknown_tenant | unavailable | invalid
    pub webhook_updates: CounterVec,
    pub active_workers: AtomicU64,
    /// Tenants whose updates are waiting out an outage past the wake retry budget.
    pub delayed_tenants: AtomicU64,
}

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
            telegram_refusals: CounterVec::new(
                "router_telegram_refusals_total",
                "Telegram calls refused for good (blocked, chat not found, ...), by method and reason.",
                &["method", "reason"],
            ),
            http_requests: CounterVec::new(
                "router_http_requests_total",
                "HTTP requests served, by route template and status.",
                &["route", "status"],
            ),
            webhook_updates: CounterVec::new(
                "router_webhook_updates_total",
                "Telegram updates received on /tg, by outcome (over_cap: the tenant's backlog was full, 429).",
                &["result"],
            ),
            active_workers: AtomicU64::new(0),
            delayed_tenants: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The exposition text; `inbox` is read by the caller at scrape time (`None` when unavailable).
    pub fn render(&self, inbox: Option<InboxStats>) -> String {
        let mut out = String::new();
        common::metrics::build_info(&mut out, "router");
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
        gauge(
            &mut out,
            "router_delayed_tenants",
            "Tenants whose updates wait out an outage of the orchestrator or its backends.",
            self.delayed_tenants.load(Ordering::Relaxed),
        );
        self.deliveries.render(&mut out);
        self.forward_latency.render(&mut out);
        self.retries.render(&mut out);
        self.cache.render(&mut out);
        self.wakes.render(&mut out);
        self.telegram_calls.render(&mut out);
        self.telegram_refusals.render(&mut out);
        self.http_requests.render(&mut out);
        self.webhook_updates.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
