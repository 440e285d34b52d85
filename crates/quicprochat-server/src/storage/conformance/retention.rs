//! Conformance checks for expiry (messages and idempotency records stored
//! before a cutoff go, oldest first, and nothing newer does) and for queue
//! quotas (a queue over its quota loses its oldest entries).

use super::{group, message, names, seqs, users};
use crate::storage::{EntryKind, Expired, Store, TrimmedQueues};

fn send_at(store: &dyn Store, id: &[u8], at: u64, to: &[&str]) {
    let outcome = store.enqueue(&message("alice", id, EntryKind::Application, at), &names(to)).unwrap();
    assert!(!outcome.duplicate);
}

fn duplicate(store: &dyn Store, id: &[u8]) -> bool {
    store.enqueue(&message("alice", id, EntryKind::Application, 10_000), &names(&["bob"])).unwrap().duplicate
}

pub(super) fn expiry_takes_what_is_older_and_nothing_else(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob", "carol"]);
    send_at(store, b"m1", 100, &["bob", "carol"]);
    send_at(store, b"solo", 150, &[]); // an idempotency record without a body
    send_at(store, b"m2", 200, &["bob"]);
    send_at(store, b"m3", 300, &["bob"]);
    // Stored after m3 with an older time (the clock stepped back): it
    // waits for m3, in store order.
    send_at(store, b"late", 50, &["bob"]);
    store.ack("carol", 1).unwrap();

    let expired = store.expire(250, 100).unwrap();
    assert_eq!(expired, Expired { queue_entries: 2, messages: 2, message_ids: 3, more: false });
    assert_eq!(seqs(store, "bob"), [3, 4], "m3 is younger than the cutoff, and late is behind it");
    assert!(seqs(store, "carol").is_empty());
    assert_eq!(store.stored_message_count().unwrap(), 2);
    assert_eq!(store.total_queue_depth().unwrap(), 2);
    assert_eq!(store.lookup_message("alice", b"m1").unwrap(), None, "forgotten");
    assert!(store.lookup_message("alice", b"m3").unwrap().is_some());

    // Nothing more is due at the same cutoff.
    assert_eq!(store.expire(250, 100).unwrap(), Expired::default());
    // A forgotten id is a new message; a remembered one is still a retry.
    assert!(!duplicate(store, b"m1"));
    assert!(duplicate(store, b"m3"));
    // Sequence numbers are never reused after expiry either.
    assert_eq!(seqs(store, "bob"), [3, 4, 5]);
    // Once m3 is due, so is everything behind it that is.
    let expired = store.expire(350, 100).unwrap();
    assert_eq!((expired.messages, expired.message_ids), (2, 2), "m3 and late");
    assert_eq!(seqs(store, "bob"), [5]);
}

pub(super) fn expiry_stops_at_its_limit(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    for (n, id) in [b"m1", b"m2", b"m3"].into_iter().enumerate() {
        send_at(store, id, 100 + n as u64, &["bob"]);
    }
    let first = store.expire(1_000, 2).unwrap();
    assert_eq!(first, Expired { queue_entries: 2, messages: 2, message_ids: 2, more: true });
    assert_eq!(seqs(store, "bob"), [3], "the oldest went first");
    let second = store.expire(1_000, 2).unwrap();
    assert_eq!(second, Expired { queue_entries: 1, messages: 1, message_ids: 1, more: false });
    assert_eq!(store.stored_message_count().unwrap(), 0);
    assert_eq!(store.expire(1_000, 2).unwrap(), Expired::default());
}

pub(super) fn queues_are_trimmed_to_their_quota(store: &dyn Store) {
    users(store, &["alice", "bob", "carol", "dave"]);
    group(store, &["alice", "bob", "carol", "dave"]);
    for n in 0..6u64 {
        let recipients: &[&str] = if n < 2 { &["bob", "carol", "dave"] } else { &["bob", "carol"] };
        send_at(store, format!("m{n}").as_bytes(), 100 + n, recipients);
    }
    store.ack("carol", 3).unwrap();
    // bob holds 1..=6 (over a quota of 4), carol 4..=6, dave 1..=2.
    assert_eq!(store.trim_queues(4, 10).unwrap(), TrimmedQueues { queues: 1, queue_entries: 2, more: false });
    assert_eq!(seqs(store, "bob"), [3, 4, 5, 6], "the oldest went");
    assert_eq!(seqs(store, "carol"), [4, 5, 6]);
    assert_eq!(seqs(store, "dave"), [1, 2]);
    // m0 and m1 are still held by dave; nothing is left to trim.
    assert_eq!(store.stored_message_count().unwrap(), 6);
    assert_eq!(store.trim_queues(4, 10).unwrap(), TrimmedQueues::default());

    // One queue per call, in name order; a message trimmed from its last
    // queue goes.
    let calls: Vec<TrimmedQueues> = (0..3).map(|_| store.trim_queues(1, 1).unwrap()).collect();
    let expected = [(3, true), (2, true), (1, false)].map(|(queue_entries, more)| TrimmedQueues {
        queues: 1,
        queue_entries,
        more,
    });
    assert_eq!(calls, expected, "bob, carol, dave");
    assert_eq!((seqs(store, "bob"), seqs(store, "carol"), seqs(store, "dave")), (vec![6], vec![6], vec![2]));
    assert_eq!(store.stored_message_count().unwrap(), 2, "m1 (dave) and m5");
    // Sequence numbers go on from the head.
    send_at(store, b"after", 200, &["bob"]);
    assert_eq!(seqs(store, "bob"), [6, 7]);
}
