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

/// UTC calendar date (`YYYY-MM-DD`) of a millisecond timestamp.
pub(crate) fn date(ms: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
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
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(date(1_796_601_600_000), "2026-12-07");
        assert_eq!(date(1_796_601_600_000 - 1), "2026-12-06");
    }

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
