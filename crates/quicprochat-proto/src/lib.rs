//! The quicprochat wire: the Protobuf schema (`v1`), the frame codec and the
//! RPC methods and status codes.
//!
//! This crate does no IO and reads no clock. Every decoder here is total:
//! it returns an error (or "need more bytes") on any input and checks size
//! limits before allocating.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod frame;
pub mod method;
pub mod shape;
pub mod status;

/// Generated Protobuf messages of `proto/qpc.proto`.
#[allow(unreachable_pub, missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/qpc.v1.rs"));
}

pub use frame::{Frame, FrameError, FrameHeader, FrameKind, HEADER_LEN};
pub use method::{Method, MAX_SEND_MESSAGES};
pub use status::Status;

/// ALPN protocol identifier negotiated by client and server.
pub const ALPN: &[u8] = b"qpc/1";

/// ALPN protocol identifier of the federation port (server to server).
pub const FED_ALPN: &[u8] = b"qpc-fed/1";

/// Decodes a Protobuf message from untrusted bytes. The frame layer has
/// already bounded `bytes.len()`; prost itself never panics on bad input.
pub fn decode_message<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}
