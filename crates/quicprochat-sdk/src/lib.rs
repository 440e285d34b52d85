//! `quicprochat-sdk`: the client library of quicprochat ([`QpcClient`]).
//!
//! Owns a profile (identity, pinned server, OpenMLS state, local history),
//! the connection and login to the server, MLS groups (create, add, remove,
//! leave, with transparent catch-up and retry when another member committed
//! first), sending and receiving with deduplication, and safety numbers.
//!
//! It does no printing and has no UI; `qpc` and other apps build on it.
//! Every outgoing message is written to the local store (pending) before it
//! is sent, and incoming messages are stored before the server queue is
//! acknowledged, so nothing acknowledged is lost.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod client;
pub mod content;
mod driver;
mod error;
mod groups;
pub mod local_store;
mod messaging;
pub mod outbox;
pub mod profile;
pub mod supervisor;
mod sync;

pub use client::{ClientOptions, GroupSummary, QpcClient, SafetyNumber};
pub use error::SdkError;
pub use local_store::{MessageState, StoredMessage};
pub use quicprochat_proto::Status;
pub use quicprochat_rpc::{install_crypto_provider, CertFingerprint};
pub use supervisor::{ConnectionStatus, SupervisorConfig};

/// The TLS key exchange every connection negotiates (the only one offered).
pub const TLS_KEY_EXCHANGE: &str = quicprochat_rpc::tls::KEY_EXCHANGE_GROUP;
/// The MLS ciphersuite new groups use (code point 0x004F, provisional).
pub const MLS_CIPHERSUITE: &str = "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519";

/// Milliseconds since the Unix epoch by the local clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh random message or group id.
pub(crate) fn random_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn advertised_ciphersuite_is_the_one_core_uses() {
        assert_eq!(format!("{:?}", quicprochat_core::DEFAULT_CIPHERSUITE), super::MLS_CIPHERSUITE);
    }
}
