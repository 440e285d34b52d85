//! Receiving: fetch the server queue from the stored cursor, process every
//! entry (Welcomes, commits, proposals, application messages), store the
//! results, advance the cursor durably, and only then acknowledge.
//!
//! A message delivered twice is shown once: the local store is keyed by
//! (sender, message id). A broken entry is logged and skipped, never allowed
//! to block the queue.

use std::collections::BTreeMap;
use std::time::Duration;

use quicprochat_core::Incoming;
use quicprochat_proto::v1::{self, EntryKind, GroupKind};
use quicprochat_proto::Method;

use crate::client::{Inner, QpcClient};
use crate::content::Content;
use crate::local_store::{IncomingRecord, StoredMessage};
use crate::{now_ms, SdkError};

const CURSOR_KEY: &str = "delivery_cursor";
const FETCH_LIMIT: u32 = 200;

/// Whether a fetch of `count` entries from `cursor`, the last with seq
/// `last_seq`, reached the end of a queue whose head is `head_seq`. The
/// server also stops at a byte budget, so a short answer is the end only
/// when it reached the head; an answer that moved nothing forward ends the
/// loop too, whatever the server claims.
fn caught_up(count: usize, cursor: u64, last_seq: u64, head_seq: u64) -> bool {
    count == 0 || last_seq <= cursor || (count < FETCH_LIMIT as usize && last_seq >= head_seq)
}

impl QpcClient {
    /// Fetches and processes everything waiting on the server and returns
    /// the messages not shown before (oldest first), marking them shown.
    pub async fn receive(&self) -> Result<Vec<StoredMessage>, SdkError> {
        let mut inner = self.inner.lock().await;
        inner.sync_and_settle().await?;
        Ok(inner.store.take_unshown()?)
    }

    /// Fetches and processes everything waiting on the server (joins,
    /// membership changes, messages) without marking messages as shown.
    pub async fn sync(&self) -> Result<(), SdkError> {
        self.inner.lock().await.sync_and_settle().await
    }

    /// Like [`QpcClient::receive`], but if nothing is waiting, waits up to
    /// `wait` for the server to push something. Survives reconnects: while
    /// the connection is down it waits for the driver to restore it.
    pub async fn receive_wait(&self, wait: Duration) -> Result<Vec<StoredMessage>, SdkError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut status = self.status.clone();
        loop {
            match self.receive().await {
                Ok(messages) if !messages.is_empty() => return Ok(messages),
                Ok(_) => {}
                Err(error) if error.is_retryable() => {
                    // Connection trouble: wait for the driver to report a change.
                    tracing::debug!(%error, "receive failed; waiting for the connection");
                    if tokio::time::timeout_at(deadline, status.changed()).await.is_err() {
                        return Ok(Vec::new());
                    }
                    continue;
                }
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            // Take the push stream out so other operations are not blocked while we wait.
            let existing = self.inner.lock().await.push.take();
            let mut push = match existing {
                Some(push) => push,
                None => match self.subscribe(deadline).await {
                    Ok(Some(push)) => push,
                    Ok(None) => return Ok(Vec::new()),
                    Err(error) if error.is_retryable() => continue,
                    Err(error) => return Err(error),
                },
            };
            match tokio::time::timeout_at(deadline, push.next()).await {
                Err(_elapsed) => {
                    self.inner.lock().await.push = Some(push);
                    return Ok(Vec::new());
                }
                Ok(Ok(Some(_event))) => self.inner.lock().await.push = Some(push),
                // The push stream ended or broke: subscribe again next round
                // (on a new connection if the driver had to reconnect).
                Ok(Ok(None)) | Ok(Err(_)) => {}
            }
        }
    }
}

impl QpcClient {
    /// Subscribes and waits (until `deadline`, without holding the client's
    /// lock) for the server to open the push stream. `None` at the deadline.
    async fn subscribe(&self, deadline: tokio::time::Instant) -> Result<Option<quicprochat_rpc::PushStream>, SdkError> {
        let (rpc, after_seq) = {
            let inner = self.inner.lock().await;
            (inner.rpc(), inner.store.meta(CURSOR_KEY)?)
        };
        let _: v1::SubscribeResponse = rpc.call(Method::Subscribe, &v1::SubscribeRequest { after_seq }).await?;
        match tokio::time::timeout_at(deadline, rpc.accept_push()).await {
            Ok(push) => Ok(Some(push?)),
            Err(_elapsed) => Ok(None),
        }
    }
}

impl Inner {
    /// Syncs, then commits pending proposals (members leaving) in groups
    /// where we are the member designated to do it.
    pub(crate) async fn sync_and_settle(&mut self) -> Result<(), SdkError> {
        let leavers = self.sync().await?;
        // Whatever is still queued goes out now that the server answers.
        if let Err(error) = self.flush_outbox().await {
            tracing::debug!(%error, "outbox not flushed");
        }
        for (group_id, leaving) in leavers {
            let Some(conversation) = self.store.conversation(&group_id)? else { continue };
            if !conversation.active || !self.mls.is_active(&group_id)? {
                continue;
            }
            // The first remaining member (by name) commits, so members do not race.
            let members = self.mls.members(&group_id)?;
            let committer = members.iter().find(|member| !leaving.contains(member));
            if committer != Some(&self.username) {
                continue;
            }
            let result =
                self.submit_commit_with_retry(&conversation, |mls| mls.commit_pending_proposals(&group_id)).await;
            if let Err(error) = result {
                tracing::warn!(group = %conversation.display_name(), %error, "could not commit a member's leave");
            }
        }
        Ok(())
    }

    /// Fetches and processes the queue until it is empty. Returns, per
    /// group, the members whose leave proposals arrived.
    pub(crate) async fn sync(&mut self) -> Result<BTreeMap<Vec<u8>, Vec<String>>, SdkError> {
        let mut leavers: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        let mut welcomed = false;
        loop {
            let cursor = self.store.meta(CURSOR_KEY)?;
            let request = v1::FetchRequest { after_seq: cursor, limit: FETCH_LIMIT };
            let response: v1::FetchResponse = self.rpc().call(Method::Fetch, &request).await?;
            let count = response.entries.len();
            let head_seq = response.head_seq;
            let mut last_seq = cursor;
            for entry in response.entries {
                if entry.seq <= last_seq {
                    continue;
                }
                last_seq = entry.seq;
                match self.process_entry(&entry) {
                    Ok(EntryEffect::Leaving(user)) => leavers.entry(entry.group_id.to_vec()).or_default().push(user),
                    Ok(EntryEffect::Joined) => welcomed = true,
                    Ok(EntryEffect::None) => {}
                    Err(error) => tracing::warn!(seq = entry.seq, %error, "skipping an entry that cannot be processed"),
                }
            }
            if last_seq > cursor {
                // Durable locally first, then acknowledged: nothing acknowledged is lost.
                self.store.set_meta(CURSOR_KEY, last_seq)?;
                let _: v1::AckResponse = self.rpc().call(Method::Ack, &v1::AckRequest { up_to_seq: last_seq }).await?;
            }
            if caught_up(count, cursor, last_seq, head_seq) {
                break;
            }
        }
        if welcomed {
            self.check_key_package_stock().await?;
        }
        Ok(leavers)
    }

    fn process_entry(&mut self, entry: &v1::QueueEntry) -> Result<EntryEffect, SdkError> {
        let group_id = entry.group_id.as_ref();
        let kind = EntryKind::try_from(entry.kind).unwrap_or(EntryKind::Application);
        if kind == EntryKind::Welcome {
            let joined = self.mls.join_from_welcome(&entry.payload)?;
            let peer =
                (entry.group_kind == GroupKind::Direct as i32).then(|| direct_peer(&entry.group_name, &self.username));
            let name = self.unique_name(&entry.group_name, &joined)?;
            self.store.add_conversation(&joined, &name, peer.flatten().as_deref(), now_ms())?;
            return Ok(EntryEffect::Joined);
        }
        match self.store.conversation(group_id)? {
            Some(conversation) if conversation.active && self.mls.has_group(group_id)? => {}
            _ => return Ok(EntryEffect::None),
        }
        match self.mls.process_incoming(group_id, &entry.payload)? {
            Incoming::Application { sender, plaintext, .. } => {
                let content = Content::decode(&plaintext)
                    .map_err(|error| SdkError::InvalidInput(format!("message from {sender}: {error}")))?;
                self.store.insert_incoming(&IncomingRecord {
                    sender: &sender,
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
            Incoming::CommitMerged { .. } => Ok(EntryEffect::None),
            Incoming::Ignored { reason } => {
                tracing::debug!(seq = entry.seq, %reason, "ignored a group message");
                Ok(EntryEffect::None)
            }
        }
    }

    /// Keeps the shared group name, unless we already have an active group of
    /// that name from someone else: then a short id suffix tells them apart.
    fn unique_name(&self, name: &str, group_id: &[u8]) -> Result<String, SdkError> {
        match self.store.find_active(name)? {
            Some(existing) if existing.group_id != group_id && !name.starts_with("dm:") => {
                Ok(format!("{name}#{}", &hex::encode(group_id)[..6]))
            }
            _ => Ok(name.to_owned()),
        }
    }
}

enum EntryEffect {
    None,
    Joined,
    Leaving(String),
}

/// The other member of a direct conversation named `dm:a:b`.
fn direct_peer(name: &str, me: &str) -> Option<String> {
    let mut parts = name.strip_prefix("dm:")?.splitn(2, ':');
    let (first, second) = (parts.next()?, parts.next()?);
    Some(if first == me { second } else { first }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{caught_up, direct_peer, FETCH_LIMIT};

    #[test]
    fn a_short_answer_below_the_head_is_not_the_end() {
        // A full page: fetch again.
        assert!(!caught_up(FETCH_LIMIT as usize, 0, 200, 200));
        // Short because of the server's byte budget: fetch again.
        assert!(!caught_up(3, 10, 13, 40));
        // Short and at the head: done.
        assert!(caught_up(3, 10, 13, 13));
        // Empty (entries past the cursor expired): done.
        assert!(caught_up(0, 10, 10, 40));
        // Nothing moved forward (a confused server): done rather than loop.
        assert!(caught_up(5, 10, 10, 40));
    }

    #[test]
    fn direct_peer_is_the_other_side() {
        assert_eq!(direct_peer("dm:alice:bob", "alice").as_deref(), Some("bob"));
        assert_eq!(direct_peer("dm:alice:bob", "bob").as_deref(), Some("alice"));
        assert_eq!(direct_peer("team", "bob"), None);
    }
}
