//! Domain tests: key package upload, single-use fetch, last resort and stock.

use super::{assert_status, client, fetch_one, policy, store, unlimited, user};
use crate::domain::commits::CommitPolicy;
use crate::domain::devices::Caller;
use crate::domain::key_packages::{fetch_last_resort, stock, upload, LOW_WATER, MAX_UPLOAD};
use crate::domain::DomainError;

#[test]
fn upload_fetch_single_use_then_last_resort() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    let report = stock(&store, Caller::first_device("alice"), &policy()).unwrap();
    assert_eq!((report.stock, report.low_water, report.has_last_resort), (3, LOW_WATER, true));

    let mut served = Vec::new();
    for _ in 0..3 {
        let package = fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap();
        assert!(!package.last_resort);
        assert!(!served.contains(&package.key_package), "never served twice");
        served.push(package.key_package);
    }
    let first_last_resort = fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap();
    let second_last_resort = fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap();
    assert!(first_last_resort.last_resort && second_last_resort.last_resort);
    assert_eq!(first_last_resort.key_package, second_last_resort.key_package);
    let report = stock(&store, Caller::first_device("alice"), &policy()).unwrap();
    assert_eq!((report.stock, report.has_last_resort), (0, true));

    // Refill; the new batch is served before the last resort again.
    let fresh = alice.client.generate_key_packages(2).unwrap();
    let report = upload(&store, Caller::first_device(&alice.name), &fresh, None, None).unwrap();
    assert_eq!(report.stock, 2);
    assert_eq!(fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap().key_package, fresh[0]);

    assert_status(fetch_one(&store, &bob.name, "nobody", &policy(), &unlimited), "NOT_FOUND", "nobody");
}

#[test]
fn the_last_resort_package_is_served_only_within_its_budget() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    for _ in 0..3 {
        fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap();
    }
    let spent = || Err(DomainError::ResourceExhausted { message: "budget spent".into(), retry_after_ms: 5 });
    assert_status(fetch_one(&store, &bob.name, &alice.name, &policy(), &spent), "RESOURCE_EXHAUSTED", "budget spent");
    assert_status(
        fetch_last_resort(&store, Caller::first_device(&bob.name), &alice.name, None, &policy(), &spent),
        "RESOURCE_EXHAUSTED",
        "budget spent",
    );
    // An ordinary package never asks the budget.
    let fresh = alice.client.generate_key_packages(1).unwrap();
    upload(&store, Caller::first_device(&alice.name), &fresh, None, None).unwrap();
    assert_eq!(fetch_one(&store, &bob.name, &alice.name, &policy(), &spent).unwrap().key_package, fresh[0]);
    assert!(fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap().last_resort);
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
    assert_status(fetch_one(&store, &bob.name, "carol", &policy(), &unlimited), "NOT_FOUND", "no usable key package");
}

#[test]
fn upload_rejects_foreign_wrong_slot_and_garbage() {
    let store = store();
    let alice = user(&store, "alice");
    let _bob = user(&store, "bob");
    let alice_package = alice.client.generate_key_packages(1).unwrap();
    assert_status(
        upload(&store, Caller::first_device("bob"), &alice_package, None, None),
        "PERMISSION_DENIED",
        "\"alice\"",
    );

    // Same username, another identity key: an impersonation attempt.
    let (impostor, _dir) = client("alice");
    let forged = impostor.generate_key_packages(1).unwrap();
    assert_status(
        upload(&store, Caller::first_device("alice"), &forged, None, None),
        "PERMISSION_DENIED",
        "identity key",
    );

    let last_resort = alice.client.generate_last_resort_key_package().unwrap();
    assert_status(
        upload(&store, Caller::first_device("alice"), std::slice::from_ref(&last_resort), None, None),
        "INVALID_ARGUMENT",
        "last_resort slot",
    );
    assert_status(
        upload(&store, Caller::first_device("alice"), &[], Some(&alice_package[0]), None),
        "INVALID_ARGUMENT",
        "lacks the last-resort",
    );
    assert_status(
        upload(&store, Caller::first_device("alice"), &[vec![1, 2, 3]], None, None),
        "INVALID_ARGUMENT",
        "key package 0",
    );

    // One bad package rejects the whole upload.
    let mixed = vec![alice_package[0].clone(), forged[0].clone()];
    assert_status(
        upload(&store, Caller::first_device("alice"), &mixed, None, None),
        "PERMISSION_DENIED",
        "key package 1",
    );
    assert_eq!(stock(&store, Caller::first_device("alice"), &policy()).unwrap().stock, 3);

    let too_many = vec![alice_package[0].clone(); MAX_UPLOAD + 1];
    assert_status(
        upload(&store, Caller::first_device("alice"), &too_many, None, None),
        "INVALID_ARGUMENT",
        "at most 100",
    );
}

/// Review F4: packages that expire before every member could process an Add
/// of them are not served (ordinary ones are discarded), and a last-resort
/// package in that state counts as none, so its owner uploads a fresh one.
#[test]
fn packages_that_expire_too_soon_are_not_served() {
    let store = store();
    let alice = user(&store, "alice");
    let bob = user(&store, "bob");
    // Every package lives 84 days; ask for 85 more.
    let demanding = CommitPolicy { key_package_remaining_s: 85 * 24 * 3600, ..policy() };
    assert!(!stock(&store, Caller::first_device("alice"), &demanding).unwrap().has_last_resort);
    assert_status(
        fetch_one(&store, &bob.name, &alice.name, &demanding, &unlimited),
        "NOT_FOUND",
        "no usable key package",
    );
    assert_eq!(
        stock(&store, Caller::first_device("alice"), &policy()).unwrap().stock,
        0,
        "the three ordinary ones were discarded"
    );
    assert_status(
        fetch_last_resort(&store, Caller::first_device(&bob.name), &alice.name, None, &demanding, &unlimited),
        "NOT_FOUND",
        "no usable",
    );
    let fresh = alice.client.generate_key_packages(1).unwrap();
    upload(&store, Caller::first_device(&alice.name), &fresh, None, None).unwrap();
    assert_eq!(fetch_one(&store, &bob.name, &alice.name, &policy(), &unlimited).unwrap().key_package, fresh[0]);
}
