//! Prometheus metrics for every tier and binary, through `prometheus-client`.
//!
//! One [`Metrics`] per server instance (never a global: tests run several servers in one
//! process). Hot-path counters stay what they were, relaxed atomics owned by their component;
//! each component registers a [`Collector`] that reads them at scrape time with the helpers
//! below ([`counter`], [`gauge`], [`counters`], [`gauges`]). Latencies are
//! `prometheus-client` [`Histogram`]s with the fixed buckets of [`latency_buckets`].
//!
//! Names: a counter is registered without its `_total` suffix, which the encoder appends
//! (`starling_comet_closed` is scraped as `starling_comet_closed_total`); histograms in
//! seconds end in `_seconds`. Exposition: Prometheus text format 0.0.4
//! ([`CONTENT_TYPE`]).

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
use std::fmt;
use std::sync::{Arc, Mutex};

pub use prometheus_client;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// A server instance's metrics: what its components registered, rendered on each scrape.
#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Adds a collector, called on every scrape.
    pub fn collector(&self, c: impl Collector) {
        self.lock().register_collector(Box::new(c));
    }

    /// Adds a collector given as a closure over the encoder (see [`counter`] and friends).
    pub fn collect<F>(&self, f: F)
    where
        F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
    {
        self.collector(FnCollector(f));
    }

    /// Adds a metric the crate keeps (a histogram, a family). `name` without `_total`;
    /// `help` a sentence like the collectors' (prometheus-client appends its own period, so
    /// a final one is dropped here rather than printed twice).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock()
            .register(name, help.strip_suffix('.').unwrap_or(help), metric);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail; a collector's own error ends the text early.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.lock());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Latency buckets in seconds, 0.5 ms to ~16 s doubling (16 buckets): an fsync (≈ 3.5 ms on
/// the reference host), a Redis or Kafka round trip, a comet call with retries.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// A histogram over [`latency_buckets`], to observe seconds.
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Seconds since `start`, as histograms take them.
pub fn seconds_since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Exports `starling_tokio_alive_tasks`, the tasks alive on `rt` (tokio's
/// `RuntimeMetrics::num_alive_tasks`): in every tier, what a soak watches for leaked tasks.
/// comet's connections are not tasks: they live in its monoio workers' slabs
/// (`starling_comet_connections`).
pub fn register_runtime(m: &Metrics, rt: tokio::runtime::Handle) {
    m.collect(move |enc| {
        gauge(
            enc,
            "starling_tokio_alive_tasks",
            "Tasks alive on the process's tokio runtime (spawned and not yet finished).",
            rt.metrics().num_alive_tasks() as i64,
        )
    });
}

/// One counter sample. `name` without `_total`.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    prometheus_client::metrics::counter::ConstCounter::new(v).encode(m)
}

/// One gauge sample.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    prometheus_client::metrics::gauge::ConstGauge::new(v).encode(m)
}

/// A labelled counter family: one sample per `(labels, value)`. Labels are written in the
/// order given, e.g. `[("reason", "bad_packet"), ("code", "4")]`.
pub fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

/// A labelled gauge family: one sample per `(labels, value)`.
pub fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// How a call to a dependency (Redis, PostgreSQL, Kafka) failed: label `kind` of the
/// `starling_<tier>_<dependency>_errors_total` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer within the call's deadline (`redis.timeout`, `im.store_timeout`,
    /// `kafka.timeout`): the dependency is slow, hung or unreachable without a refusal.
    Timeout,
    /// Anything else: connection refused or reset, an error reply, a failed transaction.
    Error,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 2] = [ErrorKind::Timeout, ErrorKind::Error];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Error => "error",
        }
    }
}

/// Failed calls to one dependency, by [`ErrorKind`]: relaxed atomics, shared (`Arc`) by the
/// clients of that dependency in one server and exported by [`DependencyErrors::encode`]
/// with both kinds always present (a dashboard sees 0, not an absent series).
#[derive(Debug, Default)]
pub struct DependencyErrors {
    counts: [std::sync::atomic::AtomicU64; 2],
}

impl DependencyErrors {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Counts one failed call.
    pub fn record(&self, kind: ErrorKind) {
        self.counts[kind as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Failed calls of `kind` so far.
    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.counts[kind as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter `name` (without `_total`) with one sample per kind.
    pub fn encode(&self, enc: &mut DescriptorEncoder, name: &str, help: &str) -> fmt::Result {
        counters(
            enc,
            name,
            help,
            ErrorKind::ALL.map(|k| ([("kind", k.label())], self.count(k))),
        )
    }
}

/// A collector from a closure, for a component whose counters are plain atomics.
pub struct FnCollector<F>(pub F);

impl<F> fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_and_histograms_render_as_prometheus_text() {
        let m = Metrics::new();
        m.collect(|enc| {
            counter(enc, "t_pushed", "Pushes.", 3)?;
            gauge(enc, "t_connections", "Connections.", -1)?;
            counters(
                enc,
                "t_closed",
                "Closes.",
                [([("reason", "bad_packet"), ("code", "4")], 2)],
            )
        });
        let h = latency_histogram();
        m.register("t_commit_seconds", "Commits.", h.clone());
        h.observe(0.002);
        let text = m.render();
        for line in [
            "# TYPE t_pushed_total counter",
            "# HELP t_pushed_total Pushes.",
            "t_pushed_total 3",
            "# HELP t_commit_seconds Commits.",
            "t_connections -1",
            "t_closed_total{reason=\"bad_packet\",code=\"4\"} 2",
            "# TYPE t_commit_seconds histogram",
            "t_commit_seconds_count 1",
            "t_commit_seconds_bucket{le=\"0.002\"} 1",
            "t_commit_seconds_bucket{le=\"0.001\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn dependency_errors_render_both_kinds() {
        let m = Metrics::new();
        let e = DependencyErrors::new();
        e.record(ErrorKind::Timeout);
        e.record(ErrorKind::Timeout);
        let c = e.clone();
        m.collect(move |enc| c.encode(enc, "t_redis_errors", "Redis calls that failed."));
        let text = m.render();
        for line in [
            "t_redis_errors_total{kind=\"timeout\"} 2",
            "t_redis_errors_total{kind=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
