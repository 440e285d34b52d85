//! `qpc-server`: the quicprochat MLS Authentication Service and Delivery
//! Service (RFC 9750) over QUIC.
//!
//! - [`domain`]: the rules (accounts, key packages, groups and commit
//!   ordering, delivery) over the [`storage::Store`] trait and plain types;
//!   it never sees quinn, SQL or frames.
//! - [`storage`]: the `Store` trait, SQLite (default) and in-memory stores.
//! - `transport`: QUIC connections, sessions, RPC dispatch and push.
//! - [`server`]: start-up, the accept loop and shutdown.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod clock;
pub mod config;
pub mod domain;
mod expiry;
pub mod http;
pub mod metrics;
pub mod rate_limit;
pub mod server;
pub mod storage;
mod transport;

pub use config::ServerConfig;
pub use server::{server_identity, RunningServer, ServerError};
pub use transport::federation::PeerStatus;
