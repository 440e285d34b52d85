//! `qpc repl`: an interactive shell. Lines are `qpc` commands without the
//! `qpc` prefix (`send team hello`, `group list`, ...); incoming messages
//! are printed as they arrive.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quicprochat_sdk::{ConnectionStatus, QpcClient};
use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter;
use tokio::sync::mpsc;

use crate::cli::{Cli, Command};
use crate::output::{expired_note, message_line};

/// Runs the REPL until `quit`, end of input or Ctrl-C.
pub(crate) async fn run(client: &QpcClient, json: bool) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let printer = editor.create_external_printer().ok();
    let (lines_tx, mut lines_rx) = mpsc::channel::<String>(1);
    let prompt = format!("{}> ", client.username());
    // rustyline blocks; it gets its own thread and hands lines over.
    std::thread::spawn(move || loop {
        match editor.readline(&prompt) {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                if lines_tx.blocking_send(line).is_err() {
                    return;
                }
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => return,
        }
    });
    println!("connected to {} as {}; type `help` for commands, `quit` to leave", client.server(), client.username());
    let incoming_printer = printer.map(|printer| Arc::new(std::sync::Mutex::new(printer)));
    let mut status = client.status();
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    continue;
                }
                let line = format!("-- connection: {}", describe(&status.borrow_and_update()));
                print_above(&incoming_printer, line);
            }
            line = lines_rx.recv() => {
                let Some(line) = line else { return Ok(()) };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.first().copied() {
                    None => continue,
                    Some("quit" | "exit") => return Ok(()),
                    Some("help") => {
                        println!("commands: group create|add|remove|leave|list|members, send TARGET TEXT, recv, history TARGET, verify USER, whoami, quit");
                        continue;
                    }
                    Some(_) => {}
                }
                let args = std::iter::once("qpc").chain(words.iter().copied());
                match Cli::try_parse_from(args) {
                    Ok(cli) if matches!(cli.command, Command::Repl | Command::Demo | Command::Register { .. }) => {
                        eprintln!("not available inside the REPL");
                    }
                    Ok(cli) => {
                        if let Err(error) = crate::commands::run_with_client(client, cli.command, json).await {
                            eprintln!("error: {error:#}");
                        }
                    }
                    Err(error) => eprintln!("{error}"),
                }
            }
            messages = client.receive_wait(Duration::from_secs(1)) => match messages {
                Ok(messages) => {
                    for message in messages {
                        print_above(&incoming_printer, message_line(&message));
                    }
                    match client.take_expired_count().await {
                        Ok(0) => {}
                        Ok(expired) => print_above(&incoming_printer, expired_note(expired)),
                        Err(error) => eprintln!("{error}"),
                    }
                }
                Err(error) => eprintln!("receive failed: {error:#}"),
            },
        }
    }
}

/// Prints a line above the prompt (or plainly when no terminal is attached).
fn print_above(printer: &Option<Arc<std::sync::Mutex<impl ExternalPrinter>>>, line: String) {
    match printer {
        Some(printer) => {
            if let Ok(mut printer) = printer.lock() {
                let _ = printer.print(line);
            }
        }
        None => println!("{line}"),
    }
}

/// A connection status for people.
fn describe(status: &ConnectionStatus) -> String {
    match status {
        ConnectionStatus::Connecting => "connecting".to_owned(),
        ConnectionStatus::Connected => "connected".to_owned(),
        ConnectionStatus::Reconnecting { attempt, next_try } => {
            let wait = next_try.saturating_duration_since(std::time::Instant::now());
            format!("lost; reconnect attempt {attempt} in {:.1} s", wait.as_secs_f64())
        }
        ConnectionStatus::Offline => "offline".to_owned(),
    }
}
