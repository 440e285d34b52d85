//! The Delivery Service's public view of a group: no secrets, only what OpenMLS's
//! `PublicGroup` can check from PublicMessages.
//!
//! [`DsGroupView`] is built from the creator's GroupInfo and ratchet tree, then
//! follows the group by validating and merging each accepted commit (exactly one
//! per epoch: a commit for an older epoch is [`DsError::StaleEpoch`]). It also stores
//! standalone proposals so a later commit that references them validates. The whole
//! state serialises to one blob ([`DsGroupView::to_bytes`]) for the server's store.
//! Also here: stateless checks of key packages and application messages.
//! Nothing in this module decrypts, and it does no IO.
//!
//! Names are read as the group's hub reads them ([`crate::names::Naming`]):
//! the DS runs on the server hosting the group, so a user of its domain
//! reads bare (`alice`, whether the leaf carries `alice` or
//! `alice@hub`) and any other as `name@domain`. A group whose id names no
//! hub reads names as the credentials carry them.

mod codec;
mod deferred_tree;
mod error;
mod inspect;
mod precheck;

use deferred_tree::DeferredTree;
use openmls::prelude::tls_codec::DeserializeBytes as _;
use openmls::prelude::{
    LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, Proposal, ProposalStore, ProtocolMessage,
    PublicGroup, PublicProcessMessageError, RatchetTreeIn, Sender, StagedCommit,
};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;

pub use codec::MAX_VIEW_BYTES;
pub use error::DsError;
pub use inspect::{inspect_application, validate_key_package, ApplicationInfo, KeyPackageInfo};
pub use precheck::{
    check_key_package_lifetime, inspect_handshake, HandshakeInfo, HandshakeKind, MAX_AUTHENTICATED_DATA_BYTES,
    MAX_LEAF_EXTENSIONS_BYTES, MAX_LEAF_NODE_BYTES, MIN_KEY_PACKAGE_REMAINING_SECS,
};

use crate::ciphersuite::is_allowed_ciphersuite;
use crate::device::DeviceId;
use crate::identity::{admitted_member, member_of, username_of};
use crate::names::{hub_of, Naming};

/// A group member as the DS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The account named by the member's credential.
    pub username: String,
    /// The account key the member's device is certified by.
    pub identity_key: Vec<u8>,
    /// The member's device (derived from its leaf's signature key).
    pub device_id: DeviceId,
}

/// A member a commit adds, with its KeyPackage's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedMember {
    /// The account named by the member's credential.
    pub username: String,
    /// The account key the member's device is certified by.
    pub identity_key: Vec<u8>,
    /// The member's device key (the leaf's signature key).
    pub device_key: Vec<u8>,
    /// Start of the KeyPackage's lifetime (seconds since the Unix epoch).
    pub not_before: u64,
    /// End of the KeyPackage's lifetime: a member processing this commit
    /// later refuses it (OpenMLS checks the lifetime of added leaves).
    pub not_after: u64,
    /// The KeyPackage's HPKE init key (which package was used).
    pub init_key: Vec<u8>,
}

impl AddedMember {
    /// The added device (derived from its key).
    pub fn device_id(&self) -> DeviceId {
        DeviceId::of_key(&self.device_key)
    }
}

/// What an accepted commit changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Username of the committer.
    pub sender: String,
    /// The committer's device: the device of the leaf that signed the
    /// commit (derived from its signature key before the commit).
    pub sender_device: DeviceId,
    /// The epoch after the commit.
    pub new_epoch: u64,
    /// Members added by the commit.
    pub added: Vec<AddedMember>,
    /// Usernames removed by the commit.
    pub removed: Vec<String>,
    /// Roster after the commit, sorted by username.
    pub members: Vec<MemberInfo>,
}

/// What an accepted standalone proposal is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalOutcome {
    /// Username of the proposer.
    pub sender: String,
    /// True when it is a Remove of the sender's own leaf (a leave).
    pub self_remove: bool,
}

/// The DS's secret-free view of one group.
pub struct DsGroupView {
    /// Holds the group as last stored, except the tree: commits merge
    /// without writing it (see `deferred_tree`); serialising writes it first.
    storage: MemoryStorage,
    group: PublicGroup,
    crypto: RustCrypto,
}

impl std::fmt::Debug for DsGroupView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DsGroupView")
            .field("group_id", &hex::encode(self.group_id()))
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl DsGroupView {
    /// Builds the view from a creator-supplied GroupInfo (MlsMessage bytes) and ratchet
    /// tree; verifies the GroupInfo signature, the tree, that the ciphersuite is allowed
    /// and that every member has a UTF-8 BasicCredential.
    pub fn from_group_info(group_info: &[u8], ratchet_tree: &[u8]) -> Result<DsGroupView, DsError> {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(group_info)
            .map_err(|err| DsError::malformed("MlsMessage", err))?;
        let MlsMessageBodyIn::GroupInfo(verifiable) = message.extract() else {
            return Err(DsError::malformed("GroupInfo", "MlsMessage does not carry a GroupInfo"));
        };
        let ciphersuite = verifiable.ciphersuite();
        if !is_allowed_ciphersuite(ciphersuite) {
            return Err(DsError::CiphersuiteNotAllowed { ciphersuite: ciphersuite.into() });
        }
        let tree = RatchetTreeIn::tls_deserialize_exact_bytes(ratchet_tree)
            .map_err(|err| DsError::malformed("ratchet tree", err))?;
        let crypto = RustCrypto::default();
        let storage = MemoryStorage::default();
        let (group, _group_info) =
            PublicGroup::from_external(&crypto, &storage, tree, verifiable, ProposalStore::new())
                .map_err(|err| DsError::InvalidGroupInfo { reason: err.to_string() })?;
        let view = DsGroupView { storage, group, crypto };
        for member in view.group.members() {
            if let Err(error) = member_of(&member.credential, &member.signature_key) {
                return Err(DsError::InvalidCredential { reason: format!("member at leaf {}: {error}", member.index) });
            }
            if let Some(leaf) = view.group.leaf(member.index) {
                precheck::check_leaf_size(leaf, &format!("member at leaf {}", member.index))?;
            }
        }
        Ok(view)
    }

    /// The group id.
    pub fn group_id(&self) -> Vec<u8> {
        self.group.group_id().to_vec()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The group's ciphersuite.
    pub fn ciphersuite(&self) -> openmls::prelude::Ciphersuite {
        self.group.ciphersuite()
    }

    /// The current roster, one entry per leaf (an account with several
    /// devices has several), sorted by username and device.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut members: Vec<MemberInfo> = self
            .group
            .members()
            .map(|member| match admitted_member(&member.credential, &member.signature_key) {
                Ok(verified) => MemberInfo {
                    username: self.read_name(&verified.username),
                    identity_key: verified.account_key,
                    device_id: verified.device_id,
                },
                // Unreachable: every leaf was checked when it entered the view
                // (the GroupInfo, an Add), and an update path keeps credential and key.
                Err(_) => MemberInfo {
                    username: self.read_name(&username_of(&member.credential).unwrap_or_default()),
                    device_id: DeviceId::of_key(&member.signature_key),
                    identity_key: member.signature_key,
                },
            })
            .collect();
        members.sort_by(|a, b| (&a.username, a.device_id).cmp(&(&b.username, b.device_id)));
        members
    }

    /// Whether `username` is currently a member (e.g. to authorise a post).
    pub fn is_member(&self, username: &str) -> bool {
        self.group
            .members()
            .any(|member| username_of(&member.credential).is_some_and(|raw| self.read_name(&raw) == username))
    }

    /// A credential name as the group's hub reads it (see the module docs).
    fn read_name(&self, raw: &str) -> String {
        let group_id = self.group.group_id().as_slice();
        Naming::of_group(hub_of(group_id), group_id).read(raw)
    }

    /// Validates a commit (MlsMessage bytes carrying a PublicMessage) against the current
    /// epoch with `PublicGroup::process_message`, merges it, and reports what changed.
    /// Errors if it is not a commit, is for another group or epoch, does not verify, or
    /// changes a member's credential or identity key; on error the view is unchanged.
    pub fn process_commit(&mut self, commit: &[u8]) -> Result<CommitOutcome, DsError> {
        let protocol = self.parse_handshake(commit, HandshakeKind::Commit)?;
        let processed = self.group.process_message(&self.crypto, protocol).map_err(process_error)?;
        precheck::check_authenticated_data(processed.aad())?;
        let sender = self.read_name(&username_of(processed.credential()).unwrap_or_default());
        // External commits (a new member adding itself) are never accepted:
        // they would skip the checks on added members and update paths.
        let Sender::Member(sender_index) = *processed.sender() else {
            return Err(DsError::InvalidMessage { reason: "only members may commit".to_owned() });
        };
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(DsError::WrongContentType { expected: "commit", found: "other content".to_owned() });
        };
        self.check_update_path(sender_index, &staged)?;
        let sender_device = self
            .group
            .leaf(sender_index)
            .map(|leaf| DeviceId::of_key(leaf.signature_key().as_slice()))
            .ok_or_else(|| DsError::InvalidMessage { reason: format!("committer leaf {sender_index} is blank") })?;
        let mut added = added_members(&staged)?;
        for member in &mut added {
            member.username = self.read_name(&member.username);
        }
        let removed = self.removed_usernames(&staged);
        self.group.merge_commit(&DeferredTree(&self.storage), *staged).map_err(DsError::internal)?;
        Ok(CommitOutcome { sender, sender_device, new_epoch: self.epoch(), added, removed, members: self.members() })
    }

    /// Validates a proposal (PublicMessage) and stores it as pending so a later commit by
    /// reference validates. External proposals are rejected.
    pub fn process_proposal(&mut self, proposal: &[u8]) -> Result<ProposalOutcome, DsError> {
        let protocol = self.parse_handshake(proposal, HandshakeKind::Proposal)?;
        let processed = self.group.process_message(&self.crypto, protocol).map_err(process_error)?;
        precheck::check_authenticated_data(processed.aad())?;
        let sender = self.read_name(&username_of(processed.credential()).unwrap_or_default());
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(DsError::InvalidMessage { reason: "only proposals from members are accepted".to_owned() });
        };
        let self_remove = match (queued.sender(), queued.proposal()) {
            (Sender::Member(index), Proposal::Remove(remove)) => remove.removed() == *index,
            (Sender::Member(_), Proposal::SelfRemove) => true,
            _ => false,
        };
        self.group.add_proposal(&self.storage, *queued).map_err(DsError::internal)?;
        Ok(ProposalOutcome { sender, self_remove })
    }

    /// Parses a PublicMessage of the expected content type for this group and epoch.
    fn parse_handshake(&self, bytes: &[u8], kind: HandshakeKind) -> Result<ProtocolMessage, DsError> {
        let protocol = precheck::parse_public(bytes, kind)?;
        if protocol.group_id() != self.group.group_id() {
            return Err(DsError::WrongGroup {
                expected: hex::encode(self.group_id()),
                found: hex::encode(protocol.group_id().as_slice()),
            });
        }
        let message_epoch = protocol.epoch().as_u64();
        let current_epoch = self.epoch();
        if message_epoch < current_epoch {
            return Err(DsError::StaleEpoch { message_epoch, current_epoch });
        }
        if message_epoch > current_epoch {
            return Err(DsError::FutureEpoch { message_epoch, current_epoch });
        }
        Ok(protocol)
    }

    /// The AS binds a username to one identity key: a commit's update path may rotate
    /// HPKE keys but not the committer's credential or signature key.
    fn check_update_path(&self, index: LeafNodeIndex, staged: &StagedCommit) -> Result<(), DsError> {
        let Some(new_leaf) = staged.update_path_leaf_node() else {
            return Ok(());
        };
        precheck::check_leaf_size(new_leaf, "the committer's new")?;
        let Some(old_leaf) = self.group.leaf(index) else {
            return Err(DsError::InvalidMessage { reason: format!("committer leaf {index} is blank") });
        };
        if old_leaf.credential() != new_leaf.credential() || old_leaf.signature_key() != new_leaf.signature_key() {
            return Err(DsError::InvalidCredential {
                reason: "a commit may not change the committer's credential or identity key".to_owned(),
            });
        }
        Ok(())
    }

    /// Usernames of the leaves a staged commit removes (looked up before merging).
    fn removed_usernames(&self, staged: &StagedCommit) -> Vec<String> {
        let mut removed: Vec<String> = staged
            .queued_proposals()
            .filter_map(|queued| match (queued.proposal(), queued.sender()) {
                (Proposal::Remove(remove), _) => Some(remove.removed()),
                (Proposal::SelfRemove, Sender::Member(index)) => Some(*index),
                _ => None,
            })
            .filter_map(|index| self.group.leaf(index))
            .map(|leaf| self.read_name(&username_of(leaf.credential()).unwrap_or_default()))
            .collect();
        removed.sort();
        removed.dedup();
        removed
    }
}

/// Members a staged commit adds; each must have a UTF-8 BasicCredential.
fn added_members(staged: &StagedCommit) -> Result<Vec<AddedMember>, DsError> {
    staged
        .add_proposals()
        .map(|add| {
            let key_package = add.add_proposal().key_package();
            let leaf = key_package.leaf_node();
            let device_key = leaf.signature_key().as_slice();
            let member = member_of(leaf.credential(), device_key)
                .map_err(|error| DsError::InvalidCredential { reason: format!("added member: {error}") })?;
            precheck::check_leaf_size(leaf, &format!("added member {:?}'s", member.username))?;
            let lifetime = key_package.life_time();
            Ok(AddedMember {
                username: member.username,
                identity_key: member.account_key,
                device_key: device_key.to_vec(),
                not_before: lifetime.not_before(),
                not_after: lifetime.not_after(),
                init_key: key_package.hpke_init_key().as_slice().to_vec(),
            })
        })
        .collect()
}

fn process_error(err: PublicProcessMessageError) -> DsError {
    match err {
        PublicProcessMessageError::LibraryError(err) => DsError::internal(err),
        other => DsError::InvalidMessage { reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests;
