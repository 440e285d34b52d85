//! One task per peer driving our stream to it: the [`OutboundStream`]
//! decides what to send and when; this task reads the entries from the
//! store, sends them as a `FedPush` on the connection the peer's keeper
//! holds (`outbound`), deletes what the peer acknowledged, and keeps the
//! metrics and the peer status current.
//!
//! It wakes when entries are appended (`Peer::written`), when the peer gets
//! in touch or a connection comes up (`Peer::stream_wake`, the connection
//! watch), and at the machine's timeout (a retry, an answer deadline). On
//! shutdown it sends no new batch; a batch in flight is answered (or times
//! out) first, within `timeouts.shutdown_grace` (`server::shut_down` waits
//! for these tasks before it closes the federation endpoint). What is not
//! acknowledged stays in the store and is sent after the restart.

use std::sync::Arc;
use std::time::Instant;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::{RpcClient, RpcError};

use super::peers::Peer;
use super::wire::outbound_entry;
use super::{retry_policy, Federation};
use crate::domain::federation::stream::{
    AnswerOutcome, OutboundAction, OutboundState, OutboundStream, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES,
};
use crate::domain::DomainError;
use crate::storage::{new_stream_instance, FedStream, OutboundEntry};
use crate::transport::dispatch::blocking;
use crate::transport::ServerState;

/// Starts one sender per configured peer, tracked by `federation.senders`
/// (shutdown waits for them) and spawned with the server's tasks that hold
/// quinn handles (so none outlives the shutdown).
pub(crate) fn start_stream_senders(state: &Arc<ServerState>, federation: &Arc<Federation>) {
    for peer in federation.peers.peers() {
        let sender = federation.senders.track_future(send_stream(state.clone(), federation.clone(), peer.clone()));
        state.tasks.spawn_connection_task(sender);
    }
}

/// Why a batch failed, for `qpc_fed_retries_total{reason}`: a transport
/// failure (`unreachable`, `timeout`), or the peer's answer refusing it
/// (`refused`: it is not reachability, so a wake must not cut the backoff).
fn retry_reason(error: &RpcError) -> &'static str {
    match error {
        RpcError::Timeout { .. } => "timeout",
        RpcError::Status { status, .. } if !status.is_retryable() => "refused",
        RpcError::Status { .. } => "unavailable",
        RpcError::Connection(_) | RpcError::Connect(_) | RpcError::Write(_) => "unreachable",
        _ => "error",
    }
}

async fn send_stream(state: Arc<ServerState>, federation: Arc<Federation>, peer: Arc<Peer>) {
    let domain = peer.config.domain.clone();
    let Some(mut stream) = open_stream(&state, &peer).await else { return };
    let mut connections = peer.connection.subscribe();
    let mut expiry = tokio::time::interval(crate::expiry::interval_for(state.config.retention));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last batch was refused by the peer: wakes (its traffic to us) do
    // not cut the backoff then, or each of its requests would cost a resend.
    let mut refused = false;
    loop {
        publish(&state, &federation, &domain, &stream).await;
        if state.shutdown.is_cancelled() {
            return;
        }
        if let Some(OutboundAction::Send(request)) = stream.poll_action(Instant::now()) {
            let client = peer.connection.borrow().clone();
            let Some(client) = client else {
                stream.handle_failure(request.batch_id, Instant::now());
                federation.metrics().retry(&domain, "unreachable");
                continue;
            };
            let (peer_name, from_seq) = (domain.clone(), request.from_seq);
            let read = blocking(&state, move |store| {
                Ok(store.read_outbound(&peer_name, from_seq, MAX_BATCH_ENTRIES, MAX_BATCH_BYTES)?)
            })
            .await;
            let rows = match read {
                Ok(rows) if !rows.is_empty() => rows,
                Ok(_) | Err(_) => {
                    tracing::warn!(peer = %domain, from_seq, "cannot read the stream's next entries; retrying");
                    stream.handle_failure(request.batch_id, Instant::now());
                    federation.metrics().retry(&domain, "error");
                    continue;
                }
            };
            let (first, last) = (rows[0].seq, rows[rows.len() - 1].seq);
            if let Err(error) = stream.handle_sent(request.batch_id, first, last, Instant::now()) {
                tracing::error!(peer = %domain, %error, "the stream's rows do not match its request");
                stream.handle_failure(request.batch_id, Instant::now());
                continue;
            }
            let answer =
                push(&federation, &domain, &client, request.instance, request.first_available_seq, &rows).await;
            match answer {
                Ok(applied_through) => {
                    refused = false;
                    let outcome = stream.handle_answer(request.batch_id, applied_through, Instant::now());
                    handle_outcome(&state, &federation, &domain, &mut stream, outcome).await;
                }
                Err(error) => {
                    let reason = retry_reason(&error);
                    refused = reason == "refused";
                    if refused {
                        tracing::warn!(peer = %domain, %error, "the peer refused a stream batch; it will be resent");
                    } else {
                        tracing::debug!(peer = %domain, %error, "a stream batch failed; it will be resent");
                    }
                    stream.handle_failure(request.batch_id, Instant::now());
                    federation.metrics().retry(&domain, reason);
                }
            }
            continue;
        }
        let deadline = stream.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = sleep_until(deadline) => stream.handle_timeout(Instant::now()),
            () = peer.written.notified() => {
                match read_stream(&state, &domain).await {
                    Ok(Some(row)) => adopt(&domain, &mut stream, &row),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(peer = %domain, %error, "cannot read the stream's state"),
                }
            }
            () = peer.stream_wake.notified() => {
                if !refused {
                    stream.handle_wake(Instant::now());
                }
            }
            _ = expiry.tick() => expire(&state, &federation, &domain, &mut stream).await,
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                if connections.borrow_and_update().is_some() && !refused {
                    stream.handle_wake(Instant::now());
                }
            }
            () = state.shutdown.cancelled() => return,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Brings the machine up to the stored row after entries were appended:
/// the new last seq, what expired, and the row's instance when the row was
/// made after the machine started (nothing was sent under the other).
fn adopt(domain: &str, stream: &mut OutboundStream, row: &FedStream) {
    if row.out_instance != stream.state().instance {
        if let Err(error) = stream.start_new_instance(row.out_instance) {
            tracing::error!(peer = %domain, %error, "cannot take the stream's stored instance");
        }
    }
    stream.handle_written(row.out_last);
    stream.handle_expired(row.out_expired);
}

/// The stream's stored state (read-only; `None` before it is made).
async fn read_stream(state: &ServerState, domain: &str) -> Result<Option<FedStream>, DomainError> {
    let peer = domain.to_owned();
    blocking(state, move |store| Ok(store.fed_stream(&peer)?)).await
}

/// The stream machine from the persisted state; retried until storage
/// answers (or shutdown).
async fn open_stream(state: &ServerState, peer: &Peer) -> Option<OutboundStream> {
    let config = &state.config.federation;
    let policy = retry_policy(&state.config);
    loop {
        match read_stream(state, &peer.config.domain).await {
            Ok(row) => {
                // A stream never written to has no row yet (nothing is
                // written here): its first append makes the row, and
                // `adopt` takes the instance stored with it.
                let persisted = row.map_or(
                    OutboundState {
                        instance: new_stream_instance(),
                        acked_through: 0,
                        last_seq: 0,
                        expired_through: 0,
                    },
                    |row| OutboundState {
                        instance: row.out_instance,
                        acked_through: row.out_acked,
                        last_seq: row.out_last,
                        expired_through: row.out_expired,
                    },
                );
                match OutboundStream::new(persisted, policy.clone(), rand::random()) {
                    Ok(stream) => return Some(stream),
                    Err(error) => {
                        tracing::error!(peer = %peer.config.domain, %error, "the stream's stored state is invalid");
                        return None;
                    }
                }
            }
            Err(error) => tracing::warn!(peer = %peer.config.domain, %error, "cannot read the stream's state"),
        }
        tokio::select! {
            () = tokio::time::sleep(config.retry_max) => {}
            () = state.shutdown.cancelled() => return None,
        }
    }
}

/// Sends one batch; returns the peer's `applied_through`.
async fn push(
    federation: &Federation,
    domain: &str,
    client: &RpcClient,
    instance: u64,
    first_available_seq: u64,
    rows: &[OutboundEntry],
) -> Result<u64, RpcError> {
    let request = v1::FedPushRequest {
        origin: federation.domain.clone(),
        destination: domain.to_owned(),
        instance,
        first_available_seq,
        entries: rows.iter().map(outbound_entry).collect(),
    };
    let answer: v1::FedPushResponse = client.call(Method::FedPush, &request).await?;
    Ok(answer.applied_through)
}

/// Acts on the machine's reading of an answer.
async fn handle_outcome(
    state: &ServerState,
    federation: &Federation,
    domain: &str,
    stream: &mut OutboundStream,
    outcome: AnswerOutcome,
) {
    match outcome {
        AnswerOutcome::Acked { acked_through, newly_acked } => {
            federation.metrics().sent(domain, newly_acked);
            let peer = domain.to_owned();
            let acked = blocking(state, move |store| Ok(store.ack_outbound(&peer, acked_through)?)).await;
            if let Err(error) = acked {
                // The rows stay; they are resent and the peer drops them as duplicates.
                tracing::warn!(peer = %domain, %error, "cannot record the peer's acknowledgement");
            }
        }
        AnswerOutcome::ReceiverAhead { applied_through, last_seq } => {
            let instance = new_stream_instance();
            tracing::warn!(
                peer = %domain, applied_through, last_seq, instance,
                "the peer applied more of our stream than we hold (was our database restored?); starting a new instance"
            );
            // Until the new instance is stored nothing may be sent: retried
            // until it is (or shutdown).
            loop {
                let peer = domain.to_owned();
                match blocking(state, move |store| Ok(store.set_outbound_instance(&peer, instance)?)).await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(peer = %domain, %error, "cannot store a new stream instance; retrying")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(state.config.federation.retry_max) => {}
                    () = state.shutdown.cancelled() => return,
                }
            }
            if let Err(error) = stream.start_new_instance(instance) {
                tracing::error!(peer = %domain, %error, "cannot start a new stream instance");
            }
        }
        AnswerOutcome::Stalled { applied_through, resend_from } => {
            federation.metrics().retry(domain, "stalled");
            tracing::warn!(peer = %domain, applied_through, resend_from, "the peer answered below what we still hold");
        }
        AnswerOutcome::Ignored => {}
    }
}

/// Deletes the entries that waited longer than `delivery.retention` for the
/// peer (it was unreachable all that time); the next batch tells the peer
/// where the stream goes on, and its users see the gap as expired entries.
async fn expire(state: &ServerState, federation: &Federation, domain: &str, stream: &mut OutboundStream) {
    if stream.pending() == 0 {
        return;
    }
    let retention_ms = u64::try_from(state.config.retention.as_millis()).unwrap_or(u64::MAX);
    let before_ms = crate::clock::now_ms().saturating_sub(retention_ms);
    let peer = domain.to_owned();
    match blocking(state, move |store| Ok(store.expire_outbound(&peer, before_ms)?)).await {
        Ok((_, 0)) => {}
        Ok((expired_through, deleted)) => {
            stream.handle_expired(expired_through);
            federation.metrics().expired(domain, deleted);
            tracing::warn!(peer = %domain, deleted, expired_through, "federation entries expired before the peer took them");
        }
        Err(error) => tracing::warn!(peer = %domain, %error, "cannot expire the stream's old entries"),
    }
}

/// Refreshes the peer's pending count (status and metrics).
async fn publish(state: &ServerState, federation: &Federation, domain: &str, stream: &OutboundStream) {
    let pending = stream.pending();
    let settled = stream.state();
    federation.peers.set_pending(domain, pending, settled.acked_through.max(settled.expired_through));
    let oldest = if pending == 0 {
        None
    } else {
        read_stream(state, domain).await.ok().flatten().and_then(|row| row.oldest_pending_ms)
    };
    federation.metrics().set_outbound(domain, pending, oldest);
}
