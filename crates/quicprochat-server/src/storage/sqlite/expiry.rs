//! Expiry on SQLite: deletes the messages (with the queue entries still
//! holding them) and the idempotency records stored before a cutoff.
//!
//! Both walk in store order and stop at the first row not old enough, so a
//! call costs what it deletes, not the size of the tables: messages by
//! their id (AUTOINCREMENT, so it grows with every message stored), the
//! idempotency records by the message row they name (the index
//! `message_ids_by_row`, schema version 5).

use rusqlite::{params, Connection};

use super::SqlResultExt;
use crate::storage::{Expired, StoreError};

const OPERATION: &str = "expire";

pub(super) fn expire(connection: &Connection, before_ms: u64, limit: u32) -> Result<Expired, StoreError> {
    let (messages, more_messages) = due(
        connection,
        "SELECT id, stored_at_ms FROM messages ORDER BY id LIMIT ?1",
        |row| row.get::<_, u64>(0),
        before_ms,
        limit,
    )?;
    let mut expired = Expired::default();
    {
        let mut entries = connection.prepare_cached("DELETE FROM queue WHERE message_row = ?1").during(OPERATION)?;
        let mut bodies = connection.prepare_cached("DELETE FROM messages WHERE id = ?1").during(OPERATION)?;
        for id in &messages {
            expired.queue_entries += entries.execute(params![id]).during(OPERATION)? as u64;
            expired.messages += bodies.execute(params![id]).during(OPERATION)? as u64;
        }
    }
    let (records, more_records) = due(
        connection,
        "SELECT sender, message_id, stored_at_ms FROM message_ids ORDER BY message_row LIMIT ?1",
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)),
        before_ms,
        limit,
    )?;
    let mut forget =
        connection.prepare_cached("DELETE FROM message_ids WHERE sender = ?1 AND message_id = ?2").during(OPERATION)?;
    for (sender, message_id) in &records {
        expired.message_ids += forget.execute(params![sender, message_id]).during(OPERATION)? as u64;
    }
    expired.more = more_messages || more_records;
    Ok(expired)
}

/// The keys of the first rows of `query` (oldest first, at most `limit`;
/// its last column is `stored_at_ms`) stored before `before_ms`, and
/// whether all `limit` were due (more may be).
fn due<K>(
    connection: &Connection,
    query: &str,
    key: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<K>,
    before_ms: u64,
    limit: u32,
) -> Result<(Vec<K>, bool), StoreError> {
    let mut statement = connection.prepare_cached(query).during(OPERATION)?;
    let stored_at = statement.column_count() - 1;
    let mut rows = statement.query(params![limit]).during(OPERATION)?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next().during(OPERATION)? {
        let stored_at_ms: u64 = row.get(stored_at).during(OPERATION)?;
        if stored_at_ms >= before_ms {
            return Ok((keys, false));
        }
        keys.push(key(row).during(OPERATION)?);
    }
    let more = limit > 0 && keys.len() == limit as usize;
    Ok((keys, more))
}
