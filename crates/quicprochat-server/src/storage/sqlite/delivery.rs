//! Message fan-out and queue queries. A body goes into `messages` once, each
//! recipient gets a `queue` row pointing at it with the next seq of its
//! account, and `message_ids` remembers `(sender, message_id)` for
//! idempotency. Callers provide the transaction.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::groups::decode_group_kind;
use super::SqlResultExt;
use crate::storage::{
    Delivery, EnqueueOutcome, EntryKind, FetchBudget, FetchedQueue, MessageRecord, NewMessage, QueueItem, StoreError,
};

pub(super) fn encode_entry_kind(kind: EntryKind) -> i64 {
    match kind {
        EntryKind::Application => 0,
        EntryKind::Commit => 1,
        EntryKind::Welcome => 2,
        EntryKind::Proposal => 3,
        EntryKind::DeliveryFailed => 4,
    }
}

pub(super) fn decode_entry_kind(value: i64, operation: &'static str) -> Result<EntryKind, StoreError> {
    match value {
        0 => Ok(EntryKind::Application),
        1 => Ok(EntryKind::Commit),
        2 => Ok(EntryKind::Welcome),
        3 => Ok(EntryKind::Proposal),
        4 => Ok(EntryKind::DeliveryFailed),
        other => Err(StoreError::Corrupt { operation, detail: format!("unknown entry kind {other}") }),
    }
}

pub(super) fn lookup_message(
    connection: &Connection,
    sender: &str,
    message_id: &[u8],
    operation: &'static str,
) -> Result<Option<MessageRecord>, StoreError> {
    let raw: Option<(u64, Vec<u8>, i64, u64, u64)> = connection
        .prepare_cached(
            "SELECT message_row, group_id, kind, epoch, stored_at_ms FROM message_ids
             WHERE sender = ?1 AND message_id = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![sender, message_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                })
                .optional()
        })
        .during(operation)?;
    raw.map(|(message_row, group_id, kind, epoch, stored_at_ms)| {
        Ok(MessageRecord { message_row, group_id, kind: decode_entry_kind(kind, operation)?, epoch, stored_at_ms })
    })
    .transpose()
}

/// The first outcome of `(message.sender, message.message_id)`, if used before.
pub(super) fn duplicate_of(
    connection: &Connection,
    message: &NewMessage,
    operation: &'static str,
) -> Result<Option<EnqueueOutcome>, StoreError> {
    let record = lookup_message(connection, &message.sender, &message.message_id, operation)?;
    Ok(record.map(|record| EnqueueOutcome {
        message_row: record.message_row,
        stored_at_ms: record.stored_at_ms,
        duplicate: true,
        deliveries: Vec::new(),
    }))
}

/// Stores `message` and appends it to each (deduplicated) recipient's queue.
/// An unknown recipient fails the call; the caller's transaction then rolls
/// back. `record_id` registers `(sender, message_id)` for idempotency.
pub(super) fn insert_fanout(
    connection: &Connection,
    message: &NewMessage,
    recipients: &[String],
    record_id: bool,
    operation: &'static str,
) -> Result<EnqueueOutcome, StoreError> {
    let kind = encode_entry_kind(message.kind);
    let message_row: u64 = connection
        .prepare_cached(
            "INSERT INTO messages (message_id, group_id, sender, kind, epoch, stored_at_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    message.message_id,
                    message.group_id,
                    message.sender,
                    kind,
                    message.epoch,
                    message.stored_at_ms,
                    message.payload
                ],
                |row| row.get(0),
            )
        })
        .during(operation)?;

    let deliveries = enqueue_for(connection, recipients, message_row, operation)?;
    if deliveries.is_empty() {
        // Nobody to deliver to: keep the row id (never reused) but not the body.
        connection
            .prepare_cached("DELETE FROM messages WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![message_row]))
            .during(operation)?;
    }
    if record_id {
        connection
            .prepare_cached(
                "INSERT INTO message_ids
                 (sender, message_id, message_row, group_id, kind, epoch, stored_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    message.sender,
                    message.message_id,
                    message_row,
                    message.group_id,
                    kind,
                    message.epoch,
                    message.stored_at_ms
                ])
            })
            .during(operation)?;
    }
    Ok(EnqueueOutcome { message_row, stored_at_ms: message.stored_at_ms, duplicate: false, deliveries })
}

/// Up to this many recipients, [`enqueue_for`] runs two statements per
/// recipient; above, two for the whole list (the JSON list costs more than
/// it saves for a 1:1 conversation).
const PER_ROW_RECIPIENTS: usize = 2;

/// Appends `message_row` to the queue of every account in `recipients`
/// (each once). For many recipients that is two statements for the whole
/// list, not two per recipient (a commit to 1000 members spent about 10 ms
/// in per-row statements). Deliveries come sorted by username; an unknown
/// recipient is an error, and the caller's transaction undoes what was
/// written.
fn enqueue_for(
    connection: &Connection,
    recipients: &[String],
    message_row: u64,
    operation: &'static str,
) -> Result<Vec<Delivery>, StoreError> {
    let unique: BTreeSet<&str> = recipients.iter().map(String::as_str).collect();
    if unique.len() <= PER_ROW_RECIPIENTS {
        return enqueue_each(connection, &unique, message_row, operation);
    }
    let names = serde_json::to_string(&unique)
        .map_err(|error| StoreError::Corrupt { operation, detail: format!("recipient list: {error}") })?;
    let mut deliveries: Vec<Delivery> = connection
        .prepare_cached(
            "UPDATE devices SET last_seq = last_seq + 1
             WHERE queue IN (SELECT value FROM json_each(?1)) AND removed_at_ms IS NULL RETURNING queue, last_seq",
        )
        .and_then(|mut statement| {
            statement.query_map(params![names], |row| Ok(Delivery { queue: row.get(0)?, seq: row.get(1)? }))?.collect()
        })
        .during(operation)?;
    let updated: BTreeSet<&str> = deliveries.iter().map(|delivery| delivery.queue.as_str()).collect();
    for missing in unique.difference(&updated) {
        // A removed device gets nothing; an unknown recipient (or,
        // defensively, a name the JSON round trip changed) fails the call,
        // and nothing of this fan-out may stay.
        if !is_removed_device(connection, missing, operation)? {
            return Err(StoreError::UnknownAccount { username: (*missing).to_owned() });
        }
    }
    // Each queue row takes the sequence number just assigned to its account.
    connection
        .prepare_cached(
            "INSERT INTO queue (device, seq, message_row)
             SELECT queue, last_seq, ?2 FROM devices
             WHERE queue IN (SELECT value FROM json_each(?1)) AND removed_at_ms IS NULL",
        )
        .and_then(|mut statement| statement.execute(params![names, message_row]))
        .during(operation)?;
    deliveries.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(deliveries)
}

/// [`enqueue_for`] for a few recipients, one at a time.
fn enqueue_each(
    connection: &Connection,
    recipients: &BTreeSet<&str>,
    message_row: u64,
    operation: &'static str,
) -> Result<Vec<Delivery>, StoreError> {
    let mut next_seq = connection
        .prepare_cached(
            "UPDATE devices SET last_seq = last_seq + 1 WHERE queue = ?1 AND removed_at_ms IS NULL RETURNING last_seq",
        )
        .during(operation)?;
    let mut insert_entry = connection
        .prepare_cached("INSERT INTO queue (device, seq, message_row) VALUES (?1, ?2, ?3)")
        .during(operation)?;
    let mut deliveries = Vec::with_capacity(recipients.len());
    for &queue in recipients {
        let seq: Option<u64> = next_seq.query_row(params![queue], |row| row.get(0)).optional().during(operation)?;
        let Some(seq) = seq else {
            if is_removed_device(connection, queue, operation)? {
                continue;
            }
            return Err(StoreError::UnknownAccount { username: queue.to_owned() });
        };
        insert_entry.execute(params![queue, seq, message_row]).during(operation)?;
        deliveries.push(Delivery { queue: queue.to_owned(), seq });
    }
    Ok(deliveries)
}

/// Whether `queue` is the queue of a removed device (which receives nothing).
fn is_removed_device(connection: &Connection, queue: &str, operation: &'static str) -> Result<bool, StoreError> {
    connection
        .prepare_cached("SELECT 1 FROM devices WHERE queue = ?1 AND removed_at_ms IS NOT NULL")
        .and_then(|mut statement| statement.exists(params![queue]))
        .during(operation)
}

/// A fetched row before its enums are decoded.
struct RawItem {
    seq: u64,
    message_id: Vec<u8>,
    group_id: Vec<u8>,
    group_name: Option<String>,
    group_kind: Option<i64>,
    sender: String,
    kind: i64,
    payload: Vec<u8>,
    stored_at_ms: u64,
    epoch: u64,
}

impl RawItem {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            message_id: row.get(1)?,
            group_id: row.get(2)?,
            group_name: row.get(3)?,
            group_kind: row.get(4)?,
            sender: row.get(5)?,
            kind: row.get(6)?,
            payload: row.get(7)?,
            stored_at_ms: row.get(8)?,
            epoch: row.get(9)?,
        })
    }

    fn decode(self) -> Result<QueueItem, StoreError> {
        const OPERATION: &str = "fetch";
        let (Some(group_name), Some(group_kind)) = (self.group_name, self.group_kind) else {
            return Err(StoreError::Corrupt {
                operation: OPERATION,
                detail: format!("queue entry {} references a missing group", self.seq),
            });
        };
        Ok(QueueItem {
            seq: self.seq,
            message_id: self.message_id,
            group_id: self.group_id,
            group_name,
            group_kind: decode_group_kind(group_kind, OPERATION)?,
            sender: self.sender,
            kind: decode_entry_kind(self.kind, OPERATION)?,
            payload: self.payload,
            stored_at_ms: self.stored_at_ms,
            epoch: self.epoch,
        })
    }
}

pub(super) fn fetch(
    connection: &Connection,
    queue: &str,
    after_seq: u64,
    limit: u32,
) -> Result<FetchedQueue, StoreError> {
    const OPERATION: &str = "fetch";
    // Cursors beyond SQLite's integer range cannot match anything.
    let after_seq = after_seq.min(i64::MAX as u64);
    let mut statement = connection
        .prepare_cached(
            "SELECT q.seq, m.message_id, m.group_id, COALESCE(g.name, r.name), COALESCE(g.kind, r.kind), m.sender,
                    m.kind, m.payload, m.stored_at_ms, m.epoch
             FROM queue q
             JOIN messages m ON m.id = q.message_row
             LEFT JOIN groups g ON g.group_id = m.group_id
             LEFT JOIN remote_groups r ON r.group_id = m.group_id
             WHERE q.device = ?1 AND q.seq > ?2
             ORDER BY q.seq LIMIT ?3",
        )
        .during(OPERATION)?;
    let mut rows = statement.query(params![queue, after_seq, limit]).during(OPERATION)?;
    let mut items = Vec::new();
    let mut budget = FetchBudget::default();
    while let Some(row) = rows.next().during(OPERATION)? {
        let item = RawItem::from_row(row).during(OPERATION)?;
        if !budget.admit(item.payload.len()) {
            break;
        }
        items.push(item.decode()?);
    }
    let head_seq: Option<u64> = connection
        .prepare_cached("SELECT last_seq FROM devices WHERE queue = ?1")
        .and_then(|mut statement| statement.query_row(params![queue], |row| row.get(0)).optional())
        .during(OPERATION)?;
    Ok(FetchedQueue { items, head_seq: head_seq.unwrap_or(0) })
}

pub(super) fn ack(connection: &Connection, queue: &str, up_to_seq: u64) -> Result<u64, StoreError> {
    const OPERATION: &str = "ack";
    let up_to_seq = up_to_seq.min(i64::MAX as u64);
    let acked_rows: Vec<u64> = connection
        .prepare_cached("DELETE FROM queue WHERE device = ?1 AND seq <= ?2 RETURNING message_row")
        .and_then(|mut statement| {
            statement.query_map(params![queue, up_to_seq], |row| row.get(0))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .during(OPERATION)?;
    let distinct: BTreeSet<u64> = acked_rows.iter().copied().collect();
    let mut free = connection
        .prepare_cached(
            "DELETE FROM messages WHERE id = ?1
             AND NOT EXISTS (SELECT 1 FROM queue WHERE message_row = ?1)",
        )
        .during(OPERATION)?;
    for message_row in distinct {
        free.execute(params![message_row]).during(OPERATION)?;
    }
    Ok(acked_rows.len() as u64)
}

pub(super) fn queue_depth(connection: &Connection, queue: &str) -> Result<u64, StoreError> {
    connection
        .prepare_cached("SELECT COUNT(*) FROM queue WHERE device = ?1")
        .and_then(|mut statement| statement.query_row(params![queue], |row| row.get(0)))
        .during("queue_depth")
}

pub(super) fn total_queue_depth(connection: &Connection) -> Result<u64, StoreError> {
    connection
        .prepare_cached("SELECT COUNT(*) FROM queue")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .during("total_queue_depth")
}

pub(super) fn stored_message_count(connection: &Connection) -> Result<u64, StoreError> {
    connection
        .prepare_cached("SELECT COUNT(*) FROM messages")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .during("stored_message_count")
}
