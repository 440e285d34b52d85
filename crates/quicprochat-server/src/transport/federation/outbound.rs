//! The federation port's outbound side: one task per peer that keeps a
//! connection to it.
//!
//! The task resolves the peer's address, dials it from the federation
//! endpoint with the peer's pins, says `FedHello`, and holds the connection
//! until it closes; then it retries after a full-jitter exponential backoff
//! (`federation.retry_min` doubling up to `federation.retry_max`, the
//! stream's `RetryPolicy`), at once
//! when the peer gets in touch (an inbound `FedHello`). It never gives up
//! before shutdown, and nothing local ever waits for it.

use std::sync::Arc;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::federation::{federation_client_config, peer_fingerprint};
use quicprochat_rpc::{RpcClient, RpcError, CLOSE_PROTOCOL_VIOLATION, CLOSE_SERVER_SHUTDOWN};

use super::peers::Peer;
use super::{retry_policy, Federation};
use crate::domain::federation::stream::retry_delay;
use crate::transport::ServerState;

/// Starts one task per configured peer.
pub(crate) fn keep_in_touch_with_peers(state: &Arc<ServerState>, federation: &Arc<Federation>) {
    for peer in federation.peers.peers() {
        let task = keep_in_touch(state.clone(), federation.clone(), peer.clone());
        state.tasks.spawn_connection_task(task);
    }
}

async fn keep_in_touch(state: Arc<ServerState>, federation: Arc<Federation>, peer: Arc<Peer>) {
    let domain = peer.config.domain.clone();
    let policy = retry_policy(&state.config);
    let mut failures: u32 = 0;
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        match dial(&state, &federation, &peer).await {
            Ok((client, instance)) => {
                failures = 0;
                peer.connection.send_replace(Some(client.clone()));
                federation.peers.mark_reachable(&domain, instance);
                tracing::info!(peer = %domain, instance, "federation peer reachable");
                let closed = tokio::select! {
                    closed = client.connection().closed() => closed.to_string(),
                    () = federation.workers_done.cancelled() => {
                        peer.connection.send_replace(None);
                        client.connection().close(CLOSE_SERVER_SHUTDOWN.into(), b"server shutting down");
                        return;
                    }
                };
                peer.connection.send_replace(None);
                let error = printable(&format!("connection closed: {closed}"));
                federation.peers.mark_unreachable(&domain, error);
                tracing::info!(peer = %domain, reason = %closed, "federation peer connection closed");
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(peer = %domain, %error, failures, "federation peer unreachable");
                federation.peers.mark_unreachable(&domain, printable(&error.to_string()));
            }
        }
        // A connection that was up and closed is redialled after the
        // shortest delay, as after a first failure.
        let delay = retry_delay(&policy, failures.max(1), &mut rand::rng());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = peer.wake.notified() => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Longest error text kept for `federation status` (`/federation`).
const MAX_ERROR_CHARS: usize = 200;

/// An error as it is shown to operators: text the peer controls (its close
/// reason, its domain) cut short and without control characters.
fn printable(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Dials `peer`, checks its pins, and says hello; returns the client and
/// the peer's server instance.
async fn dial(state: &ServerState, federation: &Federation, peer: &Peer) -> Result<(RpcClient, u64), RpcError> {
    let address = tokio::net::lookup_host(&peer.config.address)
        .await?
        .next()
        .ok_or_else(|| RpcError::Unexpected(format!("{} resolves to no address", peer.config.address)))?;
    let client_config = federation_client_config(
        &federation.identity,
        &peer.config.domain,
        peer.config.fingerprints.clone(),
        &state.config.transport,
    )?;
    let timeout = state.config.rpc_timeout;
    let connecting = federation.endpoint.connect_with(client_config, address, &peer.config.domain)?;
    let connection = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| RpcError::Timeout { method: Method::FedHello, timeout_ms: timeout.as_millis() as u64 })??;
    let fingerprint =
        peer_fingerprint(&connection).ok_or_else(|| RpcError::Tls("the peer presented no certificate".into()))?;
    let client = RpcClient::from_connection(federation.endpoint.clone(), connection, timeout, fingerprint);
    let hello = v1::FedHelloRequest {
        origin: federation.domain.clone(),
        destination: peer.config.domain.clone(),
        server_instance: state.instance,
    };
    let answer: v1::FedHelloResponse = client.call(Method::FedHello, &hello).await?;
    if answer.domain != peer.config.domain {
        client.connection().close(CLOSE_PROTOCOL_VIOLATION.into(), b"wrong domain");
        return Err(RpcError::Unexpected(format!(
            "the peer at {} says it is {:?}, not {}",
            peer.config.address,
            printable(&answer.domain),
            peer.config.domain
        )));
    }
    Ok((client, answer.server_instance))
}
