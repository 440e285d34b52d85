//! Domain tests: a group's view is its snapshot plus its log, whichever
//! way it was last stored, and snapshots only shorten the log.

use super::{
    add, add_with, alice_bob_carol, commit_request, drain, finish, gid, leave, new_group, policy, store, user,
    view_stats, User, NOW, VIEWS,
};
use crate::domain::commits::{submit_commit, LeaveGroup};
use crate::domain::devices::Caller;
use crate::domain::groups::members;
use crate::domain::snapshots::{snapshot_group, snapshot_logged_groups, SnapshotOutcome, ViewSource};
use crate::domain::views::ViewCache;
use crate::storage::{EntryKind, Store};

/// Adds `invitee` with a view cache that keeps nothing, so the view is
/// restored from the store (snapshot, then log replay).
fn add_uncached(store: &dyn Store, committer: &User, group_id: &[u8], invitee: &User, message_id: &[u8]) -> u64 {
    add_with(store, &ViewCache::with_budget(0), committer, group_id, &[invitee], message_id).unwrap()
}

fn state_version(store: &dyn Store, group_id: &[u8]) -> u64 {
    store.group_roster(group_id).unwrap().unwrap().state_version
}

/// Removes `member` in a commit of `committer` with the view cache `views`.
fn remove_with(store: &dyn Store, views: &ViewCache, committer: &User, group_id: &[u8], member: &str) -> u64 {
    let pending = committer.client.remove_members(group_id, &[member.to_owned()]).unwrap();
    let message_id = format!("remove-{member}");
    let request = commit_request(group_id, &pending, message_id.as_bytes());
    let accepted = submit_commit(store, views, Caller::first_device(&committer.name), &request, NOW, &policy());
    finish(committer, group_id, accepted.map(|accepted| accepted.epoch)).unwrap()
}

/// [`remove_with`] with this test's view cache.
fn remove(store: &dyn Store, committer: &User, group_id: &[u8], member: &str) -> u64 {
    VIEWS.with(|views| remove_with(store, views, committer, group_id, member))
}

/// Review F4: a commit that adds members is stored with its snapshot, so a
/// restore never replays an Add (whose KeyPackage lifetime OpenMLS checks
/// against the clock); other commits are logged until a snapshot covers them.
#[test]
fn commits_replay_from_the_log_until_a_snapshot_covers_them() {
    let store = store();
    let (alice, bob, carol) = (user(&store, "alice"), user(&store, "bob"), user(&store, "carol"));
    let (dave, erin) = (user(&store, "dave"), user(&store, "erin"));
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob, &carol, &dave], b"add-three").unwrap();
    add_uncached(&store, &alice, &group_id, &erin, b"add-erin");
    let added = store.get_group(&group_id).unwrap().unwrap();
    assert!(added.log.is_empty(), "each add was stored with its snapshot");
    assert_eq!((added.snapshot_through, added.log_head()), (2, 2));

    remove(&store, &alice, &group_id, "erin");
    let logged = store.get_group(&group_id).unwrap().unwrap();
    assert_eq!(logged.log.len(), 1, "the removal is logged, the snapshot is the last add's");
    assert_eq!(logged.log[0].kind, EntryKind::Commit);

    // Restored from the snapshot plus the logged commit.
    assert_eq!(remove_with(&store, &ViewCache::with_budget(0), &alice, &group_id, "dave"), 4);
    assert_eq!(store.get_group(&group_id).unwrap().unwrap().log.len(), 2);

    // No view of this version is kept: only a restore can snapshot it.
    let version = state_version(&store, &group_id);
    let snapshot = |source| VIEWS.with(|views| snapshot_group(&store, views, &group_id, version, source)).unwrap();
    assert_eq!(snapshot(ViewSource::Kept), SnapshotOutcome::Skipped);
    let outcome = snapshot(ViewSource::KeptOrRestored);
    assert!(matches!(outcome, SnapshotOutcome::Written { through: 4, .. }), "{outcome:?}");
    let snapshotted = store.get_group(&group_id).unwrap().unwrap();
    assert!(snapshotted.log.is_empty());
    assert_eq!((snapshotted.snapshot_through, snapshotted.state_version), (4, version));
    assert!(store.groups_with_log().unwrap().is_empty());

    // The next commit builds on the snapshot; the view it keeps is the one
    // the following snapshot serialises, and it is put back for the next.
    remove(&store, &alice, &group_id, "carol");
    let version = state_version(&store, &group_id);
    let outcome = VIEWS.with(|views| snapshot_group(&store, views, &group_id, version, ViewSource::Kept)).unwrap();
    assert!(matches!(outcome, SnapshotOutcome::Written { through: 5, .. }), "{outcome:?}");
    let before = view_stats();
    add(&store, &alice, &group_id, &[&dave], b"add-dave-again").unwrap();
    assert_eq!(view_stats().hits, before.hits + 1, "the snapshot put the view back");
    assert_eq!(members(&store, Caller::first_device("alice"), &group_id).unwrap().members, ["alice", "bob", "dave"]);
    let restored = crate::domain::groups::restore_view(&store.get_group(&group_id).unwrap().unwrap()).unwrap();
    assert_eq!(restored.epoch(), 6);
}

#[test]
fn a_logged_leave_replays_so_a_commit_can_reference_it() {
    let store = store();
    let group_id = gid(6);
    let (alice, bob, _carol) = alice_bob_carol(&store, &group_id);
    let proposal = bob.client.leave_group(&group_id).unwrap();
    leave(&store, "bob", &LeaveGroup { group_id: &group_id, proposal: &proposal, message_id: b"bye" }, NOW).unwrap();
    let logged = store.get_group(&group_id).unwrap().unwrap();
    let kinds: Vec<EntryKind> = logged.log.iter().map(|entry| entry.kind).collect();
    assert_eq!(kinds, [EntryKind::Proposal], "the add before it was stored with its snapshot");
    // A snapshot through the proposal, restored (nothing kept), holds it.
    let version = state_version(&store, &group_id);
    let outcome = snapshot_group(&store, &ViewCache::with_budget(0), &group_id, version, ViewSource::KeptOrRestored);
    let through = logged.log[0].seq;
    assert!(matches!(outcome, Ok(SnapshotOutcome::Written { through: t, .. }) if t == through), "{outcome:?}");
    drain(&store, &alice);
    let pending = alice.client.commit_pending_proposals(&group_id).unwrap().unwrap();
    let removal = commit_request(&group_id, &pending, b"remove-bob");
    let accepted =
        submit_commit(&store, &ViewCache::with_budget(0), Caller::first_device("alice"), &removal, NOW, &policy());
    assert_eq!(finish(&alice, &group_id, accepted.map(|accepted| accepted.epoch)).unwrap(), 2);
    assert_eq!(members(&store, Caller::first_device("alice"), &group_id).unwrap().members, ["alice", "carol"]);
}

#[test]
fn a_snapshot_for_a_version_the_group_moved_past_writes_nothing() {
    let store = store();
    let (alice, bob, carol) = (user(&store, "alice"), user(&store, "bob"), user(&store, "carol"));
    let group_id = gid(2);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob, &carol], b"add-two").unwrap();
    remove(&store, &alice, &group_id, "carol");
    let old = state_version(&store, &group_id);
    remove(&store, &alice, &group_id, "bob");
    let outcome =
        VIEWS.with(|views| snapshot_group(&store, views, &group_id, old, ViewSource::KeptOrRestored)).unwrap();
    assert_eq!(outcome, SnapshotOutcome::Skipped);
    assert_eq!(store.get_group(&group_id).unwrap().unwrap().log.len(), 2);
}

#[test]
fn at_start_every_group_with_a_log_is_snapshotted() {
    let store = store();
    let (alice, bob, carol) = (user(&store, "alice"), user(&store, "bob"), user(&store, "carol"));
    let (first, second, idle) = (gid(3), gid(4), gid(5));
    new_group(&store, &alice, &first);
    new_group(&store, &alice, &second);
    new_group(&store, &alice, &idle);
    add(&store, &alice, &first, &[&bob], b"add-bob").unwrap();
    remove(&store, &alice, &first, "bob");
    add(&store, &alice, &second, &[&carol], b"add-carol").unwrap();
    remove(&store, &alice, &second, "carol");
    assert_eq!(store.groups_with_log().unwrap(), [first.clone(), second.clone()]);

    // A restarted server: nothing decoded is kept.
    let nothing_kept = ViewCache::with_budget(0);
    assert_eq!(snapshot_logged_groups(&store, &nothing_kept, ViewSource::Kept).unwrap(), 0);
    assert_eq!(snapshot_logged_groups(&store, &nothing_kept, ViewSource::KeptOrRestored).unwrap(), 2);
    assert!(store.groups_with_log().unwrap().is_empty());
    assert_eq!(add_uncached(&store, &alice, &first, &carol, b"add-carol-1"), 3);
    assert_eq!(members(&store, Caller::first_device("alice"), &first).unwrap().members, ["alice", "carol"]);
}

/// Review F4: a group whose restore fails is left alone by the next sweeps,
/// longer after each failure.
#[test]
fn a_group_whose_restore_fails_is_backed_off() {
    let store = store();
    let (alice, bob) = (user(&store, "alice"), user(&store, "bob"));
    let group_id = gid(7);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    remove(&store, &alice, &group_id, "bob");
    // Break the snapshot the log replays onto.
    store.corrupt_snapshot_for_tests(&group_id);
    let views = ViewCache::with_budget(0);
    let sweep = || snapshot_logged_groups(&store, &views, ViewSource::KeptOrRestored).unwrap();
    assert_eq!(sweep(), 0, "the restore failed");
    assert!(views.sweep_skips(&group_id) && views.sweep_skips(&group_id), "the next two sweeps skip it");
    assert!(!views.sweep_skips(&group_id), "then it is tried again");
}
