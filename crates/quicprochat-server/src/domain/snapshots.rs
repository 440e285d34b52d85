//! Snapshots of DS group views: they shorten a group's log.
//!
//! A commit is durable once it is in the group's log (see `commits`); the
//! view it produced stays decoded in the [`ViewCache`]. Serialising that
//! view (megabytes for a large PQ group) and storing it as the group's
//! snapshot happens here, after the commit has been answered, so the
//! commit's latency does not include it. The snapshot replaces the log
//! entries it covers; a snapshot that loses a race with a newer one writes
//! nothing. Nothing depends on a snapshot being written: a view restores
//! from an older snapshot plus a longer log just the same.
//!
//! When: after a commit that leaves [`SNAPSHOT_AFTER_ENTRIES`] entries in
//! the log, so a snapshot's cost (serialising and writing the whole view)
//! is shared by several commits while a restore replays only a few; and
//! for every group with a log at start and every few seconds after
//! ([`snapshot_logged_groups`]). The latter bounds how long an entry stays
//! in the log: replaying a logged commit validates it again, and an added
//! member's KeyPackage lifetime is checked against the clock, so a commit
//! logged for a long time could stop replaying.

use super::groups::{load_group, load_roster, restore_view};
use super::views::ViewCache;
use super::DomainError;
use crate::storage::{GroupSnapshot, Store};

/// A commit that leaves this many entries in its group's log asks for a
/// snapshot.
pub const SNAPSHOT_AFTER_ENTRIES: u64 = 4;

/// What [`snapshot_group`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A snapshot through this log entry was stored.
    Written { through: u64, bytes: usize },
    /// Nothing to do: the log is empty, the group moved past the version
    /// asked for (its own snapshot follows), or a newer snapshot won.
    Skipped,
}

/// Stores a snapshot of `group_id` as of `state_version`, the version a
/// commit just produced. Takes the decoded view from `views` when it is
/// there (and puts it back), otherwise restores it from the store.
pub fn snapshot_group(
    store: &dyn Store,
    views: &ViewCache,
    group_id: &[u8],
    state_version: u64,
) -> Result<SnapshotOutcome, DomainError> {
    let roster = load_roster(store, group_id)?;
    if roster.state_version != state_version || roster.log_head <= roster.snapshot_through {
        return Ok(SnapshotOutcome::Skipped);
    }
    // `state_version` and `log_head` change together, so the kept view of
    // this version is the view through `log_head`.
    let (view, through) = match views.take(group_id, state_version) {
        Some(view) => (view, roster.log_head),
        None => {
            let record = load_group(store, group_id)?;
            if record.state_version != state_version {
                return Ok(SnapshotOutcome::Skipped);
            }
            let through = record.log.last().map_or(record.snapshot_through, |entry| entry.seq);
            (restore_view(&record)?, through)
        }
    };
    let serialised = view.to_bytes();
    let bytes = serialised.as_ref().map_or(0, Vec::len);
    views.put_back(group_id, state_version, bytes, view);
    let state = serialised.map_err(|error| DomainError::internal(format!("cannot serialise the view: {error}")))?;
    let snapshot = GroupSnapshot { group_id: group_id.to_vec(), through, state };
    if store.write_snapshot(&snapshot)? {
        Ok(SnapshotOutcome::Written { through, bytes })
    } else {
        Ok(SnapshotOutcome::Skipped)
    }
}

/// Snapshots every group whose log is not empty. Returns how many
/// snapshots were written; a group that fails is reported and skipped.
pub fn snapshot_logged_groups(store: &dyn Store, views: &ViewCache) -> Result<usize, DomainError> {
    let mut written = 0;
    for group_id in store.groups_with_log()? {
        let result = load_roster(store, &group_id)
            .and_then(|roster| snapshot_group(store, views, &group_id, roster.state_version));
        match result {
            Ok(SnapshotOutcome::Written { .. }) => written += 1,
            Ok(SnapshotOutcome::Skipped) => {}
            Err(error) => {
                tracing::warn!(group = %hex::encode(&group_id), %error, "cannot snapshot a group's view");
            }
        }
    }
    Ok(written)
}
