//! Printing results for people and for scripts (`--json`: one object per line).

use quicprochat_sdk::{MessageState, StoredMessage};
use serde_json::json;

/// Prints one message.
pub(crate) fn print_message(message: &StoredMessage, json: bool) {
    if json {
        println!("{}", message_json(message));
    } else {
        println!("{}", message_line(message));
    }
}

/// The JSON object of one message.
pub(crate) fn message_json(message: &StoredMessage) -> serde_json::Value {
    json!({
        "id": message.id,
        "group": message.group,
        "from": message.from,
        "text": message.text,
        "sent_at": message.sent_at_ms,
        "received_at": message.received_at_ms,
        "state": state_name(message.state),
        "device": message.device,
    })
}

/// `[12:03:04] group <from> text`, with the delivery state of our own messages.
pub(crate) fn message_line(message: &StoredMessage) -> String {
    let state = match message.state {
        MessageState::Received => String::new(),
        other => format!(" ({})", state_name(other)),
    };
    format!("[{}] {} <{}> {}{}", clock(message.sent_at_ms), message.group, message.from, message.text, state)
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Pending => "pending",
        MessageState::Sent => "sent",
        MessageState::Failed => "failed",
        MessageState::Received => "received",
    }
}

/// What to tell the user when `count` queue entries expired on the server
/// before this device fetched them.
pub(crate) fn expired_note(count: u64) -> String {
    format!(
        "note: {count} queued message(s) or group change(s) expired on the server before this device \
         fetched them (the server keeps what is not fetched for its retention period); they are lost, \
         and a group whose changes expired needs you added again"
    )
}

/// UTC wall-clock time of day of a millisecond timestamp.
pub(crate) fn clock(ms: u64) -> String {
    let seconds = ms / 1000;
    format!("{:02}:{:02}:{:02}", (seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60)
}

/// Prints a success result: a JSON object in `--json` mode, else the text.
pub(crate) fn print_result(json: bool, value: serde_json::Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Prints an error to stderr.
pub(crate) fn print_error(error: &anyhow::Error, json: bool) {
    if json {
        eprintln!("{}", json!({ "error": format!("{error:#}") }));
    } else {
        eprintln!("error: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        let message = StoredMessage {
            id: "ab".into(),
            group: "team".into(),
            from: "bob".into(),
            text: "hi".into(),
            sent_at_ms: 3_723_000,
            received_at_ms: 3_723_004,
            state: MessageState::Received,
            device: Some("0123456789abcdef".into()),
        };
        assert_eq!(message_line(&message), "[01:02:03] team <bob> hi");
        let value = message_json(&message);
        for key in ["id", "group", "from", "text", "sent_at"] {
            assert!(value.get(key).is_some(), "{key}");
        }
        assert_eq!(value["sent_at"], 3_723_000);
        assert_eq!(value["device"], "0123456789abcdef", "the sender's device");
    }
}
