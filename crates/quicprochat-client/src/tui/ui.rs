//! Drawing `qpc tui`: a pure function of [`App`] into a ratatui [`Frame`].
//!
//! Layout: the conversation list on the left (hidden on narrow terminals),
//! the selected conversation's messages on the right, the input line below
//! and a one-line status bar at the bottom; popups (help, safety numbers)
//! are drawn over everything.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::{App, Conversation, Entry, Popup};
use super::events::ConnectionStatus;
use super::wrap::Wrapper;
use crate::output::clock;
use quicprochat_sdk::{MessageState, StoredMessage};

/// Width of the conversation list.
const LIST_WIDTH: u16 = 22;
/// Below this terminal width the conversation list is hidden.
const MIN_WIDTH_FOR_LIST: u16 = 60;
/// Width of `12:03:04 `.
const TIME_WIDTH: usize = 9;
/// Sender colours, picked by a hash of the name (as gomuks does).
const SENDER_COLOURS: [Color; 6] = [Color::Cyan, Color::Green, Color::Yellow, Color::Magenta, Color::Blue, Color::Red];

/// Draws the whole screen.
pub(crate) fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [main, input, status] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(3), Constraint::Length(1)]).areas(area);
    if area.width >= MIN_WIDTH_FOR_LIST {
        let [list, messages] = Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(1)]).areas(main);
        render_list(app, frame, list);
        render_messages(app, frame, messages, true);
    } else {
        render_messages(app, frame, main, false);
    }
    render_input(app, frame, input);
    render_status(app, frame, status);
    if let Some(popup) = &app.popup {
        render_popup(popup, frame, area);
    }
}

/// Height of the message pane for a terminal of `height` rows (the PageUp step).
pub(crate) fn message_rows(height: u16) -> usize {
    usize::from(height.saturating_sub(6))
}

fn render_list(app: &App, frame: &mut Frame, area: Rect) {
    let inner_width = usize::from(area.width.saturating_sub(2));
    let items: Vec<ListItem> = app
        .conversations
        .iter()
        .enumerate()
        .map(|(index, conversation)| list_line(conversation, app.selected == Some(index), inner_width))
        .map(ListItem::new)
        .collect();
    let mut state = ListState::default().with_selected(app.selected);
    let list = List::new(items)
        .block(Block::bordered().title(" Conversations "))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD));
    frame.render_stateful_widget(list, area, &mut state);
}

fn list_line(conversation: &Conversation, selected: bool, width: usize) -> Line<'static> {
    let marker = if selected { "> " } else { "  " };
    let unread = if conversation.unread > 0 { format!(" {}", conversation.unread) } else { String::new() };
    let name_width = width.saturating_sub(marker.len() + unread.len());
    let name = truncate(&conversation.name, name_width);
    let padding = " ".repeat(name_width.saturating_sub(name.width()));
    let name_style = if conversation.unread > 0 { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
    Line::from(vec![
        Span::raw(marker),
        Span::styled(name, name_style),
        Span::raw(padding),
        Span::styled(unread, Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
    ])
}

fn render_messages(app: &App, frame: &mut Frame, area: Rect, list_shown: bool) {
    let conversation = app.selected_conversation();
    let block = Block::bordered();
    let inner = block.inner(area);
    let width = usize::from(inner.width);
    let lines: Vec<Line<'static>> = match conversation {
        Some(conversation) => conversation.entries.iter().flat_map(|entry| entry_lines(app, entry, width)).collect(),
        None => start_screen(app, width),
    };
    let height = usize::from(inner.height);
    let scroll = app.scroll.min(lines.len().saturating_sub(height));
    // Title, most important first (it is cut on narrow panes): name, scroll
    // position, unread elsewhere when the list is hidden, members.
    let mut title = format!(" {} ", conversation.map_or("qpc", |conversation| conversation.name.as_str()));
    if scroll > 0 {
        title.push_str(&format!("[+{scroll}] "));
    }
    let unread: usize = app.conversations.iter().map(|conversation| conversation.unread).sum();
    if !list_shown && unread > 0 {
        title.push_str(&format!("[{unread} unread] "));
    }
    if let Some(conversation) = conversation.filter(|conversation| !conversation.members.is_empty()) {
        title.push_str(&format!("· {} ", conversation.members.join(", ")));
    }
    let start = lines.len().saturating_sub(height + scroll);
    let visible: Vec<Line<'static>> = lines.into_iter().skip(start).take(height).collect();
    frame.render_widget(Paragraph::new(visible).block(block.title(truncate(&title, width))), area);
}

fn start_screen(app: &App, width: usize) -> Vec<Line<'static>> {
    let mut wrapper = Wrapper::new(width, 0);
    wrapper.push("No conversations yet. /create NAME starts a group, /dm USER a direct chat; /help lists keys.", dim());
    let mut lines = wrapper.finish();
    for text in &app.system {
        lines.extend(system_lines(text, width));
    }
    lines
}

fn entry_lines(app: &App, entry: &Entry, width: usize) -> Vec<Line<'static>> {
    match entry {
        Entry::System(text) => system_lines(text, width),
        Entry::Message(message) => message_lines(app, message, width),
    }
}

fn system_lines(text: &str, width: usize) -> Vec<Line<'static>> {
    let mut wrapper = Wrapper::new(width, TIME_WIDTH + 3);
    wrapper.push(&format!("{:TIME_WIDTH$}-- ", ""), dim());
    wrapper.push(text, dim());
    wrapper.finish()
}

fn message_lines(app: &App, message: &StoredMessage, width: usize) -> Vec<Line<'static>> {
    let mine = message.from == app.username;
    let mut wrapper = Wrapper::new(width, TIME_WIDTH);
    wrapper.push(&format!("{} ", clock(message.sent_at_ms)), dim());
    let sender_style = if mine { Style::new().add_modifier(Modifier::BOLD) } else { sender_style(&message.from) };
    wrapper.push(&format!("{}: ", message.from), sender_style);
    wrapper.push(&message.text, Style::new());
    if mine {
        let (label, colour) = match message.state {
            MessageState::Pending => (" (pending)", Color::Yellow),
            MessageState::Failed => (" (failed)", Color::Red),
            MessageState::Sent | MessageState::Received => (" ✓", Color::Green),
        };
        wrapper.push(label, Style::new().fg(colour));
    }
    wrapper.finish()
}

fn render_input(app: &App, frame: &mut Frame, area: Rect) {
    let title = match app.selected_conversation() {
        Some(conversation) => format!(" to {} ", conversation.name),
        None => " command ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let chars: Vec<char> = app.input.text().chars().collect();
    let cursor = app.input.cursor().min(chars.len());
    let width = usize::from(inner.width).max(1);
    // Scroll horizontally so the cursor stays visible.
    let mut start = 0;
    while start < cursor && chars[start..cursor].iter().map(|c| c.width().unwrap_or(0)).sum::<usize>() >= width {
        start += 1;
    }
    let visible: String = chars[start..].iter().collect();
    frame.render_widget(Paragraph::new(visible).block(block), area);
    if app.popup.is_none() && inner.width > 0 && inner.height > 0 {
        let offset: usize = chars[start..cursor].iter().map(|c| c.width().unwrap_or(0)).sum();
        let x = inner.x.saturating_add(u16::try_from(offset).unwrap_or(u16::MAX));
        frame.set_cursor_position(Position::new(x.min(inner.right().saturating_sub(1)), inner.y));
    }
}

fn render_status(app: &App, frame: &mut Frame, area: Rect) {
    let colour = match app.connection {
        ConnectionStatus::Connected => Color::Green,
        ConnectionStatus::Connecting | ConnectionStatus::Reconnecting { .. } => Color::Yellow,
        ConnectionStatus::Offline | ConnectionStatus::Error(_) => Color::Red,
    };
    let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
    let left = format!(" {} │ {} │ {}", app.connection.label(), app.server, app.username);
    let hint = "Tab switch · /help · Ctrl-C quit ";
    let width = usize::from(area.width);
    let mut spans = vec![Span::styled(" ●", bar.fg(colour)), Span::styled(left.clone(), bar)];
    let used = 2 + left.width();
    if used + hint.width() < width {
        spans.push(Span::styled(" ".repeat(width - used - hint.width()), bar));
        spans.push(Span::styled(hint, bar));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

fn render_popup(popup: &Popup, frame: &mut Frame, area: Rect) {
    let content_width = popup.lines.iter().map(|line| line.width()).chain([popup.title.width() + 2]).max();
    let width = u16::try_from(content_width.unwrap_or(0) + 4).unwrap_or(u16::MAX).min(area.width);
    let height = u16::try_from(popup.lines.len() + 2).unwrap_or(u16::MAX).min(area.height);
    let rect = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    let lines: Vec<Line> = popup.lines.iter().map(|line| Line::raw(format!(" {line}"))).collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(format!(" {} ", popup.title))), rect);
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn sender_style(name: &str) -> Style {
    let hash = name.bytes().fold(0usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(usize::from(byte)));
    Style::new().fg(SENDER_COLOURS[hash % SENDER_COLOURS.len()])
}

/// `text` cut to at most `width` columns, with `…` when cut.
fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in text.chars() {
        let char_width = c.width().unwrap_or(0);
        if used + char_width + 1 > width {
            break;
        }
        cut.push(c);
        used += char_width;
    }
    if width > 0 {
        cut.push('…');
    }
    cut
}
