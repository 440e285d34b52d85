//! Sending and history.
//!
//! A send is written to the local store as pending before it leaves, then
//! marked sent when the server acknowledged it durably, or failed (with the
//! reason) when the server refused it.

use quicprochat_proto::v1;
use quicprochat_proto::Method;

use crate::client::QpcClient;
use crate::content::{Content, MAX_TEXT_LEN};
use crate::local_store::{IncomingRecord, MessageState, StoredMessage};
use crate::{now_ms, random_id, SdkError};

impl QpcClient {
    /// Sends `text` to `target`: a group name, or `@user` for the direct
    /// conversation with that user (created on first use).
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
        // Catch up first so we encrypt in the group's current epoch.
        inner.sync_and_settle().await?;
        let conversation = match target.strip_prefix('@') {
            Some(peer) => inner.direct_conversation(peer).await?,
            None => inner.active_conversation(target)?,
        };
        // OpenMLS cannot encrypt while proposals (e.g. a member's leave) are
        // pending: commit them first (a no-op when there are none).
        let group_id = conversation.group_id.clone();
        inner.submit_commit_with_retry(&conversation, |mls| mls.commit_pending_proposals(&group_id)).await?;
        let message_id = random_id();
        let sent_at = now_ms();
        let content = Content { v: 1, id: hex::encode(&message_id), text: text.to_owned(), sent_at };
        let ciphertext = inner.mls.encrypt(&conversation.group_id, &content.encode())?;
        let username = inner.username.clone();
        inner.store.insert_outgoing(&IncomingRecord {
            sender: &username,
            message_id: &message_id,
            group_id: &conversation.group_id,
            text,
            sent_at_ms: sent_at,
            received_at_ms: sent_at,
        })?;
        let request = v1::SendMessageRequest {
            group_id: conversation.group_id.clone().into(),
            message_id: message_id.clone().into(),
            ciphertext: ciphertext.into(),
        };
        match inner.rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await {
            Ok(_) => inner.store.set_state(&username, &message_id, MessageState::Sent, None)?,
            Err(error) if error.is_retryable() => return Err(error.into()),
            Err(error) => {
                inner.store.set_state(&username, &message_id, MessageState::Failed, Some(&error.to_string()))?;
                return Err(error.into());
            }
        }
        Ok(StoredMessage {
            id: content.id,
            group: conversation.display_name(),
            from: username,
            text: text.to_owned(),
            sent_at_ms: sent_at,
            received_at_ms: sent_at,
            state: MessageState::Sent,
        })
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
