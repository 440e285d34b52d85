//! The messages between the UI loop and the network tasks of `qpc tui`:
//! [`Command`]s the user asked for, [`AppEvent`]s the network reports back,
//! and the [`ConnectionStatus`] shown in the status bar.

use quicprochat_sdk::{GroupSummary, SafetyNumber, StoredMessage};

/// Connection state shown in the status bar: the SDK supervisor's status
/// (`network::connection_status`), plus `Error` when a call failed because of
/// the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectionStatus {
    /// Not connected yet.
    Connecting,
    /// Connected and logged in.
    Connected,
    /// Trying to reconnect.
    Reconnecting {
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// Gave up, or disconnected.
    Offline,
    /// The last call failed because of the connection.
    Error(String),
}

impl ConnectionStatus {
    /// Text of the status bar.
    pub(crate) fn label(&self) -> String {
        match self {
            ConnectionStatus::Connecting => "connecting".to_owned(),
            ConnectionStatus::Connected => "connected".to_owned(),
            ConnectionStatus::Reconnecting { attempt } => format!("reconnecting (attempt {attempt})"),
            ConnectionStatus::Offline => "offline".to_owned(),
            ConnectionStatus::Error(reason) => format!("error: {reason}"),
        }
    }
}

/// Network work asked for by the user; run by `network.rs`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Send `text` to `target` (group name or `@user`); `local_id` names the pending line.
    Send {
        target: String,
        text: String,
        local_id: String,
    },
    Create(String),
    Add {
        group: String,
        users: Vec<String>,
    },
    Remove {
        group: String,
        users: Vec<String>,
    },
    Leave(String),
    Verify(String),
    /// Leave the TUI (handled by the driver, not the network).
    Quit,
}

/// Results reported by the network tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppEvent {
    Connection(ConnectionStatus),
    /// Our active conversations (refreshed after receiving and after membership changes).
    Groups(Vec<GroupSummary>),
    /// Stored history of one conversation (at start, and to re-read outbox
    /// states): not counted as unread; updates the state of messages shown.
    History {
        group: String,
        messages: Vec<StoredMessage>,
    },
    /// Newly received messages.
    Messages(Vec<StoredMessage>),
    Sent {
        local_id: String,
        message: StoredMessage,
    },
    SendFailed {
        local_id: String,
        error: String,
    },
    Created(String),
    Left(String),
    SafetyNumber(SafetyNumber),
    /// A system line for the user.
    Info(String),
    /// A failed command, shown as a system line.
    Error(String),
}
