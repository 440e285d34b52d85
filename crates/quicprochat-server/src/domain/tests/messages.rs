//! Domain tests: application messages (membership, idempotency).

use super::submit;
use super::{add, assert_status, commit_request, drain, finish, gid, inbox, kinds, new_group, store, user, NOW};
use crate::domain::commits::SubmitCommit;
use crate::domain::delivery::{self, effective_limit, DEFAULT_FETCH_LIMIT, MAX_FETCH_LIMIT};
use crate::domain::devices::Caller;
use crate::domain::messages::{send_message, SendMessage};
use crate::storage::EntryKind;

#[test]
fn message_reaches_members_once() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    drain(&store, &bob);

    let ciphertext = alice.client.encrypt(&group_id, b"hello bob").unwrap();
    let request = SendMessage { group_id: &group_id, message_id: b"m1", ciphertext: &ciphertext };
    let first = send_message(&store, Caller::first_device("alice"), &request, NOW).unwrap();
    assert!(!first.duplicate);
    let fanout = first.fanout.expect("a new message is queued");
    assert_eq!(fanout.deliveries, [("bob".to_owned(), 3)]);
    assert_eq!((fanout.group_name.as_str(), fanout.epoch), ("friends", 1));
    let retry = send_message(&store, Caller::first_device("alice"), &request, NOW + 5).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.fanout, None, "a retry queues nothing");
    assert_eq!(retry.stored_at_ms, first.stored_at_ms);

    let entries = inbox(&store, &bob);
    assert_eq!(kinds(&entries), [EntryKind::Application], "delivered once");
    assert_eq!((entries[0].sender.as_str(), entries[0].group_name.as_str()), ("alice", "friends"));
    assert_eq!(drain(&store, &bob), [b"hello bob".to_vec()]);
    assert!(inbox(&store, &alice).is_empty());

    // The same id for another kind of message is refused.
    let commit = SubmitCommit { group_id: &group_id, epoch: 1, commit: b"x", welcome: None, message_id: b"m1" };
    assert_status(submit(&store, "alice", &commit, NOW), "INVALID_ARGUMENT", "already used");
}

#[test]
fn only_active_members_may_post() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let carol = user(&store, "carol");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    drain(&store, &bob);

    let ciphertext = alice.client.encrypt(&group_id, b"hi").unwrap();
    let request = SendMessage { group_id: &group_id, message_id: b"m1", ciphertext: &ciphertext };
    assert_status(
        send_message(&store, Caller::first_device(&carol.name), &request, NOW),
        "PERMISSION_DENIED",
        "not a member",
    );
    let other_group = gid(2);
    assert_status(
        send_message(&store, Caller::first_device("alice"), &SendMessage { group_id: &other_group, ..request }, NOW),
        "INVALID_ARGUMENT",
        "another group",
    );
    assert_status(
        send_message(&store, Caller::first_device("alice"), &SendMessage { ciphertext: b"junk", ..request }, NOW),
        "INVALID_ARGUMENT",
        "application message",
    );

    // Bob is removed; a message he encrypted before noticing is refused.
    let bob_late = bob.client.encrypt(&group_id, b"am I still in?").unwrap();
    let pending = alice.client.remove_members(&group_id, &["bob".to_owned()]).unwrap();
    let commit = commit_request(&group_id, &pending, b"remove-bob");
    finish(&alice, &group_id, submit(&store, "alice", &commit, NOW)).unwrap();
    let late = SendMessage { group_id: &group_id, message_id: b"late", ciphertext: &bob_late };
    assert_status(send_message(&store, Caller::first_device("bob"), &late, NOW), "PERMISSION_DENIED", "not a member");
    assert!(inbox(&store, &alice).is_empty());
}

#[test]
fn fetch_limit_and_ack() {
    assert_eq!(effective_limit(0), DEFAULT_FETCH_LIMIT);
    assert_eq!(effective_limit(1), 1);
    assert_eq!(effective_limit(10_000), MAX_FETCH_LIMIT);

    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    add(&store, &alice, &group_id, &[&bob], b"add-bob").unwrap();
    drain(&store, &bob);
    for n in 0..3u8 {
        let ciphertext = alice.client.encrypt(&group_id, &[n]).unwrap();
        let request = SendMessage { group_id: &group_id, message_id: &[n], ciphertext: &ciphertext };
        send_message(&store, Caller::first_device("alice"), &request, NOW).unwrap();
    }
    let page = delivery::fetch(&store, Caller::first_device("bob"), 0, 2).unwrap();
    assert_eq!(page.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(page.head_seq, 5);
    assert_eq!(delivery::ack(&store, Caller::first_device("bob"), 4).unwrap(), 2);
    let rest = delivery::fetch(&store, Caller::first_device("bob"), 0, 0).unwrap();
    assert_eq!(rest.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [5]);
}
