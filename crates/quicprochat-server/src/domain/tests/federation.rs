//! Applying a peer's stream batches (`domain::federation::apply`): events
//! queued once for the devices they name, duplicates and resends absorbed,
//! binding rules refusing entries without blocking the stream, gaps and
//! malformed batches applying nothing.

use quicprochat_core::names::group_id_hosted_by;

use crate::domain::federation::apply::{apply_batch, GroupEvent, InboundBatch, StreamEntry, StreamEvent};
use crate::domain::DomainError;
use crate::storage::{EntryKind, GroupKind, MemoryStore, Store};

const PEER: &str = "b.example";

fn store_with(users: &[&str]) -> MemoryStore {
    let store = MemoryStore::new();
    for user in users {
        store.create_account(user, &[7; 32], 1).unwrap();
    }
    store
}

/// The device id of `user`'s first device.
fn device_of(store: &dyn Store, user: &str) -> Vec<u8> {
    store.devices(user).unwrap()[0].device_id.as_bytes().to_vec()
}

fn event(store: &dyn Store, id: &str, to: &[&str]) -> GroupEvent {
    GroupEvent {
        group_id: group_id_hosted_by([3; 16], PEER),
        group_name: "team".into(),
        group_kind: GroupKind::Named,
        sender: "carol@b.example".into(),
        message_id: id.as_bytes().to_vec(),
        kind: EntryKind::Application,
        epoch: 1,
        payload: id.as_bytes().to_vec(),
        recipients: to.iter().map(|user| (user.to_string(), device_of(store, user))).collect(),
    }
}

fn entries(events: Vec<GroupEvent>, first_seq: u64) -> Vec<StreamEntry> {
    (first_seq..)
        .zip(events)
        .map(|(seq, event)| StreamEntry { seq, accepted_at_ms: 10, event: StreamEvent::Group(event) })
        .collect()
}

fn batch<'a>(entries: &'a [StreamEntry], instance: u64, first_available_seq: u64) -> InboundBatch<'a> {
    InboundBatch { peer: PEER, instance, first_available_seq, entries }
}

fn ids(store: &dyn Store, queue: &str) -> Vec<String> {
    let fetched = store.fetch(queue, 0, 100).unwrap();
    fetched.items.iter().map(|item| String::from_utf8_lossy(&item.message_id).into_owned()).collect()
}

#[test]
fn a_batch_is_queued_once_for_the_devices_it_names() {
    let store = store_with(&["alice", "bob"]);
    let sent = entries(vec![event(&store, "m1", &["alice", "bob"]), event(&store, "m2", &["alice"])], 1);
    let applied = apply_batch(&store, &batch(&sent, 9, 1), super::NOW).unwrap();
    assert_eq!(applied.applied_through, 2);
    assert_eq!(applied.queued.len(), 2);
    assert_eq!(applied.queues, ["alice", "bob"]);
    assert_eq!(ids(&store, "alice"), ["m1", "m2"]);
    assert_eq!(ids(&store, "bob"), ["m1"]);
    let item = &store.fetch("alice", 0, 1).unwrap().items[0];
    assert_eq!((item.sender.as_str(), item.group_name.as_str()), ("carol@b.example", "team"));

    // The same batch again (its answer was lost): duplicates, nothing queued.
    let again = apply_batch(&store, &batch(&sent, 9, 1), super::NOW).unwrap();
    assert_eq!((again.applied_through, again.duplicates, again.queued.len()), (2, 2, 0));
    // Resent under a new sender instance: the message ids catch it.
    let resent = apply_batch(&store, &batch(&sent, 10, 1), super::NOW).unwrap();
    assert_eq!((resent.applied_through, resent.duplicates, resent.queued.len()), (2, 2, 0));
    assert_eq!(ids(&store, "alice"), ["m1", "m2"]);
}

#[test]
fn entries_that_cannot_take_effect_are_refused_and_the_stream_moves_on() {
    let store = store_with(&["alice"]);
    let mut bare_sender = event(&store, "m3", &["alice"]);
    bare_sender.sender = "carol".into();
    let mut nobody = event(&store, "m4", &["alice"]);
    nobody.recipients = vec![("mallory".into(), vec![1; 8]), ("alice".into(), vec![2; 8])];
    let mut no_id = event(&store, "m5", &["alice"]);
    no_id.message_id.clear();
    let mut far_epoch = event(&store, "m7", &["alice"]);
    far_epoch.epoch = u64::MAX;
    let good = event(&store, "m6", &["alice"]);
    // The good entry's (sender, id) again, in another group the peer hosts.
    let mut conflicting = event(&store, "m6", &["alice"]);
    conflicting.group_id = group_id_hosted_by([4; 16], PEER);
    let mut sent = entries(vec![bare_sender, nobody, no_id, far_epoch, good], 1);
    sent.push(StreamEntry { seq: 6, accepted_at_ms: 10, event: StreamEvent::Unknown });
    let applied = apply_batch(&store, &batch(&sent, 9, 1), super::NOW).unwrap();
    assert_eq!(applied.applied_through, 6, "refused entries advance the stream");
    let reasons: Vec<&str> = applied.refused.iter().map(|refusal| refusal.reason).collect();
    assert_eq!(reasons, ["bad_sender", "no_recipients", "bad_message_id", "bad_epoch", "unknown_event"]);
    assert_eq!(ids(&store, "alice"), ["m6"], "only the good entry is queued");

    let later = entries(vec![conflicting], 7);
    let applied = apply_batch(&store, &batch(&later, 9, 1), super::NOW).unwrap();
    let reasons: Vec<&str> = applied.refused.iter().map(|refusal| refusal.reason).collect();
    assert_eq!((applied.applied_through, reasons), (7, vec!["message_id_conflict"]));
    assert_eq!(ids(&store, "alice"), ["m6"]);
}

/// The hub `PEER` refuses messages our alice relayed to it: each becomes a
/// `DELIVERY_FAILED` entry for her devices, once; a refusal of a message
/// she never relayed is applied as refused.
#[test]
fn a_hubs_refusal_of_a_relayed_message_reaches_the_senders_devices_once() {
    use crate::domain::federation::apply::{apply_batch_federated, SendRefused};
    use crate::domain::federation::outbox::Outbox;
    use crate::storage::NewMessage;

    let store = store_with(&["alice"]);
    let group_id = group_id_hosted_by([3; 16], PEER);
    // What relaying r1 recorded here (the message itself went to the hub).
    let relayed = NewMessage {
        message_id: b"r1".to_vec(),
        group_id: group_id.clone(),
        sender: "alice".into(),
        kind: EntryKind::Application,
        payload: Vec::new(),
        epoch: 1,
        stored_at_ms: super::NOW,
    };
    store.enqueue_federated(&relayed, &[], &[]).unwrap();
    let mut welcome = event(&store, "w1", &["alice"]);
    welcome.kind = EntryKind::Welcome;
    let welcomed = apply_batch(&store, &batch(&entries(vec![welcome], 1), 9, 1), super::NOW).unwrap();
    assert_eq!(welcomed.applied_through, 1, "alice's Welcome; the group's label is known");
    let refusal = |seq: u64, id: &[u8]| StreamEntry {
        seq,
        accepted_at_ms: 10,
        event: StreamEvent::Refused(SendRefused {
            group_id: group_id.clone(),
            sender: "alice@a.example".into(),
            message_id: id.to_vec(),
            reason: "not_a_member".into(),
        }),
    };
    let outbox = Outbox {
        home: "a.example",
        encode: &|_| Vec::new(),
        encode_relay: &|_| Vec::new(),
        encode_refused: &|_| Vec::new(),
    };
    let sent = [refusal(2, b"r1"), refusal(3, b"never")];
    let applied = apply_batch_federated(&store, &batch(&sent, 9, 1), super::NOW, Some(&outbox)).unwrap();
    let reasons: Vec<&str> = applied.refused.iter().map(|refusal| refusal.reason).collect();
    assert_eq!((applied.applied_through, reasons), (3, vec!["unknown_message"]));
    let fetched = store.fetch("alice", 0, 10).unwrap().items;
    assert_eq!(fetched.len(), 2, "the Welcome and the refusal");
    assert_eq!((fetched[1].kind, fetched[1].message_id.as_slice()), (EntryKind::DeliveryFailed, b"r1".as_slice()));
    assert_eq!(fetched[1].payload, b"not_a_member");

    // The hub refuses it again (a resend after its restart): absorbed.
    let again = [refusal(1, b"r1")];
    let applied = apply_batch_federated(&store, &batch(&again, 10, 1), super::NOW, Some(&outbox)).unwrap();
    assert_eq!(applied.duplicates, 1);
    assert_eq!(store.fetch("alice", 0, 10).unwrap().items.len(), 2);
}

#[test]
fn an_event_for_a_group_the_peer_does_not_host_refuses_the_whole_batch() {
    let store = store_with(&["alice"]);
    let mut foreign_group = event(&store, "m2", &["alice"]);
    foreign_group.group_id = group_id_hosted_by([3; 16], "c.example");
    let mut local_group = event(&store, "m3", &["alice"]);
    local_group.group_id = vec![3; 16];
    for intruder in [foreign_group, local_group] {
        let sent = entries(vec![event(&store, "m1", &["alice"]), intruder], 1);
        let refused = apply_batch(&store, &batch(&sent, 9, 1), super::NOW);
        assert!(matches!(refused, Err(DomainError::PermissionDenied { .. })), "{refused:?}");
        assert!(ids(&store, "alice").is_empty(), "nothing of the batch is written");
        assert_eq!(store.fed_stream(PEER).unwrap().map_or(0, |stream| stream.in_applied), 0);
    }
}

#[test]
fn a_gap_or_a_malformed_batch_applies_nothing() {
    let store = store_with(&["alice"]);
    let first = entries(vec![event(&store, "m1", &["alice"])], 1);
    assert_eq!(apply_batch(&store, &batch(&first, 9, 1), super::NOW).unwrap().applied_through, 1);

    let past_a_gap = entries(vec![event(&store, "m3", &["alice"])], 3);
    let applied = apply_batch(&store, &batch(&past_a_gap, 9, 1), super::NOW).unwrap();
    assert_eq!((applied.applied_through, applied.queued.len()), (1, 0), "the sender rewinds to 2");

    let mut far = entries(vec![event(&store, "m9", &["alice"])], 2);
    far[0].seq = u64::MAX;
    for huge in [batch(&far, 9, 1), batch(&first, u64::MAX, 1), batch(&first, 9, u64::MAX)] {
        let refused = apply_batch(&store, &huge, super::NOW);
        assert!(matches!(refused, Err(DomainError::InvalidArgument { .. })), "{refused:?}");
    }
    let seq_four = entries(vec![event(&store, "m4", &["alice"])], 4);
    let not_contiguous = [entries(vec![event(&store, "m2", &["alice"])], 2), seq_four].concat();
    let refused = apply_batch(&store, &batch(&not_contiguous, 9, 1), super::NOW);
    assert!(matches!(refused, Err(DomainError::InvalidArgument { .. })), "{refused:?}");
    assert_eq!(ids(&store, "alice"), ["m1"]);
    assert_eq!(store.fed_stream(PEER).unwrap().map_or(0, |stream| stream.in_applied), 1);
}

#[test]
fn entries_the_sender_no_longer_holds_are_skipped() {
    let store = store_with(&["alice"]);
    let later = entries(vec![event(&store, "m5", &["alice"])], 5);
    let applied = apply_batch(&store, &batch(&later, 9, 5), super::NOW).unwrap();
    assert_eq!((applied.applied_through, applied.skipped), (5, 0), "first contact starts where the sender is");
    let after_expiry = entries(vec![event(&store, "m9", &["alice"])], 9);
    let applied = apply_batch(&store, &batch(&after_expiry, 9, 9), super::NOW).unwrap();
    assert_eq!((applied.applied_through, applied.skipped), (9, 3));
    assert_eq!(ids(&store, "alice"), ["m5", "m9"]);
}

// --- names and group ids of a federating server (step 4) ---

mod names {
    use quicprochat_core::identity::{AuthPurpose, Identity};
    use quicprochat_core::names::group_id_hosted_by;
    use quicprochat_core::MlsClient;

    use crate::domain::accounts::AuthProof;
    use crate::domain::devices::Caller;
    use crate::domain::groups::{create_group, CreateGroup};
    use crate::domain::key_packages as kp;
    use crate::domain::tests::{
        add, assert_status, drain, inbox, register_open, sign, store, User, EXPORTER, NONCE, NOW,
    };
    use crate::storage::{EntryKind, GroupKind, Store};

    const HOME: Option<&str> = Some("a.example");

    /// A user of a.example whose client knows its domain: its key packages
    /// carry `name@a.example`.
    fn federated_user(store: &dyn Store, name: &str) -> User {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate().unwrap();
        let client =
            MlsClient::open(&dir.path().join("mls.db"), identity, name).unwrap().with_home_domain("a.example").unwrap();
        let signature = sign(client.identity(), AuthPurpose::Register, name, EXPORTER);
        let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
        register_open(store, name, client.identity().public_key(), &proof, NOW).unwrap();
        let packages = client.generate_key_packages(2).unwrap();
        let last_resort = client.generate_last_resort_key_package().unwrap();
        kp::upload(store, Caller::first_device(name), &packages, Some(&last_resort), HOME).unwrap();
        User::new(name, client, dir)
    }

    #[test]
    fn key_packages_may_name_their_owner_at_this_servers_domain_only() {
        let store = store();
        federated_user(&store, "alice");
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate().unwrap();
        let alice_elsewhere = MlsClient::open(&dir.path().join("x.db"), identity, "alice")
            .unwrap()
            .with_home_domain("b.example")
            .unwrap();
        let foreign = alice_elsewhere.generate_key_packages(1).unwrap();
        // (Signed by another key too; the name is checked first.)
        assert_status(
            kp::upload(&store, Caller::first_device("alice"), &foreign, None, HOME),
            "PERMISSION_DENIED",
            "alice@b.example",
        );
        let alice = federated_user(&store, "carol");
        let qualified = alice.client.generate_key_packages(1).unwrap();
        assert_status(
            kp::upload(&store, Caller::first_device("carol"), &qualified, None, None),
            "PERMISSION_DENIED",
            "carol@a.example",
        );
    }

    #[test]
    fn a_group_hosted_here_reads_its_qualified_local_members_as_accounts() {
        let store = store();
        let alice = federated_user(&store, "alice");
        let bob = federated_user(&store, "bob");
        let group = group_id_hosted_by([6; 16], "a.example");
        let bootstrap = alice.client.create_group(&group).unwrap();
        let request = |home| CreateGroup {
            group_id: &group,
            name: "team",
            kind: GroupKind::Named,
            group_info: &bootstrap.group_info,
            ratchet_tree: &bootstrap.ratchet_tree,
            home,
        };
        let caller = Caller::first_device("alice");
        assert_status(create_group(&store, caller, &request(None), NOW), "INVALID_ARGUMENT", "does not federate");
        assert_status(create_group(&store, caller, &request(Some("b.example")), NOW), "INVALID_ARGUMENT", "a.example");
        assert_eq!(create_group(&store, caller, &request(HOME), NOW).unwrap(), 0);

        add(&store, &alice, &group, &[&bob], b"add bob").unwrap();
        let kinds: Vec<EntryKind> = inbox(&store, &bob).iter().map(|item| item.kind).collect();
        assert!(kinds.contains(&EntryKind::Welcome), "bob@a.example's Welcome reached bob's queue: {kinds:?}");
        drain(&store, &bob);
        assert_eq!(bob.client.members(&group).unwrap(), ["alice", "bob"], "both of a.example: bare");
        let roster = store.group_roster(&group).unwrap().unwrap();
        assert_eq!(roster.members, ["alice", "bob"], "the server's roster names its accounts");
    }
}

#[test]
fn a_welcome_and_its_commit_share_an_id_and_are_both_queued_once() {
    let store = store_with(&["alice"]);
    let mut welcome = event(&store, "add", &["alice"]);
    welcome.kind = EntryKind::Welcome;
    let mut commit = event(&store, "add", &["alice"]);
    commit.kind = EntryKind::Commit;
    let sent = entries(vec![welcome, commit], 1);
    let applied = apply_batch(&store, &batch(&sent, 9, 1), super::NOW).unwrap();
    assert_eq!(applied.queued.len(), 2);
    let kinds: Vec<EntryKind> = store.fetch("alice", 0, 10).unwrap().items.iter().map(|item| item.kind).collect();
    assert_eq!(kinds, [EntryKind::Welcome, EntryKind::Commit], "the Welcome first, as the hub wrote them");
    // Resent under a new instance: the commit's id catches both.
    let again = apply_batch(&store, &batch(&sent, 10, 1), super::NOW).unwrap();
    assert_eq!((again.queued.len(), again.duplicates), (0, 2));
}
