//! Group lifecycle on the client: key packages, group creation, and the commits
//! that change membership (add, remove, commit pending proposals, leave), plus
//! merging or discarding a pending commit after the Delivery Service's verdict.

use std::collections::BTreeSet;

use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::{
    AddMembersError, Capabilities, CommitToPendingProposalsError, ExtensionType, GroupId, KeyPackage, KeyPackageIn,
    KeyPackageNewError, LeafNodeIndex, Lifetime, MergeCommitError, MergePendingCommitError, MlsGroup,
    MlsGroupJoinConfig, MlsMessageOut, NewGroupError, OpenMlsProvider, Proposal, ProtocolVersion, RemoveMembersError,
    SenderRatchetConfiguration, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};

use super::{member_name, Access, GroupBootstrap, MlsClient, MlsError, PendingCommit};
use crate::ciphersuite::{CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE};
use crate::device::DeviceId;
use crate::identity::member_of;

/// How many past epochs' secrets are kept so late application messages still decrypt.
pub(crate) const MAX_PAST_EPOCHS: usize = 5;
/// How many earlier generations of one sender's ratchet stay decryptable, for
/// messages that arrive out of order (RFC 9420 §9.1 interop parameter).
pub const OUT_OF_ORDER_TOLERANCE: u32 = 5;
/// The furthest one sender's ratchet is stepped forward for one message: a
/// message claiming a larger jump is refused instead of costing the receiver
/// that many key derivations (RFC 9420 §9.1 interop parameter).
pub const MAXIMUM_FORWARD_DISTANCE: u32 = 1000;

/// The sender ratchet limits every group uses.
fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAXIMUM_FORWARD_DISTANCE)
}

/// Longest group id accepted from a caller.
const MAX_GROUP_ID_LEN: usize = 255;

/// Leaf capabilities of our key packages and group leaves: the suites we allow, and the
/// LastResort extension (OpenMLS's `mark_as_last_resort` does not add it, and its own
/// `KeyPackageIn::validate` then rejects the package).
pub(crate) fn leaf_capabilities() -> Capabilities {
    Capabilities::builder()
        .ciphersuites(vec![DEFAULT_CIPHERSUITE, CLASSICAL_CIPHERSUITE])
        .extensions(vec![ExtensionType::LastResort])
        .build()
}

/// The join configuration every group uses (must match what `create_group` sets).
pub(crate) fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(sender_ratchet())
        .build()
}

/// Maps a merge failure: storage errors are storage, the rest are OpenMLS bugs.
pub(crate) fn merge_error(operation: &'static str, err: MergeCommitError<rusqlite::Error>) -> MlsError {
    match err {
        MergeCommitError::StorageError(err) => MlsError::storage(operation, err),
        MergeCommitError::LibraryError(err) => MlsError::library(operation, &err),
    }
}

pub(crate) fn serialize_message(operation: &'static str, message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message.tls_serialize_detached().map_err(|err| MlsError::internal(operation, err))
}

impl MlsClient {
    /// `count` fresh single-use KeyPackages (TLS-serialised KeyPackage, not wrapped in
    /// MlsMessage), in the client's ciphersuite (default: [`crate::DEFAULT_CIPHERSUITE`]).
    pub fn generate_key_packages(&self, count: usize) -> Result<Vec<Vec<u8>>, MlsError> {
        self.with_state("generate_key_package", Access::Write, || {
            (0..count).map(|_| self.build_key_package(false, None)).collect()
        })
    }

    /// Like [`MlsClient::generate_key_packages`] with a lifetime of
    /// `lifetime_secs` from now instead of OpenMLS's default (84 days).
    pub fn generate_key_packages_expiring_in(
        &self,
        count: usize,
        lifetime_secs: u64,
    ) -> Result<Vec<Vec<u8>>, MlsError> {
        let lifetime = Some(Lifetime::new(lifetime_secs));
        self.with_state("generate_key_package", Access::Write, || {
            (0..count).map(|_| self.build_key_package(false, lifetime)).collect()
        })
    }

    /// One last-resort KeyPackage (`mark_as_last_resort`), reusable by the server.
    pub fn generate_last_resort_key_package(&self) -> Result<Vec<u8>, MlsError> {
        self.with_state("generate_key_package", Access::Write, || self.build_key_package(true, None))
    }

    fn build_key_package(&self, last_resort: bool, lifetime: Option<Lifetime>) -> Result<Vec<u8>, MlsError> {
        const OP: &str = "generate_key_package";
        let mut builder = KeyPackage::builder().leaf_node_capabilities(leaf_capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        if let Some(lifetime) = lifetime {
            builder = builder.key_package_lifetime(lifetime);
        }
        let bundle = builder
            .build(self.ciphersuite, &self.provider, self.signer(), self.credential_with_key())
            .map_err(|err| match err {
                KeyPackageNewError::StorageError => MlsError::storage(OP, err),
                other => MlsError::internal(OP, other),
            })?;
        bundle.key_package().tls_serialize_detached().map_err(|err| MlsError::internal(OP, err))
    }

    /// Creates a group with the given id (16 random bytes chosen by the caller) in the
    /// client's ciphersuite. Handshake messages go out as PublicMessages so the DS can
    /// validate them; application messages are always PrivateMessages. Welcomes carry
    /// the ratchet tree, and secrets of the last few epochs are kept for late messages.
    pub fn create_group(&self, group_id: &[u8]) -> Result<GroupBootstrap, MlsError> {
        const OP: &str = "create_group";
        if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_LEN {
            return Err(MlsError::InvalidArgument {
                operation: OP,
                reason: format!("group id must be 1..={MAX_GROUP_ID_LEN} bytes"),
            });
        }
        self.with_state(OP, Access::Write, || {
            let group = MlsGroup::builder()
                .with_group_id(GroupId::from_slice(group_id))
                .ciphersuite(self.ciphersuite)
                .with_wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(MAX_PAST_EPOCHS)
                .sender_ratchet_configuration(sender_ratchet())
                .with_capabilities(leaf_capabilities())
                .build(&self.provider, self.signer(), self.credential_with_key())
                .map_err(|err| match err {
                    NewGroupError::GroupAlreadyExists => MlsError::GroupExists { group_id: hex::encode(group_id) },
                    NewGroupError::StorageError(err) => MlsError::storage(OP, err),
                    other => MlsError::internal(OP, other),
                })?;
            let bootstrap = self.bootstrap_of(&group);
            self.keep(group);
            bootstrap
        })
    }

    /// Commit adding the members whose KeyPackages are given. Does NOT merge: the caller
    /// submits it to the DS, then calls `merge_pending_commit` (accepted) or
    /// `clear_pending_commit` (rejected).
    pub fn add_members(&self, group_id: &[u8], key_packages: &[Vec<u8>]) -> Result<PendingCommit, MlsError> {
        const OP: &str = "add_members";
        if key_packages.is_empty() {
            return Err(MlsError::InvalidArgument { operation: OP, reason: "no key packages".to_owned() });
        }
        self.with_group(OP, group_id, Access::Write, |group| {
            let validated = key_packages
                .iter()
                .enumerate()
                .map(|(index, bytes)| self.validate_key_package_for(group, index, bytes))
                .collect::<Result<Vec<_>, _>>()?;
            let epoch = group.epoch().as_u64();
            let (commit, welcome, _group_info) =
                group.add_members(&self.provider, self.signer(), &validated).map_err(|err| match err {
                    AddMembersError::GroupStateError(err) => MlsError::state(OP, group.group_id(), &err),
                    AddMembersError::StorageError(err) => MlsError::storage(OP, err),
                    AddMembersError::CreateCommitError(err) => {
                        MlsError::InvalidArgument { operation: OP, reason: err.to_string() }
                    }
                    other => MlsError::internal(OP, other),
                })?;
            PendingCommit::serialised(OP, epoch, &commit, Some(&welcome))
        })
    }

    fn validate_key_package_for(&self, group: &MlsGroup, index: usize, bytes: &[u8]) -> Result<KeyPackage, MlsError> {
        let reject = |reason: String| MlsError::InvalidKeyPackage { index, reason };
        let key_package_in = KeyPackageIn::tls_deserialize_exact_bytes(bytes).map_err(|e| reject(e.to_string()))?;
        let key_package = key_package_in
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| reject(e.to_string()))?;
        if key_package.ciphersuite() != group.ciphersuite() {
            return Err(reject(format!(
                "ciphersuite {:?} differs from the group's {:?}",
                key_package.ciphersuite(),
                group.ciphersuite()
            )));
        }
        let leaf = key_package.leaf_node();
        member_of(leaf.credential(), leaf.signature_key().as_slice()).map_err(|e| reject(e.to_string()))?;
        Ok(key_package)
    }

    /// Commit removing the members with these usernames, every device of
    /// each (error if one is not a member).
    /// Also commits any pending proposals; members already removed by a pending
    /// proposal are not removed twice.
    pub fn remove_members(&self, group_id: &[u8], usernames: &[String]) -> Result<PendingCommit, MlsError> {
        const OP: &str = "remove_members";
        if usernames.is_empty() {
            return Err(MlsError::InvalidArgument { operation: OP, reason: "no usernames".to_owned() });
        }
        let naming = self.naming(group_id);
        self.with_group(OP, group_id, Access::Write, |group| {
            let own_index = group.own_leaf_index();
            let mut indices = BTreeSet::new();
            for username in usernames {
                // Every device of the account: each is a leaf of its own.
                let leaves: Vec<LeafNodeIndex> =
                    group.members().filter(|m| member_name(m, naming) == *username).map(|m| m.index).collect();
                if leaves.is_empty() {
                    return Err(MlsError::NotAMember { username: username.clone() });
                }
                if leaves.contains(&own_index) {
                    return Err(MlsError::InvalidArgument {
                        operation: OP,
                        reason: "cannot remove ourselves; use leave_group".to_owned(),
                    });
                }
                indices.extend(leaves);
            }
            let already_proposed: BTreeSet<LeafNodeIndex> = group
                .pending_proposals()
                .filter_map(|queued| match queued.proposal() {
                    Proposal::Remove(remove) => Some(remove.removed()),
                    _ => None,
                })
                .collect();
            let to_remove: Vec<LeafNodeIndex> = indices.difference(&already_proposed).copied().collect();
            if to_remove.is_empty() {
                return self.commit_all_pending(OP, group);
            }
            self.commit_removal(OP, group, &to_remove)
        })
    }

    /// Commit removing the leaves of these devices (of any account; our
    /// own leaf excepted, an error); `None` when none of them is a leaf.
    pub fn remove_devices(&self, group_id: &[u8], devices: &[DeviceId]) -> Result<Option<PendingCommit>, MlsError> {
        const OP: &str = "remove_devices";
        self.with_group(OP, group_id, Access::Write, |group| {
            let leaves: Vec<LeafNodeIndex> = group
                .members()
                .filter(|m| devices.contains(&DeviceId::of_key(&m.signature_key)))
                .map(|m| m.index)
                .collect();
            if leaves.is_empty() {
                return Ok(None);
            }
            if leaves.contains(&group.own_leaf_index()) {
                return Err(MlsError::InvalidArgument {
                    operation: OP,
                    reason: "cannot remove our own device; use leave_group".to_owned(),
                });
            }
            self.commit_removal(OP, group, &leaves).map(Some)
        })
    }

    /// Commit of all pending proposals (e.g. someone's leave); `None` if there are none.
    pub fn commit_pending_proposals(&self, group_id: &[u8]) -> Result<Option<PendingCommit>, MlsError> {
        const OP: &str = "commit_pending_proposals";
        self.with_group(OP, group_id, Access::Write, |group| {
            if !group.has_pending_proposals() {
                return Ok(None);
            }
            self.commit_all_pending(OP, group).map(Some)
        })
    }

    /// A commit removing `leaves` (and committing what is pending).
    fn commit_removal(
        &self,
        operation: &'static str,
        group: &mut MlsGroup,
        leaves: &[LeafNodeIndex],
    ) -> Result<PendingCommit, MlsError> {
        let epoch = group.epoch().as_u64();
        let (commit, welcome, _group_info) =
            group.remove_members(&self.provider, self.signer(), leaves).map_err(|err| match err {
                RemoveMembersError::GroupStateError(err) => MlsError::state(operation, group.group_id(), &err),
                RemoveMembersError::StorageError(err) => MlsError::storage(operation, err),
                other => MlsError::internal(operation, other),
            })?;
        PendingCommit::serialised(operation, epoch, &commit, welcome.as_ref())
    }

    fn commit_all_pending(&self, operation: &'static str, group: &mut MlsGroup) -> Result<PendingCommit, MlsError> {
        let epoch = group.epoch().as_u64();
        let group_id = group.group_id().clone();
        let (commit, welcome, _group_info) =
            group.commit_to_pending_proposals(&self.provider, self.signer()).map_err(|err| match err {
                CommitToPendingProposalsError::GroupStateError(err) => MlsError::state(operation, &group_id, &err),
                CommitToPendingProposalsError::StorageError(err) => MlsError::storage(operation, err),
                other => MlsError::internal(operation, other),
            })?;
        PendingCommit::serialised(operation, epoch, &commit, welcome.as_ref())
    }

    /// A Remove proposal for ourselves (MlsMessage bytes, PublicMessage). Leaving in MLS
    /// means someone else commits it; until then we cannot send application messages.
    pub fn leave_group(&self, group_id: &[u8]) -> Result<Vec<u8>, MlsError> {
        const OP: &str = "leave_group";
        self.with_group(OP, group_id, Access::Write, |group| {
            let proposal = group.leave_group(&self.provider, self.signer()).map_err(|err| match err {
                openmls::prelude::LeaveGroupError::GroupStateError(err) => MlsError::state(OP, group.group_id(), &err),
                openmls::prelude::LeaveGroupError::StorageError(err) => MlsError::storage(OP, err),
                other => MlsError::internal(OP, other),
            })?;
            serialize_message(OP, &proposal)
        })
    }

    /// Merges our pending commit after the DS accepted it. Error if there is none.
    pub fn merge_pending_commit(&self, group_id: &[u8]) -> Result<(), MlsError> {
        const OP: &str = "merge_pending_commit";
        self.with_group(OP, group_id, Access::Write, |group| {
            if group.pending_commit().is_none() {
                return Err(MlsError::InvalidState { operation: OP, reason: "no pending commit".to_owned() });
            }
            group.merge_pending_commit(&self.provider).map_err(|err| match err {
                MergePendingCommitError::MlsGroupStateError(err) => MlsError::state(OP, group.group_id(), &err),
                MergePendingCommitError::MergeCommitError(err) => merge_error(OP, err),
            })
        })
    }

    /// Discards our pending commit after the DS rejected it. A no-op if there is none.
    pub fn clear_pending_commit(&self, group_id: &[u8]) -> Result<(), MlsError> {
        const OP: &str = "clear_pending_commit";
        self.with_group(OP, group_id, Access::Write, |group| {
            group.clear_pending_commit(self.provider.storage()).map_err(|err| MlsError::storage(OP, err))
        })
    }
}
