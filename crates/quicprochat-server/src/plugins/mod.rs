//! Native plugins in the running server (issue 20; docs/plugins.md): each
//! `[[plugins]]` entry is loaded at start on a thread of its own
//! ([`worker`]), and the request paths ask its gates and tell its
//! observers through a bounded queue. Events are metadata only
//! ([`events`]).
//!
//! A gate is awaited under its deadline; a full queue, a passed deadline,
//! an error, a panic or an answer outside the ABI falls back to the gate's
//! `on_error` policy and is counted. [`FAILURES_TO_SWITCH_OFF`] failures in
//! a row switch a plugin off for [`SWITCHED_OFF_FOR`] (its hooks take the
//! policy at once, `/healthz` says `degraded`); a plugin that panicked is
//! off for good. Observers are queued without waiting; a full queue drops
//! the event and counts it. Plugins are asked in configuration order; the
//! first refusal wins.

pub mod events;
mod worker;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quicprochat_plugin_api::host::{GateAnswer, GateError};
use tokio::sync::{mpsc, oneshot};

use crate::config::{FailurePolicy, GateHook, PluginConfig};
use crate::domain::DomainError;
use crate::metrics::Metrics;
pub use events::{
    CommitMeta, EnqueueMeta, GateEvent, GroupCreateMeta, LoginMeta, ObservedEvent, RegisterMeta, StoredMeta,
};
pub use worker::StartFailure;
use worker::{Job, Started};

/// Jobs one plugin's queue holds; more fall back to the policy.
pub const QUEUE_CAPACITY: usize = 1024;
/// Failures in a row that switch a plugin off.
pub const FAILURES_TO_SWITCH_OFF: u32 = 5;
/// How long a plugin stays switched off.
pub const SWITCHED_OFF_FOR: Duration = Duration::from_secs(30);
/// The longest retry-later a plugin may ask of a client.
pub const MAX_RETRY_AFTER_MS: u32 = 3_600_000;
/// How long start-up waits for a plugin's `on_load`.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);

/// Why the server could not start its plugins.
#[derive(Debug)]
pub struct PluginError {
    /// Its place in `[[plugins]]`, from 1.
    pub index: usize,
    pub path: String,
    pub source: StartFailure,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            // The loader's errors start with the path already.
            StartFailure::Load(_) => write!(formatter, "plugin {}: {}", self.index, self.source),
            _ => write!(formatter, "plugin {} ({}): {}", self.index, self.path, self.source),
        }
    }
}

impl std::error::Error for PluginError {}

/// The loaded plugins (none by default); cheap to clone.
#[derive(Clone, Default)]
pub struct Plugins {
    loaded: Arc<[Plugin]>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.loaded.iter().map(|plugin| plugin.name.as_str()).collect();
        formatter.debug_struct("Plugins").field("loaded", &names).finish()
    }
}

/// One loaded plugin, as the request paths see it.
struct Plugin {
    name: String,
    config: PluginConfig,
    gates: [bool; GateHook::COUNT],
    observes_stored: bool,
    observes_commit: bool,
    jobs: mpsc::Sender<Job>,
    failures_in_row: AtomicU32,
    /// `Some(until)` while switched off; `until` is `None` for good.
    off: Mutex<Option<Option<Instant>>>,
    metrics: Metrics,
}

/// How one plugin's gate answered, after its failures were counted.
enum Verdict {
    Allow,
    Refuse(DomainError),
}

impl Plugins {
    /// Loads and starts every configured plugin, in order, each on its own
    /// thread; the first that fails stops the start with its reason.
    pub async fn start(configs: &[PluginConfig], metrics: &Metrics) -> Result<Plugins, PluginError> {
        let mut loaded: Vec<Plugin> = Vec::with_capacity(configs.len());
        let mut files: Vec<(u64, u64)> = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let failed = |source| PluginError { index: index + 1, path: config.path.display().to_string(), source };
            // One library, one plugin: the dynamic linker would hand both
            // entries the same library, and its state to two threads.
            if let Ok(metadata) = std::fs::metadata(&config.path) {
                use std::os::unix::fs::MetadataExt;
                let file = (metadata.dev(), metadata.ino());
                if let Some(earlier) = files.iter().position(|seen| *seen == file) {
                    return Err(failed(StartFailure::Duplicate(format!("the same file as plugin {}", earlier + 1))));
                }
                files.push(file);
            }
            let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
            let (ready, started) = oneshot::channel();
            worker::spawn(index + 1, config.clone(), queue, ready).map_err(failed)?;
            let started: Started = match tokio::time::timeout(LOAD_DEADLINE, started).await {
                Ok(Ok(Ok(started))) => started,
                Ok(Ok(Err(failure))) => return Err(failed(failure)),
                Ok(Err(_)) => return Err(failed(StartFailure::Gone)),
                Err(_) => return Err(failed(StartFailure::Slow(LOAD_DEADLINE))),
            };
            if let Some(earlier) = loaded.iter().position(|plugin| plugin.name == started.name) {
                let why = format!("named {} like plugin {}", started.name, earlier + 1);
                return Err(failed(StartFailure::Duplicate(why)));
            }
            tracing::info!(plugin = %started.name, version = %started.version, path = %config.path.display(), "plugin loaded");
            metrics.plugins().loaded(&started.name);
            loaded.push(Plugin {
                name: started.name,
                config: config.clone(),
                gates: started.gates,
                observes_stored: started.observes_stored,
                observes_commit: started.observes_commit,
                jobs,
                failures_in_row: AtomicU32::new(0),
                off: Mutex::new(None),
                metrics: metrics.clone(),
            });
        }
        Ok(Plugins { loaded: loaded.into() })
    }

    /// Whether no plugin is loaded (every hook is then free).
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }

    /// Whether any plugin has the gate (so the caller may skip building the event).
    pub fn has_gate(&self, hook: GateHook) -> bool {
        self.loaded.iter().any(|plugin| plugin.gates[hook as usize])
    }

    /// Whether any plugin observes stored messages.
    pub fn observes_stored(&self) -> bool {
        self.loaded.iter().any(|plugin| plugin.observes_stored)
    }

    /// Whether any plugin observes commits.
    pub fn observes_commit(&self) -> bool {
        self.loaded.iter().any(|plugin| plugin.observes_commit)
    }

    /// Asks every plugin with the gate, in order: `Ok` if all allow (or fail
    /// open), else the first refusal as the client will see it.
    pub async fn gate(&self, event: GateEvent) -> Result<(), DomainError> {
        let hook = event.hook();
        // Only plugins that opted in see the client's address.
        let blanked = event.without_source_address().map(Arc::new);
        let event = Arc::new(event);
        for plugin in self.loaded.iter().filter(|plugin| plugin.gates[hook as usize]) {
            let shown = match &blanked {
                Some(blanked) if !plugin.config.source_address => blanked,
                _ => &event,
            };
            if let Verdict::Refuse(error) = plugin.ask(hook, shown).await {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Tells every plugin observing the event, without waiting.
    pub fn observe(&self, event: ObservedEvent) {
        let event = Arc::new(event);
        for plugin in self.loaded.iter() {
            let wanted = match &*event {
                ObservedEvent::Stored(_) => plugin.observes_stored,
                ObservedEvent::Commit(_) => plugin.observes_commit,
            };
            if !wanted {
                continue;
            }
            let hook = event.hook_name();
            if plugin.is_off() {
                plugin.metrics.plugins().failed(&plugin.name, hook, "off");
                continue;
            }
            match plugin.jobs.try_send(Job::Observe(event.clone())) {
                Ok(()) => plugin.metrics.plugins().answered(&plugin.name, hook, "told"),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    plugin.metrics.plugins().failed(&plugin.name, hook, "queue_full")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    plugin.metrics.plugins().failed(&plugin.name, hook, "gone")
                }
            }
        }
    }

    /// Runs every plugin's `on_shutdown` (after the drain): each is told at
    /// once, on its own thread, and all are waited for together, at most
    /// `wait`.
    pub async fn shut_down(&self, wait: Duration) {
        let mut pending = Vec::new();
        for plugin in self.loaded.iter().rev() {
            let (done, finished) = oneshot::channel();
            // A full queue: the jobs ahead of this one run first, within `wait`.
            match tokio::time::timeout(wait, plugin.jobs.send(Job::Shutdown(done))).await {
                Ok(Ok(())) => pending.push((plugin, finished)),
                _ => tracing::warn!(plugin = %plugin.name, "plugin could not be told to shut down"),
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        for (plugin, finished) in pending {
            if tokio::time::timeout_at(deadline, finished).await.is_ok() {
                tracing::info!(plugin = %plugin.name, "plugin shut down");
            } else {
                tracing::warn!(plugin = %plugin.name, ?wait, "plugin did not finish on_shutdown in time");
            }
        }
    }
}

impl Plugin {
    async fn ask(&self, hook: GateHook, event: &Arc<GateEvent>) -> Verdict {
        let name = hook.name();
        if self.is_off() {
            return self.fall_back(hook, "off", "is switched off after repeated failures");
        }
        let started = Instant::now();
        let (reply, answered) = oneshot::channel();
        match self.jobs.try_send(Job::Gate { event: event.clone(), reply }) {
            Ok(()) => {}
            // Load, not a fault of the plugin: the policy decides, and it
            // does not count towards switching the plugin off.
            Err(mpsc::error::TrySendError::Full(_)) => return self.fall_back(hook, "queue_full", "is too busy"),
            Err(mpsc::error::TrySendError::Closed(_)) => return self.failed(hook, "gone", "has stopped"),
        }
        let answer = tokio::time::timeout(self.config.deadline[hook as usize], answered).await;
        self.metrics.plugins().waited(&self.name, name, started.elapsed());
        let answer = match answer {
            Err(_) => return self.failed(hook, "timeout", "did not answer in time"),
            Ok(Err(_)) => return self.failed(hook, "gone", "has stopped"),
            Ok(Ok(answer)) => answer,
        };
        match answer {
            Ok(answer) => {
                self.succeeded();
                self.answered(hook, answer)
            }
            Err(GateError::Panicked) => {
                tracing::error!(plugin = %self.name, hook = name, "plugin panicked: switched off until restart");
                self.switch_off(None);
                self.fall_back(hook, "panic", "failed")
            }
            Err(GateError::Failed(why)) => {
                tracing::warn!(plugin = %self.name, hook = name, %why, "plugin failed");
                self.failed(hook, "error", "failed")
            }
            Err(error @ (GateError::BadCode(_) | GateError::BadVerdict(_))) => {
                tracing::warn!(plugin = %self.name, hook = name, %error, "plugin answered outside the ABI");
                self.failed(hook, "bad_answer", "failed")
            }
        }
    }

    fn answered(&self, hook: GateHook, answer: GateAnswer) -> Verdict {
        let record = |outcome| self.metrics.plugins().answered(&self.name, hook.name(), outcome);
        match answer {
            GateAnswer::Allow => {
                record("allow");
                Verdict::Allow
            }
            GateAnswer::Deny { reason } => {
                record("deny");
                let message =
                    if reason.is_empty() { format!("refused by the server's {} plugin", self.name) } else { reason };
                Verdict::Refuse(DomainError::PermissionDenied { message })
            }
            GateAnswer::RetryLater { after_ms, reason } => {
                record("retry_later");
                let message = if reason.is_empty() {
                    format!("the server's {} plugin asks to retry later", self.name)
                } else {
                    reason
                };
                let retry_after_ms = u64::from(after_ms.clamp(1, MAX_RETRY_AFTER_MS));
                Verdict::Refuse(DomainError::ResourceExhausted { message, retry_after_ms })
            }
        }
    }

    /// A failure of the plugin: counted towards switching it off, then the policy.
    fn failed(&self, hook: GateHook, kind: &str, what: &str) -> Verdict {
        let in_row = self.failures_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_row >= FAILURES_TO_SWITCH_OFF {
            tracing::warn!(plugin = %self.name, failures = in_row, off_for = ?SWITCHED_OFF_FOR, "plugin switched off");
            self.switch_off(Some(Instant::now() + SWITCHED_OFF_FOR));
        }
        self.fall_back(hook, kind, what)
    }

    /// The gate's `on_error` policy decides.
    fn fall_back(&self, hook: GateHook, kind: &str, what: &str) -> Verdict {
        self.metrics.plugins().failed(&self.name, hook.name(), kind);
        match self.config.on_error[hook as usize] {
            FailurePolicy::Allow => Verdict::Allow,
            FailurePolicy::Deny => Verdict::Refuse(DomainError::Unavailable {
                message: format!("the server's {} plugin {what}; try again later", self.name),
                retry_after_ms: 1000,
            }),
        }
    }

    fn succeeded(&self) {
        self.failures_in_row.store(0, Ordering::Relaxed);
    }

    /// Switches the plugin off until `until` (`None`: for good, which
    /// nothing shortens). The metrics change under the same lock, so they
    /// and `/healthz` follow the state.
    fn switch_off(&self, until: Option<Instant>) {
        self.failures_in_row.store(0, Ordering::Relaxed);
        let Ok(mut off) = self.off.lock() else { return };
        if *off == Some(None) {
            return;
        }
        *off = Some(until);
        self.metrics.plugins().switched_off(&self.name, until);
    }

    /// Whether the plugin is switched off now; switches it back on when its
    /// time is up.
    fn is_off(&self) -> bool {
        let Ok(mut off) = self.off.lock() else { return false };
        match *off {
            None => false,
            Some(None) => true,
            Some(Some(until)) if Instant::now() < until => true,
            Some(Some(_)) => {
                *off = None;
                tracing::info!(plugin = %self.name, "plugin switched back on");
                self.metrics.plugins().switched_on(&self.name);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(metrics: &Metrics) -> Plugin {
        let (jobs, _) = mpsc::channel(1);
        Plugin {
            name: "probe".into(),
            config: PluginConfig::new("/probe.so".into()),
            gates: [true; GateHook::COUNT],
            observes_stored: false,
            observes_commit: false,
            jobs,
            failures_in_row: AtomicU32::new(0),
            off: Mutex::new(None),
            metrics: metrics.clone(),
        }
    }

    #[test]
    fn five_failures_switch_off_for_a_while_and_a_panic_for_good() {
        let metrics = Metrics::new();
        let probe = plugin(&metrics);
        for _ in 0..FAILURES_TO_SWITCH_OFF - 1 {
            assert!(matches!(probe.failed(GateHook::Enqueue, "timeout", "failed"), Verdict::Allow));
            assert!(!probe.is_off());
        }
        probe.failed(GateHook::Enqueue, "timeout", "failed");
        assert!(probe.is_off() && metrics.plugins().switched_off_now() == ["probe"]);

        // A panic is for good: failures of calls that were already waiting
        // do not shorten it to 30 s, in the state or in /healthz.
        probe.switch_off(None);
        for _ in 0..FAILURES_TO_SWITCH_OFF {
            probe.failed(GateHook::Enqueue, "timeout", "failed");
        }
        assert_eq!(*probe.off.lock().expect("lock"), Some(None));
        let until = metrics.plugins().off_until("probe");
        assert_eq!(until, Some(None), "still off for good in the metrics");
    }

    #[test]
    fn a_register_failure_denies_retryably_by_default() {
        let metrics = Metrics::new();
        let probe = plugin(&metrics);
        match probe.fall_back(GateHook::Register, "timeout", "did not answer in time") {
            Verdict::Refuse(DomainError::Unavailable { retry_after_ms, message }) => {
                assert_eq!(retry_after_ms, 1000);
                assert!(message.contains("probe plugin did not answer in time"), "{message}");
            }
            _ => panic!("on_register fails closed"),
        }
        assert!(matches!(probe.fall_back(GateHook::Login, "timeout", "x"), Verdict::Allow));
    }
}
