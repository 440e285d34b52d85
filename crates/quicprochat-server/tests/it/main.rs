//! Integration tests of `qpc-server` over real QUIC on `127.0.0.1:0`:
//! sessions and login binding, the hostile-input catalogue, limits, shutdown,
//! federation between servers.

mod auth;
mod catalogue;
mod config_cli;
mod crash;
mod devices;
mod disk;
mod drain;
mod federation;
mod group_log;
mod harness;
mod limits;
mod operations;
mod plugins;
mod process;
mod push;
mod retention;
mod send_messages;
mod shutdown;
