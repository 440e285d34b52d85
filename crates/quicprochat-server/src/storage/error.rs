//! [`StoreError`]: why a storage operation failed. Business outcomes (a
//! username taken, an epoch moved on) are not errors: they are variants of
//! the operations' result types.

/// A storage operation failed. `operation` names the [`super::Store`] method.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database stayed locked by another writer past the busy timeout.
    /// Retryable.
    #[error("storage busy during {operation}")]
    Busy { operation: &'static str },

    /// The disk is full or the database file became read-only: reads still
    /// work, writes fail until the operator frees space or remounts. The
    /// failed write changed nothing (its transaction rolled back).
    #[error("storage cannot take writes during {operation}: {detail}")]
    NoSpace { operation: &'static str, detail: String },

    /// The database could not be opened, read or written (I/O error,
    /// permissions). Not retryable without operator action.
    #[error("storage I/O failure during {operation}: {detail}")]
    Io { operation: &'static str, detail: String },

    /// Stored data violates an invariant (unknown enum value, out-of-range
    /// number, schema newer than this binary). Not retryable.
    #[error("corrupt storage during {operation}: {detail}")]
    Corrupt { operation: &'static str, detail: String },

    /// The write contradicts existing data in a way the caller should have
    /// prevented (for example a message id reused for another commit).
    #[error("conflicting write during {operation}: {detail}")]
    Conflict { operation: &'static str, detail: String },

    /// The operation refers to an account that does not exist.
    #[error("no account named {username:?}")]
    UnknownAccount { username: String },

    /// The operation refers to a group that does not exist.
    #[error("no group with id {group_id_hex}")]
    UnknownGroup { group_id_hex: String },

    /// A thread panicked while holding the store's lock; the in-memory state
    /// may be inconsistent. The process should restart.
    #[error("storage lock poisoned by an earlier panic")]
    Poisoned,

    /// Any other backend failure.
    #[error("storage failure during {operation}: {detail}")]
    Backend { operation: &'static str, detail: String },
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    /// The same error again, for each of several callers that share one
    /// failed operation (a group commit).
    pub(crate) fn replicate(&self) -> StoreError {
        match self {
            StoreError::Busy { operation } => StoreError::Busy { operation },
            StoreError::NoSpace { operation, detail } => StoreError::NoSpace { operation, detail: detail.clone() },
            StoreError::Io { operation, detail } => StoreError::Io { operation, detail: detail.clone() },
            StoreError::Corrupt { operation, detail } => StoreError::Corrupt { operation, detail: detail.clone() },
            StoreError::Conflict { operation, detail } => StoreError::Conflict { operation, detail: detail.clone() },
            StoreError::UnknownAccount { username } => StoreError::UnknownAccount { username: username.clone() },
            StoreError::UnknownGroup { group_id_hex } => {
                StoreError::UnknownGroup { group_id_hex: group_id_hex.clone() }
            }
            StoreError::Poisoned => StoreError::Poisoned,
            StoreError::Backend { operation, detail } => StoreError::Backend { operation, detail: detail.clone() },
        }
    }

    pub(crate) fn unknown_group(group_id: &[u8]) -> Self {
        StoreError::UnknownGroup { group_id_hex: hex::encode(group_id) }
    }
}
