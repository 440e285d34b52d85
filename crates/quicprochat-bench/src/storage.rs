//! What the server stored for the messages a suite sent, read from its
//! database on a read-only connection: message bodies and queue rows. A
//! message fanned out to several devices must be stored once, with one
//! queue row per receiving device.
//!
//! B4 leaves its queues unacknowledged and counts the rows of its group.
//! B3's recipients acknowledge as they go (the server then deletes rows and
//! bodies), so B3 counts what was ever assigned instead: the messages
//! table's `AUTOINCREMENT` counter (ids are never reused) and the sum of
//! every device's `last_seq` (one per queue row, never decreasing).
//!
//! This reads the schema of the SQLite store directly; it knows nothing of
//! other stores.

use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::setup::BenchServer;

fn open(server: &BenchServer) -> anyhow::Result<Connection> {
    let path: PathBuf = server.dir.path().join("data").join("qpc-server.db");
    Ok(Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?)
}

/// Message bodies and queue rows the server holds for `group_id`'s
/// application messages.
pub(crate) fn held_for_group(server: &BenchServer, group_id: &[u8]) -> anyhow::Result<(f64, f64)> {
    let db = open(server)?;
    let bodies: f64 =
        db.query_row("SELECT COUNT(*) FROM messages WHERE group_id = ?1 AND kind = 0", [group_id], |row| row.get(0))?;
    let rows: f64 = db.query_row(
        "SELECT COUNT(*) FROM queue JOIN messages ON messages.id = queue.message_row
         WHERE messages.group_id = ?1 AND messages.kind = 0",
        [group_id],
        |row| row.get(0),
    )?;
    Ok((bodies, rows))
}

/// Bodies and queue rows ever assigned, at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assigned {
    bodies: u64,
    queue_rows: u64,
}

/// What was stored between two [`Assigned`] readings, per message sent.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct StoredPerMessage {
    /// Bodies stored per acknowledged send (1 means each message once).
    pub(crate) bodies_per_message: f64,
    /// Queue rows per stored body: the devices each message went to.
    pub(crate) queue_rows_per_body: f64,
}

impl Assigned {
    /// Reads the counters now.
    pub(crate) fn read(server: &BenchServer) -> anyhow::Result<Assigned> {
        let db = open(server)?;
        let bodies: Option<i64> =
            db.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'messages'", [], |row| row.get(0)).optional()?;
        let queue_rows: i64 = db.query_row("SELECT COALESCE(SUM(last_seq), 0) FROM devices", [], |row| row.get(0))?;
        Ok(Assigned {
            bodies: u64::try_from(bodies.unwrap_or(0)).unwrap_or(0),
            queue_rows: u64::try_from(queue_rows).unwrap_or(0),
        })
    }

    /// What was stored since `start`, for `messages` acknowledged sends.
    pub(crate) fn since(self, start: Assigned, messages: u64) -> Option<StoredPerMessage> {
        let bodies = self.bodies.saturating_sub(start.bodies);
        if messages == 0 || bodies == 0 {
            return None;
        }
        Some(StoredPerMessage {
            bodies_per_message: bodies as f64 / messages as f64,
            queue_rows_per_body: self.queue_rows.saturating_sub(start.queue_rows) as f64 / bodies as f64,
        })
    }
}
