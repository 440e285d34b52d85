//! Federation state in SQLite: the domain this database's names and groups
//! belong to (`server_meta`), the streams with each peer (`fed_streams`),
//! the outbound entries not yet acknowledged (`fed_outbound`) and the
//! labels of groups peers host (`remote_groups`).

use rusqlite::{params, Connection, OptionalExtension};

use super::groups::{decode_group_kind, encode_group_kind};
use super::{delivery, SqlResultExt};
use crate::storage::RemoteGroup;
use crate::storage::{
    new_stream_instance, EnqueueOutcome, EntryKind, FedStream, InboundApply, NewOutboundEntry, OutboundAppend,
    OutboundEntry, StoreError,
};

pub(super) fn pin_domain(connection: &Connection, domain: &str) -> Result<Option<String>, StoreError> {
    const OPERATION: &str = "pin_domain";
    let recorded: Option<String> = connection
        .query_row("SELECT value FROM server_meta WHERE key = 'domain'", [], |row| row.get(0))
        .optional()
        .during(OPERATION)?;
    match recorded {
        Some(recorded) if recorded == domain => Ok(None),
        Some(recorded) => Ok(Some(recorded)),
        None => {
            connection
                .execute("INSERT INTO server_meta (key, value) VALUES ('domain', ?1)", params![domain])
                .during(OPERATION)?;
            Ok(None)
        }
    }
}

const STREAM_COLUMNS: &str = "s.peer, s.out_instance, s.out_acked, s.out_last, s.out_expired,
     (SELECT o.accepted_at_ms FROM fed_outbound o WHERE o.peer = s.peer ORDER BY o.seq LIMIT 1),
     s.in_instance, s.in_applied";

fn stream_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FedStream> {
    Ok(FedStream {
        peer: row.get(0)?,
        out_instance: row.get(1)?,
        out_acked: row.get(2)?,
        out_last: row.get(3)?,
        out_expired: row.get(4)?,
        oldest_pending_ms: row.get(5)?,
        in_instance: row.get(6)?,
        in_applied: row.get(7)?,
    })
}

/// Makes the streams row of `peer` if there is none.
fn ensure_stream(connection: &Connection, peer: &str, operation: &'static str) -> Result<(), StoreError> {
    connection
        .prepare_cached("INSERT INTO fed_streams (peer, out_instance) VALUES (?1, ?2) ON CONFLICT (peer) DO NOTHING")
        .and_then(|mut statement| statement.execute(params![peer, new_stream_instance()]))
        .during(operation)?;
    Ok(())
}

pub(super) fn fed_stream(connection: &Connection, peer: &str) -> Result<Option<FedStream>, StoreError> {
    connection
        .prepare_cached(&format!("SELECT {STREAM_COLUMNS} FROM fed_streams s WHERE s.peer = ?1"))
        .and_then(|mut statement| statement.query_row(params![peer], stream_from_row).optional())
        .during("fed_stream")
}

pub(super) fn remote_group(connection: &Connection, group_id: &[u8]) -> Result<Option<RemoteGroup>, StoreError> {
    const OPERATION: &str = "remote_group";
    let row = connection
        .prepare_cached("SELECT hub, name, kind FROM remote_groups WHERE group_id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![group_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })
                .optional()
        })
        .during(OPERATION)?;
    row.map(|(hub, name, kind)| {
        Ok(RemoteGroup { group_id: group_id.to_vec(), hub, name, kind: decode_group_kind(kind, OPERATION)? })
    })
    .transpose()
}

pub(super) fn fed_streams(connection: &Connection) -> Result<Vec<FedStream>, StoreError> {
    const OPERATION: &str = "fed_streams";
    connection
        .prepare_cached(&format!("SELECT {STREAM_COLUMNS} FROM fed_streams s ORDER BY s.peer"))
        .and_then(|mut statement| statement.query_map([], stream_from_row)?.collect())
        .during(OPERATION)
}

pub(super) fn append_outbound(
    connection: &Connection,
    peer: &str,
    entries: &[NewOutboundEntry],
) -> Result<u64, StoreError> {
    const OPERATION: &str = "append_outbound";
    ensure_stream(connection, peer, OPERATION)?;
    let mut last: u64 = connection
        .prepare_cached("SELECT out_last FROM fed_streams WHERE peer = ?1")
        .and_then(|mut statement| statement.query_row(params![peer], |row| row.get(0)))
        .during(OPERATION)?;
    let mut insert = connection
        .prepare_cached("INSERT INTO fed_outbound (peer, seq, accepted_at_ms, entry) VALUES (?1, ?2, ?3, ?4)")
        .during(OPERATION)?;
    for entry in entries {
        last += 1;
        insert.execute(params![peer, last, entry.accepted_at_ms, entry.entry]).during(OPERATION)?;
    }
    connection
        .prepare_cached("UPDATE fed_streams SET out_last = ?2 WHERE peer = ?1")
        .and_then(|mut statement| statement.execute(params![peer, last]))
        .during(OPERATION)?;
    Ok(last)
}

/// Appends each entry to its peer's stream (in the caller's transaction).
pub(super) fn append_all(connection: &Connection, outbound: &[OutboundAppend]) -> Result<(), StoreError> {
    for append in outbound {
        append_outbound(connection, &append.peer, std::slice::from_ref(&append.entry))?;
    }
    Ok(())
}

pub(super) fn read_outbound(
    connection: &Connection,
    peer: &str,
    from_seq: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Vec<OutboundEntry>, StoreError> {
    const OPERATION: &str = "read_outbound";
    let limit = i64::try_from(max_entries).unwrap_or(i64::MAX);
    let from_seq = from_seq.min(i64::MAX as u64);
    let mut statement = connection
        .prepare_cached(
            "SELECT seq, accepted_at_ms, entry FROM fed_outbound WHERE peer = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )
        .during(OPERATION)?;
    let mut rows = statement.query(params![peer, from_seq, limit]).during(OPERATION)?;
    let (mut entries, mut bytes) = (Vec::new(), 0usize);
    while let Some(row) = rows.next().during(OPERATION)? {
        let entry: Vec<u8> = row.get(2).during(OPERATION)?;
        bytes = bytes.saturating_add(entry.len());
        if !entries.is_empty() && bytes > max_bytes {
            break;
        }
        entries.push(OutboundEntry {
            seq: row.get(0).during(OPERATION)?,
            accepted_at_ms: row.get(1).during(OPERATION)?,
            entry,
        });
    }
    Ok(entries)
}

pub(super) fn ack_outbound(connection: &Connection, peer: &str, through_seq: u64) -> Result<(), StoreError> {
    const OPERATION: &str = "ack_outbound";
    let through_seq = through_seq.min(i64::MAX as u64);
    connection
        .prepare_cached("UPDATE fed_streams SET out_acked = MAX(out_acked, ?2) WHERE peer = ?1")
        .and_then(|mut statement| statement.execute(params![peer, through_seq]))
        .during(OPERATION)?;
    connection
        .prepare_cached("DELETE FROM fed_outbound WHERE peer = ?1 AND seq <= ?2")
        .and_then(|mut statement| statement.execute(params![peer, through_seq]))
        .during(OPERATION)?;
    Ok(())
}

pub(super) fn expire_outbound(connection: &Connection, peer: &str, before_ms: u64) -> Result<(u64, u64), StoreError> {
    const OPERATION: &str = "expire_outbound";
    ensure_stream(connection, peer, OPERATION)?;
    let before_ms = before_ms.min(i64::MAX as u64);
    let last_old: Option<u64> = connection
        .prepare_cached("SELECT MAX(seq) FROM fed_outbound WHERE peer = ?1 AND accepted_at_ms < ?2")
        .and_then(|mut statement| statement.query_row(params![peer, before_ms], |row| row.get(0)))
        .during(OPERATION)?;
    let deleted = match last_old {
        Some(through) => {
            connection
                .prepare_cached("UPDATE fed_streams SET out_expired = MAX(out_expired, ?2) WHERE peer = ?1")
                .and_then(|mut statement| statement.execute(params![peer, through]))
                .during(OPERATION)?;
            connection
                .prepare_cached("DELETE FROM fed_outbound WHERE peer = ?1 AND seq <= ?2")
                .and_then(|mut statement| statement.execute(params![peer, through]))
                .during(OPERATION)?
        }
        None => 0,
    };
    let expired: u64 = connection
        .prepare_cached("SELECT out_expired FROM fed_streams WHERE peer = ?1")
        .and_then(|mut statement| statement.query_row(params![peer], |row| row.get(0)))
        .during(OPERATION)?;
    Ok((expired, deleted as u64))
}

pub(super) fn set_outbound_instance(connection: &Connection, peer: &str, instance: u64) -> Result<(), StoreError> {
    const OPERATION: &str = "set_outbound_instance";
    ensure_stream(connection, peer, OPERATION)?;
    connection
        .prepare_cached("UPDATE fed_streams SET out_instance = ?2 WHERE peer = ?1")
        .and_then(|mut statement| statement.execute(params![peer, instance.min(i64::MAX as u64)]))
        .during(OPERATION)?;
    Ok(())
}

pub(super) fn apply_inbound(
    connection: &Connection,
    apply: &InboundApply<'_>,
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    const OPERATION: &str = "apply_inbound";
    ensure_stream(connection, apply.peer, OPERATION)?;
    let mut outcomes = Vec::with_capacity(apply.events.len());
    for event in apply.events {
        if let Some(group) = &event.group {
            connection
                .prepare_cached(
                    "INSERT INTO remote_groups (group_id, hub, name, kind) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, kind = excluded.kind
                     WHERE hub = excluded.hub",
                )
                .and_then(|mut statement| {
                    statement.execute(params![group.group_id, group.hub, group.name, encode_group_kind(group.kind)])
                })
                .during(OPERATION)?;
        }
        // A Welcome shares its commit's id and comes first: only the commit
        // records the id (a Welcome whose commit is recorded is a resend).
        let record_id = event.message.kind != EntryKind::Welcome;
        let outcome = match delivery::duplicate_of(connection, &event.message, OPERATION)? {
            Some(first) => first,
            None => delivery::insert_fanout(connection, &event.message, &event.recipients, record_id, OPERATION)?,
        };
        outcomes.push(outcome);
    }
    append_all(connection, apply.outbound)?;
    connection
        .prepare_cached("UPDATE fed_streams SET in_instance = ?2, in_applied = ?3 WHERE peer = ?1")
        .and_then(|mut statement| statement.execute(params![apply.peer, apply.instance, apply.applied_seq]))
        .during(OPERATION)?;
    Ok(outcomes)
}
