//! `qpc`: the quicprochat command-line client.
//!
//! One-shot commands for scripts (`--json` prints one JSON object per line),
//! an interactive REPL, a full-screen TUI, and `qpc demo`. All work goes through
//! `quicprochat-sdk`; this crate only parses arguments and prints.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;
mod commands;
mod demo;
mod devices;
mod output;
mod repl;
mod tui;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("QPC_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(tui::log_writer)
        .init();
    quicprochat_sdk::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error, json);
            std::process::ExitCode::FAILURE
        }
    }
}
