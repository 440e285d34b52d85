//! The [`Store`] conformance suite: every check runs against a fresh
//! [`MemoryStore`] and a fresh [`SqliteStore`], so both keep the same
//! semantics. Backend-specific tests (SQLite reopen) are at the end.

use quicprochat_core::DeviceId;

use super::{
    AccountCreation, CommitResult, CommitWrite, EntryKind, Fanout, FetchedQueue, GroupCreation, GroupKind,
    GroupLogEntry, GroupSnapshot, KeyPackageServed, KeyPackageStock, KeyPackagesAdded, MemoryStore, NewGroup,
    NewKeyPackage, NewMessage, ProposalResult, ProposalWrite, SqliteStore, Store, StoreError, MAX_FETCH_PAYLOAD_BYTES,
};

mod federation;
mod invites;
mod key_packages;
mod retention;

type Check = fn(&dyn Store);

const CHECKS: &[(&str, Check)] = &[
    ("account_uniqueness", account_uniqueness),
    ("key_packages_single_use", key_packages_single_use),
    ("init_keys_are_never_stored_twice", init_keys_are_never_stored_twice),
    ("key_packages_are_per_device", key_packages::key_packages_are_per_device),
    ("fetch_by_cursor_and_limit", fetch_by_cursor_and_limit),
    ("fetch_stops_at_the_payload_budget", fetch_stops_at_the_payload_budget),
    ("ack_deletes_and_frees", ack_deletes_and_frees),
    ("seq_monotonic_after_ack", seq_monotonic_after_ack),
    ("idempotent_enqueue", idempotent_enqueue),
    ("unknown_recipient_writes_nothing", unknown_recipient_writes_nothing),
    ("commit_epoch_compare_and_set", commit_epoch_compare_and_set),
    ("served_key_packages_are_used_once", served_key_packages_are_used_once),
    ("commit_with_a_snapshot_empties_the_log", commit_with_a_snapshot_empties_the_log),
    ("welcome_only_to_its_recipients", welcome_only_to_its_recipients),
    ("proposal_marks_leaving", proposal_marks_leaving),
    ("snapshots_shorten_the_log", snapshots_shorten_the_log),
    ("fanout_to_many_takes_each_recipients_next_seq", fanout_to_many_takes_each_recipients_next_seq),
    ("groups_listing_and_id_taken", groups_listing_and_id_taken),
    ("list_accounts_sorted", invites::list_accounts_sorted),
    ("accounts_have_a_first_device", invites::accounts_have_a_first_device),
    ("devices_are_added_and_removed", invites::devices_are_added_and_removed),
    ("invite_uses_and_expiry", invites::invite_uses_and_expiry),
    ("account_with_invite_is_atomic", invites::account_with_invite_is_atomic),
    ("last_resort_read_keeps_stock", invites::last_resort_read_keeps_stock),
    ("expiry_takes_what_is_older_and_nothing_else", retention::expiry_takes_what_is_older_and_nothing_else),
    ("expiry_stops_at_its_limit", retention::expiry_stops_at_its_limit),
    ("queues_are_trimmed_to_their_quota", retention::queues_are_trimmed_to_their_quota),
    ("the_domain_is_pinned_once", federation::the_domain_is_pinned_once),
    ("outbound_streams_keep_order_until_acknowledged", federation::outbound_streams_keep_order_until_acknowledged),
    (
        "inbound_batches_queue_once_and_move_the_state_with_them",
        federation::inbound_batches_queue_once_and_move_the_state_with_them,
    ),
];

fn run_all(make_store: impl Fn() -> (Box<dyn Store>, Option<tempfile::TempDir>)) {
    for (name, check) in CHECKS {
        let (store, _dir) = make_store();
        eprintln!("conformance check: {name}");
        check(store.as_ref());
    }
}

#[test]
fn memory_store_conforms() {
    run_all(|| (Box::new(MemoryStore::new()), None));
}

#[test]
fn sqlite_store_conforms() {
    run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("qpc.db")).unwrap();
        (Box::new(store), Some(dir))
    });
}

// --- fixtures ---

const GROUP: &[u8] = b"group-0000000001";

pub(super) fn users(store: &dyn Store, names: &[&str]) {
    for name in names {
        let created = store.create_account(name, &[7; 32], 1).unwrap();
        assert_eq!(created, AccountCreation::Created);
    }
}

fn group(store: &dyn Store, members: &[&str]) {
    let created = store
        .create_group(&NewGroup {
            group_id: GROUP.to_vec(),
            name: "friends".into(),
            kind: GroupKind::Named,
            creator: members[0].into(),
            epoch: 0,
            state: b"state-0".to_vec(),
            members: names(members),
            devices: names(members),
            created_at_ms: 5,
        })
        .unwrap();
    assert_eq!(created, GroupCreation::Created);
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn message(sender: &str, id: &[u8], kind: EntryKind, at: u64) -> NewMessage {
    NewMessage {
        message_id: id.to_vec(),
        group_id: GROUP.to_vec(),
        sender: sender.into(),
        kind,
        payload: [b"payload-".as_slice(), id].concat(),
        epoch: 0,
        stored_at_ms: at,
    }
}

fn send(store: &dyn Store, sender: &str, id: &[u8], to: &[&str]) -> u64 {
    let m = message(sender, id, EntryKind::Application, 100);
    store.enqueue(&m, &names(to)).unwrap().message_row
}

fn commit_write(expected: u64, id: &[u8], members: &[&str], to: &[&str]) -> CommitWrite {
    let mut m = message("alice", id, EntryKind::Commit, 200);
    m.epoch = expected;
    CommitWrite {
        group_id: GROUP.to_vec(),
        expected_epoch: expected,
        new_epoch: expected + 1,
        new_members: names(members),
        new_devices: names(members),
        commit: Fanout { message: m, recipients: names(to) },
        welcome: None,
        snapshot: None,
        outbound: Vec::new(),
        served: Vec::new(),
    }
}

fn log_entry(seq: u64, kind: EntryKind, id: &[u8]) -> GroupLogEntry {
    GroupLogEntry { seq, kind, payload: [b"payload-".as_slice(), id].concat() }
}

fn seqs(store: &dyn Store, user: &str) -> Vec<u64> {
    let fetched = store.fetch(user, 0, 1000).unwrap();
    fetched.items.iter().map(|item| item.seq).collect()
}

// --- checks ---

fn account_uniqueness(store: &dyn Store) {
    users(store, &["alice"]);
    let again = store.create_account("alice", &[9; 32], 2).unwrap();
    assert_eq!(again, AccountCreation::UsernameTaken);
    let alice = store.get_account("alice").unwrap().unwrap();
    assert_eq!(alice.identity_key, vec![7; 32], "first binding kept");
    assert!(!alice.disabled);
    assert_eq!(store.get_account("bob").unwrap(), None);

    assert!(store.disabled_accounts().unwrap().is_empty());
    store.set_account_disabled("alice", true).unwrap();
    assert!(store.get_account("alice").unwrap().unwrap().disabled);
    assert_eq!(store.disabled_accounts().unwrap(), ["alice"]);
    let unknown = store.set_account_disabled("bob", true).unwrap_err();
    assert!(matches!(unknown, StoreError::UnknownAccount { .. }));
}

fn key_packages_single_use(store: &dyn Store) {
    users(store, &["alice"]);
    let stock = stored(
        store.add_key_packages("alice", &first_device(), &[kp(b"kp1"), kp(b"kp2")], Some(&kp(b"lr1")), 1000).unwrap(),
    );
    assert_eq!(stock, KeyPackageStock { count: 2, has_last_resort: true });

    let take = |expected: &[u8], last_resort: bool| {
        let taken = store.take_key_package("alice", &first_device()).unwrap().unwrap();
        assert_eq!((taken.key_package.as_slice(), taken.last_resort), (expected, last_resort));
    };
    take(b"kp1", false);
    take(b"kp2", false);
    take(b"lr1", true);
    take(b"lr1", true);
    let stock = store.key_package_stock("alice", &first_device()).unwrap();
    assert_eq!(stock, KeyPackageStock { count: 0, has_last_resort: true });

    stored(store.add_key_packages("alice", &first_device(), &[kp(b"kp3")], Some(&kp(b"lr2")), 1000).unwrap());
    let stock = stored(store.add_key_packages("alice", &first_device(), &[], None, 1000).unwrap());
    assert_eq!(stock, KeyPackageStock { count: 1, has_last_resort: true });
    take(b"kp3", false);
    take(b"lr2", true);

    assert_eq!(store.take_key_package("nobody", &first_device()).unwrap(), None);
    assert_eq!(store.key_package_stock("nobody", &first_device()).unwrap(), KeyPackageStock::default());
    // The stock is 0 now: a cap of 1 takes one package, not two.
    let full = store.add_key_packages("alice", &first_device(), &[kp(b"over1"), kp(b"over2")], None, 1).unwrap();
    assert_eq!(full, KeyPackagesAdded::StockFull { count: 0 }, "the cap is checked with the insert");
    assert_eq!(stored(store.add_key_packages("alice", &first_device(), &[kp(b"fits")], None, 1).unwrap()).count, 1);
    let unknown = store.add_key_packages("nobody", &first_device(), &[kp(b"x")], None, 1000);
    assert!(matches!(unknown, Err(StoreError::UnknownAccount { .. })));
}

/// A key package whose init key is derived from its bytes.
pub(super) fn kp(data: &[u8]) -> NewKeyPackage {
    NewKeyPackage { data: data.to_vec(), init_key: [b"init-", data].concat() }
}

/// The first device of every account [`users`] creates (keyed by the
/// account key they share).
pub(super) fn first_device() -> DeviceId {
    DeviceId::of_key(&[7; 32])
}

pub(super) fn stored(added: KeyPackagesAdded) -> KeyPackageStock {
    match added {
        KeyPackagesAdded::Stored(stock) => stock,
        KeyPackagesAdded::InitKeyInUse => panic!("init key unexpectedly in use"),
        KeyPackagesAdded::StockFull { count } => panic!("stock unexpectedly full at {count}"),
    }
}

fn init_keys_are_never_stored_twice(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    stored(store.add_key_packages("alice", &first_device(), &[kp(b"a1")], Some(&kp(b"a-lr")), 1000).unwrap());
    let before = store.key_package_stock("alice", &first_device()).unwrap();
    // Again, within one call, across accounts, and as a last resort: refused whole.
    for (user, batch, last_resort) in [
        ("alice", vec![kp(b"a2"), kp(b"a1")], None),
        ("alice", vec![kp(b"a3"), kp(b"a3")], None),
        ("bob", vec![kp(b"a1")], None),
        ("bob", vec![], Some(kp(b"a-lr"))),
    ] {
        let added = store.add_key_packages(user, &first_device(), &batch, last_resort.as_ref(), 1000).unwrap();
        assert_eq!(added, KeyPackagesAdded::InitKeyInUse, "{user} {batch:?}");
    }
    assert_eq!(store.key_package_stock("alice", &first_device()).unwrap(), before);
    assert_eq!(store.key_package_stock("bob", &first_device()).unwrap(), KeyPackageStock::default());
    // Re-uploading the last resort that the call replaces is allowed.
    stored(store.add_key_packages("alice", &first_device(), &[], Some(&kp(b"a-lr")), 1000).unwrap());
    // A served (deleted) package's init key is free again; the DS keeps no history.
    assert_eq!(store.take_key_package("alice", &first_device()).unwrap().unwrap().key_package, b"a1");
    assert_eq!(stored(store.add_key_packages("bob", &first_device(), &[kp(b"a1")], None, 1000).unwrap()).count, 1);
}

fn fetch_by_cursor_and_limit(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    for id in [b"m1", b"m2", b"m3", b"m4", b"m5"] {
        send(store, "alice", id, &["bob"]);
    }
    let first = store.fetch("bob", 0, 2).unwrap();
    assert_eq!(first.head_seq, 5);
    assert_eq!(first.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    let item = &first.items[0];
    assert_eq!(item.message_id, b"m1");
    assert_eq!(item.group_id, GROUP);
    assert_eq!(item.group_name, "friends");
    assert_eq!(item.group_kind, GroupKind::Named);
    assert_eq!(item.sender, "alice");
    assert_eq!(item.kind, EntryKind::Application);
    assert_eq!(item.payload, b"payload-m1");
    assert_eq!(item.stored_at_ms, 100);

    let rest = store.fetch("bob", 2, 10).unwrap();
    assert_eq!(rest.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(store.fetch("bob", 5, 10).unwrap().items.is_empty());
    assert!(store.fetch("bob", u64::MAX, 10).unwrap().items.is_empty());
    assert_eq!(store.fetch("alice", 0, 10).unwrap().head_seq, 0);
    assert_eq!(store.fetch("nobody", 0, 10).unwrap().head_seq, 0);
}

fn fetch_stops_at_the_payload_budget(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    // Three large entries, then one larger than the whole budget.
    let sizes = [MAX_FETCH_PAYLOAD_BYTES / 3 + 1, MAX_FETCH_PAYLOAD_BYTES / 3, 10, MAX_FETCH_PAYLOAD_BYTES + 1];
    for (index, size) in sizes.iter().enumerate() {
        let mut m = message("alice", &[b'b', index as u8], EntryKind::Commit, 100);
        m.payload = vec![7; *size];
        store.enqueue(&m, &names(&["bob"])).unwrap();
    }
    let seqs_of = |fetched: FetchedQueue| fetched.items.iter().map(|item| item.seq).collect::<Vec<_>>();
    // The first three fit (two thirds of the budget plus 10 bytes); the
    // fourth would pass it.
    let first = store.fetch("bob", 0, 10).unwrap();
    assert_eq!(first.head_seq, 4);
    assert_eq!(seqs_of(first), [1, 2, 3], "stops before the entry that passes the budget");
    // An entry larger than the budget comes alone.
    assert_eq!(seqs_of(store.fetch("bob", 3, 10).unwrap()), [4]);
    assert_eq!(seqs_of(store.fetch("bob", 0, 2).unwrap()), [1, 2], "the count limit still applies");
}

fn ack_deletes_and_frees(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob", "carol"]);
    send(store, "alice", b"m1", &["bob", "carol"]);
    send(store, "alice", b"m2", &["bob", "carol"]);
    assert_eq!(store.stored_message_count().unwrap(), 2, "stored once each");
    assert_eq!(store.queue_depth("bob").unwrap(), 2);
    assert_eq!(store.total_queue_depth().unwrap(), 4, "two entries in each of two queues");

    assert_eq!(store.ack("bob", 1).unwrap(), 1);
    assert_eq!(store.total_queue_depth().unwrap(), 3);
    assert_eq!(seqs(store, "bob"), [2]);
    assert_eq!(store.stored_message_count().unwrap(), 2, "carol still holds m1");
    assert_eq!(store.ack("carol", 1).unwrap(), 1);
    assert_eq!(store.stored_message_count().unwrap(), 1, "m1 freed");
    assert_eq!(store.ack("carol", 1).unwrap(), 0, "ack is idempotent");
    assert_eq!(store.ack("bob", u64::MAX).unwrap(), 1);
    assert_eq!(store.ack("carol", 2).unwrap(), 1);
    assert_eq!(store.stored_message_count().unwrap(), 0);
    assert_eq!(store.queue_depth("bob").unwrap(), 0);
    assert_eq!(store.total_queue_depth().unwrap(), 0);
    assert_eq!(store.ack("nobody", 10).unwrap(), 0);
}

fn seq_monotonic_after_ack(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    for id in [b"m1", b"m2", b"m3"] {
        send(store, "alice", id, &["bob"]);
    }
    store.ack("bob", 3).unwrap();
    send(store, "alice", b"m4", &["bob"]);
    assert_eq!(seqs(store, "bob"), [4], "seq never reused");
    assert_eq!(store.fetch("bob", 0, 10).unwrap().head_seq, 4);
}

fn idempotent_enqueue(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    let first = store.enqueue(&message("alice", b"m1", EntryKind::Application, 100), &names(&["bob"])).unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.deliveries.len(), 1);
    assert_eq!((first.deliveries[0].queue.as_str(), first.deliveries[0].seq), ("bob", 1));

    let retry = store.enqueue(&message("alice", b"m1", EntryKind::Application, 999), &names(&["bob"])).unwrap();
    assert!(retry.duplicate);
    assert!(retry.deliveries.is_empty());
    assert_eq!((retry.message_row, retry.stored_at_ms), (first.message_row, 100));
    assert_eq!(store.queue_depth("bob").unwrap(), 1);
    assert_eq!(store.stored_message_count().unwrap(), 1, "a retry leaves no body of its own");

    let record = store.lookup_message("alice", b"m1").unwrap().unwrap();
    assert_eq!((record.kind, record.stored_at_ms), (EntryKind::Application, 100));
    assert_eq!(store.lookup_message("bob", b"m1").unwrap(), None);

    // The same id from another sender is another message.
    let other = store.enqueue(&message("bob", b"m1", EntryKind::Application, 100), &names(&["alice"])).unwrap();
    assert!(!other.duplicate);

    // Still recognised after every recipient acked and the body was freed.
    store.ack("bob", 10).unwrap();
    let late = store.enqueue(&message("alice", b"m1", EntryKind::Application, 999), &names(&["bob"])).unwrap();
    assert!(late.duplicate);
    assert_eq!(store.queue_depth("bob").unwrap(), 0);

    // No recipients: recorded for idempotency, no body kept.
    let alone = store.enqueue(&message("alice", b"solo", EntryKind::Application, 100), &[]).unwrap();
    assert!(alone.deliveries.is_empty() && !alone.duplicate);
    assert_eq!(store.stored_message_count().unwrap(), 1, "only bob's m1 to alice");
}

fn unknown_recipient_writes_nothing(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    let result = store.enqueue(&message("alice", b"m1", EntryKind::Application, 100), &names(&["bob", "nobody"]));
    assert!(matches!(result, Err(StoreError::UnknownAccount { .. })));
    assert_eq!(store.queue_depth("bob").unwrap(), 0);
    assert_eq!(store.stored_message_count().unwrap(), 0);
    assert_eq!(store.lookup_message("alice", b"m1").unwrap(), None);

    // The same with many recipients (the SQLite store writes those in one statement).
    users(store, &["carol", "dave"]);
    let many = message("alice", b"m2", EntryKind::Application, 100);
    let result = store.enqueue(&many, &names(&["bob", "carol", "dave", "nobody"]));
    assert!(matches!(result, Err(StoreError::UnknownAccount { username }) if username == "nobody"));
    for user in ["bob", "carol", "dave"] {
        assert_eq!(store.queue_depth(user).unwrap(), 0);
    }
    assert_eq!(store.stored_message_count().unwrap(), 0);

    let write = commit_write(0, b"c1", &["alice", "bob"], &["bob", "nobody"]);
    assert!(store.apply_commit(&write).is_err());
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!((group.epoch, group.state.as_slice()), (0, b"state-0".as_slice()));
    assert!(group.log.is_empty());
    assert_eq!(store.queue_depth("bob").unwrap(), 0);
}

fn served(requester: &str, init_key: &[u8], at_ms: u64) -> KeyPackageServed {
    KeyPackageServed {
        requester: requester.to_owned(),
        init_key: init_key.to_vec(),
        target: "carol".to_owned(),
        last_resort: false,
        served_at_ms: at_ms,
    }
}

fn served_key_packages_are_used_once(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob"]);
    store.record_served(&served("alice", b"k1", 100), 0).unwrap();
    store.record_served(&served("alice", b"old", 10), 0).unwrap();
    assert!(store.was_served("alice", b"k1").unwrap());
    assert!(!store.was_served("bob", b"k1").unwrap(), "served to alice only");
    // A later record of alice's forgets hers older than its horizon.
    store.record_served(&served("alice", b"k2", 200), 50).unwrap();
    assert!(!store.was_served("alice", b"old").unwrap());

    let mut write = commit_write(0, b"c1", &["alice", "bob", "carol"], &["bob", "carol"]);
    write.served = vec![b"k1".to_vec(), b"missing".to_vec()];
    let refused = store.apply_commit(&write).unwrap();
    assert_eq!(refused, CommitResult::NotServed { init_key: b"missing".to_vec() });
    assert!(store.was_served("alice", b"k1").unwrap(), "a refused commit uses nothing up");
    assert_eq!(store.get_group(GROUP).unwrap().unwrap().epoch, 0, "nor writes anything");
    write.served = vec![b"k1".to_vec()];
    assert!(matches!(store.apply_commit(&write).unwrap(), CommitResult::Applied(_)));
    assert!(!store.was_served("alice", b"k1").unwrap(), "used up");
    assert!(store.was_served("alice", b"k2").unwrap());
}

fn commit_with_a_snapshot_empties_the_log(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob"]);
    let mut write = commit_write(0, b"c1", &["alice", "bob", "carol"], &["bob", "carol"]);
    write.snapshot = Some(b"state-1".to_vec());
    assert!(matches!(store.apply_commit(&write).unwrap(), CommitResult::Applied(_)));
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert!(group.log.is_empty(), "the snapshot covers the commit");
    assert_eq!((group.state.as_slice(), group.snapshot_through, group.epoch), (b"state-1".as_slice(), 1, 1));
    assert!(store.groups_with_log().unwrap().is_empty());
}

fn commit_epoch_compare_and_set(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob"]);
    let write = commit_write(0, b"c1", &["alice", "bob", "carol"], &["bob", "carol"]);
    let CommitResult::Applied(applied) = store.apply_commit(&write).unwrap() else {
        panic!("first commit of epoch 0 must win");
    };
    assert_eq!(applied.commit.deliveries.len(), 2);
    assert!(applied.welcome.is_none());
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!(group.epoch, 1);
    assert_eq!(group.state, b"state-0", "the snapshot stays; the commit is in the log");
    assert_eq!(group.log, [log_entry(1, EntryKind::Commit, b"c1")]);
    assert_eq!(group.members, ["alice", "bob", "carol"]);
    // The version the commit reports is the stored one, and the roster read's.
    assert_eq!(applied.state_version, group.state_version);
    let roster = store.group_roster(GROUP).unwrap().unwrap();
    assert_eq!((roster.state_version, roster.log_head, roster.snapshot_through), (group.state_version, 1, 0));
    assert_eq!(roster.snapshot_bytes, 7);

    let loser = commit_write(0, b"c2", &["alice"], &["bob"]);
    let result = store.apply_commit(&loser).unwrap();
    assert_eq!(result, CommitResult::EpochMismatch { current_epoch: 1 });
    let after = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!(after, group, "nothing written by the losing commit");
    assert_eq!(store.queue_depth("bob").unwrap(), 1);
    assert_eq!(store.lookup_message("alice", b"c2").unwrap(), None);

    // Reusing a message id for another commit is a caller bug.
    let reused = commit_write(1, b"c1", &["alice"], &["bob"]);
    assert!(matches!(store.apply_commit(&reused), Err(StoreError::Conflict { .. })));
    assert_eq!(store.get_group(GROUP).unwrap().unwrap().epoch, 1);

    let missing = CommitWrite { group_id: b"no-such-group-00".to_vec(), ..commit_write(0, b"c3", &["alice"], &[]) };
    assert!(matches!(store.apply_commit(&missing), Err(StoreError::UnknownGroup { .. })));
}

fn welcome_only_to_its_recipients(store: &dyn Store) {
    users(store, &["alice", "bob", "dave"]);
    group(store, &["alice", "bob"]);
    let mut write = commit_write(0, b"c1", &["alice", "bob", "dave"], &["bob", "dave"]);
    write.welcome =
        Some(Fanout { message: message("alice", b"c1", EntryKind::Welcome, 200), recipients: names(&["dave"]) });
    let CommitResult::Applied(applied) = store.apply_commit(&write).unwrap() else {
        panic!("commit must apply");
    };
    assert_eq!(applied.welcome.unwrap().deliveries.len(), 1);

    let bob: Vec<EntryKind> = store.fetch("bob", 0, 10).unwrap().items.iter().map(|i| i.kind).collect();
    assert_eq!(bob, [EntryKind::Commit]);
    let dave = store.fetch("dave", 0, 10).unwrap();
    let dave_kinds: Vec<EntryKind> = dave.items.iter().map(|i| i.kind).collect();
    assert_eq!(dave_kinds, [EntryKind::Welcome, EntryKind::Commit], "welcome first");
    assert_eq!(dave.items[1].epoch, 0, "commit entry carries the epoch it leaves");
    assert!(store.fetch("alice", 0, 10).unwrap().items.is_empty());
}

fn fanout_to_many_takes_each_recipients_next_seq(store: &dyn Store) {
    users(store, &["alice", "bob", "carol", "dave"]);
    group(store, &["alice", "bob", "carol", "dave"]);
    send(store, "alice", b"m1", &["bob"]);
    let many = message("alice", b"m2", EntryKind::Application, 100);
    let outcome = store.enqueue(&many, &names(&["dave", "bob", "carol", "bob"])).unwrap();
    let deliveries: Vec<(&str, u64)> = outcome.deliveries.iter().map(|d| (d.queue.as_str(), d.seq)).collect();
    assert_eq!(deliveries, [("bob", 2), ("carol", 1), ("dave", 1)], "sorted, each once, each its own next seq");
    send(store, "alice", b"m3", &["carol", "dave", "bob"]);
    assert_eq!(seqs(store, "bob"), [1, 2, 3]);
    assert_eq!(seqs(store, "carol"), [1, 2]);
    let dave = store.fetch("dave", 0, 10).unwrap();
    let ids: Vec<&[u8]> = dave.items.iter().map(|item| item.message_id.as_slice()).collect();
    assert_eq!(ids, [b"m2".as_slice(), b"m3".as_slice()]);
}

fn snapshots_shorten_the_log(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    assert!(store.groups_with_log().unwrap().is_empty());
    for (epoch, id) in [b"c1", b"c2", b"c3"].iter().enumerate() {
        let applied = store.apply_commit(&commit_write(epoch as u64, *id, &["alice", "bob"], &["bob"])).unwrap();
        assert!(matches!(applied, CommitResult::Applied(_)));
    }
    assert_eq!(store.groups_with_log().unwrap(), [GROUP.to_vec()]);
    let version = store.group_roster(GROUP).unwrap().unwrap().state_version;

    let snapshot =
        |through: u64, state: &[u8]| GroupSnapshot { group_id: GROUP.to_vec(), through, state: state.to_vec() };
    assert!(store.write_snapshot(&snapshot(2, b"state-2")).unwrap());
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!((group.state.as_slice(), group.snapshot_through), (b"state-2".as_slice(), 2));
    assert_eq!(group.log, [log_entry(3, EntryKind::Commit, b"c3")]);
    assert_eq!(group.state_version, version, "a snapshot does not change the view");

    // An older or equal snapshot, one past the log, or of no group writes nothing.
    assert!(!store.write_snapshot(&snapshot(1, b"state-1")).unwrap());
    assert!(!store.write_snapshot(&snapshot(2, b"state-2b")).unwrap());
    assert!(!store.write_snapshot(&snapshot(4, b"state-4")).unwrap());
    let missing = GroupSnapshot { group_id: b"no-such-group-00".to_vec(), through: 1, state: Vec::new() };
    assert!(!store.write_snapshot(&missing).unwrap());
    assert_eq!(store.get_group(GROUP).unwrap().unwrap(), group);

    assert!(store.write_snapshot(&snapshot(3, b"state-3")).unwrap());
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert!(group.log.is_empty());
    assert!(store.groups_with_log().unwrap().is_empty());
    // The log goes on after the snapshot, without reusing a position.
    store.apply_commit(&commit_write(3, b"c4", &["alice", "bob"], &["bob"])).unwrap();
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!(group.log, [log_entry(4, EntryKind::Commit, b"c4")]);
    let roster = store.group_roster(GROUP).unwrap().unwrap();
    assert_eq!((roster.log_head, roster.snapshot_through, roster.snapshot_bytes), (4, 3, 7));
}

fn proposal_marks_leaving(store: &dyn Store) {
    users(store, &["alice", "bob", "carol"]);
    group(store, &["alice", "bob", "carol"]);
    let version = store.get_group(GROUP).unwrap().unwrap().state_version;
    let write = ProposalWrite {
        group_id: GROUP.to_vec(),
        expected_state_version: version,
        leaving: names(&["bob"]),
        proposal: Fanout {
            message: message("bob", b"p1", EntryKind::Proposal, 300),
            recipients: names(&["alice", "carol"]),
        },
        outbound: Vec::new(),
    };
    let ProposalResult::Applied(outcome) = store.apply_proposal(&write).unwrap() else {
        panic!("proposal must apply");
    };
    assert_eq!(outcome.deliveries.len(), 2);
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!((group.epoch, group.state.as_slice()), (0, b"state-0".as_slice()));
    assert_eq!(group.log, [log_entry(1, EntryKind::Proposal, b"p1")]);
    assert_eq!(group.leaving, ["bob"]);
    assert_eq!(group.members, ["alice", "bob", "carol"]);
    assert!(group.state_version > version);

    // A retry is a duplicate; a stale version writes nothing.
    let retry = store.apply_proposal(&write).unwrap();
    assert!(matches!(retry, ProposalResult::Applied(o) if o.duplicate));
    let mut stale = write.clone();
    stale.proposal.message.message_id = b"p2".to_vec();
    let result = store.apply_proposal(&stale).unwrap();
    assert!(matches!(result, ProposalResult::StateChanged { current_epoch: 0, .. }));
    assert_eq!(store.queue_depth("alice").unwrap(), 1);

    // A commit that keeps bob clears his leaving mark too: his proposal is
    // gone with the epoch, and he sends it again (review F6).
    let keep = commit_write(0, b"c1", &["alice", "bob", "carol"], &["bob", "carol"]);
    store.apply_commit(&keep).unwrap();
    assert!(store.get_group(GROUP).unwrap().unwrap().leaving.is_empty());
    let remove = commit_write(1, b"c2", &["alice", "carol"], &["bob", "carol"]);
    store.apply_commit(&remove).unwrap();
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert!(group.leaving.is_empty());
    assert_eq!(group.members, ["alice", "carol"]);
    // The roster read agrees with the whole record.
    let roster = store.group_roster(GROUP).unwrap().unwrap();
    assert_eq!((roster.name, roster.kind, roster.epoch), (group.name, group.kind, group.epoch));
    assert_eq!((roster.members, roster.leaving), (group.members, group.leaving));
}

fn groups_listing_and_id_taken(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    group(store, &["alice", "bob"]);
    let again = store
        .create_group(&NewGroup {
            group_id: GROUP.to_vec(),
            name: "other".into(),
            kind: GroupKind::Direct,
            creator: "bob".into(),
            epoch: 0,
            state: vec![],
            members: names(&["bob"]),
            devices: names(&["bob"]),
            created_at_ms: 6,
        })
        .unwrap();
    assert_eq!(again, GroupCreation::IdTaken);
    let group = store.get_group(GROUP).unwrap().unwrap();
    assert_eq!((group.name.as_str(), group.creator.as_str()), ("friends", "alice"));
    assert_eq!(group.created_at_ms, 5);
    assert_eq!(store.get_group(b"missing").unwrap(), None);
    assert_eq!(store.group_roster(b"missing").unwrap(), None);
    let roster = store.group_roster(GROUP).unwrap().unwrap();
    assert_eq!((roster.name.as_str(), roster.kind, roster.epoch), ("friends", GroupKind::Named, 0));
    assert_eq!(roster.members, ["alice", "bob"]);

    let listed = store.groups_of("bob").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].kind, listed[0].epoch), ("friends", GroupKind::Named, 0));
    assert!(store.groups_of("carol").unwrap().is_empty());
}

// --- SQLite only ---

#[test]
fn sqlite_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qpc.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        users(&store, &["alice", "bob"]);
        group(&store, &["alice", "bob"]);
        stored(store.add_key_packages("bob", &first_device(), &[kp(b"kp1")], Some(&kp(b"lr")), 1000).unwrap());
        send(&store, "alice", b"m1", &["bob"]);
        send(&store, "alice", b"m2", &["bob"]);
        store.ack("bob", 1).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.get_account("alice").unwrap().is_some());
    assert_eq!(store.get_group(GROUP).unwrap().unwrap().members, ["alice", "bob"]);
    assert_eq!(
        store.key_package_stock("bob", &first_device()).unwrap(),
        KeyPackageStock { count: 1, has_last_resort: true }
    );
    assert_eq!(seqs(&store, "bob"), [2]);
    assert!(store.lookup_message("alice", b"m1").unwrap().is_some());
    send(&store, "alice", b"m3", &["bob"]);
    assert_eq!(seqs(&store, "bob"), [2, 3]);
}

#[test]
fn sqlite_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qpc.db");
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.pragma_update(None, "user_version", 999).unwrap();
    drop(connection);
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
}
