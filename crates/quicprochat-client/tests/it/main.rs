//! Drives the built `qpc` and `qpc-server` binaries as a user would.

mod cli;
mod crash;
mod devices;
mod federation;
mod process;
mod tui;
