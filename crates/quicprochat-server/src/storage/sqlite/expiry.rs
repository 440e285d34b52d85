//! Expiry on SQLite: deletes the messages (with the queue entries still
//! holding them) and the idempotency records stored before a cutoff.
//!
//! Both walk in store order and stop at the first row not old enough, so a
//! call costs what it deletes, not the size of the tables: messages by
//! their id (AUTOINCREMENT, so it grows with every message stored), the
//! idempotency records by the message row they name (the index
//! `message_ids_by_row`, schema version 5). One call also stops at
//! [`ENTRY_BUDGET`] queue entries and [`BYTE_BUDGET`] payload bytes, so
//! that it never holds the writer long: a commit to a large group has a
//! queue entry per member and a body of megabytes.

use rusqlite::{params, Connection};

use super::SqlResultExt;
use crate::storage::{Expired, StoreError};

const OPERATION: &str = "expire";

/// Queue entries one call deletes, at most about (a message's entries go
/// together).
const ENTRY_BUDGET: u64 = 10_000;

/// Payload bytes of the messages one call deletes, at most about (at least
/// one message goes).
const BYTE_BUDGET: u64 = 8 * 1024 * 1024;

pub(super) fn expire(connection: &Connection, before_ms: u64, limit: u32) -> Result<Expired, StoreError> {
    let (messages, mut more) = due_messages(connection, before_ms, limit)?;
    let mut expired = Expired::default();
    {
        let mut entries = connection.prepare_cached("DELETE FROM queue WHERE message_row = ?1").during(OPERATION)?;
        let mut bodies = connection.prepare_cached("DELETE FROM messages WHERE id = ?1").during(OPERATION)?;
        for id in &messages {
            if expired.queue_entries >= ENTRY_BUDGET {
                more = true;
                break;
            }
            expired.queue_entries += entries.execute(params![id]).during(OPERATION)? as u64;
            expired.messages += bodies.execute(params![id]).during(OPERATION)? as u64;
        }
    }
    let (records, more_records) = due_records(connection, before_ms, limit)?;
    let mut forget =
        connection.prepare_cached("DELETE FROM message_ids WHERE sender = ?1 AND message_id = ?2").during(OPERATION)?;
    for (sender, message_id) in &records {
        expired.message_ids += forget.execute(params![sender, message_id]).during(OPERATION)? as u64;
    }
    expired.more = more || more_records;
    Ok(expired)
}

/// The ids of the oldest messages stored before `before_ms`: at most
/// `limit`, and no more once [`BYTE_BUDGET`] is reached. `true` when a
/// bound stopped the walk (more may be due).
fn due_messages(connection: &Connection, before_ms: u64, limit: u32) -> Result<(Vec<u64>, bool), StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT id, stored_at_ms, length(payload) FROM messages ORDER BY id LIMIT ?1")
        .during(OPERATION)?;
    let mut rows = statement.query(params![limit]).during(OPERATION)?;
    let (mut ids, mut bytes) = (Vec::new(), 0u64);
    while let Some(row) = rows.next().during(OPERATION)? {
        let stored_at_ms: u64 = row.get(1).during(OPERATION)?;
        if stored_at_ms >= before_ms {
            return Ok((ids, false));
        }
        if bytes >= BYTE_BUDGET {
            return Ok((ids, true));
        }
        ids.push(row.get(0).during(OPERATION)?);
        bytes += row.get::<_, u64>(2).during(OPERATION)?;
    }
    let more = limit > 0 && ids.len() == limit as usize;
    Ok((ids, more))
}

/// An idempotency record's key: (sender, message id).
type RecordKey = (String, Vec<u8>);

/// The keys of the oldest idempotency records stored before `before_ms`,
/// at most `limit`, and whether all `limit` were due (more may be).
fn due_records(connection: &Connection, before_ms: u64, limit: u32) -> Result<(Vec<RecordKey>, bool), StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT sender, message_id, stored_at_ms FROM message_ids ORDER BY message_row LIMIT ?1")
        .during(OPERATION)?;
    let mut rows = statement.query(params![limit]).during(OPERATION)?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next().during(OPERATION)? {
        let stored_at_ms: u64 = row.get(2).during(OPERATION)?;
        if stored_at_ms >= before_ms {
            return Ok((keys, false));
        }
        keys.push((row.get(0).during(OPERATION)?, row.get(1).during(OPERATION)?));
    }
    let more = limit > 0 && keys.len() == limit as usize;
    Ok((keys, more))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::storage::{EntryKind, NewMessage, SqliteStore, Store};

    /// Messages of 1 MiB each: one call stops at the byte budget and says
    /// there is more; the calls after it take the rest.
    #[test]
    fn a_call_stops_at_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        store.create_account("bob", &[1; 32], 1).unwrap();
        for n in 0u8..12 {
            let message = NewMessage {
                message_id: vec![n],
                group_id: b"group".to_vec(),
                sender: "alice".to_owned(),
                kind: EntryKind::Application,
                payload: vec![n; 1024 * 1024],
                epoch: 0,
                stored_at_ms: 1,
            };
            store.enqueue(&message, &["bob".to_owned()]).unwrap();
        }
        let first = store.expire(2, 500).unwrap();
        assert_eq!((first.messages, first.queue_entries, first.more), (8, 8, true), "8 MiB, then the budget");
        let second = store.expire(2, 500).unwrap();
        assert_eq!((second.messages, second.more), (4, false));
        assert_eq!(store.stored_message_count().unwrap(), 0);
    }
}
