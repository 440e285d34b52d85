//! Conformance: federation state. The domain pin, the outbound stream
//! towards a peer (seqs, reads within limits, acknowledgements that delete
//! and never go back), and applying a peer's batch (queued once, labelled
//! by the remote group, the inbound state moved in the same write; a
//! refusal changes nothing).

use super::users;
use crate::storage::{
    EntryKind, GroupKind, InboundApply, InboundEvent, NewMessage, NewOutboundEntry, RemoteGroup, Store, StoreError,
};

pub(super) fn the_domain_is_pinned_once(store: &dyn Store) {
    assert_eq!(store.pin_domain("a.example").unwrap(), None, "the first domain is recorded");
    assert_eq!(store.pin_domain("a.example").unwrap(), None, "the same domain again is fine");
    assert_eq!(store.pin_domain("b.example").unwrap().as_deref(), Some("a.example"), "another is refused");
    assert_eq!(store.pin_domain("a.example").unwrap(), None, "and changes nothing");
}

fn entry(at: u64, bytes: usize) -> NewOutboundEntry {
    NewOutboundEntry { accepted_at_ms: at, entry: vec![at as u8; bytes] }
}

pub(super) fn outbound_streams_keep_order_until_acknowledged(store: &dyn Store) {
    assert_eq!(store.fed_stream("b.example").unwrap(), None, "not made by a read");
    assert_eq!(store.append_outbound("b.example", &[entry(10, 4), entry(11, 4)]).unwrap(), 2);
    let first = store.fed_stream("b.example").unwrap().unwrap();
    assert_ne!(first.out_instance, 0, "made by the first append, with an instance");
    assert_eq!((first.out_acked, first.out_last, first.pending(), first.oldest_pending_ms), (0, 2, 2, Some(10)));
    assert_eq!(store.append_outbound("b.example", &[entry(12, 100), entry(13, 4)]).unwrap(), 4);
    assert_eq!(store.fed_stream("b.example").unwrap().unwrap().out_instance, first.out_instance, "made once");
    assert_eq!(store.append_outbound("c.example", &[entry(20, 4)]).unwrap(), 1, "each peer has its own seqs");
    let stream = store.fed_stream("b.example").unwrap().unwrap();
    assert_eq!((stream.out_last, stream.pending(), stream.oldest_pending_ms), (4, 4, Some(10)));

    let seqs = |entries: Vec<crate::storage::OutboundEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.read_outbound("b.example", 1, 10, 1 << 20).unwrap()), [1, 2, 3, 4]);
    assert_eq!(seqs(store.read_outbound("b.example", 2, 2, 1 << 20).unwrap()), [2, 3], "at most max_entries");
    assert_eq!(seqs(store.read_outbound("b.example", 2, 10, 50).unwrap()), [2], "stops before the byte budget");
    assert_eq!(seqs(store.read_outbound("b.example", 3, 10, 1).unwrap()), [3], "the first always fits");
    let first = &store.read_outbound("b.example", 1, 1, 1 << 20).unwrap()[0];
    assert_eq!((first.accepted_at_ms, first.entry.as_slice()), (10, [10u8; 4].as_slice()));

    store.ack_outbound("b.example", 2).unwrap();
    assert_eq!(seqs(store.read_outbound("b.example", 1, 10, 1 << 20).unwrap()), [3, 4], "acked rows are gone");
    store.ack_outbound("b.example", 1).unwrap();
    let stream = store.fed_stream("b.example").unwrap().unwrap();
    assert_eq!((stream.out_acked, stream.pending(), stream.oldest_pending_ms), (2, 2, Some(12)), "never back");
    assert_eq!(store.append_outbound("b.example", &[entry(14, 4)]).unwrap(), 5, "seqs go on after acks");

    // Retention takes a prefix: everything through the last entry older than the cut.
    assert_eq!(store.append_outbound("b.example", &[entry(9, 4), entry(30, 4)]).unwrap(), 7);
    // Seq 6 was accepted at 9 (the clock stepped back): 3 to 6 go, the newer 3 to 5 with it.
    assert_eq!(store.expire_outbound("b.example", 12).unwrap(), (6, 4));
    assert_eq!(seqs(store.read_outbound("b.example", 1, 10, 1 << 20).unwrap()), [7]);
    let stream = store.fed_stream("b.example").unwrap().unwrap();
    assert_eq!((stream.out_expired, stream.pending(), stream.oldest_pending_ms), (6, 1, Some(30)));
    assert_eq!(store.expire_outbound("b.example", 12).unwrap(), (6, 0), "nothing older is left");

    store.set_outbound_instance("b.example", 77).unwrap();
    let stream = store.fed_stream("b.example").unwrap().unwrap();
    assert_eq!(stream.out_instance, 77);
    assert_eq!(stream.out_last, 7, "a new instance keeps the entries and their seqs");
    let peers: Vec<String> = store.fed_streams().unwrap().into_iter().map(|s| s.peer).collect();
    assert_eq!(peers, ["b.example", "c.example"]);
}

fn event(id: &[u8], recipients: &[&str]) -> InboundEvent {
    let group_id = [[9u8; 16].as_slice(), b"b.example"].concat();
    InboundEvent {
        group: Some(RemoteGroup {
            group_id: group_id.clone(),
            hub: "b.example".into(),
            name: "team".into(),
            kind: GroupKind::Named,
        }),
        message: NewMessage {
            message_id: id.to_vec(),
            group_id,
            sender: "carol@b.example".into(),
            kind: EntryKind::Application,
            payload: id.to_vec(),
            epoch: 3,
            stored_at_ms: 50,
        },
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
    }
}

pub(super) fn inbound_batches_queue_once_and_move_the_state_with_them(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    let events = [event(b"m1", &["alice", "bob"]), event(b"m2", &["alice"])];
    let apply = InboundApply { peer: "b.example", instance: 5, applied_seq: 2, events: &events, outbound: &[] };
    let outcomes = store.apply_inbound(&apply).unwrap();
    assert!(outcomes.iter().all(|outcome| !outcome.duplicate));
    let stream = store.fed_stream("b.example").unwrap().unwrap();
    assert_eq!((stream.in_instance, stream.in_applied), (5, 2));
    let alice = store.fetch("alice", 0, 10).unwrap();
    let ids: Vec<&[u8]> = alice.items.iter().map(|item| item.message_id.as_slice()).collect();
    assert_eq!(ids, [b"m1".as_slice(), b"m2"]);
    let item = &alice.items[0];
    assert_eq!(
        (item.group_name.as_str(), item.group_kind, item.sender.as_str()),
        ("team", GroupKind::Named, "carol@b.example")
    );
    assert_eq!(store.fetch("bob", 0, 10).unwrap().items.len(), 1);
    let label = store.remote_group(&events[0].message.group_id).unwrap().expect("the label is kept");
    assert_eq!((label.hub.as_str(), label.name.as_str(), label.kind), ("b.example", "team", GroupKind::Named));
    assert_eq!(store.remote_group(&[9; 16]).unwrap(), None);

    // The same events again (a resend across an instance change): queued once.
    let again = InboundApply { peer: "b.example", instance: 6, applied_seq: 1, events: &events, outbound: &[] };
    assert!(store.apply_inbound(&again).unwrap().iter().all(|outcome| outcome.duplicate));
    assert_eq!(store.fetch("alice", 0, 10).unwrap().items.len(), 2);
    assert_eq!(store.fed_stream("b.example").unwrap().unwrap().in_instance, 6);

    // A batch naming an unknown queue changes nothing at all.
    let bad = [event(b"m3", &["alice"]), event(b"m4", &["nobody"])];
    let refused = InboundApply { peer: "b.example", instance: 6, applied_seq: 3, events: &bad, outbound: &[] };
    assert!(matches!(store.apply_inbound(&refused), Err(StoreError::UnknownAccount { .. })));
    assert_eq!(store.fed_stream("b.example").unwrap().unwrap().in_applied, 1);
    assert_eq!(store.fetch("alice", 0, 10).unwrap().items.len(), 2);
}
