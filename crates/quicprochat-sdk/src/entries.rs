//! Processing one queue entry against the local state, without the
//! server: joining from a Welcome (checked against the commit the server
//! sequenced, see [`Local::verify_join`]), following a group we are
//! leaving, decrypting and storing application messages, merging commits
//! and storing proposals. The caller (`sync`) fetches, advances the cursor
//! and acknowledges; what needs the server afterwards comes back as an
//! [`EntryEffect`].

use quicprochat_core::Incoming;
use quicprochat_proto::v1::{self, EntryKind};

use crate::client::Local;
use crate::content::Content;
use crate::direct::short_id;
use crate::local_store::IncomingRecord;
use crate::{now_ms, SdkError};

/// What processing an entry asks of the caller.
pub(crate) enum EntryEffect {
    None,
    Joined,
    Leaving(String),
    /// A commit in a group we are leaving did not remove us.
    StillLeaving,
    /// A commit for our epoch that MLS refuses broke the group (see `fork`).
    Forked,
}

impl Local {
    /// Processes one queue entry as `recv` does: [`Local::process_entry`],
    /// and on failure the fork check ([`Local::note_fork`]). An error is an
    /// entry to skip.
    pub(crate) fn take_entry(&self, entry: &v1::QueueEntry) -> Result<EntryEffect, SdkError> {
        let error = match self.process_entry(entry) {
            Ok(effect) => return Ok(effect),
            Err(error) => error,
        };
        match self.note_fork(entry, &error) {
            Ok(Some(_culprit)) => Ok(EntryEffect::Forked),
            Ok(None) => Err(error),
            Err(noting) => {
                tracing::warn!(seq = entry.seq, %noting, "cannot record a fork");
                Err(error)
            }
        }
    }

    /// Processes one queue entry (see the module doc).
    fn process_entry(&self, entry: &v1::QueueEntry) -> Result<EntryEffect, SdkError> {
        let group_id = entry.group_id.as_ref();
        let kind = EntryKind::try_from(entry.kind).unwrap_or(EntryKind::Application);
        if kind == EntryKind::Welcome {
            return self.join(entry);
        }
        if kind == EntryKind::DeliveryFailed {
            // Our server's word that the group's hub refused our message:
            // at worst a lying server marks our own message failed.
            let reason = format!("the group's server refused it ({})", String::from_utf8_lossy(&entry.payload));
            if self.store.relayed_message_refused(&self.username, &entry.message_id, group_id, &reason)? {
                tracing::warn!(group = %short_id(group_id), %reason, "a message we sent was not delivered");
            }
            return Ok(EntryEffect::None);
        }
        let shown = match self.store.conversation(group_id)? {
            Some(conversation) if conversation.active => true,
            Some(_) if self.store.leaving_epoch(group_id)?.is_some() => false,
            _ => return Ok(EntryEffect::None),
        };
        if !self.mls.has_group(group_id)? {
            return Ok(EntryEffect::None);
        }
        if !shown {
            return self.process_while_leaving(entry);
        }
        if let Some(joined_epoch) = self.store.unverified_join(group_id)? {
            return self.verify_join(entry, joined_epoch);
        }
        match self.mls.process_incoming_checked(group_id, &entry.payload, &|member| self.check_member(member))? {
            Incoming::Application { sender, device, plaintext, .. } => {
                let content = Content::decode(&plaintext)
                    .map_err(|error| SdkError::InvalidInput(format!("message from {sender}: {error}")))?;
                self.store.insert_incoming(&IncomingRecord {
                    sender: &sender,
                    sender_device: device.as_ref().map(|device| device.as_bytes().as_slice()),
                    message_id: &content.id_bytes(),
                    group_id,
                    text: &content.text,
                    sent_at_ms: content.sent_at,
                    received_at_ms: now_ms(),
                })?;
                Ok(EntryEffect::None)
            }
            Incoming::CommitMerged { removed_self: true, .. } => {
                self.store.deactivate(group_id)?;
                Ok(EntryEffect::None)
            }
            Incoming::ProposalStored { sender } => Ok(EntryEffect::Leaving(sender)),
            Incoming::CommitMerged { .. } => {
                self.recheck_direct(group_id)?;
                // Merged already: a pin that cannot be written is not the entry's fault.
                if let Err(error) = self.pin_roster(group_id) {
                    tracing::warn!(%error, "a roster's account keys were not pinned");
                }
                Ok(EntryEffect::None)
            }
            Incoming::Ignored { reason } => {
                tracing::debug!(seq = entry.seq, %reason, "ignored a group message");
                Ok(EntryEffect::None)
            }
        }
    }

    /// An entry of a group we are leaving: its commits are processed (to
    /// notice our removal, or that a commit left our leave out), nothing
    /// in it is shown any more.
    fn process_while_leaving(&self, entry: &v1::QueueEntry) -> Result<EntryEffect, SdkError> {
        let group_id = entry.group_id.as_ref();
        match self.mls.process_incoming_checked(group_id, &entry.payload, &|member| self.check_member(member))? {
            Incoming::CommitMerged { removed_self: true, .. } => {
                self.store.stop_leaving(group_id)?;
                Ok(EntryEffect::None)
            }
            Incoming::CommitMerged { .. } => Ok(EntryEffect::StillLeaving),
            _ => Ok(EntryEffect::None),
        }
    }

    /// Joins the group of a Welcome entry. The Welcome must be for the
    /// group the server queued it under; one for another group is dropped
    /// at once (a member could otherwise show us a group the server does
    /// not deliver, or one we hold under another name).
    fn join(&self, entry: &v1::QueueEntry) -> Result<EntryEffect, SdkError> {
        let (joined, _sender) =
            self.mls.join_from_welcome_checked(&entry.payload, &|member| self.check_member(member))?;
        if joined != entry.group_id.as_ref() {
            self.mls.delete_group(&joined)?;
            return Err(SdkError::Refused(format!(
                "a Welcome queued for group {} is for group {}",
                short_id(&entry.group_id),
                short_id(&joined)
            )));
        }
        self.pin_roster(&joined)?;
        // Whoever added us may have found another device of ours without a
        // key package: the next open adds what is missing.
        self.reconcile_at_next_open()?;
        let conversation = self.record_joined(entry, &joined)?;
        self.store.mark_unverified(&conversation.group_id, self.mls.epoch(&joined)?)?;
        Ok(EntryEffect::Joined)
    }

    /// The entry after a Welcome in our queue is the commit that added us,
    /// as the server sequenced it for every member: its confirmation tag
    /// must be the one of the epoch we joined. A Welcome whose group state
    /// differs from the group the server holds (another tree, other
    /// members) cannot have it; such a group is dropped before anything
    /// in it is shown. Until the check, nothing else of the group is taken.
    fn verify_join(&self, entry: &v1::QueueEntry, joined_epoch: u64) -> Result<EntryEffect, SdkError> {
        let group_id = entry.group_id.as_ref();
        let is_commit = EntryKind::try_from(entry.kind) == Ok(EntryKind::Commit);
        let header =
            quicprochat_core::ds::inspect_handshake(&entry.payload, quicprochat_core::ds::HandshakeKind::Commit);
        let adding = match header {
            Ok(header) if is_commit && header.epoch.checked_add(1) == Some(joined_epoch) => header,
            _ => {
                tracing::warn!(seq = entry.seq, "ignoring an entry of a group joined but not yet checked");
                return Ok(EntryEffect::None);
            }
        };
        let ours = self.mls.confirmation_tag(group_id)?;
        if adding.confirmation_tag.as_deref() == Some(ours.as_slice()) {
            self.store.clear_unverified(group_id)?;
            return Ok(EntryEffect::None);
        }
        self.store.clear_unverified(group_id)?;
        self.store.deactivate(group_id)?;
        self.mls.delete_group(group_id)?;
        Err(SdkError::Refused(format!(
            "the Welcome to group {} from {} does not match the group the server holds; it was dropped",
            short_id(group_id),
            entry.sender
        )))
    }
}
