//! One user's MLS state: groups, key packages, commits, welcomes and messages.
//!
//! [`MlsClient`] owns an OpenMLS provider made of RustCrypto and a SQLite store
//! (`openmls_sqlite_storage` with a JSON codec) on a [`StateDb`], which the
//! SDK's local store shares. Every mutating call writes through to the
//! database, so the state survives a restart; there is no explicit save.
//! [`MlsClient::batch`] makes a run of calls (and the local store's writes
//! between them) one transaction.
//! Loaded groups stay in memory between calls. Every call holds the database's
//! cross-process lock (`state_lock`), and a call that may write bumps the lock
//! file's counter before it starts, so another process sharing the profile drops
//! its in-memory groups and reloads them (even if this call dies half way).
//!
//! Call order for a commit: `add_members` / `remove_members` /
//! `commit_pending_proposals` create a *pending* commit; the caller submits it to
//! the Delivery Service, then calls `merge_pending_commit` (accepted) or
//! `clear_pending_commit` (rejected, e.g. another commit won the epoch).
//!
//! This module does no networking and knows nothing of the wire protocol.

mod batch;
mod error;
mod groups;
mod legacy_layout;
pub use groups::{MAXIMUM_FORWARD_DISTANCE, OUT_OF_ORDER_TOLERANCE};
mod messages;
mod provider;
mod shared_storage;
mod state_db;
mod state_lock;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, GroupId, Member, MlsGroup, OpenMlsProvider, SignaturePublicKey,
};
use openmls_basic_credential::SignatureKeyPair;

pub use error::MlsError;
use provider::ClientProvider;
pub use provider::JsonCodec;
pub use state_db::{state_commits, Savepoint, StateDb};
use state_lock::{lock_path, Held, StateLock};

use crate::ciphersuite::{is_allowed_ciphersuite, DEFAULT_CIPHERSUITE};
use crate::device::{verify_member, DeviceId, MemberCredential, VerifiedMember};
use crate::identity::{admitted_member, username_of, Identity};
use crate::names::{is_valid_domain, local_part, Naming};

/// Decides whether a member whose credential verified (a leaf joining a
/// group, or every leaf of a group joined) is accepted: a client compares
/// its account key with the one it knows for that account.
pub type MemberCheck<'a> = &'a dyn Fn(&VerifiedMember) -> Result<(), MemberRefusal>;

/// Why a [`MemberCheck`] did not accept a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRefusal {
    /// The member is refused (the peer's doing; the reason is shown).
    Refused(String),
    /// The check itself failed locally (e.g. its store could not be read):
    /// nothing is said about the member.
    Local(String),
}

/// A [`MemberCheck`] that accepts every member whose credential verifies.
pub fn any_verified_member(_member: &VerifiedMember) -> Result<(), MemberRefusal> {
    Ok(())
}

/// One leaf of a group, as its credential proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The leaf's index in the tree.
    pub leaf_index: u32,
    /// The account, device and account key the leaf's credential proves.
    pub member: VerifiedMember,
}

/// What a group creator hands to the Delivery Service so it can follow the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBootstrap {
    /// MlsMessage(GroupInfo) bytes, signed by the creator.
    pub group_info: Vec<u8>,
    /// TLS-serialised ratchet tree (decodes as `RatchetTreeIn`).
    pub ratchet_tree: Vec<u8>,
}

/// A commit created locally and not yet merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCommit {
    /// The epoch the commit was created in (the DS accepts it only at this epoch).
    pub epoch: u64,
    /// MlsMessage bytes carrying the commit as a PublicMessage.
    pub commit: Vec<u8>,
    /// MlsMessage(Welcome) bytes when the commit adds members.
    pub welcome: Option<Vec<u8>>,
}

impl PendingCommit {
    /// The commit (and Welcome) OpenMLS made at `epoch`, serialised.
    pub(crate) fn serialised(
        operation: &'static str,
        epoch: u64,
        commit: &openmls::prelude::MlsMessageOut,
        welcome: Option<&openmls::prelude::MlsMessageOut>,
    ) -> Result<PendingCommit, MlsError> {
        Ok(PendingCommit {
            epoch,
            commit: groups::serialize_message(operation, commit)?,
            welcome: welcome.map(|welcome| groups::serialize_message(operation, welcome)).transpose()?,
        })
    }
}

/// The result of processing one incoming message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A decrypted application message.
    Application {
        /// Username of the sender.
        sender: String,
        /// The sender's device (derived from its leaf's signature key);
        /// `None` for a message of a past epoch whose leaf has left since.
        device: Option<DeviceId>,
        /// The decrypted bytes.
        plaintext: Vec<u8>,
        /// Epoch the message was sent in.
        epoch: u64,
    },
    /// A commit by another member, now merged.
    CommitMerged {
        /// Username of the committer.
        sender: String,
        /// Our epoch after the merge.
        new_epoch: u64,
        /// Whether the commit removed us (the group is then inactive).
        removed_self: bool,
    },
    /// A proposal, stored as pending until someone commits it.
    ProposalStored {
        /// Username of the proposer.
        sender: String,
    },
    /// Our own message echoed back or a message for an epoch we can no longer process; nothing to show.
    Ignored {
        /// Why it was ignored.
        reason: String,
    },
}

/// One user's MLS state, persisted in SQLite.
///
/// The provider is `Send` but not `Sync`: share an `MlsClient` behind a mutex or keep it on one thread.
/// Several clients (in one process or several) may open the same database:
/// their calls take turns on its lock.
pub struct MlsClient {
    provider: ClientProvider,
    identity: Identity,
    username: String,
    /// Our MLS credential: the plain username, or a linked device's
    /// credential with its certificate ([`MlsClient::as_linked_device`]);
    /// its name is `username@home_domain` once the home domain is known.
    credential: MemberCredential,
    /// The domain of our home server, once it federates
    /// ([`MlsClient::with_home_domain`]): names of it read bare, others as
    /// `name@domain` (see [`Naming`]).
    home_domain: Option<String>,
    ciphersuite: Ciphersuite,
    /// Groups loaded from storage, by group id, kept between calls.
    groups: RefCell<HashMap<Vec<u8>, MlsGroup>>,
    state_lock: StateLock,
    /// A [`MlsClient::batch`] is running: calls neither take nor release
    /// the lock (the batch holds it).
    in_batch: Cell<bool>,
}

/// Whether a call may write MLS state (other processes then reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl std::fmt::Debug for MlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsClient")
            .field("username", &self.username)
            .field("identity", &self.identity)
            .field("ciphersuite", &self.ciphersuite)
            .finish_non_exhaustive()
    }
}

impl MlsClient {
    /// Opens (creating if needed, running migrations) the MLS state database at `db_path`.
    /// The identity's signature key pair is stored in the provider storage too.
    /// New groups and key packages use [`DEFAULT_CIPHERSUITE`].
    pub fn open(db_path: &Path, identity: Identity, username: &str) -> Result<MlsClient, MlsError> {
        MlsClient::open_with_ciphersuite(db_path, identity, username, DEFAULT_CIPHERSUITE)
    }

    /// Like [`MlsClient::open`], but new groups and key packages use `ciphersuite`
    /// (which must be allowed by [`is_allowed_ciphersuite`]).
    pub fn open_with_ciphersuite(
        db_path: &Path,
        identity: Identity,
        username: &str,
        ciphersuite: Ciphersuite,
    ) -> Result<MlsClient, MlsError> {
        let db = StateDb::open(db_path).map_err(|err| MlsError::storage("open", err))?;
        MlsClient::open_on(db, &lock_path(db_path), None, identity, username, ciphersuite)
    }

    /// Opens the MLS state in `db`, a state database that other stores
    /// share (the SDK's profile), under the cross-process lock at
    /// `lock_path`. `legacy`: where an earlier layout kept the MLS state in
    /// a database of its own; its rows move into `db` once and the file is
    /// left as a tombstone that older versions refuse to open.
    pub fn open_on(
        db: StateDb,
        lock_path: &Path,
        legacy: Option<&Path>,
        identity: Identity,
        username: &str,
        ciphersuite: Ciphersuite,
    ) -> Result<MlsClient, MlsError> {
        const OP: &str = "open";
        if !is_allowed_ciphersuite(ciphersuite) {
            return Err(MlsError::InvalidArgument {
                operation: OP,
                reason: format!("ciphersuite {ciphersuite:?} is not allowed"),
            });
        }
        if username.is_empty() {
            return Err(MlsError::InvalidArgument { operation: OP, reason: "empty username".to_owned() });
        }
        let state_lock = StateLock::open(lock_path)?;
        let held = state_lock.acquire(OP)?;
        held.wrote(OP)?;
        let provider = ClientProvider::open(db, legacy)?;
        identity.key_pair().store(provider.storage()).map_err(|err| MlsError::storage(OP, err))?;
        drop(held);
        Ok(MlsClient {
            provider,
            identity,
            username: username.to_owned(),
            credential: MemberCredential::AccountKeyed { username: username.to_owned() },
            home_domain: None,
            ciphersuite,
            groups: RefCell::new(HashMap::new()),
            state_lock,
            in_batch: Cell::new(false),
        })
    }

    /// The state database this client's MLS state lives in.
    pub fn state_db(&self) -> &StateDb {
        self.provider.db()
    }

    /// Makes this client a linked device of its account: its key packages
    /// and leaves carry `credential`, which must name this client's user and
    /// certify its identity key (see [`crate::device`]).
    pub fn as_linked_device(mut self, credential: MemberCredential) -> Result<MlsClient, MlsError> {
        let invalid = |reason: String| MlsError::InvalidArgument { operation: "as_linked_device", reason };
        let member = verify_member(&credential.to_identity(), self.identity.public_key())
            .map_err(|error| invalid(error.to_string()))?;
        if local_part(&member.username) != self.username {
            return Err(invalid(format!("the credential names {:?}, not {:?}", member.username, self.username)));
        }
        self.credential = credential;
        self.qualify_credential();
        Ok(self)
    }

    /// Tells this client its home server's domain, once that server
    /// federates: key packages and leaves made from now on carry
    /// `username@domain` (leaves already in groups keep their names, which
    /// read the same), and names read from groups are in [`Naming`]'s form:
    /// bare for users of `domain`, `name@domain` for others.
    pub fn with_home_domain(mut self, domain: &str) -> Result<MlsClient, MlsError> {
        if !is_valid_domain(domain) {
            return Err(MlsError::InvalidArgument {
                operation: "with_home_domain",
                reason: format!("{domain:?} is not a domain"),
            });
        }
        self.home_domain = Some(domain.to_owned());
        self.qualify_credential();
        Ok(self)
    }

    /// Our home server's domain, if known.
    pub fn home_domain(&self) -> Option<&str> {
        self.home_domain.as_deref()
    }

    /// Puts `username@home_domain` in our credential (its certificate, for
    /// a linked device, is over the bare name and stays valid).
    fn qualify_credential(&mut self) {
        let Some(domain) = &self.home_domain else { return };
        let qualified = format!("{}@{domain}", self.username);
        self.credential = match &self.credential {
            MemberCredential::AccountKeyed { .. } => MemberCredential::AccountKeyed { username: qualified },
            MemberCredential::Linked { account_key, certificate, .. } => MemberCredential::Linked {
                username: qualified,
                account_key: account_key.clone(),
                certificate: certificate.clone(),
            },
        };
    }

    /// How names in `group_id` read for this client.
    pub(crate) fn naming<'a>(&'a self, group_id: &'a [u8]) -> Naming<'a> {
        Naming::of_group(self.home_domain.as_deref(), group_id)
    }

    /// The username in our credential.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Our identity key pair.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The ciphersuite used for new groups and key packages.
    pub fn ciphersuite(&self) -> Ciphersuite {
        self.ciphersuite
    }

    /// Whether local state exists for this group (active or not).
    pub fn has_group(&self, group_id: &[u8]) -> Result<bool, MlsError> {
        const OP: &str = "has_group";
        self.with_state(OP, Access::Read, || {
            if self.groups.borrow().contains_key(group_id) {
                return Ok(true);
            }
            let loaded = MlsGroup::load(self.provider.storage(), &GroupId::from_slice(group_id))
                .map_err(|err| MlsError::storage(OP, err))?;
            Ok(loaded.is_some())
        })
    }

    /// Whether we are still a member (false after a commit removed us).
    pub fn is_active(&self, group_id: &[u8]) -> Result<bool, MlsError> {
        self.with_group("is_active", group_id, Access::Read, |group| Ok(group.is_active()))
    }

    /// The group's current epoch.
    pub fn epoch(&self, group_id: &[u8]) -> Result<u64, MlsError> {
        self.with_group("epoch", group_id, Access::Read, |group| Ok(group.epoch().as_u64()))
    }

    /// Usernames of the current members (from their credentials), each
    /// account once however many of its devices are leaves, sorted by their
    /// qualified names (the same order on every member's server:
    /// [`Naming::qualified`]).
    pub fn members(&self, group_id: &[u8]) -> Result<Vec<String>, MlsError> {
        let naming = self.naming(group_id);
        self.with_group("members", group_id, Access::Read, |group| {
            let mut names: Vec<String> = group.members().map(|m| member_name(&m, naming)).collect();
            names.sort_by_cached_key(|name| naming.qualified(name));
            names.dedup();
            Ok(names)
        })
    }

    /// Every leaf of the group with the device its credential proves, by
    /// leaf index (each leaf's certificate was checked when it entered, see
    /// [`MemberCheck`]; it is not checked again here).
    pub fn member_devices(&self, group_id: &[u8]) -> Result<Vec<GroupMember>, MlsError> {
        let naming = self.naming(group_id);
        self.with_group("member_devices", group_id, Access::Read, |group| {
            group
                .members()
                .map(|m| Ok(GroupMember { leaf_index: m.index.u32(), member: admitted(&m, naming)? }))
                .collect()
        })
    }

    /// The devices of `username` that are leaves of the group.
    pub fn devices_of(&self, group_id: &[u8], username: &str) -> Result<Vec<DeviceId>, MlsError> {
        Ok(self
            .member_devices(group_id)?
            .into_iter()
            .filter(|leaf| leaf.member.username == username)
            .map(|leaf| leaf.member.device_id)
            .collect())
    }

    /// Our own device id (derived from our signature key).
    pub fn device_id(&self) -> DeviceId {
        DeviceId::of_key(self.identity.public_key())
    }

    /// The confirmation tag of the group's current epoch (TLS-serialised),
    /// to compare with the tag of the commit that started the epoch.
    pub fn confirmation_tag(&self, group_id: &[u8]) -> Result<Vec<u8>, MlsError> {
        self.with_group("confirmation_tag", group_id, Access::Read, |group| {
            group.confirmation_tag().tls_serialize_detached().map_err(|err| MlsError::internal("confirmation_tag", err))
        })
    }

    /// The username of the member at leaf `leaf_index`, if that leaf is
    /// occupied (e.g. to name the sender of a commit that fails to verify).
    pub fn member_at(&self, group_id: &[u8], leaf_index: u32) -> Result<Option<String>, MlsError> {
        let naming = self.naming(group_id);
        self.with_group("member_at", group_id, Access::Read, |group| {
            Ok(group.members().find(|m| m.index.u32() == leaf_index).map(|m| member_name(&m, naming)))
        })
    }

    /// The account key a member's devices are certified by (its credential
    /// verified), for safety numbers; `None` when `username` is no member.
    pub fn member_account_key(&self, group_id: &[u8], username: &str) -> Result<Option<Vec<u8>>, MlsError> {
        let naming = self.naming(group_id);
        self.with_group("member_account_key", group_id, Access::Read, |group| {
            let Some(leaf) = group.members().find(|m| member_name(m, naming) == username) else {
                return Ok(None);
            };
            Ok(Some(admitted(&leaf, naming)?.account_key))
        })
    }

    /// Deletes all local state of a group. Deleting an unknown group is an error.
    pub fn delete_group(&self, group_id: &[u8]) -> Result<(), MlsError> {
        const OP: &str = "delete_group";
        self.with_state(OP, Access::Write, || {
            let cached = self.groups.borrow_mut().remove(group_id);
            let mut group = match cached {
                Some(group) => group,
                None => self.load(OP, group_id)?,
            };
            group.delete(self.provider.storage()).map_err(|err| MlsError::storage(OP, err))
        })
    }

    /// The current GroupInfo (signed by us) and ratchet tree, e.g. to let the DS rebuild its view.
    pub fn export_group_bootstrap(&self, group_id: &[u8]) -> Result<GroupBootstrap, MlsError> {
        self.with_group("export_group_bootstrap", group_id, Access::Read, |group| self.bootstrap_of(group))
    }

    pub(crate) fn bootstrap_of(&self, group: &MlsGroup) -> Result<GroupBootstrap, MlsError> {
        const OP: &str = "export_group_info";
        let group_info = group
            .export_group_info(self.provider.crypto(), self.signer(), false)
            .map_err(|err| MlsError::internal(OP, err))?
            .tls_serialize_detached()
            .map_err(|err| MlsError::internal(OP, err))?;
        let ratchet_tree =
            group.export_ratchet_tree().tls_serialize_detached().map_err(|err| MlsError::internal(OP, err))?;
        Ok(GroupBootstrap { group_info, ratchet_tree })
    }

    /// Runs `work` on the group under the state lock. The group comes from
    /// memory when this client holds it and no other process wrote state
    /// since, else from storage. It stays in memory when `work` succeeds;
    /// after an error it is dropped (OpenMLS may have changed it half way)
    /// and the next call reloads what storage holds.
    pub(crate) fn with_group<T>(
        &self,
        operation: &'static str,
        group_id: &[u8],
        access: Access,
        work: impl FnOnce(&mut MlsGroup) -> Result<T, MlsError>,
    ) -> Result<T, MlsError> {
        self.with_state(operation, access, || {
            let cached = self.groups.borrow_mut().remove(group_id);
            let mut group = match cached {
                Some(group) => group,
                None => self.load(operation, group_id)?,
            };
            let result = work(&mut group);
            if result.is_ok() {
                self.groups.borrow_mut().insert(group_id.to_vec(), group);
            }
            result
        })
    }

    /// Runs `work` under the state lock, after dropping the in-memory groups
    /// if another process wrote state since this client last looked.
    pub(crate) fn with_state<T>(
        &self,
        operation: &'static str,
        access: Access,
        work: impl FnOnce() -> Result<T, MlsError>,
    ) -> Result<T, MlsError> {
        if self.in_batch.get() {
            // The batch holds the lock and bumped the counter.
            return work();
        }
        let held = self.lock_state(operation)?;
        if access == Access::Write {
            // Before the work: should this call die half way through its
            // storage writes, other processes still know to reload.
            held.wrote(operation)?;
        }
        work()
    }

    fn lock_state(&self, operation: &'static str) -> Result<Held<'_>, MlsError> {
        let held = self.state_lock.acquire(operation)?;
        if held.stale() {
            self.groups.borrow_mut().clear();
        }
        Ok(held)
    }

    /// Keeps a group just created or joined in memory.
    pub(crate) fn keep(&self, group: MlsGroup) {
        self.groups.borrow_mut().insert(group.group_id().to_vec(), group);
    }

    /// Loads a group from storage or fails with `UnknownGroup`.
    pub(crate) fn load(&self, operation: &'static str, group_id: &[u8]) -> Result<MlsGroup, MlsError> {
        MlsGroup::load(self.provider.storage(), &GroupId::from_slice(group_id))
            .map_err(|err| MlsError::storage(operation, err))?
            .ok_or_else(|| MlsError::UnknownGroup { group_id: hex::encode(group_id) })
    }

    pub(crate) fn signer(&self) -> &SignatureKeyPair {
        self.identity.key_pair()
    }

    pub(crate) fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.credential.to_identity()).into(),
            signature_key: SignaturePublicKey::from(self.identity.public_key().to_vec()),
        }
    }
}

/// The member a leaf of our tree is ([`admitted_member`]), named as `naming` reads it.
pub(crate) fn admitted(member: &Member, naming: Naming<'_>) -> Result<VerifiedMember, MlsError> {
    let mut verified = admitted_member(&member.credential, &member.signature_key).map_err(|error| {
        MlsError::RefusedMember { username: member_name(member, naming), reason: error.to_string() }
    })?;
    verified.username = naming.read(&verified.username);
    Ok(verified)
}

/// A member's username as `naming` reads it, or a marker when its
/// credential is not a UTF-8 BasicCredential.
pub(crate) fn member_name(member: &Member, naming: Naming<'_>) -> String {
    username_of(&member.credential).map(|raw| naming.read(&raw)).unwrap_or_else(|| {
        let raw = BasicCredential::try_from(member.credential.clone())
            .map(|basic| hex::encode(basic.identity()))
            .unwrap_or_default();
        format!("<invalid credential {raw}>")
    })
}

#[cfg(test)]
mod tests;
