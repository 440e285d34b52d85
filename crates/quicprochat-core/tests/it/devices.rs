//! Linked devices in real groups: a device certified by its account's key
//! joins and posts as that account; a leaf certified by any other key is
//! refused by every client that knows the account's key, whether it comes
//! in a commit or a Welcome.

use quicprochat_core::device::certify_device;
use quicprochat_core::{
    DsGroupView, Identity, Incoming, MemberCredential, MemberRefusal, MlsClient, MlsError, VerifiedMember,
    DEFAULT_CIPHERSUITE,
};

use crate::harness::{group_of, Party, GROUP};

/// A device of `username` whose credential is certified by `account`.
fn linked_device(username: &str, account: &Identity) -> Party {
    let dir = tempfile::tempdir().unwrap();
    let device = Identity::generate().unwrap();
    let identity_bytes = device.to_bytes();
    let certificate = certify_device(account, username, device.public_key()).unwrap();
    let credential = MemberCredential::linked(username, account.public_key(), &certificate);
    let client =
        MlsClient::open(&dir.path().join("mls.db"), device, username).unwrap().as_linked_device(credential).unwrap();
    Party { client, dir, identity_bytes }
}

/// Bob's check: alice's account key must be the one he knows.
fn knows_alice(alice_account: &[u8]) -> impl Fn(&VerifiedMember) -> Result<(), MemberRefusal> + '_ {
    move |member: &VerifiedMember| {
        if member.username == "alice" && member.account_key != alice_account {
            return Err(MemberRefusal::Refused("its account key is not the one known for alice".to_owned()));
        }
        Ok(())
    }
}

/// Alice (account-keyed) adds `device` to GROUP; returns the commit and Welcome.
fn add(ds: &mut DsGroupView, alice: &Party, device: &Party) -> (Vec<u8>, Vec<u8>) {
    let package = device.generate_key_packages(1).unwrap().remove(0);
    let pending = alice.add_members(&GROUP, &[package]).unwrap();
    ds.process_commit(&pending.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    (pending.commit, pending.welcome.unwrap())
}

#[test]
fn a_device_certified_by_the_account_key_joins_and_posts_as_its_account() {
    let alice = Party::new("alice", DEFAULT_CIPHERSUITE);
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let mut ds = group_of(&alice, &[&bob]);
    let account = Identity::from_bytes(&alice.identity_bytes).unwrap();
    let phone = linked_device("alice", &account);

    let (commit, welcome) = add(&mut ds, &alice, &phone);
    let check = knows_alice(account.public_key());
    assert!(matches!(bob.process_incoming_checked(&GROUP, &commit, &check).unwrap(), Incoming::CommitMerged { .. }));
    let (joined, sender) = phone.join_from_welcome_checked(&welcome, &check).unwrap();
    assert_eq!((joined, sender.username.as_str()), (GROUP.to_vec(), "alice"));
    assert_eq!(sender.device_id, alice.device_id(), "the Welcome names the device that sent it");

    // One account, two leaves; the message names the device that sent it.
    assert_eq!(bob.members(&GROUP).unwrap(), ["alice", "bob"]);
    let devices = bob.member_devices(&GROUP).unwrap();
    assert_eq!(devices.len(), 3);
    assert!(devices
        .iter()
        .filter(|leaf| leaf.member.username == "alice")
        .all(|leaf| leaf.member.account_key == account.public_key()));
    let hello = phone.encrypt(&GROUP, b"from the phone").unwrap();
    for receiver in [&alice, &bob] {
        match receiver.process_incoming(&GROUP, &hello).unwrap() {
            Incoming::Application { sender, device, plaintext, .. } => {
                assert_eq!((sender.as_str(), plaintext.as_slice()), ("alice", &b"from the phone"[..]));
                assert_eq!(device, Some(phone.device_id()));
                assert_ne!(device, Some(alice.device_id()));
            }
            other => panic!("expected the phone's message, got {other:?}"),
        }
    }

    // Removing one device removes its leaf only.
    let removal = alice.remove_devices(&GROUP, &[phone.device_id()]).unwrap().expect("the phone is a leaf");
    ds.process_commit(&removal.commit).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    bob.process_incoming(&GROUP, &removal.commit).unwrap();
    phone.process_incoming(&GROUP, &removal.commit).unwrap();
    assert!(!phone.is_active(&GROUP).unwrap());
    assert_eq!(bob.member_devices(&GROUP).unwrap().len(), 2);
    assert!(alice.remove_devices(&GROUP, &[phone.device_id()]).unwrap().is_none(), "not a leaf any more");
    assert!(alice.remove_devices(&GROUP, &[alice.device_id()]).is_err(), "our own leaf is left, not removed");
    let (commit, welcome) = add(&mut ds, &alice, &phone);
    bob.process_incoming(&GROUP, &commit).unwrap();
    phone.join_from_welcome(&welcome).unwrap();

    // Removing alice removes every device of hers.
    let removal = bob.remove_members(&GROUP, &["alice".to_owned()]).unwrap();
    ds.process_commit(&removal.commit).unwrap();
    bob.merge_pending_commit(&GROUP).unwrap();
    assert_eq!(bob.members(&GROUP).unwrap(), ["bob"]);
    for device in [&alice, &phone] {
        device.process_incoming(&GROUP, &removal.commit).unwrap();
        assert!(!device.is_active(&GROUP).unwrap());
    }
}

#[test]
fn a_device_certified_by_another_key_is_refused_in_commits_and_welcomes() {
    let alice = Party::new("alice", DEFAULT_CIPHERSUITE);
    let bob = Party::new("bob", DEFAULT_CIPHERSUITE);
    let carol = Party::new("carol", DEFAULT_CIPHERSUITE);
    let mut ds = group_of(&carol, &[&alice, &bob]);
    let alice_account = alice.identity().public_key().to_vec();
    // What a server could make: a device of "alice" certified by a key of its own.
    let rogue_account = Identity::generate().unwrap();
    let rogue = linked_device("alice", &rogue_account);

    // Carol (who knows no better) adds it; the DS here checks signatures only.
    let (commit, _welcome) = add(&mut ds, &carol, &rogue);
    let check = knows_alice(&alice_account);
    let epoch = bob.epoch(&GROUP).unwrap();
    match bob.process_incoming_checked(&GROUP, &commit, &check) {
        Err(error @ MlsError::RefusedMember { .. }) => {
            assert!(error.is_peer_error());
            let text = error.to_string();
            assert!(text.contains("alice") && text.contains("not the one known"), "{text}");
        }
        other => panic!("the rogue device's commit must be refused, got {other:?}"),
    }
    assert_eq!(bob.epoch(&GROUP).unwrap(), epoch, "nothing merged");
    // Without any knowledge of alice, the group itself tells: her real
    // device is certified by another key than the newcomer.
    match bob.process_incoming(&GROUP, &commit) {
        Err(MlsError::RefusedMember { username, reason }) => {
            assert_eq!(username, "alice");
            assert!(reason.contains("another account key"), "{reason}");
        }
        other => panic!("two account keys for one account must be refused, got {other:?}"),
    }

    // A newcomer holding the same knowledge refuses the group it was welcomed to.
    let dave = Party::new("dave", DEFAULT_CIPHERSUITE);
    let package = dave.generate_key_packages(1).unwrap().remove(0);
    let pending = carol.add_members(&GROUP, &[package]).unwrap();
    ds.process_commit(&pending.commit).unwrap();
    carol.merge_pending_commit(&GROUP).unwrap();
    let joined = dave.join_from_welcome_checked(pending.welcome.as_ref().unwrap(), &check);
    assert!(matches!(joined, Err(MlsError::RefusedMember { ref username, .. }) if username == "alice"), "{joined:?}");
    assert!(!dave.has_group(&GROUP).unwrap(), "nothing of the refused group is stored");

    // A certificate that does not verify at all never becomes a credential.
    let forged = MemberCredential::linked("alice", &alice_account, &[0u8; 64]);
    let device = Identity::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = MlsClient::open(&dir.path().join("mls.db"), device, "alice").unwrap().as_linked_device(forged);
    assert!(refused.is_err(), "a certificate that does not verify is refused at once");
}
