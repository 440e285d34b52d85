//! Every metric the server exports, defined in this one typed place.
//!
//! [`Metrics`] owns a `prometheus-client` registry and a method per event
//! (`record_rpc`, `storage_op`, `connection_opened`, ...). It is cheap to
//! clone (one `Arc`) and safe to share across tasks; recording never blocks
//! on IO. [`Metrics::encode`] renders the OpenMetrics text that the HTTP
//! endpoint (`crate::http`) serves.
//!
//! It deliberately knows nothing about quinn, storage backends or HTTP: the
//! transport, `storage::TimedStore` and the server call these methods, and
//! gauges that mirror state elsewhere (queue depth) are set by their owner.
//!
//! Exported series (all prefixed `qpc_`):
//! - `rpc_requests_total{method,status}`: finished RPCs; errors are the
//!   series whose `status` is not `OK`;
//! - `rpc_duration_seconds{method}`: RPC latency histogram;
//! - `storage_operation_duration_seconds{operation}`: store call latency;
//! - `uptime_seconds`: seconds since [`Metrics::new`], computed at scrape;
//! - `open_connections`, `rpcs_in_flight`: gauges;
//! - `queue_depth`: unacked queue entries across all accounts;
//! - `key_package_stock_low_total`: times a device's key package stock ran low;
//! - `expired_queue_entries_total`, `expired_message_ids_total`: what
//!   expiry deleted after the retention period;
//! - `trimmed_queue_entries_total`: entries deleted unacknowledged from
//!   queues over `delivery.max_queue_entries`;
//! - `rate_limited_total{limit}`: requests refused by a rate limit;
//! - `draining`: 0 while ready, 1 once shutdown has begun;
//! - `fed_*`: federation, see [`FederationMetrics`].
//! - `plugin_*`: plugins, see [`PluginMetrics`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::storage::{Expired, TrimmedQueues};

mod federation;
mod plugins;

pub use federation::FederationMetrics;
pub use plugins::PluginMetrics;

/// Latency buckets: 50 µs doubling 19 times, up to ~13 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 19)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metrics; clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    started: Instant,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily<MethodLabels>,
    storage_duration: HistogramFamily<OperationLabels>,
    uptime: Gauge<f64, AtomicU64>,
    open_connections: Gauge,
    push_subscriptions: Gauge,
    rpcs_in_flight: Gauge,
    queue_depth: Gauge,
    stock_low: Counter,
    expired_entries: Counter,
    expired_message_ids: Counter,
    trimmed_entries: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    draining_gauge: Gauge,
    draining: AtomicBool,
    federation: FederationMetrics,
    plugins: PluginMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every series; uptime counts from now.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("qpc");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration: HistogramFamily<MethodLabels> = Family::new_with_constructor(latency_histogram);
        let storage_duration: HistogramFamily<OperationLabels> = Family::new_with_constructor(latency_histogram);
        let uptime = Gauge::<f64, AtomicU64>::default();
        let open_connections = Gauge::default();
        let push_subscriptions = Gauge::default();
        let rpcs_in_flight = Gauge::default();
        let queue_depth = Gauge::default();
        let stock_low = Counter::default();
        let expired_entries = Counter::default();
        let expired_message_ids = Counter::default();
        let trimmed_entries = Counter::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        let draining_gauge = Gauge::default();

        registry.register("rpc_requests", "RPCs finished, by method and status code", rpc_requests.clone());
        registry.register("rpc_duration_seconds", "RPC latency by method", rpc_duration.clone());
        registry.register(
            "storage_operation_duration_seconds",
            "Storage call latency by operation",
            storage_duration.clone(),
        );
        registry.register("uptime_seconds", "Seconds since the server started", uptime.clone());
        registry.register("open_connections", "Open client connections", open_connections.clone());
        registry.register(
            "push_subscriptions",
            "Push tasks running (at most one per connection)",
            push_subscriptions.clone(),
        );
        registry.register("rpcs_in_flight", "RPCs being handled right now", rpcs_in_flight.clone());
        registry.register("queue_depth", "Unacknowledged queue entries across all accounts", queue_depth.clone());
        registry.register(
            "key_package_stock_low",
            "Times a device's key package stock ran low or fell back to its last-resort package",
            stock_low.clone(),
        );
        registry.register(
            "expired_queue_entries",
            "Queue entries deleted unacknowledged after the retention period",
            expired_entries.clone(),
        );
        registry.register(
            "expired_message_ids",
            "Idempotency records forgotten after the retention period",
            expired_message_ids.clone(),
        );
        registry.register(
            "trimmed_queue_entries",
            "Queue entries deleted unacknowledged from queues over their quota",
            trimmed_entries.clone(),
        );
        registry.register("rate_limited", "Requests refused by a rate limit, by limit", rate_limited.clone());
        registry.register("draining", "1 while the server drains for shutdown, else 0", draining_gauge.clone());
        let federation = FederationMetrics::register(&mut registry);
        let plugins = PluginMetrics::register(&mut registry);

        Metrics {
            inner: Arc::new(Inner {
                registry,
                started: Instant::now(),
                rpc_requests,
                rpc_duration,
                storage_duration,
                uptime,
                open_connections,
                push_subscriptions,
                rpcs_in_flight,
                queue_depth,
                stock_low,
                expired_entries,
                expired_message_ids,
                trimmed_entries,
                rate_limited,
                draining_gauge,
                draining: AtomicBool::new(false),
                federation,
                plugins,
            }),
        }
    }

    /// One finished RPC: `status` is the wire status name (`OK`, `NOT_FOUND`, ...).
    pub fn record_rpc(&self, method: &str, status: &str, elapsed: Duration) {
        let labels = RpcLabels { method: method.to_owned(), status: status.to_owned() };
        self.inner.rpc_requests.get_or_create(&labels).inc();
        let labels = MethodLabels { method: method.to_owned() };
        self.inner.rpc_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// A push task started; pair with [`Metrics::push_ended`].
    pub fn push_started(&self) {
        self.inner.push_subscriptions.inc();
    }

    /// A push task ended.
    pub fn push_ended(&self) {
        self.inner.push_subscriptions.dec();
    }

    /// An RPC started being handled; pair with [`Metrics::rpc_finished`].
    pub fn rpc_started(&self) {
        self.inner.rpcs_in_flight.inc();
    }

    /// An RPC counted by [`Metrics::rpc_started`] finished (any outcome).
    pub fn rpc_finished(&self) {
        self.inner.rpcs_in_flight.dec();
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.inner.open_connections.inc();
    }

    /// A connection counted by [`Metrics::connection_opened`] closed.
    pub fn connection_closed(&self) {
        self.inner.open_connections.dec();
    }

    /// One storage call `op` (a `Store` method name) took `elapsed`.
    pub fn storage_op(&self, op: &str, elapsed: Duration) {
        let labels = OperationLabels { operation: op.to_owned() };
        self.inner.storage_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Sets the total number of unacknowledged queue entries.
    pub fn set_queue_depth(&self, depth: u64) {
        self.inner.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// An account was told its key package stock is low.
    pub fn stock_low(&self) {
        self.inner.stock_low.inc();
    }

    /// What one expiry call deleted.
    pub fn expired(&self, expired: &Expired) {
        self.inner.expired_entries.inc_by(expired.queue_entries);
        self.inner.expired_message_ids.inc_by(expired.message_ids);
    }

    /// Entries trimmed from queues over their quota.
    pub fn trimmed(&self, trimmed: &TrimmedQueues) {
        self.inner.trimmed_entries.inc_by(trimmed.queue_entries);
    }

    /// A request was refused by the rate limit named `limit`.
    pub fn rate_limited(&self, limit: &str) {
        self.inner.rate_limited.get_or_create(&LimitLabels { limit: limit.to_owned() }).inc();
    }

    /// Marks the server as draining (shutdown began) or ready.
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.store(draining, Ordering::Release);
        self.inner.draining_gauge.set(i64::from(draining));
    }

    /// Whether [`Metrics::set_draining`] last set `true`.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// The federation series.
    pub fn federation(&self) -> &FederationMetrics {
        &self.inner.federation
    }

    /// The plugin series.
    pub fn plugins(&self) -> &PluginMetrics {
        &self.inner.plugins
    }

    /// Renders every series as OpenMetrics text (what Prometheus scrapes).
    pub fn encode(&self) -> String {
        self.inner.uptime.set(self.inner.started.elapsed().as_secs_f64());
        self.inner.federation.refresh_ages(crate::clock::now_ms());
        let mut text = String::new();
        // Writing into a String cannot fail; an error would leave a truncated
        // but still parseable prefix, which is all we could offer anyway.
        if prometheus_client::encoding::text::encode(&mut text, &self.inner.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn rpc_counts_and_latency_appear() {
        let metrics = Metrics::new();
        metrics.record_rpc("Send", "OK", Duration::from_millis(3));
        metrics.record_rpc("Send", "OK", Duration::from_millis(5));
        metrics.record_rpc("Send", "RESOURCE_EXHAUSTED", Duration::from_micros(80));
        let text = metrics.encode();
        assert_eq!(sample(&text, r#"qpc_rpc_requests_total{method="Send",status="OK"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"qpc_rpc_requests_total{method="Send",status="RESOURCE_EXHAUSTED"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"qpc_rpc_duration_seconds_count{method="Send"}"#), Some(3.0));
        assert_eq!(sample(&text, r#"qpc_rpc_duration_seconds_bucket{le="0.0001",method="Send"}"#), Some(1.0));
        let sum = sample(&text, r#"qpc_rpc_duration_seconds_sum{method="Send"}"#).unwrap();
        assert!((sum - 0.00808).abs() < 1e-9, "sum {sum}");
        assert!(text.trim_end().ends_with("# EOF"), "not OpenMetrics: {text}");
    }

    #[test]
    fn gauges_move_both_ways() {
        let metrics = Metrics::new();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.rpc_started();
        metrics.rpc_started();
        metrics.rpc_finished();
        metrics.set_queue_depth(42);
        let text = metrics.encode();
        assert_eq!(sample(&text, "qpc_open_connections"), Some(1.0));
        assert_eq!(sample(&text, "qpc_rpcs_in_flight"), Some(1.0));
        assert_eq!(sample(&text, "qpc_queue_depth"), Some(42.0));
        metrics.set_queue_depth(u64::MAX);
        assert_eq!(sample(&metrics.encode(), "qpc_queue_depth"), Some(i64::MAX as f64));
    }

    #[test]
    fn events_and_drain_state() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        assert_eq!(sample(&metrics.encode(), "qpc_draining"), Some(0.0));
        clone.stock_low();
        clone.rate_limited("register_per_address");
        clone.rate_limited("register_per_address");
        clone.storage_op("enqueue", Duration::from_millis(1));
        clone.set_draining(true);
        assert!(metrics.is_draining());
        let text = metrics.encode();
        assert_eq!(sample(&text, "qpc_key_package_stock_low_total"), Some(1.0));
        assert_eq!(sample(&text, r#"qpc_rate_limited_total{limit="register_per_address"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"qpc_storage_operation_duration_seconds_count{operation="enqueue"}"#), Some(1.0));
        assert_eq!(sample(&text, "qpc_draining"), Some(1.0));
        clone.set_draining(false);
        assert!(!metrics.is_draining());
    }

    #[test]
    fn uptime_is_computed_at_scrape() {
        let metrics = Metrics::new();
        let first = sample(&metrics.encode(), "qpc_uptime_seconds").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let second = sample(&metrics.encode(), "qpc_uptime_seconds").unwrap();
        assert!(second >= first + 0.015, "{first} -> {second}");
    }
}
