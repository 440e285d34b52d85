//! Create, add, message, remove: clients and the DS view stay in step.

use quicprochat_core::{
    inspect_application, safety_number, validate_key_package, Ciphersuite, DsError, DsGroupView, Incoming, MlsError,
    CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE,
};

use crate::harness::{assert_delivers, assert_merges, assert_roster, Party, GROUP};

fn full_flow(ciphersuite: Ciphersuite) {
    let alice = Party::new("alice", ciphersuite);
    let bob = Party::new("bob", ciphersuite);
    let carol = Party::new("carol", ciphersuite);

    let bootstrap = alice.create_group(&GROUP).unwrap();
    let mut ds = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap();
    assert_eq!(ds.ciphersuite(), ciphersuite);
    assert_roster(&ds, &[&alice], &["alice"]);

    let bob_package = bob.generate_key_packages(1).unwrap().remove(0);
    let carol_package = carol.generate_last_resort_key_package().unwrap();
    let carol_info = validate_key_package(&carol_package).unwrap();
    assert_eq!(carol_info.username, "carol");
    assert_eq!(carol_info.identity_key, carol.identity().public_key());
    assert!(carol_info.last_resort);

    let pending = alice.add_members(&GROUP, &[bob_package, carol_package]).unwrap();
    assert_eq!(pending.epoch, 0);
    assert_eq!(alice.epoch(&GROUP).unwrap(), 0, "not merged before the DS accepts");
    let outcome = ds.process_commit(&pending.commit).unwrap();
    assert_eq!(outcome.sender, "alice");
    assert_eq!(outcome.new_epoch, 1);
    let added: Vec<&str> = outcome.added.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(added, ["bob", "carol"]);
    assert!(outcome.removed.is_empty());
    assert_eq!(outcome.members, ds.members());
    alice.merge_pending_commit(&GROUP).unwrap();
    let welcome = pending.welcome.unwrap();
    assert_eq!(bob.join_from_welcome(&welcome).unwrap(), GROUP.to_vec());
    assert_eq!(carol.join_from_welcome(&welcome).unwrap(), GROUP.to_vec());
    assert_roster(&ds, &[&alice, &bob, &carol], &["alice", "bob", "carol"]);

    // Messages in every direction; the DS sees only group id and epoch.
    let hello = alice.encrypt(&GROUP, b"hello").unwrap();
    let info = inspect_application(&hello).unwrap();
    assert_eq!((info.group_id, info.epoch), (GROUP.to_vec(), 1));
    assert!(matches!(ds.process_commit(&hello), Err(DsError::WrongWireFormat { .. })));
    for receiver in [&bob, &carol] {
        assert_eq!(
            receiver.process_incoming(&GROUP, &hello).unwrap(),
            Incoming::Application {
                sender: "alice".to_owned(),
                device: Some(alice.device_id()),
                plaintext: b"hello".to_vec(),
                epoch: 1
            }
        );
    }
    assert!(matches!(alice.process_incoming(&GROUP, &hello).unwrap(), Incoming::Ignored { .. }));
    assert_delivers(&bob, &alice, b"hi alice");
    assert_delivers(&carol, &bob, b"hi bob");

    // Safety numbers from the group roster match on both sides.
    let carol_key = alice.member_account_key(&GROUP, "carol").unwrap().unwrap();
    assert_eq!(carol_key, carol.identity().public_key());
    let alice_key = carol.member_account_key(&GROUP, "alice").unwrap().unwrap();
    assert_eq!(
        safety_number("alice", alice.identity().public_key(), "carol", &carol_key),
        safety_number("carol", carol.identity().public_key(), "alice", &alice_key)
    );
    assert_eq!(alice.member_account_key(&GROUP, "mallory").unwrap(), None);

    // Bob sends in epoch 1; carol reads it only after the next commit (past-epoch secrets).
    let late = bob.encrypt(&GROUP, b"sent before removal").unwrap();

    let removal = alice.remove_members(&GROUP, &["bob".to_owned()]).unwrap();
    assert!(removal.welcome.is_none());
    let outcome = ds.process_commit(&removal.commit).unwrap();
    assert_eq!(outcome.removed, ["bob"]);
    assert_eq!(outcome.new_epoch, 2);
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_merges(&carol, &removal.commit, "alice", 2, false);
    assert_merges(&bob, &removal.commit, "alice", 2, true);
    assert!(!bob.is_active(&GROUP).unwrap());
    assert!(alice.is_active(&GROUP).unwrap());
    assert_roster(&ds, &[&alice, &carol], &["alice", "carol"]);

    match carol.process_incoming(&GROUP, &late).unwrap() {
        Incoming::Application { plaintext, epoch, .. } => {
            assert_eq!(plaintext, b"sent before removal");
            assert_eq!(epoch, 1);
        }
        other => panic!("late message not decrypted: {other:?}"),
    }

    let secret = alice.encrypt(&GROUP, b"after bob left").unwrap();
    assert!(matches!(bob.process_incoming(&GROUP, &secret), Err(MlsError::Inactive { .. })));
    assert!(matches!(bob.encrypt(&GROUP, b"still here?"), Err(MlsError::Inactive { .. })));
    assert_eq!(
        carol.process_incoming(&GROUP, &secret).unwrap(),
        Incoming::Application {
            sender: "alice".to_owned(),
            device: Some(alice.device_id()),
            plaintext: b"after bob left".to_vec(),
            epoch: 2
        }
    );
}

#[test]
fn full_flow_pq_suite() {
    full_flow(DEFAULT_CIPHERSUITE);
}

#[test]
fn full_flow_classical_suite() {
    full_flow(CLASSICAL_CIPHERSUITE);
}

#[test]
fn tampered_key_package_is_rejected() {
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let mut package = bob.generate_key_packages(1).unwrap().remove(0);
    validate_key_package(&package).unwrap();
    let last = package.len() - 1;
    package[last] ^= 0x01; // inside the signature
    assert!(matches!(validate_key_package(&package), Err(DsError::InvalidKeyPackage { .. })));
    assert!(matches!(validate_key_package(b"not a key package"), Err(DsError::Malformed { .. })));
}

#[test]
fn removed_member_can_be_added_again() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let mut ds = crate::harness::group_of(&alice, &[&bob]);
    let removal = alice.remove_members(&GROUP, &["bob".to_owned()]).unwrap();
    ds.process_commit(&removal.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_merges(&bob, &removal.commit, "alice", 2, true);

    let package = bob.generate_key_packages(1).unwrap();
    let again = alice.add_members(&GROUP, &package).unwrap();
    ds.process_commit(&again.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    bob.join_from_welcome(&again.welcome.unwrap()).unwrap();
    assert!(bob.is_active(&GROUP).unwrap());
    assert_roster(&ds, &[&alice, &bob], &["alice", "bob"]);
    assert_delivers(&alice, &bob, b"welcome back");
}

/// A Welcome to a group the client is still active in is refused and
/// leaves that group as it was (a last-resort key package lets the same
/// Welcome be opened twice).
#[test]
fn a_welcome_to_a_group_held_and_active_is_refused() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    alice.create_group(&GROUP).unwrap();
    let package = bob.generate_last_resort_key_package().unwrap();
    let pending = alice.add_members(&GROUP, &[package]).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    let welcome = pending.welcome.unwrap();
    assert_eq!(bob.join_from_welcome(&welcome).unwrap(), GROUP.to_vec());
    assert!(matches!(bob.join_from_welcome(&welcome), Err(MlsError::GroupExists { .. })));
    assert_eq!(bob.epoch(&GROUP).unwrap(), 1);
    assert_delivers(&alice, &bob, b"still the first copy");
}
