//! Leaving via a self-Remove proposal, and two members committing in the same epoch.

use quicprochat_core::{DsError, DsGroupView, Incoming, MlsError, CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE};

use crate::harness::{assert_delivers, assert_merges, assert_roster, group_of, Party, GROUP};

#[test]
fn leave_proposal_is_committed_by_another_member() {
    let alice = Party::new("alice", DEFAULT_CIPHERSUITE);
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let carol = Party::new("carol", DEFAULT_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob, &carol]);

    let leave = bob.leave_group(&GROUP).unwrap();
    let outcome = ds.process_proposal(&leave).unwrap();
    assert_eq!(outcome.sender, "bob");
    assert!(outcome.self_remove);
    assert!(matches!(ds.process_commit(&leave), Err(DsError::WrongContentType { .. })));
    // The proposal survives a round trip through the DS store.
    let mut ds = DsGroupView::from_bytes(&ds.to_bytes().unwrap()).unwrap();

    for member in [&alice, &carol] {
        assert_eq!(
            member.process_incoming(&GROUP, &leave).unwrap(),
            Incoming::ProposalStored { sender: "bob".to_owned() }
        );
    }
    assert!(matches!(bob.process_incoming(&GROUP, &leave).unwrap(), Incoming::Ignored { .. }));
    // Pending proposals block sending until they are committed.
    assert!(matches!(alice.encrypt(&GROUP, b"too early"), Err(MlsError::InvalidState { .. })));

    let commit = alice.commit_pending_proposals(&GROUP).unwrap().unwrap();
    assert_eq!(commit.epoch, 1);
    let outcome = ds.process_commit(&commit.commit).unwrap();
    assert_eq!(outcome.removed, ["bob"]);
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_merges(&carol, &commit.commit, "alice", 2, false);
    assert_merges(&bob, &commit.commit, "alice", 2, true);
    assert!(!bob.is_active(&GROUP).unwrap());
    assert!(alice.commit_pending_proposals(&GROUP).unwrap().is_none());
    assert_roster(&ds, &[&alice, &carol], &["alice", "carol"]);
    assert_delivers(&carol, &alice, b"bye bob");
}

#[test]
fn remove_members_covers_a_pending_leave_of_the_same_member() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let carol = Party::new("carol", CLASSICAL_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob, &carol]);
    let leave = bob.leave_group(&GROUP).unwrap();
    ds.process_proposal(&leave).unwrap();
    alice.process_incoming(&GROUP, &leave).unwrap();
    carol.process_incoming(&GROUP, &leave).unwrap();

    let commit = alice.remove_members(&GROUP, &["bob".to_owned()]).unwrap();
    let outcome = ds.process_commit(&commit.commit).unwrap();
    assert_eq!(outcome.removed, ["bob"]);
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_merges(&carol, &commit.commit, "alice", 2, false);
    assert_roster(&ds, &[&alice, &carol], &["alice", "carol"]);
}

#[test]
fn concurrent_commits_first_wins() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let carol = Party::new("carol", CLASSICAL_CIPHERSUITE);
    let dave = Party::new("dave", CLASSICAL_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob, &carol]);

    // Both commit in epoch 1.
    let dave_package = dave.generate_key_packages(1).unwrap();
    let alice_commit = alice.add_members(&GROUP, &dave_package).unwrap();
    let bob_commit = bob.remove_members(&GROUP, &["carol".to_owned()]).unwrap();
    assert_eq!((alice_commit.epoch, bob_commit.epoch), (1, 1));

    ds.process_commit(&alice_commit.commit).unwrap();
    let before = ds.to_bytes().unwrap();
    let err = ds.process_commit(&bob_commit.commit).unwrap_err();
    assert!(matches!(err, DsError::StaleEpoch { message_epoch: 1, current_epoch: 2 }));
    assert!(!err.is_peer_error());
    assert_eq!(ds.to_bytes().unwrap(), before, "a rejected commit leaves the view unchanged");

    alice.merge_pending_commit(&GROUP).unwrap();
    dave.join_from_welcome(&alice_commit.welcome.unwrap()).unwrap();
    // Alice's own commit echoed back after merging is ignored.
    assert!(matches!(alice.process_incoming(&GROUP, &alice_commit.commit).unwrap(), Incoming::Ignored { .. }));
    assert_merges(&carol, &alice_commit.commit, "alice", 2, false);
    // Bob lost: he drops his commit, catches up and commits again.
    bob.clear_pending_commit(&GROUP).unwrap();
    assert_merges(&bob, &alice_commit.commit, "alice", 2, false);
    assert_roster(&ds, &[&alice, &bob, &carol, &dave], &["alice", "bob", "carol", "dave"]);
    // The losing commit is now from a past epoch for everyone.
    assert!(matches!(carol.process_incoming(&GROUP, &bob_commit.commit).unwrap(), Incoming::Ignored { .. }));

    let retry = bob.remove_members(&GROUP, &["carol".to_owned()]).unwrap();
    assert_eq!(retry.epoch, 2);
    let outcome = ds.process_commit(&retry.commit).unwrap();
    assert_eq!((outcome.sender.as_str(), outcome.new_epoch), ("bob", 3));
    assert_eq!(outcome.removed, ["carol"]);
    bob.merge_pending_commit(&GROUP).unwrap();
    for member in [&alice, &dave] {
        assert_merges(member, &retry.commit, "bob", 3, false);
    }
    assert_merges(&carol, &retry.commit, "bob", 3, true);
    assert_roster(&ds, &[&alice, &bob, &dave], &["alice", "bob", "dave"]);
    assert_delivers(&dave, &bob, b"hi from the newcomer");
}

#[test]
fn future_epoch_is_reported_not_merged() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let carol = Party::new("carol", CLASSICAL_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob, &carol]);
    let first = alice.remove_members(&GROUP, &["carol".to_owned()]).unwrap();
    ds.process_commit(&first.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    let message = alice.encrypt(&GROUP, b"epoch 2").unwrap();
    // Bob missed the commit: the epoch-2 message is an error he can recover from.
    assert!(matches!(
        bob.process_incoming(&GROUP, &message),
        Err(MlsError::FutureEpoch { message_epoch: 2, group_epoch: 1 })
    ));
    assert_merges(&bob, &first.commit, "alice", 2, false);
    assert!(matches!(bob.process_incoming(&GROUP, &message).unwrap(), Incoming::Application { .. }));
}
