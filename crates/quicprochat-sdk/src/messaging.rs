//! Sending and history.
//!
//! A send is written to the local store and the outbox (`crate::outbox`) as
//! pending before it leaves, then marked sent when the server acknowledged it
//! durably, or failed (with the reason) when the server refused it for good;
//! otherwise it stays queued and is retried with the same id.

use std::sync::Arc;

use crate::client::QpcClient;
use crate::content::MAX_TEXT_LEN;
use crate::local_store::StoredMessage;
use crate::SdkError;

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
    ///
    /// Concurrent calls are sent together: whoever takes the client's lock
    /// takes every send queued by then (a burst, see `crate::bursts`),
    /// encrypts and stores them in one local transaction and submits them in
    /// one `SendMessages` request, in the order the calls were made.
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
        let mut answer = self.sends.queue(target, text);
        loop {
            tokio::select! {
                // Answered by a burst someone else ran: no need for the lock.
                biased;
                answered = &mut answer => {
                    return answered.unwrap_or_else(|_| {
                        Err(SdkError::Interrupted(
                            "its burst ended without an answer; it may still leave from the outbox".into(),
                        ))
                    });
                }
                inner = Arc::clone(&self.inner).lock_owned() => {
                    // Holding the lock, no burst runs: this request is
                    // either answered or still queued, and taken now.
                    let burst = self.sends.take();
                    if burst.is_empty() {
                        continue;
                    }
                    // Its own task: a caller that gives up does not cut
                    // the burst short for the other callers in it.
                    if let Err(error) = tokio::spawn(crate::bursts::send_burst(inner, burst)).await {
                        tracing::error!(%error, "a send burst failed");
                    }
                }
            }
        }
    }

    /// Sends every queued message (oldest first). Returns how many are still
    /// queued afterwards.
    pub async fn flush_outbox(&self) -> Result<usize, SdkError> {
        let mut inner = self.inner.lock().await;
        let flushed = inner.flush_outbox().await;
        let left = inner.store.outbox()?.len();
        match flushed {
            Ok(mut refused) => match refused.pop() {
                Some((_, error)) => Err(error.into()),
                None => Ok(left),
            },
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
