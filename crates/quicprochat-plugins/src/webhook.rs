//! A webhook notifier: a small JSON document POSTed to an HTTP endpoint for
//! each configured event, from a background thread, so a hook returns at
//! once. Hooks put the encoded document on a bounded queue; when it is
//! full the document is dropped and counted (and the count reported in the
//! server's log), never waited for. The gates always allow.
//!
//! Config keys (the plugin's `config` table):
//! ```toml
//! [plugins.config]
//! url = "http://127.0.0.1:8080/qpc-events"   # http only (see below)
//! events = ["register", "group_create", "stored", "commit"]  # optional, default all
//! queue_capacity = 1024                      # optional: documents waiting at most
//! timeout_ms = 5000                          # optional: per request
//! ```
//!
//! TLS is not built into this example (the HTTP client, `ureq`, is built
//! without it): an `https://` url is refused at load. Post to a relay on
//! the same host or network (a local proxy that forwards over TLS).
//!
//! Documents carry metadata only, with names in clear (`ts_ms` is the
//! server's clock when the hook ran; ids are hex):
//! ```text
//! {"ts_ms":…,"event":"register","user":"alice","invite_used":false}
//! {"ts_ms":…,"event":"group_create","creator":"alice","group":"<hex>","kind":"direct"}
//! {"ts_ms":…,"event":"stored","sender":"alice","group":"<hex>","message":"<hex>","size":…,"epoch":…,"recipients":["bob"]}
//! {"ts_ms":…,"event":"commit","committer":"alice","group":"<hex>","epoch":…,"added":["bob"],"removed":[]}
//! ```
//! `register` and `group_create` are sent when the gate is asked, before
//! the server decides: another gate or the store may still refuse.
//!
//! `on_shutdown` closes the queue and waits up to [`SHUTDOWN_GRACE`] for
//! what is queued to be sent; what is left then is given up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use quicprochat_plugin_api::abi::QPC_LOG_WARN;
use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::sdk::{
    CommitInfo, GateResult, GroupCreateInfo, GroupKind, Hooks, Host, Plugin, RegisterInfo, StoredInfo,
};
use serde::{Deserialize, Serialize};
use ureq::http::Uri;

use crate::{bad_key, parse_config};

const PLUGIN: &str = "webhook";

/// How long `on_shutdown` waits for the queue to drain.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// An event the operator may ask to be notified of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    Register,
    GroupCreate,
    Stored,
    Commit,
}

const ALL_EVENTS: [Event; 4] = [Event::Register, Event::GroupCreate, Event::Stored, Event::Commit];

/// The config as the operator wrote it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    url: String,
    #[serde(default = "all_events")]
    events: Vec<Event>,
    #[serde(default = "default_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn all_events() -> Vec<Event> {
    ALL_EVENTS.to_vec()
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_timeout_ms() -> u64 {
    5000
}

/// The checked config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    url: String,
    events: Vec<Event>,
    queue_capacity: usize,
    timeout: Duration,
}

impl Settings {
    pub(crate) fn parse(config: &str) -> Result<Settings, String> {
        let raw: RawConfig = parse_config(PLUGIN, config)?;
        let uri: Uri = raw.url.parse().map_err(|e| bad_key(PLUGIN, "url", format!("is not a url ({e})")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                let rule = "is https, but TLS is not built into this example plugin: post to an http:// relay";
                return Err(bad_key(PLUGIN, "url", rule));
            }
            _ => return Err(bad_key(PLUGIN, "url", "must start with http://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad_key(PLUGIN, "url", "has no host"));
        }
        if raw.events.is_empty() {
            return Err(bad_key(PLUGIN, "events", "must name at least one event (or be left out for all)"));
        }
        if raw.queue_capacity == 0 {
            return Err(bad_key(PLUGIN, "queue_capacity", "must be at least 1"));
        }
        if raw.timeout_ms == 0 {
            return Err(bad_key(PLUGIN, "timeout_ms", "must be at least 1"));
        }
        let timeout = Duration::from_millis(raw.timeout_ms);
        Ok(Settings { url: raw.url, events: raw.events, queue_capacity: raw.queue_capacity, timeout })
    }
}

/// Sends one document; the error is reported in the server's log.
pub(crate) type Sink = Box<dyn FnMut(&str) -> Result<(), String> + Send>;

/// A sink that POSTs to `settings.url`, directly (no proxy from the
/// environment, no redirects), under `settings.timeout`.
fn http_sink(settings: &Settings) -> Sink {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .proxy(None)
        .max_redirects(0)
        .build()
        .into();
    let url = settings.url.clone();
    Box::new(move |body: &str| {
        agent.post(&url).header("content-type", "application/json").send(body).map(drop).map_err(|e| e.to_string())
    })
}

/// One document, before its time stamp.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Notification<'a> {
    Register { user: &'a str, invite_used: bool },
    GroupCreate { creator: &'a str, group: String, kind: &'static str },
    Stored { sender: &'a str, group: String, message: String, size: u64, epoch: u64, recipients: &'a [&'a str] },
    Commit { committer: &'a str, group: String, epoch: u64, added: &'a [&'a str], removed: &'a [&'a str] },
}

#[derive(Debug, Serialize)]
struct Document<'a> {
    ts_ms: u64,
    #[serde(flatten)]
    notification: Notification<'a>,
}

/// Counts and reports to the server's log: the first time, then at every
/// power of two.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, host: &Host, what: &str) {
        let count = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            host.log(QPC_LOG_WARN, &format!("{what} ({count} so far)"));
        }
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The plugin: the queue's sending end and what it needs to stop the worker.
pub struct Webhook {
    events: Vec<Event>,
    queue: SyncSender<String>,
    dropped: Counter,
    failed: Arc<Counter>,
    /// Disconnected when the worker has returned.
    worker_done: Mutex<Receiver<()>>,
    /// Tells the worker to give up what is left (after the grace).
    give_up: Arc<AtomicBool>,
    worker: JoinHandle<()>,
    grace: Duration,
    host: Host,
}

impl Webhook {
    /// Starts the worker that hands queued documents to `sink`.
    pub(crate) fn start(settings: &Settings, sink: Sink, grace: Duration, host: Host) -> Result<Webhook, String> {
        let (queue, queued) = mpsc::sync_channel::<String>(settings.queue_capacity);
        let (done, worker_done) = mpsc::sync_channel::<()>(0);
        let give_up = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Counter::default());
        let worker = {
            let (give_up, failed) = (give_up.clone(), failed.clone());
            std::thread::Builder::new()
                .name("qpc-webhook".into())
                .spawn(move || deliver(queued, sink, &give_up, &failed, host, done))
                .map_err(|e| format!("{PLUGIN}: cannot start its thread: {e}"))?
        };
        Ok(Webhook {
            events: settings.events.clone(),
            queue,
            dropped: Counter::default(),
            failed,
            worker_done: Mutex::new(worker_done),
            give_up,
            worker,
            grace,
            host,
        })
    }

    /// Documents dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Documents the endpoint did not take (an error or a timeout).
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }

    /// Queues `notification` if `event` is configured; never waits.
    fn notify(&self, event: Event, notification: Notification<'_>) {
        if !self.events.contains(&event) {
            return;
        }
        let document = Document { ts_ms: self.host.now_ms(), notification };
        let body = match serde_json::to_string(&document) {
            Ok(body) => body,
            Err(e) => return self.dropped.add(&self.host, &format!("a notification could not be encoded: {e}")),
        };
        match self.queue.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.add(&self.host, "the webhook queue is full: notifications dropped")
            }
            Err(TrySendError::Disconnected(_)) => self.dropped.add(&self.host, "the webhook thread has stopped"),
        }
    }
}

/// The worker: sends each queued document until the queue is closed and
/// empty, or until told to give up.
fn deliver(
    queued: Receiver<String>,
    mut sink: Sink,
    give_up: &AtomicBool,
    failed: &Counter,
    host: Host,
    _done: SyncSender<()>,
) {
    for body in queued {
        if give_up.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = sink(&body) {
            failed.add(&host, &format!("a notification was not delivered: {e}"));
        }
    }
}

fn group_kind(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Named => "named",
        GroupKind::Direct => "direct",
    }
}

impl Plugin for Webhook {
    const HOOKS: Hooks = Hooks { register: true, group_create: true, stored: true, commit: true, ..Hooks::NONE };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        let settings = Settings::parse(config)?;
        Webhook::start(&settings, http_sink(&settings), SHUTDOWN_GRACE, *host)
    }

    fn on_register(&self, event: &RegisterInfo<'_>) -> GateResult {
        self.notify(Event::Register, Notification::Register { user: event.username, invite_used: event.invite_used });
        Ok(GateAnswer::Allow)
    }

    fn on_group_create(&self, event: &GroupCreateInfo<'_>) -> GateResult {
        let group = hex::encode(event.group_id);
        let notification = Notification::GroupCreate { creator: event.creator, group, kind: group_kind(event.kind) };
        self.notify(Event::GroupCreate, notification);
        Ok(GateAnswer::Allow)
    }

    fn on_stored(&self, event: &StoredInfo<'_>) {
        self.notify(
            Event::Stored,
            Notification::Stored {
                sender: event.sender,
                group: hex::encode(event.group_id),
                message: hex::encode(event.message_id),
                size: event.payload_len,
                epoch: event.epoch,
                recipients: &event.recipients,
            },
        );
    }

    fn on_commit(&self, event: &CommitInfo<'_>) {
        self.notify(
            Event::Commit,
            Notification::Commit {
                committer: event.committer,
                group: hex::encode(event.group_id),
                epoch: event.new_epoch,
                added: &event.added,
                removed: &event.removed,
            },
        );
    }

    fn on_shutdown(self) {
        let Webhook { queue, worker_done, give_up, worker, grace, host, .. } = self;
        // Closing the queue lets the worker finish what is queued, then return.
        drop(queue);
        let worker_done = worker_done.into_inner().unwrap_or_else(PoisonError::into_inner);
        match worker_done.recv_timeout(grace) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                let _ = worker.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                give_up.store(true, Ordering::Relaxed);
                let message = format!("notifications still queued after {grace:?} at shutdown were given up");
                host.log(QPC_LOG_WARN, &message);
            }
        }
    }
}

#[cfg(test)]
mod tests;
