//! RPC over QUIC streams for quicprochat.
//!
//! Owns the TLS setup (one rustls provider, aws-lc-rs, with the hybrid
//! `X25519MLKEM768` key exchange required on every connection), the server's
//! self-signed certificate, the client's certificate pinning, and moving
//! [`quicprochat_proto::Frame`]s over quinn streams: one bidirectional stream
//! per RPC, one server-opened unidirectional stream for pushes. The
//! federation port (`federation`) uses the same frames over connections
//! authenticated both ways by pinned certificates.
//!
//! It has no business logic: it never looks inside a request body.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod error;
pub mod federation;
pub mod stream;
pub mod tls;
pub mod transport;

pub use client::{PushStream, RpcClient};
pub use error::RpcError;
pub use tls::{CertFingerprint, PinnedServer};

/// Label of the TLS exporter that binds a login proof to one connection.
pub const AUTH_EXPORTER_LABEL: &[u8] = b"EXPORTER-qpc-auth-v1";

/// Application close code: normal close by the client.
pub const CLOSE_CLIENT_DONE: u32 = 0;
/// Application close code: the server is shutting down.
pub const CLOSE_SERVER_SHUTDOWN: u32 = 1;
/// Application close code: the peer broke the protocol.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 2;

/// Derives the 32-byte keying material of a connection used in login proofs.
pub fn auth_exporter(connection: &quinn::Connection) -> Result<[u8; 32], RpcError> {
    let mut out = [0u8; 32];
    connection
        .export_keying_material(&mut out, AUTH_EXPORTER_LABEL, b"")
        .map_err(|_| RpcError::Tls("TLS exporter unavailable on this connection".into()))?;
    Ok(out)
}

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent).
/// Binaries call this at start so no other provider can be picked by accident.
pub fn install_crypto_provider() {
    let _ = tls::crypto_provider().install_default();
}
