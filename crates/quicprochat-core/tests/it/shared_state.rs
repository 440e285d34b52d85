//! Two clients on one state database, as two `qpc` processes sharing a
//! profile: each keeps groups in memory between calls, and a write by the
//! other must make it reload, never reuse what it holds.

use quicprochat_core::{Identity, Incoming, MlsClient, CLASSICAL_CIPHERSUITE};

use crate::harness::{group_of, Party, GROUP};

/// A second client on `party`'s database, like a second process.
fn second_handle(party: &Party) -> MlsClient {
    let identity = Identity::from_bytes(&party.identity_bytes).unwrap();
    MlsClient::open_with_ciphersuite(
        &party.dir.path().join("mls.db"),
        identity,
        party.username(),
        CLASSICAL_CIPHERSUITE,
    )
    .unwrap()
}

fn decrypts(to: &Party, message: &[u8], text: &[u8]) {
    match to.process_incoming(&GROUP, message).unwrap() {
        Incoming::Application { plaintext, .. } => assert_eq!(plaintext, text),
        other => panic!("expected an application message, got {other:?}"),
    }
}

#[test]
fn messages_from_two_handles_never_reuse_a_ratchet_generation() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    group_of(&alice, &[&bob]);
    let other_alice = second_handle(&alice);
    // Both handles hold the group in memory now.
    assert_eq!(alice.epoch(&GROUP).unwrap(), other_alice.epoch(&GROUP).unwrap());

    let first = alice.encrypt(&GROUP, b"one").unwrap();
    // Were the group held from before `first`, this would reuse its key and nonce.
    let second = other_alice.encrypt(&GROUP, b"two").unwrap();
    let third = alice.encrypt(&GROUP, b"three").unwrap();
    decrypts(&bob, &first, b"one");
    decrypts(&bob, &second, b"two");
    decrypts(&bob, &third, b"three");
}

#[test]
fn a_commit_merged_by_one_handle_is_seen_by_the_other() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let carol = Party::new("carol", CLASSICAL_CIPHERSUITE);
    group_of(&alice, &[&bob]);
    let other_alice = second_handle(&alice);
    assert_eq!(other_alice.members(&GROUP).unwrap(), ["alice", "bob"]);

    let add = alice.add_members(&GROUP, &carol.generate_key_packages(1).unwrap()).unwrap();
    alice.merge_pending_commit(&GROUP).unwrap();
    assert_eq!(other_alice.members(&GROUP).unwrap(), ["alice", "bob", "carol"]);
    assert_eq!(other_alice.epoch(&GROUP).unwrap(), 2);

    // And the other way round: a message processed by the second handle
    // moves the first one's receiving ratchet too.
    carol.join_from_welcome(&add.welcome.unwrap()).unwrap();
    let from_carol = carol.encrypt(&GROUP, b"hi").unwrap();
    match other_alice.process_incoming(&GROUP, &from_carol).unwrap() {
        Incoming::Application { plaintext, .. } => assert_eq!(plaintext, b"hi"),
        other => panic!("expected an application message, got {other:?}"),
    }
    // The first handle reloads: carol's generation 0 is consumed, so the
    // same message is refused instead of decrypting twice.
    assert!(alice.process_incoming(&GROUP, &from_carol).is_err());
}
