//! Messages on the client: encrypting application messages, joining from a Welcome,
//! and processing incoming handshake and application messages.
//!
//! Incoming commits are merged at once and proposals are stored as pending; our own
//! messages echoed back by the DS and handshakes from past epochs are reported as
//! [`Incoming::Ignored`].
//!
//! Every leaf a commit or a Welcome brings in must carry a credential that
//! verifies (a linked device's certificate under the account key it names)
//! and pass the caller's [`MemberCheck`]; otherwise nothing is merged or
//! joined and the error is [`MlsError::RefusedMember`].

use openmls::prelude::tls_codec::DeserializeBytes as _;
use openmls::prelude::{
    CreateMessageError, Credential, LeafNode, LeafNodeIndex, MlsGroup, MlsMessageBodyIn, MlsMessageIn, OpenMlsProvider,
    ProcessMessageError, ProcessedMessageContent, Proposal, ProtocolMessage, RatchetTreeIn, Sender, StagedWelcome,
    ValidationError, WelcomeError,
};

use super::groups::{join_config, merge_error};
use std::collections::HashMap;

use super::{admitted, any_verified_member, Access, Incoming, MemberCheck, MemberRefusal, MlsClient, MlsError};
use crate::device::{DeviceId, VerifiedMember};
use crate::identity::{member_of, username_of};
use crate::names::Naming;

const UNKNOWN_SENDER: &str = "<invalid credential>";

impl MlsClient {
    /// Encrypts an application message (MlsMessage bytes carrying a PrivateMessage).
    /// Fails with `InvalidState` while proposals are pending (commit them first).
    pub fn encrypt(&self, group_id: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        const OP: &str = "encrypt";
        self.with_group(OP, group_id, Access::Write, |group| {
            let message = group.create_message(&self.provider, self.signer(), plaintext).map_err(|err| match err {
                CreateMessageError::GroupStateError(err) => MlsError::state(OP, group.group_id(), &err),
                CreateMessageError::LibraryError(err) => MlsError::library(OP, &err),
            })?;
            super::groups::serialize_message(OP, &message)
        })
    }

    /// Joins from a Welcome (MlsMessage bytes) that carries the ratchet tree; returns the group id.
    /// A stale, inactive copy of the same group (we were removed earlier) is replaced.
    /// Every member's credential must verify.
    pub fn join_from_welcome(&self, welcome: &[u8]) -> Result<Vec<u8>, MlsError> {
        self.join(welcome, None)
    }

    /// Like [`MlsClient::join_from_welcome`], with every member of the group
    /// also passing `check`, and one account key per account; when one does
    /// not, nothing is stored. Returns the group id and the member who sent
    /// the Welcome.
    pub fn join_from_welcome_checked(
        &self,
        welcome: &[u8],
        check: MemberCheck<'_>,
    ) -> Result<(Vec<u8>, VerifiedMember), MlsError> {
        const OP: &str = "join_from_welcome";
        self.with_state(OP, Access::Write, || self.join_locked(welcome, None, check))
    }

    /// Like [`MlsClient::join_from_welcome`], with the ratchet tree supplied separately
    /// (TLS-serialised, e.g. served by the DS for big groups).
    pub fn join_from_welcome_with_tree(&self, welcome: &[u8], ratchet_tree: &[u8]) -> Result<Vec<u8>, MlsError> {
        let tree = RatchetTreeIn::tls_deserialize_exact_bytes(ratchet_tree)
            .map_err(|err| MlsError::Malformed { what: "ratchet tree", reason: err.to_string() })?;
        self.join(welcome, Some(tree))
    }

    fn join(&self, welcome: &[u8], ratchet_tree: Option<RatchetTreeIn>) -> Result<Vec<u8>, MlsError> {
        const OP: &str = "join_from_welcome";
        self.with_state(OP, Access::Write, || {
            self.join_locked(welcome, ratchet_tree, &any_verified_member).map(|(group_id, _)| group_id)
        })
    }

    fn join_locked(
        &self,
        welcome: &[u8],
        ratchet_tree: Option<RatchetTreeIn>,
        check: MemberCheck<'_>,
    ) -> Result<(Vec<u8>, VerifiedMember), MlsError> {
        const OP: &str = "join_from_welcome";
        let message = parse_message(welcome)?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(MlsError::Malformed {
                what: "Welcome",
                reason: "MlsMessage does not carry a Welcome".to_owned(),
            });
        };
        let mut builder = StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(|err| welcome_error(OP, err))?;
        let group_id = builder.processed_welcome().unverified_group_info().group_id().clone();
        let existing = MlsGroup::load(self.provider.storage(), &group_id).map_err(|err| MlsError::storage(OP, err))?;
        match existing {
            Some(group) if group.is_active() => {
                return Err(MlsError::GroupExists { group_id: hex::encode(group_id.as_slice()) })
            }
            Some(_) => {
                // The old copy is about to be replaced in storage; drop it from memory now.
                self.groups.borrow_mut().remove(group_id.as_slice());
            }
            None => {}
        }
        // No active copy, as just checked. Without this, OpenMLS would load
        // the group again to check the same.
        builder = builder.replace_old_group();
        if let Some(tree) = ratchet_tree {
            builder = builder.with_ratchet_tree(tree);
        }
        let staged = builder.build().map_err(|err| welcome_error(OP, err))?;
        let naming = self.naming(group_id.as_slice());
        let mut accounts = AccountKeys::default();
        for member in staged.members() {
            let verified = check_leaf(&member.credential, &member.signature_key, naming, check)?;
            accounts.admit(&verified)?;
        }
        let sender = staged.welcome_sender().map_err(|err| MlsError::library(OP, &err))?;
        let sender = check_leaf_node(sender, naming, check)?;
        let group = staged.into_group(&self.provider).map_err(|err| welcome_error(OP, err))?;
        let group_id = group.group_id().to_vec();
        self.keep(group);
        Ok((group_id, sender))
    }

    /// Processes one incoming handshake or application message (MlsMessage bytes) for a
    /// group we hold. Commits are merged immediately; proposals are stored as pending.
    /// Every leaf a commit brings in must have a credential that verifies.
    pub fn process_incoming(&self, group_id: &[u8], message: &[u8]) -> Result<Incoming, MlsError> {
        self.process_incoming_checked(group_id, message, &any_verified_member)
    }

    /// Like [`MlsClient::process_incoming`], with every leaf a commit brings
    /// in (added, updated, or the committer's new leaf) also passing `check`;
    /// when one does not, the commit is not merged.
    pub fn process_incoming_checked(
        &self,
        group_id: &[u8],
        message: &[u8],
        check: MemberCheck<'_>,
    ) -> Result<Incoming, MlsError> {
        const OP: &str = "process_incoming";
        let protocol = parse_message(message)?
            .try_into_protocol_message()
            .map_err(|err| MlsError::Malformed { what: "PublicMessage or PrivateMessage", reason: err.to_string() })?;
        self.with_group(OP, group_id, Access::Write, |group| self.process_protocol(group, group_id, protocol, check))
    }

    fn process_protocol(
        &self,
        group: &mut MlsGroup,
        group_id: &[u8],
        protocol: ProtocolMessage,
        check: MemberCheck<'_>,
    ) -> Result<Incoming, MlsError> {
        const OP: &str = "process_incoming";
        if protocol.group_id() != group.group_id() {
            return Err(MlsError::WrongGroup {
                expected: hex::encode(group_id),
                found: hex::encode(protocol.group_id().as_slice()),
            });
        }
        if !group.is_active() {
            return Err(MlsError::Inactive { group_id: hex::encode(group_id) });
        }
        if let Some(ignored) = check_epoch(group, &protocol)? {
            return Ok(ignored);
        }
        let processed = match group.process_message(&self.provider, protocol) {
            Ok(processed) => processed,
            Err(ProcessMessageError::ValidationError(ValidationError::NoPastEpochData)) => {
                return Ok(Incoming::Ignored { reason: "message from an epoch whose secrets are gone".to_owned() })
            }
            Err(err) => return Err(process_error(OP, group, err)),
        };
        if !matches!(processed.sender(), Sender::Member(_)) {
            // External commits and proposals: the group takes members only
            // through a member's commit.
            return Err(MlsError::InvalidMessage {
                operation: OP,
                reason: "only messages from members are accepted".to_owned(),
            });
        }
        let naming = self.naming(group_id);
        let sender = username_of(processed.credential())
            .map(|raw| naming.read(&raw))
            .unwrap_or_else(|| UNKNOWN_SENDER.to_owned());
        let from_self = *processed.sender() == Sender::Member(group.own_leaf_index());
        let committer = processed.sender().clone();
        // The sender's leaf as it is now. A message from a past epoch may
        // come from a leaf since removed or taken by another member: the
        // device is known only while the leaf still holds the credential
        // the message was verified with (a linked credential's certificate
        // names its device key, so equal credentials are one device).
        let sender_device = match processed.sender() {
            Sender::Member(index) => group
                .member_at(*index)
                .filter(|member| &member.credential == processed.credential())
                .map(|member| DeviceId::of_key(&member.signature_key)),
            _ => None,
        };
        let epoch = processed.epoch().as_u64();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                Ok(Incoming::Application { sender, device: sender_device, plaintext: app.into_bytes(), epoch })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let mut accounts = AccountKeys::of_group(group, naming);
                for add in staged.add_proposals() {
                    accounts.admit(&check_leaf_node(add.add_proposal().key_package().leaf_node(), naming, check)?)?;
                }
                for update in staged.update_proposals() {
                    let new = check_leaf_node(update.update_proposal().leaf_node(), naming, check)?;
                    same_account_as_before(group, update.sender(), &new, naming)?;
                }
                if let Some(leaf) = staged.update_path_leaf_node() {
                    let new = check_leaf_node(leaf, naming, check)?;
                    same_account_as_before(group, &committer, &new, naming)?;
                }
                let removed_self = staged.self_removed();
                group.merge_staged_commit(&self.provider, *staged).map_err(|err| merge_error(OP, err))?;
                Ok(Incoming::CommitMerged { sender, new_epoch: group.epoch().as_u64(), removed_self })
            }
            ProcessedMessageContent::ProposalMessage(_) if from_self => {
                Ok(Incoming::Ignored { reason: "our own proposal echoed back".to_owned() })
            }
            ProcessedMessageContent::ProposalMessage(queued) => {
                // A member's own leave is the only proposal the DS relays; any
                // other would be committed, unchecked, by our next commit.
                let own_leave = match (queued.proposal(), &committer) {
                    (Proposal::Remove(remove), Sender::Member(index)) => remove.removed() == *index,
                    _ => false,
                };
                if !own_leave {
                    return Err(MlsError::InvalidMessage {
                        operation: OP,
                        reason: "the only proposal accepted is a member's own leave".to_owned(),
                    });
                }
                group
                    .store_pending_proposal(self.provider.storage(), *queued)
                    .map_err(|err| MlsError::storage(OP, err))?;
                Ok(Incoming::ProposalStored { sender })
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(MlsError::InvalidMessage {
                operation: OP,
                reason: "external join proposals are not accepted".to_owned(),
            }),
            ProcessedMessageContent::OwnPendingCommit => {
                Ok(Incoming::Ignored { reason: "our own pending commit echoed back".to_owned() })
            }
            ProcessedMessageContent::OwnPrivateMessage => {
                Ok(Incoming::Ignored { reason: "our own message echoed back".to_owned() })
            }
            #[allow(unreachable_patterns)]
            _ => Err(MlsError::InvalidMessage { operation: OP, reason: "unsupported message content".to_owned() }),
        }
    }
}

/// Checks a leaf entering the group: its credential verifies, then `check`
/// (which sees the member named as `naming` reads it).
fn check_leaf_node(leaf: &LeafNode, naming: Naming<'_>, check: MemberCheck<'_>) -> Result<VerifiedMember, MlsError> {
    check_leaf(leaf.credential(), leaf.signature_key().as_slice(), naming, check)
}

fn check_leaf(
    credential: &Credential,
    signature_key: &[u8],
    naming: Naming<'_>,
    check: MemberCheck<'_>,
) -> Result<VerifiedMember, MlsError> {
    let refused = |reason: String| MlsError::RefusedMember {
        username: username_of(credential).map(|raw| naming.read(&raw)).unwrap_or_else(|| UNKNOWN_SENDER.to_owned()),
        reason,
    };
    let mut member = member_of(credential, signature_key).map_err(|error| refused(error.to_string()))?;
    member.username = naming.read(&member.username);
    check(&member).map_err(|refusal| match refusal {
        MemberRefusal::Refused(reason) => refused(reason),
        MemberRefusal::Local(reason) => MlsError::Storage { operation: "check a member", reason },
    })?;
    Ok(member)
}

/// The account key of each account in a group: one per account, however
/// many of its devices are leaves.
#[derive(Default)]
struct AccountKeys(HashMap<String, Vec<u8>>);

impl AccountKeys {
    /// The accounts of the group's current leaves, named as `naming` reads
    /// them (so `alice` and `alice@home` are one account).
    fn of_group(group: &MlsGroup, naming: Naming<'_>) -> AccountKeys {
        let mut accounts = AccountKeys::default();
        for member in group.members() {
            // Every leaf was checked when it entered; one whose credential
            // does not even parse is left out (it vouches for no key).
            if let Ok(verified) = admitted(&member, naming) {
                accounts.0.entry(verified.username).or_insert(verified.account_key);
            }
        }
        accounts
    }

    /// Takes one more leaf: refused when its account already has another key here.
    fn admit(&mut self, member: &VerifiedMember) -> Result<(), MlsError> {
        match self.0.get(&member.username) {
            Some(known) if *known != member.account_key => Err(MlsError::RefusedMember {
                username: member.username.clone(),
                reason: "another device of this name in the group is certified by another account key".to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                self.0.insert(member.username.clone(), member.account_key.clone());
                Ok(())
            }
        }
    }
}

/// A leaf replacing the sender's own (an Update, or a commit's path) must
/// stay the same account: same username, same account key.
fn same_account_as_before(
    group: &MlsGroup,
    sender: &Sender,
    new: &VerifiedMember,
    naming: Naming<'_>,
) -> Result<(), MlsError> {
    let refused = |reason: &str| MlsError::RefusedMember { username: new.username.clone(), reason: reason.to_owned() };
    let Sender::Member(index) = sender else { return Err(refused("a leaf update from no member")) };
    let old = leaf_member(group, *index, naming).ok_or_else(|| refused("a leaf update of a leaf that is not there"))?;
    if old.username != new.username || old.account_key != new.account_key {
        return Err(refused("a member's leaf update changes its account"));
    }
    Ok(())
}

/// The member at a leaf of our tree ([`admitted`]).
fn leaf_member(group: &MlsGroup, index: LeafNodeIndex, naming: Naming<'_>) -> Option<VerifiedMember> {
    admitted(&group.member_at(index)?, naming).ok()
}

/// Future epochs are an error (we missed commits); past-epoch handshakes are ignored.
fn check_epoch(group: &MlsGroup, protocol: &ProtocolMessage) -> Result<Option<Incoming>, MlsError> {
    let group_epoch = group.epoch().as_u64();
    let message_epoch = protocol.epoch().as_u64();
    if message_epoch > group_epoch {
        return Err(MlsError::FutureEpoch { message_epoch, group_epoch });
    }
    if message_epoch < group_epoch && protocol.is_handshake_message() {
        return Ok(Some(Incoming::Ignored { reason: format!("handshake message for past epoch {message_epoch}") }));
    }
    Ok(None)
}

fn parse_message(bytes: &[u8]) -> Result<MlsMessageIn, MlsError> {
    MlsMessageIn::tls_deserialize_exact_bytes(bytes)
        .map_err(|err| MlsError::Malformed { what: "MlsMessage", reason: err.to_string() })
}

fn process_error(operation: &'static str, group: &MlsGroup, err: ProcessMessageError<rusqlite::Error>) -> MlsError {
    match err {
        ProcessMessageError::LibraryError(err) => MlsError::library(operation, &err),
        ProcessMessageError::StorageError(err) => MlsError::storage(operation, err),
        ProcessMessageError::ValidationError(err) => MlsError::validation(operation, &err),
        ProcessMessageError::GroupStateError(err) => MlsError::state(operation, group.group_id(), &err),
        other => MlsError::invalid_message(operation, other),
    }
}

fn welcome_error(operation: &'static str, err: WelcomeError<rusqlite::Error>) -> MlsError {
    match err {
        WelcomeError::StorageError(err) => MlsError::storage(operation, err),
        WelcomeError::LibraryError(err) => MlsError::library(operation, &err),
        WelcomeError::GroupAlreadyExists => {
            MlsError::InvalidState { operation, reason: "group already exists".to_owned() }
        }
        other => MlsError::invalid_message(operation, other),
    }
}
