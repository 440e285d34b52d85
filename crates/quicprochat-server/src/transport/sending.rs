//! `SendMessage` and `SendMessages`: application messages from a logged-in
//! device, rate-limited and gated, then stored (and fanned out, or relayed
//! to the group's hub) as one job on the storage executor, and handed to the
//! recipients' mailboxes once durable.
//!
//! `SendMessages` is a client's outbox burst: one request, one storage job
//! (so one fsync for all of it) and one answer per entry. It keeps the
//! sender's order: entries are stored in request order, and from the first
//! entry refused for a reason worth retrying on, none after it is stored,
//! so a resend of the rest cannot overtake it.

use std::sync::Arc;

use bytes::Bytes;
use quicprochat_core::names::hub_of;
use quicprochat_proto::shape::check_send_messages_shape;
use quicprochat_proto::v1;

use super::dispatch::{decode, durably, limited, roster_of, stored_meta, wire_group_kind, Handover, Reply};
use super::session::SessionUser;
use super::ServerState;
use crate::clock::now_ms;
use crate::config::GateHook;
use crate::domain::federation::outbox::Outbox;
use crate::domain::federation::relay;
use crate::domain::messages::{self, SendMessage};
use crate::domain::DomainError;
use crate::plugins::{EnqueueMeta, GateEvent, ObservedEvent};
use crate::storage::Store;

/// Longest error message one `SendResult` carries (the response's size limit
/// is about 64 of them).
const MAX_RESULT_MESSAGE: usize = 512;

/// The retry-after hint for the messages of a burst whose admission ran
/// out of time.
const ADMISSION_RETRY_MS: u64 = 100;

/// What one stored entry leaves for after the batch is durable.
struct Stored {
    handover: Handover,
    answer: v1::SendMessageResponse,
    peers: Vec<String>,
}

/// `SendMessage`: one message, answered with its status.
pub(crate) async fn send_message(state: &ServerState, user: SessionUser, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::SendMessageRequest = decode(&body)?;
    admit(state, &user, &request).await?;
    let mut results = store_in_order(state, user, vec![request]).await?;
    match results.pop() {
        Some(Ok(answer)) => Ok(Reply::ok(&answer)),
        Some(Err(error)) => Err(error),
        None => Err(DomainError::internal("a stored message has no answer")),
    }
}

/// `SendMessages`: a burst, answered entry by entry.
pub(crate) async fn send_messages(state: &ServerState, user: SessionUser, body: Bytes) -> Result<Reply, DomainError> {
    // Counted on the wire first: decoding allocates every message.
    check_send_messages_shape(&body).map_err(|error| DomainError::invalid(error.to_string()))?;
    let request: v1::SendMessagesRequest = decode(&body)?;
    let count = request.messages.len();
    let most = state.config.max_send_burst as usize;
    if most == 0 {
        return Err(DomainError::invalid("SendMessages is turned off on this server (delivery.max_send_burst = 0)"));
    }
    if count == 0 || count > most {
        return Err(DomainError::invalid(format!("a SendMessages request carries 1 to {most} messages, not {count}")));
    }
    // Limits and gates in order: the admitted entries go to storage, the
    // rest are answered now. Slow gates (each plugin has up to its
    // deadline per message) may take half the request's time; past it the
    // rest is not tried, so what was admitted is stored in time.
    let admission_ends = tokio::time::Instant::now() + state.config.rpc_timeout / 2;
    let mut verdicts: Vec<Option<DomainError>> = Vec::with_capacity(count);
    let mut admitted = Vec::with_capacity(count);
    let mut stop = None;
    for request in request.messages {
        if stop.is_none() && tokio::time::Instant::now() >= admission_ends {
            stop = Some(DomainError::Unavailable {
                message: "the message gates took too long for this request".into(),
                retry_after_ms: ADMISSION_RETRY_MS,
            });
        }
        if let Some(error) = &stop {
            verdicts.push(Some(not_tried(error)));
            continue;
        }
        match admit(state, &user, &request).await {
            Ok(()) => {
                verdicts.push(None);
                admitted.push(request);
            }
            Err(error) => {
                if retryable(&error) {
                    stop = Some(error.clone());
                }
                verdicts.push(Some(error));
            }
        }
    }
    let stored = if admitted.is_empty() { Vec::new() } else { store_in_order(state, user, admitted).await? };
    let mut stored = stored.into_iter();
    let results = verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Some(error) => Err(error),
            None => stored.next().unwrap_or_else(|| Err(DomainError::internal("a stored message has no answer"))),
        })
        .map(send_result)
        .collect();
    Ok(Reply::ok(&v1::SendMessagesResponse { results }))
}

/// The rate limit and the `on_enqueue` gate for one message.
async fn admit(state: &ServerState, user: &SessionUser, request: &v1::SendMessageRequest) -> Result<(), DomainError> {
    state.limiters.check_send(&user.username).map_err(|refusal| limited(state, refusal))?;
    if state.plugins.has_gate(GateHook::Enqueue) {
        let meta = EnqueueMeta {
            sender: user.username.clone(),
            sender_device: user.device.as_bytes().to_vec(),
            group_id: request.group_id.to_vec(),
            message_id: request.message_id.to_vec(),
            payload_len: request.ciphertext.len() as u64,
        };
        state.plugins.gate(GateEvent::Enqueue(meta)).await?;
    }
    Ok(())
}

/// Whether a refusal leaves the sender to resend the message later (so no
/// later message of the burst may be stored before it).
fn retryable(error: &DomainError) -> bool {
    error.status().is_retryable()
}

/// The answer of an entry after one that must be resent first.
fn not_tried(earlier: &DomainError) -> DomainError {
    DomainError::Unavailable {
        message: "not tried: an earlier message of this request was refused for now".into(),
        retry_after_ms: earlier.retry_after_ms(),
    }
}

/// Stores `requests` in order in one storage job (one batch, one fsync),
/// then hands what was stored to the mailboxes, federation and observers.
/// The outer error is the batch's (every entry failed alike).
async fn store_in_order(
    state: &ServerState,
    user: SessionUser,
    requests: Vec<v1::SendMessageRequest>,
) -> Result<Vec<Result<v1::SendMessageResponse, DomainError>>, DomainError> {
    let now = now_ms();
    let mailboxes = Arc::clone(&state.mailboxes);
    let plugins = state.plugins.observes_stored().then(|| state.plugins.clone());
    let (federation, after_federation) = (state.federation.clone(), state.federation.clone());
    let results = durably(
        state,
        move |store| {
            let outbox = federation.as_ref().map(|federation| federation.outbox());
            let mut results = Vec::with_capacity(requests.len());
            let mut stop: Option<DomainError> = None;
            for request in requests {
                let result = match &stop {
                    Some(error) => Err(not_tried(error)),
                    None => store_one(store, &user, request, now, outbox.as_ref()),
                };
                if let Err(error) = &result {
                    if stop.is_none() && retryable(error) {
                        stop = Some(error.clone());
                    }
                }
                results.push(result);
            }
            Ok(results)
        },
        move |results: &Vec<Result<Stored, DomainError>>| {
            for stored in results.iter().flatten() {
                stored.handover.hand_to(&mailboxes);
                if let (Some(plugins), Handover::Deliver { entry, deliveries }) = (&plugins, &stored.handover) {
                    plugins.observe(ObservedEvent::Stored(stored_meta(entry, deliveries)));
                }
                if let Some(federation) = &after_federation {
                    federation.written(&stored.peers);
                }
            }
        },
    )
    .await?;
    Ok(results.into_iter().map(|result| result.map(|stored| stored.answer)).collect())
}

/// One message: stored and fanned out here, or relayed to the group's hub.
fn store_one(
    store: &dyn Store,
    user: &SessionUser,
    request: v1::SendMessageRequest,
    now: u64,
    outbox: Option<&Outbox<'_>>,
) -> Result<Stored, DomainError> {
    let send =
        SendMessage { group_id: &request.group_id, message_id: &request.message_id, ciphertext: &request.ciphertext };
    // A group another server hosts: the message goes to it.
    let hub = hub_of(&request.group_id).filter(|hub| Some(*hub) != outbox.map(|o| o.home));
    let sent = match (hub, outbox) {
        (Some(hub), Some(outbox)) => relay::relay_message(store, user.caller(), &send, now, (hub, outbox))?,
        (Some(hub), None) => {
            return Err(DomainError::invalid(format!(
                "the group is hosted by {hub}, and this server does not federate"
            )))
        }
        (None, _) => messages::send_message_federated(store, user.caller(), &send, now, outbox)?,
    };
    let relayed = hub.is_some();
    let handover = match sent.fanout {
        Some(fanout) => Handover::Deliver {
            entry: Arc::new(v1::QueueEntry {
                seq: 0,
                message_id: request.message_id,
                group_id: request.group_id,
                group_name: fanout.group_name,
                group_kind: wire_group_kind(fanout.group_kind),
                sender: user.username.clone(),
                kind: v1::EntryKind::Application as i32,
                payload: request.ciphertext,
                stored_at_ms: sent.stored_at_ms,
                epoch: fanout.epoch,
            }),
            deliveries: fanout.deliveries,
        },
        // A retry: the first attempt may have stored the message and never
        // reached the hand-over.
        None if !relayed => Handover::Wake(roster_of(store, &request.group_id)),
        None => Handover::Wake(Vec::new()),
    };
    Ok(Stored {
        handover,
        answer: v1::SendMessageResponse { stored_at_ms: sent.stored_at_ms, relayed },
        peers: sent.peers,
    })
}

/// One entry's answer on the wire.
fn send_result(result: Result<v1::SendMessageResponse, DomainError>) -> v1::SendResult {
    match result {
        Ok(sent) => v1::SendResult { status: v1::StatusCode::Ok as i32, sent: Some(sent), error: None },
        Err(error) => {
            let mut body = super::dispatch::error_body(&error);
            truncate_at_char(&mut body.message, MAX_RESULT_MESSAGE);
            let status = v1::StatusCode::from(error.status()) as i32;
            v1::SendResult { status, sent: None, error: Some(body) }
        }
    }
}

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_message_is_cut_at_a_character_boundary() {
        let mut text = "é".repeat(400);
        truncate_at_char(&mut text, MAX_RESULT_MESSAGE);
        assert_eq!(text.len(), MAX_RESULT_MESSAGE);
        let mut odd = format!("a{}", "é".repeat(400));
        truncate_at_char(&mut odd, MAX_RESULT_MESSAGE);
        assert_eq!(odd.len(), MAX_RESULT_MESSAGE - 1);
        let mut short = "short".to_owned();
        truncate_at_char(&mut short, MAX_RESULT_MESSAGE);
        assert_eq!(short, "short");
    }

    #[test]
    fn refusals_for_now_stop_the_burst_and_refusals_for_good_do_not() {
        let limited = DomainError::ResourceExhausted { message: "rate".into(), retry_after_ms: 250 };
        assert!(retryable(&limited));
        assert!(!retryable(&DomainError::PermissionDenied { message: "not a member".into() }));
        assert!(!retryable(&DomainError::invalid("bad")));
        let later = not_tried(&limited);
        assert!(retryable(&later));
        assert_eq!(later.retry_after_ms(), 250);
        let result = send_result(Err(later));
        assert_eq!(result.status, v1::StatusCode::Unavailable as i32);
        assert_eq!(result.error.map(|body| body.retry_after_ms), Some(250));
    }
}
