//! Delivery queue access for the session user: fetch by cursor and ack.
//! Push to subscribed connections is the transport's job; it can call
//! [`fetch`] with its stored cursor whenever a delivery is reported.

use super::accounts::session_account;
use super::DomainError;
use crate::storage::{FetchedQueue, Store};

/// Entries returned when the client leaves `limit` unset (0).
pub const DEFAULT_FETCH_LIMIT: u32 = 100;

/// Most entries returned by one fetch.
pub const MAX_FETCH_LIMIT: u32 = 500;

/// The effective limit: 0 means the default, anything else is clamped to
/// `1..=MAX_FETCH_LIMIT`.
pub fn effective_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_FETCH_LIMIT
    } else {
        limit.min(MAX_FETCH_LIMIT)
    }
}

/// Entries of the session user's queue with `seq > after_seq`, oldest
/// first. A disabled account gets nothing.
pub fn fetch(store: &dyn Store, session_user: &str, after_seq: u64, limit: u32) -> Result<FetchedQueue, DomainError> {
    session_account(store, session_user)?;
    Ok(store.fetch(session_user, after_seq, effective_limit(limit))?)
}

/// Deletes the session user's entries with `seq <= up_to_seq`; returns how
/// many were deleted. A disabled account can no longer acknowledge.
pub fn ack(store: &dyn Store, session_user: &str, up_to_seq: u64) -> Result<u64, DomainError> {
    session_account(store, session_user)?;
    Ok(store.ack(session_user, up_to_seq)?)
}

/// Fails unless the session user may subscribe to pushes (the account
/// exists and is not disabled).
pub fn may_subscribe(store: &dyn Store, session_user: &str) -> Result<(), DomainError> {
    session_account(store, session_user).map(drop)
}
