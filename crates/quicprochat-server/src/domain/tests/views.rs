//! Domain tests: a commit takes the decoded view the previous commit kept,
//! and never one the stored state has moved past.

use super::{
    add, alice_bob_carol, assert_status, commit_request, drain, finish, gid, new_group, store, submit, user,
    view_stats, NOW,
};
use crate::domain::commits::{leave_group, LeaveGroup, SubmitCommit};
use crate::domain::groups::members;

#[test]
fn a_commit_takes_the_view_the_previous_commit_kept() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    let after_first = view_stats();
    assert_eq!(after_first.hits, 0, "nothing was kept before the first commit");
    add(&store, &alice, &group_id, &[&carol], b"add-carol").unwrap();
    assert_eq!(view_stats().hits, 1, "the second commit took the first one's view");
    assert_eq!(members(&store, "alice", &group_id).unwrap().members, ["alice", "bob", "carol"]);
}

#[test]
fn a_leave_makes_the_kept_view_stale_and_a_failed_commit_drops_it() {
    let store = store();
    let group_id = gid(2);
    let (alice, bob, _carol) = alice_bob_carol(&store, &group_id);
    let dave = user(&store, "dave");

    // The leave stores a proposal in the view: the kept view is one state behind.
    let proposal = bob.client.leave_group(&group_id).unwrap();
    leave_group(&store, "bob", &LeaveGroup { group_id: &group_id, proposal: &proposal, message_id: b"bye" }, NOW)
        .unwrap();
    drain(&store, &alice);
    let before = view_stats();
    let pending = alice.client.commit_pending_proposals(&group_id).unwrap().unwrap();
    let removal = commit_request(&group_id, &pending, b"remove-bob");
    // A view without the proposal could not resolve the commit's reference to it.
    assert_eq!(finish(&alice, &group_id, submit(&store, "alice", &removal, NOW)).unwrap(), 2);
    assert_eq!(view_stats().misses, before.misses + 1, "the stale view was not used");

    // A commit that fails validation takes the view and does not put it back.
    let junk = SubmitCommit { group_id: &group_id, epoch: 2, commit: b"junk", welcome: None, message_id: b"junk" };
    assert_status(submit(&store, "alice", &junk, NOW), "INVALID_ARGUMENT", "");
    let before = view_stats();
    add(&store, &alice, &group_id, &[&dave], b"add-dave").unwrap();
    assert_eq!(view_stats().misses, before.misses + 1, "the next commit reloaded the view");
    assert_eq!(members(&store, "alice", &group_id).unwrap().members, ["alice", "carol", "dave"]);
}
