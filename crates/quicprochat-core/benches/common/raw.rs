//! Raw OpenMLS parties: the baseline our layer is measured against.
//!
//! They mirror `MlsClient`'s group configuration (`src/client/groups.rs`): pure-plaintext
//! handshakes, ratchet tree in the Welcome, the same leaf capabilities, past-epoch and
//! sender-ratchet limits. Like `MlsClient` they take and return serialised messages and
//! validate key packages, so the difference left is our layer: above all `MlsClient`
//! loads the group from storage on every call, while a raw party keeps its `MlsGroup` in
//! memory.
//!
//! Storage comes in two kinds: SQLite with the same codec (serde_json) and durability
//! (`synchronous=FULL`) as `MlsClient`, and OpenMLS's in-memory store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, GroupId, KeyPackage, KeyPackageIn,
    LeafNodeParameters, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent,
    ProtocolVersion, SenderRatchetConfiguration, SignatureScheme, StagedWelcome, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::{StorageProvider, CURRENT_VERSION};
use openmls_traits::OpenMlsProvider;
use quicprochat_core::client::JsonCodec;
use quicprochat_core::{CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE, MAXIMUM_FORWARD_DISTANCE, OUT_OF_ORDER_TOLERANCE};
use rusqlite::Connection;
use tempfile::TempPath;

use super::{copy_database, scratch_file, GROUP_ID};

/// Mirrors the crate-private `MAX_PAST_EPOCHS` of `src/client/groups.rs`.
const MAX_PAST_EPOCHS: usize = 5;

/// Mirrors `leaf_capabilities()` of `src/client/groups.rs`.
pub(crate) fn leaf_capabilities() -> Capabilities {
    Capabilities::builder()
        .ciphersuites(vec![DEFAULT_CIPHERSUITE, CLASSICAL_CIPHERSUITE])
        .extensions(vec![ExtensionType::LastResort])
        .build()
}

fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAXIMUM_FORWARD_DISTANCE)
}

/// Mirrors `join_config()` of `src/client/groups.rs`.
fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(sender_ratchet())
        .build()
}

pub(crate) type SqliteStorage = SqliteStorageProvider<JsonCodec, Connection>;

/// Opens (creating) a SQLite store the way `MlsClient` does: `synchronous=FULL`, migrations run.
pub(crate) fn open_sqlite(path: &Path) -> SqliteStorage {
    let connection = Connection::open(path).expect("the scratch database opens");
    connection.pragma_update(None, "synchronous", "FULL").expect("synchronous=FULL is accepted");
    let mut storage = SqliteStorage::new(connection);
    storage.run_migrations().expect("the OpenMLS storage migrations run on a scratch database");
    storage
}

/// RustCrypto for crypto and randomness, plus a storage of kind `S`.
pub(crate) struct BenchProvider<S> {
    crypto: RustCrypto,
    storage: S,
}

impl<S> BenchProvider<S> {
    pub(crate) fn new(storage: S) -> BenchProvider<S> {
        BenchProvider { crypto: RustCrypto::default(), storage }
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> OpenMlsProvider for BenchProvider<S> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = S;

    fn storage(&self) -> &S {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// A kind of storage for raw parties, and how its contents are copied and restored.
pub(crate) trait StorageKind {
    /// The name benchmark ids use, e.g. `raw_sqlite`.
    const LABEL: &'static str;
    type Storage: StorageProvider<CURRENT_VERSION>;
    /// A frozen copy of one party's storage.
    type Image;

    /// An empty store; the file (if any) lives in `scratch` and goes with the guard.
    fn create(scratch: &Path) -> (Self::Storage, Option<TempPath>);
    fn image(storage: &Self::Storage, file: Option<&TempPath>, scratch: &Path) -> Self::Image;
    fn restore(image: &Self::Image, scratch: &Path) -> (Self::Storage, Option<TempPath>);
}

/// SQLite file, JSON codec, `synchronous=FULL`: the same storage as `MlsClient`.
pub(crate) struct Sqlite;

impl StorageKind for Sqlite {
    const LABEL: &'static str = "raw_sqlite";
    type Storage = SqliteStorage;
    type Image = TempPath;

    fn create(scratch: &Path) -> (SqliteStorage, Option<TempPath>) {
        let file = scratch_file(scratch);
        (open_sqlite(&file), Some(file))
    }

    fn image(_storage: &SqliteStorage, file: Option<&TempPath>, scratch: &Path) -> TempPath {
        copy_database(file.expect("a SQLite party has a database file"), scratch)
    }

    fn restore(image: &TempPath, scratch: &Path) -> (SqliteStorage, Option<TempPath>) {
        let file = copy_database(image, scratch);
        (open_sqlite(&file), Some(file))
    }
}

/// OpenMLS's in-memory key-value store.
pub(crate) struct Memory;

impl StorageKind for Memory {
    const LABEL: &'static str = "raw_memory";
    type Storage = MemoryStorage;
    type Image = HashMap<Vec<u8>, Vec<u8>>;

    fn create(_scratch: &Path) -> (MemoryStorage, Option<TempPath>) {
        (MemoryStorage::default(), None)
    }

    fn image(storage: &MemoryStorage, _file: Option<&TempPath>, _scratch: &Path) -> Self::Image {
        storage.values.read().expect("no benchmark thread panicked holding the store").clone()
    }

    fn restore(image: &Self::Image, _scratch: &Path) -> (MemoryStorage, Option<TempPath>) {
        (MemoryStorage { values: RwLock::new(image.clone()) }, None)
    }
}

/// What a raw party made of an incoming message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Processed {
    Application(Vec<u8>),
    CommitMerged,
}

/// One member driving OpenMLS directly, holding its group (if any) in memory.
pub(crate) struct RawParty<K: StorageKind> {
    provider: BenchProvider<K::Storage>,
    /// Dropped after the provider, so the database is closed before its file goes.
    file: Option<TempPath>,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    suite: Ciphersuite,
    group: Option<MlsGroup>,
}

impl<K: StorageKind> RawParty<K> {
    pub(crate) fn new(scratch: &Path, name: &str, suite: Ciphersuite) -> RawParty<K> {
        let (storage, file) = K::create(scratch);
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).expect("Ed25519 key generation works");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        RawParty { provider: BenchProvider::new(storage), file, signer, credential, suite, group: None }
    }

    /// One single-use KeyPackage (TLS-serialised), its private keys kept in this party's storage.
    pub(crate) fn key_package(&self) -> Vec<u8> {
        KeyPackage::builder()
            .leaf_node_capabilities(leaf_capabilities())
            .build(self.suite, &self.provider, &self.signer, self.credential.clone())
            .expect("building a key package works")
            .key_package()
            .tls_serialize_detached()
            .expect("a key package serialises")
    }

    /// Creates the benchmark group, configured as `MlsClient::create_group` does.
    pub(crate) fn create_group(&mut self) {
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(&GROUP_ID))
            .ciphersuite(self.suite)
            .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(sender_ratchet())
            .with_capabilities(leaf_capabilities())
            .build(&self.provider, &self.signer, self.credential.clone())
            .expect("creating a group works");
        self.group = Some(group);
    }

    /// Validates the key packages and creates (does not merge) a commit adding them.
    /// Returns the serialised commit and Welcome.
    pub(crate) fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let validated: Vec<KeyPackage> = key_packages
            .iter()
            .map(|bytes| {
                KeyPackageIn::tls_deserialize_exact_bytes(bytes)
                    .expect("the key package parses")
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .expect("the key package validates")
            })
            .collect();
        let group = self.group.as_mut().expect("the party is in the group");
        let (commit, welcome, _group_info) =
            group.add_members(&self.provider, &self.signer, &validated).expect("adding members works");
        (
            commit.tls_serialize_detached().expect("a commit serialises"),
            welcome.tls_serialize_detached().expect("a Welcome serialises"),
        )
    }

    /// Creates (does not merge) a commit removing the member called `name`.
    pub(crate) fn remove(&mut self, name: &str) -> Vec<u8> {
        let group = self.group.as_mut().expect("the party is in the group");
        let index = group
            .members()
            .find(|member| {
                BasicCredential::try_from(member.credential.clone())
                    .is_ok_and(|basic| basic.identity() == name.as_bytes())
            })
            .expect("the member to remove is in the group")
            .index;
        let (commit, _welcome, _group_info) =
            group.remove_members(&self.provider, &self.signer, &[index]).expect("removing a member works");
        commit.tls_serialize_detached().expect("a commit serialises")
    }

    /// Creates (does not merge) a commit updating our own leaf (new path keys).
    pub(crate) fn self_update(&mut self) -> Vec<u8> {
        let group = self.group.as_mut().expect("the party is in the group");
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .expect("a self-update works");
        bundle.commit().tls_serialize_detached().expect("a commit serialises")
    }

    pub(crate) fn merge_pending(&mut self) {
        let provider = &self.provider;
        self.group.as_mut().expect("the party is in the group").merge_pending_commit(provider).expect("merge works");
    }

    pub(crate) fn clear_pending(&mut self) {
        let storage = self.provider.storage();
        self.group.as_mut().expect("the party is in the group").clear_pending_commit(storage).expect("clear works");
    }

    /// Joins from a serialised Welcome carrying the ratchet tree.
    pub(crate) fn join(&mut self, welcome: &[u8]) {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(welcome).expect("the Welcome parses");
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            panic!("the message carries a Welcome");
        };
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .expect("the Welcome is for this party");
        self.group = Some(staged.into_group(&self.provider).expect("joining works"));
    }

    /// Encrypts an application message (serialised PrivateMessage).
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.group.as_mut().expect("the party is in the group");
        group
            .create_message(provider, signer, plaintext)
            .expect("encrypting works")
            .tls_serialize_detached()
            .expect("a message serialises")
    }

    /// Processes one serialised message; commits are merged at once.
    pub(crate) fn process(&mut self, message: &[u8]) -> Processed {
        let protocol = MlsMessageIn::tls_deserialize_exact_bytes(message)
            .expect("the message parses")
            .try_into_protocol_message()
            .expect("the message is a public or private message");
        let provider = &self.provider;
        let group = self.group.as_mut().expect("the party is in the group");
        let processed = group.process_message(provider, protocol).expect("processing works");
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Processed::Application(app.into_bytes()),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group.merge_staged_commit(provider, *staged).expect("merging works");
                Processed::CommitMerged
            }
            other => panic!("unexpected message content {other:?}"),
        }
    }

    /// A frozen copy of this party (storage, keys, whether it is in the group).
    pub(crate) fn snapshot(&self, scratch: &Path) -> RawSnapshot<K> {
        RawSnapshot {
            image: K::image(self.provider.storage(), self.file.as_ref(), scratch),
            signer: serde_json::to_vec(&self.signer).expect("a key pair serialises"),
            credential: self.credential.clone(),
            suite: self.suite,
            in_group: self.group.is_some(),
        }
    }
}

/// A frozen raw party, restored as often as a benchmark needs.
pub(crate) struct RawSnapshot<K: StorageKind> {
    image: K::Image,
    signer: Vec<u8>,
    credential: CredentialWithKey,
    suite: Ciphersuite,
    in_group: bool,
}

impl<K: StorageKind> RawSnapshot<K> {
    /// A live party with a fresh copy of the frozen storage (and its group loaded).
    pub(crate) fn restore(&self, scratch: &Path) -> RawParty<K> {
        let (storage, file) = K::restore(&self.image, scratch);
        let provider = BenchProvider::new(storage);
        let group = self.in_group.then(|| {
            MlsGroup::load(provider.storage(), &GroupId::from_slice(&GROUP_ID))
                .expect("the group state loads")
                .expect("the snapshot holds the group")
        });
        RawParty {
            provider,
            file,
            signer: serde_json::from_slice(&self.signer).expect("a key pair deserialises"),
            credential: self.credential.clone(),
            suite: self.suite,
            group,
        }
    }
}

/// Fresh KeyPackages of `count` members named `prefix0`, `prefix1`, … who never join:
/// they only fill a group's tree. Their private keys are thrown away.
pub(crate) fn filler_key_packages(suite: Ciphersuite, prefix: &str, count: usize) -> Vec<Vec<u8>> {
    // In-memory parties never touch their scratch directory.
    let scratch = Path::new(".");
    (0..count).map(|i| RawParty::<Memory>::new(scratch, &format!("{prefix}{i}"), suite).key_package()).collect()
}

/// Creates an update commit for an `MlsClient`'s group by opening a copy of its database
/// with raw OpenMLS (same codec), since `MlsClient` has no self-update. The copy is
/// thrown away; the client's own state is untouched.
pub(crate) fn self_update_of_client_database(database: &Path, identity_key: &[u8], scratch: &Path) -> Vec<u8> {
    let copy = copy_database(database, scratch);
    let provider = BenchProvider::new(open_sqlite(&copy));
    let signer = SignatureKeyPair::read(provider.storage(), identity_key, SignatureScheme::ED25519)
        .expect("MlsClient::open stores the identity key pair in its MLS storage");
    let mut group = MlsGroup::load(provider.storage(), &GroupId::from_slice(&GROUP_ID))
        .expect("MlsClient's group state loads with the same JSON codec")
        .expect("the client holds the group");
    let bundle = group.self_update(&provider, &signer, LeafNodeParameters::default()).expect("a self-update works");
    bundle.commit().tls_serialize_detached().expect("a commit serialises")
}
