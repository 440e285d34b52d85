//! Domain tests: devices. A linked device logs in with its own key and has
//! a queue of its own; a group's messages reach every device of the roster
//! but the sending one, and a commit only from its signing device's own
//! session; the server takes no key package and no leaf from a
//! device its account did not register, or removed. Key packages are per
//! device: each device has its own stock, and a fetch serves one package
//! per current device.

use quicprochat_core::client::MlsClient;
use quicprochat_core::device::certify_device;
use quicprochat_core::identity::{auth_transcript, AuthPurpose, Identity};
use quicprochat_core::{DeviceId, MemberCredential};

use super::{
    add, assert_status, client, gid, inbox, new_group, policy, register_open, sign, store, submit, unlimited, user,
    User, EXPORTER, NONCE, NOW,
};
use crate::domain::accounts::{login, AuthProof, LoginOutcome};
use crate::domain::commits::SubmitCommit;
use crate::domain::devices::Caller;
use crate::domain::key_packages as kp;
use crate::domain::messages::{send_message, SendMessage};
use crate::storage::{DeviceAdded, DeviceRemoval, MemoryStore, NewDevice, Store};

/// Registers `name` with no key packages (so a fetch for it serves its
/// other devices' packages).
fn bare_user(store: &dyn Store, name: &str) -> User {
    let (client, dir) = client(name);
    let signature = sign(client.identity(), AuthPurpose::Register, name, EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    register_open(store, name, client.identity().public_key(), &proof, NOW).unwrap();
    User { name: name.to_owned(), client, _dir: dir }
}

/// A device of `owner`'s account certified by `account` (the owner's
/// account key, or a forger's), as an MLS client with its own key.
fn device_of(owner: &User, account: &Identity) -> (User, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let device = Identity::generate().unwrap();
    let device_key = device.public_key().to_vec();
    let certificate = certify_device(account, &owner.name, &device_key).unwrap();
    let credential = MemberCredential::linked(&owner.name, account.public_key(), &certificate);
    let client = MlsClient::open(&dir.path().join("device.db"), device, &owner.name)
        .unwrap()
        .as_linked_device(credential)
        .unwrap();
    (User { name: owner.name.clone(), client, _dir: dir }, certificate)
}

/// A linked device of `owner`, registered, with two key packages uploaded;
/// returns it and its queue.
fn linked_device(store: &dyn Store, owner: &User) -> (User, String) {
    let (device, certificate) = device_of(owner, owner.client.identity());
    let device_key = device.client.identity().public_key().to_vec();
    let new = NewDevice {
        username: owner.name.clone(),
        device_id: DeviceId::of_key(&device_key),
        device_key,
        certificate,
        label: "phone".to_owned(),
        created_at_ms: NOW,
    };
    let DeviceAdded::Added { queue } = store.add_device(&new, 16).unwrap() else { panic!("device not added") };
    let packages = device.client.generate_key_packages(2).unwrap();
    // Each device uploads its own packages.
    let first_device = Caller::first_device(&owner.name);
    assert_status(kp::upload(store, first_device, &packages, None, None), "PERMISSION_DENIED", "another device's");
    kp::upload(store, Caller { username: &owner.name, queue: &queue }, &packages, None, None).unwrap();
    (device, queue)
}

fn device_login(store: &dyn Store, name: &str, device: &Identity) -> Result<String, crate::domain::DomainError> {
    device_login_outcome(store, name, device).map(|outcome| outcome.queue)
}

fn device_login_outcome(
    store: &dyn Store,
    name: &str,
    device: &Identity,
) -> Result<LoginOutcome, crate::domain::DomainError> {
    let transcript = auth_transcript(AuthPurpose::Login, NONCE, EXPORTER, name, device.public_key());
    let signature = device.sign(&transcript).unwrap();
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    login(store, name, device.public_key(), &proof, &policy())
}

#[test]
fn a_linked_device_logs_in_with_its_own_key_until_removed() {
    let store = store();
    let alice = bare_user(&store, "alice");
    let (phone, queue) = linked_device(&store, &alice);
    let phone_id = DeviceId::of_key(phone.client.identity().public_key());
    assert_eq!(queue, format!("alice#{phone_id}"));
    assert_eq!(device_login(&store, "alice", phone.client.identity()).unwrap(), queue);
    assert_eq!(device_login(&store, "alice", alice.client.identity()).unwrap(), "alice", "the first device");
    let stranger = Identity::generate().unwrap();
    assert_status(device_login(&store, "alice", &stranger), "UNAUTHENTICATED", "");

    assert!(matches!(store.remove_device("alice", &phone_id, NOW + 1).unwrap(), DeviceRemoval::Removed { .. }));
    assert_status(device_login(&store, "alice", phone.client.identity()), "PERMISSION_DENIED", "removed");
    let more = phone.client.generate_key_packages(1).unwrap();
    let phone_caller = Caller { username: "alice", queue: &queue };
    assert_status(kp::upload(&store, phone_caller, &more, None, None), "PERMISSION_DENIED", "removed");
}

#[test]
fn messages_reach_every_device_but_the_sending_one() {
    let store = store();
    let alice = bare_user(&store, "alice");
    let bob = user(&store, "bob");
    let (phone, phone_queue) = linked_device(&store, &alice);
    let group_id = gid(1);
    new_group(&store, &alice, &group_id);
    // Alice's stock is her phone's packages: this adds bob and her phone.
    add(&store, &alice, &group_id, &[&bob, &phone], b"add").unwrap();
    let welcomes = |queue: &str| store.fetch(queue, 0, 10).unwrap().items.len();
    // The Welcome and the commit to each new device, nothing to the committing one.
    assert_eq!((welcomes("bob"), welcomes(&phone_queue), welcomes("alice")), (2, 2, 0));
    bob.client.join_from_welcome(&inbox(&store, &bob)[0].payload).unwrap();
    phone.client.join_from_welcome(&store.fetch(&phone_queue, 0, 10).unwrap().items[0].payload).unwrap();

    let deliveries = |sender: &User, caller: Caller<'_>, id: &[u8]| {
        let ciphertext = sender.client.encrypt(&group_id, b"hi").unwrap();
        let request = SendMessage { group_id: &group_id, message_id: id, ciphertext: &ciphertext };
        let fanout = send_message(&store, caller, &request, NOW).unwrap().fanout.unwrap();
        fanout.deliveries.into_iter().map(|(queue, _)| queue).collect::<Vec<_>>()
    };
    let mut expected = vec!["bob".to_owned(), phone_queue.clone()];
    expected.sort();
    assert_eq!(deliveries(&alice, Caller::first_device("alice"), b"m1"), expected, "her phone gets a copy");
    let phone_caller = Caller { username: "alice", queue: &phone_queue };
    assert_eq!(deliveries(&phone, phone_caller, b"m2"), ["alice", "bob"], "and her first device from the phone");
    let mut to_alice = vec!["alice".to_owned(), phone_queue.clone()];
    to_alice.sort();
    assert_eq!(deliveries(&bob, Caller::first_device("bob"), b"m3"), to_alice, "both of alice's devices");

    // A device commits through its own session only: the phone's commit
    // through the first device's session is refused, and nothing changes.
    let removal = phone.client.remove_members(&group_id, &["bob".to_owned()]).unwrap();
    let request = SubmitCommit {
        group_id: &group_id,
        epoch: removal.epoch,
        commit: &removal.commit,
        welcome: None,
        message_id: b"phone-commit",
    };
    let epoch = store.get_group(&group_id).unwrap().unwrap().epoch;
    assert_status(submit(&store, "alice", &request, NOW), "PERMISSION_DENIED", "signed by another device");
    assert_eq!(store.get_group(&group_id).unwrap().unwrap().epoch, epoch, "nothing written");
    phone.client.clear_pending_commit(&group_id).unwrap();

    // A device of the account that is not in the group may not post to it.
    let (laptop, laptop_queue) = linked_device(&store, &alice);
    let ciphertext = alice.client.encrypt(&group_id, b"from elsewhere").unwrap();
    let request = SendMessage { group_id: &group_id, message_id: b"m4", ciphertext: &ciphertext };
    let outsider = Caller { username: "alice", queue: &laptop_queue };
    assert_status(send_message(&store, outsider, &request, NOW), "PERMISSION_DENIED", "this device");
    drop(laptop);
}

#[test]
fn the_server_takes_no_key_package_or_leaf_from_a_device_the_account_did_not_register() {
    let store = store();
    let alice = bare_user(&store, "alice");
    let bob = user(&store, "bob");
    // Certified by alice's own account key, but never registered.
    let (unregistered, _) = device_of(&alice, alice.client.identity());
    let packages = unregistered.client.generate_key_packages(1).unwrap();
    assert_status(
        kp::upload(&store, Caller::first_device("alice"), &packages, None, None),
        "PERMISSION_DENIED",
        "not from a device",
    );
    // Certified by another key altogether.
    let forger = Identity::generate().unwrap();
    let (forged, _) = device_of(&alice, &forger);
    let forged_packages = forged.client.generate_key_packages(1).unwrap();
    assert_status(
        kp::upload(&store, Caller::first_device("alice"), &forged_packages, None, None),
        "PERMISSION_DENIED",
        "identity key",
    );

    // A package it got some other way: the add is refused before anything
    // else (and a fetch would never serve it: see the removed device below).
    let group_id = gid(2);
    new_group(&store, &bob, &group_id);
    let refused = submit_add(&store, &bob, &group_id, packages, b"add-unregistered");
    assert_status(refused, "PERMISSION_DENIED", "not from a device");

    // A removed device's packages are not served any more, and a package
    // served before the removal no longer adds it.
    let (phone, _) = linked_device(&store, &alice);
    let phone_id = DeviceId::of_key(phone.client.identity().public_key());
    let served = super::fetch_one(&store, "bob", "alice", &policy(), &unlimited).unwrap().key_package;
    store.remove_device("alice", &phone_id, NOW).unwrap();
    assert_status(
        kp::fetch(&store, Caller::first_device("bob"), "alice", None, &policy(), &unlimited),
        "NOT_FOUND",
        "no usable key package",
    );
    let refused = submit_add(&store, &bob, &group_id, vec![served], b"add-removed");
    assert_status(refused, "PERMISSION_DENIED", "removed");
}

/// `committer` adds the members of `packages` to `group_id` and submits
/// the commit (merged if accepted, cleared if not).
fn submit_add(
    store: &MemoryStore,
    committer: &User,
    group_id: &[u8],
    packages: Vec<Vec<u8>>,
    message_id: &[u8],
) -> Result<u64, crate::domain::DomainError> {
    let pending = committer.client.add_members(group_id, &packages).unwrap();
    let request = super::commit_request(group_id, &pending, message_id);
    let caller = Caller::first_device(&committer.name);
    let result = super::VIEWS
        .with(|views| crate::domain::commits::submit_commit(store, views, caller, &request, NOW, &policy()))
        .map(|accepted| accepted.epoch);
    super::finish(committer, group_id, result)
}

/// `requester`'s fetch of `target`'s key packages (every device, or
/// `device` only): (device id, last resort) of each package served, each
/// checked to be made by the device it is served as.
fn fetch_devices(
    store: &dyn Store,
    requester: &str,
    target: &str,
    device: Option<DeviceId>,
) -> Result<Vec<(DeviceId, bool)>, crate::domain::DomainError> {
    let fetched = kp::fetch(store, Caller::first_device(requester), target, device, &policy(), &unlimited)?;
    Ok(fetched
        .iter()
        .map(|package| {
            let info = quicprochat_core::ds::validate_key_package(&package.key_package).unwrap();
            assert_eq!(info.device_id(), package.device_id, "served as the device that made it");
            (package.device_id, package.last_resort)
        })
        .collect())
}

/// The stock of `username`'s device `queue` (its own session asking).
fn device_stock(store: &dyn Store, username: &str, queue: &str) -> (u32, bool) {
    let report = kp::stock(store, Caller { username, queue }, &policy()).unwrap();
    (report.stock, report.has_last_resort)
}

#[test]
fn each_device_has_its_own_key_packages_and_a_fetch_serves_one_per_device() {
    let store = store();
    // alice's first device uploads 3 packages and a last-resort one, her
    // phone 2 of its own; bob fetches.
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let (phone, phone_queue) = linked_device(&store, &alice);
    let first_id = DeviceId::of_key(alice.client.identity().public_key());
    let phone_id = DeviceId::of_key(phone.client.identity().public_key());
    assert_eq!(device_stock(&store, "alice", "alice"), (3, true));
    assert_eq!(device_stock(&store, "alice", &phone_queue), (2, false));
    let at_login = device_login_outcome(&store, "alice", phone.client.identity()).unwrap().key_package_stock;
    assert_eq!((at_login.count, at_login.has_last_resort), (2, false), "login reports the device's own stock");

    // One package per device, in device order; one taken from each stock.
    assert_eq!(fetch_devices(&store, "bob", "alice", None).unwrap(), [(first_id, false), (phone_id, false)]);
    assert_eq!(device_stock(&store, "alice", "alice"), (2, true));
    assert_eq!(device_stock(&store, "alice", &phone_queue), (1, false));

    // Naming a device serves that device's only.
    assert_eq!(fetch_devices(&store, "bob", "alice", Some(phone_id)).unwrap(), [(phone_id, false)]);
    assert_eq!(device_stock(&store, "alice", "alice"), (2, true));
    assert_eq!(device_stock(&store, "alice", &phone_queue), (0, false));
    assert_status(fetch_devices(&store, "bob", "alice", Some(phone_id)), "NOT_FOUND", "no usable key package");
    // A device with nothing left is skipped; the others still answer.
    assert_eq!(fetch_devices(&store, "bob", "alice", None).unwrap(), [(first_id, false)]);

    // A device id that is not a current device of alice's: NOT_FOUND, and
    // nothing taken.
    let bobs_device = DeviceId::of_key(bob.client.identity().public_key());
    assert_status(fetch_devices(&store, "alice", "alice", Some(bobs_device)), "NOT_FOUND", "has no device");
    assert_status(fetch_devices(&store, "bob", "alice", Some(DeviceId::of_key(&[1; 32]))), "NOT_FOUND", "no device");
    assert_eq!(device_stock(&store, "alice", "alice"), (1, true));

    // A removed device's packages are not served, even when named.
    let more = phone.client.generate_key_packages(2).unwrap();
    kp::upload(&store, Caller { username: "alice", queue: &phone_queue }, &more, None, None).unwrap();
    assert!(matches!(store.remove_device("alice", &phone_id, NOW + 1).unwrap(), DeviceRemoval::Removed { .. }));
    assert_status(fetch_devices(&store, "bob", "alice", Some(phone_id)), "NOT_FOUND", "has no device");
    assert_eq!(fetch_devices(&store, "bob", "alice", None).unwrap(), [(first_id, false)], "the phone's are not");
    assert_eq!(fetch_devices(&store, "bob", "alice", None).unwrap(), [(first_id, true)]);
}

#[test]
fn a_fetch_of_every_device_adds_every_device() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let (phone, phone_queue) = linked_device(&store, &alice);
    let group_id = gid(3);
    new_group(&store, &bob, &group_id);
    // `add` fetches one package per device of alice's and adds them all:
    // each package was served to bob, so the commit is accepted.
    add(&store, &bob, &group_id, &[&alice], b"add-alice").unwrap();
    for queue in ["alice", phone_queue.as_str()] {
        let items = store.fetch(queue, 0, 10).unwrap().items;
        assert!(items.iter().any(|item| item.kind == crate::storage::EntryKind::Welcome), "{queue} is welcomed");
    }
    phone.client.join_from_welcome(&store.fetch(&phone_queue, 0, 10).unwrap().items[0].payload).unwrap();
}

#[test]
fn a_fetch_asks_the_last_resort_budget_once_and_serves_ordinary_packages_past_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = store();
    let alice = bare_user(&store, "alice");
    let _bob = user(&store, "bob");
    let (phone, phone_queue) = linked_device(&store, &alice);
    let phone_caller = Caller { username: "alice", queue: &phone_queue };
    let last_resort = |client: &MlsClient| client.generate_last_resort_key_package().unwrap();
    kp::upload(&store, Caller::first_device("alice"), &[], Some(&last_resort(&alice.client)), None).unwrap();
    kp::upload(&store, phone_caller, &[], Some(&last_resort(&phone.client)), None).unwrap();
    // The phone's two ordinary packages go first.
    for _ in 0..2 {
        kp::fetch(
            &store,
            Caller::first_device("bob"),
            "alice",
            Some(DeviceId::of_key(phone.client.identity().public_key())),
            &policy(),
            &unlimited,
        )
        .unwrap();
    }

    let asked = AtomicUsize::new(0);
    let counting = || {
        asked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    };
    let both = kp::fetch(&store, Caller::first_device("bob"), "alice", None, &policy(), &counting).unwrap();
    assert_eq!(both.iter().map(|package| package.last_resort).collect::<Vec<_>>(), [true, true]);
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one fetch, one add of alice: the budget is asked once");

    let spent =
        || Err(crate::domain::DomainError::ResourceExhausted { message: "budget spent".into(), retry_after_ms: 5 });
    assert_status(
        kp::fetch(&store, Caller::first_device("bob"), "alice", None, &policy(), &spent),
        "RESOURCE_EXHAUSTED",
        "budget spent",
    );
    assert_status(
        kp::fetch_last_resort(&store, Caller::first_device("bob"), "alice", None, &policy(), &spent),
        "RESOURCE_EXHAUSTED",
        "budget spent",
    );
    // Past the budget, a device with an ordinary package still answers.
    let fresh = phone.client.generate_key_packages(1).unwrap();
    kp::upload(&store, phone_caller, &fresh, None, None).unwrap();
    let served = kp::fetch(&store, Caller::first_device("bob"), "alice", None, &policy(), &spent).unwrap();
    assert_eq!(served.len(), 1);
    assert_eq!((served[0].key_package.as_slice(), served[0].last_resort), (fresh[0].as_slice(), false));
    assert_eq!(device_stock(&store, "alice", "alice"), (0, true), "the first device's last resort is kept");

    // `fetch_last_resort` serves every device's last-resort package.
    let kept =
        kp::fetch_last_resort(&store, Caller::first_device("bob"), "alice", None, &policy(), &unlimited).unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|package| package.last_resort));
    assert_eq!(device_stock(&store, "alice", &phone_queue), (0, true));
}
