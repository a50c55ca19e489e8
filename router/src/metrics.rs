//! The router's metrics (`common::metrics` on prometheus-client); inbox gauges are read at scrape
//! time. Labels are typed closed sets (route templates, results, methods), never tenant ids; a new
//! metric: a label set below, a field, one line in `Default`.

use std::sync::atomic::{AtomicU64, Ordering};

use common::inbox::{now_ms, InboxStats};
use common::metrics::{
    gauge, Counters, EncodeLabelSet, EncodeLabelValue, Registry, Seconds, LATENCY_BUCKETS,
};

/// `router_deliveries_total{result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Delivery {
    delivered,
    /// No text to forward.
    skipped,
    failed,
    /// Unknown tenant.
    dropped,
    /// Waited out an outage longer than the inbox's maximum age.
    expired,
    /// The tenant is suspended: the chat was told so, nothing reached the agent.
    suspended,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub result: Delivery,
}

/// `router_retries_total{kind}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Retry {
    wake,
    agent,
    /// A re-wake after a connection failure.
    reconnect,
    telegram,
    /// A 429 waited out.
    flood,
    /// The rotated bot token fetched after a 401.
    token,
    inbox,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub kind: Retry,
}

/// `router_endpoint_cache_lookups_total{result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheLookup {
    hit,
    miss,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: CacheLookup,
}

/// `router_wakes_total{result}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Wake {
    ok,
    not_found,
    /// The agent could not start.
    failed,
    /// An outage: the orchestrator or its backends are down.
    unavailable,
    suspended,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeLabels {
    pub result: Wake,
}

/// The Bot API method of `router_telegram_calls_total` and `router_telegram_refusals_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TelegramMethod {
    sendMessage,
    sendChatAction,
    answerCallbackQuery,
    setWebhook,
    deleteWebhook,
    getWebhookInfo,
}

impl std::fmt::Display for TelegramMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CallResult {
    ok,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TelegramLabels {
    pub method: TelegramMethod,
    pub result: CallResult,
}

/// `reason`: one of `common::telegram::REFUSAL_REASONS`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub method: TelegramMethod,
    pub reason: &'static str,
}

/// `router_http_requests_total{route,status}`: `route` is the route template (`/tg/{id}`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

/// `router_webhook_updates_total{result}`: what became of an update Telegram posted to `/tg`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Webhook {
    accepted,
    duplicate,
    /// The tenant's pending entries reached `INBOX_TENANT_MAX_PENDING`: 429, Telegram retries.
    over_cap,
    unauthorized,
    unknown_tenant,
    unavailable,
    invalid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub result: Webhook,
}

macro_rules! one_label {
    ($labels:ident { $field:ident: $value:ident }) => {
        impl From<$value> for $labels {
            fn from($field: $value) -> Self {
                $labels { $field }
            }
        }
    };
}

one_label!(DeliveryLabels { result: Delivery });
one_label!(RetryLabels { kind: Retry });
one_label!(CacheLabels {
    result: CacheLookup
});
one_label!(WakeLabels { result: Wake });
one_label!(WebhookLabels { result: Webhook });

pub struct Metrics {
    registry: Registry,
    pub deliveries: Counters<DeliveryLabels>,
    pub forward_latency: Seconds,
    pub retries: Counters<RetryLabels>,
    pub cache: Counters<CacheLabels>,
    pub wakes: Counters<WakeLabels>,
    pub telegram_calls: Counters<TelegramLabels>,
    pub telegram_refusals: Counters<RefusalLabels>,
    pub http_requests: Counters<HttpLabels>,
    pub webhook_updates: Counters<WebhookLabels>,
    pub active_workers: AtomicU64,
    /// Tenants whose updates are waiting out an outage past the wake retry budget.
    pub delayed_tenants: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        common::metrics::build_info(r, "router");
        Metrics {
            deliveries: Counters::new(
                r,
                "router_deliveries_total",
                "Inbox entries finished, by result.",
            ),
            forward_latency: Seconds::new(
                r,
                "router_forward_duration_seconds",
                "Time the agent took to answer a forwarded message.",
                LATENCY_BUCKETS,
            ),
            retries: Counters::new(
                r,
                "router_retries_total",
                "Retries of wakes, agent calls, re-wakes after connection failures, Telegram calls and inbox operations.",
            ),
            cache: Counters::new(
                r,
                "router_endpoint_cache_lookups_total",
                "Endpoint cache lookups, by result.",
            ),
            wakes: Counters::new(r, "router_wakes_total", "Wake calls, by result."),
            telegram_calls: Counters::new(
                r,
                "router_telegram_calls_total",
                "Telegram Bot API calls, by method and result.",
            ),
            telegram_refusals: Counters::new(
                r,
                "router_telegram_refusals_total",
                "Telegram calls refused for good (blocked, chat not found, ...), by method and reason.",
            ),
            http_requests: Counters::new(
                r,
                "router_http_requests_total",
                "HTTP requests served, by route template and status.",
            ),
            webhook_updates: Counters::new(
                r,
                "router_webhook_updates_total",
                "Telegram updates received on /tg, by outcome (over_cap: the tenant's backlog was full, 429).",
            ),
            active_workers: AtomicU64::new(0),
            delayed_tenants: AtomicU64::new(0),
            registry,
        }
    }
}

impl Metrics {
    pub fn telegram_call(&self, method: TelegramMethod, ok: bool) {
        let result = if ok {
            CallResult::ok
        } else {
            CallResult::error
        };
        self.telegram_calls.inc(TelegramLabels { method, result });
    }

    /// The exposition text; `inbox` is read by the caller at scrape time (`None` when unavailable).
    pub fn render(&self, inbox: Option<InboxStats>) -> String {
        let mut scrape = Registry::default();
        let s = &mut scrape;
        let up = "Whether the inbox answered.";
        match inbox {
            Some(stats) => {
                gauge(
                    s,
                    "router_inbox_depth",
                    "Undelivered inbox entries.",
                    stats.depth,
                );
                let age = stats
                    .oldest_received_at_ms
                    .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                gauge(
                    s,
                    "router_inbox_oldest_age_seconds",
                    "Age of the oldest undelivered inbox entry.",
                    age,
                );
                gauge(s, "router_inbox_up", up, 1i64);
            }
            None => gauge(s, "router_inbox_up", up, 0i64),
        }
        gauge(
            s,
            "router_delivery_workers",
            "Tenants being delivered by this replica.",
            self.active_workers.load(Ordering::Relaxed),
        );
        gauge(
            s,
            "router_delayed_tenants",
            "Tenants whose updates wait out an outage of the orchestrator or its backends.",
            self.delayed_tenants.load(Ordering::Relaxed),
        );
        common::metrics::render(&[&self.registry, &scrape])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.deliveries.inc(Delivery::delivered);
        m.deliveries.inc(Delivery::delivered);
        m.http_requests.inc(HttpLabels {
            route: "/tg/{id}".into(),
            status: 200,
        });
        m.telegram_refusals.inc(RefusalLabels {
            method: TelegramMethod::sendMessage,
            reason: "blocked",
        });
        m.forward_latency.observe(Duration::from_millis(30));
        let text = m.render(Some(InboxStats {
            depth: 3,
            oldest_received_at_ms: Some(now_ms()),
        }));
        assert!(text.contains("router_deliveries_total{result=\"delivered\"} 2"));
        assert!(text.contains("router_http_requests_total{route=\"/tg/{id}\",status=\"200\"} 1"));
        assert!(text.contains(
            "router_telegram_refusals_total{method=\"sendMessage\",reason=\"blocked\"} 1"
        ));
        assert!(text.contains("router_forward_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("router_forward_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("router_forward_duration_seconds_count 1"));
        assert!(text.contains("router_inbox_depth 3"));
        assert!(text.contains("router_inbox_up 1"));
        assert!(text.contains("router_build_info{version="));
    }
}
