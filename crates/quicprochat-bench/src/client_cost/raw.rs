//! B8's baselines: raw OpenMLS, no SDK, the same group configuration as
//! `MlsClient` (pure-plaintext handshakes, ratchet tree in the Welcome,
//! five past epochs, the same sender ratchet) and the same storage
//! (`openmls_sqlite_storage`, serde_json, WAL, `synchronous=FULL`). A sender
//! encrypts N messages, a receiver processes them: each storage write its
//! own transaction (what OpenMLS does alone), all N in one transaction (the
//! floor batching can reach), and on OpenMLS's in-memory store (crypto and
//! codec alone). Commits are counted by SQLite's commit hook.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, GroupId, KeyPackage, KeyPackageIn,
    MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProtocolVersion,
    SenderRatchetConfiguration, StagedWelcome, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
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
use serde::Serialize;

/// Mirrors `MAX_PAST_EPOCHS` of `quicprochat-core/src/client/groups.rs`.
const MAX_PAST_EPOCHS: usize = 5;

/// One baseline: messages processed (or encrypted) per second and the
/// SQLite commits each cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Baseline {
    pub(crate) per_s: f64,
    pub(crate) commits_per_message: f64,
}

/// The raw baselines of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RawBaselines {
    /// The receiver on SQLite, every storage write its own transaction.
    pub(crate) receive_autocommit: Baseline,
    /// The receiver on SQLite, the N messages in one transaction.
    pub(crate) receive_one_transaction: Baseline,
    /// The receiver on OpenMLS's in-memory store.
    pub(crate) receive_memory: Baseline,
    /// The sender encrypting on SQLite, each write its own transaction.
    pub(crate) encrypt_autocommit: Baseline,
}

type Sqlite = SqliteStorageProvider<JsonCodec, Rc<Connection>>;

struct Provider<S> {
    crypto: RustCrypto,
    storage: S,
}

impl<S: StorageProvider<CURRENT_VERSION>> OpenMlsProvider for Provider<S> {
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

fn failed<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |error| anyhow!("raw OpenMLS: {what}: {error:?}")
}

/// A SQLite store as the client's: WAL, `synchronous=FULL`, migrations
/// run; its commits counted in `commits`.
fn open_sqlite(path: &Path, commits: &Arc<AtomicU64>) -> anyhow::Result<(Sqlite, Rc<Connection>)> {
    let mut connection = Connection::open(path).context("open the baseline's database")?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut connection)
        .run_migrations()
        .map_err(failed("migrations"))?;
    let counter = Arc::clone(commits);
    connection.commit_hook(Some(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        false
    }));
    let connection = Rc::new(connection);
    Ok((Sqlite::new(Rc::clone(&connection)), connection))
}

/// One member with its group.
struct Party<S: StorageProvider<CURRENT_VERSION>> {
    provider: Provider<S>,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    suite: Ciphersuite,
}

fn capabilities() -> Capabilities {
    Capabilities::builder()
        .ciphersuites(vec![DEFAULT_CIPHERSUITE, CLASSICAL_CIPHERSUITE])
        .extensions(vec![ExtensionType::LastResort])
        .build()
}

fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAXIMUM_FORWARD_DISTANCE)
}

impl<S: StorageProvider<CURRENT_VERSION>> Party<S> {
    fn new(storage: S, name: &str, suite: Ciphersuite) -> anyhow::Result<Party<S>> {
        let signer = SignatureKeyPair::new(suite.signature_algorithm()).map_err(failed("signature key"))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Party { provider: Provider { crypto: RustCrypto::default(), storage }, signer, credential, suite })
    }

    fn key_package(&self) -> anyhow::Result<Vec<u8>> {
        KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .build(self.suite, &self.provider, &self.signer, self.credential.clone())
            .map_err(failed("key package"))?
            .key_package()
            .tls_serialize_detached()
            .map_err(failed("serialise"))
    }

    /// Creates group `group_id` and adds the member of `key_package`;
    /// returns the group and the Welcome.
    fn create_with(&self, group_id: &[u8], key_package: &[u8]) -> anyhow::Result<(MlsGroup, Vec<u8>)> {
        let mut group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(group_id))
            .ciphersuite(self.suite)
            .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(sender_ratchet())
            .with_capabilities(capabilities())
            .build(&self.provider, &self.signer, self.credential.clone())
            .map_err(failed("create group"))?;
        let package = KeyPackageIn::tls_deserialize_exact_bytes(key_package)
            .map_err(failed("parse key package"))?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(failed("validate key package"))?;
        let (_commit, welcome, _info) =
            group.add_members(&self.provider, &self.signer, &[package]).map_err(failed("add"))?;
        group.merge_pending_commit(&self.provider).map_err(failed("merge"))?;
        Ok((group, welcome.tls_serialize_detached().map_err(failed("serialise"))?))
    }

    fn join(&self, welcome: &[u8]) -> anyhow::Result<MlsGroup> {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(welcome).map_err(failed("parse Welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(anyhow!("raw OpenMLS: not a Welcome"));
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(sender_ratchet())
            .build();
        StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .map_err(failed("stage Welcome"))?
            .into_group(&self.provider)
            .map_err(failed("join"))
    }

    fn encrypt(&self, group: &mut MlsGroup, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(failed("encrypt"))?
            .tls_serialize_detached()
            .map_err(failed("serialise"))
    }

    fn process(&self, group: &mut MlsGroup, message: &[u8]) -> anyhow::Result<()> {
        let protocol = MlsMessageIn::tls_deserialize_exact_bytes(message)
            .map_err(failed("parse"))?
            .try_into_protocol_message()
            .map_err(failed("protocol message"))?;
        let processed = group.process_message(&self.provider, protocol).map_err(failed("process"))?;
        ensure!(
            matches!(processed.into_content(), ProcessedMessageContent::ApplicationMessage(_)),
            "raw OpenMLS: not an application message"
        );
        Ok(())
    }
}

/// Runs the raw baselines for `messages` messages of `payload` bytes in
/// `suite`, with their databases in `dir`.
pub(crate) fn run(dir: &Path, suite: Ciphersuite, messages: usize, payload: usize) -> anyhow::Result<RawBaselines> {
    let plaintext = vec![0x5a; payload];
    let sender_commits = Arc::new(AtomicU64::new(0));
    let (sender_storage, _) = open_sqlite(&dir.join("raw-sender.db"), &sender_commits)?;
    let sender = Party::new(sender_storage, "raw-sender", suite)?;
    // Three receivers, one per storage, each in the group from the start.
    let mut receivers = Vec::new();
    let receiver_commits: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (autocommit, _) = open_sqlite(&dir.join("raw-autocommit.db"), &receiver_commits[0])?;
    let (one_transaction, one_connection) = open_sqlite(&dir.join("raw-one-transaction.db"), &receiver_commits[1])?;
    let memory = Party::new(MemoryStorage::default(), "raw-memory", suite)?;
    let autocommit = Party::new(autocommit, "raw-autocommit", suite)?;
    let one_transaction = Party::new(one_transaction, "raw-one-transaction", suite)?;
    for (index, package) in
        [autocommit.key_package()?, one_transaction.key_package()?, memory.key_package()?].into_iter().enumerate()
    {
        receivers.push(sender.create_with(format!("qpc-bench-b8-{index:03}").as_bytes(), &package)?);
    }
    let [(mut to_autocommit, welcome_autocommit), (mut to_one, welcome_one), (mut to_memory, welcome_memory)]: [_; 3] =
        receivers.try_into().map_err(|_| anyhow!("three groups"))?;
    let mut autocommit_group = autocommit.join(&welcome_autocommit)?;
    let mut one_group = one_transaction.join(&welcome_one)?;
    let mut memory_group = memory.join(&welcome_memory)?;

    // The sender's encryption on SQLite (the group to the autocommit receiver).
    let before = sender_commits.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut for_autocommit = Vec::with_capacity(messages);
    for _ in 0..messages {
        for_autocommit.push(sender.encrypt(&mut to_autocommit, &plaintext)?);
    }
    let encrypt_autocommit = baseline(messages, started.elapsed(), sender_commits.load(Ordering::Relaxed) - before);
    let for_one: Vec<Vec<u8>> =
        (0..messages).map(|_| sender.encrypt(&mut to_one, &plaintext)).collect::<anyhow::Result<_>>()?;
    let for_memory: Vec<Vec<u8>> =
        (0..messages).map(|_| sender.encrypt(&mut to_memory, &plaintext)).collect::<anyhow::Result<_>>()?;

    let before = receiver_commits[0].load(Ordering::Relaxed);
    let started = Instant::now();
    for message in &for_autocommit {
        autocommit.process(&mut autocommit_group, message)?;
    }
    let receive_autocommit =
        baseline(messages, started.elapsed(), receiver_commits[0].load(Ordering::Relaxed) - before);

    let before = receiver_commits[1].load(Ordering::Relaxed);
    let started = Instant::now();
    one_connection.execute_batch("BEGIN IMMEDIATE")?;
    for message in &for_one {
        one_transaction.process(&mut one_group, message)?;
    }
    one_connection.execute_batch("COMMIT")?;
    let receive_one_transaction =
        baseline(messages, started.elapsed(), receiver_commits[1].load(Ordering::Relaxed) - before);

    let started = Instant::now();
    for message in &for_memory {
        memory.process(&mut memory_group, message)?;
    }
    let receive_memory = baseline(messages, started.elapsed(), 0);
    Ok(RawBaselines { receive_autocommit, receive_one_transaction, receive_memory, encrypt_autocommit })
}

fn baseline(messages: usize, elapsed: Duration, commits: u64) -> Baseline {
    Baseline {
        per_s: messages as f64 / elapsed.as_secs_f64().max(1e-9),
        commits_per_message: commits as f64 / messages.max(1) as f64,
    }
}
