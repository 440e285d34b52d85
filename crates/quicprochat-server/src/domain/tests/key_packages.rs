//! Domain tests: key package upload, single-use fetch, last resort and stock.

use super::{assert_status, client, store, user};
use crate::domain::key_packages::{fetch, stock, upload, LOW_WATER, MAX_UPLOAD};

#[test]
fn upload_fetch_single_use_then_last_resort() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let report = stock(&store, "alice").unwrap();
    assert_eq!((report.stock, report.low_water, report.has_last_resort), (3, LOW_WATER, true));

    let mut served = Vec::new();
    for _ in 0..3 {
        let package = fetch(&store, &bob.name, &alice.name).unwrap();
        assert!(!package.last_resort);
        assert!(!served.contains(&package.key_package), "never served twice");
        served.push(package.key_package);
    }
    let first_last_resort = fetch(&store, &bob.name, &alice.name).unwrap();
    let second_last_resort = fetch(&store, &bob.name, &alice.name).unwrap();
    assert!(first_last_resort.last_resort && second_last_resort.last_resort);
    assert_eq!(first_last_resort.key_package, second_last_resort.key_package);
    let report = stock(&store, "alice").unwrap();
    assert_eq!((report.stock, report.has_last_resort), (0, true));

    // Refill; the new batch is served before the last resort again.
    let fresh = alice.client.generate_key_packages(2).unwrap();
    let report = upload(&store, &alice.name, &fresh, None).unwrap();
    assert_eq!(report.stock, 2);
    assert_eq!(fetch(&store, &bob.name, &alice.name).unwrap().key_package, fresh[0]);

    assert_status(fetch(&store, &bob.name, "nobody"), "NOT_FOUND", "nobody");
}

#[test]
fn fetch_without_stock_is_not_found() {
    let store = store();
    let bob = user(&store, "bob");
    let (carol_client, _dir) = client("carol");
    let signature = super::sign(
        carol_client.identity(),
        quicprochat_core::identity::AuthPurpose::Register,
        "carol",
        super::EXPORTER,
    );
    let proof = crate::domain::accounts::AuthProof {
        nonce: super::NONCE,
        tls_exporter: super::EXPORTER,
        signature: &signature,
    };
    super::register_open(&store, "carol", carol_client.identity().public_key(), &proof, 0).unwrap();
    assert_status(fetch(&store, &bob.name, "carol"), "NOT_FOUND", "no key package");
}

#[test]
fn upload_rejects_foreign_wrong_slot_and_garbage() {
    let store = store();
    let alice = user(&store, "alice");
    let _bob = user(&store, "bob");
    let alice_package = alice.client.generate_key_packages(1).unwrap();
    assert_status(upload(&store, "bob", &alice_package, None), "PERMISSION_DENIED", "\"alice\"");

    // Same username, another identity key: an impersonation attempt.
    let (impostor, _dir) = client("alice");
    let forged = impostor.generate_key_packages(1).unwrap();
    assert_status(upload(&store, "alice", &forged, None), "PERMISSION_DENIED", "identity key");

    let last_resort = alice.client.generate_last_resort_key_package().unwrap();
    assert_status(
        upload(&store, "alice", std::slice::from_ref(&last_resort), None),
        "INVALID_ARGUMENT",
        "last_resort slot",
    );
    assert_status(upload(&store, "alice", &[], Some(&alice_package[0])), "INVALID_ARGUMENT", "lacks the last-resort");
    assert_status(upload(&store, "alice", &[vec![1, 2, 3]], None), "INVALID_ARGUMENT", "key package 0");

    // One bad package rejects the whole upload.
    let mixed = vec![alice_package[0].clone(), forged[0].clone()];
    assert_status(upload(&store, "alice", &mixed, None), "PERMISSION_DENIED", "key package 1");
    assert_eq!(stock(&store, "alice").unwrap().stock, 3);

    let too_many = vec![alice_package[0].clone(); MAX_UPLOAD + 1];
    assert_status(upload(&store, "alice", &too_many, None), "INVALID_ARGUMENT", "at most 100");
}
