//! The network side of `qpc tui`: two tokio tasks over a shared
//! `Arc<QpcClient>`, reporting to the UI loop as [`AppEvent`]s.
//!
//! - the *worker* runs the user's [`Command`]s one at a time, in order (so
//!   messages leave in the order they were typed);
//! - the *receiver* catches up and loads history once, then loops on
//!   `receive_wait`, refreshing the conversation list after each round.
//!
//! - the *status* task forwards the SDK supervisor's connection status.
//!
//! User commands go first: before the worker runs one it takes the
//! [`Turn`] and wakes the receiver, which abandons its wait (releasing the
//! client for the command) and waits for the turn to end before receiving
//! again. Today's SDK holds its client lock while it subscribes, until the
//! first push arrives, so without this a send could wait for an incoming
//! message.
//!
//! None ever touches the terminal, and the UI loop never awaits them:
//! it only sends commands over an unbounded channel.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use quicprochat_sdk::{ConnectionStatus as SdkStatus, MessageState, QpcClient, SdkError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::events::{AppEvent, Command, ConnectionStatus};

/// How long the receiver waits for a push per round.
const RECEIVE_WAIT: Duration = Duration::from_secs(30);
/// History loaded per conversation at start.
const HISTORY_LIMIT: u32 = 200;
/// How often the state of messages pending in the outbox is re-read.
const PENDING_RECHECK: Duration = Duration::from_secs(3);
/// How many recent messages that re-read covers.
const PENDING_HISTORY: u32 = 50;
/// Longest pause between receive attempts after failures.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How long quitting waits for commands already typed (a send in flight).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The running network tasks.
pub(crate) struct Network {
    commands: UnboundedSender<Command>,
    worker: JoinHandle<()>,
    receiver: JoinHandle<()>,
    status: JoinHandle<()>,
}

/// What the UI loop sees besides [`AppEvent`]s: a network task died.
pub(crate) type Crash = String;

impl Network {
    /// Starts the tasks; events go to `events`, a panic in a task to `crashes`.
    pub(crate) fn spawn(
        client: Arc<QpcClient>,
        events: UnboundedSender<AppEvent>,
        crashes: UnboundedSender<Crash>,
    ) -> Network {
        let (commands, command_rx) = unbounded_channel();
        let status = spawn_guarded("status", watch_status(client.status(), events.clone()), crashes.clone());
        let turn = Arc::new(Turn::default());
        let worker = worker(Arc::clone(&client), command_rx, events.clone(), Arc::clone(&turn));
        let worker = spawn_guarded("worker", worker, crashes.clone());
        let receiver = spawn_guarded("receiver", receive_loop(client, events, turn), crashes);
        Network { commands, worker, receiver, status }
    }

    /// Queues a command for the worker; never waits.
    pub(crate) fn run(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::warn!("the network worker has stopped; command dropped");
        }
    }

    /// Lets the worker finish what was typed (bounded), then stops the receiver.
    pub(crate) async fn shutdown(self) {
        drop(self.commands);
        if tokio::time::timeout(DRAIN_TIMEOUT, self.worker).await.is_err() {
            tracing::warn!("commands still running after {DRAIN_TIMEOUT:?}; leaving anyway");
        }
        self.receiver.abort();
        self.status.abort();
    }
}

fn spawn_guarded(
    name: &'static str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
    crashes: UnboundedSender<Crash>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            let _ = crashes.send(format!("the {name} task panicked: {reason}"));
        }
    })
}

/// Forwards the SDK's connection supervisor status to the status bar.
async fn watch_status(mut status: watch::Receiver<SdkStatus>, events: UnboundedSender<AppEvent>) {
    loop {
        let current = connection_status(&status.borrow_and_update());
        if events.send(AppEvent::Connection(current)).is_err() || status.changed().await.is_err() {
            return;
        }
    }
}

/// The status bar's view of the supervisor's state.
pub(crate) fn connection_status(status: &SdkStatus) -> ConnectionStatus {
    match status {
        SdkStatus::Connecting => ConnectionStatus::Connecting,
        SdkStatus::Connected => ConnectionStatus::Connected,
        SdkStatus::Reconnecting { attempt, .. } => ConnectionStatus::Reconnecting { attempt: *attempt },
        SdkStatus::Offline => ConnectionStatus::Offline,
    }
}

/// What the worker and the receiver share.
#[derive(Default)]
struct Turn {
    /// Held by the worker while it runs a command.
    gate: tokio::sync::Mutex<()>,
    /// Wakes the receiver out of its wait when a command starts.
    wake: Notify,
    /// Conversations with our messages still pending in the SDK's outbox
    /// (sent while offline): the receiver reloads their state until none is.
    pending: std::sync::Mutex<HashSet<String>>,
}

impl Turn {
    fn pending_targets(&self) -> Vec<String> {
        self.pending.lock().map(|pending| pending.iter().cloned().collect()).unwrap_or_default()
    }

    fn set_pending(&self, target: &str, pending: bool) {
        if let Ok(mut targets) = self.pending.lock() {
            if pending {
                targets.insert(target.to_owned());
            } else {
                targets.remove(target);
            }
        }
    }
}

/// Whether an error means the connection (not the request) failed.
pub(crate) fn is_connection_error(error: &SdkError) -> bool {
    matches!(error, SdkError::Rpc(_)) && error.status().is_none()
}

/// Shows an info line if queue entries expired before we fetched them.
async fn report_expired(client: &QpcClient, events: &UnboundedSender<AppEvent>) {
    match client.take_expired_count().await {
        Ok(0) => {}
        Ok(expired) => {
            let _ = events.send(AppEvent::Info(crate::output::expired_note(expired)));
        }
        Err(error) => report(events, &error),
    }
}

/// Reports a failed command: a system line, and the connection state when it was the connection.
fn report(events: &UnboundedSender<AppEvent>, error: &SdkError) {
    if is_connection_error(error) {
        let _ = events.send(AppEvent::Connection(ConnectionStatus::Error(error.to_string())));
    }
    let _ = events.send(AppEvent::Error(error.to_string()));
}

async fn worker(
    client: Arc<QpcClient>,
    mut commands: UnboundedReceiver<Command>,
    events: UnboundedSender<AppEvent>,
    turn: Arc<Turn>,
) {
    while let Some(command) = commands.recv().await {
        let _turn = turn.gate.lock().await;
        turn.wake.notify_one();
        if let Err(error) = run_command(&client, command, &events, &turn).await {
            report(&events, &error);
        }
    }
}

async fn run_command(
    client: &QpcClient,
    command: Command,
    events: &UnboundedSender<AppEvent>,
    turn: &Turn,
) -> Result<(), SdkError> {
    match command {
        Command::Send { target, text, local_id } => match client.send(&target, &text).await {
            Ok(message) => {
                if message.state == MessageState::Pending {
                    turn.set_pending(&message.group, true);
                }
                let _ = events.send(AppEvent::Sent { local_id, message });
                if target.starts_with('@') {
                    refresh_groups(client, events).await?;
                }
            }
            Err(error) => {
                if is_connection_error(&error) {
                    let _ = events.send(AppEvent::Connection(ConnectionStatus::Error(error.to_string())));
                }
                let _ = events.send(AppEvent::SendFailed { local_id, error: error.to_string() });
            }
        },
        Command::Create(name) => {
            client.create_group(&name).await?;
            refresh_groups(client, events).await?;
            let _ = events.send(AppEvent::Created(name));
        }
        Command::Add { group, users } => {
            client.add_members(&group, &users).await?;
            refresh_groups(client, events).await?;
            let _ = events.send(AppEvent::Info(format!("added {} to {group}", users.join(", "))));
        }
        Command::Remove { group, users } => {
            client.remove_members(&group, &users).await?;
            refresh_groups(client, events).await?;
            let _ = events.send(AppEvent::Info(format!("removed {} from {group}", users.join(", "))));
        }
        Command::Leave(group) => {
            client.leave_group(&group).await?;
            let _ = events.send(AppEvent::Left(group));
        }
        Command::Verify(user) => {
            let _ = events.send(AppEvent::SafetyNumber(client.safety_number(&user).await?));
        }
        Command::Quit => {}
    }
    Ok(())
}

async fn refresh_groups(client: &QpcClient, events: &UnboundedSender<AppEvent>) -> Result<(), SdkError> {
    let _ = events.send(AppEvent::Groups(client.groups().await?));
    Ok(())
}

/// Catches up and loads the history once, then receives until the UI is gone.
async fn receive_loop(client: Arc<QpcClient>, events: UnboundedSender<AppEvent>, turn: Arc<Turn>) {
    if let Err(error) = load(&client, &events).await {
        report(&events, &error);
    }
    // Loading caught up: say at once what expired while we were away.
    report_expired(&client, &events).await;
    let mut failures: u32 = 0;
    while !events.is_closed() {
        // Poll sooner while the outbox holds our messages, to show them sent.
        let pending = turn.pending_targets();
        let wait = if pending.is_empty() { RECEIVE_WAIT } else { PENDING_RECHECK };
        let received = tokio::select! {
            received = client.receive_wait(wait) => received,
            () = turn.wake.notified() => {
                // A command is running: receive again once it is done.
                drop(turn.gate.lock().await);
                continue;
            }
        };
        match received {
            Ok(messages) => {
                if failures > 0 {
                    failures = 0;
                    let _ = events.send(AppEvent::Connection(ConnectionStatus::Connected));
                }
                // Groups first, so conversations we were just added to come with their members.
                if let Err(error) = refresh_groups(&client, &events).await {
                    report(&events, &error);
                }
                if !messages.is_empty() {
                    let _ = events.send(AppEvent::Messages(messages));
                }
                report_expired(&client, &events).await;
                if let Err(error) = recheck_pending(&client, &events, &turn, pending).await {
                    report(&events, &error);
                }
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    report(&events, &error);
                } else if is_connection_error(&error) {
                    let _ = events.send(AppEvent::Connection(ConnectionStatus::Error(error.to_string())));
                }
                tokio::time::sleep(retry_delay(failures)).await;
            }
        }
    }
}

/// Reloads the conversations with pending messages; the app updates the
/// states of messages it already shows.
async fn recheck_pending(
    client: &QpcClient,
    events: &UnboundedSender<AppEvent>,
    turn: &Turn,
    targets: Vec<String>,
) -> Result<(), SdkError> {
    for target in targets {
        let messages = client.history(&target, PENDING_HISTORY).await?;
        let still_pending = messages.iter().any(|message| message.state == MessageState::Pending);
        turn.set_pending(&target, still_pending);
        let _ = events.send(AppEvent::History { group: target, messages });
    }
    Ok(())
}

/// Start-up: what arrived while we were away counts as unread; older history does not.
async fn load(client: &QpcClient, events: &UnboundedSender<AppEvent>) -> Result<(), SdkError> {
    let fresh = client.receive().await?;
    let fresh_ids: HashSet<(&str, &str)> =
        fresh.iter().map(|message| (message.from.as_str(), message.id.as_str())).collect();
    let groups = client.groups().await?;
    for group in &groups {
        let mut messages = client.history(&group.name, HISTORY_LIMIT).await?;
        messages.retain(|message| !fresh_ids.contains(&(message.from.as_str(), message.id.as_str())));
        let _ = events.send(AppEvent::History { group: group.name.clone(), messages });
    }
    let _ = events.send(AppEvent::Groups(groups));
    if !fresh.is_empty() {
        let _ = events.send(AppEvent::Messages(fresh));
    }
    Ok(())
}

/// 1 s, 2 s, 4 s, ... up to [`MAX_RETRY_DELAY`].
fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retry_delay_doubles_up_to_the_ceiling() {
        let delays: Vec<u64> = (1..=8).map(|failures| retry_delay(failures).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
