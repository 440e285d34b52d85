//! Snapshot tests of the TUI rendering: known [`App`] states drawn through
//! ratatui's `TestBackend`, compared line by line with the expected screen,
//! plus the styles that carry meaning (selection, delivery state colours).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use quicprochat_sdk::{MessageState, SafetyNumber};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

use super::app::App;
use super::app_tests::{app_with_groups, message, type_text};
use super::events::{AppEvent, ConnectionStatus};
use super::ui::render;

fn draw(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("the test backend never fails");
    terminal.draw(|frame| render(app, frame)).expect("drawing into the test backend never fails");
    terminal.backend().buffer().clone()
}

fn text_lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (area.top()..area.bottom())
        .map(|y| (area.left()..area.right()).map(|x| buffer[(x, y)].symbol()).collect::<String>())
        .collect()
}

/// Compares the screen's text with `expected`, printing both on a mismatch.
fn check(buffer: &Buffer, expected: &[&str]) {
    let actual = text_lines(buffer);
    assert_eq!(actual, expected, "\nactual screen:\n{}\n", actual.join("\n"));
}

/// The position of `needle` on the screen (first match).
fn find(buffer: &Buffer, needle: &str) -> (u16, u16) {
    let lines = text_lines(buffer);
    for (y, line) in lines.iter().enumerate() {
        if let Some(byte) = line.find(needle) {
            let x = line[..byte].chars().count();
            return (u16::try_from(x).expect("fits"), u16::try_from(y).expect("fits"));
        }
    }
    panic!("{needle:?} is not on the screen:\n{}", lines.join("\n"));
}

/// alice in `team` with a received, a sent, a pending and a failed message,
/// an error line, and two unread messages in `@bob`.
fn busy_app() -> App {
    let mut app = app_with_groups();
    app.handle_event(AppEvent::History {
        group: "team".into(),
        messages: vec![
            message("team", "bob", "01", "hi alice, the build is green", MessageState::Received),
            message("team", "alice", "02", "great", MessageState::Sent),
            message("team", "alice", "03", "shipping it", MessageState::Pending),
            message("team", "alice", "04", "did it go out?", MessageState::Failed),
        ],
    });
    app.handle_event(AppEvent::Error("cannot reach the server".into()));
    app.handle_event(AppEvent::Messages(vec![
        message("@bob", "bob", "05", "psst", MessageState::Received),
        message("@bob", "bob", "06", "lunch?", MessageState::Received),
    ]));
    type_text(&mut app, "draft");
    app
}

#[test]
fn empty_start_screen() {
    let mut app = App::new("alice", "127.0.0.1:7000");
    app.handle_event(AppEvent::Error("no such user: zed".into()));
    let buffer = draw(&app, 72, 10);
    check(
        &buffer,
        &[
            "┌ Conversations ─────┐┌ qpc ───────────────────────────────────────────┐",
            "│                    ││No conversations yet. /create NAME starts a     │",
            "│                    ││group, /dm USER a direct chat; /help lists keys.│",
            "│                    ││         -- error: no such user: zed            │",
            "│                    ││                                                │",
            "└────────────────────┘└────────────────────────────────────────────────┘",
            "┌ command ─────────────────────────────────────────────────────────────┐",
            "│                                                                      │",
            "└──────────────────────────────────────────────────────────────────────┘",
            " ● connecting │ 127.0.0.1:7000 │ alice Tab switch · /help · Ctrl-C quit ",
        ],
    );
    assert_eq!(buffer[find(&buffer, "●")].fg, Color::Yellow);
}

#[test]
fn conversation_with_states_and_unread_counts() {
    let app = busy_app();
    let buffer = draw(&app, 72, 12);
    check(
        &buffer,
        &[
            "┌ Conversations ─────┐┌ team · alice, bob ─────────────────────────────┐",
            "│> team              ││12:34:56 bob: hi alice, the build is green      │",
            "│  @bob             2││12:34:56 alice: great ✓                         │",
            "│                    ││12:34:56 alice: shipping it (pending)           │",
            "│                    ││12:34:56 alice: did it go out? (failed)         │",
            "│                    ││         -- error: cannot reach the server      │",
            "│                    ││                                                │",
            "└────────────────────┘└────────────────────────────────────────────────┘",
            "┌ to team ─────────────────────────────────────────────────────────────┐",
            "│draft                                                                 │",
            "└──────────────────────────────────────────────────────────────────────┘",
            " ● connected │ 127.0.0.1:7000 │ alice  Tab switch · /help · Ctrl-C quit ",
        ],
    );
    assert!(buffer[find(&buffer, "> team")].modifier.contains(Modifier::REVERSED), "selection is highlighted");
    assert!(!buffer[find(&buffer, "  @bob")].modifier.contains(Modifier::REVERSED));
    let (x, y) = find(&buffer, "@bob             2");
    assert_eq!(buffer[(x + 17, y)].fg, Color::Yellow, "unread count");
    assert_eq!(buffer[find(&buffer, "(pending)")].fg, Color::Yellow);
    assert_eq!(buffer[find(&buffer, "(failed)")].fg, Color::Red);
    assert_eq!(buffer[find(&buffer, "✓")].fg, Color::Green);
    assert_eq!(buffer[find(&buffer, "●")].fg, Color::Green);
}

#[test]
fn narrow_terminal_hides_the_list_and_wraps() {
    let app = busy_app();
    let buffer = draw(&app, 36, 12);
    check(
        &buffer,
        &[
            "┌ team [2 unread] · alice, bob ────┐",
            "│12:34:56 alice: shipping it       │",
            "│         (pending)                │",
            "│12:34:56 alice: did it go out?    │",
            "│         (failed)                 │",
            "│         -- error: cannot reach   │",
            "│            the server            │",
            "└──────────────────────────────────┘",
            "┌ to team ─────────────────────────┐",
            "│draft                             │",
            "└──────────────────────────────────┘",
            " ● connected │ 127.0.0.1:7000 │ alic",
        ],
    );
}

#[test]
fn scrolled_up_view_shows_older_lines() {
    let mut app = busy_app();
    app.handle_key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    let buffer = draw(&app, 36, 12);
    let lines = text_lines(&buffer);
    assert_eq!(lines[0], "┌ team [+3] [2 unread] · alice, bo…┐");
    assert_eq!(lines[1], "│12:34:56 bob: hi alice, the build │");
    assert_eq!(lines[2], "│         is green                 │");
}

#[test]
fn safety_number_popup_and_error_status() {
    let mut app = busy_app();
    app.set_connection(ConnectionStatus::Error("connection lost".into()));
    let digits = (1..=12).map(|n| format!("{n:05}")).collect::<Vec<_>>().join(" ");
    app.handle_event(AppEvent::SafetyNumber(SafetyNumber { user: "bob".into(), digits, their_key: "ab".into() }));
    let buffer = draw(&app, 72, 12);
    check(
        &buffer,
        &[
            "┌ Conversations ─────┐┌ team · alice, bob ─────────────────────────────┐",
            "│> team              ││12:34:56 bob: hi alice, the build is green      │",
            "│  @bob      ┌ safety number with bob ────────────────────┐            │",
            "│            │ 00001 00002 00003 00004                    │)           │",
            "│            │ 00005 00006 00007 00008                    │ed)         │",
            "│            │ 00009 00010 00011 00012                    │server      │",
            "│            │                                            │            │",
            "└────────────│ Compare these digits with bob out of band. │────────────┘",
            "┌ to team ───└────────────────────────────────────────────┘────────────┐",
            "│draft                                                                 │",
            "└──────────────────────────────────────────────────────────────────────┘",
            " ● error: connection lost │ 127.0.0.1:7000 │ alice                      ",
        ],
    );
    assert_eq!(buffer[find(&buffer, "●")].fg, Color::Red);
}
