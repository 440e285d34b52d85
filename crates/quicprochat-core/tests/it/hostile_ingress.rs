//! Client-side part of the hostile-input catalogue: what a member's client
//! does with application messages a malicious member or a broken DS hands it.
//! Each case must end in a typed peer error (never a panic), and the group
//! must keep working afterwards.

use quicprochat_core::{Incoming, MlsError, CLASSICAL_CIPHERSUITE, MAXIMUM_FORWARD_DISTANCE, OUT_OF_ORDER_TOLERANCE};

use crate::harness::{assert_delivers, group_of, Party, GROUP};

fn assert_peer_error(result: Result<Incoming, MlsError>, case: &str) {
    match result {
        Err(error) => assert!(error.is_peer_error(), "{case}: not a peer error: {error}"),
        Ok(incoming) => panic!("{case}: accepted: {incoming:?}"),
    }
}

#[test]
fn ratchet_jump_beyond_the_forward_distance_is_refused() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let _ds = group_of(&alice, &[&bob]);
    // alice sends MAXIMUM_FORWARD_DISTANCE + 1 messages; bob sees only the last.
    let skipped = MAXIMUM_FORWARD_DISTANCE as usize + 1;
    let far = (0..=skipped).map(|i| alice.encrypt(&GROUP, format!("m{i}").as_bytes()).unwrap()).last().unwrap();
    assert_peer_error(bob.process_incoming(&GROUP, &far), "generation jump");
    assert_delivers(&bob, &alice, b"the group still works");
}

#[test]
fn a_jump_within_the_forward_distance_is_accepted() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let _ds = group_of(&alice, &[&bob]);
    let messages: Vec<Vec<u8>> = (0..10).map(|i| alice.encrypt(&GROUP, format!("m{i}").as_bytes()).unwrap()).collect();
    assert!(matches!(bob.process_incoming(&GROUP, &messages[9]).unwrap(), Incoming::Application { .. }));
    // Within the out-of-order tolerance an earlier generation still decrypts...
    let late = 9 + 1 - OUT_OF_ORDER_TOLERANCE as usize;
    assert!(matches!(bob.process_incoming(&GROUP, &messages[late]).unwrap(), Incoming::Application { .. }));
    // ...beyond it, the key is gone.
    assert_peer_error(bob.process_incoming(&GROUP, &messages[0]), "too late");
}

#[test]
fn replayed_application_message_is_refused() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let _ds = group_of(&alice, &[&bob]);
    let message = alice.encrypt(&GROUP, b"once").unwrap();
    assert!(matches!(bob.process_incoming(&GROUP, &message).unwrap(), Incoming::Application { .. }));
    assert_peer_error(bob.process_incoming(&GROUP, &message), "replay");
}

#[test]
fn flipped_bits_are_refused_and_leave_the_ratchet_usable() {
    let alice = Party::new("alice", CLASSICAL_CIPHERSUITE);
    let bob = Party::new("bob", CLASSICAL_CIPHERSUITE);
    let _ds = group_of(&alice, &[&bob]);
    let message = alice.encrypt(&GROUP, b"tamper with me").unwrap();
    for index in [message.len() - 1, message.len() / 2, 30] {
        let mut tampered = message.clone();
        tampered[index] ^= 0x40;
        assert_peer_error(bob.process_incoming(&GROUP, &tampered), &format!("bit flipped at {index}"));
    }
    // The genuine message still decrypts: a forgery burns no key.
    assert!(matches!(bob.process_incoming(&GROUP, &message).unwrap(), Incoming::Application { .. }));
}
