//! Domain tests over a [`MemoryStore`] with real MLS clients from
//! `quicprochat_core` (one SQLite state file per client in a temp dir).

mod accounts;
mod devices;
mod federation;
mod groups;
mod key_packages;
mod messages;
mod registration;
mod snapshots;
mod views;

use crate::domain::devices::Caller;
use quicprochat_core::client::MlsClient;
use quicprochat_core::identity::{auth_transcript, AuthPurpose, Identity};
use quicprochat_core::{Incoming, PendingCommit};

use super::accounts::{register, AuthProof, Registration};
use super::commits::{submit_commit, CommitPolicy, SubmitCommit};
use super::groups::{create_group, CreateGroup};
use super::views::{ViewCache, ViewCacheStats};
use super::{delivery, DomainError};
use crate::config::RegistrationPolicy;
use crate::domain::key_packages as kp;
use crate::storage::{Account, EntryKind, GroupKind, MemoryStore, QueueItem, Store};

pub(super) const NOW: u64 = 1_700_000_000_000;
pub(super) const NONCE: &[u8] = b"nonce-0123456789abcdef";
pub(super) const EXPORTER: &[u8] = b"exporter-0123456789abcdef0123456";

/// A registered user with its MLS client.
pub(super) struct User {
    pub name: String,
    pub client: MlsClient,
    _dir: tempfile::TempDir,
}

impl User {
    /// A user whose client (and its state in `dir`) the test made itself.
    pub(super) fn new(name: &str, client: MlsClient, dir: tempfile::TempDir) -> User {
        User { name: name.to_owned(), client, _dir: dir }
    }
}

pub(super) fn sign(identity: &Identity, purpose: AuthPurpose, name: &str, exporter: &[u8]) -> Vec<u8> {
    let transcript = auth_transcript(purpose, NONCE, exporter, name, identity.public_key());
    identity.sign(&transcript).unwrap()
}

/// Registers under the `Open` policy, without an invite.
pub(super) fn register_open(
    store: &dyn Store,
    username: &str,
    identity_key: &[u8],
    proof: &AuthProof<'_>,
    now_ms: u64,
) -> Result<Account, DomainError> {
    let request = Registration { username, identity_key, proof: *proof, invite_token: None };
    register(store, RegistrationPolicy::Open, &request, now_ms)
}

/// An MLS client for `name` with a fresh identity, not registered.
pub(super) fn client(name: &str) -> (MlsClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate().unwrap();
    let client = MlsClient::open(&dir.path().join("mls.db"), identity, name).unwrap();
    (client, dir)
}

/// Registers `name` and uploads 3 key packages plus a last-resort one.
pub(super) fn user(store: &dyn Store, name: &str) -> User {
    let (client, dir) = client(name);
    let identity = client.identity();
    let signature = sign(identity, AuthPurpose::Register, name, EXPORTER);
    let proof = AuthProof { nonce: NONCE, tls_exporter: EXPORTER, signature: &signature };
    register_open(store, name, identity.public_key(), &proof, NOW).unwrap();
    let packages = client.generate_key_packages(3).unwrap();
    let last_resort = client.generate_last_resort_key_package().unwrap();
    kp::upload(store, Caller::first_device(name), &packages, Some(&last_resort), None).unwrap();
    User { name: name.to_owned(), client, _dir: dir }
}

pub(super) fn store() -> MemoryStore {
    MemoryStore::new()
}

pub(super) fn gid(n: u8) -> Vec<u8> {
    vec![n; 16]
}

thread_local! {
    /// Each test (its own thread) has one view cache, as a server has: the
    /// second and later commits of a test take the cached view.
    pub(super) static VIEWS: ViewCache = ViewCache::default();
}

/// The commit policy now (real time: OpenMLS stamps key packages with the
/// real clock) with the default 30-day retention.
pub(super) fn policy() -> CommitPolicy {
    CommitPolicy::at(crate::clock::now_ms(), 30 * 24 * 3600)
}

/// [`kp::fetch`] by `requester`'s first device of the packages of every
/// device of `target`, which must have answered with exactly one.
pub(super) fn fetch_one(
    store: &dyn Store,
    requester: &str,
    target: &str,
    policy: &CommitPolicy,
    budget: kp::LastResortBudget<'_>,
) -> Result<kp::FetchedKeyPackage, DomainError> {
    let mut fetched = kp::fetch(store, Caller::first_device(requester), target, None, policy, budget)?;
    assert_eq!(fetched.len(), 1, "one device of {target} answered");
    Ok(fetched.remove(0))
}

/// A last-resort budget that never runs out (key package fetches).
pub(super) fn unlimited() -> Result<(), DomainError> {
    Ok(())
}

/// [`submit_commit`] with this test's view cache; the new epoch.
pub(super) fn submit(
    store: &dyn Store,
    session_user: &str,
    request: &SubmitCommit<'_>,
    now_ms: u64,
) -> Result<u64, DomainError> {
    VIEWS
        .with(|views| submit_commit(store, views, Caller::first_device(session_user), request, now_ms, &policy()))
        .map(|accepted| accepted.epoch)
}

/// [`leave_group`](crate::domain::commits::leave_group) with this test's view cache.
pub(super) fn leave(
    store: &dyn Store,
    session_user: &str,
    request: &crate::domain::commits::LeaveGroup<'_>,
    now_ms: u64,
) -> Result<(), DomainError> {
    VIEWS.with(|views| {
        crate::domain::commits::leave_group(store, views, Caller::first_device(session_user), request, now_ms).map(drop)
    })
}

/// Hits and misses of this test's view cache so far.
pub(super) fn view_stats() -> ViewCacheStats {
    VIEWS.with(ViewCache::stats)
}

/// alice, bob and carol in the group `group_id` (alice's, epoch 1), with
/// bob's and carol's queues drained.
pub(super) fn alice_bob_carol(store: &dyn Store, group_id: &[u8]) -> (User, User, User) {
    let alice = user(store, "alice");
    let bob = user(store, "bob");
    let carol = user(store, "carol");
    new_group(store, &alice, group_id);
    add(store, &alice, group_id, &[&bob, &carol], b"add").unwrap();
    drain(store, &bob);
    drain(store, &carol);
    (alice, bob, carol)
}

/// `creator` creates and registers the group `group_id`.
pub(super) fn new_group(store: &dyn Store, creator: &User, group_id: &[u8]) {
    let bootstrap = creator.client.create_group(group_id).unwrap();
    let request = CreateGroup {
        group_id,
        name: "friends",
        kind: GroupKind::Named,
        group_info: &bootstrap.group_info,
        ratchet_tree: &bootstrap.ratchet_tree,
        home: None,
    };
    assert_eq!(create_group(store, Caller::first_device(&creator.name), &request, NOW).unwrap(), 0);
}

/// `committer` adds `invitees` (fetching their key packages) and submits the
/// commit with `message_id`; merges on success, clears on failure.
pub(super) fn add(
    store: &dyn Store,
    committer: &User,
    group_id: &[u8],
    invitees: &[&User],
    message_id: &[u8],
) -> Result<u64, DomainError> {
    VIEWS.with(|views| add_with(store, views, committer, group_id, invitees, message_id))
}

/// [`add`] with the view cache `views` instead of this test's.
pub(super) fn add_with(
    store: &dyn Store,
    views: &ViewCache,
    committer: &User,
    group_id: &[u8],
    invitees: &[&User],
    message_id: &[u8],
) -> Result<u64, DomainError> {
    // One package per device of each invitee that has one.
    let packages: Vec<Vec<u8>> = invitees
        .iter()
        .flat_map(|invitee| {
            kp::fetch(store, Caller::first_device(&committer.name), &invitee.name, None, &policy(), &unlimited).unwrap()
        })
        .map(|fetched| fetched.key_package)
        .collect();
    let pending = committer.client.add_members(group_id, &packages).unwrap();
    let request = commit_request(group_id, &pending, message_id);
    let accepted = submit_commit(store, views, Caller::first_device(&committer.name), &request, NOW, &policy());
    finish(committer, group_id, accepted.map(|accepted| accepted.epoch))
}

/// The `SubmitCommit` of `pending` (with its Welcome, if it has one).
pub(super) fn commit_request<'a>(
    group_id: &'a [u8],
    pending: &'a PendingCommit,
    message_id: &'a [u8],
) -> SubmitCommit<'a> {
    SubmitCommit {
        group_id,
        epoch: pending.epoch,
        commit: &pending.commit,
        welcome: pending.welcome.as_deref(),
        message_id,
    }
}

/// Merges or clears `committer`'s pending commit according to `result`.
pub(super) fn finish(committer: &User, group_id: &[u8], result: Result<u64, DomainError>) -> Result<u64, DomainError> {
    match &result {
        Ok(_) => committer.client.merge_pending_commit(group_id).unwrap(),
        Err(_) => committer.client.clear_pending_commit(group_id).unwrap(),
    }
    result
}

/// Every entry in `user`'s queue, without acking.
pub(super) fn inbox(store: &dyn Store, user: &User) -> Vec<QueueItem> {
    delivery::fetch(store, Caller::first_device(&user.name), 0, 500).unwrap().items
}

pub(super) fn kinds(items: &[QueueItem]) -> Vec<EntryKind> {
    items.iter().map(|item| item.kind).collect()
}

/// Processes and acks `user`'s queue: joins from Welcomes, processes the
/// rest. Returns the decrypted application plaintexts.
pub(super) fn drain(store: &dyn Store, user: &User) -> Vec<Vec<u8>> {
    let items = inbox(store, user);
    let mut plaintexts = Vec::new();
    for item in &items {
        if item.kind == EntryKind::Welcome {
            user.client.join_from_welcome(&item.payload).unwrap();
            continue;
        }
        let incoming = user.client.process_incoming(&item.group_id, &item.payload);
        if let Incoming::Application { plaintext, .. } = incoming.unwrap() {
            plaintexts.push(plaintext);
        }
    }
    if let Some(last) = items.last() {
        delivery::ack(store, Caller::first_device(&user.name), last.seq).unwrap();
    }
    plaintexts
}

/// Asserts `result` failed with the status `status` and a message containing `fragment`.
#[track_caller]
pub(super) fn assert_status<T: std::fmt::Debug>(result: Result<T, DomainError>, status: &str, fragment: &str) {
    let error = result.unwrap_err();
    assert_eq!(error.status_name(), status, "{error}");
    assert!(error.to_string().contains(fragment), "{error:?} does not mention {fragment:?}");
}
