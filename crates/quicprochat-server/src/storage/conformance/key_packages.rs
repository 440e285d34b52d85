//! Conformance checks for key packages kept per device: each device of an
//! account has its own ordinary stock, its own cap and its own last-resort
//! package.

use quicprochat_core::DeviceId;

use super::{first_device, kp, stored, users};
use crate::storage::{KeyPackageStock, KeyPackagesAdded, Store};

pub(super) fn key_packages_are_per_device(store: &dyn Store) {
    users(store, &["alice", "bob"]);
    // The store keys stocks by (username, device id); whether the device is
    // a current one of the account is the domain's check.
    let (first, phone) = (first_device(), DeviceId::of_key(&[9; 32]));
    stored(store.add_key_packages("alice", &first, &[kp(b"f1"), kp(b"f2")], Some(&kp(b"f-lr")), 1000).unwrap());
    stored(store.add_key_packages("alice", &phone, &[kp(b"p1")], Some(&kp(b"p-lr")), 1000).unwrap());
    let stock = |device: &DeviceId| store.key_package_stock("alice", device).unwrap();
    assert_eq!(stock(&first), KeyPackageStock { count: 2, has_last_resort: true });
    assert_eq!(stock(&phone), KeyPackageStock { count: 1, has_last_resort: true });
    assert_eq!(store.key_package_stock("bob", &first).unwrap(), KeyPackageStock::default(), "bob's is his own");
    assert_eq!(store.key_package_stock("alice", &DeviceId::of_key(&[10; 32])).unwrap(), KeyPackageStock::default());

    // Taking from one device leaves the other's alone; each falls back to
    // its own last-resort package.
    let take = |device: &DeviceId| {
        let taken = store.take_key_package("alice", device).unwrap().unwrap();
        (taken.key_package, taken.last_resort)
    };
    assert_eq!(take(&phone), (b"p1".to_vec(), false));
    assert_eq!(take(&phone), (b"p-lr".to_vec(), true));
    assert_eq!(take(&phone), (b"p-lr".to_vec(), true), "kept");
    assert_eq!(stock(&first), KeyPackageStock { count: 2, has_last_resort: true });
    assert_eq!(take(&first), (b"f1".to_vec(), false));
    assert_eq!(store.take_key_package("bob", &first).unwrap(), None);

    // One last-resort package per device: replacing the phone's keeps the
    // first device's, and only a device's own counts as replaced.
    stored(store.add_key_packages("alice", &phone, &[], Some(&kp(b"p-lr2")), 1000).unwrap());
    assert_eq!(store.last_resort_key_package("alice", &phone).unwrap().as_deref(), Some(&b"p-lr2"[..]));
    assert_eq!(store.last_resort_key_package("alice", &first).unwrap().as_deref(), Some(&b"f-lr"[..]));
    let stolen = store.add_key_packages("alice", &phone, &[], Some(&kp(b"f-lr")), 1000).unwrap();
    assert_eq!(stolen, KeyPackagesAdded::InitKeyInUse, "the first device's last resort is not the phone's to replace");
    assert_eq!(store.last_resort_key_package("alice", &phone).unwrap().as_deref(), Some(&b"p-lr2"[..]));

    // The cap is per device: the first device's stock does not count
    // against the phone's.
    assert_eq!(stock(&first).count, 1);
    assert_eq!(stored(store.add_key_packages("alice", &phone, &[kp(b"p2")], None, 1).unwrap()).count, 1);
    let full = store.add_key_packages("alice", &phone, &[kp(b"p3")], None, 1).unwrap();
    assert_eq!(full, KeyPackagesAdded::StockFull { count: 1 });
    assert_eq!(stored(store.add_key_packages("alice", &first, &[kp(b"f3")], None, 2).unwrap()).count, 2);
}
