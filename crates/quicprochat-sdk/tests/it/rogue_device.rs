//! Issue 18: the server cannot add a device to someone's account. A server
//! that lies registers a device for alice certified by a key of its own
//! (and calls that key alice's account key, so its own checks pass). Bob,
//! who pinned alice's real account key when she joined his group, refuses
//! it both ways it can reach him: as the key package served for `group add
//! alice`, and as a leaf an insider's commit adds to a group he is in.

use quicprochat_core::device::certify_device;
use quicprochat_core::{DeviceId, Identity, MemberCredential, MlsClient};
use quicprochat_proto::{v1, Method};
use quicprochat_sdk::SdkError;

use crate::harness::{team_of_three, Harness};
use crate::hostile::Insider;

/// Key packages of a device of "alice" certified by `account`, made the
/// way the server would make them (it holds any key it likes, not alice's).
fn rogue_key_packages(dir: &std::path::Path, account: &Identity, count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let device = Identity::generate().expect("device key");
    let device_key = device.public_key().to_vec();
    let certificate = certify_device(account, "alice", &device_key).expect("certificate");
    let credential = MemberCredential::linked("alice", account.public_key(), &certificate);
    let mls = MlsClient::open(&dir.join("rogue.db"), device, "alice")
        .expect("rogue state")
        .as_linked_device(credential)
        .expect("a credential that verifies under the rogue key");
    (device_key, mls.generate_key_packages(count).expect("key packages"))
}

/// Edits the running server's database as a lying server would: alice's
/// account key becomes `account`'s, the rogue device is registered and its
/// key packages are the only ones served for alice.
fn register_rogue_device(harness: &Harness, account: &Identity, device_key: &[u8], packages: &[Vec<u8>]) {
    let path = harness.dir.path().join("server").join("qpc-server.db");
    let connection = rusqlite::Connection::open(path).expect("open the server's database");
    connection.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
    let device_id = DeviceId::of_key(device_key);
    connection
        .execute("UPDATE accounts SET identity_key = ?1 WHERE username = 'alice'", [account.public_key()])
        .expect("alice's account key replaced");
    connection
        .execute(
            "INSERT INTO devices (queue, username, device_id, device_key, certificate, label, created_at_ms)
             VALUES (?1, 'alice', ?2, ?3, x'00', 'rogue', 0)",
            rusqlite::params![format!("alice#{}", device_id.to_hex()), device_id.as_bytes().as_slice(), device_key],
        )
        .expect("the rogue device registered");
    connection.execute("DELETE FROM key_packages WHERE username = 'alice'", []).expect("alice's packages dropped");
    for package in packages {
        let info = quicprochat_core::ds::validate_key_package(package).expect("a valid package");
        connection
            .execute(
                "INSERT INTO key_packages (username, data, last_resort, init_key, device_id)
                 VALUES ('alice', ?1, 0, ?2, ?3)",
                rusqlite::params![package, info.init_key, device_id.as_bytes().as_slice()],
            )
            .expect("a rogue package stocked");
    }
}

#[tokio::test]
async fn a_device_the_server_adds_to_an_account_is_refused_by_its_contacts() {
    let harness = Harness::start().await;
    // Bob pins alice's account key when he joins her group.
    let (_alice, bob, carol_client) = team_of_three(&harness).await;
    carol_client.disconnect().await;
    drop(carol_client);
    let carol = Insider::of(&harness, "carol").await;
    let rogue_account = Identity::generate().expect("the server's own key");
    let (device_key, packages) = rogue_key_packages(harness.dir.path(), &rogue_account, 2);
    register_rogue_device(&harness, &rogue_account, &device_key, &packages);

    // 1. `group add alice`: the package served is refused before any commit.
    bob.create_group("second").await.expect("create");
    let refused = bob.add_members("second", &["alice".into()]).await.expect_err("the rogue device is refused");
    assert!(matches!(&refused, SdkError::UnknownDevice { user, .. } if user == "alice"), "{refused:?}");
    assert!(refused.to_string().contains("never linked"), "the error names the reason: {refused}");
    assert_eq!(bob.members("second").await.expect("members"), ["bob"]);

    // 2. A commit adding the rogue leaf (carol, an insider, adds it; the
    // server, believing its own records, accepts): bob refuses to merge it,
    // and the group is broken by carol.
    let group_id = quicprochat_sdk::local_store::LocalStore::open(&harness.profile("carol").join("client.db"))
        .expect("carol's store")
        .find_active("team")
        .expect("find")
        .expect("team")
        .group_id;
    let fetched: v1::FetchKeyPackageResponse = carol
        .rpc
        .call(
            Method::FetchKeyPackage,
            &v1::FetchKeyPackageRequest { username: "alice".into(), device_id: Default::default() },
        )
        .await
        .expect("the server serves the rogue package");
    let pending = carol.mls.add_members(&group_id, &[fetched.key_package.to_vec()]).expect("carol adds it");
    let request = v1::SubmitCommitRequest {
        group_id: group_id.clone().into(),
        epoch: pending.epoch,
        commit: pending.commit.into(),
        welcome: pending.welcome.unwrap_or_default().into(),
        message_id: b"rogue-add".to_vec().into(),
    };
    let _: v1::SubmitCommitResponse = carol.rpc.call(Method::SubmitCommit, &request).await.expect("accepted");
    bob.sync().await.expect("bob syncs");
    let broken = bob.send("team", "still safe?").await.expect_err("the group is broken, nothing is sent");
    match &broken {
        SdkError::GroupBroken { culprit, reason, .. } => {
            assert_eq!(culprit, "carol");
            assert!(reason.contains("refused a device of alice") && reason.contains("never linked"), "{reason}");
        }
        other => panic!("expected the group to be broken by carol, got {other:?}"),
    }
}

/// A device upgraded from the release before pins: on its first open it
/// pins the account keys of every roster it holds, so a rogue device added
/// afterwards meets a pin, not a first sighting.
#[tokio::test]
async fn an_upgraded_device_pins_the_accounts_of_the_groups_it_holds() {
    let harness = Harness::start().await;
    let (_alice, bob, _carol) = team_of_three(&harness).await;
    bob.disconnect().await;
    drop(bob);
    let store_path = harness.profile("bob").join("client.db");
    let store = quicprochat_sdk::local_store::LocalStore::open(&store_path).expect("bob's store");
    // As the previous release left it: no pins, never filled.
    rusqlite::Connection::open(&store_path)
        .expect("bob's store")
        .execute_batch("DELETE FROM known_accounts; DELETE FROM meta WHERE key = 'pinned_rosters';")
        .expect("back to the previous release's state");
    assert_eq!(store.pinned_account_key("alice").expect("pins"), None);

    let _bob = harness.open("bob").await;
    for name in ["alice", "bob", "carol"] {
        let profile = quicprochat_sdk::profile::Profile::load(&harness.profile(name)).expect("profile");
        let (pinned, _) = store.pinned_account_key(name).expect("pins").unwrap_or_else(|| panic!("{name} pinned"));
        assert_eq!(pinned, profile.identity.public_key(), "{name}'s account key");
    }
}
