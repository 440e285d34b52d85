//! Queue quotas on SQLite: finds the queues holding more entries than the
//! quota allows (on the read side) and trims their oldest entries as an
//! ack would (on the write side).

use rusqlite::{params, Connection};

use super::{delivery, SqlResultExt};
use crate::storage::{StoreError, TrimmedQueues, TRIM_ENTRY_BUDGET};

/// Queues over their quota, as [`queues_over_quota`] finds them.
pub(super) struct OverQuota {
    /// (owner, oldest seq held, highest seq that must go), by owner.
    queues: Vec<(String, u64, u64)>,
    /// More queues are over than were listed.
    more: bool,
}

impl OverQuota {
    pub(super) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// Up to `limit` queues holding more than `max_entries` sequence numbers:
/// a pass over the devices, with an index lookup (the oldest entry) only
/// for those that ever received more than `max_entries`.
pub(super) fn queues_over_quota(
    connection: &Connection,
    max_entries: u64,
    limit: u32,
) -> Result<OverQuota, StoreError> {
    const OPERATION: &str = "trim_queues";
    let max_entries = max_entries.min(i64::MAX as u64 - 1) as i64;
    let mut queues: Vec<(String, u64, u64)> = connection
        .prepare_cached(
            "SELECT queue, oldest, last_seq - ?1 FROM
               (SELECT d.queue, d.last_seq,
                       (SELECT MIN(q.seq) FROM queue q WHERE q.device = d.queue) AS oldest
                FROM devices d WHERE d.last_seq > ?1)
             WHERE oldest <= last_seq - ?1
             ORDER BY queue LIMIT ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![max_entries, i64::from(limit) + 1], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .during(OPERATION)?;
    let more = queues.len() > limit as usize;
    queues.truncate(limit as usize);
    Ok(OverQuota { queues, more })
}

/// Trims the queues in `over` (see [`crate::storage::Store::trim_queues`]),
/// each by an ack up to its cut, at most [`TRIM_ENTRY_BUDGET`] entries.
pub(super) fn trim_queues(connection: &Connection, over: &OverQuota) -> Result<TrimmedQueues, StoreError> {
    let mut trimmed = TrimmedQueues { more: over.more, ..TrimmedQueues::default() };
    for (queue, oldest, cut) in &over.queues {
        let budget_cut = oldest.saturating_add(TRIM_ENTRY_BUDGET - 1);
        trimmed.more |= budget_cut < *cut;
        trimmed.queue_entries += delivery::ack(connection, queue, (*cut).min(budget_cut))?;
        trimmed.queues += 1;
    }
    Ok(trimmed)
}
