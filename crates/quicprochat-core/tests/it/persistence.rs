//! State survives restarts: client databases and serialised DS views.

use quicprochat_core::{DsGroupView, Identity, MlsClient, CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE};

use crate::harness::{assert_delivers, assert_merges, assert_roster, group_of, Party, GROUP};

fn reopen(party: Party) -> Party {
    let Party { client, dir, identity_bytes } = party;
    let name = client.username().to_owned();
    let ciphersuite = client.ciphersuite();
    drop(client);
    let identity = Identity::from_bytes(&identity_bytes).unwrap();
    let client = MlsClient::open_with_ciphersuite(&dir.path().join("mls.db"), identity, &name, ciphersuite).unwrap();
    Party { client, dir, identity_bytes }
}

#[test]
fn client_state_survives_reopen() {
    let alice = Party::new("alice", DEFAULT_CIPHERSUITE);
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let ds = group_of(&alice, &[&bob]);
    assert_delivers(&alice, &bob, b"before restart");
    // A key package generated before the restart is still usable after it.
    let carol = Party::new("carol", DEFAULT_CIPHERSUITE);
    let carol_package = carol.generate_key_packages(1).unwrap();
    let carol = reopen(carol);

    let alice = reopen(alice);
    let bob = reopen(bob);
    assert!(alice.has_group(&GROUP).unwrap());
    assert_roster(&ds, &[&alice, &bob], &["alice", "bob"]);
    assert_delivers(&bob, &alice, b"after restart");
    assert_delivers(&alice, &bob, b"and back");

    let mut ds = ds;
    let add = alice.add_members(&GROUP, &carol_package).unwrap();
    ds.process_commit(&add.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    carol.join_from_welcome(&add.welcome.unwrap()).unwrap();
    assert_merges(&bob, &add.commit, "alice", 2, false);
    assert_roster(&ds, &[&alice, &bob, &carol], &["alice", "bob", "carol"]);
    assert_delivers(&carol, &bob, b"hello from carol");
}

#[test]
fn pending_commit_survives_reopen() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob]);
    let removal = alice.remove_members(&GROUP, &["bob".to_owned()]).unwrap();
    let alice = reopen(alice);
    ds.process_commit(&removal.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_roster(&ds, &[&alice], &["alice"]);
}

#[test]
fn ds_view_round_trip_keeps_following_commits() {
    let alice = Party::new("alice", DEFAULT_CIPHERSUITE);
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let carol = Party::new("carol", DEFAULT_CIPHERSUITE);
    let ds = group_of(&alice, &[&bob]);
    let bytes = ds.to_bytes().unwrap();
    let mut restored = DsGroupView::from_bytes(&bytes).unwrap();
    assert_eq!(restored.group_id(), ds.group_id());
    assert_eq!(restored.epoch(), ds.epoch());
    assert_eq!(restored.members(), ds.members());
    assert_eq!(restored.to_bytes().unwrap(), bytes);

    let add = alice.add_members(&GROUP, &carol.generate_key_packages(1).unwrap()).unwrap();
    let outcome = restored.process_commit(&add.commit).unwrap();
    assert_eq!(outcome.new_epoch, 2);
    alice.merge_pending_commit(&GROUP).unwrap();
    carol.join_from_welcome(&add.welcome.unwrap()).unwrap();
    assert_merges(&bob, &add.commit, "alice", 2, false);

    let mut again = DsGroupView::from_bytes(&restored.to_bytes().unwrap()).unwrap();
    let removal = carol.remove_members(&GROUP, &["bob".to_owned()]).unwrap();
    assert_eq!(again.process_commit(&removal.commit).unwrap().removed, ["bob"]);
    carol.merge_pending_commit(&GROUP).unwrap();
    assert_merges(&alice, &removal.commit, "carol", 3, false);
    assert_roster(&again, &[&alice, &carol], &["alice", "carol"]);
}
