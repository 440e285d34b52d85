//! Domain tests: a commit takes the decoded view the previous commit kept,
//! and never one the stored state has moved past.

use super::{
    add, alice_bob_carol, assert_status, commit_request, drain, finish, gid, leave, new_group, store, submit, user,
    view_stats, NOW,
};
use crate::domain::commits::{LeaveGroup, SubmitCommit};
use crate::domain::devices::Caller;
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
    assert_eq!(members(&store, Caller::first_device("alice"), &group_id).unwrap().members, ["alice", "bob", "carol"]);
}

#[test]
fn a_leave_makes_the_kept_view_stale_and_a_failed_commit_keeps_it() {
    let store = store();
    let group_id = gid(2);
    let (alice, bob, _carol) = alice_bob_carol(&store, &group_id);
    let dave = user(&store, "dave");

    // The leave stores a proposal in the view: the kept view is one state behind.
    let proposal = bob.client.leave_group(&group_id).unwrap();
    leave(&store, "bob", &LeaveGroup { group_id: &group_id, proposal: &proposal, message_id: b"bye" }, NOW).unwrap();
    drain(&store, &alice);
    let before = view_stats();
    let pending = alice.client.commit_pending_proposals(&group_id).unwrap().unwrap();
    let removal = commit_request(&group_id, &pending, b"remove-bob");
    // A view without the proposal could not resolve the commit's reference to it.
    assert_eq!(finish(&alice, &group_id, submit(&store, "alice", &removal, NOW)).unwrap(), 2);
    assert_eq!(view_stats().misses, before.misses + 1, "the stale view was not used");

    // Junk is refused before the view is looked at: it stays kept.
    let junk = SubmitCommit { group_id: &group_id, epoch: 2, commit: b"junk", welcome: None, message_id: b"junk" };
    assert_status(submit(&store, "alice", &junk, NOW), "INVALID_ARGUMENT", "malformed");
    let before = view_stats();
    // A commit whose framing is right but whose signature is not fails in
    // the view, which it leaves unchanged and kept (review F3).
    let pending = alice.client.remove_members(&group_id, &["carol".to_owned()]).unwrap();
    // The commit ends with its signature (64 bytes), confirmation tag and
    // membership tag (32 each, with length prefixes): flip a signature byte.
    let mut forged = pending.commit.clone();
    let in_signature = forged.len() - 80;
    forged[in_signature] ^= 1;
    let forged = SubmitCommit { group_id: &group_id, epoch: 2, commit: &forged, welcome: None, message_id: b"forged" };
    assert_status(submit(&store, "alice", &forged, NOW), "INVALID_ARGUMENT", "");
    assert_eq!(view_stats().hits, before.hits + 1);
    alice.client.clear_pending_commit(&group_id).unwrap();
    let before = view_stats();
    add(&store, &alice, &group_id, &[&dave], b"add-dave").unwrap();
    assert_eq!(view_stats().hits, before.hits + 1, "the next commit took the view the forged one left");
    assert_eq!(members(&store, Caller::first_device("alice"), &group_id).unwrap().members, ["alice", "carol", "dave"]);
}
