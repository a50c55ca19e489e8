//! Prometheus text exposition, hand-rolled for both services: labelled counters, fixed-bucket
//! histograms and gauges read at scrape time. Label values are bounded sets (results, reasons,
//! route templates), never tenant ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter family keyed by label values (no labels: one series).
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
        debug_assert_eq!(label_values.len(), self.labels.len(), "{}", self.name);
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
        header(out, self.name, self.help, "counter");
        let values = self.lock();
        if values.is_empty() && self.labels.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (values, n) in values.iter() {
            let _ = writeln!(out, "{}{} {n}", self.name, labels(self.labels, values));
        }
    }
}

/// `{a="x",b="y"}`, or nothing without labels.
fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label of an HTTP method from a closed set, so that made-up methods cannot grow a family.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Bucket bounds (seconds) for calls that take milliseconds to minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

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
        header(out, self.name, self.help, "histogram");
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
        let _ = writeln!(out, "{}_sum {sum}\n{}_count {count}", self.name, self.name);
    }
}

/// One gauge series, read by the caller at scrape time.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// `{service}_build_info{version="..."} 1`: how `ztm version` learns a server's version.
pub fn build_info(out: &mut String, service: &str) {
    let name = format!("{service}_build_info");
    header(out, &name, "Version of the running binary.", "gauge");
    let _ = writeln!(out, "{name}{{version=\"{}\"}} 1", crate::VERSION);
}

/// A counter family whose values the caller read elsewhere (e.g. from an adapter), by one label.
pub fn counter_by(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    header(out, name, help, "counter");
    for (v, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        assert_eq!(method_label("PATCH"), "PATCH");
        for m in ["BREW", "get", "PROPFIND", ""] {
            assert_eq!(method_label(m), "other", "{m}");
        }
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let mut out = String::new();
        let c = CounterVec::new("x_total", "X.", &["route", "status"]);
        c.inc(&["/a/{id}", "200"]);
        c.inc(&["/a/{id}", "200"]);
        c.render(&mut out);
        CounterVec::new("y_total", "Y.", &[]).render(&mut out);
        let h = Histogram::new("d_seconds", "D.", &[0.01, 0.1]);
        h.observe(Duration::from_millis(30));
        h.render(&mut out);
        gauge(&mut out, "g", "G.", 3);
        for line in [
            "# TYPE x_total counter",
            "x_total{route=\"/a/{id}\",status=\"200\"} 2",
            "y_total 0",
            "# TYPE d_seconds histogram",
            "d_seconds_bucket{le=\"0.01\"} 0",
            "d_seconds_bucket{le=\"0.1\"} 1",
            "d_seconds_bucket{le=\"+Inf\"} 1",
            "d_seconds_sum 0.03",
            "d_seconds_count 1",
            "# TYPE g gauge",
            "g 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
