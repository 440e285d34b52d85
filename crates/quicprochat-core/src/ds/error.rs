//! The error type of the Delivery Service's group view and message checks.
//!
//! Most variants mean the peer (a client) sent bad data and the request should be
//! rejected; `StaleEpoch` means another commit won the epoch (the server answers
//! `STALE_EPOCH`); `CorruptState` and `Internal` are server-side failures.

/// Errors from [`DsGroupView`](super::DsGroupView) and the free checks in [`crate::ds`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsError {
    /// Bytes are not the expected MLS structure (bad TLS encoding or wrong message type); peer error.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was expected.
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// A handshake message was not a PublicMessage, or an application message not a PrivateMessage; peer error.
    #[error("expected a {expected}, got {found}")]
    WrongWireFormat {
        /// The wire format required.
        expected: &'static str,
        /// The wire format found.
        found: String,
    },
    /// The message has another content type than the call expects (e.g. a proposal sent as a commit); peer error.
    #[error("expected a {expected}, got {found}")]
    WrongContentType {
        /// The content type required.
        expected: &'static str,
        /// The content type found.
        found: String,
    },
    /// The message names another group than this view; peer or routing error.
    #[error("message is for group {found}, this view is group {expected}")]
    WrongGroup {
        /// Hex id of this view's group.
        expected: String,
        /// Hex id in the message.
        found: String,
    },
    /// The message is for an older epoch: another commit won it. The client should catch up and retry.
    #[error("message is for epoch {message_epoch}, group is at epoch {current_epoch}")]
    StaleEpoch {
        /// The message's epoch.
        message_epoch: u64,
        /// The view's epoch.
        current_epoch: u64,
    },
    /// The message is for an epoch the group has not reached; peer error.
    #[error("message is for future epoch {message_epoch}, group is at epoch {current_epoch}")]
    FutureEpoch {
        /// The message's epoch.
        message_epoch: u64,
        /// The view's epoch.
        current_epoch: u64,
    },
    /// Something a member sent is larger than the DS lets it hold; peer error.
    #[error("the {what} is {len} bytes; at most {max} are allowed")]
    Oversized {
        /// What is too large.
        what: String,
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The message failed MLS validation (signature, sender, proposal or commit rules); peer error.
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What OpenMLS reported.
        reason: String,
    },
    /// The GroupInfo or ratchet tree does not verify or is inconsistent; peer error.
    #[error("invalid group info: {reason}")]
    InvalidGroupInfo {
        /// What OpenMLS reported.
        reason: String,
    },
    /// The ciphersuite is not one quicprochat accepts; peer error.
    #[error("ciphersuite 0x{ciphersuite:04x} is not allowed")]
    CiphersuiteNotAllowed {
        /// The ciphersuite code point.
        ciphersuite: u16,
    },
    /// A credential is not a BasicCredential with a UTF-8 username, or a member changed its
    /// credential or identity key; peer error.
    #[error("invalid credential: {reason}")]
    InvalidCredential {
        /// What is wrong with it.
        reason: String,
    },
    /// A KeyPackage does not validate (signature, lifetime, keys); peer error.
    #[error("invalid key package: {reason}")]
    InvalidKeyPackage {
        /// What OpenMLS reported.
        reason: String,
    },
    /// Serialised view bytes are too large to load.
    #[error("serialised view is {len} bytes, limit {max}")]
    TooLarge {
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Serialised view bytes are corrupt or truncated; server-side, not retryable.
    #[error("corrupt group view state: {reason}")]
    CorruptState {
        /// What is wrong.
        reason: String,
    },
    /// OpenMLS or the in-memory store failed unexpectedly: a bug, not retryable.
    #[error("internal DS failure: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl DsError {
    /// True when the request should be rejected as bad client data (not a server failure
    /// and not a lost race).
    pub fn is_peer_error(&self) -> bool {
        !matches!(
            self,
            DsError::StaleEpoch { .. }
                | DsError::TooLarge { .. }
                | DsError::CorruptState { .. }
                | DsError::Internal { .. }
        )
    }

    pub(crate) fn malformed(what: &'static str, err: impl std::fmt::Display) -> DsError {
        DsError::Malformed { what, reason: err.to_string() }
    }

    pub(crate) fn internal(err: impl std::fmt::Display) -> DsError {
        DsError::Internal { reason: err.to_string() }
    }
}
