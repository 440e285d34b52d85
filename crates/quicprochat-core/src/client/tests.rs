//! Unit tests of `MlsClient` behaviour that needs only one client.

use super::*;
use crate::ciphersuite::CLASSICAL_CIPHERSUITE;
use crate::ds::validate_key_package;

fn client(dir: &tempfile::TempDir, name: &str) -> MlsClient {
    let path = dir.path().join(format!("{name}.db"));
    MlsClient::open_with_ciphersuite(&path, Identity::generate().unwrap(), name, CLASSICAL_CIPHERSUITE).unwrap()
}

#[test]
fn open_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let err = MlsClient::open(&path, Identity::generate().unwrap(), "").unwrap_err();
    assert!(matches!(err, MlsError::InvalidArgument { .. }));
    let err = MlsClient::open_with_ciphersuite(
        &path,
        Identity::generate().unwrap(),
        "x",
        Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    )
    .unwrap_err();
    assert!(matches!(err, MlsError::InvalidArgument { .. }));
    let default = MlsClient::open(&path, Identity::generate().unwrap(), "x").unwrap();
    assert_eq!(default.ciphersuite(), DEFAULT_CIPHERSUITE);
}

#[test]
fn key_packages_validate_on_the_server_side() {
    let dir = tempfile::tempdir().unwrap();
    let alice = client(&dir, "alice");
    let packages = alice.generate_key_packages(3).unwrap();
    assert_eq!(packages.len(), 3);
    assert_eq!(packages.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    for package in &packages {
        let info = validate_key_package(package).unwrap();
        assert_eq!(info.username, "alice");
        assert_eq!(info.identity_key, alice.identity().public_key());
        assert!(!info.last_resort);
    }
    let last_resort = alice.generate_last_resort_key_package().unwrap();
    assert!(validate_key_package(&last_resort).unwrap().last_resort);
}

#[test]
fn group_lifecycle_errors() {
    let dir = tempfile::tempdir().unwrap();
    let alice = client(&dir, "alice");
    let group_id = [1u8; 16];
    assert!(!alice.has_group(&group_id).unwrap());
    assert!(matches!(alice.epoch(&group_id), Err(MlsError::UnknownGroup { .. })));
    assert!(matches!(alice.create_group(&[]), Err(MlsError::InvalidArgument { .. })));

    alice.create_group(&group_id).unwrap();
    assert!(alice.has_group(&group_id).unwrap());
    assert!(alice.is_active(&group_id).unwrap());
    assert_eq!(alice.epoch(&group_id).unwrap(), 0);
    assert_eq!(alice.members(&group_id).unwrap(), vec!["alice".to_owned()]);
    assert!(matches!(alice.create_group(&group_id), Err(MlsError::GroupExists { .. })));
    assert!(matches!(
        alice.remove_members(&group_id, &["nobody".to_owned()]),
        Err(MlsError::NotAMember { ref username }) if username == "nobody"
    ));
    assert!(matches!(alice.remove_members(&group_id, &["alice".to_owned()]), Err(MlsError::InvalidArgument { .. })));
    assert!(matches!(alice.merge_pending_commit(&group_id), Err(MlsError::InvalidState { .. })));
    assert!(alice.commit_pending_proposals(&group_id).unwrap().is_none());
    assert!(matches!(
        alice.add_members(&group_id, &[b"junk".to_vec()]),
        Err(MlsError::InvalidKeyPackage { index: 0, .. })
    ));

    alice.delete_group(&group_id).unwrap();
    assert!(!alice.has_group(&group_id).unwrap());
}

#[test]
fn add_rejects_key_package_of_other_ciphersuite() {
    let dir = tempfile::tempdir().unwrap();
    let alice = client(&dir, "alice");
    let bob = MlsClient::open(&dir.path().join("bob.db"), Identity::generate().unwrap(), "bob").unwrap();
    let group_id = [2u8; 16];
    alice.create_group(&group_id).unwrap();
    let package = bob.generate_key_packages(1).unwrap();
    assert!(matches!(alice.add_members(&group_id, &package), Err(MlsError::InvalidKeyPackage { index: 0, .. })));
    assert_eq!(alice.epoch(&group_id).unwrap(), 0);
}

#[test]
fn process_incoming_rejects_garbage_and_foreign_groups() {
    let dir = tempfile::tempdir().unwrap();
    let alice = client(&dir, "alice");
    let group_a = [3u8; 16];
    let group_b = [4u8; 16];
    alice.create_group(&group_a).unwrap();
    alice.create_group(&group_b).unwrap();
    let err = alice.process_incoming(&group_a, b"garbage").unwrap_err();
    assert!(matches!(err, MlsError::Malformed { .. }));
    assert!(err.is_peer_error());

    let message = alice.encrypt(&group_b, b"hello").unwrap();
    assert!(matches!(alice.process_incoming(&group_a, &message), Err(MlsError::WrongGroup { .. })));
    // Our own message echoed back is ignored, not an error.
    assert!(matches!(alice.process_incoming(&group_b, &message).unwrap(), Incoming::Ignored { .. }));
    assert!(matches!(alice.join_from_welcome(&message), Err(MlsError::Malformed { what: "Welcome", .. })));
}

#[test]
fn client_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<MlsClient>();
}
