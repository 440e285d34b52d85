//! Delivery queue access for the session's device: fetch by cursor and ack.
//! Push to subscribed connections is the transport's job; it can call
//! [`fetch`] with its stored cursor whenever a delivery is reported.

use super::devices::{session_device, Caller};
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

/// Entries of the caller's device queue with `seq > after_seq`, oldest
/// first. A disabled account or a removed device gets nothing.
pub fn fetch(store: &dyn Store, caller: Caller<'_>, after_seq: u64, limit: u32) -> Result<FetchedQueue, DomainError> {
    may_read(store, caller)?;
    Ok(store.fetch(caller.queue, after_seq, effective_limit(limit))?)
}

/// Deletes the entries of the caller's device queue with
/// `seq <= up_to_seq`; returns how many were deleted. A disabled account
/// or a removed device can no longer acknowledge.
pub fn ack(store: &dyn Store, caller: Caller<'_>, up_to_seq: u64) -> Result<u64, DomainError> {
    may_read(store, caller)?;
    Ok(store.ack(caller.queue, up_to_seq)?)
}

/// Fails unless the caller may subscribe to pushes (the account exists
/// and is not disabled, the device was not removed).
pub fn may_subscribe(store: &dyn Store, caller: Caller<'_>) -> Result<(), DomainError> {
    may_read(store, caller)
}

fn may_read(store: &dyn Store, caller: Caller<'_>) -> Result<(), DomainError> {
    session_device(store, caller).map(drop)
}
