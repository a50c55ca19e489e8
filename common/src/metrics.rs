//! Prometheus metrics for both services through `prometheus-client`, exposed in the text format
//! 0.0.4 operators already scrape (names, types and labels as before).
//!
//! Label sets are typed: a `#[derive(EncodeLabelSet)]` struct whose fields are closed sets, usually
//! a `#[derive(EncodeLabelValue)]` enum whose variant names are the exposed values (hence the
//! `non_camel_case_types` allows), or a route template / status code — never tenant ids.
//!
//! Adding a metric (see `orchestrator/src/metrics.rs`, `router/src/metrics.rs`):
//! 1. the label set: an enum of its values and a struct naming the label
//!    (`struct WakeLabels { result: WakeResult }`) with `From<WakeResult>` for one-label sets;
//! 2. a field of the service's `Metrics`: `Counters<WakeLabels>`, `Counter` (no labels) or
//!    `Seconds` (a latency histogram), registered in its `Default` under the exposed name
//!    (`Counters::new(reg, "orchestrator_wakes_total", "Help.")`);
//! 3. count it: `metrics.wakes.inc(WakeResult::started)`. Values read at scrape time go in the
//!    service's `render` through [`gauge`] / [`Counters::inc_by`] on a per-scrape registry.
//!
//! Families are an `RwLock`ed map of atomic counters: an increment of an existing series takes a
//! read lock and one atomic add (no mutex, no allocation).

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

pub use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::EncodeGaugeValue;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;

/// What a family's label set needs to be.
pub trait LabelSet: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static {}
impl<T: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static> LabelSet for T {}

/// What [`Counters::inc`] takes: the label set or anything `Into` it (a one-label set's enum);
/// `None` (a bridge from today's strings that did not match) is not counted.
pub trait IntoLabels<L> {
    fn into_labels(self) -> Option<L>;
}

impl<L, T: Into<L>> IntoLabels<L> for T {
    fn into_labels(self) -> Option<L> {
        Some(self.into())
    }
}

/// A counter family keyed by the typed label set `L`.
#[derive(Debug)]
pub struct Counters<L: LabelSet>(Family<L, Counter>);

impl<L: LabelSet> Counters<L> {
    /// Registers the family under `name`, the exposed name ending in `_total`.
    pub fn new(registry: &mut Registry, name: &str, help: &str) -> Self {
        let family = Family::default();
        registry.register(counter_name(name), help_text(help), family.clone());
        Counters(family)
    }

    pub fn inc(&self, labels: impl IntoLabels<L>) {
        self.inc_by(labels, 1);
    }

    pub fn inc_by(&self, labels: impl IntoLabels<L>, n: u64) {
        match labels.into_labels() {
            Some(l) => {
                self.0.get_or_create(&l).inc_by(n);
            }
            None => debug_assert!(false, "a label value outside the metric's set"),
        }
    }

    pub fn get(&self, labels: impl IntoLabels<L>) -> u64 {
        labels
            .into_labels()
            .and_then(|l| self.0.get(&l).map(|c| c.get()))
            .unwrap_or(0)
    }
}

/// A counter without labels, registered under `name` (the exposed name ending in `_total`).
pub fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(counter_name(name), help_text(help), c.clone());
    c
}

/// prometheus-client appends `_total` to a counter's name: register it without.
fn counter_name(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "{name}: counters end in _total");
    name.strip_suffix("_total").unwrap_or(name)
}

/// prometheus-client appends the full stop to the help text.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// Bucket bounds (seconds) for calls that take milliseconds to minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A histogram of durations in seconds.
#[derive(Debug, Clone)]
pub struct Seconds(Histogram);

impl Seconds {
    pub fn new(registry: &mut Registry, name: &str, help: &str, buckets: &[f64]) -> Self {
        let h = Histogram::new(buckets.iter().copied());
        registry.register(name, help_text(help), h.clone());
        Seconds(h)
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// One gauge whose value the caller read at scrape time, on a per-scrape registry.
pub fn gauge<N>(registry: &mut Registry, name: &str, help: &str, value: N)
where
    N: EncodeGaugeValue + Debug + Send + Sync + 'static,
{
    registry.register(name, help_text(help), ConstGauge::new(value));
}

/// Label of an HTTP method from a closed set, so that made-up methods cannot grow a family.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
    HEAD,
    OPTIONS,
    other,
}

impl HttpMethod {
    pub fn of(method: &str) -> Self {
        match method {
            "GET" => Self::GET,
            "POST" => Self::POST,
            "PUT" => Self::PUT,
            "PATCH" => Self::PATCH,
            "DELETE" => Self::DELETE,
            "HEAD" => Self::HEAD,
            "OPTIONS" => Self::OPTIONS,
            _ => Self::other,
        }
    }
}

impl std::fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// `{service}_build_info{version="..."} 1`: how `ztm version` learns a server's version.
pub fn build_info(registry: &mut Registry, service: &str) {
    let family = Family::<VersionLabels, Gauge>::default();
    family
        .get_or_create(&VersionLabels {
            version: crate::VERSION,
        })
        .set(1);
    registry.register(
        format!("{service}_build_info"),
        "Version of the running binary",
        family,
    );
}

/// The exposition text (format 0.0.4) of the registries, in order.
pub fn render(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for r in registries {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, r);
    }
    out
}

/// The variant of `all` whose name is `name`: how the bridge from today's string labels finds
/// an enum value (variant names are the exposed values).
pub fn variant_named<V: Debug + Clone>(all: &[V], name: &str) -> Option<V> {
    all.iter().find(|v| format!("{v:?}") == name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        assert_eq!(HttpMethod::of("PATCH"), HttpMethod::PATCH);
        for m in ["BREW", "get", "PROPFIND", ""] {
            assert_eq!(HttpMethod::of(m), HttpMethod::other, "{m}");
        }
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
    #[allow(non_camel_case_types)]
    enum Outcome {
        not_found,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct XLabels {
        route: String,
        status: u16,
        result: Outcome,
    }

    #[test]
    fn renders_todays_names_in_the_text_format() {
        let mut r = Registry::default();
        let c = Counters::<XLabels>::new(&mut r, "x_total", "X.");
        let labels = XLabels {
            route: "/a/{id}".into(),
            status: 200,
            result: Outcome::not_found,
        };
        c.inc(labels.clone());
        c.inc(labels.clone());
        assert_eq!(c.get(labels), 2);
        counter(&mut r, "y_total", "Y.");
        let h = Seconds::new(&mut r, "d_seconds", "D.", &[0.01, 0.1]);
        h.observe(Duration::from_millis(30));
        let mut scrape = Registry::default();
        gauge(&mut scrape, "g", "G.", 3i64);
        build_info(&mut scrape, "svc");
        let out = render(&[&r, &scrape]);
        for line in [
            "# HELP x_total X.",
            "# TYPE x_total counter",
            "x_total{route=\"/a/{id}\",status=\"200\",result=\"not_found\"} 2",
            "y_total 0",
            "# TYPE d_seconds histogram",
            "d_seconds_bucket{le=\"0.01\"} 0",
            "d_seconds_bucket{le=\"0.1\"} 1",
            "d_seconds_bucket{le=\"+Inf\"} 1",
            "d_seconds_sum 0.03",
            "d_seconds_count 1",
            "# HELP g G.",
            "# TYPE g gauge",
            "g 3",
            "# TYPE svc_build_info gauge",
            &format!("svc_build_info{{version=\"{}\"}} 1", crate::VERSION),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
