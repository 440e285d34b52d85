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

mod acks;
mod bursts;
mod client;
pub mod content;
mod devices;
mod direct;
mod driver;
mod entries;
mod error;
mod fork;
#[doc(hidden)]
pub mod fuzzing;
mod groups;
pub mod local_store;
mod messaging;
pub mod outbox;
mod pins;
pub mod profile;
mod push_stream;
pub mod supervisor;
mod sync;

pub use client::{ClientOptions, GroupSummary, QpcClient, SafetyNumber};
pub use devices::{DeviceSummary, LinkApproved};
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

/// A fresh random group id.
pub(crate) fn random_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

/// A fresh message id: a UUIDv7, whose first 48 bits are the time in
/// milliseconds and the rest a counter and random bits. The server keeps
/// every sender's ids in an index ordered by id (its idempotency records),
/// so ids that grow with time are added at that index's end; random ones
/// would each dirty a page of their own (in `qpc-bench` at 15,000 msgs/s,
/// 11.7–12.1 KB written to disk per message against 7.5–9.0 KB). The
/// time it carries is when the message was written: when the server gets
/// it, unless it waited in the outbox while offline.
pub(crate) fn message_id() -> Vec<u8> {
    uuid::Uuid::now_v7().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_grow_with_every_call() {
        let ids: Vec<Vec<u8>> = (0..1000).map(|_| super::message_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 16));
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "successive ids are strictly increasing");
        let millis = u64::from_be_bytes([0, 0, ids[0][0], ids[0][1], ids[0][2], ids[0][3], ids[0][4], ids[0][5]]);
        assert!(millis.abs_diff(super::now_ms()) < 60_000, "the first 48 bits are the time in milliseconds");
    }

    #[test]
    fn advertised_ciphersuite_is_the_one_core_uses() {
        assert_eq!(format!("{:?}", quicprochat_core::DEFAULT_CIPHERSUITE), super::MLS_CIPHERSUITE);
    }
}
