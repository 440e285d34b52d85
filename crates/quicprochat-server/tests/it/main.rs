//! Integration tests of `qpc-server` over real QUIC on `127.0.0.1:0`:
//! sessions and login binding, hostile frames, shutdown.

mod auth;
mod config_cli;
mod drain;
mod harness;
mod hostile;
mod limits;
mod operations;
mod process;
mod shutdown;
