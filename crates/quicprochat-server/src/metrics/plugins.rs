//! The plugin series (issue 20), registered with the server's others:
//! - `plugin_hook_calls_total{plugin, hook, outcome}`: hooks that answered:
//!   `allow`, `deny`, `retry_later` for gates, `told` for observers;
//! - `plugin_hook_failures_total{plugin, hook, kind}`: calls that fell back
//!   to the hook's policy (or, for an observer, were dropped): `timeout`
//!   (past the deadline), `error` (the plugin said it failed), `panic`,
//!   `bad_answer` (an unknown code or verdict), `queue_full`, `off`
//!   (switched off after repeated failures), `gone` (its thread ended);
//! - `plugin_hook_duration_seconds{plugin, hook}`: a gate's wait as the
//!   request saw it (queue, hop and the plugin's work);
//! - `plugin_enabled{plugin}`: 1 while the plugin is called, 0 while it is
//!   switched off.
//!
//! It also keeps which plugins are switched off and until when, for
//! `/healthz` (`degraded: …`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    plugin: String,
    hook: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    plugin: String,
    hook: String,
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Plugin metrics; part of [`super::Metrics`].
#[derive(Debug)]
pub struct PluginMetrics {
    calls: Family<OutcomeLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    duration: HistogramFamily<HookLabels>,
    enabled: Family<PluginLabels, Gauge>,
    /// Plugins switched off: until when (`None`: for good, it panicked).
    off: Mutex<BTreeMap<String, Option<Instant>>>,
}

impl PluginMetrics {
    pub(super) fn register(registry: &mut Registry) -> PluginMetrics {
        let metrics = PluginMetrics {
            calls: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(super::latency_histogram),
            enabled: Family::default(),
            off: Mutex::default(),
        };
        registry.register("plugin_hook_calls", "Plugin hooks that answered, by outcome", metrics.calls.clone());
        registry.register(
            "plugin_hook_failures",
            "Plugin hook calls that fell back to the hook's policy (observers: were dropped), by kind",
            metrics.failures.clone(),
        );
        registry.register(
            "plugin_hook_duration_seconds",
            "How long a request waited for a plugin's gate",
            metrics.duration.clone(),
        );
        registry.register(
            "plugin_enabled",
            "1 while the plugin is called, 0 while switched off",
            metrics.enabled.clone(),
        );
        metrics
    }

    /// A plugin was loaded (it starts enabled).
    pub fn loaded(&self, plugin: &str) {
        self.enabled.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).set(1);
    }

    /// A hook answered.
    pub fn answered(&self, plugin: &str, hook: &str, outcome: &str) {
        let labels = OutcomeLabels { plugin: plugin.to_owned(), hook: hook.to_owned(), outcome: outcome.to_owned() };
        self.calls.get_or_create(&labels).inc();
    }

    /// A hook call failed for `kind`.
    pub fn failed(&self, plugin: &str, hook: &str, kind: &str) {
        let labels = KindLabels { plugin: plugin.to_owned(), hook: hook.to_owned(), kind: kind.to_owned() };
        self.failures.get_or_create(&labels).inc();
    }

    /// How long a request waited for a gate.
    pub fn waited(&self, plugin: &str, hook: &str, elapsed: Duration) {
        let labels = HookLabels { plugin: plugin.to_owned(), hook: hook.to_owned() };
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The plugin is switched off until `until` (`None`: for good).
    pub fn switched_off(&self, plugin: &str, until: Option<Instant>) {
        self.enabled.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).set(0);
        if let Ok(mut off) = self.off.lock() {
            off.insert(plugin.to_owned(), until);
        }
    }

    /// The plugin is called again.
    pub fn switched_on(&self, plugin: &str) {
        self.enabled.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).set(1);
        if let Ok(mut off) = self.off.lock() {
            off.remove(plugin);
        }
    }

    /// Whether `plugin` is recorded as switched off: `Some(until)`, with
    /// `until` `None` for good.
    pub fn off_until(&self, plugin: &str) -> Option<Option<Instant>> {
        self.off.lock().ok().and_then(|off| off.get(plugin).copied())
    }

    /// The plugins switched off now, for `/healthz`.
    pub fn switched_off_now(&self) -> Vec<String> {
        let now = Instant::now();
        match self.off.lock() {
            Ok(off) => off
                .iter()
                .filter(|(_, until)| until.is_none_or(|until| now < until))
                .map(|(name, _)| name.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
