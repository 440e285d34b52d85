//! The state of `qpc tui` and everything that changes it: key presses
//! ([`App::handle_key`], which returns the network [`Command`]s to run) and
//! results from the network tasks ([`App::handle_event`]).
//!
//! Pure: no terminal, no network, no clock reads (the driver passes the time
//! in with [`App::set_now`]), so every behaviour is unit-tested directly.
//! Drawing is `ui.rs`; running commands is `network.rs`.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use quicprochat_sdk::{GroupSummary, MessageState, StoredMessage};

use super::commands::{self, Slash, Submitted, HELP};
use super::events::{AppEvent, Command, ConnectionStatus};
use super::input::InputLine;

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Message(StoredMessage),
    System(String),
}

/// A conversation in the left pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conversation {
    /// Display name: a group name or `@user`.
    pub(crate) name: String,
    pub(crate) members: Vec<String>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) unread: usize,
    /// False for a direct conversation opened with `/dm` that no message created yet.
    pub(crate) joined: bool,
}

/// A box drawn over the panes (help, safety number); Esc or Enter closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Popup {
    pub(crate) title: String,
    pub(crate) lines: Vec<String>,
}

/// The whole state of the TUI.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) username: String,
    pub(crate) server: String,
    pub(crate) connection: ConnectionStatus,
    pub(crate) conversations: Vec<Conversation>,
    pub(crate) selected: Option<usize>,
    pub(crate) input: InputLine,
    /// Lines scrolled up from the newest message.
    pub(crate) scroll: usize,
    pub(crate) popup: Option<Popup>,
    /// System lines shown while no conversation exists.
    pub(crate) system: Vec<String>,
    pub(crate) quit: bool,
    page: usize,
    now_ms: u64,
    next_local_id: u64,
}

impl App {
    pub(crate) fn new(username: &str, server: &str) -> App {
        App {
            username: username.to_owned(),
            server: server.to_owned(),
            connection: ConnectionStatus::Connecting,
            conversations: Vec::new(),
            selected: None,
            input: InputLine::default(),
            scroll: 0,
            popup: None,
            system: Vec::new(),
            quit: false,
            page: 10,
            now_ms: 0,
            next_local_id: 0,
        }
    }

    /// The wall clock (ms since the Unix epoch) used to stamp pending messages.
    pub(crate) fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Height of the message pane, the PageUp/PageDown step.
    pub(crate) fn set_page(&mut self, lines: usize) {
        self.page = lines.max(1);
    }

    /// The one place the connection state changes.
    pub(crate) fn set_connection(&mut self, status: ConnectionStatus) {
        self.connection = status;
    }

    pub(crate) fn selected_conversation(&self) -> Option<&Conversation> {
        self.selected.and_then(|index| self.conversations.get(index))
    }

    /// Applies a key press; returns the commands to run.
    pub(crate) fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && key.code == KeyCode::Char('c') {
            return self.quit();
        }
        if self.popup.is_some() {
            if matches!(key.code, KeyCode::Esc | KeyCode::Enter) {
                self.popup = None;
            }
            return Vec::new();
        }
        match key.code {
            KeyCode::Enter => return self.submit(),
            KeyCode::Tab => self.select_next(1),
            KeyCode::BackTab => self.select_next(-1),
            KeyCode::Down if alt => self.select_next(1),
            KeyCode::Up if alt => self.select_next(-1),
            KeyCode::Char('n') if ctrl => self.select_next(1),
            KeyCode::Char('p') if ctrl => self.select_next(-1),
            KeyCode::Char('u') if ctrl => self.input.clear(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char(c) if !ctrl && !alt => self.input.insert(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up => self.input.history_previous(),
            KeyCode::Down => self.input.history_next(),
            KeyCode::PageUp => self.scroll_up(),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(self.page),
            KeyCode::Esc => {
                self.input.clear();
                self.scroll = 0;
            }
            _ => {}
        }
        Vec::new()
    }

    /// Applies a result from the network tasks.
    pub(crate) fn handle_event(&mut self, event: AppEvent) {
        match event {
            AppEvent::Connection(status) => self.set_connection(status),
            AppEvent::Groups(groups) => self.merge_groups(groups),
            AppEvent::History { group, messages } => {
                for message in messages {
                    self.insert_message(&group, message, false);
                }
            }
            AppEvent::Messages(messages) => {
                for message in messages {
                    let group = message.group.clone();
                    self.insert_message(&group, message, true);
                }
            }
            AppEvent::Sent { local_id, message } => self.replace_pending(&local_id, message),
            AppEvent::SendFailed { local_id, error } => {
                self.mark_failed(&local_id);
                self.system_line(format!("not sent: {error}"));
            }
            AppEvent::Created(name) => {
                let index = self.conversation_index(&name);
                self.conversations[index].joined = true;
                self.select(index);
                self.system_line(format!("created group {name}; /add USER... invites people"));
            }
            AppEvent::Left(name) => {
                self.conversations.retain(|conversation| conversation.name != name);
                self.clamp_selection();
                self.system_line(format!("left {name}"));
            }
            AppEvent::SafetyNumber(safety) => {
                let mut lines: Vec<String> = safety
                    .digits
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .chunks(4)
                    .map(|groups| groups.join(" "))
                    .collect();
                lines.push(String::new());
                lines.push(format!("Compare these digits with {} out of band.", safety.user));
                self.popup = Some(Popup { title: format!("safety number with {}", safety.user), lines });
            }
            AppEvent::Info(text) => self.system_line(text),
            AppEvent::Error(text) => self.system_line(format!("error: {text}")),
        }
    }

    fn quit(&mut self) -> Vec<Command> {
        self.quit = true;
        vec![Command::Quit]
    }

    fn submit(&mut self) -> Vec<Command> {
        let line = self.input.submit();
        if line.trim().is_empty() {
            return Vec::new();
        }
        match commands::parse(&line) {
            Err(error) => {
                self.system_line(error);
                Vec::new()
            }
            Ok(Submitted::Text(text)) => self.send_text(text),
            Ok(Submitted::Command(slash)) => self.run_slash(slash),
        }
    }

    fn send_text(&mut self, text: String) -> Vec<Command> {
        let Some(index) = self.selected else {
            self.system_line("no conversation selected: /create NAME or /dm USER".to_owned());
            return Vec::new();
        };
        self.next_local_id += 1;
        let local_id = format!("local-{}", self.next_local_id);
        let conversation = &mut self.conversations[index];
        conversation.entries.push(Entry::Message(StoredMessage {
            id: local_id.clone(),
            group: conversation.name.clone(),
            from: self.username.clone(),
            text: text.clone(),
            sent_at_ms: self.now_ms,
            received_at_ms: self.now_ms,
            state: MessageState::Pending,
            // This device's; the SDK's stored message names it once sent.
            device: None,
        }));
        self.scroll = 0;
        vec![Command::Send { target: conversation.name.clone(), text, local_id }]
    }

    fn run_slash(&mut self, slash: Slash) -> Vec<Command> {
        let selected = self.selected_conversation().map(|conversation| conversation.name.clone());
        let group_only = |what: &str| match &selected {
            Some(name) if !name.starts_with('@') => Ok(name.clone()),
            Some(_) => Err(format!("{what} works in groups; a direct conversation has exactly two members")),
            None => Err(format!("{what}: select a group first")),
        };
        let outcome = match slash {
            Slash::Create(name) => Ok(vec![Command::Create(name)]),
            Slash::Add(users) => group_only("/add").map(|group| vec![Command::Add { group, users }]),
            Slash::Remove(users) => group_only("/remove").map(|group| vec![Command::Remove { group, users }]),
            Slash::Leave => match self.selected_conversation() {
                Some(conversation) if conversation.joined => Ok(vec![Command::Leave(conversation.name.clone())]),
                Some(conversation) => {
                    let name = conversation.name.clone();
                    self.handle_event(AppEvent::Left(name));
                    Ok(Vec::new())
                }
                None => Err("/leave: select a conversation first".to_owned()),
            },
            Slash::Dm(user) if user == self.username => Err("that is you; /dm another user".to_owned()),
            Slash::Dm(user) => {
                let name = format!("@{user}");
                let existed = self.conversations.iter().any(|conversation| conversation.name == name);
                let index = self.conversation_index(&name);
                self.select(index);
                if !existed {
                    self.conversations[index].joined = false;
                    self.system_line(format!("direct conversation with {user}: your first message creates it"));
                }
                Ok(Vec::new())
            }
            Slash::Verify(Some(user)) => Ok(vec![Command::Verify(user)]),
            Slash::Verify(None) => match selected.as_deref().and_then(|name| name.strip_prefix('@')) {
                Some(peer) => Ok(vec![Command::Verify(peer.to_owned())]),
                None => Err("usage: /verify USER".to_owned()),
            },
            Slash::Help => {
                let lines = HELP.iter().map(|line| (*line).to_owned()).collect();
                self.popup = Some(Popup { title: "help (Esc closes)".to_owned(), lines });
                Ok(Vec::new())
            }
            Slash::Quit => Ok(self.quit()),
        };
        outcome.unwrap_or_else(|error| {
            self.system_line(error);
            Vec::new()
        })
    }

    fn select(&mut self, index: usize) {
        if let Some(conversation) = self.conversations.get_mut(index) {
            conversation.unread = 0;
            self.selected = Some(index);
            self.scroll = 0;
        }
    }

    fn select_next(&mut self, step: isize) {
        let count = self.conversations.len();
        if count == 0 {
            return;
        }
        let current = self.selected.unwrap_or(0) as isize;
        self.select((current + step).rem_euclid(count as isize) as usize);
    }

    fn clamp_selection(&mut self) {
        let count = self.conversations.len();
        match self.selected {
            _ if count == 0 => self.selected = None,
            Some(index) if index >= count => self.select(count - 1),
            None => self.select(0),
            Some(_) => {}
        }
    }

    fn scroll_up(&mut self) {
        let lines = self.selected_conversation().map_or(0, |conversation| conversation.entries.len());
        self.scroll = (self.scroll + self.page).min(lines.saturating_sub(1));
    }

    /// Index of the conversation `name`, adding it (as joined) when unknown.
    fn conversation_index(&mut self, name: &str) -> usize {
        if let Some(index) = self.conversations.iter().position(|conversation| conversation.name == name) {
            return index;
        }
        self.conversations.push(Conversation {
            name: name.to_owned(),
            members: Vec::new(),
            entries: Vec::new(),
            unread: 0,
            joined: true,
        });
        if self.selected.is_none() {
            self.select(self.conversations.len() - 1);
        }
        self.conversations.len() - 1
    }

    fn merge_groups(&mut self, groups: Vec<GroupSummary>) {
        let selected = self.selected_conversation().map(|conversation| conversation.name.clone());
        // Joined conversations the server no longer lists were left or removed.
        self.conversations
            .retain(|conversation| !conversation.joined || groups.iter().any(|group| group.name == conversation.name));
        for group in groups {
            let index = self.conversation_index(&group.name);
            self.conversations[index].members = group.members;
            self.conversations[index].joined = true;
        }
        self.selected = selected.and_then(|name| self.conversations.iter().position(|c| c.name == name));
        self.clamp_selection();
    }

    /// Adds a message, or updates the delivery state of one already shown.
    fn insert_message(&mut self, group: &str, message: StoredMessage, count_unread: bool) {
        let index = self.conversation_index(group);
        let mine = message.from == self.username;
        let selected = self.selected == Some(index);
        let conversation = &mut self.conversations[index];
        let known = conversation.entries.iter_mut().find_map(|entry| match entry {
            Entry::Message(seen) if seen.id == message.id && seen.from == message.from => Some(seen),
            _ => None,
        });
        if let Some(seen) = known {
            if message.state != MessageState::Received {
                seen.state = message.state;
            }
            return;
        }
        conversation.entries.push(Entry::Message(message));
        if count_unread && !mine && !selected {
            conversation.unread += 1;
        }
    }

    fn pending_mut(&mut self, local_id: &str) -> Option<(usize, usize)> {
        self.conversations.iter().enumerate().find_map(|(index, conversation)| {
            let position = conversation
                .entries
                .iter()
                .position(|entry| matches!(entry, Entry::Message(message) if message.id == local_id))?;
            Some((index, position))
        })
    }

    fn replace_pending(&mut self, local_id: &str, message: StoredMessage) {
        match self.pending_mut(local_id) {
            Some((index, position)) => {
                let conversation = &mut self.conversations[index];
                conversation.joined = true;
                conversation.entries[position] = Entry::Message(message);
            }
            None => {
                let group = message.group.clone();
                self.insert_message(&group, message, false);
            }
        }
    }

    fn mark_failed(&mut self, local_id: &str) {
        if let Some((index, position)) = self.pending_mut(local_id) {
            if let Entry::Message(message) = &mut self.conversations[index].entries[position] {
                message.state = MessageState::Failed;
            }
        }
    }

    /// A line from the system in the selected conversation (or the start screen).
    fn system_line(&mut self, text: String) {
        match self.selected.and_then(|index| self.conversations.get_mut(index)) {
            Some(conversation) => conversation.entries.push(Entry::System(text)),
            None => self.system.push(text),
        }
    }
}
