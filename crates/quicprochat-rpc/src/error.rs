//! Errors of the RPC layer.

use quicprochat_proto::{FrameError, Method, Status};

/// Why an RPC (or the connection under it) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The server answered with a non-OK status. Retryable when `status.is_retryable()`.
    #[error("{method}: {status}: {message}")]
    Status {
        /// The method called.
        method: Method,
        /// The status code.
        status: Status,
        /// The server's explanation.
        message: String,
        /// Server hint: wait this long before retrying (0 = no hint).
        retry_after_ms: u64,
        /// For `STALE_EPOCH`: the group's current epoch.
        current_epoch: u64,
    },
    /// The peer sent a frame that breaks the protocol. Not retryable.
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    /// A body did not decode as the expected Protobuf message. Not retryable.
    #[error("malformed {what} body: {source}")]
    Decode {
        /// Which message failed to decode.
        what: &'static str,
        /// The decoder's reason.
        source: prost::DecodeError,
    },
    /// The peer answered with a frame of the wrong method or kind.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    /// The connection failed or was closed. Retryable after reconnecting.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Connecting failed before the handshake started.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// Writing to a stream failed. Retryable after reconnecting.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed. Retryable after reconnecting.
    #[error("stream read failed: {0}")]
    Read(String),
    /// The stream was closed before a whole frame arrived.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The call did not complete within its deadline. Retryable.
    #[error("{method}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The method called.
        method: Method,
        /// The deadline.
        timeout_ms: u64,
    },
    /// TLS configuration or certificate problem (includes a changed pinned certificate).
    #[error("TLS: {0}")]
    Tls(String),
    /// Local IO (certificate files, sockets).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl RpcError {
    /// The server status, if the server answered.
    pub fn status(&self) -> Option<Status> {
        match self {
            RpcError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying (possibly on a new connection) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Status { status, .. } => status.is_retryable(),
            RpcError::Connection(_)
            | RpcError::Write(_)
            | RpcError::Read(_)
            | RpcError::Truncated
            | RpcError::Timeout { .. } => true,
            _ => false,
        }
    }
}
