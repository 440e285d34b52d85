//! Errors of the client library.

use quicprochat_proto::Status;
use quicprochat_rpc::RpcError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The profile directory has no account yet (run `register` first).
    #[error("no account in profile {path}: register first")]
    NoProfile {
        /// The profile directory.
        path: String,
    },
    /// The profile already holds an account.
    #[error("profile {path} already holds account {username}")]
    ProfileExists {
        /// The profile directory.
        path: String,
        /// Its account.
        username: String,
    },
    /// The profile files could not be read or are damaged.
    #[error("profile {path}: {reason}")]
    Profile {
        /// The file concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The caller asked for something invalid (unknown group, bad name, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// The server refused or the connection failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// MLS processing failed locally.
    #[error("MLS: {0}")]
    Mls(#[from] quicprochat_core::MlsError),
    /// Identity key handling failed.
    #[error("identity: {0}")]
    Identity(#[from] quicprochat_core::IdentityError),
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] rusqlite::Error),
    /// `send @peer` found direct conversations with `peer` that hold
    /// different identity keys for them: which one is `peer` is unclear.
    #[error(
        "more than one direct conversation with {peer}, and they show different identity keys for {peer}; \
         compare safety numbers (`qpc verify {peer}`) and leave the wrong one"
    )]
    AmbiguousPeer {
        /// The user named.
        peer: String,
    },
    /// A device offered as `user`'s (a key package the server served, or
    /// the server's key for `verify`) whose account key is not the one
    /// pinned for `user`, or whose certificate does not verify: a device
    /// `user`'s account did not certify.
    #[error("refused a device of {user}: {reason}")]
    UnknownDevice {
        /// The account the device claims.
        user: String,
        /// Why it is refused.
        reason: String,
    },
    /// Something the server or another member sent was refused because it
    /// does not match what MLS verifies (a Welcome for another group, a key
    /// package for another user, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The group forked: the server accepted a commit that the other
    /// members cannot process. Nothing can be sent in it; it is rebuilt
    /// without that member.
    #[error(
        "group {group} was broken by {culprit} at epoch {epoch}: the server accepted a commit of theirs that this \
         device cannot process ({reason}); {rebuilder} rebuilds the group without {culprit}"
    )]
    GroupBroken {
        /// The group concerned.
        group: String,
        /// The member whose commit broke it.
        culprit: String,
        /// The epoch of that commit.
        epoch: u64,
        /// Why this device refused the commit.
        reason: String,
        /// Who rebuilds it (`you` when this client does).
        rebuilder: String,
    },
    /// `device link` gave up: no device of the account approved the code in
    /// time, or the code expired.
    #[error("the link code was not approved within {waited_secs} s; run `qpc device link` again for a new code")]
    NotApproved {
        /// How long it waited.
        waited_secs: u64,
    },
    /// Linking failed in its cryptography (a code that does not parse, a
    /// bundle that does not open).
    #[error("link: {0}")]
    Link(#[from] quicprochat_core::link::LinkError),
    /// A failure shared by every send of one burst (the catch-up before it,
    /// or the local transaction they were written in): each caller gets it.
    #[error(transparent)]
    Shared(std::sync::Arc<SdkError>),
    /// A send's burst ended without answering it (its task failed).
    #[error("the send was interrupted: {0}")]
    Interrupted(String),
    /// A commit kept losing the race for its epoch.
    #[error("gave up after {attempts} attempts: other members keep committing to group {group}")]
    CommitContention {
        /// The group concerned.
        group: String,
        /// How many attempts were made.
        attempts: u32,
    },
}

impl SdkError {
    /// The server status, if the server answered with one.
    pub fn status(&self) -> Option<Status> {
        match self {
            SdkError::Rpc(error) => error.status(),
            SdkError::Shared(error) => error.status(),
            _ => None,
        }
    }

    /// Whether retrying later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SdkError::Rpc(error) => error.is_retryable(),
            SdkError::Shared(error) => error.is_retryable(),
            _ => false,
        }
    }
}
