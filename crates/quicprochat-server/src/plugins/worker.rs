//! A plugin's thread: it loads the library, runs `on_load`, then answers
//! gates and tells observers from its queue, one job at a time, until it is
//! told to shut down (or every sender is gone), and then runs
//! `on_shutdown`. Plugin code runs here only: never on the async runtime
//! or the storage thread. A gate whose caller stopped waiting (deadline
//! passed) is skipped rather than asked late.

use std::sync::Arc;

use quicprochat_plugin_api::host::{GateAnswer, GateError};
use quicprochat_plugin_api::instance::{PluginInstance, StartError};
use quicprochat_plugin_api::loader::{load_configured, LoadError};
use quicprochat_plugin_api::services::set_thread_plugin;
use tokio::sync::{mpsc, oneshot};

use super::events::{has_gate, GateEvent, ObservedEvent};
use crate::config::{GateHook, PluginConfig};

/// Work for a plugin's thread.
pub(super) enum Job {
    Gate { event: Arc<GateEvent>, reply: oneshot::Sender<Result<GateAnswer, GateError>> },
    Observe(Arc<ObservedEvent>),
    Shutdown(oneshot::Sender<()>),
}

/// What the thread reports once the plugin is loaded and started.
pub(super) struct Started {
    pub(super) name: String,
    pub(super) version: String,
    /// Which gates it has, indexed by [`GateHook`].
    pub(super) gates: [bool; GateHook::COUNT],
    pub(super) observes_stored: bool,
    pub(super) observes_commit: bool,
}

/// Why a plugin did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartFailure {
    /// The file was refused or could not be loaded (the message names it).
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{name} {version}: {source}")]
    OnLoad { name: String, version: String, source: StartError },
    #[error("its thread could not be started: {0}")]
    Thread(std::io::Error),
    #[error("its thread ended while loading it")]
    Gone,
    #[error("loading it and its on_load took longer than {0:?}")]
    Slow(std::time::Duration),
    #[error("{0}: each plugin is loaded once")]
    Duplicate(String),
}

/// Starts the thread of the plugin `config` describes; reports on `ready`.
pub(super) fn spawn(
    index: usize,
    config: PluginConfig,
    jobs: mpsc::Receiver<Job>,
    ready: oneshot::Sender<Result<Started, StartFailure>>,
) -> Result<(), StartFailure> {
    std::thread::Builder::new()
        .name(format!("qpc-plugin-{index}"))
        .spawn(move || run(config, jobs, ready))
        .map(|_| ())
        .map_err(StartFailure::Thread)
}

fn run(config: PluginConfig, mut jobs: mpsc::Receiver<Job>, ready: oneshot::Sender<Result<Started, StartFailure>>) {
    let loaded = match load_configured(&config.path, config.sha256.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    set_thread_plugin(&loaded.name);
    let mut instance = match loaded.start(&config.config_json) {
        Ok(instance) => instance,
        Err(source) => {
            let (name, version) = (loaded.name.clone(), loaded.version.clone());
            let _ = ready.send(Err(StartFailure::OnLoad { name, version, source }));
            return;
        }
    };
    let table = loaded.table.entries();
    let started = Started {
        name: loaded.name.clone(),
        version: loaded.version.clone(),
        gates: GateHook::ALL.map(|hook| has_gate(table, hook)),
        observes_stored: table.on_stored.is_some(),
        observes_commit: table.on_commit.is_some(),
    };
    if ready.send(Ok(started)).is_err() {
        // The server gave up on the start (its deadline passed).
        instance.shut_down();
        return;
    }
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Gate { event, reply } => {
                if reply.is_closed() {
                    continue;
                }
                let answer = ask(&mut instance, &event);
                let _ = reply.send(answer);
            }
            Job::Observe(event) => event.tell(&mut instance),
            Job::Shutdown(done) => {
                instance.shut_down();
                let _ = done.send(());
                return;
            }
        }
    }
    instance.shut_down();
}

/// Asks the gate; a poisoned instance (an earlier panic) answers as a panic.
fn ask(instance: &mut PluginInstance, event: &GateEvent) -> Result<GateAnswer, GateError> {
    event.ask(instance).unwrap_or(Err(GateError::Panicked))
}
