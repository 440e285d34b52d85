//! [`DomainError`]: why a request was refused, one variant per RPC status
//! code, each with a message meant for the client.

use quicprochat_core::ds::DsError;
use quicprochat_proto::Status;

use crate::storage::StoreError;

/// A refused request. Each variant is one wire status code; the transport maps
/// [`DomainError::status_name`] onto the Protobuf `StatusCode` and sends
/// [`DomainError::client_message`] as the human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The request is malformed or breaks a rule (bad username, invalid MLS
    /// message, wrong group id). Not retryable as is.
    #[error("{message}")]
    InvalidArgument { message: String },

    /// The caller could not prove who it is (unknown user or bad signature,
    /// deliberately indistinguishable). Not retryable as is.
    #[error("{message}")]
    Unauthenticated { message: String },

    /// The caller is known but may not do this (not a member, disabled
    /// account, key package of another user). Not retryable.
    #[error("{message}")]
    PermissionDenied { message: String },

    /// The named user, group or key package does not exist.
    #[error("{message}")]
    NotFound { message: String },

    /// The username or group id is taken.
    #[error("{message}")]
    AlreadyExists { message: String },

    /// A quota or limit was hit; retryable after `retry_after_ms` (0: only
    /// after the caller changed something, e.g. consumed stock).
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after_ms: u64 },

    /// Another commit won the epoch (or the request names an epoch the group
    /// is not at). Retryable after catching up to `current_epoch`.
    #[error("group is at epoch {current_epoch}")]
    StaleEpoch { current_epoch: u64 },

    /// The server could not serve the request now (storage busy, lost a race
    /// too often). Retryable after `retry_after_ms`.
    #[error("{message}")]
    Unavailable { message: String, retry_after_ms: u64 },

    /// A server-side failure (storage I/O, corrupt state, a bug). `detail` is
    /// for logs, not for the client.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl DomainError {
    /// The wire status code name (`qpc.v1.StatusCode`).
    pub fn status_name(&self) -> &'static str {
        self.status().name()
    }

    /// The wire status code this refusal is answered with.
    pub fn status(&self) -> Status {
        match self {
            DomainError::InvalidArgument { .. } => Status::InvalidArgument,
            DomainError::Unauthenticated { .. } => Status::Unauthenticated,
            DomainError::PermissionDenied { .. } => Status::PermissionDenied,
            DomainError::NotFound { .. } => Status::NotFound,
            DomainError::AlreadyExists { .. } => Status::AlreadyExists,
            DomainError::ResourceExhausted { .. } => Status::ResourceExhausted,
            DomainError::StaleEpoch { .. } => Status::StaleEpoch,
            DomainError::Unavailable { .. } => Status::Unavailable,
            DomainError::Internal { .. } => Status::Internal,
        }
    }

    /// The message to send to the client: the display text, except for
    /// `Internal`, whose detail stays in the server logs.
    pub fn client_message(&self) -> String {
        match self {
            DomainError::Internal { .. } => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }

    /// `retry_after_ms` hint for the wire `ErrorBody` (0 when none).
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            DomainError::ResourceExhausted { retry_after_ms, .. } | DomainError::Unavailable { retry_after_ms, .. } => {
                *retry_after_ms
            }
            _ => 0,
        }
    }

    /// `current_epoch` for the wire `ErrorBody` (0 unless `StaleEpoch`).
    pub fn current_epoch(&self) -> u64 {
        match self {
            DomainError::StaleEpoch { current_epoch } => *current_epoch,
            _ => 0,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        DomainError::InvalidArgument { message: message.into() }
    }

    pub(crate) fn denied(message: impl Into<String>) -> Self {
        DomainError::PermissionDenied { message: message.into() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        DomainError::NotFound { message: message.into() }
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        DomainError::Internal { detail: detail.into() }
    }

    /// The error a peer server answered with, passed on as the same status
    /// (an `INTERNAL` of the peer is its fault, not ours: `UNAVAILABLE`).
    pub fn from_status(
        status: quicprochat_proto::Status,
        message: String,
        retry_after_ms: u64,
        current_epoch: u64,
    ) -> Self {
        use quicprochat_proto::Status;
        match status {
            Status::InvalidArgument => DomainError::InvalidArgument { message },
            Status::Unauthenticated => DomainError::Unauthenticated { message },
            Status::PermissionDenied => DomainError::PermissionDenied { message },
            Status::NotFound => DomainError::NotFound { message },
            Status::AlreadyExists => DomainError::AlreadyExists { message },
            Status::ResourceExhausted => DomainError::ResourceExhausted { message, retry_after_ms },
            Status::StaleEpoch => DomainError::StaleEpoch { current_epoch },
            _ => DomainError::Unavailable { message, retry_after_ms: retry_after_ms.max(1000) },
        }
    }

    /// Maps an MLS check failure on client data: peer errors become
    /// `InvalidArgument` prefixed with `what`, a lost epoch race `StaleEpoch`,
    /// anything else `Internal`.
    pub(crate) fn from_ds(what: &str, error: DsError) -> Self {
        match error {
            DsError::StaleEpoch { current_epoch, .. } => DomainError::StaleEpoch { current_epoch },
            error if error.is_peer_error() => DomainError::invalid(format!("{what}: {error}")),
            error => DomainError::internal(format!("{what}: {error}")),
        }
    }
}

/// How long a client should wait before retrying after a busy store.
const BUSY_RETRY_AFTER_MS: u64 = 100;
/// How long a client should wait before retrying while the disk is full:
/// long enough not to hammer a server whose operator has to act.
const NO_SPACE_RETRY_AFTER_MS: u64 = 5_000;

impl From<StoreError> for DomainError {
    fn from(error: StoreError) -> Self {
        if let StoreError::NoSpace { operation, detail } = &error {
            tracing::error!(operation, detail, "storage refuses writes (disk full or read-only); nothing was stored");
            return DomainError::Unavailable {
                message: "the server's storage is full or read-only; nothing was stored, retry later".to_owned(),
                retry_after_ms: NO_SPACE_RETRY_AFTER_MS,
            };
        }
        if error.is_retryable() {
            DomainError::Unavailable {
                message: "the server is busy, retry shortly".to_owned(),
                retry_after_ms: BUSY_RETRY_AFTER_MS,
            }
        } else {
            DomainError::internal(error.to_string())
        }
    }
}
