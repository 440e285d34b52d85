//! The federation port's inbound side: accepting peer connections and
//! serving their requests.
//!
//! The handshake already refused every certificate that is not pinned for
//! a peer (`quicprochat_rpc::federation`); here the connection is mapped to
//! its peer's domain, which is the caller's identity for every request on
//! it. Each request is one stream, read and answered as on the client port
//! (the method's size limit checked before the body is read, a read
//! deadline, the RPC deadline), but only federation methods and `Ping` are
//! served. A request whose `origin` is not the authenticated peer, or whose
//! `destination` is not this server, is refused with `PERMISSION_DENIED`.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1;
use quicprochat_proto::{FrameKind, Method, Status};
use quicprochat_rpc::stream::{read_body, read_header};
use quicprochat_rpc::CLOSE_PROTOCOL_VIOLATION;

use super::peers::Peer;
use super::wire::decode_push;
use super::Federation;
use crate::clock::now_ms;
use crate::domain::federation::apply::{apply_batch_federated, BatchApplied, InboundBatch};
use crate::domain::DomainError;
use crate::storage::EntryKind;
use crate::transport::connection::respond;
use crate::transport::dispatch::{durably, Reply};
use crate::transport::ServerState;

/// Accepts peer connections until shutdown or until the endpoint closes.
pub(crate) async fn accept_peers(endpoint: quinn::Endpoint, state: Arc<ServerState>, federation: Arc<Federation>) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let task = serve_peer(incoming, state.clone(), federation.clone());
                    state.tasks.spawn_connection_task(task);
                }
                None => return,
            },
        }
    }
}

/// The reason label of a failed inbound handshake.
fn handshake_failure_reason(error: &quinn::ConnectionError) -> &'static str {
    let text = error.to_string();
    if text.contains("not pinned for any peer") {
        "unpinned_certificate"
    } else if text.contains("NoCertificatesPresented") || text.contains("no certificate") {
        "no_certificate"
    } else {
        "handshake"
    }
}

async fn serve_peer(incoming: quinn::Incoming, state: Arc<ServerState>, federation: Arc<Federation>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            let reason = handshake_failure_reason(&error);
            state.metrics.federation().auth_failure(reason);
            tracing::info!(%remote, %error, reason, "federation handshake refused");
            return;
        }
    };
    let peer = quicprochat_rpc::federation::peer_fingerprint(&connection)
        .and_then(|fingerprint| federation.peers.by_fingerprint(&fingerprint).cloned());
    let Some(peer) = peer else {
        // The verifier accepted a pinned certificate, so this cannot happen
        // short of a bug; refuse rather than serve an unknown caller.
        tracing::error!(%remote, "a federation connection without a pinned certificate; closing");
        connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"no pinned certificate");
        return;
    };
    let Some(_slot) = ConnectionSlot::take(&peer) else {
        tracing::warn!(%remote, peer = %peer.config.domain, "the peer holds too many connections; closing this one");
        connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"too many connections");
        return;
    };
    tracing::info!(%remote, peer = %peer.config.domain, "federation connection from a peer");
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(peer = %peer.config.domain, %error, "federation connection closed");
                return;
            }
        };
        let request = serve_stream(send, recv, state.clone(), federation.clone(), peer.clone(), connection.clone());
        state.tasks.spawn_rpc(request);
    }
}

/// Most connections one peer may hold open to us at once (it needs one;
/// the rest is slack for a reconnect racing the old connection's close).
const MAX_CONNECTIONS_PER_PEER: usize = 4;

/// One of a peer's [`MAX_CONNECTIONS_PER_PEER`] connections, given back on drop.
struct ConnectionSlot(Arc<Peer>);

impl ConnectionSlot {
    fn take(peer: &Arc<Peer>) -> Option<ConnectionSlot> {
        let held = peer.inbound_connections.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let slot = ConnectionSlot(peer.clone());
        (held < MAX_CONNECTIONS_PER_PEER).then_some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inbound_connections.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    state: Arc<ServerState>,
    federation: Arc<Federation>,
    peer: Arc<Peer>,
    connection: quinn::Connection,
) {
    let read_timeout = state.config.connections.stream_read_timeout;
    let header = match tokio::time::timeout(read_timeout, read_header(&mut recv)).await {
        Ok(Ok(Some(header))) => header,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(error)) => {
            tracing::debug!(peer = %peer.config.domain, %error, "closing: malformed federation frame");
            connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"malformed frame");
            return;
        }
    };
    if header.kind != FrameKind::Request {
        connection.close(CLOSE_PROTOCOL_VIOLATION.into(), b"expected a request frame");
        return;
    }
    let method = header.method;
    if !method.is_federation() && method != Method::Ping {
        let reply = Reply::error(Status::InvalidArgument, &format!("{method} is not served on the federation port"));
        let _ = respond(&mut send, method, reply.status, reply.body).await;
        return;
    }
    let request = match tokio::time::timeout(read_timeout, read_body(&mut recv, &header)).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(_)) | Err(_) => return,
    };
    let started = std::time::Instant::now();
    let reply =
        tokio::time::timeout(state.config.rpc_timeout, dispatch(&state, &federation, &peer, method, request.body))
            .await
            .unwrap_or_else(|_| {
                Reply::error(Status::DeadlineExceeded, "the server's deadline for this request passed")
            });
    state.metrics.record_rpc(method.name(), reply.status.name(), started.elapsed());
    let _ = respond(&mut send, method, reply.status, reply.body).await;
}

async fn dispatch(
    state: &Arc<ServerState>,
    federation: &Federation,
    peer: &Peer,
    method: Method,
    body: Bytes,
) -> Reply {
    if state.shutdown.is_cancelled() {
        return Reply::shutting_down();
    }
    let result = match method {
        Method::Ping => Ok(Reply::ok(&v1::PingResponse { server_time_ms: now_ms() })),
        Method::FedHello => hello(state, federation, peer, &body),
        Method::FedPush => push(state, federation, peer, &body).await,
        Method::FedResolveUser => super::claims::resolve_user(state, federation, peer, &body).await,
        Method::FedSubmitCommit => super::proxy::submit_commit(state, federation, peer, &body).await,
        Method::FedLeaveGroup => super::proxy::leave_group(state, federation, peer, &body).await,
        Method::FedClaimKeyPackage => super::claims::claim_key_package(state, federation, peer, &body).await,
        other => Err(DomainError::InvalidArgument { message: format!("{other} is not served on the federation port") }),
    };
    result.unwrap_or_else(|error| Reply::from_domain(&error))
}

/// Checks that a request speaks for the authenticated peer and is meant for
/// this server.
pub(super) fn check_addressing(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    origin: &str,
    destination: &str,
) -> Result<(), DomainError> {
    if origin != peer.config.domain {
        state.metrics.federation().auth_failure("origin");
        return Err(DomainError::PermissionDenied {
            message: format!("this connection is authenticated as {}, not {origin}", peer.config.domain),
        });
    }
    if destination != federation.domain {
        state.metrics.federation().auth_failure("destination");
        return Err(DomainError::PermissionDenied {
            message: format!("this server is {}, not {destination}", federation.domain),
        });
    }
    Ok(())
}

/// `FedHello`: the peer is reachable; a dialler backing off towards it
/// retries at once. A hello from another instance than the one our
/// connection answers to means the peer restarted (after a crash its old
/// connection only times out): that connection is closed, and redialled.
fn hello(state: &ServerState, federation: &Federation, peer: &Peer, body: &Bytes) -> Result<Reply, DomainError> {
    let request = v1::FedHelloRequest::decode(body.clone())
        .map_err(|error| DomainError::InvalidArgument { message: format!("malformed request: {error}") })?;
    check_addressing(state, federation, peer, &request.origin, &request.destination)?;
    if request.server_instance == 0 {
        return Err(DomainError::InvalidArgument { message: "server_instance must not be 0".into() });
    }
    let ours = federation.peers.status().into_iter().find(|status| status.domain == peer.config.domain);
    if let Some(known) = ours.and_then(|status| status.instance.filter(|_| status.reachable)) {
        if known != request.server_instance {
            if let Some(stale) = peer.connection.borrow().as_ref() {
                tracing::info!(peer = %peer.config.domain, "the peer restarted; dropping our connection to its last instance");
                stale.connection().close(quicprochat_rpc::CLOSE_CLIENT_DONE.into(), b"peer restarted");
            }
        }
    }
    peer.wake.notify_one();
    peer.stream_wake.notify_one();
    Ok(Reply::ok(&v1::FedHelloResponse { domain: federation.domain.clone(), server_instance: state.instance }))
}

/// `FedPush`: applies a batch of the peer's stream in one storage job and
/// answers how far it applied once that is durable; wakes the push tasks of
/// the devices that got entries.
async fn push(
    state: &Arc<ServerState>,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<Reply, DomainError> {
    let push = decode_push(body)?;
    check_addressing(state, federation, peer, &push.origin, &push.destination)?;
    let domain = peer.config.domain.clone();
    let now = now_ms();
    let (job_domain, mailboxes) = (domain.clone(), Arc::clone(&state.mailboxes));
    let (job_federation, after_federation) = (state.federation.clone(), state.federation.clone());
    let applied = durably(
        state,
        move |store| {
            let batch = InboundBatch {
                peer: &job_domain,
                instance: push.instance,
                first_available_seq: push.first_available_seq,
                entries: &push.entries,
            };
            let outbox = job_federation.as_ref().map(|federation| federation.outbox());
            apply_batch_federated(store, &batch, now, outbox.as_ref())
        },
        // Woken once durable, even if this request's deadline passes first.
        move |applied: &BatchApplied| {
            mailboxes.wake(applied.queues.iter().map(String::as_str));
            if let Some(federation) = &after_federation {
                federation.written(&applied.peers);
            }
        },
    )
    .await
    .inspect_err(|error| {
        if matches!(error, DomainError::PermissionDenied { .. }) {
            federation.metrics().auth_failure("not_hub");
        }
    })?;
    let metrics = federation.metrics();
    for (kind, accepted_at_ms) in &applied.queued {
        metrics.applied(&domain, entry_kind_name(*kind), now.saturating_sub(*accepted_at_ms));
    }
    metrics.duplicates(&domain, applied.duplicates as u64);
    for refusal in &applied.refused {
        metrics.rejected(&domain, refusal.reason);
        tracing::info!(peer = %domain, seq = refusal.seq, reason = refusal.reason, "federation entry refused");
    }
    // The peer is plainly up: a sender of ours backing off towards it retries now.
    peer.stream_wake.notify_one();
    Ok(Reply::ok(&v1::FedPushResponse { applied_through: applied.applied_through }))
}

fn entry_kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Application => "application",
        EntryKind::Commit => "commit",
        EntryKind::Welcome => "welcome",
        EntryKind::Proposal => "proposal",
        EntryKind::DeliveryFailed => "delivery_failed",
    }
}
