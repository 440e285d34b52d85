//! `qpc tui`: a full-screen terminal chat client (ratatui + crossterm).
//!
//! Data flow: the UI loop below owns the terminal and an [`App`]; key
//! presses go through [`App::handle_key`], whose [`events::Command`]s are queued
//! to the network tasks (`network.rs`) without waiting; their results come
//! back over a channel as [`events::AppEvent`]s into [`App::handle_event`]. The
//! screen is redrawn from the state after every input or event (and on
//! resize), so the UI never blocks on the network.
//!
//! The terminal is restored on every way out: normal quit, error (the guard's
//! `Drop`), and panic (a panic hook that leaves raw mode and the alternate
//! screen before the panic message is printed).
//!
//! Connection state: "connected" once opening the profile succeeded, then
//! whatever the SDK supervisor's status stream says (`QpcClient::status`),
//! and "error: …" when a call fails for a connection reason;
//! [`App::set_connection`] is the single place it changes.

mod app;
mod commands;
mod events;
mod input;
mod network;
mod ui;
mod wrap;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod snapshots;

use std::io::{stdout, Stdout};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event, EventStream};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures_util::StreamExt;
use quicprochat_sdk::{ClientOptions, QpcClient};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use app::App;
use events::{AppEvent, Command, ConnectionStatus};
use network::{Crash, Network};

/// Whether the TUI owns the terminal (log lines would garble it then).
static TUI_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Where `tracing` writes: stderr, except while the TUI owns the terminal
/// (failures reach the user as system lines then).
pub(crate) fn log_writer() -> Box<dyn std::io::Write> {
    if TUI_ACTIVE.load(Ordering::Relaxed) {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stderr())
    }
}

/// Bound on closing the connection when leaving.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the profile, then runs the TUI until the user quits.
pub(crate) async fn run(profile: &Path) -> anyhow::Result<()> {
    // Opened before the screen switches, so a failure prints like any command's.
    let client = QpcClient::open(profile, ClientOptions::default())
        .await
        .with_context(|| format!("cannot open profile {}", profile.display()))?;
    let client = Arc::new(client);
    let result = run_with_client(Arc::clone(&client)).await;
    let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect()).await;
    result
}

async fn run_with_client(client: Arc<QpcClient>) -> anyhow::Result<()> {
    let (events_tx, mut events) = unbounded_channel();
    let (crashes_tx, mut crashes) = unbounded_channel();
    let mut app = App::new(client.username(), &client.server().to_string());
    app.set_connection(ConnectionStatus::Connected);
    let mut terminal = TerminalGuard::enter().context("cannot set up the terminal")?;
    let network = Network::spawn(client, events_tx, crashes_tx);
    let result = event_loop(&mut terminal.terminal, &mut app, &network, &mut events, &mut crashes).await;
    drop(terminal);
    network.shutdown().await;
    result
}

async fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    network: &Network,
    events: &mut UnboundedReceiver<AppEvent>,
    crashes: &mut UnboundedReceiver<Crash>,
) -> anyhow::Result<()> {
    let mut input = EventStream::new();
    app.set_page(ui::message_rows(terminal.size()?.height));
    loop {
        terminal.draw(|frame| ui::render(app, frame))?;
        tokio::select! {
            input_event = input.next() => match input_event {
                Some(Ok(Event::Key(key))) => {
                    app.set_now(now_ms());
                    for command in app.handle_key(key) {
                        if command != Command::Quit {
                            network.run(command);
                        }
                    }
                    if app.quit {
                        return Ok(());
                    }
                }
                Some(Ok(Event::Paste(text))) => app.input.insert_str(&text),
                // The next draw resizes the buffers; the page step follows the new height.
                Some(Ok(Event::Resize(_, height))) => app.set_page(ui::message_rows(height)),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error).context("cannot read the terminal"),
                None => return Ok(()),
            },
            Some(event) = events.recv() => {
                app.handle_event(event);
                // Apply everything queued before drawing again.
                while let Ok(event) = events.try_recv() {
                    app.handle_event(event);
                }
            }
            Some(crash) = crashes.recv() => bail!("{crash}"),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(0))
}

/// Raw mode + alternate screen for as long as it lives.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> anyhow::Result<TerminalGuard> {
        install_panic_hook();
        enable_raw_mode()?;
        TUI_ACTIVE.store(true, Ordering::Relaxed);
        let guard = || -> anyhow::Result<TerminalGuard> {
            // `Clear` rather than `Terminal::clear`, which asks the terminal for the cursor position.
            crossterm::execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste, Clear(ClearType::All))?;
            let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
            Ok(TerminalGuard { terminal })
        };
        guard().inspect_err(|_| restore_terminal())
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; safe to call twice.
fn restore_terminal() {
    TUI_ACTIVE.store(false, Ordering::Relaxed);
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Restores the terminal before the default hook prints the panic, so the
/// message is readable and the shell is usable afterwards.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}
