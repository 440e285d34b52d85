//! Drives the built `qpc` and `qpc-server` binaries as a user would.

mod cli;
mod crash;
mod devices;
mod federation;
mod process;
mod shared_profile;
mod tui;
