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
pub mod plugins;
pub mod rate_limit;
pub mod server;
pub mod storage;
mod transport;

pub use config::ServerConfig;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use crate::domain::federation::apply::{apply_batch, InboundBatch};
    use crate::domain::DomainError;
    use crate::storage::Store;

    /// Decodes a `FedPush` body as the federation port does, and applies
    /// it as a batch of `peer`'s stream; returns the answer's `applied_through`.
    pub fn fed_push(store: &dyn Store, peer: &str, body: &[u8], now_ms: u64) -> Result<u64, DomainError> {
        let push = crate::transport::federation::wire::decode_push(body)?;
        let batch = InboundBatch {
            peer,
            instance: push.instance,
            first_available_seq: push.first_available_seq,
            entries: &push.entries,
        };
        Ok(apply_batch(store, &batch, now_ms)?.applied_through)
    }
}
pub use server::{server_identity, RunningServer, ServerError};
pub use transport::federation::PeerStatus;
