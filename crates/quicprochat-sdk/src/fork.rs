//! A group the server keeps but its members cannot follow (security review
//! F5): the server accepted a commit for our current epoch that MLS
//! refuses here (a flipped confirmation or membership tag, path secrets
//! that decrypt for no one, a PSK no one has). The server cannot check
//! those, so it sequences the group past a state nobody honest shares;
//! retrying commits against it only loses the epoch again.
//!
//! What this client does (design in ARCHITECTURE.md, "Forked groups"):
//! - **Detect**: a commit for our epoch that fails with a peer error marks
//!   the group broken, naming the member the commit says sent it.
//! - **Stop**: sends and commits in it fail at once with
//!   [`SdkError::GroupBroken`], which names the culprit and the rebuilder.
//! - **Rebuild**: the first member by name of the last roster we share,
//!   the culprit excepted, creates a new group of the same name with
//!   everyone else of that roster, and retires the broken one.
//! - **Recognise**: a Welcome to a group whose MLS roster is ours, within
//!   the broken group's roster and without its culprit, replaces it under
//!   its name (any member of the old roster can send that Welcome; the
//!   culprit cannot, since it is not in the new roster).

use quicprochat_core::ds::{inspect_handshake, HandshakeKind};
use quicprochat_proto::v1::{self, EntryKind};

use crate::client::{Inner, Local};
use crate::local_store::{Broken, Conversation};
use crate::SdkError;

impl Local {
    /// After `entry` failed with `error`: whether it forked the group (a
    /// commit for our current epoch that MLS refuses). If so the group is
    /// marked broken and the culprit returned.
    pub(crate) fn note_fork(&self, entry: &v1::QueueEntry, error: &SdkError) -> Result<Option<String>, SdkError> {
        let SdkError::Mls(mls_error) = error else { return Ok(None) };
        if !mls_error.is_peer_error() || EntryKind::try_from(entry.kind) != Ok(EntryKind::Commit) {
            return Ok(None);
        }
        let group_id = entry.group_id.as_ref();
        let Ok(header) = inspect_handshake(&entry.payload, HandshakeKind::Commit) else { return Ok(None) };
        let active = self.store.conversation(group_id)?.is_some_and(|conversation| conversation.active);
        if !active || header.group_id != group_id || header.epoch != self.mls.epoch(group_id)? {
            return Ok(None);
        }
        // The member at the leaf the commit names, in our own tree (its
        // signature may not verify: a server could name someone else, as
        // it could drop their messages). Never the server's `sender` field:
        // a commit from a leaf we hold no member at is no member's.
        let Some(culprit) = self.mls.member_at(group_id, header.sender_leaf)? else { return Ok(None) };
        self.store.mark_broken(group_id, header.epoch, &culprit, &error.to_string())?;
        tracing::warn!(
            group = %hex::encode(group_id),
            epoch = header.epoch,
            %culprit,
            %error,
            "the server accepted a commit this device cannot process: the group is broken"
        );
        Ok(Some(culprit))
    }

    /// The member who rebuilds a broken group: the first by name of its
    /// last roster we share, the culprit excepted.
    fn rebuilder(&self, group_id: &[u8], broken: &Broken) -> Result<Option<String>, SdkError> {
        Ok(self.mls.members(group_id)?.into_iter().find(|member| *member != broken.culprit))
    }

    /// Whether this device has the lowest device id of our account's leaves
    /// in the group: of several devices of the rebuilding account, that one
    /// rebuilds (each of them saw the group break).
    fn first_of_our_devices_in(&self, group_id: &[u8]) -> Result<bool, SdkError> {
        let lowest = self.mls.devices_of(group_id, &self.username)?.into_iter().min();
        Ok(lowest.is_none_or(|lowest| lowest == self.mls.device_id()))
    }

    /// Fails with [`SdkError::GroupBroken`] if `conversation` is broken.
    pub(crate) fn refuse_if_broken(&self, conversation: &Conversation) -> Result<(), SdkError> {
        let Some(broken) = self.store.broken(&conversation.group_id)? else { return Ok(()) };
        let rebuilder = match self.rebuilder(&conversation.group_id, &broken)? {
            Some(member) if member == self.username => "you".to_owned(),
            Some(member) => member,
            None => "nobody".to_owned(),
        };
        Err(SdkError::GroupBroken {
            group: conversation.display_name(),
            culprit: broken.culprit,
            epoch: broken.epoch,
            reason: broken.reason,
            rebuilder,
        })
    }

    /// The broken conversation a group just joined (`group_id`, named
    /// `server_name` by the server) replaces, if any: its roster holds us,
    /// lies within the broken group's last roster, and leaves out the culprit.
    pub(crate) fn replaced_by(&self, group_id: &[u8], server_name: &str) -> Result<Option<Conversation>, SdkError> {
        let joined = self.mls.members(group_id)?;
        if !joined.contains(&self.username) {
            return Ok(None);
        }
        let mut found: Option<Conversation> = None;
        for (old_id, broken) in self.store.broken_groups()? {
            let Some(old) = self.store.conversation(&old_id)? else { continue };
            if !old.active || old.peer.is_some() || joined.contains(&broken.culprit) {
                continue;
            }
            let roster = self.mls.members(&old_id)?;
            if !joined.iter().all(|member| roster.contains(member)) {
                continue;
            }
            // The server's name only chooses among several candidates.
            if found.is_none() || old.name == server_name {
                found = Some(old);
            }
        }
        Ok(found)
    }
}

impl Inner {
    /// Rebuilds every broken group this client is the rebuilder of (also
    /// one whose rebuild an earlier run did not finish).
    pub(crate) async fn rebuild_broken(&mut self) -> Result<(), SdkError> {
        for (group_id, broken) in self.store.broken_groups()? {
            let Some(conversation) = self.store.conversation(&group_id)? else { continue };
            if !conversation.active || self.rebuilder(&group_id, &broken)?.as_deref() != Some(&self.username) {
                continue;
            }
            if !self.first_of_our_devices_in(&group_id)? {
                // Another device of ours rebuilds it; we join at our next open.
                continue;
            }
            if let Err(error) = self.rebuild(&conversation, &broken).await {
                tracing::warn!(group = %conversation.display_name(), %error, "could not rebuild a broken group");
            }
        }
        Ok(())
    }

    /// A new group of the broken one's name with every member of its last
    /// shared roster but the culprit; the broken one is retired. A direct
    /// conversation broken by its peer has nobody left to rebuild with.
    async fn rebuild(&mut self, broken_group: &Conversation, broken: &Broken) -> Result<(), SdkError> {
        let others: Vec<String> = self
            .mls
            .members(&broken_group.group_id)?
            .into_iter()
            .filter(|member| *member != broken.culprit && *member != self.username)
            .collect();
        if broken_group.peer.is_some() || others.is_empty() {
            self.store.retire_broken(&broken_group.group_id)?;
            return Ok(());
        }
        let rebuilt = self.create_group(&broken_group.name, v1::GroupKind::Named, None).await?;
        self.store.retire_broken(&broken_group.group_id)?;
        let mut packages = Vec::with_capacity(others.len());
        for user in &others {
            match self.fetch_key_packages(user, None).await {
                Ok(fetched) => packages.extend(fetched),
                Err(error) => tracing::warn!(%user, %error, "cannot add a member to the rebuilt group"),
            }
        }
        if !packages.is_empty() {
            let group_id = rebuilt.group_id.clone();
            self.submit_commit_with_retry(&rebuilt, |mls| mls.add_members(&group_id, &packages).map(Some)).await?;
        }
        // Our other devices join it at the next open (not from here: adding
        // them commits, and a commit may sync, which may rebuild).
        self.reconcile_at_next_open()?;
        tracing::info!(group = %broken_group.name, culprit = %broken.culprit, "rebuilt a broken group");
        Ok(())
    }
}
