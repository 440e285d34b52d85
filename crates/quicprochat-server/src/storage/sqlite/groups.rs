//! Group queries: creation, lookup, roster, the atomic commit and proposal
//! writes (compare-and-set, log entry, roster, fan-out) and snapshots that
//! shorten a group's log. Callers provide the transaction.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::accounts::require_account;
use super::delivery::{decode_entry_kind, duplicate_of, encode_entry_kind, insert_fanout};
use super::SqlResultExt;
use crate::storage::{
    CommitApplied, CommitResult, CommitWrite, EntryKind, GroupCreation, GroupKind, GroupLogEntry, GroupRecord,
    GroupRoster, GroupSnapshot, GroupSummary, NewGroup, ProposalResult, ProposalWrite, StoreError,
};

pub(super) fn encode_group_kind(kind: GroupKind) -> i64 {
    match kind {
        GroupKind::Named => 0,
        GroupKind::Direct => 1,
    }
}

pub(super) fn decode_group_kind(value: i64, operation: &'static str) -> Result<GroupKind, StoreError> {
    match value {
        0 => Ok(GroupKind::Named),
        1 => Ok(GroupKind::Direct),
        other => Err(StoreError::Corrupt { operation, detail: format!("unknown group kind {other}") }),
    }
}

pub(super) fn create_group(connection: &Connection, group: &NewGroup) -> Result<GroupCreation, StoreError> {
    const OPERATION: &str = "create_group";
    require_account(connection, &group.creator, OPERATION)?;
    let inserted = connection
        .prepare_cached(
            "INSERT INTO groups
             (group_id, name, kind, creator, epoch, state_version, snapshot_bytes, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)
             ON CONFLICT (group_id) DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                group.group_id,
                group.name,
                encode_group_kind(group.kind),
                group.creator,
                group.epoch,
                group.state.len() as u64,
                group.created_at_ms
            ])
        })
        .during(OPERATION)?;
    if inserted == 0 {
        return Ok(GroupCreation::IdTaken);
    }
    connection
        .prepare_cached("INSERT INTO group_snapshots (group_id, state) VALUES (?1, ?2)")
        .and_then(|mut statement| statement.execute(params![group.group_id, group.state]))
        .during(OPERATION)?;
    let members: BTreeSet<&str> = group.members.iter().map(String::as_str).collect();
    update_roster(connection, RosterTable::Members, &group.group_id, &BTreeSet::new(), &members, OPERATION)?;
    let devices: BTreeSet<&str> = group.devices.iter().map(String::as_str).collect();
    update_roster(connection, RosterTable::Devices, &group.group_id, &BTreeSet::new(), &devices, OPERATION)?;
    Ok(GroupCreation::Created)
}

/// The device queues of a group's roster, sorted.
fn devices(connection: &Connection, group_id: &[u8], operation: &'static str) -> Result<Vec<String>, StoreError> {
    connection
        .prepare_cached("SELECT device FROM group_devices WHERE group_id = ?1 ORDER BY device")
        .and_then(|mut statement| statement.query_map(params![group_id], |row| row.get(0))?.collect())
        .during(operation)
}

/// A group's roster table: its members (accounts, with their leaving
/// flag) or its devices (one per leaf).
#[derive(Clone, Copy)]
enum RosterTable {
    Members,
    Devices,
}

impl RosterTable {
    fn delete(self) -> &'static str {
        match self {
            RosterTable::Members => "DELETE FROM group_members WHERE group_id = ?1 AND username = ?2",
            RosterTable::Devices => "DELETE FROM group_devices WHERE group_id = ?1 AND device = ?2",
        }
    }

    fn insert(self) -> &'static str {
        match self {
            RosterTable::Members => "INSERT INTO group_members (group_id, username, leaving) VALUES (?1, ?2, 0)",
            RosterTable::Devices => "INSERT INTO group_devices (group_id, device) VALUES (?1, ?2)",
        }
    }
}

/// Moves a roster table of `group_id` from `old` to `new`: rows that stay
/// are left as they are (a member keeps its leaving flag), so a commit
/// writes only who joined or left.
fn update_roster(
    connection: &Connection,
    table: RosterTable,
    group_id: &[u8],
    old: &BTreeSet<&str>,
    new: &BTreeSet<&str>,
    operation: &'static str,
) -> Result<(), StoreError> {
    let mut delete = connection.prepare_cached(table.delete()).during(operation)?;
    for gone in old.difference(new) {
        delete.execute(params![group_id, gone]).during(operation)?;
    }
    let mut insert = connection.prepare_cached(table.insert()).during(operation)?;
    for joined in new.difference(old) {
        insert.execute(params![group_id, joined]).during(operation)?;
    }
    Ok(())
}

/// `(members, leaving)` of a group, each sorted.
fn roster(
    connection: &Connection,
    group_id: &[u8],
    operation: &'static str,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let rows: Vec<(String, bool)> = connection
        .prepare_cached("SELECT username, leaving FROM group_members WHERE group_id = ?1 ORDER BY username")
        .and_then(|mut statement| {
            statement.query_map(params![group_id], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
        })
        .during(operation)?;
    let leaving = rows.iter().filter(|(_, leaving)| *leaving).map(|(name, _)| name.clone()).collect();
    Ok((rows.into_iter().map(|(name, _)| name).collect(), leaving))
}

pub(super) fn group_roster(connection: &Connection, group_id: &[u8]) -> Result<Option<GroupRoster>, StoreError> {
    const OPERATION: &str = "group_roster";
    type Raw = (String, i64, u64, u64, u64, u64, u64);
    let raw: Option<Raw> = connection
        .prepare_cached(
            "SELECT name, kind, epoch, state_version, log_head, snapshot_through, snapshot_bytes
             FROM groups WHERE group_id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![group_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
                })
                .optional()
        })
        .during(OPERATION)?;
    let Some((name, kind, epoch, state_version, log_head, snapshot_through, snapshot_bytes)) = raw else {
        return Ok(None);
    };
    let (members, leaving) = roster(connection, group_id, OPERATION)?;
    let devices = devices(connection, group_id, OPERATION)?;
    Ok(Some(GroupRoster {
        name,
        kind: decode_group_kind(kind, OPERATION)?,
        epoch,
        state_version,
        log_head,
        snapshot_through,
        snapshot_bytes,
        members,
        leaving,
        devices,
    }))
}

pub(super) fn get_group(connection: &Connection, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
    const OPERATION: &str = "get_group";
    type Raw = (String, i64, String, u64, u64, Option<Vec<u8>>, u64, u64);
    let raw: Option<Raw> = connection
        .prepare_cached(
            "SELECT g.name, g.kind, g.creator, g.epoch, g.state_version, s.state, g.snapshot_through, g.created_at_ms
             FROM groups g LEFT JOIN group_snapshots s ON s.group_id = g.group_id WHERE g.group_id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![group_id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                })
                .optional()
        })
        .during(OPERATION)?;
    let Some((name, kind, creator, epoch, state_version, state, snapshot_through, created_at_ms)) = raw else {
        return Ok(None);
    };
    let state = state.ok_or_else(|| StoreError::Corrupt {
        operation: OPERATION,
        detail: format!("group {} has no snapshot", hex::encode(group_id)),
    })?;
    let (members, leaving) = roster(connection, group_id, OPERATION)?;
    let devices = devices(connection, group_id, OPERATION)?;
    Ok(Some(GroupRecord {
        group_id: group_id.to_vec(),
        name,
        kind: decode_group_kind(kind, OPERATION)?,
        creator,
        epoch,
        state_version,
        state,
        log: group_log(connection, group_id, snapshot_through, OPERATION)?,
        snapshot_through,
        members,
        leaving,
        devices,
        created_at_ms,
    }))
}

/// The log entries of `group_id` after `through`, oldest first.
fn group_log(
    connection: &Connection,
    group_id: &[u8],
    through: u64,
    operation: &'static str,
) -> Result<Vec<GroupLogEntry>, StoreError> {
    let raw: Vec<(u64, i64, Vec<u8>)> = connection
        .prepare_cached("SELECT seq, kind, payload FROM group_log WHERE group_id = ?1 AND seq > ?2 ORDER BY seq")
        .and_then(|mut statement| {
            statement
                .query_map(params![group_id, through], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .during(operation)?;
    raw.into_iter()
        .map(|(seq, kind, payload)| Ok(GroupLogEntry { seq, kind: decode_entry_kind(kind, operation)?, payload }))
        .collect()
}

pub(super) fn groups_of(connection: &Connection, username: &str) -> Result<Vec<GroupSummary>, StoreError> {
    const OPERATION: &str = "groups_of";
    let raw: Vec<(Vec<u8>, String, i64, u64)> = connection
        .prepare_cached(
            "SELECT g.group_id, g.name, g.kind, g.epoch
             FROM group_members gm JOIN groups g ON g.group_id = gm.group_id
             WHERE gm.username = ?1 ORDER BY g.group_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![username], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
                .collect()
        })
        .during(OPERATION)?;
    raw.into_iter()
        .map(|(group_id, name, kind, epoch)| {
            Ok(GroupSummary { group_id, name, kind: decode_group_kind(kind, OPERATION)?, epoch })
        })
        .collect()
}

/// `(epoch, state_version)` of a group; `UnknownGroup` if there is none.
fn group_version(connection: &Connection, group_id: &[u8], operation: &'static str) -> Result<(u64, u64), StoreError> {
    connection
        .prepare_cached("SELECT epoch, state_version FROM groups WHERE group_id = ?1")
        .and_then(|mut statement| {
            statement.query_row(params![group_id], |row| Ok((row.get(0)?, row.get(1)?))).optional()
        })
        .during(operation)?
        .ok_or_else(|| StoreError::unknown_group(group_id))
}

/// Moves the group to `epoch` and appends `payload` to its log; returns the
/// new state version and the entry's seq.
fn append_to_log(
    connection: &Connection,
    group_id: &[u8],
    epoch: u64,
    kind: EntryKind,
    payload: &[u8],
    operation: &'static str,
) -> Result<(u64, u64), StoreError> {
    let (state_version, seq): (u64, u64) = connection
        .prepare_cached(
            "UPDATE groups SET epoch = ?2, state_version = state_version + 1, log_head = log_head + 1
             WHERE group_id = ?1 RETURNING state_version, log_head",
        )
        .and_then(|mut statement| statement.query_row(params![group_id, epoch], |row| Ok((row.get(0)?, row.get(1)?))))
        .during(operation)?;
    connection
        .prepare_cached("INSERT INTO group_log (group_id, seq, kind, payload) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut statement| statement.execute(params![group_id, seq, encode_entry_kind(kind), payload]))
        .during(operation)?;
    Ok((state_version, seq))
}

pub(super) fn apply_commit(connection: &Connection, write: &CommitWrite) -> Result<CommitResult, StoreError> {
    const OPERATION: &str = "apply_commit";
    let (current_epoch, _) = group_version(connection, &write.group_id, OPERATION)?;
    if current_epoch != write.expected_epoch {
        return Ok(CommitResult::EpochMismatch { current_epoch });
    }
    if duplicate_of(connection, &write.commit.message, OPERATION)?.is_some() {
        return Err(StoreError::Conflict {
            operation: OPERATION,
            detail: "message id already used by this sender".to_owned(),
        });
    }
    // Before any write: a refused commit changes nothing.
    let sender = &write.commit.message.sender;
    if let Some(init_key) = super::accounts::consume_served(connection, sender, &write.served, OPERATION)? {
        return Ok(CommitResult::NotServed { init_key });
    }
    let (old_members, _) = roster(connection, &write.group_id, OPERATION)?;
    let payload = &write.commit.message.payload;
    let (state_version, seq) =
        append_to_log(connection, &write.group_id, write.new_epoch, EntryKind::Commit, payload, OPERATION)?;
    if let Some(state) = &write.snapshot {
        store_snapshot(connection, &write.group_id, seq, state, OPERATION)?;
    }
    let old: BTreeSet<&str> = old_members.iter().map(String::as_str).collect();
    let new: BTreeSet<&str> = write.new_members.iter().map(String::as_str).collect();
    update_roster(connection, RosterTable::Members, &write.group_id, &old, &new, OPERATION)?;
    let old_devices = devices(connection, &write.group_id, OPERATION)?;
    let old: BTreeSet<&str> = old_devices.iter().map(String::as_str).collect();
    let new: BTreeSet<&str> = write.new_devices.iter().map(String::as_str).collect();
    update_roster(connection, RosterTable::Devices, &write.group_id, &old, &new, OPERATION)?;
    connection
        .prepare_cached("UPDATE group_members SET leaving = 0 WHERE group_id = ?1 AND leaving = 1")
        .and_then(|mut statement| statement.execute(params![write.group_id]))
        .during(OPERATION)?;
    let welcome = write
        .welcome
        .as_ref()
        .map(|w| insert_fanout(connection, &w.message, &w.recipients, false, OPERATION))
        .transpose()?;
    let commit = insert_fanout(connection, &write.commit.message, &write.commit.recipients, true, OPERATION)?;
    super::federation::append_all(connection, &write.outbound)?;
    Ok(CommitResult::Applied(CommitApplied { commit, welcome, state_version }))
}

pub(super) fn apply_proposal(connection: &Connection, write: &ProposalWrite) -> Result<ProposalResult, StoreError> {
    const OPERATION: &str = "apply_proposal";
    if let Some(first) = duplicate_of(connection, &write.proposal.message, OPERATION)? {
        return Ok(ProposalResult::Applied(first));
    }
    let (current_epoch, current_state_version) = group_version(connection, &write.group_id, OPERATION)?;
    if current_state_version != write.expected_state_version {
        return Ok(ProposalResult::StateChanged { current_epoch, current_state_version });
    }
    let payload = &write.proposal.message.payload;
    append_to_log(connection, &write.group_id, current_epoch, EntryKind::Proposal, payload, OPERATION)?;
    let mut mark_leaving = connection
        .prepare_cached("UPDATE group_members SET leaving = 1 WHERE group_id = ?1 AND username = ?2")
        .during(OPERATION)?;
    for username in &write.leaving {
        mark_leaving.execute(params![write.group_id, username]).during(OPERATION)?;
    }
    let outcome = insert_fanout(connection, &write.proposal.message, &write.proposal.recipients, true, OPERATION)?;
    super::federation::append_all(connection, &write.outbound)?;
    Ok(ProposalResult::Applied(outcome))
}

pub(super) fn write_snapshot(connection: &Connection, snapshot: &GroupSnapshot) -> Result<bool, StoreError> {
    store_snapshot(connection, &snapshot.group_id, snapshot.through, &snapshot.state, "write_snapshot")
}

/// Stores `state` as the group's view through log entry `through`, unless
/// a snapshot at least as new is stored or the log does not reach it;
/// drops the log entries it covers. Returns whether it was stored.
fn store_snapshot(
    connection: &Connection,
    group_id: &[u8],
    through: u64,
    state: &[u8],
    operation: &'static str,
) -> Result<bool, StoreError> {
    let written = connection
        .prepare_cached(
            "UPDATE groups SET snapshot_through = ?2, snapshot_bytes = ?3
             WHERE group_id = ?1 AND snapshot_through < ?2 AND log_head >= ?2",
        )
        .and_then(|mut statement| statement.execute(params![group_id, through, state.len() as u64]))
        .during(operation)?;
    if written == 0 {
        return Ok(false);
    }
    connection
        .prepare_cached("UPDATE group_snapshots SET state = ?2 WHERE group_id = ?1")
        .and_then(|mut statement| statement.execute(params![group_id, state]))
        .during(operation)?;
    connection
        .prepare_cached("DELETE FROM group_log WHERE group_id = ?1 AND seq <= ?2")
        .and_then(|mut statement| statement.execute(params![group_id, through]))
        .during(operation)?;
    Ok(true)
}

pub(super) fn groups_with_log(connection: &Connection) -> Result<Vec<Vec<u8>>, StoreError> {
    connection
        .prepare_cached("SELECT group_id FROM groups WHERE log_head > snapshot_through ORDER BY group_id")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .during("groups_with_log")
}
