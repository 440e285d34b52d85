//! Conformance checks for account listing, devices, invites and the
//! last-resort key package read.

use quicprochat_core::DeviceId;

use crate::storage::{
    AccountCreation, Device, DeviceAdded, DeviceRemoval, EntryKind, InviteUse, InvitedAccountCreation, KeyPackageStock,
    NewDevice, NewKeyPackage, NewMessage, Store, StoreError, FIRST_DEVICE_LABEL,
};

const KEY: [u8; 32] = [7; 32];

pub(super) fn list_accounts_sorted(store: &dyn Store) {
    assert!(store.list_accounts().unwrap().is_empty());
    for name in ["carol", "alice", "bob"] {
        assert_eq!(store.create_account(name, &KEY, 1).unwrap(), AccountCreation::Created);
    }
    store.set_account_disabled("bob", true).unwrap();
    let accounts = store.list_accounts().unwrap();
    let names: Vec<&str> = accounts.iter().map(|account| account.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(accounts.iter().map(|account| account.disabled).collect::<Vec<_>>(), [false, true, false]);
    assert_eq!(accounts[0].identity_key, KEY);
}

pub(super) fn invite_uses_and_expiry(store: &dyn Store) {
    assert_eq!(store.consume_invite("nope", 0).unwrap(), InviteUse::Unknown);

    store.create_invite("once", 1, None, 0).unwrap();
    assert_eq!(store.consume_invite("once", u64::MAX).unwrap(), InviteUse::Consumed { remaining: 0 });
    assert_eq!(store.consume_invite("once", 0).unwrap(), InviteUse::Exhausted);

    store.create_invite("three", 3, Some(1_000), 0).unwrap();
    assert_eq!(store.consume_invite("three", 10).unwrap(), InviteUse::Consumed { remaining: 2 });
    assert_eq!(store.consume_invite("three", 999).unwrap(), InviteUse::Consumed { remaining: 1 });
    // Expiry is exclusive, and an expired use takes nothing.
    assert_eq!(store.consume_invite("three", 1_000).unwrap(), InviteUse::Expired);
    assert_eq!(store.consume_invite("three", 999).unwrap(), InviteUse::Consumed { remaining: 0 });
    assert_eq!(store.consume_invite("three", 2_000).unwrap(), InviteUse::Exhausted, "exhausted is checked first");

    let error = store.create_invite("once", 5, None, 0).unwrap_err();
    assert!(matches!(error, StoreError::Conflict { operation: "create_invite", .. }), "{error:?}");
    assert_eq!(store.consume_invite("once", 0).unwrap(), InviteUse::Exhausted, "the conflict changed nothing");
}

pub(super) fn account_with_invite_is_atomic(store: &dyn Store) {
    let create = |name: &str, token: &str, at: u64| store.create_account_with_invite(name, &KEY, at, token).unwrap();
    assert_eq!(create("alice", "missing", 0), InvitedAccountCreation::InviteUnknown);
    assert_eq!(store.get_account("alice").unwrap(), None, "a refused invite creates no account");

    store.create_invite("pair", 2, Some(100), 0).unwrap();
    assert_eq!(create("alice", "pair", 10), InvitedAccountCreation::Created { remaining_uses: 1 });
    assert!(store.get_account("alice").unwrap().is_some());
    // A taken username does not spend a use.
    assert_eq!(create("alice", "pair", 10), InvitedAccountCreation::UsernameTaken);
    assert_eq!(create("bob", "pair", 100), InvitedAccountCreation::InviteExpired);
    assert_eq!(store.get_account("bob").unwrap(), None);
    assert_eq!(create("bob", "pair", 99), InvitedAccountCreation::Created { remaining_uses: 0 });
    assert_eq!(create("carol", "pair", 99), InvitedAccountCreation::InviteExhausted);
    assert_eq!(store.get_account("carol").unwrap(), None);
    let names: Vec<String> = store.list_accounts().unwrap().into_iter().map(|account| account.username).collect();
    assert_eq!(names, ["alice", "bob"]);
}

pub(super) fn last_resort_read_keeps_stock(store: &dyn Store) {
    assert_eq!(store.create_account("alice", &KEY, 1).unwrap(), AccountCreation::Created);
    assert_eq!(store.last_resort_key_package("alice", &super::first_device()).unwrap(), None);
    assert_eq!(store.last_resort_key_package("nobody", &super::first_device()).unwrap(), None);
    super::stored(
        store
            .add_key_packages("alice", &super::first_device(), &[super::kp(b"kp-1")], Some(&super::kp(b"last")), 1000)
            .unwrap(),
    );
    assert_eq!(store.last_resort_key_package("alice", &super::first_device()).unwrap().as_deref(), Some(&b"last"[..]));
    assert_eq!(store.last_resort_key_package("alice", &super::first_device()).unwrap().as_deref(), Some(&b"last"[..]));
    let stock = store.key_package_stock("alice", &super::first_device()).unwrap();
    assert_eq!((stock.count, stock.has_last_resort), (1, true), "reading the last resort consumed nothing");
}

pub(super) fn accounts_have_a_first_device(store: &dyn Store) {
    assert!(store.devices("alice").unwrap().is_empty());
    assert_eq!(store.create_account("alice", &KEY, 42).unwrap(), AccountCreation::Created);
    let devices = store.devices("alice").unwrap();
    let first = Device {
        queue: "alice".to_owned(),
        username: "alice".to_owned(),
        device_id: DeviceId::of_key(&KEY),
        device_key: KEY.to_vec(),
        certificate: None,
        label: FIRST_DEVICE_LABEL.to_owned(),
        created_at_ms: 42,
        removed_at_ms: None,
    };
    assert_eq!(devices, std::slice::from_ref(&first), "keyed by the account key, its queue named after the account");
    assert_eq!(store.device_by_key("alice", &KEY).unwrap(), Some(first));
    assert_eq!(store.device_by_key("alice", &[8; 32]).unwrap(), None);
    assert_eq!(store.device_by_key("bob", &KEY).unwrap(), None);
    // A taken name gives no second device.
    assert_eq!(store.create_account("alice", &[8; 32], 43).unwrap(), AccountCreation::UsernameTaken);
    assert_eq!(store.devices("alice").unwrap().len(), 1);
}

pub(super) fn devices_are_added_and_removed(store: &dyn Store) {
    assert_eq!(store.create_account("alice", &KEY, 1).unwrap(), AccountCreation::Created);
    let phone_key = [9u8; 32];
    let phone = |key: &[u8; 32], username: &str| NewDevice {
        username: username.to_owned(),
        device_id: DeviceId::of_key(key),
        device_key: key.to_vec(),
        certificate: vec![1; 64],
        label: "phone".to_owned(),
        created_at_ms: 2,
    };
    let queue = format!("alice#{}", DeviceId::of_key(&phone_key));
    assert_eq!(store.add_device(&phone(&phone_key, "alice"), 2).unwrap(), DeviceAdded::Added { queue: queue.clone() });
    assert_eq!(store.add_device(&phone(&phone_key, "alice"), 16).unwrap(), DeviceAdded::KeyInUse);
    assert_eq!(store.add_device(&phone(&KEY, "alice"), 16).unwrap(), DeviceAdded::KeyInUse, "the account key's device");
    assert_eq!(store.add_device(&phone(&[10; 32], "alice"), 2).unwrap(), DeviceAdded::TooMany { current: 2 });
    assert_eq!(store.add_device(&phone(&[10; 32], "nobody"), 2).unwrap(), DeviceAdded::UnknownAccount);
    let devices = store.devices("alice").unwrap();
    assert_eq!(devices.iter().map(|d| d.queue.as_str()).collect::<Vec<_>>(), ["alice", queue.as_str()]);
    assert_eq!(devices[1].certificate.as_deref(), Some([1u8; 64].as_slice()));

    // Each device has its own queue and sequence numbers.
    let message = |id: &[u8]| NewMessage {
        message_id: id.to_vec(),
        group_id: b"group-0000000001".to_vec(),
        sender: "bob".to_owned(),
        kind: EntryKind::Application,
        payload: id.to_vec(),
        epoch: 0,
        stored_at_ms: 3,
    };
    let outcome = store.enqueue(&message(b"m1"), &["alice".to_owned(), queue.clone()]).unwrap();
    let seqs: Vec<(&str, u64)> = outcome.deliveries.iter().map(|d| (d.queue.as_str(), d.seq)).collect();
    assert_eq!(seqs, [("alice", 1), (queue.as_str(), 1)]);
    store.enqueue(&message(b"m2"), std::slice::from_ref(&queue)).unwrap();
    assert_eq!(store.queue_depth(&queue).unwrap(), 2);

    // Key packages of both devices, each in its own stock.
    let package = |name: &[u8]| NewKeyPackage { data: name.to_vec(), init_key: [b"init-", name].concat() };
    let (first_id, phone_id) = (DeviceId::of_key(&KEY), DeviceId::of_key(&phone_key));
    let first_packages = [package(b"first-1")];
    super::stored(store.add_key_packages("alice", &first_id, &first_packages, None, 1000).unwrap());
    let phone_packages = [package(b"phone-1"), package(b"phone-2")];
    let phone_last_resort = package(b"phone-lr");
    super::stored(store.add_key_packages("alice", &phone_id, &phone_packages, Some(&phone_last_resort), 1000).unwrap());
    assert_eq!(
        store.key_package_stock("alice", &phone_id).unwrap(),
        KeyPackageStock { count: 2, has_last_resort: true }
    );

    // Removal drops the queue and the bodies only it held; the removed
    // device receives nothing more, and a removed device frees its slot.
    assert_eq!(store.remove_device("alice", &phone_id, 4).unwrap(), DeviceRemoval::Removed { queue: queue.clone() });
    assert_eq!(store.remove_device("alice", &phone_id, 5).unwrap(), DeviceRemoval::NotFound, "once");
    assert_eq!(store.key_package_stock("alice", &phone_id).unwrap(), KeyPackageStock::default(), "its packages went");
    assert_eq!(store.take_key_package("alice", &phone_id).unwrap(), None, "its last-resort one too");
    assert_eq!(
        store.key_package_stock("alice", &first_id).unwrap(),
        KeyPackageStock { count: 1, has_last_resort: false },
        "the other device keeps its own"
    );
    assert_eq!(store.queue_depth(&queue).unwrap(), 0);
    assert_eq!(store.stored_message_count().unwrap(), 1, "m1 stays for alice's first device");
    assert_eq!(store.create_account("bob", &[11; 32], 1).unwrap(), AccountCreation::Created);
    for recipients in
        [vec![queue.clone(), "alice".to_owned()], vec![queue.clone(), "alice".to_owned(), "bob".to_owned()]]
    {
        let id = format!("m3-{}", recipients.len());
        let skipped = store.enqueue(&message(id.as_bytes()), &recipients).unwrap();
        assert_eq!(skipped.deliveries.len(), recipients.len() - 1, "the removed device is skipped");
    }
    assert_eq!(store.queue_depth(&queue).unwrap(), 0);
    let unknown = store.enqueue(&message(b"m4"), &["alice#0000000000000000".to_owned()]);
    assert!(matches!(unknown, Err(StoreError::UnknownAccount { .. })));
    assert_eq!(store.devices("alice").unwrap()[1].removed_at_ms, Some(4));
    assert!(matches!(store.add_device(&phone(&[10; 32], "alice"), 2).unwrap(), DeviceAdded::Added { .. }));
    // An account keeps its last current device.
    assert!(matches!(store.remove_device("alice", &DeviceId::of_key(&KEY), 6).unwrap(), DeviceRemoval::Removed { .. }));
    let last = DeviceId::of_key(&[10; 32]);
    assert_eq!(store.remove_device("alice", &last, 7).unwrap(), DeviceRemoval::LastDevice);
    assert_eq!(store.devices("alice").unwrap().iter().filter(|d| d.removed_at_ms.is_none()).count(), 1);
}
