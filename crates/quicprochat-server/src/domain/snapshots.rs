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
//! the log (commits and leave proposals), so a snapshot's cost (serialising
//! and writing the whole view) is shared by several commits while a
//! restore replays only a few; for every group with a log at start and
//! every few seconds after ([`snapshot_logged_groups`]); and at shutdown,
//! from the views still kept. The sweeps bound how long an entry stays in
//! the log: replaying a logged commit validates it again, and an added
//! member's KeyPackage lifetime is checked against the clock, so a commit
//! logged for a long time (a crash, then weeks down) could stop replaying.

use super::groups::{load_group, load_roster, restore_view, serialise_view};
use super::views::ViewCache;
use super::DomainError;
use crate::storage::{GroupRoster, GroupSnapshot, Store};

/// A commit that leaves this many entries in its group's log asks for a
/// snapshot.
pub const SNAPSHOT_AFTER_ENTRIES: u64 = 4;

/// What [`snapshot_group`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A snapshot through this log entry was stored.
    Written { through: u64, bytes: usize },
    /// Nothing to do: the log is empty, the group moved past the version
    /// asked for (its own snapshot follows), the view is not kept and was
    /// not to be restored, or a newer snapshot won.
    Skipped,
}

/// Where [`snapshot_group`] may get the view from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewSource {
    /// Only the decoded view kept in the cache (cheap; after a commit, at
    /// shutdown).
    Kept,
    /// The cache, else a restore from the store (snapshot plus log replay;
    /// for housekeeping, which must shorten every log eventually).
    KeptOrRestored,
}

/// Stores a snapshot of `group_id` as of `state_version`, the version a
/// commit just produced. A view taken from the cache is put back after
/// serialising; a restored one is not kept (it would only take the cache
/// budget from groups in use).
pub fn snapshot_group(
    store: &dyn Store,
    views: &ViewCache,
    group_id: &[u8],
    state_version: u64,
    source: ViewSource,
) -> Result<SnapshotOutcome, DomainError> {
    let roster = load_roster(store, group_id)?;
    if roster.state_version != state_version {
        return Ok(SnapshotOutcome::Skipped);
    }
    snapshot_roster(store, views, group_id, &roster, source)
}

fn snapshot_roster(
    store: &dyn Store,
    views: &ViewCache,
    group_id: &[u8],
    roster: &GroupRoster,
    source: ViewSource,
) -> Result<SnapshotOutcome, DomainError> {
    if roster.log_head <= roster.snapshot_through {
        return Ok(SnapshotOutcome::Skipped);
    }
    // `state_version` and `log_head` change together, so the kept view of
    // this version is the view through `log_head`.
    let (through, state) = match views.take_exact(group_id, roster.state_version) {
        Some(view) => {
            let state = serialise_view(&view)?;
            views.put_back(group_id, roster.state_version, state.len(), view);
            (roster.log_head, state)
        }
        None if source == ViewSource::KeptOrRestored => {
            // A group whose restores keep failing is tried less and less
            // often; one a commit is restoring now is left to it.
            if views.sweep_skips(group_id) {
                return Ok(SnapshotOutcome::Skipped);
            }
            let Some(_claim) = views.claim_restore(group_id) else { return Ok(SnapshotOutcome::Skipped) };
            let record = load_group(store, group_id)?;
            let restored = restore_view(&record);
            views.sweep_restored(group_id, restored.is_ok());
            (record.log_head(), serialise_view(&restored?)?)
        }
        None => return Ok(SnapshotOutcome::Skipped),
    };
    let bytes = state.len();
    if store.write_snapshot(&GroupSnapshot { group_id: group_id.to_vec(), through, state })? {
        Ok(SnapshotOutcome::Written { through, bytes })
    } else {
        Ok(SnapshotOutcome::Skipped)
    }
}

/// Snapshots every group whose log is not empty, taking views from
/// `source`. Returns how many snapshots were written; a group that fails
/// is reported and skipped.
pub fn snapshot_logged_groups(store: &dyn Store, views: &ViewCache, source: ViewSource) -> Result<usize, DomainError> {
    let mut written = 0;
    for group_id in store.groups_with_log()? {
        let result =
            load_roster(store, &group_id).and_then(|roster| snapshot_roster(store, views, &group_id, &roster, source));
        if report(&group_id, result) {
            written += 1;
        }
    }
    Ok(written)
}

/// Logs what a snapshot of `group_id` did (a failure costs only a longer
/// log, so it is a warning); returns whether one was written.
pub fn report(group_id: &[u8], result: Result<SnapshotOutcome, DomainError>) -> bool {
    match result {
        Ok(SnapshotOutcome::Written { through, bytes }) => {
            tracing::debug!(group = %hex::encode(group_id), through, bytes, "group snapshot stored");
            true
        }
        Ok(SnapshotOutcome::Skipped) => false,
        Err(error) => {
            tracing::warn!(group = %hex::encode(group_id), %error, "cannot snapshot a group's view");
            false
        }
    }
}
