//! The error type of [`MlsClient`](super::MlsClient) and the mapping from OpenMLS errors.
//!
//! Variants are grouped by cause: the peer sent bad data, the caller misused the
//! API (or the group state forbids the call now), local storage failed, or OpenMLS
//! reported an internal failure.

use openmls::prelude::{GroupId, LibraryError, MlsGroupStateError, ValidationError};

/// Errors from [`MlsClient`](super::MlsClient) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    /// Peer bytes are not the expected MLS structure (bad TLS encoding or wrong message type); not retryable.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was expected (e.g. "MlsMessage", "Welcome").
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// A peer message failed MLS validation (signature, membership tag, decryption, semantic checks); not retryable.
    #[error("invalid message in {operation}: {reason}")]
    InvalidMessage {
        /// The operation that processed it.
        operation: &'static str,
        /// What OpenMLS reported.
        reason: String,
    },
    /// A leaf (or key package) whose credential does not verify, or that a
    /// caller's [`MemberCheck`](super::MemberCheck) refused: a device its
    /// account did not certify (e.g. under another account key than the one
    /// known for that account); not retryable.
    #[error("refused a device of {username}: {reason}")]
    RefusedMember {
        /// The account the leaf claims.
        username: String,
        /// Why it is refused.
        reason: String,
    },
    /// A key package given to `add_members` does not validate or has another ciphersuite; not retryable.
    #[error("key package #{index} rejected: {reason}")]
    InvalidKeyPackage {
        /// Position in the input list.
        index: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// The message belongs to a later epoch than ours: process the missed commits first, then retry.
    #[error("message is for epoch {message_epoch}, group is at epoch {group_epoch}")]
    FutureEpoch {
        /// The message's epoch.
        message_epoch: u64,
        /// Our current epoch.
        group_epoch: u64,
    },
    /// The message names a different group than the one it was processed for (caller or DS routing bug).
    #[error("message is for group {found}, expected {expected}")]
    WrongGroup {
        /// Hex id the caller gave.
        expected: String,
        /// Hex id in the message.
        found: String,
    },
    /// No local state for this group id.
    #[error("unknown group {group_id}")]
    UnknownGroup {
        /// Hex group id.
        group_id: String,
    },
    /// A group with this id already exists locally (and we are still a member).
    #[error("group {group_id} already exists")]
    GroupExists {
        /// Hex group id.
        group_id: String,
    },
    /// A username passed to `remove_members` is not in the group.
    #[error("{username} is not a member of the group")]
    NotAMember {
        /// The username given.
        username: String,
    },
    /// We were removed from this group; it can only be inspected or deleted.
    #[error("no longer a member of group {group_id}")]
    Inactive {
        /// Hex group id.
        group_id: String,
    },
    /// The group's state forbids the call now (a pending commit exists, none exists, or pending
    /// proposals must be committed before sending).
    #[error("{operation} not possible now: {reason}")]
    InvalidState {
        /// The operation attempted.
        operation: &'static str,
        /// Why the state forbids it.
        reason: String,
    },
    /// An argument is unusable (empty list, disallowed ciphersuite, bad group id length).
    #[error("invalid argument to {operation}: {reason}")]
    InvalidArgument {
        /// The operation called.
        operation: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The SQLite state database failed (disk full, locked, corrupt); may be retryable.
    #[error("storage failure during {operation}: {reason}")]
    Storage {
        /// The operation running.
        operation: &'static str,
        /// What SQLite reported.
        reason: String,
    },
    /// OpenMLS reported an internal or crypto failure: a bug, not retryable.
    #[error("internal MLS failure during {operation}: {reason}")]
    Internal {
        /// The operation running.
        operation: &'static str,
        /// What OpenMLS reported.
        reason: String,
    },
}

impl MlsError {
    /// True when the error was caused by bytes a peer sent (as opposed to local misuse or failure).
    pub fn is_peer_error(&self) -> bool {
        matches!(
            self,
            MlsError::Malformed { .. }
                | MlsError::InvalidMessage { .. }
                | MlsError::InvalidKeyPackage { .. }
                | MlsError::WrongGroup { .. }
                | MlsError::RefusedMember { .. }
        )
    }

    pub(crate) fn storage(operation: &'static str, err: impl std::fmt::Display) -> MlsError {
        MlsError::Storage { operation, reason: err.to_string() }
    }

    pub(crate) fn internal(operation: &'static str, err: impl std::fmt::Display) -> MlsError {
        MlsError::Internal { operation, reason: err.to_string() }
    }

    pub(crate) fn library(operation: &'static str, err: &LibraryError) -> MlsError {
        MlsError::internal(operation, err)
    }

    pub(crate) fn invalid_message(operation: &'static str, err: impl std::fmt::Display) -> MlsError {
        MlsError::InvalidMessage { operation, reason: err.to_string() }
    }

    /// Maps a group-state error, naming the group for eviction.
    pub(crate) fn state(operation: &'static str, group_id: &GroupId, err: &MlsGroupStateError) -> MlsError {
        match err {
            MlsGroupStateError::UseAfterEviction => MlsError::Inactive { group_id: hex::encode(group_id.as_slice()) },
            MlsGroupStateError::LibraryError(lib) => MlsError::library(operation, lib),
            other => MlsError::InvalidState { operation, reason: other.to_string() },
        }
    }

    /// Maps a validation error from processing a peer message.
    pub(crate) fn validation(operation: &'static str, err: &ValidationError) -> MlsError {
        match err {
            ValidationError::LibraryError(lib) => MlsError::library(operation, lib),
            other => MlsError::invalid_message(operation, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let group_id = GroupId::from_slice(&[0xab; 2]);
        let evicted = MlsError::state("encrypt", &group_id, &MlsGroupStateError::UseAfterEviction);
        assert!(matches!(evicted, MlsError::Inactive { ref group_id } if group_id == "abab"));
        assert!(!evicted.is_peer_error());
        let pending = MlsError::state("encrypt", &group_id, &MlsGroupStateError::PendingProposal);
        assert!(matches!(pending, MlsError::InvalidState { operation: "encrypt", .. }));
        let bad = MlsError::validation("process", &ValidationError::InvalidSignature);
        assert!(bad.is_peer_error());
    }
}
