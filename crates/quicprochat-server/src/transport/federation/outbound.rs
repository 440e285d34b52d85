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
use quicprochat_rpc::{RpcClient, RpcError, CLOSE_SERVER_SHUTDOWN};

use super::peers::Peer;
use super::Federation;
use crate::domain::federation::stream::{retry_delay, RetryPolicy};
use crate::transport::dispatch::blocking;
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
    let config = &state.config.federation;
    let policy = RetryPolicy { retry_min: config.retry_min, retry_max: config.retry_max, ..RetryPolicy::default() };
    let mut failures: u32 = 0;
    // The error last written to the database (for `federation status`),
    // so a peer failing the same way on every attempt costs no write.
    let mut recorded: Option<String> = None;
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        match dial(&state, &federation, &peer).await {
            Ok((client, instance)) => {
                failures = 0;
                peer.connection.send_replace(Some(client.clone()));
                federation.peers.mark_reachable(&domain, instance);
                record_error(&state, &domain, &mut recorded, None).await;
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
                let error = format!("connection closed: {closed}");
                federation.peers.mark_unreachable(&domain, error.clone());
                record_error(&state, &domain, &mut recorded, Some(error)).await;
                tracing::info!(peer = %domain, reason = %closed, "federation peer connection closed");
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(peer = %domain, %error, failures, "federation peer unreachable");
                federation.peers.mark_unreachable(&domain, error.to_string());
                record_error(&state, &domain, &mut recorded, Some(error.to_string())).await;
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

/// Writes the peer's last error to the database when it changed.
async fn record_error(state: &ServerState, domain: &str, recorded: &mut Option<String>, error: Option<String>) {
    if *recorded == error {
        return;
    }
    let (peer, written) = (domain.to_owned(), error.clone());
    let stored = blocking(state, move |store| Ok(store.record_peer_error(&peer, written.as_deref())?)).await;
    match stored {
        Ok(()) => *recorded = error,
        Err(failure) => tracing::warn!(peer = %domain, %failure, "cannot record the peer's last error"),
    }
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
        client.connection().close(CLOSE_SERVER_SHUTDOWN.into(), b"wrong domain");
        return Err(RpcError::Unexpected(format!(
            "the peer at {} says it is {}, not {}",
            peer.config.address, answer.domain, peer.config.domain
        )));
    }
    Ok((client, answer.server_instance))
}
