//! Unit tests of the DS view that need only one client.

use super::*;
use crate::ciphersuite::CLASSICAL_CIPHERSUITE;
use crate::client::MlsClient;
use crate::identity::Identity;

fn alice_with_group(dir: &tempfile::TempDir) -> (MlsClient, DsGroupView) {
    let alice = MlsClient::open_with_ciphersuite(
        &dir.path().join("alice.db"),
        Identity::generate().unwrap(),
        "alice",
        CLASSICAL_CIPHERSUITE,
    )
    .unwrap();
    let bootstrap = alice.create_group(&[9u8; 16]).unwrap();
    let view = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap();
    (alice, view)
}

#[test]
fn view_from_group_info() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, view) = alice_with_group(&dir);
    assert_eq!(view.group_id(), vec![9u8; 16]);
    assert_eq!(view.epoch(), 0);
    assert_eq!(view.ciphersuite(), CLASSICAL_CIPHERSUITE);
    assert_eq!(
        view.members(),
        vec![MemberInfo {
            username: "alice".to_owned(),
            identity_key: alice.identity().public_key().to_vec(),
            device_id: crate::DeviceId::of_key(alice.identity().public_key()),
        }]
    );
    assert!(view.is_member("alice"));
    assert!(!view.is_member("bob"));
}

#[test]
fn tampered_group_info_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let alice = MlsClient::open_with_ciphersuite(
        &dir.path().join("alice.db"),
        Identity::generate().unwrap(),
        "alice",
        CLASSICAL_CIPHERSUITE,
    )
    .unwrap();
    let bootstrap = alice.create_group(&[5u8; 16]).unwrap();
    let mut group_info = bootstrap.group_info.clone();
    let last = group_info.len() - 1;
    group_info[last] ^= 0x01;
    assert!(DsGroupView::from_group_info(&group_info, &bootstrap.ratchet_tree).is_err());
    assert!(matches!(DsGroupView::from_group_info(b"junk", &bootstrap.ratchet_tree), Err(DsError::Malformed { .. })));
    assert!(matches!(DsGroupView::from_group_info(&bootstrap.group_info, b"junk"), Err(DsError::Malformed { .. })));
}

#[test]
fn from_bytes_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, view) = alice_with_group(&dir);
    let bytes = view.to_bytes().unwrap();
    let restored = DsGroupView::from_bytes(&bytes).unwrap();
    assert_eq!(restored.to_bytes().unwrap(), bytes);

    assert!(DsGroupView::from_bytes(&[]).is_err());
    assert!(DsGroupView::from_bytes(b"garbage garbage garbage garbage garbage").is_err());
    for cut in [8, bytes.len() / 2, bytes.len() - 1] {
        assert!(DsGroupView::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    flipped[20] ^= 0x40;
    assert!(matches!(DsGroupView::from_bytes(&flipped), Err(DsError::CorruptState { .. })));
    // A well-formed blob whose lengths point past the end must not panic or allocate wildly.
    let mut body = b"QPCDSV1\0".to_vec();
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
    body.extend_from_slice(&digest);
    assert!(matches!(DsGroupView::from_bytes(&body), Err(DsError::CorruptState { .. })));
}

#[test]
fn wrong_message_kinds_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut view) = alice_with_group(&dir);
    let before = view.to_bytes().unwrap();
    let application = alice.encrypt(&[9u8; 16], b"hi").unwrap();
    assert!(matches!(view.process_commit(&application), Err(DsError::WrongWireFormat { .. })));
    assert!(matches!(view.process_commit(b"junk"), Err(DsError::Malformed { .. })));
    let info = inspect_application(&application).unwrap();
    assert_eq!(info.group_id, vec![9u8; 16]);
    assert_eq!(info.epoch, 0);
    assert_eq!(view.to_bytes().unwrap(), before);
}

#[test]
fn view_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DsGroupView>();
}

/// Regression (fuzz target `mls_ingress`): a stored view whose checksum is
/// valid but one entry's JSON is damaged must be an error, not a panic.
#[test]
fn damaged_entry_behind_a_valid_checksum_is_corrupt_state() {
    let blob = checksummed_view(include_bytes!(
        "../../../../fuzz/regressions/mls_ingress/view_load_panic_memory_storage_unwrap"
    ));
    assert!(matches!(DsGroupView::from_bytes(&blob), Err(DsError::CorruptState { .. })));
}

/// Regression (fuzz target `mls_ingress`): state stored under one group id
/// but belonging to another group is refused, so every view that loads
/// re-serialises to a blob that loads again.
#[test]
fn state_of_another_group_is_refused() {
    let blob = checksummed_view(include_bytes!("../../../../fuzz/regressions/mls_ingress/view_group_id_mismatch"));
    if let Ok(view) = DsGroupView::from_bytes(&blob) {
        assert!(DsGroupView::from_bytes(&view.to_bytes().unwrap()).is_ok(), "a loaded view reloads");
    }
}

/// The blob the `mls_ingress` fuzz target builds in mode 3: magic, the input
/// after its selector byte, and a valid checksum.
fn checksummed_view(fuzz_input: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut blob = b"QPCDSV1\0".to_vec();
    blob.extend_from_slice(&fuzz_input[1..]);
    let digest = Sha256::digest(&blob);
    blob.extend_from_slice(&digest);
    blob
}

/// Review F10: an external commit (a newcomer adding itself from a GroupInfo)
/// is refused by the framing check before any view is used, and by the view.
#[test]
fn external_commits_are_refused() {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{BasicCredential, CredentialWithKey, MlsGroup, OpenMlsProvider as _};
    use openmls_basic_credential::SignatureKeyPair;

    let dir = tempfile::tempdir().unwrap();
    let (alice, mut view) = alice_with_group(&dir);
    let bootstrap = alice.export_group_bootstrap(&[9u8; 16]).unwrap();
    let MlsMessageBodyIn::GroupInfo(group_info) =
        MlsMessageIn::tls_deserialize_exact_bytes(&bootstrap.group_info).unwrap().extract()
    else {
        panic!("a GroupInfo");
    };
    let tree = RatchetTreeIn::tls_deserialize_exact_bytes(&bootstrap.ratchet_tree).unwrap();
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CLASSICAL_CIPHERSUITE.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"mallory".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let (_group, bundle) = MlsGroup::external_commit_builder()
        .with_ratchet_tree(tree)
        .build_group(&provider, group_info, credential)
        .unwrap()
        .load_psks(provider.storage())
        .unwrap()
        .build(provider.rand(), provider.crypto(), &signer, |_| true)
        .unwrap()
        .finalize(&provider)
        .unwrap();
    let commit = bundle.into_contents().0.tls_serialize_detached().unwrap();
    let refused = inspect_handshake(&commit, HandshakeKind::Commit).unwrap_err();
    assert!(refused.to_string().contains("only members"), "{refused}");
    let refused = view.process_commit(&commit).unwrap_err();
    assert!(matches!(refused, DsError::InvalidMessage { .. }), "{refused}");
    assert_eq!(view.epoch(), 0, "nothing merged");
}

/// A one-member group of `name` built with raw OpenMLS (to set what
/// `MlsClient` never sets), its signer and provider, and its DS view.
fn raw_group(
    name: &str,
) -> (
    openmls::prelude::MlsGroup,
    openmls_basic_credential::SignatureKeyPair,
    openmls_rust_crypto::OpenMlsRustCrypto,
    DsGroupView,
) {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{BasicCredential, CredentialWithKey, MlsGroup};
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(CLASSICAL_CIPHERSUITE.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let group = MlsGroup::builder()
        .ciphersuite(CLASSICAL_CIPHERSUITE)
        .with_wire_format_policy(openmls::prelude::PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build(&provider, &signer, credential)
        .unwrap();
    let info = group.export_group_info(openmls::prelude::OpenMlsProvider::crypto(&provider), &signer, false).unwrap();
    let tree = group.export_ratchet_tree();
    let view =
        DsGroupView::from_group_info(&info.tls_serialize_detached().unwrap(), &tree.tls_serialize_detached().unwrap())
            .unwrap();
    (group, signer, provider, view)
}

/// Review F3: a commit's authenticated data is capped, so a member cannot
/// make every member's queue hold megabytes per commit.
#[test]
fn authenticated_data_over_the_cap_is_refused() {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::LeafNodeParameters;
    let (mut group, signer, provider, mut view) = raw_group("alice");
    group.set_aad(vec![7; MAX_AUTHENTICATED_DATA_BYTES + 1]);
    let bundle = group.self_update(&provider, &signer, LeafNodeParameters::default()).unwrap();
    let commit = bundle.into_commit().tls_serialize_detached().unwrap();
    let refused = view.process_commit(&commit).unwrap_err();
    assert!(matches!(refused, DsError::Oversized { .. }), "{refused}");
    assert_eq!(view.epoch(), 0, "nothing merged");

    group.clear_pending_commit(openmls::prelude::OpenMlsProvider::storage(&provider)).unwrap();
    group.set_aad(vec![7; 16]);
    let bundle = group.self_update(&provider, &signer, LeafNodeParameters::default()).unwrap();
    view.process_commit(&bundle.into_commit().tls_serialize_detached().unwrap()).unwrap();
    assert_eq!(view.epoch(), 1, "small authenticated data is fine");
}

/// Review F3: a key package whose leaf carries more extension bytes than
/// the cap is refused at upload, so no group state grows by it.
#[test]
fn leaf_extensions_over_the_cap_are_refused() {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::{
        BasicCredential, Capabilities, CredentialWithKey, Extension, ExtensionType, Extensions, KeyPackage,
        UnknownExtension,
    };
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(CLASSICAL_CIPHERSUITE.signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"mallory".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let package = |bytes: usize| {
        let extension = Extension::Unknown(0xff00, UnknownExtension(vec![1; bytes]));
        KeyPackage::builder()
            .leaf_node_capabilities(Capabilities::builder().extensions(vec![ExtensionType::Unknown(0xff00)]).build())
            .leaf_node_extensions(Extensions::single(extension).unwrap())
            .build(CLASSICAL_CIPHERSUITE, &provider, &signer, credential.clone())
            .unwrap()
            .key_package()
            .tls_serialize_detached()
            .unwrap()
    };
    assert!(validate_key_package(&package(100)).is_ok());
    let refused = validate_key_package(&package(MAX_LEAF_EXTENSIONS_BYTES)).unwrap_err();
    assert!(matches!(refused, DsError::Oversized { .. }), "{refused}");
}

/// A second device of alice's, linked with a certificate by `account`.
fn linked_device(dir: &tempfile::TempDir, account: &Identity, name: &str) -> (MlsClient, Vec<u8>) {
    let device = Identity::generate().unwrap();
    let device_key = device.public_key().to_vec();
    let certificate = crate::device::certify_device(account, "alice", &device_key).unwrap();
    let credential = crate::MemberCredential::linked("alice", account.public_key(), &certificate);
    let client = MlsClient::open_with_ciphersuite(&dir.path().join(name), device, "alice", CLASSICAL_CIPHERSUITE)
        .unwrap()
        .as_linked_device(credential)
        .unwrap();
    (client, device_key)
}

#[test]
fn a_linked_device_is_a_member_of_its_account() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut view) = alice_with_group(&dir);
    let (phone, phone_key) = linked_device(&dir, alice.identity(), "phone.db");
    let package = phone.generate_key_packages(1).unwrap().remove(0);
    let info = validate_key_package(&package).unwrap();
    assert_eq!(info.username, "alice");
    assert_eq!(info.identity_key, alice.identity().public_key(), "certified by alice's account key");
    assert_eq!((info.device_id(), info.device_key.as_slice()), (crate::DeviceId::of_key(&phone_key), &phone_key[..]));

    let commit = alice.add_members(&[9u8; 16], &[package]).unwrap();
    let outcome = view.process_commit(&commit.commit).unwrap();
    assert_eq!(outcome.added.len(), 1);
    assert_eq!(outcome.added[0].identity_key, alice.identity().public_key());
    let devices: Vec<(&str, crate::DeviceId)> =
        outcome.members.iter().map(|member| (member.username.as_str(), member.device_id)).collect();
    let mut expected = vec![
        ("alice", crate::DeviceId::of_key(alice.identity().public_key())),
        ("alice", crate::DeviceId::of_key(&phone_key)),
    ];
    expected.sort();
    assert_eq!(devices, expected, "one entry per device");
}

#[test]
fn a_device_certified_by_another_key_shows_that_key() {
    let dir = tempfile::tempdir().unwrap();
    let alice_account = Identity::generate().unwrap();
    // A server (or anyone) certifying its own device for "alice" with its own key:
    // the package is well formed, and names the forger's key, which the server
    // and every client compare with the one they know for alice.
    let forger = Identity::generate().unwrap();
    let (rogue, _) = linked_device(&dir, &forger, "rogue.db");
    let info = validate_key_package(&rogue.generate_key_packages(1).unwrap().remove(0)).unwrap();
    assert_eq!(info.identity_key, forger.public_key());
    assert_ne!(info.identity_key, alice_account.public_key());

    // A credential whose certificate is for another device key cannot be used at all.
    let other_device = Identity::generate().unwrap();
    let certificate = crate::device::certify_device(&alice_account, "alice", other_device.public_key()).unwrap();
    let stolen = crate::MemberCredential::linked("alice", alice_account.public_key(), &certificate);
    let client = MlsClient::open_with_ciphersuite(
        &dir.path().join("stolen.db"),
        Identity::generate().unwrap(),
        "alice",
        CLASSICAL_CIPHERSUITE,
    )
    .unwrap();
    assert!(client.as_linked_device(stolen).is_err());
}
