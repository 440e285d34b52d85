//! OpenMLS storage on the shared state database: every method of
//! `StorageProvider` forwarded to `openmls_sqlite_storage` (JSON codec) on
//! the connection of a [`StateDb`], taken for that one call. The SDK's local
//! store writes through the same connection, so a batch's transaction
//! covers both ([`super::MlsClient::batch`]).
//!
//! The forwarding methods are the trait's declarations (openmls_traits
//! 0.6) with a body each; a method missing after an upgrade fails to build.

use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::{traits, StorageProvider, CURRENT_VERSION as V};
use rusqlite::Connection;

use super::provider::JsonCodec;
use super::state_db::StateDb;

/// OpenMLS's storage on a [`StateDb`].
#[derive(Clone, Debug)]
pub(crate) struct SharedStorage {
    db: StateDb,
}

impl SharedStorage {
    pub(crate) fn new(db: StateDb) -> SharedStorage {
        SharedStorage { db }
    }

    pub(crate) fn db(&self) -> &StateDb {
        &self.db
    }

    /// Runs `call` on the stock SQLite storage over the shared connection.
    fn with<T>(&self, call: impl FnOnce(&SqliteStorageProvider<JsonCodec, &Connection>) -> T) -> T {
        crate::crash_point::crash_point("mls_storage_call");
        let connection = self.db.lock();
        call(&SqliteStorageProvider::new(&*connection))
    }
}

impl StorageProvider<V> for SharedStorage {
    type Error = rusqlite::Error;

    fn write_mls_join_config<GroupId: traits::GroupId<V>, MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>>(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_mls_join_config::<GroupId, MlsGroupJoinConfig>(group_id, config))
    }

    fn append_own_leaf_node<GroupId: traits::GroupId<V>, LeafNode: traits::LeafNode<V>>(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.append_own_leaf_node::<GroupId, LeafNode>(group_id, leaf_node))
    }

    fn queue_proposal<
        GroupId: traits::GroupId<V>,
        ProposalRef: traits::ProposalRef<V>,
        QueuedProposal: traits::QueuedProposal<V>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.queue_proposal::<GroupId, ProposalRef, QueuedProposal>(group_id, proposal_ref, proposal)
        })
    }

    fn write_tree<GroupId: traits::GroupId<V>, TreeSync: traits::TreeSync<V>>(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_tree::<GroupId, TreeSync>(group_id, tree))
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<V>,
        InterimTranscriptHash: traits::InterimTranscriptHash<V>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.write_interim_transcript_hash::<GroupId, InterimTranscriptHash>(group_id, interim_transcript_hash)
        })
    }

    fn write_context<GroupId: traits::GroupId<V>, GroupContext: traits::GroupContext<V>>(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_context::<GroupId, GroupContext>(group_id, group_context))
    }

    fn write_confirmation_tag<GroupId: traits::GroupId<V>, ConfirmationTag: traits::ConfirmationTag<V>>(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_confirmation_tag::<GroupId, ConfirmationTag>(group_id, confirmation_tag))
    }

    fn write_group_state<GroupState: traits::GroupState<V>, GroupId: traits::GroupId<V>>(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_group_state::<GroupState, GroupId>(group_id, group_state))
    }

    fn write_message_secrets<GroupId: traits::GroupId<V>, MessageSecrets: traits::MessageSecrets<V>>(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_message_secrets::<GroupId, MessageSecrets>(group_id, message_secrets))
    }

    fn write_resumption_psk_store<GroupId: traits::GroupId<V>, ResumptionPskStore: traits::ResumptionPskStore<V>>(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.write_resumption_psk_store::<GroupId, ResumptionPskStore>(group_id, resumption_psk_store)
        })
    }

    fn write_own_leaf_index<GroupId: traits::GroupId<V>, LeafNodeIndex: traits::LeafNodeIndex<V>>(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_own_leaf_index::<GroupId, LeafNodeIndex>(group_id, own_leaf_index))
    }

    fn write_group_epoch_secrets<GroupId: traits::GroupId<V>, GroupEpochSecrets: traits::GroupEpochSecrets<V>>(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.write_group_epoch_secrets::<GroupId, GroupEpochSecrets>(group_id, group_epoch_secrets)
        })
    }

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<V>,
        SignatureKeyPair: traits::SignatureKeyPair<V>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.write_signature_key_pair::<SignaturePublicKey, SignatureKeyPair>(public_key, signature_key_pair)
        })
    }

    fn write_encryption_key_pair<EncryptionKey: traits::EncryptionKey<V>, HpkeKeyPair: traits::HpkeKeyPair<V>>(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_encryption_key_pair::<EncryptionKey, HpkeKeyPair>(public_key, key_pair))
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<V>,
        EpochKey: traits::EpochKey<V>,
        HpkeKeyPair: traits::HpkeKeyPair<V>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), Self::Error> {
        self.with(|storage| {
            storage.write_encryption_epoch_key_pairs::<GroupId, EpochKey, HpkeKeyPair>(
                group_id, epoch, leaf_index, key_pairs,
            )
        })
    }

    fn write_key_package<HashReference: traits::HashReference<V>, KeyPackage: traits::KeyPackage<V>>(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_key_package::<HashReference, KeyPackage>(hash_ref, key_package))
    }

    fn write_psk<PskId: traits::PskId<V>, PskBundle: traits::PskBundle<V>>(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.write_psk::<PskId, PskBundle>(psk_id, psk))
    }

    fn mls_group_join_config<GroupId: traits::GroupId<V>, MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MlsGroupJoinConfig>, Self::Error> {
        self.with(|storage| storage.mls_group_join_config::<GroupId, MlsGroupJoinConfig>(group_id))
    }

    fn own_leaf_nodes<GroupId: traits::GroupId<V>, LeafNode: traits::LeafNode<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, Self::Error> {
        self.with(|storage| storage.own_leaf_nodes::<GroupId, LeafNode>(group_id))
    }

    fn queued_proposal_refs<GroupId: traits::GroupId<V>, ProposalRef: traits::ProposalRef<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, Self::Error> {
        self.with(|storage| storage.queued_proposal_refs::<GroupId, ProposalRef>(group_id))
    }

    fn queued_proposals<
        GroupId: traits::GroupId<V>,
        ProposalRef: traits::ProposalRef<V>,
        QueuedProposal: traits::QueuedProposal<V>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, Self::Error> {
        self.with(|storage| storage.queued_proposals::<GroupId, ProposalRef, QueuedProposal>(group_id))
    }

    fn tree<GroupId: traits::GroupId<V>, TreeSync: traits::TreeSync<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, Self::Error> {
        self.with(|storage| storage.tree::<GroupId, TreeSync>(group_id))
    }

    fn group_context<GroupId: traits::GroupId<V>, GroupContext: traits::GroupContext<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, Self::Error> {
        self.with(|storage| storage.group_context::<GroupId, GroupContext>(group_id))
    }

    fn interim_transcript_hash<GroupId: traits::GroupId<V>, InterimTranscriptHash: traits::InterimTranscriptHash<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, Self::Error> {
        self.with(|storage| storage.interim_transcript_hash::<GroupId, InterimTranscriptHash>(group_id))
    }

    fn confirmation_tag<GroupId: traits::GroupId<V>, ConfirmationTag: traits::ConfirmationTag<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, Self::Error> {
        self.with(|storage| storage.confirmation_tag::<GroupId, ConfirmationTag>(group_id))
    }

    fn group_state<GroupState: traits::GroupState<V>, GroupId: traits::GroupId<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, Self::Error> {
        self.with(|storage| storage.group_state::<GroupState, GroupId>(group_id))
    }

    fn message_secrets<GroupId: traits::GroupId<V>, MessageSecrets: traits::MessageSecrets<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, Self::Error> {
        self.with(|storage| storage.message_secrets::<GroupId, MessageSecrets>(group_id))
    }

    fn resumption_psk_store<GroupId: traits::GroupId<V>, ResumptionPskStore: traits::ResumptionPskStore<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ResumptionPskStore>, Self::Error> {
        self.with(|storage| storage.resumption_psk_store::<GroupId, ResumptionPskStore>(group_id))
    }

    fn own_leaf_index<GroupId: traits::GroupId<V>, LeafNodeIndex: traits::LeafNodeIndex<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<LeafNodeIndex>, Self::Error> {
        self.with(|storage| storage.own_leaf_index::<GroupId, LeafNodeIndex>(group_id))
    }

    fn group_epoch_secrets<GroupId: traits::GroupId<V>, GroupEpochSecrets: traits::GroupEpochSecrets<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupEpochSecrets>, Self::Error> {
        self.with(|storage| storage.group_epoch_secrets::<GroupId, GroupEpochSecrets>(group_id))
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<V>,
        SignatureKeyPair: traits::SignatureKeyPair<V>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, Self::Error> {
        self.with(|storage| storage.signature_key_pair::<SignaturePublicKey, SignatureKeyPair>(public_key))
    }

    fn encryption_key_pair<HpkeKeyPair: traits::HpkeKeyPair<V>, EncryptionKey: traits::EncryptionKey<V>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, Self::Error> {
        self.with(|storage| storage.encryption_key_pair::<HpkeKeyPair, EncryptionKey>(public_key))
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<V>,
        EpochKey: traits::EpochKey<V>,
        HpkeKeyPair: traits::HpkeKeyPair<V>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, Self::Error> {
        self.with(|storage| {
            storage.encryption_epoch_key_pairs::<GroupId, EpochKey, HpkeKeyPair>(group_id, epoch, leaf_index)
        })
    }

    fn key_package<KeyPackageRef: traits::HashReference<V>, KeyPackage: traits::KeyPackage<V>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, Self::Error> {
        self.with(|storage| storage.key_package::<KeyPackageRef, KeyPackage>(hash_ref))
    }

    fn psk<PskBundle: traits::PskBundle<V>, PskId: traits::PskId<V>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, Self::Error> {
        self.with(|storage| storage.psk::<PskBundle, PskId>(psk_id))
    }

    fn remove_proposal<GroupId: traits::GroupId<V>, ProposalRef: traits::ProposalRef<V>>(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.remove_proposal::<GroupId, ProposalRef>(group_id, proposal_ref))
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_own_leaf_nodes::<GroupId>(group_id))
    }

    fn delete_group_config<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_group_config::<GroupId>(group_id))
    }

    fn delete_tree<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_tree::<GroupId>(group_id))
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_confirmation_tag::<GroupId>(group_id))
    }

    fn delete_group_state<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_group_state::<GroupId>(group_id))
    }

    fn delete_context<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_context::<GroupId>(group_id))
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_interim_transcript_hash::<GroupId>(group_id))
    }

    fn delete_message_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_message_secrets::<GroupId>(group_id))
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_all_resumption_psk_secrets::<GroupId>(group_id))
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_own_leaf_index::<GroupId>(group_id))
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_group_epoch_secrets::<GroupId>(group_id))
    }

    fn clear_proposal_queue<GroupId: traits::GroupId<V>, ProposalRef: traits::ProposalRef<V>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.clear_proposal_queue::<GroupId, ProposalRef>(group_id))
    }

    fn delete_signature_key_pair<SignaturePublicKey: traits::SignaturePublicKey<V>>(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_signature_key_pair::<SignaturePublicKey>(public_key))
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<V>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_encryption_key_pair::<EncryptionKey>(public_key))
    }

    fn delete_encryption_epoch_key_pairs<GroupId: traits::GroupId<V>, EpochKey: traits::EpochKey<V>>(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_encryption_epoch_key_pairs::<GroupId, EpochKey>(group_id, epoch, leaf_index))
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<V>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_key_package::<KeyPackageRef>(hash_ref))
    }

    fn delete_psk<PskKey: traits::PskId<V>>(&self, psk_id: &PskKey) -> Result<(), Self::Error> {
        self.with(|storage| storage.delete_psk::<PskKey>(psk_id))
    }
}
