//! Send bursts: concurrent [`QpcClient::send`](crate::QpcClient::send)
//! calls leave together.
//!
//! Each call queues its request in [`SendQueue`] and takes the client's
//! lock; whoever gets it takes every request queued by then and runs them as
//! one burst: one catch-up, then each message encrypted and written with its
//! pending history row and outbox row in **one** local transaction (the
//! ratchet steps and the rows commit together, one fsync for the burst, and
//! nothing leaves before that commit), then the outbox submitted in bursts
//! of at most [`MAX_SEND_MESSAGES`] per `SendMessages` request (one round
//! trip and one server fsync each), and the answers written in one more
//! transaction. Calls queued while a burst runs form the next one, so the
//! burst grows with the load. Order is the order of the calls, in the
//! transaction, the outbox and on the server, which stores a request's
//! messages in order and none after one it refused for now.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicprochat_proto::{v1, Method, Status, MAX_SEND_MESSAGES};
use quicprochat_rpc::RpcError;
use tokio::sync::{oneshot, OwnedMutexGuard};

use crate::client::Inner;
use crate::content::Content;
use crate::local_store::{Conversation, IncomingRecord, MessageState, StoredMessage};
use crate::outbox::{OutboxEntry, Settled};
use crate::{message_id, now_ms, SdkError};

/// Most ciphertext bytes in one `SendMessages` request (its frame limit is
/// 2 MiB; 64 messages of the largest text are about 1.1 MiB).
const MAX_BURST_BYTES: usize = 1536 * 1024;

/// The answer a caller of `send` waits for.
type Answer = Result<StoredMessage, SdkError>;

/// One `send` call waiting for a burst to take it.
pub(crate) struct SendRequest {
    target: String,
    text: String,
    reply: oneshot::Sender<Answer>,
}

/// Sends queued by callers, in call order, until a burst takes them.
#[derive(Default)]
pub(crate) struct SendQueue {
    waiting: Mutex<Vec<SendRequest>>,
}

impl SendQueue {
    /// Queues a send; the receiver gets its answer once a burst ran it.
    pub(crate) fn queue(&self, target: &str, text: &str) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        let request = SendRequest { target: target.to_owned(), text: text.to_owned(), reply };
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(request);
        answer
    }

    /// Every send queued so far, oldest first.
    pub(crate) fn take(&self) -> Vec<SendRequest> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// A message of the burst, written and waiting for the server.
struct Written {
    reply: oneshot::Sender<Answer>,
    conversation: Conversation,
    content: Content,
    message_id: Vec<u8>,
}

/// Runs one burst under the client's lock and answers every request in it.
pub(crate) async fn send_burst(mut inner: OwnedMutexGuard<Inner>, burst: Vec<SendRequest>) {
    // A caller that gave up before its burst began: never written, never sent.
    let burst: Vec<SendRequest> = burst.into_iter().filter(|request| !request.reply.is_closed()).collect();
    if burst.is_empty() {
        return;
    }
    // Catch up first so we encrypt in the groups' current epochs; offline,
    // encrypt with what we have and let the outbox deliver it later.
    match inner.catch_up_for_sending().await {
        Ok(()) => {}
        Err(error) if error.is_retryable() => tracing::debug!(%error, "sending without catching up"),
        Err(error) => return fail_all(burst.into_iter().map(|request| request.reply), error),
    }
    let mut ready = Vec::with_capacity(burst.len());
    let mut committed = HashSet::new();
    for request in burst {
        match inner.conversation_for_sending(&request.target, &mut committed).await {
            Ok(conversation) => ready.push((request, conversation)),
            Err(error) => {
                let _ = request.reply.send(Err(error));
            }
        }
    }
    let written = inner.write_burst(ready);
    if written.is_empty() {
        return;
    }
    quicprochat_core::crash_point::crash_point("send_after_commit");
    if written.len() > 1 {
        quicprochat_core::crash_point::crash_point("send_after_commit_of_several");
    }
    let mut refused = Vec::new();
    if let Err(error) = inner.flush_outbox_into(&mut refused).await {
        tracing::debug!(%error, "outbox not flushed; the rest stays queued");
    }
    let username = inner.username.clone();
    let device = inner.mls.device_id();
    for message in written {
        let answer = match inner.store.message_state(&username, &message.message_id) {
            Err(error) => Err(error.into()),
            Ok(Some(MessageState::Failed)) => Err(match refused.iter().position(|(id, _)| *id == message.message_id) {
                Some(index) => refused.swap_remove(index).1.into(),
                None => SdkError::InvalidInput(format!(
                    "the server refused the message to {}",
                    message.conversation.display_name()
                )),
            }),
            Ok(state) => Ok(StoredMessage {
                id: message.content.id,
                group: message.conversation.display_name(),
                from: username.clone(),
                text: message.content.text,
                sent_at_ms: message.content.sent_at,
                received_at_ms: message.content.sent_at,
                state: state.unwrap_or(MessageState::Pending),
                device: Some(device.to_hex()),
            }),
        };
        let _ = message.reply.send(answer);
    }
}

/// Gives every caller in `replies` the one error that ended their burst.
fn fail_all(replies: impl Iterator<Item = oneshot::Sender<Answer>>, error: SdkError) {
    let shared = Arc::new(error);
    for reply in replies {
        let _ = reply.send(Err(SdkError::Shared(Arc::clone(&shared))));
    }
}

impl Inner {
    /// The conversation a send goes to (a direct one is created on first
    /// use), with its pending proposals committed once per burst: OpenMLS
    /// cannot encrypt while any are pending (a broken group is refused here).
    async fn conversation_for_sending(
        &mut self,
        target: &str,
        committed: &mut HashSet<Vec<u8>>,
    ) -> Result<Conversation, SdkError> {
        let conversation = match target.strip_prefix('@') {
            Some(peer) => self.direct_conversation(peer).await?,
            None => self.active_conversation(target)?,
        };
        if !committed.contains(&conversation.group_id) {
            let group_id = conversation.group_id.clone();
            self.submit_commit_with_retry(&conversation, |mls| mls.commit_pending_proposals(&group_id)).await?;
            committed.insert(group_id);
        }
        Ok(conversation)
    }

    /// Encrypts each message and queues it, pending, in one transaction;
    /// returns the messages written. A message that does not encrypt is
    /// answered with why at once; a failed transaction answers them all
    /// with its error (nothing of it was written).
    fn write_burst(&self, ready: Vec<(SendRequest, Conversation)>) -> Vec<Written> {
        let username = self.username.clone();
        let device = self.mls.device_id();
        let mut written = Vec::with_capacity(ready.len());
        let mut refused = Vec::new();
        let mut unwritten = None;
        let mut ready = ready.into_iter();
        let committed = self.mls.batch(|| {
            for (request, conversation) in ready.by_ref() {
                let message_id = message_id();
                let sent_at = now_ms();
                let content = Content { v: 1, id: hex::encode(&message_id), text: request.text, sent_at };
                let ciphertext = match self.mls.encrypt(&conversation.group_id, &content.encode()) {
                    Ok(ciphertext) => ciphertext,
                    Err(error) => {
                        refused.push((request.reply, SdkError::from(error)));
                        // A failure SQLite answered by rolling the whole
                        // transaction back must end the batch here: later
                        // writes would commit one by one.
                        self.mls.check_batch()?;
                        continue;
                    }
                };
                let record = IncomingRecord {
                    sender: &username,
                    sender_device: Some(device.as_bytes()),
                    message_id: &message_id,
                    group_id: &conversation.group_id,
                    text: &content.text,
                    sent_at_ms: sent_at,
                    received_at_ms: sent_at,
                };
                if let Err(error) = self.store.queue_outgoing(&record, &ciphertext) {
                    unwritten = Some(request.reply);
                    return Err(SdkError::from(error));
                }
                written.push(Written { reply: request.reply, conversation, content, message_id });
            }
            Ok::<_, SdkError>(())
        });
        for (reply, error) in refused {
            let _ = reply.send(Err(error));
        }
        match committed {
            Ok(()) => written,
            Err(error) => {
                // Nothing of the transaction was written: every message in
                // it, and every one not reached, fails alike.
                let replies = written.into_iter().map(|message| message.reply);
                fail_all(replies.chain(unwritten).chain(ready.map(|(request, _)| request.reply)), error);
                Vec::new()
            }
        }
    }

    /// Submits queued messages in order with their original ids, in bursts.
    /// A message refused for now with a retry-after hint is waited for
    /// within the connection's retry budget, as a single call would; past
    /// it, flushing stops there (keeping order; it and the rest stay queued)
    /// with that error. A message refused for good is marked failed and
    /// returned with why, and the rest go on.
    pub(crate) async fn flush_outbox(&mut self) -> Result<Vec<(Vec<u8>, RpcError)>, SdkError> {
        let mut refused = Vec::new();
        self.flush_outbox_into(&mut refused).await?;
        Ok(refused)
    }

    /// [`Inner::flush_outbox`], adding the messages refused for good to
    /// `refused` as it goes (kept when a later request fails).
    async fn flush_outbox_into(&mut self, refused: &mut Vec<(Vec<u8>, RpcError)>) -> Result<(), SdkError> {
        let queued = self.store.outbox()?;
        let budget = self.rpc().retry_budget();
        let mut waited = Duration::ZERO;
        let mut rest = queued.as_slice();
        while !rest.is_empty() {
            // A server without `SendMessages` (older) takes one at a time.
            let answered = match self.link.max_send_messages() as usize {
                0 => self.submit_one(&rest[0], refused).await?,
                most => self.submit(&rest[..burst_len(rest, most)], refused).await?,
            };
            rest = &rest[answered.settled..];
            let Some(error) = answered.stopped else { continue };
            match retry_after(&error) {
                Some(pause) if waited + pause <= budget => {
                    tracing::debug!(%error, ?pause, "server asked to retry later");
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                _ => {
                    if let Some(entry) = rest.first() {
                        self.store.outbox_attempt_failed([entry.message_id.as_slice()], &error.to_string())?;
                    }
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }

    /// One `SendMessage` request, for a server without `SendMessages`.
    async fn submit_one(
        &mut self,
        entry: &OutboxEntry,
        refused: &mut Vec<(Vec<u8>, RpcError)>,
    ) -> Result<Answered, SdkError> {
        let request = v1::SendMessageRequest {
            group_id: entry.group_id.clone().into(),
            message_id: entry.message_id.clone().into(),
            ciphertext: entry.ciphertext.clone().into(),
        };
        let result = self.rpc().call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await;
        let reason = match result {
            Ok(_) => None,
            Err(error) if error.is_retryable() => return Ok(Answered { settled: 0, stopped: Some(error) }),
            Err(error) if error.status().is_none() => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "the server refused a queued message");
                let reason = error.to_string();
                refused.push((entry.message_id.clone(), error));
                Some(reason)
            }
        };
        quicprochat_core::crash_point::crash_point("send_after_answer");
        let outcome = reason.as_deref().map_or(Ok(()), Err);
        self.store.outbox_settle(&self.username, &[Settled { message_id: &entry.message_id, outcome }])?;
        Ok(Answered { settled: 1, stopped: None })
    }

    /// One `SendMessages` request for `burst`; the messages answered (sent,
    /// or refused for good, added to `refused`) leave the outbox in one
    /// transaction. A failed request leaves them all queued.
    async fn submit(
        &mut self,
        burst: &[OutboxEntry],
        refused: &mut Vec<(Vec<u8>, RpcError)>,
    ) -> Result<Answered, SdkError> {
        let request = v1::SendMessagesRequest {
            messages: burst
                .iter()
                .map(|entry| v1::SendMessageRequest {
                    group_id: entry.group_id.clone().into(),
                    message_id: entry.message_id.clone().into(),
                    ciphertext: entry.ciphertext.clone().into(),
                })
                .collect(),
        };
        let response = match self.rpc().call::<_, v1::SendMessagesResponse>(Method::SendMessages, &request).await {
            Ok(response) => response,
            Err(error) => {
                if error.is_retryable() {
                    let ids = burst.iter().map(|entry| entry.message_id.as_slice());
                    self.store.outbox_attempt_failed(ids, &error.to_string())?;
                }
                return Err(error.into());
            }
        };
        if response.results.len() != burst.len() {
            let answers = response.results.len();
            return Err(RpcError::Unexpected(format!("{answers} answers to {} messages sent", burst.len())).into());
        }
        let mut outcomes: Vec<(&OutboxEntry, Option<String>)> = Vec::with_capacity(burst.len());
        let mut stopped = None;
        for (entry, result) in burst.iter().zip(&response.results) {
            match answer(result) {
                Ok(()) => outcomes.push((entry, None)),
                Err(error) if error.is_retryable() => {
                    stopped = Some(error);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "the server refused a queued message");
                    outcomes.push((entry, Some(error.to_string())));
                    refused.push((entry.message_id.clone(), error));
                }
            }
        }
        quicprochat_core::crash_point::crash_point("send_after_answer");
        if burst.len() > 1 {
            quicprochat_core::crash_point::crash_point("send_after_answer_of_several");
        }
        let settled: Vec<Settled<'_>> = outcomes
            .iter()
            .map(|(entry, reason)| Settled {
                message_id: &entry.message_id,
                outcome: reason.as_deref().map_or(Ok(()), Err),
            })
            .collect();
        self.store.outbox_settle(&self.username, &settled)?;
        Ok(Answered { settled: settled.len(), stopped })
    }
}

/// What the server answered to one request: how many of its messages (from
/// the first) left the outbox, and the refusal for now that stopped it.
struct Answered {
    settled: usize,
    stopped: Option<RpcError>,
}

/// The server's hint to wait before retrying, for the refusals that have one.
fn retry_after(error: &RpcError) -> Option<Duration> {
    match error {
        RpcError::Status { status: Status::ResourceExhausted | Status::Unavailable, retry_after_ms, .. }
            if *retry_after_ms > 0 =>
        {
            Some(Duration::from_millis(*retry_after_ms))
        }
        _ => None,
    }
}

/// How many of `queued` (oldest first) go in the next request: at most
/// `most` (the server's limit, never over [`MAX_SEND_MESSAGES`]) and
/// [`MAX_BURST_BYTES`] of ciphertext, at least one.
fn burst_len(queued: &[OutboxEntry], most: usize) -> usize {
    let mut bytes = 0;
    let mut count = 0;
    for entry in queued.iter().take(most.min(MAX_SEND_MESSAGES)) {
        bytes += entry.ciphertext.len();
        if count > 0 && bytes > MAX_BURST_BYTES {
            break;
        }
        count += 1;
    }
    count.max(1).min(queued.len())
}

/// One message's answer, as the error a `SendMessage` call would have had.
fn answer(result: &v1::SendResult) -> Result<(), RpcError> {
    let status = v1::StatusCode::try_from(result.status)
        .map(Status::from)
        .map_err(|_| RpcError::Unexpected(format!("unknown status {} for a sent message", result.status)))?;
    if status == Status::Ok {
        return Ok(());
    }
    let body = result.error.clone().unwrap_or_default();
    Err(RpcError::Status {
        method: Method::SendMessages,
        status,
        message: body.message,
        retry_after_ms: body.retry_after_ms,
        current_epoch: body.current_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> OutboxEntry {
        OutboxEntry { message_id: vec![1], group_id: vec![2], ciphertext: vec![0; len], attempts: 0 }
    }

    #[test]
    fn a_burst_is_bounded_by_count_and_bytes() {
        assert_eq!(burst_len(&vec![entry(100); 200], MAX_SEND_MESSAGES), MAX_SEND_MESSAGES);
        assert_eq!(burst_len(&vec![entry(100); 200], 1000), MAX_SEND_MESSAGES, "never over our own limit");
        assert_eq!(burst_len(&vec![entry(100); 200], 10), 10, "never over the server's");
        assert_eq!(burst_len(&vec![entry(100); 3], MAX_SEND_MESSAGES), 3);
        assert_eq!(burst_len(&vec![entry(MAX_BURST_BYTES / 2); 5], MAX_SEND_MESSAGES), 2);
        // One message over the byte budget still goes, alone.
        assert_eq!(burst_len(&[entry(MAX_BURST_BYTES + 1), entry(10)], MAX_SEND_MESSAGES), 1);
    }

    #[test]
    fn answers_map_to_the_errors_of_single_sends() {
        assert!(answer(&v1::SendResult { status: v1::StatusCode::Ok as i32, ..Default::default() }).is_ok());
        let limited = v1::SendResult {
            status: v1::StatusCode::ResourceExhausted as i32,
            sent: None,
            error: Some(v1::ErrorBody { message: "rate".into(), retry_after_ms: 40, current_epoch: 0 }),
        };
        let error = answer(&limited).expect_err("refused");
        assert!(error.is_retryable());
        assert!(matches!(error, RpcError::Status { retry_after_ms: 40, .. }));
        let denied = v1::SendResult { status: v1::StatusCode::PermissionDenied as i32, ..Default::default() };
        assert!(!answer(&denied).expect_err("refused").is_retryable());
        let unknown = v1::SendResult { status: 99, ..Default::default() };
        assert!(matches!(answer(&unknown), Err(RpcError::Unexpected(_))));
    }
}
