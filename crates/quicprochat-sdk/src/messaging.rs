//! Sending and history.
//!
//! A send is written to the local store and the outbox (`crate::outbox`) as
//! pending before it leaves, then marked sent when the server acknowledged it
//! durably, or failed (with the reason) when the server refused it for good;
//! otherwise it stays queued and is retried with the same id.

use quicprochat_proto::v1;
use quicprochat_proto::Method;

use crate::client::{Inner, QpcClient};
use crate::content::{Content, MAX_TEXT_LEN};
use crate::local_store::{IncomingRecord, MessageState, StoredMessage};
use crate::{message_id, now_ms, SdkError};

impl QpcClient {
    /// Sends `text` to `target`: a group name, or `@user` for the direct
    /// conversation with that user (created on first use).
    ///
    /// The message is stored (pending) before anything is sent. The result's
    /// state is `Sent` once the server acknowledged it; `Pending` when the
    /// server could not take it now (offline, rate-limited): it stays in the
    /// outbox and is sent, with the same id, the next time the client talks to
    /// the server. A refusal for good (e.g. no longer a member) is an error and
    /// the message is marked failed.
    pub async fn send(&self, target: &str, text: &str) -> Result<StoredMessage, SdkError> {
        if text.is_empty() {
            return Err(SdkError::InvalidInput("message is empty".into()));
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(SdkError::InvalidInput(format!(
                "message is {} bytes; the limit is {MAX_TEXT_LEN}",
                text.len()
            )));
        }
        let mut inner = self.inner.lock().await;
        // Catch up first so we encrypt in the group's current epoch; offline,
        // encrypt with what we have and let the outbox deliver it later.
        match inner.sync_and_settle().await {
            Ok(()) => {}
            Err(error) if error.is_retryable() => tracing::debug!(%error, "sending without catching up"),
            Err(error) => return Err(error),
        }
        let conversation = match target.strip_prefix('@') {
            Some(peer) => inner.direct_conversation(peer).await?,
            None => inner.active_conversation(target)?,
        };
        // OpenMLS cannot encrypt while proposals (e.g. a member's leave) are
        // pending: commit them first (a no-op when there are none; a broken
        // group is refused here).
        let group_id = conversation.group_id.clone();
        inner.submit_commit_with_retry(&conversation, |mls| mls.commit_pending_proposals(&group_id)).await?;
        let message_id = message_id();
        let sent_at = now_ms();
        let content = Content { v: 1, id: hex::encode(&message_id), text: text.to_owned(), sent_at };
        let username = inner.username.clone();
        let device = inner.mls.device_id();
        let record = IncomingRecord {
            sender: &username,
            sender_device: Some(device.as_bytes()),
            message_id: &message_id,
            group_id: &conversation.group_id,
            text,
            sent_at_ms: sent_at,
            received_at_ms: sent_at,
        };
        // The ratchet step that made the ciphertext and its outbox row
        // commit together (one fsync), before anything leaves.
        inner.mls.batch(|| {
            let ciphertext = inner.mls.encrypt(&conversation.group_id, &content.encode())?;
            inner.store.queue_outgoing(&record, &ciphertext)?;
            Ok::<_, SdkError>(())
        })?;
        quicprochat_core::crash_point::crash_point("send_after_commit");
        let flushed = inner.flush_outbox().await;
        let state = inner.store.message_state(&username, &message_id)?.unwrap_or(MessageState::Pending);
        if state == MessageState::Failed {
            return Err(flushed.err().unwrap_or_else(|| {
                SdkError::InvalidInput(format!("the server refused the message to {}", conversation.display_name()))
            }));
        }
        Ok(StoredMessage {
            id: content.id,
            group: conversation.display_name(),
            from: username,
            text: text.to_owned(),
            sent_at_ms: sent_at,
            received_at_ms: sent_at,
            state,
            device: Some(device.to_hex()),
        })
    }

    /// Sends every queued message (oldest first). Returns how many are still
    /// queued afterwards.
    pub async fn flush_outbox(&self) -> Result<usize, SdkError> {
        let mut inner = self.inner.lock().await;
        let flushed = inner.flush_outbox().await;
        let left = inner.store.outbox()?.len();
        match flushed {
            Ok(()) => Ok(left),
            Err(error) if error.is_retryable() => Ok(left),
            Err(error) => Err(error),
        }
    }

    /// The last `limit` messages of a conversation (sent and received), oldest first.
    pub async fn history(&self, target: &str, limit: u32) -> Result<Vec<StoredMessage>, SdkError> {
        let inner = self.inner.lock().await;
        let conversation = inner
            .store
            .find_any(target)?
            .ok_or_else(|| SdkError::InvalidInput(format!("no conversation named {target:?}")))?;
        Ok(inner.store.history(&conversation.group_id, limit)?)
    }
}

impl Inner {
    /// Submits queued messages in order with their original ids. Stops at the
    /// first retryable failure (keeping order); a refusal for good marks that
    /// message failed and goes on with the next.
    pub(crate) async fn flush_outbox(&mut self) -> Result<(), SdkError> {
        let username = self.username.clone();
        let mut refused = None;
        for entry in self.store.outbox()? {
            let request = v1::SendMessageRequest {
                group_id: entry.group_id.clone().into(),
                message_id: entry.message_id.clone().into(),
                ciphertext: entry.ciphertext.into(),
            };
            match self.rpc().call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await {
                Ok(_) => {
                    quicprochat_core::crash_point::crash_point("send_after_answer");
                    self.store.outbox_sent(&username, &entry.message_id)?
                }
                Err(error) if error.is_retryable() => {
                    self.store.outbox_attempt_failed(&entry.message_id, &error.to_string())?;
                    return Err(error.into());
                }
                Err(error) => {
                    tracing::warn!(%error, "the server refused a queued message");
                    self.store.outbox_failed(&username, &entry.message_id, &error.to_string())?;
                    refused = Some(error);
                }
            }
        }
        match refused {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}
