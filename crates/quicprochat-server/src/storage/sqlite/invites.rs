//! Invite queries. Callers provide the (immediate) transaction, so the
//! check-then-decrement of a use is atomic.

use rusqlite::{params, Connection, OptionalExtension};

use super::SqlResultExt;
use crate::storage::{InviteUse, StoreError};

pub(super) fn create_invite(
    connection: &Connection,
    token: &str,
    uses: u32,
    expires_at_ms: Option<u64>,
    created_at_ms: u64,
) -> Result<(), StoreError> {
    const OPERATION: &str = "create_invite";
    let inserted = connection
        .prepare_cached(
            "INSERT INTO invites (token, uses_total, uses_left, expires_at_ms, created_at_ms)
             VALUES (?1, ?2, ?2, ?3, ?4) ON CONFLICT (token) DO NOTHING",
        )
        .and_then(|mut statement| statement.execute(params![token, uses, expires_at_ms, created_at_ms]))
        .during(OPERATION)?;
    if inserted == 0 {
        return Err(StoreError::Conflict { operation: OPERATION, detail: "invite token already exists".to_owned() });
    }
    Ok(())
}

/// Whether `token` may be used at `now_ms`, without using it: `Consumed`
/// carries the uses left *after* a use.
pub(super) fn check_invite(
    connection: &Connection,
    token: &str,
    now_ms: u64,
    operation: &'static str,
) -> Result<InviteUse, StoreError> {
    let row: Option<(u32, Option<u64>)> = connection
        .prepare_cached("SELECT uses_left, expires_at_ms FROM invites WHERE token = ?1")
        .and_then(|mut statement| statement.query_row(params![token], |row| Ok((row.get(0)?, row.get(1)?))).optional())
        .during(operation)?;
    Ok(match row {
        None => InviteUse::Unknown,
        Some((0, _)) => InviteUse::Exhausted,
        Some((_, Some(expires_at_ms))) if now_ms >= expires_at_ms => InviteUse::Expired,
        Some((uses_left, _)) => InviteUse::Consumed { remaining: uses_left - 1 },
    })
}

/// Takes one use of `token`; call only after `check_invite` said `Consumed`.
pub(super) fn take_use(connection: &Connection, token: &str, operation: &'static str) -> Result<(), StoreError> {
    connection
        .prepare_cached("UPDATE invites SET uses_left = uses_left - 1 WHERE token = ?1 AND uses_left > 0")
        .and_then(|mut statement| statement.execute(params![token]))
        .during(operation)?;
    Ok(())
}

pub(super) fn consume_invite(connection: &Connection, token: &str, now_ms: u64) -> Result<InviteUse, StoreError> {
    const OPERATION: &str = "consume_invite";
    let outcome = check_invite(connection, token, now_ms, OPERATION)?;
    if matches!(outcome, InviteUse::Consumed { .. }) {
        take_use(connection, token, OPERATION)?;
    }
    Ok(outcome)
}
