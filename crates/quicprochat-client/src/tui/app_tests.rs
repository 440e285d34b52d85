//! Unit tests of the TUI state machine ([`App`]): keys in, commands and
//! state out, no terminal and no network.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use quicprochat_sdk::{GroupSummary, MessageState, SafetyNumber, StoredMessage};

use super::app::{App, Entry};
use super::events::{AppEvent, Command, ConnectionStatus};

pub(super) fn message(group: &str, from: &str, id: &str, text: &str, state: MessageState) -> StoredMessage {
    StoredMessage {
        id: id.to_owned(),
        group: group.to_owned(),
        from: from.to_owned(),
        text: text.to_owned(),
        sent_at_ms: 45_296_000, // 12:34:56
        received_at_ms: 45_296_000,
        state,
        device: None,
    }
}

pub(super) fn group(name: &str, members: &[&str]) -> GroupSummary {
    GroupSummary { name: name.to_owned(), members: members.iter().map(|member| (*member).to_owned()).collect() }
}

/// An app for alice with the groups `team` (selected) and `@bob`.
pub(super) fn app_with_groups() -> App {
    let mut app = App::new("alice", "127.0.0.1:7000");
    app.set_connection(ConnectionStatus::Connected);
    app.handle_event(AppEvent::Groups(vec![group("team", &["alice", "bob"]), group("@bob", &["alice", "bob"])]));
    app
}

fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(app: &mut App, c: char) -> Vec<Command> {
    app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

pub(super) fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert!(press(app, KeyCode::Char(c)).is_empty());
    }
}

/// Types `line` and presses Enter.
fn enter(app: &mut App, line: &str) -> Vec<Command> {
    type_text(app, line);
    press(app, KeyCode::Enter)
}

fn selected_name(app: &App) -> Option<&str> {
    app.selected_conversation().map(|conversation| conversation.name.as_str())
}

fn last_system_line(app: &App) -> Option<&str> {
    app.selected_conversation()?.entries.iter().rev().find_map(|entry| match entry {
        Entry::System(text) => Some(text.as_str()),
        Entry::Message(_) => None,
    })
}

#[test]
fn enter_sends_to_the_selected_conversation_as_pending() {
    let mut app = app_with_groups();
    app.set_now(1_000);
    let commands = enter(&mut app, "hello bob");
    assert_eq!(
        commands,
        [Command::Send { target: "team".into(), text: "hello bob".into(), local_id: "local-1".into() }]
    );
    assert!(app.input.text().is_empty());
    let Some(Entry::Message(pending)) = app.conversations[0].entries.last() else { panic!("no pending line") };
    assert_eq!((pending.state, pending.sent_at_ms, pending.from.as_str()), (MessageState::Pending, 1_000, "alice"));

    let mut sent = message("team", "alice", "ab12", "hello bob", MessageState::Sent);
    app.handle_event(AppEvent::Sent { local_id: "local-1".into(), message: sent.clone() });
    assert_eq!(app.conversations[0].entries, [Entry::Message(sent.clone())]);

    assert_eq!(enter(&mut app, "again").len(), 1);
    app.handle_event(AppEvent::SendFailed { local_id: "local-2".into(), error: "server refused".into() });
    let Some(Entry::Message(failed)) = app.conversations[0].entries.get(1) else { panic!("no failed line") };
    assert_eq!(failed.state, MessageState::Failed);
    assert_eq!(last_system_line(&app), Some("not sent: server refused"));
    // A duplicate delivery of the sent message is not shown twice.
    sent.state = MessageState::Received;
    app.handle_event(AppEvent::Messages(vec![sent]));
    assert_eq!(app.conversations[0].entries.len(), 3);
}

#[test]
fn blank_lines_and_no_conversation_send_nothing() {
    let mut app = app_with_groups();
    assert!(enter(&mut app, "   ").is_empty());
    let mut empty = App::new("alice", "127.0.0.1:7000");
    assert!(enter(&mut empty, "hello").is_empty());
    assert_eq!(empty.system, ["no conversation selected: /create NAME or /dm USER"]);
}

#[test]
fn input_history_with_up_and_down() {
    let mut app = app_with_groups();
    enter(&mut app, "first");
    enter(&mut app, "/help");
    press(&mut app, KeyCode::Esc); // closes the help popup
    assert!(app.popup.is_none());
    type_text(&mut app, "draft");
    press(&mut app, KeyCode::Up);
    assert_eq!(app.input.text(), "/help");
    press(&mut app, KeyCode::Up);
    assert_eq!(app.input.text(), "first");
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.input.text(), "draft");
    press(&mut app, KeyCode::Esc);
    assert!(app.input.text().is_empty());
}

#[test]
fn switching_conversations_wraps_and_clears_unread() {
    let mut app = app_with_groups();
    assert_eq!(selected_name(&app), Some("team"));
    app.handle_event(AppEvent::Messages(vec![
        message("@bob", "bob", "01", "psst", MessageState::Received),
        message("@bob", "bob", "02", "there?", MessageState::Received),
        message("team", "bob", "03", "seen here", MessageState::Received),
    ]));
    assert_eq!((app.conversations[0].unread, app.conversations[1].unread), (0, 2));
    press(&mut app, KeyCode::Tab);
    assert_eq!(selected_name(&app), Some("@bob"));
    assert_eq!(app.conversations[1].unread, 0);
    ctrl(&mut app, 'n');
    assert_eq!(selected_name(&app), Some("team"), "wraps around");
    ctrl(&mut app, 'p');
    assert_eq!(selected_name(&app), Some("@bob"));
    app.handle_key(KeyEvent::new(KeyCode::Up, KeyModifiers::ALT));
    assert_eq!(selected_name(&app), Some("team"));
    app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::ALT));
    press(&mut app, KeyCode::BackTab);
    assert_eq!(selected_name(&app), Some("team"));
}

#[test]
fn slash_commands_become_network_commands() {
    let mut app = app_with_groups();
    assert_eq!(enter(&mut app, "/create ops"), [Command::Create("ops".into())]);
    assert_eq!(
        enter(&mut app, "/add carol dave"),
        [Command::Add { group: "team".into(), users: vec!["carol".into(), "dave".into()] }]
    );
    assert_eq!(enter(&mut app, "/remove bob"), [Command::Remove { group: "team".into(), users: vec!["bob".into()] }]);
    assert_eq!(enter(&mut app, "/verify carol"), [Command::Verify("carol".into())]);
    assert_eq!(enter(&mut app, "/leave"), [Command::Leave("team".into())]);
    assert_eq!(
        enter(&mut app, "//not a command"),
        [Command::Send { target: "team".into(), text: "/not a command".into(), local_id: "local-1".into() }]
    );
    assert_eq!(enter(&mut app, "/quit"), [Command::Quit]);
    assert!(app.quit);
}

#[test]
fn slash_command_errors_are_system_lines() {
    let mut app = app_with_groups();
    assert!(enter(&mut app, "/frob").is_empty());
    assert_eq!(last_system_line(&app), Some("unknown command /frob; /help lists the commands"));
    assert!(enter(&mut app, "/add").is_empty());
    assert_eq!(last_system_line(&app), Some("usage: /add USER..."));
    assert!(enter(&mut app, "/verify").is_empty(), "no peer to verify in a group");
    press(&mut app, KeyCode::Tab);
    assert!(enter(&mut app, "/add carol").is_empty());
    assert_eq!(last_system_line(&app), Some("/add works in groups; a direct conversation has exactly two members"));
    assert_eq!(enter(&mut app, "/verify"), [Command::Verify("bob".into())], "defaults to the peer");
    app.handle_event(AppEvent::Error("connection lost: timed out".into()));
    assert_eq!(last_system_line(&app), Some("error: connection lost: timed out"));
}

#[test]
fn dm_opens_a_placeholder_until_the_first_message_creates_it() {
    let mut app = app_with_groups();
    assert!(enter(&mut app, "/dm @carol").is_empty());
    assert_eq!(selected_name(&app), Some("@carol"));
    assert!(!app.conversations[2].joined);
    // A group refresh keeps the placeholder (the server does not know it yet).
    app.handle_event(AppEvent::Groups(vec![group("team", &["alice", "bob"]), group("@bob", &["alice", "bob"])]));
    assert_eq!(selected_name(&app), Some("@carol"));
    let commands = enter(&mut app, "hi carol");
    assert_eq!(
        commands,
        [Command::Send { target: "@carol".into(), text: "hi carol".into(), local_id: "local-1".into() }]
    );
    // /dm to an existing conversation just selects it.
    enter(&mut app, "/dm bob");
    assert_eq!(selected_name(&app), Some("@bob"));
    assert_eq!(app.conversations.len(), 3);
    assert!(enter(&mut app, "/dm alice").is_empty(), "not with yourself");
}

#[test]
fn groups_refresh_adds_and_drops_conversations() {
    let mut app = app_with_groups();
    press(&mut app, KeyCode::Tab);
    app.handle_event(AppEvent::Groups(vec![group("@bob", &["alice", "bob"]), group("ops", &["alice"])]));
    let names: Vec<&str> = app.conversations.iter().map(|conversation| conversation.name.as_str()).collect();
    assert_eq!(names, ["@bob", "ops"]);
    assert_eq!(selected_name(&app), Some("@bob"), "the selection follows the conversation");
    app.handle_event(AppEvent::Left("@bob".into()));
    assert_eq!(selected_name(&app), Some("ops"));
    app.handle_event(AppEvent::Created("new".into()));
    assert_eq!(selected_name(&app), Some("new"));
}

#[test]
fn reloaded_history_updates_delivery_states() {
    let mut app = app_with_groups();
    let mut queued = message("team", "alice", "0a", "sent while offline", MessageState::Pending);
    app.handle_event(AppEvent::Sent { local_id: "local-9".into(), message: queued.clone() });
    queued.state = MessageState::Sent;
    app.handle_event(AppEvent::History { group: "team".into(), messages: vec![queued.clone()] });
    assert_eq!(app.conversations[0].entries, [Entry::Message(queued)]);
}

#[test]
fn history_is_not_unread_and_safety_numbers_pop_up() {
    let mut app = app_with_groups();
    let old = message("@bob", "bob", "01", "old", MessageState::Received);
    app.handle_event(AppEvent::History { group: "@bob".into(), messages: vec![old] });
    assert_eq!(app.conversations[1].unread, 0);
    let digits = (0..12).map(|n| format!("{n:05}")).collect::<Vec<_>>().join(" ");
    app.handle_event(AppEvent::SafetyNumber(SafetyNumber { user: "bob".into(), digits, their_key: "ab".into() }));
    let popup = app.popup.clone().expect("the safety number is shown");
    assert_eq!(popup.lines[0], "00000 00001 00002 00003");
    assert_eq!(popup.lines.len(), 5);
    // While the popup is open, typing does not reach the input line.
    type_text(&mut app, "x");
    assert!(app.input.text().is_empty());
    press(&mut app, KeyCode::Enter);
    assert!(app.popup.is_none());
}

#[test]
fn scrolling_and_quitting() {
    let mut app = app_with_groups();
    app.set_page(5);
    let many: Vec<StoredMessage> =
        (0..20).map(|n| message("team", "bob", &n.to_string(), "x", MessageState::Received)).collect();
    app.handle_event(AppEvent::Messages(many));
    press(&mut app, KeyCode::PageUp);
    assert_eq!(app.scroll, 5);
    for _ in 0..10 {
        press(&mut app, KeyCode::PageUp);
    }
    assert_eq!(app.scroll, 19, "stops at the oldest line");
    press(&mut app, KeyCode::PageDown);
    assert_eq!(app.scroll, 14);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.scroll, 0, "switching goes back to the newest");
    app.handle_event(AppEvent::Connection(ConnectionStatus::Error("connection lost".into())));
    assert_eq!(app.connection.label(), "error: connection lost");
    assert_eq!(ctrl(&mut app, 'c'), [Command::Quit]);
    assert!(app.quit);
}
