//! What the local store keeps about a group beyond its conversation row:
//! that we are leaving it (and in which epoch we last sent the leave), that
//! we joined it from a Welcome not yet checked against the server's commit,
//! and that it broke (a commit the server accepted that we cannot process).

use quicprochat_core::Savepoint;
use rusqlite::{params, OptionalExtension};

use super::LocalStore;

/// How a group broke: the server accepted a commit of `culprit` for
/// `epoch` that this device cannot process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The epoch the bad commit was for.
    pub epoch: u64,
    /// The member the commit names as its sender.
    pub culprit: String,
    /// Why this device refused the commit (empty for a group marked broken
    /// before the reason was kept).
    pub reason: String,
}

impl LocalStore {
    /// Leaves a conversation: it is no longer shown or sent to, and until a
    /// commit removes us, each commit that does not makes the client send
    /// its leave again (the proposal, sent at `epoch`, died with the epoch).
    pub fn leave(&self, group_id: &[u8], epoch: u64) -> rusqlite::Result<()> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        transaction.execute("UPDATE conversations SET active = 0 WHERE group_id = ?1", params![group_id])?;
        transaction.execute(
            "INSERT INTO leaving (group_id, epoch) VALUES (?1, ?2) ON CONFLICT (group_id) DO UPDATE SET epoch = ?2",
            params![group_id, epoch as i64],
        )?;
        transaction.commit()
    }

    /// The epoch our pending leave of this group was sent in, if we are leaving it.
    pub fn leaving_epoch(&self, group_id: &[u8]) -> rusqlite::Result<Option<u64>> {
        self.group_epoch("SELECT epoch FROM leaving WHERE group_id = ?1", group_id)
    }

    /// We are no longer leaving this group (removed, or joined again).
    pub fn stop_leaving(&self, group_id: &[u8]) -> rusqlite::Result<()> {
        self.conn().execute("DELETE FROM leaving WHERE group_id = ?1", params![group_id])?;
        Ok(())
    }

    /// Records that we joined the group at `epoch` from a Welcome not yet
    /// checked against the commit the server sequenced for it.
    pub fn mark_unverified(&self, group_id: &[u8], epoch: u64) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO unverified_joins (group_id, epoch) VALUES (?1, ?2)
             ON CONFLICT (group_id) DO UPDATE SET epoch = ?2",
            params![group_id, epoch as i64],
        )?;
        Ok(())
    }

    /// The epoch of our unchecked join of this group, if there is one.
    pub fn unverified_join(&self, group_id: &[u8]) -> rusqlite::Result<Option<u64>> {
        self.group_epoch("SELECT epoch FROM unverified_joins WHERE group_id = ?1", group_id)
    }

    /// The epoch `query` (one row's epoch for a group id) finds for `group_id`.
    fn group_epoch(&self, query: &str, group_id: &[u8]) -> rusqlite::Result<Option<u64>> {
        self.conn()
            .query_row(query, params![group_id], |row| row.get::<_, i64>(0))
            .optional()
            .map(|epoch| epoch.map(|epoch| epoch as u64))
    }

    /// The join of this group was checked (or given up).
    pub fn clear_unverified(&self, group_id: &[u8]) -> rusqlite::Result<()> {
        self.conn().execute("DELETE FROM unverified_joins WHERE group_id = ?1", params![group_id])?;
        Ok(())
    }

    /// Records that the group forked at `epoch`: the server accepted a
    /// commit of `culprit` that we cannot process. The first record stays.
    pub fn mark_broken(&self, group_id: &[u8], epoch: u64, culprit: &str, reason: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO broken_groups (group_id, epoch, culprit, reason) VALUES (?1, ?2, ?3, ?4)",
            params![group_id, epoch as i64, culprit, reason],
        )?;
        Ok(())
    }

    /// How the group broke, if it did.
    pub fn broken(&self, group_id: &[u8]) -> rusqlite::Result<Option<Broken>> {
        self.conn()
            .query_row(
                "SELECT epoch, culprit, COALESCE(reason, '') FROM broken_groups WHERE group_id = ?1",
                params![group_id],
                |row| Ok(Broken { epoch: row.get::<_, i64>(0)? as u64, culprit: row.get(1)?, reason: row.get(2)? }),
            )
            .optional()
    }

    /// Every broken group, by group id.
    pub fn broken_groups(&self) -> rusqlite::Result<Vec<(Vec<u8>, Broken)>> {
        let connection = self.conn();
        let mut statement = connection.prepare_cached(
            "SELECT group_id, epoch, culprit, COALESCE(reason, '') FROM broken_groups ORDER BY group_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, Broken { epoch: row.get::<_, i64>(1)? as u64, culprit: row.get(2)?, reason: row.get(3)? }))
        })?;
        rows.collect()
    }

    /// A broken group is replaced (or given up): no longer active, no
    /// longer broken.
    pub fn retire_broken(&self, group_id: &[u8]) -> rusqlite::Result<()> {
        let connection = self.conn();
        let transaction = Savepoint::begin(&connection)?;
        transaction.execute("UPDATE conversations SET active = 0 WHERE group_id = ?1", params![group_id])?;
        transaction.execute("DELETE FROM broken_groups WHERE group_id = ?1", params![group_id])?;
        transaction.commit()
    }
}
